//! Shared test support: a real redis-server on a free loopback port (never 6379),
//! started per test and killed on drop (from the `test-support` crate), the built
//! function binaries, Vercel's IPC side, a headless browser, the contract's schemas.
#![allow(dead_code)]

pub mod browser;
pub mod contract;
pub mod env;
pub mod process;
pub mod vercel_ipc;

use std::collections::HashMap;

#[allow(unused_imports)]
pub use test_support::{cluster, free_port, listens_on, redis};

/// The dev server (the functions' handlers in one process) serving `app` on a free
/// loopback port, in the background; its address.
pub async fn dev_server(
    app: std::sync::Arc<cache_core::App>,
    tasks: cache_core::spawn::TaskSpawner,
) -> std::net::SocketAddr {
    dev_server_with(app, tasks, dev_server::Options::default()).await
}

/// [`dev_server`] with explicit options (`--allow-local-cron`).
pub async fn dev_server_with(
    app: std::sync::Arc<cache_core::App>,
    tasks: cache_core::spawn::TaskSpawner,
    options: dev_server::Options,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dev_server::serve_with(listener, app, tasks, options));
    addr
}

/// Config with test-friendly defaults plus `overrides`.
pub fn config(overrides: &[(&str, &str)]) -> cache_core::config::Config {
    let mut map: HashMap<&str, String> = HashMap::new();
    map.insert("TTL_JITTER_PERCENT", "0".into());
    map.insert("LOCAL_CACHE_TTL_MS", "0".into());
    map.insert("REDIS_COMMAND_TIMEOUT_MS", "500".into());
    map.insert("METRICS_FLUSH_INTERVAL_MS", "0".into());
    // The windows these tests set, exactly (the learned cadence has tests of its own).
    map.insert("REFRESH_CADENCE", "fixed".into());
    for (k, v) in overrides {
        map.insert(k, v.to_string());
    }
    cache_core::config::Config::from_map(&map).unwrap()
}
