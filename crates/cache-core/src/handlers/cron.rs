//! `GET /api/cron/warm-cache`: the Vercel Cron entry.
//!
//! Authenticated by `Authorization: Bearer $CRON_SECRET` in constant time; the
//! `x-vercel-cron` header and the `vercel-cron` user agent prove nothing (anyone
//! can send them). The warm runs in-process: no HTTP call to another host, so
//! no secret travels anywhere (docs/design.md, failure 7).

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use super::auth::check_bearer;
use super::{RequestContext, json_error, method_not_allowed, run_status, warm_error};
use crate::app::warm::Trigger;
use crate::body::Body;
use crate::clock::{iso8601, now_ms};

pub(crate) async fn handle(req: &http::request::Parts, ctx: &RequestContext) -> Response<Body> {
    let app = &ctx.app;
    if req.method != Method::GET {
        return method_not_allowed("GET");
    }
    tracing::info!("[Cron] warm-cache invoked");
    match &app.config.cron_secret {
        Some(secret) => {
            if let Err(f) = check_bearer(&req.headers, secret) {
                tracing::warn!("[Cron] Rejected: {}", f.describe());
                let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized", f.describe(), None);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
        None if ctx.local_loopback && !app.config.deployed => {
            tracing::warn!("[Cron] CRON_SECRET is not set: accepting a local request from loopback (development only)");
        }
        None => {
            tracing::error!("[Cron] CRON_SECRET is not set: refusing to run");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cron_disabled",
                "CRON_SECRET is not set: the cron endpoint refuses to run until it is",
                None,
            );
        }
    }
    // With a learned cadence the cron refreshes the gateways that are due; `fixed`
    // refreshes every one, as before.
    let due_only = app.config.cadence.mode == crate::cadence::Mode::Learned;
    let result = ctx.warm_scoped(None, due_only, Trigger::Cron).await;
    crate::app::warm::report_failures(super::Route::CronWarmCache.path(), Some("warm-cache"), &result);
    match result {
        Ok(record) => {
            let message = format!(
                "warmed {}/{} gateways, {} models",
                record.gateways_success,
                record.gateways_success + record.gateways_failed,
                record.total_models
            );
            tracing::info!("[Cron] {message}");
            super::json_answer(
                &req.headers,
                run_status(&record),
                &json!({ "success": record.success, "message": message, "timestamp": iso8601(now_ms()), "result": record }),
            )
        }
        Err(e) => {
            tracing::info!("[Cron] {e}");
            warm_error(&e)
        }
    }
}
