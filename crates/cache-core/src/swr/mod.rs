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
//! Fail-safe rules (docs/design.md, failures 1-5):
//! - a failed revalidation keeps the stale value, records the error, and blocks new
//!   attempts on that key for `REVALIDATE_RETRY_SECONDS` across instances;
//! - a fetcher is never called twice in one request because something failed;
//! - a miss whose fetch fails returns the error and stores nothing;
//! - a fetched value is validated before it is written; a rejected one is a failure.
//!
//! Ordering rules (newer data always wins), in [`fill`]:
//! - an entry is stamped with the instant its fetch *started*, and written with a
//!   compare-and-set that refuses it if the stored entry's fetch started later;
//! - nobody fetches a key without its store lock while another instance holds it;
//!   a waiter stops as soon as the holder releases and takes its value, or its
//!   recorded failure, or the lock;
//! - a warm never adopts another fetch: it fetches itself once the holder is done;
//! - "newer" is judged against what the waiter saw before (stamp and ETag), never
//!   against its own clock, so clock skew between instances cannot defeat coalescing.
//!
//! Layout: this file has the types and the read path; [`local`] the in-process
//! tier; [`fill`] the lock/wait/fetch/write protocol shared by misses, warms and
//! revalidations.

mod fill;
mod guard;
mod held;
mod local;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Shared;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::clock::now_ms;
use crate::entry::{Entry, EntryMeta, Freshness, InputClock};
use crate::keys;
use crate::metrics::{Event, Metrics};
use crate::spawn::{BoxFuture, Spawner, boxed};
use crate::store::{Store, StoreError};
use crate::ttl::TtlPolicy;
use crate::upstream::FetchError;
use local::LocalTier;

/// A future that borrows from its caller.
pub(crate) type ScopedFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a source fetched: the JSON to store and how many items it holds.
#[derive(Clone, Debug)]
pub(crate) struct Payload {
    pub json: Bytes,
    /// The content's strong ETag, hashed once: the cadence's look, the unchanged
    /// check and the stored entry all use it.
    pub etag: String,
    pub item_count: u32,
    /// A shorter fresh window than the source's TTL (an incomplete merged view,
    /// so that it heals soon instead of in hours).
    pub fresh_for: Option<Duration>,
    /// The fresh window this value earns instead of the source's TTL (a gateway's
    /// learned cadence); `fresh_for` still cuts it.
    pub fresh_window: Option<Duration>,
    /// What a derived value was built from, and what it carried over
    /// (`entry::EntryMeta::sources`, `carried`); 0 otherwise.
    pub sources: u64,
    pub carried: u64,
    /// A derived value's inputs' clocks (`entry::EntryMeta::inputs`).
    pub inputs: Vec<InputClock>,
    /// Ids the upstream listed more than once, collapsed to one each.
    pub collapsed: u32,
    /// Upstream requests the value took (a listing's pages; 0 for a derived value).
    pub requests: u32,
}

impl Payload {
    /// The clock this value is stored with when fetched at `stamp`: the source's
    /// `ttl`, its fresh window replaced by `fresh_window` when the value earned one,
    /// and cut by `fresh_for`.
    pub(crate) fn clock(&self, ttl: TtlPolicy, stamp: u64) -> crate::entry::Clock {
        let ttl = match self.fresh_window {
            Some(fresh) => TtlPolicy { fresh, ..ttl },
            None => ttl,
        };
        ttl.clock(stamp, self.fresh_for)
    }

    pub(crate) fn new(json: Bytes, item_count: u32) -> Self {
        Payload {
            etag: crate::entry::etag_for(&json),
            json,
            item_count,
            fresh_for: None,
            fresh_window: None,
            sources: 0,
            carried: 0,
            inputs: Vec::new(),
            collapsed: 0,
            requests: 0,
        }
    }
}

/// What validation makes of a fetched value before it may replace the stored one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    /// Never stored (an empty catalog): a failure.
    Reject(String),
    /// Suspect (a catalog that collapsed, or jumped by a large factor): held back until
    /// the upstream gives the same answer consistently ([`guard`]); meanwhile the
    /// stored entry is served, marked held.
    Doubt(String),
}

/// Why a key is being filled: one protocol ([`fill`]), four callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A reader found nothing usable: any value stored meanwhile will do, and a value
    /// the store refused is served anyway (held in process).
    Read,
    /// A stale read's background refresh: skipped while another instance holds the
    /// key; a value the store refused is a failed revalidation.
    Revalidate,
    /// A warm: fetch now, after any other holder (never adopt its value); report what
    /// was stored (refused or superseded writes are errors).
    Warm,
    /// The merged view rebuilt from the stored gateway entries: filled like a warm.
    Rebuild,
}

impl Purpose {
    /// Whether this fill fetches whatever is stored, and reports what it stored.
    pub(crate) fn refetches(self) -> bool {
        matches!(self, Purpose::Warm | Purpose::Rebuild)
    }
}

/// An upstream that can fill one cache key.
pub(crate) trait Source: Send + Sync + 'static {
    /// Metrics category (`models`, ...).
    fn category(&self) -> &'static str;

    fn ttl(&self) -> TtlPolicy;

    /// Upper bound on one fetch; the cache enforces it too.
    fn deadline(&self) -> Duration;

    /// Where the work a read leaves behind runs (a revalidation, the rest of a miss
    /// every reader left, a write-back): a source is made per request and carries the
    /// request's spawner, so the cache's operations take none beside it.
    fn spawner(&self) -> Arc<dyn Spawner>;

    /// Fetch a fresh value, for `purpose`. A composite source (the merged catalog)
    /// reads other keys through the cache, in the same request's scope.
    fn fetch(self: Arc<Self>, purpose: Purpose) -> BoxFuture<Result<Payload, SourceError>>;

    /// Judge a value before it overwrites `previous` (docs/design.md, failure 5);
    /// `peak` is the largest catalog accepted for the key within the guard's memory
    /// (a day), kept only for a [`Source::guarded`] source. The default rejects an
    /// empty payload.
    fn validate(&self, new: &Payload, _previous: Option<&EntryMeta>, _peak: Option<u32>) -> Verdict {
        if new.item_count == 0 {
            Verdict::Reject("fetched value is empty".into())
        } else {
            Verdict::Accept
        }
    }

    /// A fetched value was judged fit to store (accepted, or a doubt the guard
    /// confirmed): what the source learns from it before it is stored, and the fresh
    /// window it earns instead of the TTL's (a gateway's cadence records the look). It
    /// may finish the value (a gateway's records what changed, and the first-seen
    /// dates of models new to it). A held or rejected value never gets here: it is no
    /// observation, and no change.
    fn accepted<'a>(&'a self, _payload: &'a mut Payload) -> ScopedFuture<'a, Option<Duration>> {
        Box::pin(async { None })
    }

    /// Whether the collapse guard remembers this key's largest accepted catalog
    /// (`guard:peak:<key>`) and judges answers against it too, so that a catalog
    /// walked down in steps, or answered small after its entry was evicted, is
    /// doubted like a collapse.
    fn guarded(&self) -> bool {
        false
    }

    /// Whether a failed fetch throttles the key across instances. An upstream that
    /// failed is not asked again for a while; a derived value (the merged catalog)
    /// that could not be built says nothing about any upstream.
    fn throttles_failures(&self) -> bool {
        true
    }

    /// Work to run after a value fetched for `purpose` was stored: the merged
    /// catalog follows gateway updates through this.
    fn after_write(self: Arc<Self>, _purpose: Purpose) -> Option<BoxFuture<()>> {
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
    /// Served past its stale window because the refetch failed, timed out or is
    /// throttled (status `Stale`): last-known-good, marked as such.
    pub fail_safe: bool,
}

impl Lookup {
    /// Why what is served is held back from the upstream's current answer (empty:
    /// it is not): the words of `X-Cache-Fail-Safe-Reason` and of the status.
    pub fn fail_safe_reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.fail_safe {
            reasons.push("expired");
        }
        reasons.extend(self.entry.meta.held_back_reasons());
        reasons
    }
}

/// Why a source could not produce a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The upstream failed (the error names the gateway and what failed).
    #[error(transparent)]
    Upstream(#[from] FetchError),
    /// A derived value had nothing to be built from (the merged view, when no
    /// gateway has data).
    #[error("{0}")]
    Unavailable(String),
}

/// A read that could not be answered: nothing usable was cached and the fetch failed.
/// Typed to the end: the handler maps each kind to its status and headers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The source failed.
    #[error("upstream fetch failed: {0}")]
    Source(SourceError),
    /// The upstream answered, but the value was rejected by validation.
    #[error("upstream value rejected: {0}")]
    Rejected(String),
    /// The fetch did not finish within the source's deadline.
    #[error("upstream fetch timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The key failed recently (here or on another instance) and is not fetched again
    /// until its retry window ends, `retry_after` from now.
    #[error("upstream failed recently and is not retried yet: {}", .failure.error)]
    Throttled {
        failure: FetchFailure,
        retry_after: Duration,
    },
    /// Another instance fetched this key while we waited, and failed: its recorded
    /// failure (we do not fetch beside it, nor right after it).
    #[error("another instance's fetch failed: {}", .0.error)]
    Recorded(FetchFailure),
    /// Another instance is still fetching this key and we waited as long as allowed.
    #[error("another instance is still fetching this key")]
    Busy,
    /// Fetched and valid, but the store did not take it (a warm reports this).
    #[error("fetched but not stored: {0}")]
    NotStored(StoreError),
    /// The upstream's answer is suspect (`why`) and not confirmed yet: the stored
    /// entry is held (and marked so) until the same answer comes `needed` times over
    /// the guard's span; `seen` so far.
    #[error(
        "{why}: holding the last accepted catalog until the upstream answers the same on {needed} fetches over {span_s} s ({seen} so far)"
    )]
    Held {
        why: String,
        seen: u32,
        needed: u32,
        span_s: u64,
    },
    /// Fetched and valid, but the store holds a fetch that started later (at
    /// `stored_stamp_ms`, ours at `ours_ms`): what we fetched was not stored.
    #[error("fetched but not stored: the store holds a fetch that started later ({stored_stamp_ms} > {ours_ms})")]
    Superseded { stored_stamp_ms: u64, ours_ms: u64 },
}

impl CacheError {
    /// The upstream is rate limiting: from its own answer, or from a recorded
    /// failure (this instance's or another's).
    pub fn is_rate_limit(&self) -> bool {
        match self {
            CacheError::Source(SourceError::Upstream(e)) => e.retry_after().is_some(),
            CacheError::Throttled { failure, .. } | CacheError::Recorded(failure) => failure.rate_limited,
            _ => false,
        }
    }

    /// The upstream says the catalog does not exist (404): evidence that the gateway
    /// is gone, not a transient failure. Its listings are not carried over.
    pub fn is_gone(&self) -> bool {
        match self {
            CacheError::Source(SourceError::Upstream(e)) => e.is_gone(),
            CacheError::Throttled { failure, .. } | CacheError::Recorded(failure) => failure.gone,
            _ => false,
        }
    }

    /// How long a client should wait before asking again, when that is known: the
    /// upstream's `Retry-After` (bounded), or what is left of the key's retry window.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CacheError::Source(SourceError::Upstream(e)) => e.retry_after(),
            CacheError::Throttled { retry_after, .. } => Some(*retry_after),
            CacheError::Recorded(f) => f.retry_after_s.map(Duration::from_secs),
            CacheError::Busy => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The retry window a failure opens on its key: the upstream's own `Retry-After`
    /// when it is rate limiting, else `default` (`None`: no window).
    fn retry_window(&self, default: Duration) -> Option<Duration> {
        match self {
            CacheError::Source(SourceError::Upstream(e)) if e.retry_after().is_some() => e.retry_after(),
            _ => (!default.is_zero()).then_some(default),
        }
    }
}

/// The last failure to fetch a key, kept in the store for the status page and for
/// the instances that waited on that fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchFailure {
    /// What failed, bounded (`upstream::MAX_ERROR_TEXT`).
    pub error: String,
    pub at_ms: u64,
    /// The upstream was rate limiting.
    #[serde(default)]
    pub rate_limited: bool,
    /// The retry window it opened, in seconds (the upstream's `Retry-After` for a
    /// rate limit).
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// The upstream said the catalog does not exist (404): see [`CacheError::is_gone`].
    #[serde(default)]
    pub gone: bool,
}

/// Tunables of the SWR layer (from [`crate::config::Config`]).
#[derive(Clone, Debug)]
pub(crate) struct SwrSettings {
    /// A read of an expired-but-kept key waits this long for its refetch.
    pub soft_timeout: Duration,
    pub revalidate_retry: Duration,
    /// How long a miss waits for another instance's fetch of the same key (0 = as
    /// long as that instance's lock holds). It never fetches itself meanwhile.
    pub miss_wait: Duration,
    pub local_ttl: Duration,
    /// At most one metrics flush per this interval per instance (0 = after every read).
    pub metrics_flush_interval: Duration,
    /// When the collapse guard takes a suspect answer as the truth.
    pub guard: guard::GuardSettings,
}

impl SwrSettings {
    /// The settings `config` asks for.
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        SwrSettings {
            revalidate_retry: config.revalidate_retry,
            miss_wait: config.miss_wait,
            local_ttl: config.local_cache_ttl,
            metrics_flush_interval: config.metrics_flush_interval,
            soft_timeout: config.soft_timeout,
            guard: guard::GuardSettings {
                fetches: config.guard_confirm_fetches,
                span: config.guard_confirm_span,
            },
        }
    }
}

impl Default for SwrSettings {
    /// The defaults of [`crate::config::Config`] (one source for them: it).
    fn default() -> Self {
        SwrSettings::from_config(&crate::config::Config::from_pairs(&[]).expect("the defaults parse"))
    }
}

/// One in-process fetch of a missing or expired key, awaited by every reader of it.
/// Shared (not a once-cell owned by the first reader) so that a reader that stops
/// waiting (the fail-safe soft timeout) does not cancel it: a driver given to the
/// spawner polls it to the end.
type MissFlight = Shared<BoxFuture<Result<Arc<Entry>, CacheError>>>;

pub(crate) struct Cache {
    store: Store,
    settings: SwrSettings,
    metrics: Arc<Metrics>,
    /// Misses in flight: concurrent readers share one fetch per key. Each flight
    /// carries a number so that it removes itself, and only itself, when done.
    misses: Mutex<HashMap<String, (u64, MissFlight)>>,
    next_flight: std::sync::atomic::AtomicU64,
    /// Keys this process is revalidating: at most one background fetch per key.
    revalidating: Mutex<HashSet<String>>,
    local: LocalTier,
    /// Failures and retry windows the store could not take (it refuses writes).
    held: held::HeldFailures,
    /// The last failed store write, until one succeeds (the status shows it).
    write_error: Mutex<Option<FetchFailure>>,
}

impl Cache {
    pub(crate) fn new(store: Store, settings: SwrSettings) -> Arc<Self> {
        Arc::new(Cache {
            store,
            local: LocalTier::new(settings.local_ttl),
            metrics: Arc::new(Metrics::new(settings.metrics_flush_interval)),
            settings,
            misses: Mutex::default(),
            next_flight: std::sync::atomic::AtomicU64::new(0),
            revalidating: Mutex::default(),
            held: held::HeldFailures::default(),
            write_error: Mutex::default(),
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The SWR read. Only a miss waits on the upstream.
    pub(crate) async fn read(self: &Arc<Self>, key: &str, source: Arc<dyn Source>) -> Result<Lookup, CacheError> {
        let span = tracing::info_span!("cache.read", cache.key = key, cache.state = tracing::field::Empty);
        let result = self.read_inner(key, source).instrument(span.clone()).await;
        span.record("cache.state", result.as_ref().map_or("ERROR", |l| l.status.as_str()));
        result
    }

    async fn read_inner(self: &Arc<Self>, key: &str, source: Arc<dyn Source>) -> Result<Lookup, CacheError> {
        let (category, spawner) = (source.category(), source.spawner());
        let now = now_ms();
        // Fail-safe ends at `kept_until`: the key's extra minute is the status page's.
        let current = self.load(key, category).await.filter(|e| e.meta.clock.is_kept(now));
        let result = match current {
            Some(entry) if entry.meta.freshness(now) == Freshness::Fresh => {
                self.metrics.record(category, Event::FreshHit);
                Ok(Lookup {
                    entry,
                    status: CacheStatus::Hit,
                    fail_safe: false,
                })
            }
            Some(entry) if entry.meta.freshness(now) == Freshness::Stale => {
                self.metrics.record(category, Event::StaleHit);
                tracing::info!(
                    "[Cache SWR] Returning stale data for {key} (age {} s)",
                    entry.meta.age_ms(now) / 1000
                );
                self.spawn_revalidation(key, source);
                Ok(Lookup {
                    entry,
                    status: CacheStatus::Stale,
                    fail_safe: false,
                })
            }
            Some(kept) => Ok(self.refetch_kept(key, kept, source).await),
            None => {
                self.metrics.record(category, Event::Miss);
                let res = self.miss(key, source, None).await;
                if res.is_err() {
                    self.metrics.record(category, Event::Error);
                }
                res.map(|entry| Lookup {
                    entry,
                    status: CacheStatus::Miss,
                    fail_safe: false,
                })
            }
        };
        if result.is_ok()
            && let Some(held) = self.local.write_back_due(key)
        {
            let (cache, key) = (self.clone(), key.to_string());
            spawner.spawn(boxed(async move { cache.write_back(&key, held).await }));
        }
        self.metrics.flush_when_due(&self.store, &*spawner);
        result
    }

    /// Past the stale window but kept: fetch like a miss, and if that fails, times out,
    /// is throttled, or takes longer than the soft timeout, answer with the kept value
    /// marked fail-safe (the fetch goes on in the background).
    async fn refetch_kept(self: &Arc<Self>, key: &str, kept: Arc<Entry>, source: Arc<dyn Source>) -> Lookup {
        let category = source.category();
        self.metrics.record(category, Event::Miss);
        let flight = self.miss(key, source, Some(kept.meta.clone()));
        let why = match tokio::time::timeout(self.settings.soft_timeout, flight).await {
            Ok(Ok(entry)) => {
                return Lookup {
                    entry,
                    status: CacheStatus::Miss,
                    fail_safe: false,
                };
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "refetch still running after {} ms",
                self.settings.soft_timeout.as_millis()
            ),
        };
        self.metrics.record(category, Event::FailSafeServe);
        tracing::warn!(
            "[Cache SWR] Serving last-known-good {key} (age {} s) by fail-safe: {why}",
            kept.meta.age_ms(now_ms()) / 1000
        );
        Lookup {
            entry: kept,
            status: CacheStatus::Stale,
            fail_safe: true,
        }
    }

    /// Read what is stored under `key` without fetching (the merge), while it may be
    /// served at all (not past its fail-safe).
    pub(crate) async fn peek(&self, key: &str) -> Option<Arc<Entry>> {
        self.load(key, "peek").await.filter(|e| e.meta.clock.is_kept(now_ms()))
    }

    /// The metadata of what is stored under `key`, reading only its header from the
    /// store (or the in-process copy): the status page, without moving the bodies.
    pub(crate) async fn peek_meta(&self, key: &str) -> Option<EntryMeta> {
        if let Some(entry) = self.local.recent(key) {
            return Some(entry.meta.clone());
        }
        self.peek_meta_in_store(key).await
    }

    /// The header of what the store holds under `key` (never the in-process copy).
    pub(crate) async fn peek_meta_in_store(&self, key: &str) -> Option<EntryMeta> {
        let head = self.store.get_range(key, crate::entry::MAX_HEADER_LEN).await.ok()??;
        EntryMeta::from_header(&head).ok()
    }

    /// This instance's copy of `key`, whatever the store holds now, unless expired.
    pub(crate) fn held(&self, key: &str) -> Option<Arc<Entry>> {
        self.local.fallback(key, now_ms())
    }

    /// The last recorded fetch failure for `key`, if any: the store's, or a newer one
    /// this instance could not store.
    pub(crate) async fn last_failure(&self, key: &str) -> Option<FetchFailure> {
        let stored: Option<FetchFailure> = match self.store.get(&keys::last_error(key)).await {
            Ok(Some(raw)) => serde_json::from_slice(&raw).ok(),
            _ => None,
        };
        match (stored, self.held.failure(key)) {
            (Some(s), Some(h)) if h.at_ms > s.at_ms => Some(h),
            (Some(s), _) => Some(s),
            (None, held) => held,
        }
    }

    /// The last store write that failed on this instance, while the store has not
    /// taken one since (`None`: writes are going through).
    pub(crate) fn store_write_error(&self) -> Option<FetchFailure> {
        self.write_error.lock().clone()
    }

    /// Drop the in-process copy of `key` (tests: after an external write).
    #[cfg(test)]
    pub(crate) fn forget_local(&self, key: &str) {
        self.local.forget(key);
    }

    // ---- loading -------------------------------------------------------------

    /// The current entry, from the in-process tier when recently confirmed, else the
    /// store. A store failure falls back to the in-process copy (fail-safe serve).
    async fn load(&self, key: &str, category: &'static str) -> Option<Arc<Entry>> {
        if let Some(entry) = self.local.recent(key) {
            return Some(entry);
        }
        match self.store.get(key).await {
            Ok(Some(raw)) => match Entry::decode(raw) {
                Ok(entry) => {
                    let entry = self.local.same_or(key, entry);
                    self.local.remember(key, &entry);
                    Some(entry)
                }
                Err(e) => {
                    tracing::warn!("[Cache SWR] Unreadable value under {key} ({e}); treating it as a miss");
                    self.unstored_or_forget(key).await
                }
            },
            Ok(None) => self.unstored_or_forget(key).await,
            Err(e) => {
                self.metrics.record(category, Event::StoreError);
                let fallback = self.local.fallback(key, now_ms());
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

    /// The store holds nothing readable for `key`: the copy fetched here that the
    /// store refused is still the best we have (unless expired); else what the
    /// previous release stored (last-known-good); otherwise a miss.
    async fn unstored_or_forget(&self, key: &str) -> Option<Arc<Entry>> {
        let held = self.local.unstored(key, now_ms());
        if held.is_some() {
            return held;
        }
        self.local.forget(key);
        self.previous_release(key).await
    }

    /// What the previous release (entry format 3) stored for `key` under its own key,
    /// as last-known-good: expired from now on, so a read refetches at once and
    /// serves it (marked fail-safe) only while that fails, until its own `kept_until`.
    /// Never written back, never the base of a compare-and-set.
    async fn previous_release(&self, key: &str) -> Option<Arc<Entry>> {
        let old_key = keys::previous_format(key)?;
        let raw = self.store.get(&old_key).await.ok()??;
        let old = Entry::decode_previous_format(raw).ok()?;
        let now = now_ms();
        let mut head = old.meta.head();
        if !head.clock.is_kept(now) {
            return None;
        }
        // Expired since it was fetched: whatever instant the reader calls "now".
        let since = head.clock.fetched_at_ms.min(head.clock.kept_until_ms);
        (head.clock.fresh_until_ms, head.clock.stale_until_ms) = (since, since);
        tracing::debug!(
            "[Cache SWR] {key}: nothing of this release stored; the previous release's {old_key} is last-known-good"
        );
        Some(Arc::new(old.with_head(&head)))
    }

    // ---- miss ------------------------------------------------------------------

    /// One fetch per key in this process: concurrent misses share it. The fetch is
    /// driven to the end through the spawner even if every reader stops waiting.
    fn miss(self: &Arc<Self>, key: &str, source: Arc<dyn Source>, seen: Option<EntryMeta>) -> MissFlight {
        let mut misses = self.misses.lock();
        if let Some((_, flight)) = misses.get(key) {
            return flight.clone();
        }
        let id = self.next_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spawner = source.spawner();
        let (cache, owned_key) = (self.clone(), key.to_string());
        let fetch: BoxFuture<Result<Arc<Entry>, CacheError>> = Box::pin(
            async move {
                let result = cache.miss_once(&owned_key, source, seen).await;
                // Done: the next miss of this key starts a new flight (a finished one must
                // not answer it with an old result).
                let mut misses = cache.misses.lock();
                if misses.get(&owned_key).is_some_and(|(fid, _)| *fid == id) {
                    misses.remove(&owned_key);
                }
                result
            }
            // Whoever polls it (a reader, or the driver below), its spans belong to the
            // read that started it.
            .in_current_span(),
        );
        let flight = fetch.shared();
        misses.insert(key.to_string(), (id, flight.clone()));
        drop(misses);
        let driven = flight.clone();
        spawner.spawn(boxed(async move {
            let _ = driven.await;
        }));
        flight
    }

    // ---- revalidation ----------------------------------------------------------

    fn spawn_revalidation(self: &Arc<Self>, key: &str, source: Arc<dyn Source>) {
        let spawner = source.spawner();
        {
            let mut revalidating = self.revalidating.lock();
            if !revalidating.insert(key.to_string()) {
                return; // already revalidating in this process
            }
        }
        let cache = self.clone();
        let key = key.to_string();
        spawner.spawn(boxed(async move {
            // Release the in-process mark however the task ends.
            struct Mark(Arc<Cache>, String);
            impl Drop for Mark {
                fn drop(&mut self) {
                    self.0.revalidating.lock().remove(&self.1);
                }
            }
            let _mark = Mark(cache.clone(), key.clone());
            let span = tracing::info_span!("cache.revalidate", cache.key = %key);
            cache.revalidate(&key, source).instrument(span).await;
        }));
    }
}

#[cfg(test)]
mod tests;
