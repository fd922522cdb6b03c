//! Cache counters per category.
//!
//! Design failure 12 (docs/design.md): stale hits counted as hits hide an upstream outage until the data
//! expires. Every outcome has its own counter. Counts accumulate in-process (a
//! std Mutex around a small map: never held across `.await`) and are flushed to
//! the store as hash increments off the response path, so every instance adds to
//! the same numbers and they survive restarts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::keys;
use crate::store::Store;
use crate::ttl::now_ms;

/// One countable outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    FreshHit,
    StaleHit,
    Miss,
    Error,
    RevalidationStarted,
    RevalidationSucceeded,
    RevalidationFailed,
    RevalidationSkippedByLock,
    RevalidationThrottled,
    /// A read answered from the in-process copy because the store failed.
    FailSafeServe,
    StoreError,
}

impl Event {
    pub const ALL: [Event; 11] = [
        Event::FreshHit,
        Event::StaleHit,
        Event::Miss,
        Event::Error,
        Event::RevalidationStarted,
        Event::RevalidationSucceeded,
        Event::RevalidationFailed,
        Event::RevalidationSkippedByLock,
        Event::RevalidationThrottled,
        Event::FailSafeServe,
        Event::StoreError,
    ];

    pub fn field(self) -> &'static str {
        match self {
            Event::FreshHit => "fresh_hits",
            Event::StaleHit => "stale_hits",
            Event::Miss => "misses",
            Event::Error => "errors",
            Event::RevalidationStarted => "revalidations_started",
            Event::RevalidationSucceeded => "revalidations_succeeded",
            Event::RevalidationFailed => "revalidations_failed",
            Event::RevalidationSkippedByLock => "revalidations_skipped_by_lock",
            Event::RevalidationThrottled => "revalidations_throttled",
            Event::FailSafeServe => "fail_safe_serves",
            Event::StoreError => "store_errors",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pending: Mutex<HashMap<(&'static str, Event), i64>>,
    last_flush_ms: AtomicU64,
}

/// Counters of one category, with the derived rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct CategoryMetrics {
    pub fresh_hits: i64,
    pub stale_hits: i64,
    pub misses: i64,
    pub errors: i64,
    pub revalidations_started: i64,
    pub revalidations_succeeded: i64,
    pub revalidations_failed: i64,
    pub revalidations_skipped_by_lock: i64,
    pub revalidations_throttled: i64,
    pub fail_safe_serves: i64,
    pub store_errors: i64,
    /// (fresh + stale) / all reads; `null` before any read.
    pub hit_rate: Option<f64>,
    /// fresh / all reads.
    pub fresh_rate: Option<f64>,
}

impl CategoryMetrics {
    pub fn from_fields(fields: &HashMap<String, i64>) -> Self {
        let g = |e: Event| fields.get(e.field()).copied().unwrap_or(0);
        let mut m = CategoryMetrics {
            fresh_hits: g(Event::FreshHit),
            stale_hits: g(Event::StaleHit),
            misses: g(Event::Miss),
            errors: g(Event::Error),
            revalidations_started: g(Event::RevalidationStarted),
            revalidations_succeeded: g(Event::RevalidationSucceeded),
            revalidations_failed: g(Event::RevalidationFailed),
            revalidations_skipped_by_lock: g(Event::RevalidationSkippedByLock),
            revalidations_throttled: g(Event::RevalidationThrottled),
            fail_safe_serves: g(Event::FailSafeServe),
            store_errors: g(Event::StoreError),
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

impl Metrics {
    pub fn record(&self, category: &'static str, event: Event) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p.entry((category, event)).or_default() += 1;
    }

    /// Whether a flush is due (at most one per `interval_ms`, and only with data).
    pub fn flush_due(&self, interval_ms: u64) -> bool {
        let now = now_ms();
        let last = self.last_flush_ms.load(Ordering::Relaxed);
        if interval_ms > 0 && now.saturating_sub(last) < interval_ms {
            return false;
        }
        let has_data = !self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        has_data
            && self
                .last_flush_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Push pending counts to the store. On failure they are put back for the next flush.
    pub async fn flush(&self, store: &Store) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut by_category: HashMap<&'static str, Vec<(Event, i64)>> = HashMap::new();
        for ((cat, ev), n) in pending {
            by_category.entry(cat).or_default().push((ev, n));
        }
        for (cat, events) in by_category {
            let deltas: Vec<(&str, i64)> = events.iter().map(|(e, n)| (e.field(), *n)).collect();
            if let Err(e) = store.incr_fields(&keys::metrics(cat), &deltas).await {
                tracing::debug!("[Cache Metrics] flush failed ({e}); keeping counts for the next flush");
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (ev, n) in events {
                    *p.entry((cat, ev)).or_default() += n;
                }
            }
        }
    }

    /// Shared counters of a category (what every instance flushed so far).
    pub async fn read(store: &Store, category: &str) -> Result<CategoryMetrics, crate::store::StoreError> {
        Ok(CategoryMetrics::from_fields(
            &store.get_fields(&keys::metrics(category)).await?,
        ))
    }
}
