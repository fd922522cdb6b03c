//! The store's key schema, in one table. Every key the service reads or writes is
//! made here, so the schema can be read (and changed) in one place.
//!
//! | key | holds | written by | expires |
//! |---|---|---|---|
//! | `models:v4:<gateway>` | a gateway's catalog (the `entry` format, version 4) | fetch (miss, revalidation, warm) | stale window + fail-safe window |
//! | `models:v4:all` | the merged view of the built-in gateway set | merged rebuild | same |
//! | `models:v4:all:<hash>` | the merged view of another gateway set (`GATEWAYS`) | merged rebuild | same |
//! | `guard:<key>` | the collapse guard's evidence about `<key>`: the doubted catalog's size, how often and since when the upstream answered it (JSON) | fill protocol | [`GUARD_EVIDENCE_TTL`] (1 day) |
//! | `guard:peak:<key>` | the largest catalog accepted for a gateway within the guard's memory (`<models> <at_ms>`): doubt is judged against it as well as the stored entry, so a ratchet is a collapse and an eviction mid-doubt keeps the judgement | fill protocol, when an accepted catalog is larger | [`GUARD_MEMORY`] (1 day from that catalog: the exit) |
//! | `cadence:v2:<key>` | a gateway's change history: a list of up to 128 compact records, one per stored fetch (when by the store's clock, the interval, changed or not, the listing's requests, the content's tag: `cadence::history`) | every stored fetch of the gateway (`RPUSH` + `LTRIM`) | [`CADENCE_TTL`] (30 days) |
//! | `cadence:<key>` | the previous release's change history (JSON): read as evidence, never written | the previous release | its own |
//! | `models:<gateway>`, `models:all[:<hash>]` | the previous release's entries (format 3): read as last-known-good, never written | the previous release | its own |
//! | `changes:{v1}:seen:<gateway>` | the change feed's snapshot of the gateway's last recorded catalog (a revision, then gzip JSON: `crate::changes`) | the fetch that records a change (one script with the three below) | 400 days after its last change |
//! | `changes:{v1}:dates:<gateway>` | first-seen dates of its models seen after the baseline, and the ETag of the catalog they were recorded with (JSON) | same | same |
//! | `changes:{v1}:last:<gateway>` | its last change: when, counts by kind (JSON) | same, when there are changes | same |
//! | `changes:{v1}:log` | the change log: a stream of changes (JSON), at most 5,000, none older than 90 days | same | 400 days after the last change |
//! | `lock:<key>` | who fetches `<key>` now (one fetch per key across instances) | fill protocol | fetch deadline + 5 s |
//! | `lasterror:<key>` | the last failed fetch of `<key>` (JSON: error, at, rate limited, retry window) | fill protocol | [`LAST_ERROR_TTL`] (1 day) |
//! | `retryafter:<key>` | no new fetch of `<key>` before this expires (any instance) | fill protocol | `REVALIDATE_RETRY_SECONDS`, or the upstream's `Retry-After` (1..3600 s) when it rate limits |
//! | `lock:warm` | the running warm (one at a time across instances) | warm | a 15 s lease, renewed while the warm runs (at most `WARM_LOCK_TTL_SECONDS`) |
//! | `warm:last_run` | the last warm's run record (JSON) | warm | 30 days |
//! | `metrics:<category>` | shared counters (a hash; `category` is `models`) | metrics flush | never |
//!
//! `CACHE_KEY_PREFIX` is put in front of every key by the store itself, so several
//! deployments can share one Redis.
//!
//! **Entry keys carry the entry format** ([`FORMAT_NAMESPACE`]): a release that
//! changes the format writes other keys, so two releases live on one store (a
//! preview and production, a rolling deploy) never overwrite, thrash or refetch each
//! other's entries. The keys derived from an entry key (`lock:`, `lasterror:`,
//! `retryafter:`, `guard:`) follow it. A release reads the previous format's key
//! ([`previous_format`]) as last-known-good, so a deploy loses nothing the previous
//! release stored. Shared across releases: the warm lease, the run record and the
//! counters (their JSON only grows).

use std::time::Duration;

/// How long a failure stays recorded: long enough to explain an outage on the
/// status page.
pub const LAST_ERROR_TTL: Duration = Duration::from_secs(86_400);

/// How long the collapse guard remembers the largest catalog accepted for a key (from
/// the moment it was accepted): after that the reference is the stored entry again,
/// so a catalog that really shrank in steps is judged afresh.
pub const GUARD_MEMORY: Duration = Duration::from_secs(86_400);

/// How long the collapse guard's evidence about a key is kept after its last
/// observation: a doubt nobody confirms within a day starts again from nothing.
pub const GUARD_EVIDENCE_TTL: Duration = Duration::from_secs(86_400);

/// How long a gateway's change history outlives its last observation.
pub const CADENCE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The entry format's namespace inside `models:` (see the module doc).
pub const FORMAT_NAMESPACE: &str = "v4";
/// The merged view's key for the built-in gateway set.
pub const ALL: &str = "models:v4:all";
/// The warm's cross-instance lock.
pub const WARM_LOCK: &str = "lock:warm";
/// The last warm's run record.
pub const LAST_RUN: &str = "warm:last_run";

/// A gateway's catalog.
pub fn gateway(id: &str) -> String {
    format!("models:{FORMAT_NAMESPACE}:{id}")
}

/// Where the previous release (entry format 3) kept what `key` holds now:
/// `models:v4:groq` → `models:groq`. `None` for keys that are not entries.
pub fn previous_format(key: &str) -> Option<String> {
    let rest = key
        .strip_prefix("models:")?
        .strip_prefix(FORMAT_NAMESPACE)?
        .strip_prefix(':')?;
    Some(format!("models:{rest}"))
}

/// The change history of the gateway stored under `key` (see `crate::cadence`).
pub fn cadence(key: &str) -> String {
    format!("cadence:v2:{key}")
}

/// Where the previous release kept the change history of `key` (one JSON document).
pub fn previous_cadence(key: &str) -> String {
    format!("cadence:{key}")
}

/// The collapse guard's evidence about `key`.
pub fn guard(key: &str) -> String {
    format!("guard:{key}")
}

/// The collapse guard's memory of `key`'s largest accepted catalog.
pub fn guard_peak(key: &str) -> String {
    format!("guard:peak:{key}")
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

/// The change feed's log (`crate::changes`). `{v1}`: the change feed's keys share one
/// hash slot (its commit is one script), and its format.
pub const CHANGES_LOG: &str = "changes:{v1}:log";

/// The change feed's snapshot of `gateway`'s last recorded catalog.
pub fn changes_snapshot(gateway: &str) -> String {
    format!("changes:{{v1}}:seen:{gateway}")
}

/// `gateway`'s first-seen dates.
pub fn changes_dates(gateway: &str) -> String {
    format!("changes:{{v1}}:dates:{gateway}")
}

/// `gateway`'s last recorded change.
pub fn changes_last(gateway: &str) -> String {
    format!("changes:{{v1}}:last:{gateway}")
}

/// A category's shared counters.
pub fn metrics(category: &str) -> String {
    format!("metrics:{category}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_keys_carry_the_format_and_name_the_previous_ones() {
        assert_eq!(super::gateway("groq"), "models:v4:groq");
        assert_eq!(super::merged(0xab), "models:v4:all:000000ab");
        assert_eq!(
            super::previous_format(&super::gateway("groq")).as_deref(),
            Some("models:groq")
        );
        assert_eq!(super::previous_format(super::ALL).as_deref(), Some("models:all"));
        assert_eq!(
            super::previous_format(&super::merged(0xab)).as_deref(),
            Some("models:all:000000ab")
        );
        assert_eq!(super::previous_format("models:groq"), None);
        assert_eq!(super::previous_format("lock:warm"), None);
    }
}
