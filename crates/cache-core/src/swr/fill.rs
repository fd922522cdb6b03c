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

use super::guard::Weighed;
use super::{Cache, CacheError, FetchFailure, Payload, Purpose, Source, Verdict};
use crate::clock::now_ms;
use crate::entry::{Entry, EntryMeta, Freshness, Head, InputClock, STORED_ENCODINGS};
use crate::keys;
use crate::lock::{self, LockGuard};
use crate::metrics::Event;
use crate::spawn::Spawner;
use crate::store::{NewHead, StoreError, Versioned, Write};
use crate::ttl::TtlPolicy;

/// A fill lock outlives the fetch it guards by this much.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// How often a waiter looks at the holder's lock.
const POLL: Duration = Duration::from_millis(25);

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
    /// `purpose` is [`Purpose::Warm`] or [`Purpose::Rebuild`].
    pub(crate) async fn refresh(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        purpose: Purpose,
    ) -> Result<Arc<Entry>, CacheError> {
        debug_assert!(purpose.refetches());
        let seen = self.load(key, source.category()).await.map(|e| e.meta.clone());
        self.fill(key, source, seen, purpose).await
    }

    /// The one fetch of a miss in this process, coordinated with other instances.
    pub(super) async fn miss_once(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        seen: Option<EntryMeta>,
    ) -> Result<Arc<Entry>, CacheError> {
        // A key that just failed is not fetched again by every reader (retry storm).
        if let Some(throttled) = self.throttled(key).await {
            return Err(throttled);
        }
        self.fill(key, source, seen, Purpose::Read).await
    }

    async fn fill(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        seen: Option<EntryMeta>,
        purpose: Purpose,
    ) -> Result<Arc<Entry>, CacheError> {
        let lock_ttl = source.deadline() + LOCK_MARGIN;
        let patience = match purpose {
            Purpose::Read if !self.settings.miss_wait.is_zero() => self.settings.miss_wait,
            _ => lock_ttl + Duration::from_secs(1),
        };
        let give_up = Instant::now() + patience;
        let failure_before = self.last_failure(key).await;
        loop {
            match self.lock(key, lock_ttl, &source.spawner()).await {
                Locked::Ours(guard) => {
                    // Another instance may have written between our read and our lock.
                    if purpose == Purpose::Read
                        && let Some(e) = self.stored_other_than(key, seen.as_ref()).await
                    {
                        guard.release().await;
                        return Ok(e);
                    }
                    let res = self.fetch_and_store(key, source, seen.as_ref(), purpose).await;
                    guard.release().await;
                    return res;
                }
                Locked::NoStore => {
                    return self.fetch_and_store(key, source, seen.as_ref(), purpose).await;
                }
                Locked::Theirs => {}
            }
            match self
                .wait_for_holder(key, seen.as_ref(), failure_before.as_ref(), give_up)
                .await
            {
                Waited::Stored(e) if purpose == Purpose::Read => return Ok(e),
                Waited::Failed(f) if purpose == Purpose::Read => {
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
        let same = seen.is_some_and(|s| s.clock.fetched_at_ms == e.meta.clock.fetched_at_ms && s.etag == e.meta.etag);
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

    pub(super) async fn revalidate(self: &Arc<Self>, key: &str, source: Arc<dyn Source>) {
        let category = source.category();
        // A recent failure blocks new attempts for a while, across instances.
        if self.throttled(key).await.is_some() {
            self.metrics.record(category, Event::RevalidationThrottled);
            tracing::debug!("[Cache SWR] Revalidation of {key} throttled after a recent failure");
            return;
        }
        let guard = match self.lock(key, source.deadline() + LOCK_MARGIN, &source.spawner()).await {
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
            .fetch_and_store(key, source, previous.as_ref(), Purpose::Revalidate)
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
    /// compare-and-set. What the store did not take is answered by `purpose`:
    /// - a read serves what it fetched (and holds it in process);
    /// - a revalidation or a warm whose write failed reports [`CacheError::NotStored`],
    ///   recorded and throttled like any failure (a store that refuses writes must not
    ///   turn every stale read into an upstream call);
    /// - a warm or rebuild refused because a later fetch is stored reports
    ///   [`CacheError::Superseded`]: it did not store what it fetched.
    ///
    /// Boxed: its state machine (fetch, guard, write, retime) is large, and the merged
    /// view's fill runs gateway fills inside it; inline, two of them overflow a 2 MiB
    /// thread stack in a debug build.
    fn fetch_and_store<'a>(
        self: &'a Arc<Self>,
        key: &'a str,
        source: Arc<dyn Source>,
        previous: Option<&'a EntryMeta>,
        purpose: Purpose,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<Entry>, CacheError>> + Send + 'a>> {
        Box::pin(self.fetch_and_store_inner(key, source, previous, purpose))
    }

    async fn fetch_and_store_inner(
        self: &Arc<Self>,
        key: &str,
        source: Arc<dyn Source>,
        previous: Option<&EntryMeta>,
        purpose: Purpose,
    ) -> Result<Arc<Entry>, CacheError> {
        let deadline = source.deadline();
        // The data is "as of" the instant the request went upstream.
        let stamp = now_ms();
        let fetched = tokio::time::timeout(deadline, source.clone().fetch(purpose)).await;
        let outcome = match fetched {
            Err(_) => Err(CacheError::Timeout(deadline)),
            Ok(Err(e)) => Err(CacheError::Source(e)),
            Ok(Ok(mut payload)) => {
                let peak = match source.guarded() {
                    true => self.peak(key).await,
                    false => None,
                };
                // Boxed, as the steps below: a fill inside a fill (a merge reading a
                // gateway) nests these state machines, and a debug build's 2 MiB stack
                // overflowed once the guard's memory was added here.
                match Box::pin(self.judge(key, &*source, &payload, previous, peak)).await {
                    Err(e) => Err(e),
                    Ok(peak) => {
                        // Fit to store: the source observes it (only now: a held or
                        // rejected answer is no observation) and says the window it earns.
                        if let Some(window) = source.accepted(&mut payload).await {
                            payload.fresh_window = Some(window);
                        }
                        let count = payload.item_count;
                        let stored = Box::pin(self.store_judged(key, &source, payload, previous, purpose, stamp)).await;
                        if stored.is_ok() && source.guarded() {
                            self.remember_accepted(key, count, peak).await;
                        }
                        stored
                    }
                }
            }
        };
        if let Err(e) = &outcome
            && !matches!(e, CacheError::Superseded { .. })
        {
            // A held answer throttles reads no longer than the held catalog may be
            // served: past that, a read must reach the upstream (the guard's time exit).
            let until = match e {
                CacheError::Held { .. } => previous.map(|p| p.clock.kept_until_ms),
                _ => None,
            };
            self.record_failure(key, e, source.throttles_failures(), until).await;
        }
        outcome
    }

    /// Store a judged `payload` fetched at `stamp`: retime what is stored if it is the
    /// same content, write it otherwise, and answer what the store did by `purpose`.
    async fn store_judged(
        self: &Arc<Self>,
        key: &str,
        source: &Arc<dyn Source>,
        payload: Payload,
        previous: Option<&EntryMeta>,
        purpose: Purpose,
        stamp: u64,
    ) -> Result<Arc<Entry>, CacheError> {
        // The same content as stored: move its clock, keep its bodies and ETag
        // (browsers and the CDN keep their 304s), and nothing follows a write.
        if let Some(entry) = self
            .retime_if_unchanged(key, &payload, previous, source.ttl(), stamp)
            .await
        {
            return Ok(entry);
        }
        match self.write(key, source.ttl(), payload, stamp, source.category()).await {
            Written::Stored(entry) => {
                if let Some(follow_up) = source.clone().after_write(purpose) {
                    source.spawner().spawn(follow_up);
                }
                Ok(entry)
            }
            Written::Newer { stored_stamp_ms, .. } if purpose.refetches() => Err(CacheError::Superseded {
                stored_stamp_ms,
                ours_ms: stamp,
            }),
            Written::Newer { newer, .. } => Ok(newer),
            // Served, and held in process: later reads answer from it (no throttle
            // needed) and write it back once the store takes writes.
            Written::Failed(entry, e) if purpose == Purpose::Read => {
                tracing::warn!(
                    "[Cache SWR] Store write of {key} failed ({e}); serving the fetched value, held in process"
                );
                self.record_failure(key, &CacheError::NotStored(e), false, None).await;
                Ok(entry)
            }
            Written::Failed(_, e) => Err(CacheError::NotStored(e)),
        }
    }

    /// Whether `payload` may replace `previous`: validation (against `previous` and
    /// the guard's `peak`), and for a suspect answer the guard's evidence
    /// ([`super::guard`]). An answer that agrees with a held entry clears the evidence
    /// (the write or retime clears the mark). `Ok`: the peak still in force (none
    /// once a doubt is confirmed: the confirmed catalog is the new reference).
    async fn judge(
        &self,
        key: &str,
        source: &dyn Source,
        payload: &Payload,
        previous: Option<&EntryMeta>,
        peak: Option<u32>,
    ) -> Result<Option<u32>, CacheError> {
        match source.validate(payload, previous, peak) {
            Verdict::Reject(why) => Err(CacheError::Rejected(why)),
            Verdict::Doubt(why) => match self.weigh(key, payload, previous, peak, why).await {
                Weighed::Confirmed => Ok(None),
                Weighed::Held(e) => Err(e),
            },
            Verdict::Accept => {
                if previous.is_some_and(EntryMeta::held) {
                    self.clear_evidence(key).await;
                }
                Ok(peak)
            }
        }
    }

    /// Move the clock of what is stored under `key` to now, as if it had just been
    /// fetched unchanged (the merged view when no gateway changed in a warm), with
    /// `inputs` as its inputs' clocks. `None` if nothing usable is stored.
    pub(crate) async fn retime_stored(
        &self,
        key: &str,
        ttl: TtlPolicy,
        inputs: Vec<InputClock>,
        fresh_for: Option<std::time::Duration>,
    ) -> Option<Arc<Entry>> {
        let current = self.usable_in_store(key).await?;
        let head = Head {
            flags: 0,
            clock: ttl.clock(now_ms(), fresh_for),
            inputs,
        };
        self.retime(key, current.meta.clock.fetched_at_ms, head).await
    }

    /// If `payload` is what `previous` holds (same content, same sources), move the
    /// stored entry's clock to `stamp` instead of writing it again. `None`: changed,
    /// or the store's entry is not `previous` any more (then it is written whole).
    async fn retime_if_unchanged(
        &self,
        key: &str,
        payload: &Payload,
        previous: Option<&EntryMeta>,
        ttl: TtlPolicy,
        stamp: u64,
    ) -> Option<Arc<Entry>> {
        let prev = previous?;
        if prev.previous_format()
            || prev.item_count != payload.item_count
            || prev.collapsed != payload.collapsed
            || prev.sources != payload.sources
            || prev.carried != payload.carried
            || prev.etag != payload.etag
        {
            return None;
        }
        let head = Head {
            flags: 0,
            clock: payload.clock(ttl, stamp),
            inputs: payload.inputs.clone(),
        };
        self.retime(key, prev.clock.fetched_at_ms, head).await
    }

    /// Give the stored entry fetched at `expected_stamp` the head `head` (its clock,
    /// no held mark, its inputs' clocks).
    async fn retime(&self, key: &str, expected_stamp: u64, head: Head) -> Option<Arc<Entry>> {
        let ttl = head.clock.key_ttl(now_ms());
        match self
            .store
            .rewrite_head(
                key,
                NewHead {
                    head: head.encode(),
                    stamp: expected_stamp,
                    ttl,
                },
            )
            .await
        {
            Ok(true) => {
                tracing::info!("[Cache SWR] {key} unchanged: clock moved, bodies kept");
                self.usable_in_store(key).await
            }
            Ok(false) => None,
            Err(e) => {
                self.write_failed(&e);
                None
            }
        }
    }

    /// Build the entry (compression off the async threads) and store it unless a
    /// fetch that started later is stored already.
    async fn write(&self, key: &str, ttl: TtlPolicy, payload: Payload, stamp: u64, category: &'static str) -> Written {
        let clock = payload.clock(ttl, stamp);
        let (sources, carried, collapsed) = (payload.sources, payload.carried, payload.collapsed);
        let entry = tokio::task::spawn_blocking(move || {
            Entry::build_tagged(payload.json, payload.etag, payload.item_count, clock, STORED_ENCODINGS)
                .with_sources(sources, carried)
                .with_collapsed(collapsed)
                .with_inputs(payload.inputs)
        })
        .await
        .expect("entry build does not panic");
        let entry = Arc::new(entry);
        // A stored stamp further ahead of the store's clock than this came from an
        // instance whose clock runs ahead: not trusted, overwritten.
        let trusted_until = match self.store.time_ms().await {
            Ok(store_now) => {
                self.check_clock(store_now);
                store_now.saturating_add(TRUSTED_AHEAD.as_millis() as u64)
            }
            Err(_) => u64::MAX,
        };
        match self
            .store
            .set_if_newer(key, versioned(&entry, stamp, trusted_until))
            .await
        {
            Ok(Write::Stored) => {
                self.store_writable();
                self.local.remember(key, &entry);
                Written::Stored(entry)
            }
            Ok(Write::Refused { stored_stamp_ms }) => {
                tracing::warn!(
                    "[Cache SWR] Not storing {key}: the store holds a fetch that started at {stored_stamp_ms}, after ours ({stamp})"
                );
                let newer = self.usable_in_store(key).await.unwrap_or_else(|| entry.clone());
                Written::Newer { newer, stored_stamp_ms }
            }
            Err(e) => {
                self.metrics.record(category, Event::StoreWriteError);
                self.write_failed(&e);
                // Held in process: reads keep answering with what was fetched.
                self.local.hold(key, &entry);
                Written::Failed(entry, e)
            }
        }
    }

    /// Write back a value this instance fetched and the store refused, now that a read
    /// served it again (at most once a second per key): the store may take writes
    /// again, and other instances should see it.
    pub(super) async fn write_back(&self, key: &str, entry: Arc<Entry>) {
        let trusted_until = match self.store.time_ms().await {
            Ok(store_now) => store_now.saturating_add(TRUSTED_AHEAD.as_millis() as u64),
            Err(_) => return,
        };
        match self
            .store
            .set_if_newer(key, versioned(&entry, entry.meta.clock.fetched_at_ms, trusted_until))
            .await
        {
            Ok(Write::Stored) => {
                tracing::info!("[Cache SWR] Wrote back {key}, held in process while the store refused writes");
                self.store_writable();
                self.local.remember_stored(key, &entry);
            }
            Ok(Write::Refused { .. }) => self.local.forget(key),
            Err(e) => self.write_failed(&e),
        }
    }

    /// Log, loudly, an instance clock that runs ahead of (or behind) the store's by
    /// more than [`TRUSTED_AHEAD`]: its stamps would be refused or overwritten.
    fn check_clock(&self, store_now_ms: u64) {
        let ours = now_ms();
        let ahead = ours as i64 - store_now_ms as i64;
        if ahead.unsigned_abs() > TRUSTED_AHEAD.as_millis() as u64 {
            tracing::error!(
                "[Cache Store] This instance's clock is {:+.1} s off the store's (TIME): entries it stamps are {}",
                ahead as f64 / 1000.0,
                if ahead > 0 {
                    "in the future, not trusted and overwritten by other instances"
                } else {
                    "in the past, refused over newer ones"
                }
            );
        }
    }

    /// The throttle of `key` while its retry window is open, with the time left
    /// (the store's clock: the same for every instance).
    async fn throttled(&self, key: &str) -> Option<CacheError> {
        let left = match self.store.pttl(&keys::retry_after(key)).await {
            Ok(Some(left)) => Some(left),
            // The store has none, or cannot say: a window this instance could not store.
            Ok(None) | Err(_) => self.held.throttle_left(key),
        }?;
        let failure = self.last_failure(key).await.unwrap_or_else(|| FetchFailure {
            error: "recent failure".into(),
            at_ms: now_ms(),
            rate_limited: false,
            retry_after_s: None,
            gone: false,
        });
        Some(CacheError::Throttled {
            failure,
            retry_after: left,
        })
    }

    /// Record a failed fetch (for the status page and for the instances waiting on
    /// it) and open the key's retry window. When the store refuses these writes too,
    /// both are kept in process: the throttle must hold on this instance at least.
    /// `until_ms`: the throttle ends by then at the latest (none at all if it is past).
    async fn record_failure(&self, key: &str, error: &CacheError, throttle: bool, until_ms: Option<u64>) {
        // A rate-limited upstream names its own window; any other failure gets
        // `REVALIDATE_RETRY_SECONDS`.
        let window = throttle
            .then(|| error.retry_window(self.settings.revalidate_retry))
            .flatten()
            .map(|w| match until_ms {
                Some(until) => w.min(Duration::from_millis(until.saturating_sub(now_ms()))),
                None => w,
            })
            .filter(|w| !w.is_zero());
        let failure = FetchFailure {
            error: crate::upstream::bounded(&error.to_string()),
            at_ms: now_ms(),
            rate_limited: error.is_rate_limit(),
            retry_after_s: window.map(|w| w.as_secs()),
            gone: error.is_gone(),
        };
        // A store that refused the write says nothing about the upstream: this
        // instance waits out the window (it would otherwise refetch on every read of a
        // stale key), but no other instance is kept from asking the upstream (a store
        // that runs no scripts stores nothing, and every read elsewhere would be a 503
        // while the upstream answers; issue 38).
        if matches!(error, CacheError::NotStored(_)) {
            self.held.fail(key, failure, window);
            return;
        }
        let json = serde_json::to_vec(&failure).expect("serializable");
        let recorded = self
            .store
            .set(&keys::last_error(key), Bytes::from(json), keys::LAST_ERROR_TTL)
            .await;
        // No new attempt on this key (by reads, on any instance) until the window passes.
        let throttled = match window {
            Some(window) => {
                self.store
                    .set(&keys::retry_after(key), Bytes::from_static(b"1"), window)
                    .await
            }
            None => Ok(()),
        };
        if let Err(e) = recorded.as_ref().and(throttled.as_ref()) {
            self.write_failed(e);
            self.held.fail(key, failure, window);
        }
    }

    /// A store write failed: remembered for the status (`store_write_error`).
    fn write_failed(&self, e: &StoreError) {
        *self.write_error.lock() = Some(FetchFailure {
            error: crate::upstream::bounded(&e.to_string()),
            at_ms: now_ms(),
            rate_limited: false,
            retry_after_s: None,
            gone: false,
        });
    }

    /// A store write succeeded: the store takes writes again.
    fn store_writable(&self) {
        if self.write_error.lock().take().is_some() {
            tracing::info!("[Cache Store] The store takes writes again");
        }
    }
}

/// What became of a write.
enum Written {
    Stored(Arc<Entry>),
    /// Refused: a fetch that started later (at `stored_stamp_ms`) is stored; `newer`
    /// is it (or ours, if it vanished meanwhile).
    Newer {
        newer: Arc<Entry>,
        stored_stamp_ms: u64,
    },
    Failed(Arc<Entry>, StoreError),
}

/// How far ahead of the store's clock a stored stamp is still trusted.
const TRUSTED_AHEAD: Duration = Duration::from_secs(5);

/// `entry` as a write that loses to a fetch started after `stamp_ms`, kept by the
/// store for its clock's fail-safe.
fn versioned(entry: &Entry, stamp_ms: u64, trusted_until_ms: u64) -> Versioned {
    Versioned {
        value: entry.encode(),
        ttl: entry.meta.clock.key_ttl(now_ms()),
        stamp_ms,
        trusted_until_ms,
    }
}
