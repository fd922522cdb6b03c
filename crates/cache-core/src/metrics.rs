//! Cache counters per category.
//!
//! Design failure 12 (docs/design.md): stale hits counted as hits hide an upstream outage until the data
//! expires. Every outcome has its own counter. Counts accumulate in-process (a
//! a blocking parking_lot Mutex around a small map: never held across `.await`) and are flushed to
//! the store as hash increments off the response path, so every instance adds to
//! the same numbers and they survive restarts.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::clock::now_ms;
use crate::keys;
use crate::spawn::{Spawner, boxed};
use crate::store::Store;

/// The counters, written once: each line makes an [`Event`] variant, its field name
/// in the store hash, and a field of [`CategoryMetrics`].
macro_rules! counters {
    ($( $(#[$doc:meta])* $event:ident => $field:ident, )*) => {
        /// One countable outcome.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Event {
            $( $(#[$doc])* $event, )*
        }

        impl Event {
            /// The counter's name in the store hash and in the status JSON.
            pub(crate) fn field(self) -> &'static str {
                match self {
                    $( Event::$event => stringify!($field), )*
                }
            }
        }

        /// Counters of one category, with the derived rates.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
        pub struct CategoryMetrics {
            $( $(#[$doc])* pub $field: i64, )*
            /// (fresh + stale) / all reads; `null` before any read.
            pub hit_rate: Option<f64>,
            /// fresh / all reads.
            pub fresh_rate: Option<f64>,
        }

        impl CategoryMetrics {
            pub fn from_fields(fields: &HashMap<String, i64>) -> Self {
                let mut m = CategoryMetrics {
                    $( $field: fields.get(stringify!($field)).copied().unwrap_or(0), )*
                    hit_rate: None,
                    fresh_rate: None,
                };
                let reads = m.fresh_hits + m.stale_hits + m.misses + m.errors;
                if reads > 0 {
                    m.hit_rate = Some((m.fresh_hits + m.stale_hits) as f64 / reads as f64);
                    m.fresh_rate = Some(m.fresh_hits as f64 / reads as f64);
                }
                m
            }
        }
    };
}

counters! {
    /// Reads answered from a fresh entry.
    FreshHit => fresh_hits,
    /// Reads answered from a stale entry (while it is refetched).
    StaleHit => stale_hits,
    /// Reads that found nothing usable and fetched (or waited for a fetch).
    Miss => misses,
    /// Reads answered with an error.
    Error => errors,
    RevalidationStarted => revalidations_started,
    RevalidationSucceeded => revalidations_succeeded,
    RevalidationFailed => revalidations_failed,
    /// Another instance held the key's lock: nothing fetched here.
    RevalidationSkippedByLock => revalidations_skipped_by_lock,
    /// The key failed recently: not refetched until its retry window ends.
    RevalidationThrottled => revalidations_throttled,
    /// Reads answered with last-known-good (past the stale window, or the store down).
    FailSafeServe => fail_safe_serves,
    /// Store commands that failed or timed out.
    StoreError => store_errors,
    /// Writes the store refused or did not answer (a replica's `READONLY`, a full
    /// server's `OOM`, a pause): what was fetched is held in process, not shared.
    StoreWriteError => store_write_errors,
    /// Counts dropped because a flush's outcome was unknown (it timed out: it may or
    /// may not have been applied). Counted so that no count is ever added twice.
    MetricsLost => metrics_lost,
}

/// This instance's counts not yet in the store, and when they were last flushed.
#[derive(Default)]
pub(crate) struct Metrics {
    pending: Mutex<HashMap<(&'static str, Event), i64>>,
    last_flush_ms: AtomicU64,
    /// At most one flush per interval (0: every time there is data).
    flush_interval_ms: u64,
}

impl Metrics {
    pub(crate) fn new(flush_interval: std::time::Duration) -> Self {
        Metrics {
            flush_interval_ms: flush_interval.as_millis() as u64,
            ..Metrics::default()
        }
    }

    /// Push counters to the store off the response path, at most once per interval
    /// per instance. There is deliberately no timer for counts left pending: on Vercel
    /// a sleep inside `wait_until` holds the invocation open (and billed) for it. The
    /// next read after the interval, or shutdown, flushes them.
    pub(crate) fn flush_when_due(self: &Arc<Self>, store: &Store, spawner: &dyn Spawner) {
        if self.flush_due() {
            let (metrics, store) = (self.clone(), store.clone());
            spawner.spawn(boxed(async move { metrics.flush(&store).await }));
        }
    }

    pub(crate) fn record(&self, category: &'static str, event: Event) {
        let mut p = self.pending.lock();
        *p.entry((category, event)).or_default() += 1;
    }

    /// Whether a flush is due (at most one per interval, and only with data).
    fn flush_due(&self) -> bool {
        let interval_ms = self.flush_interval_ms;
        let now = now_ms();
        let last = self.last_flush_ms.load(Ordering::Relaxed);
        if interval_ms > 0 && now.saturating_sub(last) < interval_ms {
            return false;
        }
        let has_data = !self.pending.lock().is_empty();
        has_data
            && self
                .last_flush_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Push pending counts to the store. Counts must never exceed what happened:
    /// a flush the store certainly did not apply (refused, or not sent) is put back
    /// for the next one; a flush whose outcome is unknown (it timed out, and a paused
    /// server may still apply it) is dropped and counted as `metrics_lost`.
    pub(crate) async fn flush(&self, store: &Store) {
        let pending = std::mem::take(&mut *self.pending.lock());
        let mut by_category: HashMap<&'static str, Vec<(Event, i64)>> = HashMap::new();
        for ((cat, ev), n) in pending {
            by_category.entry(cat).or_default().push((ev, n));
        }
        for (cat, events) in by_category {
            let deltas: Vec<(&str, i64)> = events.iter().map(|(e, n)| (e.field(), *n)).collect();
            match store.incr_fields(&keys::metrics(cat), &deltas).await {
                Ok(()) => {}
                Err(e) if e.not_applied() => {
                    tracing::debug!("[Cache Metrics] flush not applied ({e}); keeping counts for the next flush");
                    let mut p = self.pending.lock();
                    for (ev, n) in events {
                        *p.entry((cat, ev)).or_default() += n;
                    }
                }
                Err(e) => {
                    let lost: i64 = events
                        .iter()
                        .filter(|(ev, _)| *ev != Event::MetricsLost)
                        .map(|(_, n)| n)
                        .sum();
                    tracing::warn!(
                        "[Cache Metrics] flush outcome unknown ({e}); {lost} counts dropped, never sent twice"
                    );
                    *self.pending.lock().entry((cat, Event::MetricsLost)).or_default() += lost.max(1);
                }
            }
        }
    }

    /// Counts recorded here and not flushed yet, per event (status: this instance's
    /// share while the store takes no writes).
    pub(crate) fn pending(&self, category: &str) -> HashMap<String, i64> {
        self.pending
            .lock()
            .iter()
            .filter(|((cat, _), _)| *cat == category)
            .map(|((_, ev), n)| (ev.field().to_string(), *n))
            .collect()
    }

    /// Shared counters of a category (what every instance flushed so far).
    pub(crate) async fn read(store: &Store, category: &str) -> Result<CategoryMetrics, crate::store::StoreError> {
        Ok(CategoryMetrics::from_fields(
            &store.get_fields(&keys::metrics(category)).await?,
        ))
    }
}
