//! Warming: refetch every gateway now, in parallel, and record how it went.
//!
//! - It refetches; it does not read through SWR (docs/design.md, failure 6: the old warm returned
//!   whatever was cached and refreshed nothing).
//! - Gateways run concurrently (bounded by `WARM_CONCURRENCY`), each within its
//!   own deadline, so the total tracks the slowest gateway, not the sum.
//! - Last-known-good: a failed or rejected gateway keeps its previous entry; the
//!   merged view is rebuilt once at the end from what is cached.
//! - One warm at a time across instances (a store lock that outlives any run); a
//!   second caller is told a warm is running and since when.
//! - The run record is stored and reported honestly: success only when every
//!   gateway was fetched *and stored*, the merged view was rebuilt and stored, and
//!   the record itself was stored; a write the store refused or timed out is an
//!   error of that gateway. Formerly: success only when every
//!   gateway succeeded (docs/design.md, failure 9).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::app::App;
use crate::clock::{iso8601, now_ms};
use crate::gateways::Gateway;
use crate::keys;
use crate::lock;
use crate::spawn::Spawner;

/// Run records are kept for a month.
const LAST_RUN_TTL: Duration = Duration::from_secs(30 * 86_400);

pub use crate::contract::{GatewayOutcome, Outcome, RunRecord, Trigger};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WarmError {
    /// Another warm holds the lock; it started at this instant (unix ms, if known).
    #[error("a warm is already running{}", started_at_ms.map(|t| format!(" (started {})", iso8601(t))).unwrap_or_default())]
    AlreadyRunning { started_at_ms: Option<u64> },
    /// The store cannot be reached: nothing warmed could be kept.
    #[error("cache store unavailable: {0}")]
    StoreUnavailable(String),
}

impl App {
    /// Warm `gateways` (all configured ones when `None`).
    pub async fn warm(
        self: &Arc<Self>,
        gateways: Option<Vec<Gateway>>,
        trigger: Trigger,
        spawner: Arc<dyn Spawner>,
    ) -> Result<RunRecord, WarmError> {
        let guard = match lock::try_acquire(self.store(), keys::WARM_LOCK, self.config.warm_lock_ttl, &spawner).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                let since = lock::holder(self.store(), keys::WARM_LOCK)
                    .await
                    .ok()
                    .flatten()
                    .map(|h| h.since_ms);
                tracing::info!("[Cache Warming] Skipped: a warm is already running");
                return Err(WarmError::AlreadyRunning { started_at_ms: since });
            }
            Err(e) => return Err(WarmError::StoreUnavailable(e.to_string())),
        };
        let gateways = gateways.unwrap_or_else(|| self.registry.all().to_vec());
        let started_ms = guard.since_ms();
        let started = Instant::now();
        tracing::info!(
            "[Cache Warming] Starting {trigger:?} warm of {} gateways",
            gateways.len()
        );

        // Whether any gateway's content changed: if none did, the merged view is not
        // rebuilt, only its clock moves (an unchanged cron run writes almost nothing).
        let changed = std::sync::atomic::AtomicBool::new(false);
        let mut details: Vec<GatewayOutcome> = futures_util::stream::iter(gateways.iter().cloned())
            .map(|gw| {
                let (catalog, spawner, changed) = (self.clone(), spawner.clone(), &changed);
                async move {
                    let t = Instant::now();
                    // Only the ETag is needed: the header, not the catalog.
                    let before = catalog.cache.peek_meta(&keys::gateway(&gw.id)).await;
                    let res = catalog.refresh_gateway(&gw, spawner).await;
                    let duration_ms = t.elapsed().as_millis() as u64;
                    if let Ok(entry) = &res
                        && before.is_none_or(|b| b.etag != entry.meta.etag)
                    {
                        changed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    match res {
                        Ok(entry) => {
                            tracing::info!(
                                "[Cache Warming] {}: {} models in {duration_ms} ms",
                                gw.id,
                                entry.meta.item_count
                            );
                            GatewayOutcome {
                                gateway: gw.id,
                                status: Outcome::Success,
                                count: entry.meta.item_count,
                                duration_ms,
                                error: None,
                            }
                        }
                        Err(e) => {
                            let kept = catalog.cache.peek(&keys::gateway(&gw.id)).await;
                            let count = kept.map_or(0, |e| e.meta.item_count);
                            tracing::warn!(
                                "[Cache Warming] {} failed after {duration_ms} ms (keeping {count} cached models): {e}",
                                gw.id
                            );
                            GatewayOutcome {
                                gateway: gw.id,
                                status: Outcome::Error,
                                count,
                                duration_ms,
                                error: Some(crate::upstream::bounded(&e.to_string())),
                            }
                        }
                    }
                }
            })
            .buffer_unordered(self.config.warm_concurrency)
            .collect()
            .await;
        let order = |id: &str| gateways.iter().position(|g| g.id == id).unwrap_or(usize::MAX);
        details.sort_by_key(|d| order(&d.gateway));

        let unchanged = if changed.load(std::sync::atomic::Ordering::Relaxed) {
            None
        } else {
            self.retime_complete_merge().await
        };
        let merged_models = match unchanged {
            Some(e) => Some(e.meta.item_count),
            None => match self.rebuild_all(spawner).await {
                Ok(e) => Some(e.meta.item_count),
                Err(e) => {
                    tracing::warn!("[Cache Warming] Merged catalog not rebuilt: {e}");
                    None
                }
            },
        };

        let ok = details.iter().filter(|d| d.status == Outcome::Success).count();
        let mut record = RunRecord {
            // Success means stored: every gateway, the merged view and this record.
            success: ok == details.len() && merged_models.is_some(),
            trigger,
            started_at: iso8601(started_ms),
            finished_at: iso8601(now_ms()),
            duration_ms: started.elapsed().as_millis() as u64,
            total_models: details
                .iter()
                .filter(|d| d.status == Outcome::Success)
                .map(|d| d.count as u64)
                .sum(),
            merged_models,
            gateways_success: ok,
            gateways_failed: details.len() - ok,
            details,
        };
        tracing::info!(
            "[Cache Warming] Done in {} ms: {}/{} gateways, {} models, merged {}",
            record.duration_ms,
            record.gateways_success,
            record.gateways_success + record.gateways_failed,
            record.total_models,
            merged_models.map_or("-".to_string(), |n| n.to_string())
        );
        let json = Bytes::from(serde_json::to_vec(&record).expect("serializable"));
        if let Err(e) = self.store().set(keys::LAST_RUN, json, LAST_RUN_TTL).await {
            tracing::warn!("[Cache Warming] Run record not stored: {e}");
            record.success = false;
        }
        guard.release().await;
        // The status page shows this run at once, not after its cache expires.
        self.forget_status().await;
        Ok(record)
    }

    /// The last stored run record.
    pub async fn last_run(&self) -> Option<RunRecord> {
        let raw = self.store().get(keys::LAST_RUN).await.ok()??;
        serde_json::from_slice(&raw).ok()
    }
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
