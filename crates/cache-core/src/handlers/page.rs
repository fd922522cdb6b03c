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
use crate::app::page::PageAsk;
use crate::body::Body;
use crate::gateways::registry::is_valid_id;

/// The pages' Content-Security-Policy: scripts are files of this origin (no inline
/// script), styles are files of this origin or the models page's one `<style>`, allowed
/// by its hash (no `'unsafe-inline'`: the status page sets its widths through the
/// CSSOM), and the data comes from this origin's API. `vercel.json` sends the same for
/// every path; `tests/it/layout.rs` keeps the three copies equal and the hash right.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-UG9WOW1JXaCsf2lA7eK4XTWCV/oOT0+nhYdtXzAtxGs='; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";

pub(crate) async fn handle(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    let app = &ctx.app;
    if !is_get_or_head(&req.method) {
        return method_not_allowed("GET, HEAD");
    }
    // Asked by the page's script, which reads errors as JSON: whatever else is wrong
    // with the query (too long, `fragment` twice), a `fragment` parameter says so.
    let wants_fragment = req
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some("fragment")));
    let ask = match parse(req, app) {
        Ok(a) => a,
        Err(message) if wants_fragment => return json_error(StatusCode::BAD_REQUEST, "bad_query", &message, None),
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message, None),
    };
    let name = if ask.gateway.is_empty() {
        "all".to_string()
    } else {
        ask.gateway.clone()
    };
    let view = match ctx.models_page(ask).await {
        Ok(v) => v,
        Err(e) => {
            let json = upstream_error(&name, &e);
            if wants_fragment {
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
    // The shared document is kept in every encoding; another page in the one asked.
    let encoding = match view.is_shared() {
        true => choose_encoding(&req.headers),
        false => choose_encoding_per_request(&req.headers),
    };
    let tag = HeaderValue::from_str(&crate::entry::encoding_etag(&view.etag, encoding)).expect("hex etag");
    let mut r = Response::builder();
    answer_headers(&mut r, &view.lookup.entry, &Served::of(&view.lookup, app), HTML);
    page_headers(&mut r);
    if not_modified(&req.headers, &view.etag) {
        return not_modified_response(r, tag);
    }
    let bytes = match view.body(app, encoding).await {
        Ok(b) => b,
        Err(e) if wants_fragment => {
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

/// The longest span `new=` takes.
const MAX_NEW_DAYS: u32 = 90;

fn parse(req: &http::request::Parts, app: &App) -> Result<PageAsk, String> {
    let q = query::parse(req.uri.query(), &["gateway", "search", "offset", "fragment", "new"]).map_err(|e| e.0)?;
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
    // `new=7d` (or `new=N`/`Nd`, 1 to 90 days); empty: every model.
    let new_days = match q.get("new").map(|n| n.trim()) {
        None | Some("") => None,
        Some(n) => match n.strip_suffix('d').unwrap_or(n).parse::<u32>() {
            Ok(d) if (1..=MAX_NEW_DAYS).contains(&d) => Some(d),
            _ => {
                return Err(format!(
                    "new must be a number of days from 1 to {MAX_NEW_DAYS}, like 7d"
                ));
            }
        },
    };
    Ok(PageAsk {
        gateway,
        search,
        offset,
        fragment,
        new_days,
        marks_since_ms: PageAsk::marks_since(crate::clock::now_ms(), crate::app::page::NEW_FOR_DAYS),
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
