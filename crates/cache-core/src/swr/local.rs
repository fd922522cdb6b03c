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
}

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
    /// the encodings it already derived).
    pub(super) fn same_or(&self, key: &str, loaded: Entry) -> Arc<Entry> {
        match self.lock().get(key) {
            Some(l) if l.entry.meta == loaded.meta => l.entry.clone(),
            _ => Arc::new(loaded),
        }
    }

    /// The copy of `key` whatever its age, unless expired (served when the store fails).
    pub(super) fn fallback(&self, key: &str, now_ms: u64) -> Option<Arc<Entry>> {
        self.lock()
            .get(key)
            .map(|l| l.entry.clone())
            .filter(|e| e.meta.freshness(now_ms) != Freshness::Expired)
    }

    pub(super) fn remember(&self, key: &str, entry: &Arc<Entry>) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().insert(
            key.to_string(),
            Local {
                entry: entry.clone(),
                checked: Instant::now(),
            },
        );
    }

    pub(super) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}
