//! cache-core: the model-catalog cache behind the Gatewayz models page.
//!
//! ```text
//!  frontend ──GET /api/models──► http ──► swr::Cache ──► store (Redis | memory)
//!                                             │ miss / stale
//!                                             ▼
//!                                      gateways::fetch ──► catalog API (21 gateways)
//!  cron / curl ──► http ──► warm ──► refresh every gateway in parallel ──► merged "all"
//! ```
//!
//! One concern per module: [`config`] (env), [`ttl`] (the TTL table), [`entry`]
//! (the stored format with its own clock), [`store`] (Redis or embedded),
//! [`lock`], [`swr`] (the stale-while-revalidate read), [`spawn`] (background
//! work: `wait_until` on Vercel), [`metrics`], [`gateways`].

// The front door: what the route binaries, the dev server, the benches and the
// end-to-end tests use. Everything else is private to the crate.
pub mod config;
pub mod contract;
pub mod global;
pub mod handlers;
pub mod keys;
pub mod spawn;
pub mod telemetry;
pub mod vercel;
pub mod warm;

pub use app::App;
pub use config::Config;
pub use entry::{Encoding, Entry};
pub use gateways::Gateway;
pub use swr::{CacheError, CacheStatus, Lookup};

// The machinery, bottom to top (docs/design.md has the picture).
mod app;
mod catalog;
mod clock;
mod entry;
mod gateways;
mod lock;
mod metrics;
mod search;
mod status;
mod store;
mod swr;
mod ttl;

#[cfg(test)]
mod tests;
