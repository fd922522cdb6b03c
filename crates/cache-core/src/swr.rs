//! The stale-while-revalidate read: the seed's `cacheStaleWhileRevalidate`, done right.
//!
//! ```text
//!  read(key) ──► in-process tier (≤ LOCAL_CACHE_TTL_MS old) ──► store GET ──► decode
//!     fresh    → HIT                      (no upstream)
//!     stale    → STALE, revalidate in the background through the Spawner
//!     missing/expired → MISS: one fetch per key (in-process single-flight, and a store
//!                       lock across instances; losers wait for the winner's value)
//! ```
//!
//! Fail-safe rules (lessons 1-5):
//! - a failed revalidation keeps the stale value, records the error, and blocks new
//!   attempts on that key for `REVALIDATE_RETRY_SECONDS` across instances;
//! - a fetcher is never called twice in one request because something failed;
//! - a miss whose fetch fails returns the error and stores nothing;
//! - a fetched value is validated before it is written; a rejected one is a failure.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::entry::{Entry, EntryMeta, Freshness, STORED_ENCODINGS};
use crate::lock;
use crate::metrics::{Event, Metrics};
use crate::spawn::{BoxFuture, Spawner, boxed};
use crate::store::Store;
use crate::ttl::{TtlPolicy, now_ms};

/// What a source fetched: the JSON to store and how many items it holds.
#[derive(Clone, Debug)]
pub struct Payload {
    pub json: Bytes,
    pub item_count: u32,
}

/// An upstream that can fill one cache key.
pub trait Source: Send + Sync + 'static {
    /// Metrics category (`models`, ...).
    fn category(&self) -> &'static str;

    fn ttl(&self) -> TtlPolicy;

    /// Upper bound on one fetch; the cache enforces it too.
    fn deadline(&self) -> Duration;

    /// Fetch a fresh value. `cache` and `spawner` let composite sources (the merged
    /// catalog) read other keys through the cache.
    fn fetch(self: Arc<Self>, cache: Arc<Cache>, spawner: Arc<dyn Spawner>) -> BoxFuture<Result<Payload, String>>;

    /// Reject a value before it overwrites `previous` (lesson 5). The default
    /// rejects an empty payload.
    fn validate(&self, new: &Payload, _previous: Option<&EntryMeta>) -> Result<(), String> {
        if new.item_count == 0 {
            Err("fetched value is empty".into())
        } else {
            Ok(())
        }
    }

    /// Work to run after a background revalidation wrote a new value (the merged
    /// catalog follows gateway updates through this).
    fn after_revalidation(self: Arc<Self>, _cache: Arc<Cache>, _spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        None
    }
}

/// How a read was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Stale,
    Miss,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Stale => "STALE",
            CacheStatus::Miss => "MISS",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Lookup {
    pub entry: Arc<Entry>,
    pub status: CacheStatus,
}

/// A read that could not be answered: nothing usable was cached and the fetch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// The upstream failed (message names what failed).
    Fetch(String),
    /// The upstream answered, but the value was rejected by validation.
    Rejected(String),
    /// The fetch did not finish within the source's deadline.
    Timeout(Duration),
    /// The key failed recently and is not fetched again until its retry window ends.
    Throttled(String),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Fetch(m) => write!(f, "upstream fetch failed: {m}"),
            CacheError::Rejected(m) => write!(f, "upstream value rejected: {m}"),
            CacheError::Timeout(d) => write!(f, "upstream fetch timed out after {} ms", d.as_millis()),
            CacheError::Throttled(m) => write!(f, "upstream failed recently and is not retried yet: {m}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// The last failure to fetch a key, kept in the store for the status page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchFailure {
    pub error: String,
    pub at_ms: u64,
}

/// Tunables of the SWR layer (from [`crate::config::Config`]).
#[derive(Clone, Debug)]
pub struct SwrSettings {
    pub revalidate_retry: Duration,
    pub miss_wait: Duration,
    pub local_ttl: Duration,
    /// At most one metrics flush per this interval per instance (0 = after every read).
    pub metrics_flush_interval: Duration,
}

pub fn lock_key(key: &str) -> String {
    format!("lock:{key}")
}
pub fn failure_key(key: &str) -> String {
    format!("lasterror:{key}")
}
fn throttle_key(key: &str) -> String {
    format!("retryafter:{key}")
}

type MissFlight = Arc<OnceCell<Result<Arc<Entry>, CacheError>>>;

/// In-process copy of an entry, with when it was last confirmed against the store.
struct Local {
    entry: Arc<Entry>,
    checked: Instant,
}

pub struct Cache {
    store: Store,
    settings: SwrSettings,
    metrics: Metrics,
    /// Misses in flight: concurrent readers share one fetch per key.
    misses: Mutex<HashMap<String, MissFlight>>,
    /// Keys this process is revalidating: at most one background fetch per key.
    revalidating: Mutex<HashSet<String>>,
    local: Mutex<HashMap<String, Local>>,
}

impl Cache {
    pub fn new(store: Store, settings: SwrSettings) -> Arc<Self> {
        Arc::new(Cache {
            store,
            settings,
            metrics: Metrics::default(),
            misses: Mutex::default(),
            revalidating: Mutex::default(),
            local: Mutex::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The SWR read. Only a miss waits on the upstream.
    pub async fn read(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Lookup, CacheError> {
        let span = tracing::info_span!("cache.read", cache.key = key, cache.state = tracing::field::Empty);
        let result = self.read_inner(key, source, spawner).instrument(span.clone()).await;
        span.record("cache.state", result.as_ref().map_or("ERROR", |l| l.status.as_str()));
        result
    }

    async fn read_inner(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Lookup, CacheError> {
        let category = source.category();
        let current = self.load(key, category).await;
        let now = now_ms();
        let result = match current {
            Some(entry) if entry.meta.freshness(now) == Freshness::Fresh => {
                self.metrics.record(category, Event::FreshHit);
                Ok(Lookup {
                    entry,
                    status: CacheStatus::Hit,
                })
            }
            Some(entry) if entry.meta.freshness(now) == Freshness::Stale => {
                self.metrics.record(category, Event::StaleHit);
                tracing::info!(
                    "[Cache SWR] Returning stale data for {key} (age {} s)",
                    entry.meta.age_ms(now) / 1000
                );
                self.spawn_revalidation(key, source, spawner.clone());
                Ok(Lookup {
                    entry,
                    status: CacheStatus::Stale,
                })
            }
            previous => {
                self.metrics.record(category, Event::Miss);
                let res = self
                    .miss(key, source, spawner.clone(), previous.map(|e| e.meta.clone()))
                    .await;
                if res.is_err() {
                    self.metrics.record(category, Event::Error);
                }
                res.map(|entry| Lookup {
                    entry,
                    status: CacheStatus::Miss,
                })
            }
        };
        self.maybe_flush_metrics(&*spawner);
        result
    }

    /// Read what is stored under `key` without fetching (status page, merge).
    pub async fn peek(&self, key: &str) -> Option<Arc<Entry>> {
        self.load(key, "peek").await
    }

    /// Fetch, validate and store `key` now, whatever its state (warming: lesson 6).
    /// Shares the cross-instance lock with revalidation so the two never double-fetch;
    /// a held lock is waited on for the other holder's value.
    pub async fn refresh(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Arc<Entry>, CacheError> {
        let previous = self.load(key, source.category()).await.map(|e| e.meta.clone());
        let started = now_ms();
        let lock_ttl = source.deadline() + Duration::from_secs(5);
        match lock::try_acquire(&self.store, &lock_key(key), lock_ttl, &spawner).await {
            Ok(Some(guard)) => {
                let res = self.fetch_and_store(key, source, spawner, previous.as_ref()).await;
                guard.release().await;
                res
            }
            Ok(None) => {
                // Someone else is fetching this key right now: take their result.
                let wait = source.deadline() + Duration::from_secs(1);
                match self.wait_for_newer(key, started, wait).await {
                    Some(e) => Ok(e),
                    None => self.fetch_and_store(key, source, spawner, previous.as_ref()).await,
                }
            }
            Err(_) => self.fetch_and_store(key, source, spawner, previous.as_ref()).await,
        }
    }

    /// The last recorded fetch failure for `key`, if any.
    pub async fn last_failure(&self, key: &str) -> Option<FetchFailure> {
        let raw = self.store.get(&failure_key(key)).await.ok()??;
        serde_json::from_slice(&raw).ok()
    }

    /// Drop the in-process copy of `key` (tests; after an external write).
    pub fn forget_local(&self, key: &str) {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    // ---- loading -------------------------------------------------------------

    /// The current entry, from the in-process tier when recently confirmed, else the
    /// store. A store failure falls back to the in-process copy (fail-safe serve).
    async fn load(&self, key: &str, category: &'static str) -> Option<Arc<Entry>> {
        if !self.settings.local_ttl.is_zero() {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = local.get(key)
                && l.checked.elapsed() < self.settings.local_ttl
            {
                return Some(l.entry.clone());
            }
        }
        match self.store.get(key).await {
            Ok(Some(raw)) => match Entry::decode(raw) {
                Ok(entry) => {
                    // Same value as the in-process copy: keep that one, with whatever
                    // encodings it has already derived.
                    let entry = {
                        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
                        match local.get(key) {
                            Some(l) if l.entry.meta == entry.meta => l.entry.clone(),
                            _ => Arc::new(entry),
                        }
                    };
                    self.remember(key, &entry);
                    Some(entry)
                }
                Err(e) => {
                    tracing::warn!("[Cache SWR] Unreadable value under {key} ({e}); treating it as a miss");
                    self.forget_local(key);
                    None
                }
            },
            Ok(None) => {
                self.forget_local(key);
                None
            }
            Err(e) => {
                self.metrics.record(category, Event::StoreError);
                let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
                let fallback = local
                    .get(key)
                    .map(|l| l.entry.clone())
                    .filter(|e| e.meta.freshness(now_ms()) != Freshness::Expired);
                if fallback.is_some() {
                    self.metrics.record(category, Event::FailSafeServe);
                }
                tracing::warn!(
                    "[Cache SWR] Store read of {key} failed ({e}); serving in-process copy: {}",
                    fallback.is_some()
                );
                fallback
            }
        }
    }

    fn remember(&self, key: &str, entry: &Arc<Entry>) {
        if self.settings.local_ttl.is_zero() {
            return;
        }
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.insert(
            key.to_string(),
            Local {
                entry: entry.clone(),
                checked: Instant::now(),
            },
        );
    }

    // ---- miss ------------------------------------------------------------------

    async fn miss(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
        previous: Option<EntryMeta>,
    ) -> Result<Arc<Entry>, CacheError> {
        let flight: MissFlight = {
            let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
            misses.entry(key.to_string()).or_default().clone()
        };
        let result = flight
            .get_or_init(|| self.miss_once(key, source, spawner, previous))
            .await
            .clone();
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if misses.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            misses.remove(key);
        }
        result
    }

    /// The one fetch of a miss in this process, coordinated with other instances.
    async fn miss_once(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
        previous: Option<EntryMeta>,
    ) -> Result<Arc<Entry>, CacheError> {
        // A key that just failed is not fetched again by every reader (retry storm).
        if let Some(f) = self.throttled(key).await {
            return Err(CacheError::Throttled(f.error));
        }
        let started = now_ms();
        let lock_ttl = source.deadline() + Duration::from_secs(5);
        match lock::try_acquire(&self.store, &lock_key(key), lock_ttl, &spawner).await {
            Ok(Some(guard)) => {
                // Another instance may have written between our read and our lock.
                let res = match self.usable_in_store(key).await {
                    Some(e) => Ok(e),
                    None => self.fetch_and_store(key, source, spawner, previous.as_ref()).await,
                };
                guard.release().await;
                res
            }
            Ok(None) => {
                // Another instance is fetching: wait briefly for its value, then fetch
                // ourselves as a last resort.
                if let Some(e) = self
                    .wait_for_newer(key, started.saturating_sub(1), self.settings.miss_wait)
                    .await
                {
                    return Ok(e);
                }
                tracing::warn!(
                    "[Cache SWR] Waited {} ms for another instance to fill {key}; fetching directly",
                    self.settings.miss_wait.as_millis()
                );
                self.fetch_and_store(key, source, spawner, previous.as_ref()).await
            }
            // Store down: fetch directly (the in-process single-flight still holds).
            Err(_) => self.fetch_and_store(key, source, spawner, previous.as_ref()).await,
        }
    }

    /// A non-expired entry currently in the store (bypassing the in-process tier).
    async fn usable_in_store(&self, key: &str) -> Option<Arc<Entry>> {
        let raw = self.store.get(key).await.ok()??;
        let entry = Arc::new(Entry::decode(raw).ok()?);
        if entry.meta.freshness(now_ms()) == Freshness::Expired {
            return None;
        }
        self.remember(key, &entry);
        Some(entry)
    }

    /// Poll the store until an entry fetched at or after `since_ms` appears.
    async fn wait_for_newer(&self, key: &str, since_ms: u64, wait: Duration) -> Option<Arc<Entry>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.usable_in_store(key).await
                && e.meta.fetched_at_ms >= since_ms
            {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    // ---- fetch, validate, write ------------------------------------------------

    async fn fetch_and_store(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
        previous: Option<&EntryMeta>,
    ) -> Result<Arc<Entry>, CacheError> {
        let deadline = source.deadline();
        let fetched = tokio::time::timeout(deadline, source.clone().fetch(self.clone(), spawner)).await;
        let outcome = match fetched {
            Err(_) => Err(CacheError::Timeout(deadline)),
            Ok(Err(msg)) => Err(CacheError::Fetch(msg)),
            Ok(Ok(payload)) => match source.validate(&payload, previous) {
                Err(why) => Err(CacheError::Rejected(why)),
                Ok(()) => Ok(self.write(key, payload, source.ttl()).await),
            },
        };
        if let Err(e) = &outcome {
            self.record_failure(key, e).await;
        }
        outcome
    }

    /// The recorded failure of `key` while its retry window is open.
    async fn throttled(&self, key: &str) -> Option<FetchFailure> {
        if self.settings.revalidate_retry.is_zero() {
            return None;
        }
        self.store.get(&throttle_key(key)).await.ok()??;
        Some(self.last_failure(key).await.unwrap_or(FetchFailure {
            error: "recent failure".into(),
            at_ms: 0,
        }))
    }

    /// Build the entry (compression off the async threads) and store it. A failed
    /// store write is logged; the caller still gets the fresh value.
    async fn write(&self, key: &str, payload: Payload, ttl: TtlPolicy) -> Arc<Entry> {
        let fetched_at = now_ms();
        let d = ttl.deadlines(fetched_at);
        let entry = tokio::task::spawn_blocking(move || {
            Entry::build(
                payload.json,
                payload.item_count,
                fetched_at,
                d.fresh_until_ms,
                d.stale_until_ms,
                STORED_ENCODINGS,
            )
        })
        .await
        .expect("entry build does not panic");
        let entry = Arc::new(entry);
        let key_ttl = TtlPolicy::key_ttl(d.stale_until_ms, now_ms());
        if let Err(e) = self.store.set(key, entry.encode(), key_ttl).await {
            tracing::warn!("[Cache SWR] Store write of {key} failed ({e}); serving the fetched value anyway");
        }
        self.remember(key, &entry);
        entry
    }

    async fn record_failure(&self, key: &str, error: &CacheError) {
        let failure = FetchFailure {
            error: error.to_string(),
            at_ms: now_ms(),
        };
        let json = serde_json::to_vec(&failure).expect("serializable");
        // Kept a day: long enough to explain an outage on the status page.
        let _ = self
            .store
            .set(&failure_key(key), Bytes::from(json), Duration::from_secs(86_400))
            .await;
        // No new attempt on this key (by reads, on any instance) until the window passes.
        if !self.settings.revalidate_retry.is_zero() {
            let _ = self
                .store
                .set(
                    &throttle_key(key),
                    Bytes::from_static(b"1"),
                    self.settings.revalidate_retry,
                )
                .await;
        }
    }

    // ---- revalidation ----------------------------------------------------------

    fn spawn_revalidation(self: &Arc<Self>, key: &str, source: Arc<dyn Source>, spawner: Arc<dyn Spawner>) {
        {
            let mut revalidating = self.revalidating.lock().unwrap_or_else(|e| e.into_inner());
            if !revalidating.insert(key.to_string()) {
                return; // already revalidating in this process
            }
        }
        let cache = self.clone();
        let key = key.to_string();
        let task_spawner = spawner.clone();
        spawner.spawn(boxed(async move {
            // Release the in-process mark however the task ends.
            struct Mark(Arc<Cache>, String);
            impl Drop for Mark {
                fn drop(&mut self) {
                    self.0
                        .revalidating
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&self.1);
                }
            }
            let _mark = Mark(cache.clone(), key.clone());
            let span = tracing::info_span!("cache.revalidate", cache.key = %key);
            cache.revalidate(&key, source, task_spawner).instrument(span).await;
        }));
    }

    async fn revalidate(self: &Arc<Self>, key: &str, source: Arc<dyn Source>, spawner: Arc<dyn Spawner>) {
        let category = source.category();
        // A recent failure blocks new attempts for a while, across instances.
        if self.throttled(key).await.is_some() {
            self.metrics.record(category, Event::RevalidationThrottled);
            tracing::debug!("[Cache SWR] Revalidation of {key} throttled after a recent failure");
            return;
        }
        let lock_ttl = source.deadline() + Duration::from_secs(5);
        let guard = match lock::try_acquire(&self.store, &lock_key(key), lock_ttl, &spawner).await {
            Ok(Some(g)) => Some(g),
            Ok(None) => {
                self.metrics.record(category, Event::RevalidationSkippedByLock);
                tracing::debug!("[Cache SWR] Another instance is revalidating {key}");
                return;
            }
            Err(_) => None, // store down: revalidate for this process only
        };
        // Someone may have refreshed it between our read and our lock.
        let current = self.usable_in_store(key).await;
        if current
            .as_ref()
            .is_some_and(|e| e.meta.freshness(now_ms()) == Freshness::Fresh)
        {
            if let Some(g) = guard {
                g.release().await;
            }
            return;
        }
        self.metrics.record(category, Event::RevalidationStarted);
        let started = Instant::now();
        let previous = current.map(|e| e.meta.clone());
        let res = self
            .fetch_and_store(key, source.clone(), spawner.clone(), previous.as_ref())
            .await;
        match &res {
            Ok(e) => {
                self.metrics.record(category, Event::RevalidationSucceeded);
                tracing::info!(
                    "[Cache SWR] Revalidated {key}: {} items in {} ms",
                    e.meta.item_count,
                    started.elapsed().as_millis()
                );
            }
            Err(err) => {
                self.metrics.record(category, Event::RevalidationFailed);
                tracing::warn!("[Cache SWR] Revalidation of {key} failed, keeping stale data: {err}");
            }
        }
        if let Some(g) = guard {
            g.release().await;
        }
        if res.is_ok()
            && let Some(follow_up) = source.after_revalidation(self.clone(), spawner)
        {
            follow_up.await;
        }
    }

    /// Push counters to the store off the response path, at most once per interval
    /// per instance. There is deliberately no timer for counts left pending: on Vercel
    /// a sleep inside `wait_until` holds the invocation open (and billed) for it. The
    /// next read after the interval, a status read, or shutdown flushes them.
    fn maybe_flush_metrics(self: &Arc<Self>, spawner: &dyn Spawner) {
        if self
            .metrics
            .flush_due(self.settings.metrics_flush_interval.as_millis() as u64)
        {
            let cache = self.clone();
            spawner.spawn(boxed(async move { cache.metrics.flush(&cache.store).await }));
        }
    }
}
