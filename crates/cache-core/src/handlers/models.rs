//! `GET /api/models?gateway=<id|all>[&search=...][&limit=N][&offset=M]`: the models
//! JSON for the frontend ([`crate::contract::ModelsResponse`]).
//!
//! The hot path (a warm key, no `search`, no page) serves the stored pre-compressed
//! bytes as they are: no JSON parse, no merge, no serialization, no compression.
//! Pages and searches are cut from the same cached entry (see [`crate::answers`]):
//! no upstream call and no store key per page.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::negotiate::{choose_encoding, choose_encoding_per_request, encoding_etag, not_modified};
use super::{RequestContext, is_get_or_head, json_error, method_not_allowed, query};
use crate::answers as search;
use crate::app::App;
use crate::body::Body;
use crate::clock::now_ms;
use crate::entry::{Encoding, Entry};
use crate::gateways::registry::is_valid_id;
use crate::swr::{CacheError, CacheStatus, Lookup};

/// Upper bound on how long a CDN may keep a response before asking again, so a
/// manual warm shows up within minutes even though data stays fresh for hours.
const CDN_MAX_AGE_SECS: u64 = 300;
/// The oldest copy a CDN may hand out: `s-maxage + stale-while-revalidate` never
/// exceeds it, so the first visitor of a URL nobody read since a warm gets data at
/// most this much older than the warm. `stale-if-error` (the CDN's fail-safe when the
/// function errors) stays long.
pub(super) const CDN_WINDOW_SECS: u64 = 900;

pub(crate) async fn handle(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    let app = &ctx.app;
    if !is_get_or_head(&req.method) {
        return method_not_allowed("GET, HEAD");
    }
    let q = match query::parse(req.uri.query(), &["gateway", "search", "limit", "offset"]) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &e.0, None),
    };
    let search = match q.get("search").map(|s| s.trim()) {
        Some(s) if s.chars().count() > search::MAX_TERM_CHARS => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                &format!("search longer than {} characters", search::MAX_TERM_CHARS),
                None,
            );
        }
        Some("") | None => None,
        Some(s) if s.chars().count() < search::MIN_TERM_CHARS => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                &format!("search needs at least {} characters", search::MIN_TERM_CHARS),
                None,
            );
        }
        Some(s) => Some(s.to_lowercase()),
    };
    // Pages: the catalog API's `limit` and `offset`, any size (the old frontend asks
    // `limit=50000` for "everything"). A search always comes in pages (default 50);
    // the list is whole unless either is given, and `offset` alone means the rest of
    // the list from there.
    let (limit, offset) = match (count(q.get("limit"), "limit", 1), count(q.get("offset"), "offset", 0)) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &e, None),
    };
    // No gateway = the merged view (what the models page shows).
    let name = q
        .get("gateway")
        .map(|g| g.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "all".into());

    // The view: `all`, or the gateway's own id (an alias names the same view).
    let (view, lookup) = if name == "all" {
        ("all".to_string(), ctx.read_all().await)
    } else {
        let Some(gw) = is_valid_id(&name).then(|| app.registry.resolve(&name)).flatten() else {
            return unknown_gateway(app, q.get("gateway").map(String::as_str).unwrap_or(""));
        };
        let gw = gw.clone();
        (gw.id.clone(), ctx.read_gateway(&gw).await)
    };
    let lookup = match lookup {
        Ok(l) => l,
        Err(e) => return upstream_error(&name, &e),
    };

    let head_only = req.method == http::Method::HEAD;
    let served = Served::of(&lookup, app);
    let cut = Cut {
        offset: offset.unwrap_or(0),
        limit,
    };
    match search {
        // The whole list, however it was asked for: no page fields, or a `limit` that
        // covers every model from offset 0 (`limit=50000`). Same stored bytes, same
        // ETag, same fast path; its page fields read `limit: null`.
        None if cut.is_whole(lookup.entry.meta.item_count as usize) => {
            serve_entry(req, app, &view, &lookup.entry, &served, head_only).await
        }
        None => serve_page(req, app, &view, &lookup.entry, &served, None, cut, head_only).await,
        Some(term) => {
            let cut = Cut {
                limit: Some(limit.unwrap_or(search::DEFAULT_LIMIT)),
                ..cut
            };
            serve_page(req, app, &view, &lookup.entry, &served, Some(&term), cut, head_only).await
        }
    }
}

/// A `limit` or `offset` value: any integer from `min` up (values past `usize::MAX`
/// mean "everything" and saturate), `None` when absent.
pub(super) fn count(value: Option<&String>, name: &str, min: usize) -> Result<Option<usize>, String> {
    let Some(v) = value else { return Ok(None) };
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{name} must be an integer of at least {min}, got {:?}",
            crate::upstream::truncate(v.to_string(), 40)
        ));
    }
    let n = v.parse::<usize>().unwrap_or(usize::MAX);
    if n < min {
        return Err(format!("{name} must be an integer of at least {min}, got {n}"));
    }
    Ok(Some(n))
}

/// How an entry is being served: what the response headers say about it.
pub(super) struct Served {
    status: CacheStatus,
    /// Why it is held back from the upstream's current answer (`X-Cache-Fail-Safe-Reason`);
    /// empty: served as fetched.
    reasons: Vec<&'static str>,
    /// The merged view's carried gateways and the age of their data (`X-Cache-Carried`).
    carried: Option<String>,
    /// Until when the store keeps the entry for fail-safe serving (unix ms).
    kept_until_ms: u64,
}

impl Served {
    pub(super) fn of(lookup: &Lookup, app: &App) -> Self {
        let now = now_ms();
        let carried = app
            .carried_of(&lookup.entry.meta)
            .iter()
            .map(|(id, clock)| match clock {
                Some(c) => format!("{id};age={}", now.saturating_sub(c.fetched_at_ms) / 1000),
                None => id.to_string(),
            })
            .collect::<Vec<_>>();
        Served {
            status: lookup.status,
            reasons: lookup.fail_safe_reasons(),
            carried: (!carried.is_empty()).then(|| carried.join(", ")),
            kept_until_ms: lookup.entry.meta.clock.kept_until_ms,
        }
    }

    /// Last-known-good, or anything else held back from the upstream's answer.
    fn fail_safe(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// A fail-safe answer is kept by a CDN at most this long: the next request should
/// find the refetch done.
const FAIL_SAFE_CDN_SECS: u64 = 60;

fn unknown_gateway(app: &App, given: &str) -> Response<Body> {
    let mut valid: Vec<&str> = vec!["all"];
    valid.extend(app.registry.ids());
    let message = if given.trim().is_empty() {
        "gateway must not be empty".to_string()
    } else if !is_valid_id(&given.trim().to_ascii_lowercase()) {
        "gateway must be 1-64 characters of a-z, 0-9 and '-'".to_string()
    } else {
        let shown: String = given.chars().take(64).collect();
        format!("unknown gateway '{shown}'")
    };
    json_error(
        StatusCode::BAD_REQUEST,
        "unknown_gateway",
        &message,
        Some(json!({ "valid_gateways": valid })),
    )
}

/// Nothing cached and the fetch failed: what kind of failure, as a status, a code and
/// (when known) `Retry-After`. A rate-limited upstream is 503 with its own window.
pub(super) fn upstream_error(name: &str, e: &CacheError) -> Response<Body> {
    use crate::swr::SourceError;
    let (status, code) = match e {
        _ if e.is_rate_limit() => (StatusCode::SERVICE_UNAVAILABLE, "upstream_rate_limited"),
        CacheError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        CacheError::Source(SourceError::Upstream(f)) if f.is_timeout() => {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        }
        CacheError::Throttled { .. } | CacheError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
    };
    let retry_after = e.retry_after().map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
    let message = match retry_after {
        Some(secs) if e.is_rate_limit() => {
            format!("no cached catalog for '{name}' and the upstream is rate limiting; retry after {secs} s ({e})")
        }
        _ => format!("no cached catalog for '{name}' and the upstream failed: {e}"),
    };
    let mut r = json_error(status, code, &crate::upstream::bounded(&message), None);
    r.headers_mut().insert("x-cache", HeaderValue::from_static("MISS"));
    if let Some(secs) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Headers every successful answer carries.
fn base_headers(r: &mut http::response::Builder, entry: &Entry, served: &Served) {
    answer_headers(r, entry, served, "application/json; charset=utf-8");
}

/// Headers every successful answer from a cached entry carries (the JSON and the
/// page), with `content_type`.
pub(super) fn answer_headers(
    r: &mut http::response::Builder,
    entry: &Entry,
    served: &Served,
    content_type: &'static str,
) {
    let now = now_ms();
    let m = &entry.meta;
    // A CDN that honours it keeps serving this copy while the function errors, for as
    // long as we would ourselves (fail-safe).
    let if_error = served.kept_until_ms.saturating_sub(now) / 1000;
    let cache_control = match served.status {
        // Last-known-good (past its stale window, held by the guard, carrying a gone
        // gateway's listings): a short CDN life, then ask again.
        _ if served.fail_safe() => {
            format!("public, max-age=0, s-maxage={FAIL_SAFE_CDN_SECS}, stale-if-error={if_error}")
        }
        // Fresh: the CDN may keep it for what is left of the fresh window (capped),
        // then serve it stale while it asks again. Browsers always revalidate
        // (max-age=0) — a 304 on the ETag is cheap.
        CacheStatus::Hit | CacheStatus::Miss => {
            let fresh = (m.clock.fresh_until_ms.saturating_sub(now) / 1000).clamp(1, CDN_MAX_AGE_SECS);
            let stale = (m.clock.stale_until_ms.saturating_sub(now) / 1000).min(CDN_WINDOW_SECS - fresh);
            format!("public, max-age=0, s-maxage={fresh}, stale-while-revalidate={stale}, stale-if-error={if_error}")
        }
        // Stale: we are already revalidating; the CDN must ask again, serving this
        // copy meanwhile.
        CacheStatus::Stale => format!(
            "public, max-age=0, s-maxage=0, stale-while-revalidate={}, stale-if-error={if_error}",
            (m.clock.stale_until_ms.saturating_sub(now) / 1000).min(CDN_WINDOW_SECS)
        ),
    };
    let headers = r.headers_mut().expect("builder is fresh");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-cache", HeaderValue::from_static(served.status.as_str()));
    if served.fail_safe() {
        headers.insert("x-cache-fail-safe", HeaderValue::from_static("1"));
        headers.insert(
            "x-cache-fail-safe-reason",
            HeaderValue::from_str(&served.reasons.join(", ")).expect("ascii words"),
        );
    }
    if let Some(carried) = served.carried.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("x-cache-carried", carried);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache_control).expect("ascii"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("x-cache-age", HeaderValue::from(m.age_ms(now) / 1000));
    headers.insert("x-model-count", HeaderValue::from(m.item_count));
}

/// The whole list: the stored body, or one derived once per content (the answers
/// layer: off the async workers, under the CPU permit, kept by ETag).
async fn serve_entry(
    req: &http::request::Parts,
    app: &App,
    view: &str,
    entry: &Arc<Entry>,
    served: &Served,
    head_only: bool,
) -> Response<Body> {
    let mut r = Response::builder();
    base_headers(&mut r, entry, served);
    let encoding = choose_encoding(&req.headers);
    let tag =
        HeaderValue::from_str(entry.etag_in(encoding)).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""));
    if not_modified(&req.headers, &entry.meta.etag) {
        return not_modified_response(r, tag);
    }
    // A HEAD of a stored body costs nothing; of a derived one, what deriving costs
    // once (then it is kept), so that its length is right.
    match app.answers.body(view, entry, encoding).await {
        Ok(body) => {
            let len = Some(body.len());
            let body = if head_only { Body::empty() } else { Body::from(body) };
            ok_response(r, tag, encoding, body, len)
        }
        Err(e) => unreadable(e),
    }
}

pub(super) fn not_modified_response(r: http::response::Builder, tag: HeaderValue) -> Response<Body> {
    r.status(StatusCode::NOT_MODIFIED)
        .header(header::ETAG, tag)
        .body(Body::empty())
        .expect("valid")
}

/// 200 with `tag` (this encoding's ETag), `Content-Encoding`, and `Content-Length`
/// when known (a HEAD has an empty body and the GET's length).
pub(super) fn ok_response(
    r: http::response::Builder,
    tag: HeaderValue,
    encoding: Encoding,
    body: Body,
    len: Option<usize>,
) -> Response<Body> {
    let mut r = r.status(StatusCode::OK).header(header::ETAG, tag);
    if let Some(len) = len {
        r = r.header(header::CONTENT_LENGTH, len);
    }
    if let Some(ce) = encoding.header_value() {
        r = r.header(header::CONTENT_ENCODING, ce);
    }
    r.body(body).expect("valid")
}

/// Which models of the list a response holds.
#[derive(Clone, Copy)]
struct Cut {
    offset: usize,
    /// `None`: to the end.
    limit: Option<usize>,
}

impl Cut {
    /// Whether this cut of a list of `total` models is the whole list.
    fn is_whole(&self, total: usize) -> bool {
        self.offset == 0 && self.limit.is_none_or(|l| l >= total)
    }
}

/// A page of the list, or (`term`) of the models whose id, name, description or
/// provider contains the term (case-insensitive). Cut from the entry's index (built
/// once per ETag, off the async workers; see [`crate::search`]), compressed when
/// accepted, with an ETag of its own.
#[allow(clippy::too_many_arguments)]
async fn serve_page(
    req: &http::request::Parts,
    app: &App,
    view: &str,
    entry: &Arc<Entry>,
    served: &Served,
    term: Option<&str>,
    Cut { offset, limit }: Cut,
    head_only: bool,
) -> Response<Body> {
    let encoding = choose_encoding_per_request(&req.headers);
    let mut r = Response::builder();
    base_headers(&mut r, entry, served);
    // A list page lives as long as the list it is cut from (the base headers);
    // search answers are many and short-lived at the CDN.
    if term.is_some() {
        r.headers_mut().unwrap().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=0, s-maxage=60"),
        );
    }
    // The validator is derived from the entry's and the cut: a 304 costs no search.
    let etag = search::answer_etag(&entry.meta.etag, term, offset, limit);
    let tag = HeaderValue::from_str(&encoding_etag(&etag, encoding)).expect("hex etag");
    if not_modified(&req.headers, &etag) {
        return not_modified_response(r, tag);
    }
    match app
        .answers
        .answer(view, entry, term, offset, limit, encoding, head_only)
        .await
    {
        Ok(answer) => ok_response(r, tag, answer.encoding, answer.body, answer.len),
        Err(e) => unreadable(e),
    }
}

/// 500 for a cached value that cannot be read back (the next read refetches it).
fn unreadable(e: impl std::fmt::Display) -> Response<Body> {
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "corrupt_entry",
        &format!("cached value unreadable: {e}"),
        None,
    )
}
