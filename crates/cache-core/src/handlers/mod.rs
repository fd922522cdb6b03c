//! The routes' logic on plain `http` types, shared by the Vercel functions and the
//! dev server, and testable without a server.
//!
//! Every answer is a complete `http::Response<Body>` ([`Body`]: one buffer or several); errors are JSON with a
//! message and the right status. Nothing here returns `Err` to a runtime (which
//! would answer 500 with the error text pasted into unescaped JSON).

mod auth;
mod changes;
mod cors;
mod cron;
mod models;
mod negotiate;
mod page;
pub(crate) mod query;

use crate::body::Body;
pub use page::CSP as PAGE_CSP;
mod warm;

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde::Serialize;
use tracing::Instrument;

use crate::app::RequestContext;
use crate::app::warm::{RunRecord, WarmError};

/// The routes, one per Vercel function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/models` (binary `models`).
    Models,
    /// `POST|GET /api/cache/warm-models` (binary `cache-warm-models`).
    WarmModels,
    /// `GET /api/cron/warm-cache` (binary `cron-warm-cache`).
    CronWarmCache,
    /// `GET /models` and `/` (binary `page`, at `/api/page`; `vercel.json` rewrites
    /// both paths to it): the models page, its first screen in the document.
    Page,
    /// `GET /api/models/changes` (binary `models-changes`): the change log as JSON.
    Changes,
    /// `GET /api/models/feed` (binary `models-feed`): models added, as an Atom feed.
    Feed,
}

impl Route {
    pub fn from_path(path: &str) -> Option<Route> {
        match path.trim_end_matches('/') {
            "/api/models" => Some(Route::Models),
            "/api/cache/warm-models" => Some(Route::WarmModels),
            "/api/cron/warm-cache" => Some(Route::CronWarmCache),
            "/api/page" | "/models" | "" => Some(Route::Page),
            "/api/models/changes" => Some(Route::Changes),
            "/api/models/feed" => Some(Route::Feed),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::Models => "/api/models",
            Route::WarmModels => "/api/cache/warm-models",
            Route::CronWarmCache => "/api/cron/warm-cache",
            Route::Page => "/api/page",
            Route::Changes => "/api/models/changes",
            Route::Feed => "/api/models/feed",
        }
    }
}

/// Answer one request. Bodies of requests are never read: no route takes one.
pub async fn handle(route: Route, req: http::request::Parts, ctx: RequestContext) -> Response<Body> {
    // One span per invocation: a Sentry transaction when Sentry is on.
    let policy = &ctx.app.config.cors;
    if req.method == Method::OPTIONS && !matches!(route, Route::CronWarmCache | Route::Page) {
        return cors::preflight(route, &req.headers, policy);
    }
    let (method, origin) = (req.method.clone(), req.headers.get(http::header::ORIGIN).cloned());
    let span = tracing::info_span!(
        "http.server",
        api_route = route.path(),
        http.method = %req.method,
        http.status_code = tracing::field::Empty
    );
    // Boxed: one allocation per request keeps the future's type shallow enough for
    // the callers' (runtime, dev server) own futures.
    let routed: crate::spawn::BoxFuture<Response<Body>> = {
        let ctx = ctx.clone();
        Box::pin(async move {
            match route {
                Route::Models => models::handle(&req, &ctx).await,
                Route::WarmModels => warm::handle(&req, &ctx).await,
                Route::CronWarmCache => cron::handle(&req, &ctx).await,
                Route::Page => page::handle(&req, &ctx).await,
                Route::Changes => changes::handle(&req, &ctx).await,
                Route::Feed => changes::feed(&req, &ctx).await,
            }
        })
    };
    let response = routed.instrument(span.clone()).await;
    let mut response = response;
    cors::decorate(route, &method, origin.as_ref(), policy, &mut response);
    span.record("http.status_code", response.status().as_u16());
    drop(span);
    if crate::telemetry::sentry_enabled() {
        ctx.spawner.spawn(crate::spawn::boxed(crate::telemetry::flush_sentry()));
    }
    response
}

/// `{"error": code, "message": message, ...extra}` with `status`, never cached.
pub(crate) fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: Option<serde_json::Value>,
) -> Response<Body> {
    let mut body = serde_json::json!({ "error": code, "message": message });
    if let Some(serde_json::Value::Object(extra)) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    json_response(status, &body)
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"serialization\"}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(bytes))
        .expect("static headers are valid")
}

/// `body` as JSON with `status`, gzipped when the client accepts gzip and it is worth
/// it (a warm's run record lists every gateway).
pub(crate) fn json_answer<T: Serialize>(req: &http::HeaderMap, status: StatusCode, body: &T) -> Response<Body> {
    let mut r = json_response(status, body);
    if r.body().len() > 1024 && negotiate::accepts(req, "gzip") {
        let gz = crate::encoding::stored(&r.body().to_bytes(), crate::Encoding::Gzip);
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        *r.body_mut() = Body::from(gz);
    }
    r
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this route accepts {allow}"),
        None,
    );
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// 404 for paths that are no route (dev server).
pub fn not_found(path: &str) -> Response<Body> {
    let shown: String = path.chars().take(100).collect();
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route {shown}"),
        Some(
            serde_json::json!({ "routes": ["/models", "/api/models", "/api/models/changes", "/api/models/feed", "/api/cache/warm-models", "/api/cron/warm-cache"] }),
        ),
    )
}

fn is_get_or_head(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

// ---- a warm run as an HTTP answer (the warm and cron routes) -------------------

/// Status code for a finished run: 200 everything was fetched and stored (gateways,
/// merged view, run record), 207 some of it failed, 502 every gateway failed. A
/// due-only run's not-due gateways are fresh, not failed: with any of them, a run
/// whose due gateways all failed is 207, not 502.
fn run_status(record: &RunRecord) -> StatusCode {
    if record.success {
        StatusCode::OK
    } else if record.gateways_success + record.gateways_not_due > 0 {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::BAD_GATEWAY
    }
}

fn warm_error(e: &WarmError) -> Response<Body> {
    match e {
        WarmError::AlreadyRunning { started_at_ms } => json_error(
            StatusCode::CONFLICT,
            "warm_in_progress",
            &e.to_string(),
            Some(serde_json::json!({ "success": false, "started_at": started_at_ms.map(crate::clock::iso8601) })),
        ),
        WarmError::StoreUnavailable(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Trigger;

    #[test]
    fn a_due_only_run_whose_due_gateways_failed_is_partial_while_others_are_fresh() {
        let record = |success, failed, not_due| RunRecord {
            success: false,
            trigger: Trigger::Cron,
            started_at: String::new(),
            finished_at: String::new(),
            duration_ms: 0,
            total_models: 0,
            merged_models: None,
            gateways_success: success,
            gateways_failed: failed,
            gateways_not_due: not_due,
            details: Vec::new(),
        };
        assert_eq!(run_status(&record(0, 1, 20)), StatusCode::MULTI_STATUS);
        assert_eq!(run_status(&record(3, 1, 0)), StatusCode::MULTI_STATUS);
        assert_eq!(run_status(&record(0, 21, 0)), StatusCode::BAD_GATEWAY);
        assert_eq!(
            run_status(&RunRecord {
                success: true,
                ..record(21, 0, 0)
            }),
            StatusCode::OK
        );
    }
}
