//! The embedded store: a map in this process with Redis-like expiry.
//!
//! A blocking `parking_lot::Mutex` (poison-free), not a tokio one: every critical section is a few map
//! operations and never spans an `.await`, so a blocking lock is cheaper and cannot
//! be held across a suspension point (the mini-redis reasoning).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Clone, Default)]
pub(crate) struct MemoryStore {
    prefix: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    values: HashMap<String, (Bytes, Instant)>,
    hashes: HashMap<String, HashMap<String, i64>>,
    lists: HashMap<String, (VecDeque<Bytes>, Instant)>,
    logs: HashMap<String, (VecDeque<(super::LogId, Bytes)>, Instant)>,
    writes_since_sweep: usize,
}

impl Inner {
    /// The live value under `key`; an expired one is removed on the way.
    fn live(&mut self, key: &str, now: Instant) -> Option<&Bytes> {
        if self.values.get(key).is_some_and(|(_, exp)| *exp <= now) {
            self.values.remove(key);
        }
        self.values.get(key).map(|(v, _)| v)
    }

    fn insert(&mut self, key: String, value: Bytes, expires: Instant) {
        self.values.insert(key, (value, expires));
        self.writes_since_sweep += 1;
        // Amortised sweep so keys nobody reads again do not pile up.
        if self.writes_since_sweep >= 256 {
            let now = Instant::now();
            self.values.retain(|_, (_, exp)| *exp > now);
            self.lists.retain(|_, (_, exp)| *exp > now);
            self.logs.retain(|_, (_, exp)| *exp > now);
            self.writes_since_sweep = 0;
        }
    }
}

impl MemoryStore {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            inner: Arc::default(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        // parking_lot does not poison: a panic while holding the lock cannot wedge
        // the store (a half-updated map matters less than losing the cache).
        self.inner.lock()
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.lock().live(&self.key(key), Instant::now()).cloned()
    }

    pub(crate) fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        let key = self.key(key);
        self.lock().insert(key, value, Instant::now() + ttl);
    }

    pub(crate) fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> bool {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live(&key, now).is_some() {
            return false;
        }
        inner.insert(key, value, now + ttl);
        true
    }

    /// Same rule as the Redis script: refuse when the stored entry was fetched later
    /// (and its stamp is not past `trusted_until_ms`).
    pub(crate) fn set_if_newer(&self, key: &str, write: super::Versioned) -> super::Write {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(stored) = inner.live(&key, now).and_then(|cur| crate::entry::stamp_of(cur))
            && stored > write.stamp_ms
            && stored <= write.trusted_until_ms
        {
            return super::Write::Refused {
                stored_stamp_ms: stored,
            };
        }
        inner.insert(key, write.value, now + write.ttl);
        super::Write::Stored
    }

    /// Same rule as the Redis script (`entry::rewrite_head`): rewrite the head in
    /// place if the stamp and the input count match.
    pub(crate) fn rewrite_head(&self, key: &str, new: super::NewHead) -> bool {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(value) = inner
            .live(&key, now)
            .and_then(|cur| crate::entry::rewrite_head(cur, new.stamp, &new.head))
        else {
            return false;
        };
        inner.insert(key, Bytes::from(value), now + new.ttl);
        true
    }

    /// Same rule as the Redis script: extend only a lease we own.
    pub(crate) fn extend_if_equals(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live(&key, now).is_some_and(|v| v.as_ref() == value)
            && let Some(slot) = inner.values.get_mut(&key)
        {
            slot.1 = now + ttl;
            return true;
        }
        false
    }

    pub(crate) fn get_range(&self, key: &str, len: usize) -> Option<Bytes> {
        self.get(key).map(|v| v.slice(..len.min(v.len())))
    }

    pub(crate) fn pttl(&self, key: &str) -> Option<Duration> {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        inner.live(&key, now)?;
        inner
            .values
            .get(&key)
            .map(|(_, exp)| exp.saturating_duration_since(now))
    }

    pub(crate) fn delete_if_equals(&self, key: &str, value: &[u8]) -> bool {
        let key = self.key(key);
        let mut inner = self.lock();
        if inner.live(&key, Instant::now()).is_some_and(|v| v.as_ref() == value) {
            inner.values.remove(&key);
            true
        } else {
            false
        }
    }

    pub(crate) fn delete(&self, key: &str) {
        let key = self.key(key);
        let mut inner = self.lock();
        inner.values.remove(&key);
        inner.hashes.remove(&key);
        inner.lists.remove(&key);
        inner.logs.remove(&key);
    }

    /// Same as the Redis store's script: all of it, or nothing when the snapshot's
    /// revision is not `expected_rev`.
    pub(crate) fn commit_ledger(&self, c: super::LedgerCommit<'_>) -> bool {
        let now = Instant::now();
        let (snapshot_key, dates_key, log_key) = (self.key(c.snapshot_key), self.key(c.dates_key), self.key(c.log_key));
        let last_key = self.key(c.last_key);
        let mut inner = self.lock();
        let rev = inner
            .live(&snapshot_key, now)
            .map(|v| v.slice(..v.len().min(16)))
            .unwrap_or_default();
        if rev.as_ref() != c.expected_rev {
            return false;
        }
        inner.insert(snapshot_key, c.snapshot, now + c.ttl);
        inner.insert(dates_key, c.dates, now + c.ttl);
        if c.events.is_empty() {
            return true;
        }
        inner.insert(last_key, c.last, now + c.ttl);
        let slot = inner.logs.entry(log_key).or_insert_with(|| (VecDeque::new(), now));
        if slot.1 <= now {
            slot.0.clear();
        }
        let clock = crate::clock::now_ms();
        for event in c.events {
            let id = match slot.0.back() {
                Some((last, _)) if last.ms >= clock => last.next(),
                _ => super::LogId { ms: clock, seq: 0 },
            };
            slot.0.push_back((id, event));
        }
        while slot.0.len() > c.log_max || slot.0.front().is_some_and(|(id, _)| id.ms < c.log_min_ms) {
            slot.0.pop_front();
        }
        slot.1 = now + c.ttl;
        true
    }

    pub(crate) fn log_range(&self, key: &str, from: super::LogFrom, count: usize) -> Vec<(super::LogId, Bytes)> {
        let key = self.key(key);
        let now = Instant::now();
        let inner = self.lock();
        let Some((log, _)) = inner.logs.get(&key).filter(|(_, exp)| *exp > now) else {
            return Vec::new();
        };
        match from {
            super::LogFrom::After(after) => log.iter().filter(|(id, _)| *id > after).take(count).cloned().collect(),
            super::LogFrom::Before(before) => log
                .iter()
                .rev()
                .filter(|(id, _)| before.is_none_or(|b| *id < b))
                .take(count)
                .cloned()
                .collect(),
        }
    }

    /// Same as the Redis store's: append, keep the last `keep`, expire in `ttl`.
    pub(crate) fn append_capped(&self, key: &str, record: Bytes, keep: usize, ttl: Duration) {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        let slot = inner.lists.entry(key).or_insert_with(|| (VecDeque::new(), now));
        if slot.1 <= now {
            slot.0.clear();
        }
        slot.0.push_back(record);
        while slot.0.len() > keep {
            slot.0.pop_front();
        }
        slot.1 = now + ttl;
        inner.writes_since_sweep += 1;
    }

    pub(crate) fn list(&self, key: &str) -> Vec<Bytes> {
        let key = self.key(key);
        let now = Instant::now();
        match self.lock().lists.get(&key) {
            Some((items, exp)) if *exp > now => items.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn incr_fields(&self, key: &str, deltas: &[(&str, i64)]) {
        let key = self.key(key);
        let mut inner = self.lock();
        let h = inner.hashes.entry(key).or_default();
        for (field, delta) in deltas {
            *h.entry((*field).to_string()).or_default() += delta;
        }
    }

    pub(crate) fn get_fields(&self, key: &str) -> HashMap<String, i64> {
        self.lock().hashes.get(&self.key(key)).cloned().unwrap_or_default()
    }
}
