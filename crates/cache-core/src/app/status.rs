//! The status the routes show: what is cached, how old, what failed, the last warm
//! and the shared counters ([`StatusResponse`]), and the counters' reset. The
//! operations are [`App::status`] and [`App::reset_metrics`]; the status route only
//! translates HTTP.

use bytes::Bytes;

use crate::app::App;
use crate::body::Precompressed;
use crate::clock::{iso8601, now_ms};
use crate::contract::{
    AnswerCacheState, CarriedState, GatewayState, HeldState, KeyState, LastError, StatusMetrics, StatusResponse,
};
use crate::entry::{EntryMeta, Freshness};
use crate::keys;
use crate::metrics::CategoryMetrics;
use crate::store::StoreError;
use crate::swr::FetchFailure;

/// How long an assembled status is reused, in process and (`s-maxage`) by the CDN.
/// Anyone may GET the status: without this, each request cost ~46 Redis commands.
pub(crate) const STATUS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The status JSON, assembled at most once per `STATUS_TTL` per instance.
pub(super) async fn cached(app: &App) -> Precompressed {
    let mut cached = app.status_cache.lock().await;
    match cached.as_ref() {
        Some((built, body)) if built.elapsed() < STATUS_TTL => body.clone(),
        _ => {
            let body = Precompressed::new(assemble(app).await);
            *cached = Some((std::time::Instant::now(), body.clone()));
            body
        }
    }
}

/// Forget the assembled status (after a warm or a metrics reset: show it at once).
pub(super) async fn forget(app: &App) {
    *app.status_cache.lock().await = None;
}

/// Zero the shared counters (every instance's).
pub(super) async fn reset_metrics(app: &App) -> Result<(), StoreError> {
    app.store().delete(&keys::metrics("models")).await?;
    tracing::info!("[Cache Metrics] Shared counters reset");
    forget(app).await;
    Ok(())
}

async fn assemble(app: &App) -> Bytes {
    let plan = app.cadence_plan().await;
    let plan = &plan;
    let gateways = futures_util::future::join_all(app.registry.all().iter().map(|g| async move {
        let key = keys::gateway(&g.id);
        let meta = app.cache.peek_meta(&key).await;
        let cadence = app.cadence_state(plan, g, meta.as_ref());
        let mut state = state_of(app, g.id.clone(), &key, meta).await;
        state.cadence = cadence;
        state
    }))
    .await;
    let mut gateways = gateways;
    let ids: Vec<&str> = app.registry.all().iter().map(|g| g.id.as_str()).collect();
    for (state, last) in gateways
        .iter_mut()
        .zip(crate::changes::last_changes(app.store(), &ids).await)
    {
        state.last_change = last;
    }
    let merged = merged_state(app, &gateways).await;
    let status = StatusResponse {
        store: app.store().backend_name().to_string(),
        store_write_error: app.cache.store_write_error().map(|f| LastError {
            error: f.error,
            at: iso8601(f.at_ms),
        }),
        last_run: app.last_run().await,
        gateways,
        merged,
        cadence_plan: app.cadence_plan_state(plan),
        answer_cache: {
            let (budget, kept, pinned) = app.answers.memory();
            AnswerCacheState {
                budget_bytes: budget as u64,
                kept_bytes: kept as u64,
                pinned_bytes: pinned as u64,
            }
        },
        metrics: metrics(app).await,
        timestamp: iso8601(now_ms()),
    };
    Bytes::from(serde_json::to_vec(&status).expect("serializable"))
}

/// One key's state, from its header `entry` (a few hundred bytes, not the catalog)
/// and its last recorded failure.
async fn state_of(app: &App, id: String, key: &str, entry: Option<EntryMeta>) -> GatewayState {
    let failure: Option<FetchFailure> = app.cache.last_failure(key).await;
    let now = now_ms();
    let held = match entry.as_ref().is_some_and(|m| m.held()) {
        true => app.cache.evidence(key).await.map(|e| HeldState {
            reason: e.why,
            candidate_models: e.candidate,
            observations: e.seen,
            needed_observations: app.config.guard_confirm_fetches,
            first_seen_at: iso8601(e.first_ms),
            confirm_after: iso8601(
                e.first_ms
                    .saturating_add(app.config.guard_confirm_span.as_millis() as u64),
            ),
        }),
        false => None,
    };
    let mut fail_safe_reasons: Vec<String> = Vec::new();
    if let Some(m) = &entry {
        if m.freshness(now) == Freshness::Expired {
            fail_safe_reasons.push("expired".into());
        }
        fail_safe_reasons.extend(m.held_back_reasons().into_iter().map(String::from));
    }
    GatewayState {
        fail_safe_reasons,
        held,
        carried: None,
        cadence: None,
        last_change: None,
        gateway: id,
        state: entry.as_ref().map_or(KeyState::Missing, |m| match m.freshness(now) {
            Freshness::Fresh => KeyState::Fresh,
            Freshness::Stale => KeyState::Stale,
            Freshness::Expired => KeyState::Expired,
        }),
        fail_safe: entry.as_ref().is_some_and(|m| m.freshness(now) == Freshness::Expired),
        missing_gateways: None,
        carried_gateways: None,
        age_seconds: entry.as_ref().map(|m| m.age_ms(now) / 1000),
        models: entry.as_ref().map(|m| m.item_count),
        fresh_until: entry.as_ref().map(|m| iso8601(m.clock.fresh_until_ms)),
        stale_until: entry.as_ref().map(|m| iso8601(m.clock.stale_until_ms)),
        last_error: failure.map(|f| LastError {
            // Bounded when recorded; again here for values recorded by older versions.
            error: crate::upstream::bounded(&f.error),
            at: iso8601(f.at_ms),
        }),
    }
}

/// The merged view's state: which gateways have no entry of their own, and which of
/// those it carried over (one bit each in its header, in the configured order).
async fn merged_state(app: &App, gateways: &[GatewayState]) -> GatewayState {
    let meta = app.cache.peek_meta(app.all_key()).await;
    let mut merged = state_of(app, "all".into(), app.all_key(), meta.clone()).await;
    merged.missing_gateways = Some(
        gateways
            .iter()
            .filter(|g| g.state == KeyState::Missing)
            .map(|g| g.gateway.clone())
            .collect(),
    );
    let now = now_ms();
    let carried = match meta {
        Some(meta) => app
            .carried_of(&meta)
            .into_iter()
            .map(|(id, clock)| {
                let clock = clock.unwrap_or(crate::entry::InputClock::of(&meta.clock));
                CarriedState {
                    gateway: id.to_string(),
                    age_seconds: now.saturating_sub(clock.fetched_at_ms) / 1000,
                    until: iso8601(clock.kept_until_ms),
                }
            })
            .collect(),
        None => Vec::new(),
    };
    merged.carried_gateways = Some(carried.iter().map(|c| c.gateway.clone()).collect());
    merged.carried = Some(carried);
    merged
}

/// The shared counts, plus this instance's not flushed yet (they may never be, while
/// the store refuses writes).
async fn metrics(app: &App) -> StatusMetrics {
    let pending = app.cache.metrics().pending("models");
    match app.store().get_fields(&keys::metrics("models")).await {
        Ok(mut fields) => {
            for (k, n) in pending {
                *fields.entry(k).or_default() += n;
            }
            StatusMetrics {
                models: CategoryMetrics::from_fields(&fields),
                error: None,
            }
        }
        Err(e) => StatusMetrics {
            models: CategoryMetrics::from_fields(&pending),
            error: Some(e.to_string()),
        },
    }
}
