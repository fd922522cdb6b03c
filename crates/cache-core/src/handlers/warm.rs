//! `POST /api/cache/warm-models` (manual warm) and `GET /api/cache/warm-models` (status).

use std::sync::Arc;

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use super::auth::check_bearer;
use super::{RequestContext, json_error, json_response, method_not_allowed, query};
use crate::app::App;
use crate::app::warm::Trigger;
use crate::body::Body;

pub(crate) async fn handle(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    match req.method {
        Method::POST => warm(req, ctx).await,
        Method::GET | Method::HEAD => status(req, &ctx.app).await,
        _ => method_not_allowed("GET, HEAD, POST"),
    }
}

async fn warm(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    let app = &ctx.app;
    let Some(secret) = &app.config.warming_secret else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "warming_disabled",
            "manual warming is disabled: set CACHE_WARMING_SECRET to enable it",
            None,
        );
    };
    if let Err(f) = check_bearer(&req.headers, secret) {
        tracing::warn!("[Cache Warming] Rejected manual warm: {}", f.describe());
        let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized", f.describe(), None);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let q = match query::parse(req.uri.query(), &["gateway", "reset", "due"]) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &e.0, None),
    };
    if let Some(what) = q.get("reset") {
        return reset(app, what).await;
    }
    let gateways = match q.get("gateway") {
        None => None,
        Some(list) => {
            let mut chosen = Vec::new();
            for name in list.split(',').map(str::trim) {
                match app
                    .registry
                    .resolve(name)
                    .filter(|_| crate::gateways::registry::is_valid_id(&name.to_ascii_lowercase()))
                {
                    Some(gw) if !chosen.iter().any(|g: &crate::gateways::Gateway| g.id == gw.id) => {
                        chosen.push(gw.clone())
                    }
                    Some(_) => {}
                    None => {
                        let shown: String = name.chars().take(64).collect();
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "unknown_gateway",
                            &format!("unknown gateway '{shown}'"),
                            Some(json!({ "valid_gateways": app.registry.ids() })),
                        );
                    }
                }
            }
            Some(chosen)
        }
    };
    // `?due=1`: only the gateways whose fresh window ends before the next cron run.
    let due_only = match q.get("due").map(|v| v.trim()) {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, "bad_query", "due must be 1 or 0", None),
    };
    let result = ctx.warm_scoped(gateways, due_only, Trigger::Manual).await;
    crate::app::warm::report_failures(super::Route::WarmModels.path(), None, &result);
    match result {
        Ok(record) => super::json_answer(&req.headers, super::run_status(&record), &record),
        Err(e) => super::warm_error(&e),
    }
}

/// `POST ?reset=metrics`: zero the shared cache counters.
async fn reset(app: &Arc<App>, what: &str) -> Response<Body> {
    if what != "metrics" {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "reset accepts only 'metrics'",
            None,
        );
    }
    match app.reset_metrics().await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "success": true, "message": "metrics reset" })),
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
            None,
        ),
    }
}

/// How long an assembled status may be kept by a CDN (`s-maxage`); the catalog
/// reuses it in process for as long.
const STATUS_CDN_SECS: u64 = crate::app::status::STATUS_TTL.as_secs();

/// Warming status: no auth, no secrets (see [`App::status`]); gzipped when accepted.
async fn status(req: &http::request::Parts, app: &Arc<App>) -> Response<Body> {
    let body = app.status().await;
    let gzip = super::negotiate::accepts(&req.headers, "gzip");
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::VARY, "Accept-Encoding")
        .header(
            header::CACHE_CONTROL,
            format!("public, max-age=0, s-maxage={STATUS_CDN_SECS}"),
        );
    if gzip {
        r = r.header(header::CONTENT_ENCODING, "gzip");
    }
    let body = if gzip { body.gzip } else { body.identity };
    let body = if req.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    r.body(body).expect("static headers")
}
