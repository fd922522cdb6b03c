//! Wall-clock time: unix milliseconds (what entries and records store) and ISO 8601
//! for what people read (status, run records).

use time::format_description::well_known::iso8601::{Config, EncodedConfig, Iso8601, TimePrecision};

/// Wall-clock now in unix milliseconds. Entries are shared between instances, so the
/// clock must be the wall clock, not a process-local `Instant`.
pub(crate) fn now_ms() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    #[cfg(feature = "simulation")]
    let wall = wall.saturating_add(simulation::AHEAD_MS.load(std::sync::atomic::Ordering::Relaxed));
    wall
}

/// A clock that a simulation moves forward (the `simulation` feature, for the cadence
/// benchmark: a week of upstream changes in a minute, through the real code). Never in
/// a function binary built for deployment.
#[cfg(feature = "simulation")]
pub mod simulation {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) static AHEAD_MS: AtomicU64 = AtomicU64::new(0);

    /// Move this process's clock `ms` further ahead of the wall clock.
    pub fn advance(ms: u64) {
        AHEAD_MS.fetch_add(ms, Ordering::Relaxed);
    }

    /// The clock's now (unix ms), as the cache sees it.
    pub fn now_ms() -> u64 {
        super::now_ms()
    }
}

/// `2026-11-24T08:25:46.123Z`: UTC, millisecond precision.
pub(crate) fn iso8601(ms: u64) -> String {
    const FORMAT: EncodedConfig = Config::DEFAULT
        .set_time_precision(TimePrecision::Second {
            decimal_digits: std::num::NonZeroU8::new(3),
        })
        .encode();
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Iso8601::<FORMAT>).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_known_instants() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601(1_795_509_946_123), "2026-11-24T08:45:46.123Z");
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
