//! The in-process tier: the last entry this instance loaded per key, trusted for
//! `LOCAL_CACHE_TTL_MS` before asking the store again.
//!
//! A (parking_lot, poison-free) blocking Mutex, not a tokio one: each critical section is one map operation and never
//! spans an `.await` (the mini-redis reasoning).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use crate::entry::{Entry, Freshness};

struct Local {
    entry: Arc<Entry>,
    checked: Instant,
    /// Fetched here but refused by the store: served while the store holds nothing
    /// newer, so a store that refuses writes does not turn reads into misses.
    unstored: bool,
    /// When writing an unstored copy back was last tried.
    tried: Instant,
}

/// How often an unstored copy is offered to the store again.
const WRITE_BACK_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct LocalTier {
    ttl: Duration,
    entries: Mutex<HashMap<String, Local>>,
}

impl LocalTier {
    pub(super) fn new(ttl: Duration) -> Self {
        LocalTier {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Local>> {
        self.entries.lock()
    }

    /// The copy of `key` if it was confirmed against the store within the TTL.
    pub(super) fn recent(&self, key: &str) -> Option<Arc<Entry>> {
        if self.ttl.is_zero() {
            return None;
        }
        self.lock()
            .get(key)
            .filter(|l| l.checked.elapsed() < self.ttl)
            .map(|l| l.entry.clone())
    }

    /// `loaded` from the store, or the copy we hold if it is the same value (it keeps
    /// the encodings it already derived) or a newer one the store refused.
    pub(super) fn same_or(&self, key: &str, loaded: Entry) -> Arc<Entry> {
        match self.lock().get(key) {
            Some(l) if l.entry.meta == loaded.meta => l.entry.clone(),
            Some(l) if l.unstored && l.entry.meta.clock.fetched_at_ms > loaded.meta.clock.fetched_at_ms => {
                l.entry.clone()
            }
            _ => Arc::new(loaded),
        }
    }

    /// The copy the store refused, unless expired: what a read answers when the store
    /// holds nothing for `key`.
    pub(super) fn unstored(&self, key: &str, now_ms: u64) -> Option<Arc<Entry>> {
        self.lock()
            .get(key)
            .filter(|l| l.unstored && l.entry.meta.freshness(now_ms) != Freshness::Expired)
            .map(|l| l.entry.clone())
    }

    /// Keep `entry`, fetched here, that the store did not take.
    pub(super) fn hold(&self, key: &str, entry: &Arc<Entry>) {
        self.lock().insert(
            key.to_string(),
            Local {
                entry: entry.clone(),
                checked: Instant::now(),
                unstored: true,
                tried: Instant::now(),
            },
        );
    }

    /// The copy of `key` whatever its age, unless expired (served when the store fails).
    pub(super) fn fallback(&self, key: &str, now_ms: u64) -> Option<Arc<Entry>> {
        self.lock()
            .get(key)
            .map(|l| l.entry.clone())
            .filter(|e| e.meta.freshness(now_ms) != Freshness::Expired)
    }

    pub(super) fn remember(&self, key: &str, entry: &Arc<Entry>) {
        let mut entries = self.lock();
        if let Some(l) = entries.get_mut(key)
            && Arc::ptr_eq(&l.entry, entry)
        {
            l.checked = Instant::now();
            return;
        }
        if self.ttl.is_zero() {
            entries.remove(key);
            return;
        }
        entries.insert(
            key.to_string(),
            Local {
                entry: entry.clone(),
                checked: Instant::now(),
                unstored: false,
                tried: Instant::now(),
            },
        );
    }

    /// The unstored copy of `key`, if it is time to offer it to the store again.
    pub(super) fn write_back_due(&self, key: &str) -> Option<Arc<Entry>> {
        let mut entries = self.lock();
        let l = entries
            .get_mut(key)
            .filter(|l| l.unstored && l.tried.elapsed() >= WRITE_BACK_EVERY)?;
        l.tried = Instant::now();
        Some(l.entry.clone())
    }

    /// `entry`, held unstored, is in the store now.
    pub(super) fn remember_stored(&self, key: &str, entry: &Arc<Entry>) {
        if let Some(l) = self.lock().get_mut(key)
            && Arc::ptr_eq(&l.entry, entry)
        {
            l.unstored = false;
            l.checked = Instant::now();
        }
    }

    pub(super) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}
