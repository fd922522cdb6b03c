//! `GET /models` (and `/`): the models page, its first screen in the document
//! ([`crate::page`]). Vercel rewrites both paths to this function (binary `page`);
//! the dev server routes them here. A rewritten request keeps the URL the browser
//! asked for, so nothing here depends on the path.
//!
//! `?gateway=`, `?search=` and `?offset=` render other pages of rows: what the
//! page's links and form ask for when JavaScript is off. With `&fragment=rows` the
//! answer is those rows only, as a `<tbody>` fragment (what the page's script inserts);
//! its errors are JSON (`{"error","message"}`), as the API's.

use http::{HeaderValue, Response, StatusCode, header};

use super::models::{Served, answer_headers, count, not_modified_response, ok_response, upstream_error};
use super::negotiate::{choose_encoding, choose_encoding_per_request, not_modified};
use super::{RequestContext, is_get_or_head, json_error, method_not_allowed, query};
use crate::answers as search;
use crate::app::App;
use crate::body::Body;
use crate::entry::Entry;
use crate::gateways::registry::is_valid_id;
use crate::page::{ROWS, Slice, View};
use crate::swr::Lookup;

/// The pages' Content-Security-Policy: scripts are files of this origin (no inline
/// script), styles are files of this origin or the models page's one `<style>`, allowed
/// by its hash (no `'unsafe-inline'`: the status page sets its widths through the
/// CSSOM), and the data comes from this origin's API. `vercel.json` sends the same for
/// every path; `tests/it/layout.rs` keeps the three copies equal and the hash right.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-cVWpvovBMmwj2ogq2KyuJVxZhHeD73IQBJvmwy0/Ilg='; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";

/// What a page request asks for.
struct Ask {
    gateway: String,
    search: Option<String>,
    offset: usize,
    /// `fragment=rows`: the rows only.
    fragment: bool,
}

pub(crate) async fn handle(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    let (app, spawner) = (&ctx.app, ctx.spawner.clone());
    if !is_get_or_head(&req.method) {
        return method_not_allowed("GET, HEAD");
    }
    let wants_fragment = query::parse(req.uri.query(), &["fragment"]).is_ok_and(|q| q.contains_key("fragment"));
    let ask = match parse(req, app) {
        Ok(a) => a,
        Err(message) if wants_fragment => return json_error(StatusCode::BAD_REQUEST, "bad_query", &message, None),
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message, None),
    };
    let lookup = match ask.gateway.as_str() {
        "" => app.read_all(spawner).await,
        id => match app.gateway(id).cloned() {
            Some(gw) => app.read_gateway(&gw, spawner).await,
            None => return error_page(StatusCode::BAD_REQUEST, "unknown gateway", None),
        },
    };
    let lookup = match lookup {
        Ok(l) => l,
        Err(e) => {
            let json = upstream_error(if ask.gateway.is_empty() { "all" } else { &ask.gateway }, &e);
            if ask.fragment {
                return json;
            }
            let retry = json.headers().get(header::RETRY_AFTER).cloned();
            return error_page(
                json.status(),
                "the models are not available right now; try again shortly",
                retry,
            );
        }
    };
    let head_only = req.method == http::Method::HEAD;
    let encoding = match default_view(&ask) {
        true => choose_encoding(&req.headers),
        false => choose_encoding_per_request(&req.headers),
    };
    let etag = page_etag(&lookup.entry, &ask);
    let tag = HeaderValue::from_str(&crate::entry::encoding_etag(&etag, encoding)).expect("hex etag");
    let mut r = Response::builder();
    answer_headers(&mut r, &lookup.entry, &Served::of(&lookup, app), HTML);
    page_headers(&mut r);
    if not_modified(&req.headers, &etag) {
        return not_modified_response(r, tag);
    }
    // Rendered and compressed off the async workers, under the CPU permit, once per
    // page ETag (identical requests wait for the one render); the default document is
    // pinned, other pages (URLs a client picks) are kept like any answer, compressed
    // fast in one encoding (gzip when accepted), as search answers are.
    let made = match prepare(app, &lookup, &ask).await {
        Err(e) => Err(e),
        Ok(render) if default_view(&ask) => app
            .answers
            .document("all", &etag, render)
            .await
            .map(|page| page.encoded(encoding)),
        Ok(render) => app.answers.html(&etag, encoding, render).await,
    };
    let bytes = match made {
        Ok(b) => b,
        Err(e) if ask.fragment => {
            let message = format!("cached catalog unreadable: {e}");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &message, None);
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cached catalog unreadable: {e}"),
                None,
            );
        }
    };
    let len = Some(bytes.len());
    let body = if head_only { Body::empty() } else { Body::from(bytes) };
    ok_response(r, tag, encoding, body, len)
}

/// `/models` itself: the merged view's first screen, the same for every visitor.
fn default_view(ask: &Ask) -> bool {
    ask.gateway.is_empty() && ask.search.is_none() && ask.offset == 0 && !ask.fragment
}

fn parse(req: &http::request::Parts, app: &App) -> Result<Ask, String> {
    let q = query::parse(req.uri.query(), &["gateway", "search", "offset", "fragment"]).map_err(|e| e.0)?;
    let fragment = match q.get("fragment").map(String::as_str) {
        None => false,
        Some("rows") => true,
        Some(_) => return Err("fragment must be \"rows\"".into()),
    };
    let gateway = match q.get("gateway").map(|g| g.trim().to_ascii_lowercase()) {
        None => String::new(),
        Some(g) if g.is_empty() || g == "all" => String::new(),
        Some(g) => match is_valid_id(&g).then(|| app.gateway(&g)).flatten() {
            Some(gw) => gw.id.clone(),
            None => return Err("unknown gateway".into()),
        },
    };
    let search = match q.get("search").map(|s| s.trim()) {
        None | Some("") => None,
        Some(s) if s.chars().count() < search::MIN_TERM_CHARS => {
            return Err(format!("a search needs at least {} characters", search::MIN_TERM_CHARS));
        }
        Some(s) if s.chars().count() > search::MAX_TERM_CHARS => {
            return Err(format!("a search has at most {} characters", search::MAX_TERM_CHARS));
        }
        Some(s) => Some(s.to_lowercase()),
    };
    let offset = count(q.get("offset"), "offset", 0)?.unwrap_or(0);
    Ok(Ask {
        gateway,
        search,
        offset,
        fragment,
    })
}

/// The page's validator: the entry's content and clock (the page says "data as of"),
/// and what was asked.
fn page_etag(entry: &Entry, ask: &Ask) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(entry.meta.etag.as_bytes());
    h.update(&entry.meta.clock.fetched_at_ms.to_le_bytes());
    h.update(ask.gateway.as_bytes());
    h.update(&[0]);
    h.update(ask.search.as_deref().unwrap_or("").as_bytes());
    h.update(&(ask.offset as u64).to_le_bytes());
    h.update(&[ask.fragment as u8]);
    format!("\"h-{:032x}\"", h.digest128())
}

/// What rendering `ask`'s page of `lookup`'s catalog needs, gathered here (the index
/// and the matches, each made once), and the render itself, to run off the async
/// workers.
async fn prepare(
    app: &App,
    lookup: &Lookup,
    ask: &Ask,
) -> Result<impl FnOnce() -> Result<String, String> + Send + 'static, String> {
    let view_name = if ask.gateway.is_empty() {
        "all"
    } else {
        ask.gateway.as_str()
    };
    let index = app.answers.index(view_name, &lookup.entry).await?;
    let hits = match &ask.search {
        Some(term) => Some(app.answers.hits(&index, &lookup.entry.meta.etag, term).await?),
        None => None,
    };
    let all_total = match ask.gateway.is_empty() {
        true => index.len(),
        false => app
            .cache
            .peek_meta(app.all_key())
            .await
            .map_or(index.len(), |m| m.item_count as usize),
    };
    let gateways: Vec<String> = app.registry.ids().into_iter().map(str::to_string).collect();
    let (gateway, search, offset, fragment) = (ask.gateway.clone(), ask.search.clone(), ask.offset, ask.fragment);
    let clock = lookup.entry.meta.clock;
    Ok(move || {
        let matching = hits.as_ref().map_or(index.len(), |h| h.len());
        let start = offset.min(matching);
        let end = start.saturating_add(ROWS).min(matching);
        let models: Vec<u32> = match &hits {
            Some(h) => h[start..end].to_vec(),
            None => (start as u32..end as u32).collect(),
        };
        if fragment {
            let slice = Slice {
                matching,
                all_total,
                next: end,
            };
            return Ok(crate::page::rows(&slice, &index, &models));
        }
        let view = View {
            gateway: &gateway,
            search: search.as_deref(),
            offset,
            matching,
            all_total,
            gateways: &gateways,
            fetched_at_ms: clock.fetched_at_ms,
            fresh_until_ms: clock.fresh_until_ms,
        };
        Ok(crate::page::render(&view, &index, &models))
    })
}

/// Headers of every page answer.
fn page_headers(r: &mut http::response::Builder) {
    let h = r.headers_mut().expect("builder is fresh");
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// A page that says what went wrong, never cached.
fn error_page(status: StatusCode, message: &str, retry_after: Option<HeaderValue>) -> Response<Body> {
    let html = crate::page::error(message);
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, HTML)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    page_headers(&mut r);
    if let Some(v) = retry_after {
        r = r.header(header::RETRY_AFTER, v);
    }
    r.body(Body::from(html)).expect("static headers")
}
