//! Suites that test the crate's internals together (gateways, fetcher, merged view,
//! warming) against real servers on loopback. Unit tests live beside their code;
//! the SWR suite in `swr::tests`.

mod gateways;
mod properties;

/// Config with test-friendly defaults plus `overrides`.
pub(crate) fn config(overrides: &[(&str, &str)]) -> crate::Config {
    let mut vars = vec![
        ("TTL_JITTER_PERCENT", "0"),
        ("LOCAL_CACHE_TTL_MS", "0"),
        ("REDIS_COMMAND_TIMEOUT_MS", "500"),
        ("METRICS_FLUSH_INTERVAL_MS", "0"),
    ];
    vars.extend_from_slice(overrides);
    crate::Config::from_pairs(&vars).unwrap()
}
