//! Filling a key: the one protocol behind misses, warms and revalidations.
//!
//! ```text
//!  take the key's store lock ──► got it ──► (miss: someone wrote meanwhile? use it)
//!        │                                   fetch, stamped with its start ──► validate
//!        │                                   ──► compare-and-set write ──► release
//!        └─ held by another instance ──► wait until it releases (poll the lock), then:
//!              miss:    its new value, else its recorded failure (throttled), else retry
//!              warm:    retry: a warm fetches itself, it never adopts another fetch
//!              revalidation: skip (the holder is refreshing this key already)
//! ```
//!
//! Nobody fetches a key without its lock while another instance holds it. Only when
//! the store itself is unreachable does a process fetch on its own (its in-process
//! single-flight still holds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Cache, CacheError, FetchFailure, Payload, Source};
use crate::clock::now_ms;
use crate::entry::{Entry, EntryMeta, Freshness, STORED_ENCODINGS};
use crate::keys;
use crate::lock::{self, LockGuard};
use crate::metrics::Event;
use crate::spawn::Spawner;
use crate::store::StoreError;
use crate::ttl::TtlPolicy;

/// A fill lock outlives the fetch it guards by this much.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// How often a waiter looks at the holder's lock.
const POLL: Duration = Duration::from_millis(25);

/// Why a key is being filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A reader has nothing usable: any value stored meanwhile will do.
    Miss,
    /// Warming: fetch now, whatever is stored; after another holder, fetch again.
    Refresh,
}

/// What waiting on another instance's lock ended with.
enum Waited {
    /// The holder released and a value other than the one we saw is stored.
    Stored(Arc<Entry>),
    /// The holder released after recording a failure.
    Failed(FetchFailure),
    /// The holder released, leaving nothing new: try to take the lock.
    Released,
    /// Still held when our patience ran out.
    StillHeld,
}

/// Whether the lock was ours, someone else's, or the store could not say.
enum Locked {
    Ours(LockGuard),
    Theirs,
    NoStore,
}

impl Cache {
    /// Fetch, validate and store `key` now, whatever its state (warming: docs/design.md, failure 6).
    /// If another instance is filling the key, wait until it is done, then fetch
    /// ourselves: its fetch may have started before whatever the warm is for.
    pub async fn refresh(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Arc<Entry>, CacheError> {
        let seen = self.load(key, source.category()).await.map(|e| e.meta.clone());
        self.fill(key, source, spawner, seen, Purpose::Refresh).await
    }

    /// The one fetch of a miss in this process, coordinated with other instances.
    pub(super) async fn miss_once(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
        seen: Option<EntryMeta>,
    ) -> Result<Arc<Entry>, CacheError> {
        // A key that just failed is not fetched again by every reader (retry storm).
        if let Some(throttled) = self.throttled(key).await {
            return Err(throttled);
        }
        self.fill(key, source, spawner, seen, Purpose::Miss).await
    }

    async fn fill(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
        seen: Option<EntryMeta>,
        purpose: Purpose,
    ) -> Result<Arc<Entry>, CacheError> {
        let lock_ttl = source.deadline() + LOCK_MARGIN;
        let patience = match purpose {
            Purpose::Miss if !self.settings.miss_wait.is_zero() => self.settings.miss_wait,
            _ => lock_ttl + Duration::from_secs(1),
        };
        let give_up = Instant::now() + patience;
        let failure_before = self.last_failure(key).await;
        let must_store = purpose == Purpose::Refresh;
        loop {
            match self.lock(key, lock_ttl, &spawner).await {
                Locked::Ours(guard) => {
                    // Another instance may have written between our read and our lock.
                    if purpose == Purpose::Miss
                        && let Some(e) = self.stored_other_than(key, seen.as_ref()).await
                    {
                        guard.release().await;
                        return Ok(e);
                    }
                    let res = self
                        .fetch_and_store(key, source, spawner, seen.as_ref(), must_store)
                        .await;
                    guard.release().await;
                    return res;
                }
                Locked::NoStore => {
                    return self
                        .fetch_and_store(key, source, spawner, seen.as_ref(), must_store)
                        .await;
                }
                Locked::Theirs => {}
            }
            match self
                .wait_for_holder(key, seen.as_ref(), failure_before.as_ref(), give_up)
                .await
            {
                Waited::Stored(e) if purpose == Purpose::Miss => return Ok(e),
                Waited::Failed(f) if purpose == Purpose::Miss => {
                    return Err(self.throttled(key).await.unwrap_or(CacheError::Recorded(f)));
                }
                Waited::StillHeld => {
                    tracing::warn!(
                        "[Cache SWR] Another instance still holds {key} after {} ms; not fetching beside it",
                        patience.as_millis()
                    );
                    return Err(CacheError::Busy);
                }
                // A warm fetches itself once the holder is done; a miss whose holder
                // left nothing takes the lock now.
                Waited::Stored(_) | Waited::Failed(_) | Waited::Released => {}
            }
        }
    }

    async fn lock(&self, key: &str, ttl: Duration, spawner: &Arc<dyn Spawner>) -> Locked {
        match lock::try_acquire(&self.store, &keys::lock(key), ttl, spawner).await {
            Ok(Some(guard)) => Locked::Ours(guard),
            Ok(None) => Locked::Theirs,
            Err(_) => Locked::NoStore,
        }
    }

    /// Poll the holder's lock until it is released, then say what it left.
    async fn wait_for_holder(
        &self,
        key: &str,
        seen: Option<&EntryMeta>,
        failure_before: Option<&FetchFailure>,
        give_up: Instant,
    ) -> Waited {
        let lock = keys::lock(key);
        loop {
            match self.store.get(&lock).await {
                Ok(Some(_)) => {}
                // Released (or the store failed: look at what is there).
                Ok(None) | Err(_) => {
                    if let Some(e) = self.stored_other_than(key, seen).await {
                        return Waited::Stored(e);
                    }
                    return match self.last_failure(key).await {
                        Some(f) if Some(&f) != failure_before => Waited::Failed(f),
                        _ => Waited::Released,
                    };
                }
            }
            if Instant::now() >= give_up {
                return Waited::StillHeld;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A non-expired entry in the store (bypassing the in-process tier) that is not
    /// the one we saw: judged by its fetch stamp and ETag, never by our own clock.
    async fn stored_other_than(&self, key: &str, seen: Option<&EntryMeta>) -> Option<Arc<Entry>> {
        let e = self.usable_in_store(key).await?;
        let same = seen.is_some_and(|s| s.fetched_at_ms == e.meta.fetched_at_ms && s.etag == e.meta.etag);
        (!same).then_some(e)
    }

    /// A non-expired entry currently in the store (bypassing the in-process tier).
    async fn usable_in_store(&self, key: &str) -> Option<Arc<Entry>> {
        let raw = self.store.get(key).await.ok()??;
        let entry = Arc::new(Entry::decode(raw).ok()?);
        if entry.meta.freshness(now_ms()) == Freshness::Expired {
            return None;
        }
        self.local.remember(key, &entry);
        Some(entry)
    }

    // ---- revalidation ----------------------------------------------------------

    pub(super) async fn revalidate(self: &Arc<Self>, key: &str, source: Arc<dyn Source>, spawner: Arc<dyn Spawner>) {
        let category = source.category();
        // A recent failure blocks new attempts for a while, across instances.
        if self.throttled(key).await.is_some() {
            self.metrics.record(category, Event::RevalidationThrottled);
            tracing::debug!("[Cache SWR] Revalidation of {key} throttled after a recent failure");
            return;
        }
        let guard = match self.lock(key, source.deadline() + LOCK_MARGIN, &spawner).await {
            Locked::Ours(g) => Some(g),
            Locked::Theirs => {
                self.metrics.record(category, Event::RevalidationSkippedByLock);
                tracing::debug!("[Cache SWR] Another instance is revalidating {key}");
                return;
            }
            Locked::NoStore => None, // store down: revalidate for this process only
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
            .fetch_and_store(key, source, spawner, previous.as_ref(), true)
            .await;
        if let Some(g) = guard {
            g.release().await;
        }
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
    }

    // ---- fetch, validate, write ------------------------------------------------

    /// Fetch (stamped with its start), validate against `previous`, write with the
    /// compare-and-set. `must_store`: a value the store did not take is an error
    /// (warms and revalidations report it); a miss serves it anyway.
    async fn fetch_and_store(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        spawner: Arc<dyn Spawner>,
        previous: Option<&EntryMeta>,
        must_store: bool,
    ) -> Result<Arc<Entry>, CacheError> {
        let deadline = source.deadline();
        // The data is "as of" the instant the request went upstream.
        let stamp = now_ms();
        let fetched = tokio::time::timeout(deadline, source.clone().fetch(spawner.clone())).await;
        let outcome = match fetched {
            Err(_) => Err(CacheError::Timeout(deadline)),
            Ok(Err(e)) => Err(CacheError::Source(e)),
            Ok(Ok(payload)) => match source.validate(&payload, previous) {
                Err(why) => Err(CacheError::Rejected(why)),
                // The same content as stored: move its clock, keep its bodies and ETag
                // (browsers and the CDN keep their 304s), and nothing follows a write.
                Ok(())
                    if let Some(entry) = self
                        .retime_if_unchanged(key, &payload, previous, source.ttl(), stamp)
                        .await =>
                {
                    Ok(entry)
                }
                Ok(()) => {
                    let high_water = previous.map_or(0, |p| p.high_water.max(p.item_count));
                    match self.write(key, payload, source.ttl(), stamp, high_water).await {
                        Written::Stored(entry) => {
                            if let Some(follow_up) = source.clone().after_write(spawner.clone()) {
                                spawner.spawn(follow_up);
                            }
                            Ok(entry)
                        }
                        Written::Newer(entry) => Ok(entry),
                        Written::Failed(entry, e) if !must_store => {
                            tracing::warn!(
                                "[Cache SWR] Store write of {key} failed ({e}); serving the fetched value anyway"
                            );
                            Ok(entry)
                        }
                        Written::Failed(_, e) => Err(CacheError::NotStored(e)),
                    }
                }
            },
        };
        if let Err(e) = &outcome
            && !matches!(e, CacheError::NotStored(_))
        {
            self.record_failure(key, e, source.throttles_failures()).await;
        }
        outcome
    }

    /// Move the clock of what is stored under `key` to now, as if it had just been
    /// fetched unchanged (the merged view when no gateway changed in a warm).
    /// `None` if nothing usable is stored.
    pub async fn retime_stored(&self, key: &str, ttl: TtlPolicy) -> Option<Arc<Entry>> {
        let current = self.usable_in_store(key).await?;
        self.retime(key, current.meta.fetched_at_ms, ttl, now_ms(), None).await
    }

    /// If `payload` is what `previous` holds, move the stored entry's clock to `stamp`
    /// instead of writing it again. `None`: changed, or the store's entry is not
    /// `previous` any more (then it is written whole).
    async fn retime_if_unchanged(
        &self,
        key: &str,
        payload: &Payload,
        previous: Option<&EntryMeta>,
        ttl: TtlPolicy,
        stamp: u64,
    ) -> Option<Arc<Entry>> {
        let prev = previous?;
        if prev.item_count != payload.item_count || prev.etag != crate::entry::etag_for(&payload.json) {
            return None;
        }
        self.retime(key, prev.fetched_at_ms, ttl, stamp, payload.fresh_for)
            .await
    }

    /// Give the stored entry fetched at `expected_stamp` a new clock from `stamp`.
    pub(super) async fn retime(
        &self,
        key: &str,
        expected_stamp: u64,
        ttl: TtlPolicy,
        stamp: u64,
        fresh_for: Option<Duration>,
    ) -> Option<Arc<Entry>> {
        let mut d = ttl.deadlines(stamp);
        if let Some(short) = fresh_for {
            d.fresh_until_ms = d.fresh_until_ms.min(stamp + short.as_millis() as u64);
        }
        let mut clock = [0u8; 24];
        clock[..8].copy_from_slice(&stamp.to_be_bytes());
        clock[8..16].copy_from_slice(&d.fresh_until_ms.to_be_bytes());
        clock[16..].copy_from_slice(&d.stale_until_ms.to_be_bytes());
        let kept_until = d.stale_until_ms + self.settings.fail_safe_max.as_millis() as u64;
        let key_ttl = TtlPolicy::key_ttl(kept_until, now_ms());
        match self.store.touch(key, expected_stamp, clock, key_ttl).await {
            Ok(true) => {
                tracing::info!("[Cache SWR] {key} unchanged: clock moved, bodies kept");
                self.usable_in_store(key).await
            }
            _ => None,
        }
    }

    /// Build the entry (compression off the async threads) and store it unless a
    /// fetch that started later is stored already.
    async fn write(&self, key: &str, payload: Payload, ttl: TtlPolicy, stamp: u64, high_water: u32) -> Written {
        let mut d = ttl.deadlines(stamp);
        if let Some(short) = payload.fresh_for {
            d.fresh_until_ms = d.fresh_until_ms.min(stamp + short.as_millis() as u64);
        }
        let entry = tokio::task::spawn_blocking(move || {
            Entry::build(
                payload.json,
                payload.item_count,
                stamp,
                d.fresh_until_ms,
                d.stale_until_ms,
                STORED_ENCODINGS,
            )
            .with_high_water(high_water)
        })
        .await
        .expect("entry build does not panic");
        let entry = Arc::new(entry);
        // Kept past the stale window for fail-safe serving (`FAILSAFE_MAX_SECONDS`).
        let kept_until = d.stale_until_ms + self.settings.fail_safe_max.as_millis() as u64;
        let key_ttl = TtlPolicy::key_ttl(kept_until, now_ms());
        match self.store.set_if_newer(key, entry.encode(), key_ttl, stamp).await {
            Ok(true) => {
                self.local.remember(key, &entry);
                Written::Stored(entry)
            }
            Ok(false) => {
                tracing::info!("[Cache SWR] Not storing {key}: a fetch that started later is stored already");
                match self.usable_in_store(key).await {
                    Some(newer) => Written::Newer(newer),
                    None => Written::Newer(entry),
                }
            }
            Err(e) => Written::Failed(entry, e),
        }
    }

    /// The throttle of `key` while its retry window is open, with the time left
    /// (the store's clock: the same for every instance).
    async fn throttled(&self, key: &str) -> Option<CacheError> {
        let left = self.store.pttl(&keys::retry_after(key)).await.ok()??;
        let failure = self.last_failure(key).await.unwrap_or_else(|| FetchFailure {
            error: "recent failure".into(),
            at_ms: now_ms(),
            rate_limited: false,
            retry_after_s: None,
        });
        Some(CacheError::Throttled {
            failure,
            retry_after: left,
        })
    }

    async fn record_failure(&self, key: &str, error: &CacheError, throttle: bool) {
        // A rate-limited upstream names its own window; any other failure gets
        // `REVALIDATE_RETRY_SECONDS`.
        let window = throttle
            .then(|| error.retry_window(self.settings.revalidate_retry))
            .flatten();
        let failure = FetchFailure {
            error: crate::upstream::bounded(&error.to_string()),
            at_ms: now_ms(),
            rate_limited: error.is_rate_limit(),
            retry_after_s: window.map(|w| w.as_secs()),
        };
        let json = serde_json::to_vec(&failure).expect("serializable");
        let _ = self
            .store
            .set(&keys::last_error(key), Bytes::from(json), keys::LAST_ERROR_TTL)
            .await;
        // No new attempt on this key (by reads, on any instance) until the window passes.
        if let Some(window) = window {
            let _ = self
                .store
                .set(&keys::retry_after(key), Bytes::from_static(b"1"), window)
                .await;
        }
    }
}

/// What became of a write.
enum Written {
    Stored(Arc<Entry>),
    /// Refused: a fetch that started later is stored; this is it (or ours, if it
    /// vanished meanwhile).
    Newer(Arc<Entry>),
    Failed(Arc<Entry>, StoreError),
}
