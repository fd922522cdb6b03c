//! The TTL policy: how long an entry is fresh, then served stale, then kept for
//! fail-safe serving. It makes each entry's [`Clock`]; the entry carries it.
//!
//! Seed values: models are fresh for 4 h, then served stale for 12 h more (16 h in
//! all); past that they are kept `FAILSAFE_MAX_SECONDS` (7 days) and served, marked
//! fail-safe, only while refetches fail. Freshness is decided from the clock stored
//! *in* the entry (see [`crate::entry`]), never from the store's TTL; the store key
//! merely expires a little after `kept_until`, so dead data cleans itself up.

use std::time::Duration;

use crate::entry::Clock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub fresh: Duration,
    pub stale: Duration,
    /// Fresh time is spread by up to ±this percent, so the gateways written in the same
    /// second do not all go stale (and revalidate) in the same second.
    pub jitter_percent: u8,
    /// How long past the stale window an entry is kept for fail-safe serving.
    pub fail_safe: Duration,
}

impl TtlPolicy {
    pub const fn new(fresh: Duration, stale: Duration, jitter_percent: u8) -> Self {
        Self {
            fresh,
            stale,
            jitter_percent,
            fail_safe: Duration::ZERO,
        }
    }

    /// Keep entries `fail_safe` past their stale window.
    pub const fn with_fail_safe(mut self, fail_safe: Duration) -> Self {
        self.fail_safe = fail_safe;
        self
    }

    /// The clock of an entry fetched at `fetched_at_ms`, with jitter on the fresh
    /// part, its fresh window cut to `fresh_for` when given (an incomplete merged view
    /// heals in a minute, not hours). Saturating: no setting wraps a window around.
    pub fn clock(&self, fetched_at_ms: u64, fresh_for: Option<Duration>) -> Clock {
        let fresh_ms = millis(self.fresh);
        let spread = fresh_ms / 100 * self.jitter_percent as u64;
        let mut fresh_ms = if spread > 0 {
            (fresh_ms - spread).saturating_add(fastrand::u64(0..=spread.saturating_mul(2)))
        } else {
            fresh_ms
        };
        if let Some(short) = fresh_for {
            fresh_ms = fresh_ms.min(millis(short));
        }
        let fresh_until_ms = fetched_at_ms.saturating_add(fresh_ms.max(1));
        let stale_until_ms = fresh_until_ms.saturating_add(millis(self.stale));
        Clock {
            fetched_at_ms,
            fresh_until_ms,
            stale_until_ms,
            kept_until_ms: stale_until_ms.saturating_add(millis(self.fail_safe)),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let p = TtlPolicy::new(Duration::from_secs(14_400), Duration::from_secs(43_200), 5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let c = p.clock(1_000, None);
            let fresh = c.fresh_until_ms - 1_000;
            assert!((13_680_000..=15_120_000).contains(&fresh), "{fresh}");
            assert_eq!(c.stale_until_ms - c.fresh_until_ms, 43_200_000);
            seen.insert(fresh);
        }
        assert!(seen.len() > 100, "jitter should spread expiry times");
    }

    #[test]
    fn no_jitter_is_exact_and_a_short_window_cuts_fresh_only() {
        let p =
            TtlPolicy::new(Duration::from_secs(2), Duration::from_secs(3), 0).with_fail_safe(Duration::from_secs(7));
        assert_eq!(
            p.clock(10, None),
            Clock {
                fetched_at_ms: 10,
                fresh_until_ms: 2_010,
                stale_until_ms: 5_010,
                kept_until_ms: 12_010
            }
        );
        let short = p.clock(10, Some(Duration::from_millis(500)));
        assert_eq!((short.fresh_until_ms, short.stale_until_ms), (510, 3_510));
        assert_eq!(
            p.clock(10, None).key_ttl(10),
            Duration::from_millis(12_000) + crate::entry::KEY_EXPIRY_MARGIN
        );
    }

    #[test]
    fn huge_windows_saturate_instead_of_wrapping() {
        let p = TtlPolicy::new(Duration::from_secs(u64::MAX), Duration::from_secs(u64::MAX), 50)
            .with_fail_safe(Duration::from_secs(u64::MAX));
        let c = p.clock(1_700_000_000_000, None);
        assert!(
            c.fresh_until_ms <= c.stale_until_ms && c.stale_until_ms <= c.kept_until_ms,
            "{c:?}"
        );
        assert_eq!(c.freshness(1_700_000_000_001), crate::entry::Freshness::Fresh);
    }
}
