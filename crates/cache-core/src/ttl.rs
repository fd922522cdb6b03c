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

/// Wall-clock now in unix milliseconds. Entries are shared between instances, so the
/// clock must be the wall clock, not a process-local `Instant`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// `2026-11-24T08:25:46.123Z` from unix milliseconds (UTC; no date crate needed).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod iso_tests {
    #[test]
    fn iso8601_known_instants() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601(1_795_509_946_123), "2026-11-24T08:45:46.123Z");
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
