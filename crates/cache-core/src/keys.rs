//! The store's key schema, in one table. Every key the service reads or writes is
//! made here, so the schema can be read (and changed) in one place.
//!
//! | key | holds | written by | expires |
//! |---|---|---|---|
//! | `models:<gateway>` | a gateway's catalog (the `entry` format) | fetch (miss, revalidation, warm) | stale window + fail-safe window |
//! | `models:all` | the merged view of the built-in gateway set | merged rebuild | same |
//! | `models:all:<hash>` | the merged view of another gateway set (`GATEWAYS`) | merged rebuild | same |
//! | `lock:<key>` | who fetches `<key>` now (one fetch per key across instances) | fill protocol | fetch deadline + 5 s |
//! | `lasterror:<key>` | the last failed fetch of `<key>` (JSON: error, at, rate limited, retry window) | fill protocol | [`LAST_ERROR_TTL`] (1 day) |
//! | `retryafter:<key>` | no new fetch of `<key>` before this expires (any instance) | fill protocol | `REVALIDATE_RETRY_SECONDS`, or the upstream's `Retry-After` (1..3600 s) when it rate limits |
//! | `lock:warm` | the running warm (one at a time across instances) | warm | a 15 s lease, renewed while the warm runs (at most `WARM_LOCK_TTL_SECONDS`) |
//! | `warm:last_run` | the last warm's run record (JSON) | warm | 30 days |
//! | `metrics:<category>` | shared counters (a hash; `category` is `models`) | metrics flush | never |
//!
//! `CACHE_KEY_PREFIX` is put in front of every key by the store itself, so several
//! deployments can share one Redis.

use std::time::Duration;

/// How long a failure stays recorded: long enough to explain an outage on the
/// status page.
pub const LAST_ERROR_TTL: Duration = Duration::from_secs(86_400);

/// The merged view's key for the built-in gateway set.
pub const ALL: &str = "models:all";
/// The warm's cross-instance lock.
pub const WARM_LOCK: &str = "lock:warm";
/// The last warm's run record.
pub const LAST_RUN: &str = "warm:last_run";

/// A gateway's catalog.
pub fn gateway(id: &str) -> String {
    format!("models:{id}")
}

/// The merged view of a gateway set other than the built-in one.
pub fn merged(set_hash: u32) -> String {
    format!("{ALL}:{set_hash:08x}")
}

/// The lock held while `key` is fetched.
pub fn lock(key: &str) -> String {
    format!("lock:{key}")
}

/// The last failed fetch of `key`.
pub fn last_error(key: &str) -> String {
    format!("lasterror:{key}")
}

/// The retry window after a failed fetch of `key`.
pub fn retry_after(key: &str) -> String {
    format!("retryafter:{key}")
}

/// A category's shared counters.
pub fn metrics(category: &str) -> String {
    format!("metrics:{category}")
}
