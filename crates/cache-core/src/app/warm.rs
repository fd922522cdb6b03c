//! Warming: refetch every gateway now, in parallel, and record how it went.
//!
//! - It refetches; it does not read through SWR (docs/design.md, failure 6: the old warm returned
//!   whatever was cached and refreshed nothing).
//! - Gateways run concurrently (bounded by `WARM_CONCURRENCY`), each within its
//!   own deadline, so the total tracks the slowest gateway, not the sum.
//! - Last-known-good: a failed or rejected gateway keeps its previous entry; the
//!   merged view is rebuilt once at the end from what is cached.
//! - One warm at a time across instances: a lease in the store ([`WARM_LEASE`]),
//!   renewed while the warm runs; a second caller is told a warm is running and
//!   since when. A warm that dies frees it within the lease.
//! - The run record is stored and reported honestly: success only when every
//!   gateway was fetched *and stored*, the merged view was rebuilt and stored, and
//!   the record itself was stored; a write the store refused or timed out is an
//!   error of that gateway, and so is a write refused because the store holds a
//!   later fetch (docs/design.md, failure 9).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::app::{App, RequestContext};
use crate::clock::iso8601;
use crate::gateways::Gateway;
use crate::keys;
use crate::lock;

/// Run records are kept for a month.
const LAST_RUN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The warm's lock is a lease: taken for this long (or `WARM_LOCK_TTL_SECONDS` if
/// shorter) and renewed every third of it while the warm runs, for at most
/// `WARM_LOCK_TTL_SECONDS` in all. A warm that dies, or an attempt whose lock a
/// paused store applied late, blocks the next warm for at most this long (it was
/// 330 s).
pub(crate) const WARM_LEASE: Duration = Duration::from_secs(15);

pub(crate) use crate::contract::{GatewayOutcome, Outcome, RunRecord, Trigger};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WarmError {
    /// Another warm holds the lock; it started at this instant (unix ms, if known).
    #[error("a warm is already running{}", started_at_ms.map(|t| format!(" (started {})", iso8601(t))).unwrap_or_default())]
    AlreadyRunning { started_at_ms: Option<u64> },
    /// The store cannot be reached: nothing warmed could be kept.
    #[error("cache store unavailable: {0}")]
    StoreUnavailable(String),
}

/// Warm `gateways` (all configured ones when `None`); with `due_only`, only those
/// whose fresh window ends within `REFRESH_DUE_HORIZON_SECONDS`.
pub(super) async fn run(
    ctx: &RequestContext,
    gateways: Option<Vec<Gateway>>,
    due_only: bool,
    trigger: Trigger,
) -> Result<RunRecord, WarmError> {
    let app = &ctx.app;
    let mut lease = match lock::try_acquire(app.store(), keys::WARM_LOCK, app.lease(), &ctx.spawner).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            let since = lock::holder(app.store(), keys::WARM_LOCK)
                .await
                .ok()
                .flatten()
                .map(|h| h.since_ms);
            tracing::info!("[Cache Warming] Skipped: a warm is already running");
            return Err(WarmError::AlreadyRunning { started_at_ms: since });
        }
        Err(e) => return Err(WarmError::StoreUnavailable(e.to_string())),
    };
    let gateways = gateways.unwrap_or_else(|| app.registry.all().to_vec());
    let started_ms = lease.since_ms();
    let started = Instant::now();
    let (refresh, later) = match due_only {
        true => app.due(&gateways).await,
        false => (gateways.clone(), Vec::new()),
    };
    tracing::info!(
        "[Cache Warming] Starting {trigger:?} warm of {} gateways ({} not due)",
        refresh.len(),
        later.len()
    );

    // Boxed: the whole warm is one deep state machine, too large for a test
    // thread's stack in a debug build.
    let run = Box::pin(async {
        let (mut details, changed) = refresh_gateways(ctx, &refresh).await;
        details.extend(later.into_iter().map(|(gw, count, due_at)| GatewayOutcome {
            gateway: gw.id,
            status: Outcome::NotDue,
            count,
            duration_ms: 0,
            error: None,
            next_due_at: Some(iso8601(due_at)),
            collapsed_duplicates: None,
        }));
        let order = |id: &str| gateways.iter().position(|g| g.id == id).unwrap_or(usize::MAX);
        details.sort_by_key(|d| order(&d.gateway));
        let merged_models = merge_after_warm(ctx, changed).await;
        (details, merged_models)
    });
    let (details, merged_models) = app.renewing(&mut lease, started, run).await;

    let mut record = RunRecord::new(trigger, started_ms, started.elapsed(), details, merged_models);
    tracing::info!(
        "[Cache Warming] Done in {} ms: {}/{} gateways, {} models, merged {}",
        record.duration_ms,
        record.gateways_success,
        record.gateways_success + record.gateways_failed,
        record.total_models,
        merged_models.map_or("-".to_string(), |n| n.to_string())
    );
    let json = Bytes::from(serde_json::to_vec(&record).expect("serializable"));
    if let Err(e) = app.store().set(keys::LAST_RUN, json, LAST_RUN_TTL).await {
        tracing::warn!("[Cache Warming] Run record not stored: {e}");
        record.success = false;
    }
    lease.release().await;
    // The status page shows this run at once, not after its cache expires.
    super::status::forget(app).await;
    Ok(record)
}

impl App {
    /// The warm lock's lease.
    fn lease(&self) -> Duration {
        WARM_LEASE.min(self.config.warm_lock_ttl)
    }

    /// Run `work` while renewing the warm's lease every third of it, for at most
    /// `WARM_LOCK_TTL_SECONDS` since `started` (then the lease lapses by itself).
    async fn renewing<T>(&self, lease: &mut lock::LockGuard, started: Instant, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let every = self.lease() / 3;
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tokio::time::sleep(every) => {
                    if started.elapsed() + self.lease() > self.config.warm_lock_ttl {
                        continue;
                    }
                    if !lease.extend(self.lease()).await {
                        tracing::warn!("[Cache Warming] Could not renew the warm's lease: another warm may start");
                    }
                }
            }
        }
    }
}

/// Refetch `gateways` in parallel (at most `WARM_CONCURRENCY` at once): each one's
/// outcome, in the order given, and whether any gateway's content changed.
async fn refresh_gateways(ctx: &RequestContext, gateways: &[Gateway]) -> (Vec<GatewayOutcome>, bool) {
    let mut outcomes: Vec<(GatewayOutcome, bool)> = futures_util::stream::iter(gateways.iter().cloned())
        .map(|gw| refresh_one(ctx, gw))
        .buffer_unordered(ctx.app.config.warm_concurrency)
        .collect()
        .await;
    let order = |id: &str| gateways.iter().position(|g| g.id == id).unwrap_or(usize::MAX);
    outcomes.sort_by_key(|(d, _)| order(&d.gateway));
    let changed = outcomes.iter().any(|(_, changed)| *changed);
    (outcomes.into_iter().map(|(d, _)| d).collect(), changed)
}

/// One gateway's refetch, as the run record reports it, and whether its content
/// changed.
async fn refresh_one(ctx: &RequestContext, gw: Gateway) -> (GatewayOutcome, bool) {
    let app = &ctx.app;
    let t = Instant::now();
    // Only the ETag is needed: the header, not the catalog.
    let before = app.cache.peek_meta(&keys::gateway(&gw.id)).await;
    let res = super::catalog::refresh_gateway(ctx, &gw).await;
    let duration_ms = t.elapsed().as_millis() as u64;
    match res {
        Ok(entry) => {
            tracing::info!(
                "[Cache Warming] {}: {} models in {duration_ms} ms",
                gw.id,
                entry.meta.item_count
            );
            let changed = before.is_none_or(|b| b.etag != entry.meta.etag);
            let outcome = GatewayOutcome {
                gateway: gw.id,
                status: Outcome::Success,
                count: entry.meta.item_count,
                duration_ms,
                error: None,
                next_due_at: None,
                collapsed_duplicates: (entry.meta.collapsed > 0).then_some(entry.meta.collapsed),
            };
            (outcome, changed)
        }
        Err(e) => {
            let count = app
                .cache
                .peek_meta(&keys::gateway(&gw.id))
                .await
                .map_or(0, |m| m.item_count);
            tracing::warn!(
                "[Cache Warming] {} failed after {duration_ms} ms (keeping {count} cached models): {e}",
                gw.id
            );
            let outcome = GatewayOutcome {
                gateway: gw.id,
                status: Outcome::Error,
                count,
                duration_ms,
                error: Some(crate::upstream::bounded(&e.to_string())),
                next_due_at: None,
                collapsed_duplicates: None,
            };
            (outcome, false)
        }
    }
}

/// The merged view after the gateways' refetch: rebuilt when a gateway changed or
/// when it is not the merge of what is stored now, else only its clock moves (an
/// unchanged cron run writes almost nothing). Its model count, `None` when it
/// could not be stored.
async fn merge_after_warm(ctx: &RequestContext, changed: bool) -> Option<u32> {
    let unchanged = match changed {
        true => None,
        false => ctx.app.retime_complete_merge().await,
    };
    match unchanged {
        Some(e) => Some(e.meta.item_count),
        None => match super::catalog::rebuild_all(ctx).await {
            Ok(e) => Some(e.meta.item_count),
            Err(e) => {
                tracing::warn!("[Cache Warming] Merged catalog not rebuilt: {e}");
                None
            }
        },
    }
}

/// The last stored run record.
pub(super) async fn last_run(app: &App) -> Option<RunRecord> {
    let raw = app.store().get(keys::LAST_RUN).await.ok()??;
    serde_json::from_slice(&raw).ok()
}

/// Capture a failed or partly failed warm in Sentry, tagged like the seed's events.
pub(crate) fn report_failures(api_route: &str, cron_job: Option<&str>, result: &Result<RunRecord, WarmError>) {
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
