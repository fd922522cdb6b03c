//! Wall-clock time: unix milliseconds (what entries and records store) and ISO 8601
//! for what people read (status, run records).

use time::format_description::well_known::iso8601::{Config, EncodedConfig, Iso8601, TimePrecision};

/// Wall-clock now in unix milliseconds. Entries are shared between instances, so the
/// clock must be the wall clock, not a process-local `Instant`.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
