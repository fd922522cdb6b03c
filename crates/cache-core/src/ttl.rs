//! The TTL table: how long an entry is fresh, then how long it may be served stale.
//!
//! Seed values: models are fresh for 4 h, then served stale for 12 h more (16 h in
//! all). Freshness is decided from timestamps stored *in* the entry (see
//! [`crate::entry`]), never from the store's TTL; the store key merely expires a
//! little after the stale window so dead data cleans itself up.

use std::time::Duration;

/// Extra life of a store key past the entry's stale window, so a reader that sees
/// "expired" can still read the old value's metadata (age, count) for the status page.
pub const KEY_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub fresh: Duration,
    pub stale: Duration,
    /// Fresh time is spread by up to ±this percent, so 21 gateways written in the same
    /// second do not all go stale (and revalidate) in the same second.
    pub jitter_percent: u8,
}

/// The instants an entry written now carries, in unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub fresh_until_ms: u64,
    pub stale_until_ms: u64,
}

impl TtlPolicy {
    pub const fn new(fresh: Duration, stale: Duration, jitter_percent: u8) -> Self {
        Self {
            fresh,
            stale,
            jitter_percent,
        }
    }

    /// Deadlines for an entry fetched at `now_ms`, with jitter applied to the fresh part.
    pub fn deadlines(&self, now_ms: u64) -> Deadlines {
        let fresh_ms = self.fresh.as_millis() as u64;
        let spread = fresh_ms * self.jitter_percent as u64 / 100;
        let fresh_ms = if spread > 0 {
            fresh_ms - spread + fastrand::u64(0..=2 * spread)
        } else {
            fresh_ms
        };
        let fresh_until_ms = now_ms + fresh_ms.max(1);
        Deadlines {
            fresh_until_ms,
            stale_until_ms: fresh_until_ms + self.stale.as_millis() as u64,
        }
    }

    /// How long the store should keep a key whose stale window ends at `stale_until_ms`.
    pub fn key_ttl(stale_until_ms: u64, now_ms: u64) -> Duration {
        Duration::from_millis(stale_until_ms.saturating_sub(now_ms)) + KEY_EXPIRY_MARGIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let p = TtlPolicy::new(Duration::from_secs(14_400), Duration::from_secs(43_200), 5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = p.deadlines(1_000);
            let fresh = d.fresh_until_ms - 1_000;
            assert!((13_680_000..=15_120_000).contains(&fresh), "{fresh}");
            assert_eq!(d.stale_until_ms - d.fresh_until_ms, 43_200_000);
            seen.insert(fresh);
        }
        assert!(seen.len() > 100, "jitter should spread expiry times");
    }

    #[test]
    fn no_jitter_is_exact() {
        let p = TtlPolicy::new(Duration::from_secs(2), Duration::from_secs(3), 0);
        assert_eq!(
            p.deadlines(10),
            Deadlines {
                fresh_until_ms: 2_010,
                stale_until_ms: 5_010
            }
        );
        assert_eq!(
            TtlPolicy::key_ttl(5_010, 10),
            Duration::from_millis(5_000) + KEY_EXPIRY_MARGIN
        );
    }
}
