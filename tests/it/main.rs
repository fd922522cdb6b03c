//! The repository's end-to-end tests, black box: the built function binaries (over
//! HTTP and under Vercel's IPC protocol), the dev server, real redis-server processes
//! (TLS and Cluster too), headless Chromium, the deployment layout and the typed
//! contract. One test binary with modules, so the dependency tree is linked once.
//! Suites that test cache-core's internals live inside that crate.
//!
//! `cargo test --test it` runs them all; `cargo test --test it platform::` one module.

mod support;

mod browser;
mod changes;
mod compat;
mod contract;
mod hostile;
mod http_e2e;
mod layout;
mod observability;
mod page;
mod platform;
mod redis_tls;
mod reliability;
