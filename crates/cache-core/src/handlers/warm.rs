//! `POST /api/cache/warm-models` (manual warm) and `GET /api/cache/warm-models` (status).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use super::auth::check_bearer;
use super::{json_error, json_response, method_not_allowed, query};
use crate::catalog::Catalog;
use crate::clock::{iso8601, now_ms};
use crate::contract::{GatewayState, KeyState, LastError, StatusMetrics, StatusResponse};
use crate::entry::Freshness;
use crate::keys;
use crate::metrics::{CategoryMetrics, Metrics};
use crate::spawn::Spawner;
use crate::swr::FetchFailure;
use crate::warm::{RunRecord, Trigger, WarmError};

pub async fn handle(req: &http::request::Parts, catalog: &Arc<Catalog>, spawner: Arc<dyn Spawner>) -> Response<Bytes> {
    match req.method {
        Method::POST => warm(req, catalog, spawner).await,
        Method::GET | Method::HEAD => status(catalog).await,
        _ => method_not_allowed("GET, HEAD, POST"),
    }
}

async fn warm(req: &http::request::Parts, catalog: &Arc<Catalog>, spawner: Arc<dyn Spawner>) -> Response<Bytes> {
    let Some(secret) = &catalog.config.warming_secret else {
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
    let q = match query::parse(req.uri.query(), &["gateway", "reset"]) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &e.0, None),
    };
    if let Some(what) = q.get("reset") {
        return reset(catalog, what).await;
    }
    let gateways = match q.get("gateway") {
        None => None,
        Some(list) => {
            let mut chosen = Vec::new();
            for name in list.split(',').map(str::trim) {
                match catalog
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
                            Some(json!({ "valid_gateways": catalog.registry.ids() })),
                        );
                    }
                }
            }
            Some(chosen)
        }
    };
    let result = catalog.warm(gateways, Trigger::Manual, spawner).await;
    report_failures(super::Route::WarmModels.path(), None, &result);
    run_response(result)
}

/// `POST ?reset=metrics`: zero the shared cache counters.
async fn reset(catalog: &Arc<Catalog>, what: &str) -> Response<Bytes> {
    if what != "metrics" {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "reset accepts only 'metrics'",
            None,
        );
    }
    match catalog.store().delete(&keys::metrics("models")).await {
        Ok(()) => {
            tracing::info!("[Cache Warming] Metrics reset");
            forget_status(catalog).await;
            json_response(StatusCode::OK, &json!({ "success": true, "message": "metrics reset" }))
        }
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
            None,
        ),
    }
}

/// Capture a failed or partly failed warm in Sentry, tagged like the seed's events.
pub fn report_failures(api_route: &str, cron_job: Option<&str>, result: &Result<RunRecord, WarmError>) {
    let (error_type, message) = match result {
        Ok(r) if r.success => return,
        Ok(r) if r.gateways_failed == 0 => (
            "warm_partial_failure",
            format!(
                "[Cache Warming] every gateway stored, but the merged view or the run record was not (merged: {:?})",
                r.merged_models
            ),
        ),
        Ok(r) => {
            let failed: Vec<String> = r
                .details
                .iter()
                .filter_map(|d| d.error.as_ref().map(|e| format!("{}: {e}", d.gateway)))
                .collect();
            let kind = if r.gateways_success == 0 {
                "warm_failed"
            } else {
                "warm_partial_failure"
            };
            (
                kind,
                format!(
                    "[Cache Warming] {} of {} gateways failed: {}",
                    r.gateways_failed,
                    r.details.len(),
                    failed.join("; ")
                ),
            )
        }
        Err(WarmError::AlreadyRunning { .. }) => return,
        Err(e @ WarmError::StoreUnavailable(_)) => ("store_unavailable", format!("[Cache Warming] {e}")),
    };
    crate::telemetry::capture_failure(api_route, error_type, cron_job, &message);
}

/// Status code for a finished run: 200 everything was fetched and stored (gateways,
/// merged view, run record), 207 some of it failed, 502 every gateway failed.
pub fn run_status(record: &RunRecord) -> StatusCode {
    if record.success {
        StatusCode::OK
    } else if record.gateways_success > 0 {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::BAD_GATEWAY
    }
}

fn run_response(result: Result<RunRecord, WarmError>) -> Response<Bytes> {
    match result {
        Ok(record) => json_response(run_status(&record), &record),
        Err(e) => warm_error(&e),
    }
}

pub fn warm_error(e: &WarmError) -> Response<Bytes> {
    match e {
        WarmError::AlreadyRunning { started_at_ms } => json_error(
            StatusCode::CONFLICT,
            "warm_in_progress",
            &e.to_string(),
            Some(json!({ "success": false, "started_at": started_at_ms.map(iso8601) })),
        ),
        WarmError::StoreUnavailable(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
            None,
        ),
    }
}

/// How long an assembled status is reused, in process and (`s-maxage`) by the CDN.
/// Anyone may GET the status: without this, each request cost ~46 Redis commands.
const STATUS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Warming status: no auth, no secrets. Shows each gateway's data age so an upstream
/// outage is visible while stale data still hides it from users (docs/design.md, failure 10).
async fn status(catalog: &Arc<Catalog>) -> Response<Bytes> {
    let body = {
        let mut cached = catalog.status_cache.lock().await;
        match cached.as_ref() {
            Some((built, body)) if built.elapsed() < STATUS_TTL => body.clone(),
            _ => {
                let body = assemble_status(catalog).await;
                *cached = Some((std::time::Instant::now(), body.clone()));
                body
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CACHE_CONTROL,
            format!("public, max-age=0, s-maxage={}", STATUS_TTL.as_secs()),
        )
        .body(body)
        .expect("static headers")
}

/// Forget the assembled status (after a warm or a metrics reset: show it at once).
pub(crate) async fn forget_status(catalog: &Catalog) {
    *catalog.status_cache.lock().await = None;
}

async fn assemble_status(catalog: &Arc<Catalog>) -> Bytes {
    let state_of = |id: String, key: String| async move {
        // The header only: a few hundred bytes per entry, not the catalog.
        let entry = catalog.cache.peek_meta(&key).await;
        let failure: Option<FetchFailure> = catalog.cache.last_failure(&key).await;
        let now = now_ms();
        GatewayState {
            gateway: id,
            state: entry.as_ref().map_or(KeyState::Missing, |m| match m.freshness(now) {
                Freshness::Fresh => KeyState::Fresh,
                Freshness::Stale => KeyState::Stale,
                Freshness::Expired => KeyState::Expired,
            }),
            fail_safe: entry
                .as_ref()
                .is_some_and(|m| m.freshness(now) == crate::entry::Freshness::Expired),
            missing_gateways: None,
            age_seconds: entry.as_ref().map(|m| m.age_ms(now) / 1000),
            models: entry.as_ref().map(|m| m.item_count),
            fresh_until: entry.as_ref().map(|m| iso8601(m.fresh_until_ms)),
            stale_until: entry.as_ref().map(|m| iso8601(m.stale_until_ms)),
            last_error: failure.map(|f| LastError {
                error: f.error,
                at: iso8601(f.at_ms),
            }),
        }
    };
    let gateways = futures_util::future::join_all(
        catalog
            .registry
            .all()
            .iter()
            .map(|g| state_of(g.id.clone(), keys::gateway(&g.id))),
    )
    .await;
    let mut merged = state_of("all".into(), catalog.all_key().to_string()).await;
    merged.missing_gateways = Some(
        gateways
            .iter()
            .filter(|g| g.state == KeyState::Missing)
            .map(|g| g.gateway.clone())
            .collect(),
    );
    let metrics = match Metrics::read(catalog.store(), "models").await {
        Ok(models) => StatusMetrics { models, error: None },
        Err(e) => StatusMetrics {
            models: CategoryMetrics::default(),
            error: Some(e.to_string()),
        },
    };
    let status = StatusResponse {
        store: catalog.store().backend_name().to_string(),
        last_run: catalog.last_run().await,
        gateways,
        merged,
        metrics,
        timestamp: iso8601(now_ms()),
    };
    Bytes::from(serde_json::to_vec(&status).expect("serializable"))
}
