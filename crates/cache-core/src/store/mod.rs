//! Where entries live: Redis (shared by every instance) or an embedded in-memory
//! store (one process, nothing to install). Both honour the same semantics: values
//! expire after their PX, `set_nx` is atomic, `delete_if_equals` is compare-and-delete.
//!
//! An enum rather than a trait object: two backends, known at compile time, async
//! methods without boxing. Keys passed in are logical (`models:groq`); the store
//! applies `CACHE_KEY_PREFIX`.

mod memory;
mod redis;
mod tls;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

pub(crate) use memory::MemoryStore;
pub(crate) use redis::RedisStore;

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The command did not complete within the command timeout: it may still be
    /// applied (a paused or slow server runs it later).
    #[error("store command timed out")]
    Timeout,
    /// Not sent: the circuit breaker is open after a recent connection failure.
    #[error("store unavailable: circuit open after a recent failure")]
    CircuitOpen,
    /// The store answered with an error: the command was not applied (`READONLY`
    /// from a replica, `OOM` from a full server under `noeviction`, `WRONGTYPE`, ...).
    #[error("store refused the command: {0}")]
    Refused(String),
    /// The store is unreachable, or the connection broke mid-command.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the command certainly did not take effect (safe to send again): not
    /// sent, or answered with an error. A timeout or a broken connection may have
    /// been applied.
    pub fn not_applied(&self) -> bool {
        matches!(self, StoreError::CircuitOpen | StoreError::Refused(_))
    }
}

/// A value written only if no later fetch is stored: its fetch's start and how far
/// ahead a stored stamp is still trusted (the store's clock plus a tolerance).
pub(crate) struct Versioned {
    pub value: Bytes,
    pub ttl: Duration,
    /// When the fetch that made it started (unix ms).
    pub stamp_ms: u64,
    /// A stored stamp past this is not trusted, and is overwritten.
    pub trusted_until_ms: u64,
}

/// A stored entry's new head (`entry::Head::encode`), for the entry fetched at
/// `stamp`, and the key's new expiry.
pub(crate) struct NewHead {
    pub head: Vec<u8>,
    pub stamp: u64,
    pub ttl: Duration,
}

/// What a compare-and-set write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Stored,
    /// Refused: the stored entry's fetch started later (and its stamp is trusted).
    Refused {
        stored_stamp_ms: u64,
    },
}

/// A change log's entry id: the store's clock (ms) when it was appended, and its rank
/// among those appended in that ms (a Redis stream id, `<ms>-<seq>`). Ids grow in the
/// order entries were appended, on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LogId {
    pub ms: u64,
    pub seq: u64,
}

impl LogId {
    pub(crate) const ZERO: LogId = LogId { ms: 0, seq: 0 };

    /// The smallest id after this one.
    pub(crate) fn next(self) -> LogId {
        match self.seq.checked_add(1) {
            Some(seq) => LogId { ms: self.ms, seq },
            None => LogId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }

    /// The largest id before this one (`ZERO` has none: itself).
    pub(crate) fn prev(self) -> LogId {
        match (self.seq.checked_sub(1), self.ms.checked_sub(1)) {
            (Some(seq), _) => LogId { ms: self.ms, seq },
            (None, Some(ms)) => LogId { ms, seq: u64::MAX },
            (None, None) => self,
        }
    }

    /// `<ms>-<seq>`, as Redis writes it.
    pub(crate) fn parse(s: &str) -> Option<LogId> {
        let (ms, seq) = s.split_once('-')?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(LogId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One write to a gateway's change ledger (`crate::changes`), all of it or none: the
/// snapshot (if it still has revision `expected_rev`), the dates, and the events
/// appended to the log, with a summary of them (`last`). Four keys in one hash slot
/// (`{…}` in their names).
pub(crate) struct LedgerCommit<'a> {
    pub snapshot_key: &'a str,
    pub dates_key: &'a str,
    pub log_key: &'a str,
    /// Where the summary of the gateway's last change goes (written with events only).
    pub last_key: &'a str,
    pub last: Bytes,
    /// The snapshot's 16-byte revision prefix it was diffed from; empty: none stored.
    pub expected_rev: &'a [u8],
    /// The new snapshot, starting with its revision.
    pub snapshot: Bytes,
    pub dates: Bytes,
    /// Expiry of the snapshot, the dates and the log.
    pub ttl: Duration,
    pub events: Vec<Bytes>,
    /// The log keeps its last `log_max` entries, none appended before `log_min_ms`.
    pub log_max: usize,
    pub log_min_ms: u64,
}

/// Where a log read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFrom {
    /// Entries after this id, oldest first.
    After(LogId),
    /// Entries before this id (none: the newest), newest first.
    Before(Option<LogId>),
}

#[derive(Clone)]
pub(crate) enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// The store `config` asks for: Redis when `REDIS_URL` is set, else embedded.
    /// Connecting to Redis does not wait for the server: an unreachable Redis makes
    /// commands fail after the command timeout, and the client reconnects by itself.
    pub(crate) fn from_config(config: &Config) -> Result<Self, StoreError> {
        match &config.redis_url {
            Some(url) => Ok(Store::Redis(RedisStore::connect(
                url.expose(),
                &config.key_prefix,
                config.redis_command_timeout,
                config.redis_pool_size,
                config.redis_tls_ca.as_deref(),
            )?)),
            None => Ok(Store::Memory(MemoryStore::new(&config.key_prefix))),
        }
    }

    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    #[tracing::instrument(name = "store.get", level = "info", skip(self), fields(db.system = self.backend_name()))]
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.get(key)),
            Store::Redis(s) => s.get(key).await,
        }
    }

    /// `MGET`: the values under `keys`, in order. The keys must share a hash slot on a
    /// Cluster (the change feed's do: `{v1}`).
    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Memory(s) => Ok(keys.iter().map(|k| s.get(k)).collect()),
            Store::Redis(s) => s.get_many(keys).await,
        }
    }

    /// `SET key value PX ttl`.
    #[tracing::instrument(name = "store.set", level = "info", skip(self, value), fields(db.system = self.backend_name(), bytes = value.len()))]
    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.set(key, value, ttl);
                Ok(())
            }
            Store::Redis(s) => s.set(key, value, ttl).await,
        }
    }

    /// `SET key value PX ttl NX`: true when this call created the key.
    pub(crate) async fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.set_nx(key, value, ttl)),
            Store::Redis(s) => s.set_nx(key, value, ttl).await,
        }
    }

    /// Delete `key` only if it still holds `value` (lock release by its owner).
    pub(crate) async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.delete_if_equals(key, value)),
            Store::Redis(s) => s.delete_if_equals(key, value).await,
        }
    }

    /// Write an entry unless the stored one was fetched later than `write.stamp_ms`
    /// (its fetch start): an older fetch that finishes last never replaces newer data.
    /// A stored stamp past `write.trusted_until_ms` is not trusted, and is overwritten. One key, one script: slot-safe on a Cluster.
    #[tracing::instrument(name = "store.set", level = "info", skip(self, write), fields(db.system = self.backend_name(), bytes = write.value.len()))]
    pub(crate) async fn set_if_newer(&self, key: &str, write: Versioned) -> Result<Write, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.set_if_newer(key, write)),
            Store::Redis(s) => s.set_if_newer(key, write).await,
        }
    }

    /// Rewrite the head (flags, clock, inputs: `entry::Head::encode`) of the entry
    /// under `key` in place, and its expiry, if it is still the entry fetched at
    /// `new.stamp` with as many inputs. The bodies are not sent again: an
    /// unchanged refetch costs a few dozen bytes. `Ok(false)` = the entry changed
    /// meanwhile (write it whole).
    pub(crate) async fn rewrite_head(&self, key: &str, new: NewHead) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.rewrite_head(key, new)),
            Store::Redis(s) => s.rewrite_head(key, new).await,
        }
    }

    /// Extend `key` to `ttl` if it still holds `value` (a lease we own).
    pub(crate) async fn extend_if_equals(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.extend_if_equals(key, value, ttl)),
            Store::Redis(s) => s.extend_if_equals(key, value, ttl).await,
        }
    }

    /// The store's clock (`TIME`), unix ms: one clock for every instance.
    pub(crate) async fn time_ms(&self) -> Result<u64, StoreError> {
        match self {
            Store::Memory(_) => Ok(crate::clock::now_ms()),
            Store::Redis(s) => s.time_ms().await,
        }
    }

    /// Release a lock we own (compare-and-delete), even while the Redis circuit
    /// breaker is open: skipping a release locks everyone out until the TTL.
    pub(crate) async fn release(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.delete_if_equals(key, value)),
            Store::Redis(s) => s.release(key, value).await,
        }
    }

    /// The first `len` bytes of the value under `key` (`GETRANGE`): an entry's header.
    pub(crate) async fn get_range(&self, key: &str, len: usize) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.get_range(key, len)),
            Store::Redis(s) => s.get_range(key, len).await,
        }
    }

    /// Time left before `key` expires, `None` if it does not exist.
    pub(crate) async fn pttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.pttl(key)),
            Store::Redis(s) => s.pttl(key).await,
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.delete(key);
                Ok(())
            }
            Store::Redis(s) => s.delete(key).await,
        }
    }

    /// `HINCRBY key field delta` for each pair, in one round trip.
    pub(crate) async fn incr_fields(&self, key: &str, deltas: &[(&str, i64)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        match self {
            Store::Memory(s) => {
                s.incr_fields(key, deltas);
                Ok(())
            }
            Store::Redis(s) => s.incr_fields(key, deltas).await,
        }
    }

    /// Append `record` to the list under `key`, keep its last `keep` records, and make
    /// it expire in `ttl` (`RPUSH` + `LTRIM` + `PEXPIRE`): what one record costs the
    /// store, whatever the list's length.
    pub(crate) async fn append_capped(
        &self,
        key: &str,
        record: Bytes,
        keep: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.append_capped(key, record, keep, ttl);
                Ok(())
            }
            Store::Redis(s) => s.append_capped(key, record, keep, ttl).await,
        }
    }

    /// The list under `key`, oldest first (empty when absent).
    pub(crate) async fn list(&self, key: &str) -> Result<Vec<Bytes>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.list(key)),
            Store::Redis(s) => s.list(key).await,
        }
    }

    /// Commit `commit` (see [`LedgerCommit`]). `Ok(false)`: the snapshot is not the one
    /// it was diffed from (another fetch recorded first); nothing was written.
    pub(crate) async fn commit_ledger(&self, commit: LedgerCommit<'_>) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.commit_ledger(commit)),
            Store::Redis(s) => s.commit_ledger(commit).await,
        }
    }

    /// Up to `count` entries of the log under `key`: after `after`, oldest first
    /// (`Forward`), or before `before` (none: from the newest), newest first.
    pub(crate) async fn log_range(
        &self,
        key: &str,
        from: LogFrom,
        count: usize,
    ) -> Result<Vec<(LogId, Bytes)>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.log_range(key, from, count)),
            Store::Redis(s) => s.log_range(key, from, count).await,
        }
    }

    /// `HGETALL key` as integers (non-integer fields are skipped).
    pub(crate) async fn get_fields(&self, key: &str) -> Result<HashMap<String, i64>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.get_fields(key)),
            Store::Redis(s) => s.get_fields(key).await,
        }
    }
}
