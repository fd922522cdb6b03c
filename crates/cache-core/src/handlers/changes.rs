//! `GET /api/models/changes` (the change log as JSON) and `GET /api/models/feed` (its
//! models added, and optionally repriced, as an Atom feed): see [`crate::changes`].
//!
//! Both read the store's log (bounded: at most the whole log per answer), answer with
//! an ETag and a 304 to a matching `If-None-Match`, and let a CDN keep them a minute.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::negotiate::not_modified;
use super::{RequestContext, is_get_or_head, json_error, method_not_allowed, query};
use crate::body::Body;
use crate::changes::{self, Query};
use crate::clock::now_ms;
use crate::contract::ChangeKind;
use crate::gateways::registry::is_valid_id;
use crate::swr::ScopedFuture;

/// A CDN keeps an answer this long, then serves it stale this long while it asks
/// again: a new change shows within two minutes.
const CACHE_CONTROL: &str = "public, max-age=0, s-maxage=60, stale-while-revalidate=60";
/// Entries in the Atom feed.
const FEED_ENTRIES: usize = 50;

/// `GET /api/models/changes?since=&gateway=&kind=&limit=`.
///
/// Boxed here, not by the caller: the route dispatcher's future holds every route's,
/// and in a debug build each one's size is stack in the frame that polls the others
/// (the page's cold fill, polled deep, overflowed 2 MiB by it).
pub(crate) fn handle<'a>(req: &'a http::request::Parts, ctx: &'a RequestContext) -> ScopedFuture<'a, Response<Body>> {
    Box::pin(changes_json(req, ctx))
}

/// `GET /api/models/feed?gateway=&kind=` (boxed as [`handle`]).
pub(crate) fn feed<'a>(req: &'a http::request::Parts, ctx: &'a RequestContext) -> ScopedFuture<'a, Response<Body>> {
    Box::pin(atom(req, ctx))
}

async fn changes_json(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    if !is_get_or_head(&req.method) {
        return method_not_allowed("GET, HEAD");
    }
    let q = match parse(req, ctx, &["since", "gateway", "kind", "limit"], None) {
        Ok(q) => q,
        Err(r) => return r,
    };
    match changes::read(ctx.app.store(), &q, now_ms()).await {
        Ok(answer) => {
            let body = serde_json::to_vec(&answer).expect("changes serialize");
            answer_with(req, body, "application/json; charset=utf-8")
        }
        Err(e) => unavailable(&e),
    }
}

/// Atom, models added (`kind=added,repriced` for repriced ones too).
async fn atom(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    if !is_get_or_head(&req.method) {
        return method_not_allowed("GET, HEAD");
    }
    let only = [ChangeKind::Added, ChangeKind::Repriced];
    let mut q = match parse(req, ctx, &["gateway", "kind"], Some(&only)) {
        Ok(q) => q,
        Err(r) => return r,
    };
    if q.kinds.is_empty() {
        q.kinds = vec![ChangeKind::Added];
    }
    q.limit = FEED_ENTRIES;
    match changes::read(ctx.app.store(), &q, now_ms()).await {
        Ok(answer) => {
            let xml = changes::atom_feed(&answer.changes, q.gateway.as_deref(), &origin(req), now_ms());
            answer_with(req, xml.into_bytes(), "application/atom+xml; charset=utf-8")
        }
        Err(e) => unavailable(&e),
    }
}

/// The query, or the 400 that explains what is wrong with it. `kinds`: the kinds this
/// route takes (all listed ones when `None`).
#[allow(clippy::result_large_err)]
fn parse(
    req: &http::request::Parts,
    ctx: &RequestContext,
    wanted: &[&'static str],
    kinds: Option<&[ChangeKind]>,
) -> Result<Query, Response<Body>> {
    let bad = |message: &str| json_error(StatusCode::BAD_REQUEST, "bad_query", message, None);
    let q = query::parse(req.uri.query(), wanted).map_err(|e| bad(&e.0))?;
    let since = match q.get("since") {
        None => None,
        Some(c) => {
            Some(changes::parse_cursor(c).ok_or_else(|| bad("since must be a cursor this route gave (`next`)"))?)
        }
    };
    let gateway = match q.get("gateway").map(|g| g.trim().to_ascii_lowercase()) {
        None => None,
        Some(g) if g == "all" || g.is_empty() => None,
        Some(g) => match is_valid_id(&g).then(|| ctx.app.registry.resolve(&g)).flatten() {
            Some(gw) => Some(gw.id.clone()),
            None => {
                let mut valid: Vec<&str> = vec!["all"];
                valid.extend(ctx.app.registry.ids());
                let shown: String = g.chars().take(64).collect();
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "unknown_gateway",
                    &format!("unknown gateway '{shown}'"),
                    Some(json!({ "valid_gateways": valid })),
                ));
            }
        },
    };
    let allowed = kinds.unwrap_or(&ChangeKind::LISTED);
    let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
    let mut wanted_kinds = Vec::new();
    if let Some(list) = q.get("kind") {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match ChangeKind::parse(name).filter(|k| allowed.contains(k)) {
                Some(k) if !wanted_kinds.contains(&k) => wanted_kinds.push(k),
                Some(_) => {}
                None => return Err(bad(&format!("kind must be one or more of {}", names.join(", ")))),
            }
        }
    }
    let limit = match q.get("limit").map(|l| l.trim()) {
        None => changes::DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=changes::MAX_LIMIT).contains(&n) && l.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(bad(&format!(
                    "limit must be an integer from 1 to {}",
                    changes::MAX_LIMIT
                )));
            }
        },
    };
    Ok(Query {
        since,
        gateway,
        kinds: wanted_kinds,
        limit,
    })
}

/// `body` with its validator, a 304 when the client has it, gzipped when accepted.
fn answer_with(req: &http::request::Parts, body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let etag = crate::entry::etag_for(&body);
    let mut r = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, CACHE_CONTROL)
        .header(header::VARY, "Accept-Encoding")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if not_modified(&req.headers, &etag) {
        return r
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid headers");
    }
    r = r.header(header::CONTENT_TYPE, content_type);
    let body = match body.len() > 1024 && super::negotiate::accepts(&req.headers, "gzip") {
        true => {
            r = r.header(header::CONTENT_ENCODING, "gzip");
            crate::encoding::stored(&body, crate::Encoding::Gzip)
        }
        false => bytes::Bytes::from(body),
    };
    let head = req.method == http::Method::HEAD;
    let mut response = r
        .status(StatusCode::OK)
        .body(if head { Body::empty() } else { Body::from(body.clone()) })
        .expect("valid headers");
    if head {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    response
}

fn unavailable(e: &crate::store::StoreError) -> Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        &format!("the change log cannot be read now: {e}"),
        None,
    )
}

/// `https://<host>` for the feed's links (`http://` on loopback), or nothing (relative
/// links) when the host is not a plain host name.
fn origin(req: &http::request::Parts) -> String {
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain {
        return String::new();
    }
    let local = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|l| host == *l || host.starts_with(&format!("{l}:")));
    format!("{}://{host}", if local { "http" } else { "https" })
}
