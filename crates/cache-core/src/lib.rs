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

pub mod app;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod contract;
pub mod entry;
pub mod gateways;
pub mod global;
pub mod handlers;
pub mod keys;
pub mod lock;
pub mod metrics;
pub mod search;
pub mod spawn;
pub mod status;
pub mod store;
pub mod swr;
pub mod telemetry;
pub mod ttl;
pub mod vercel;
pub mod warm;

pub use app::App;
pub use config::Config;
pub use swr::{Cache, CacheError, CacheStatus, Lookup, Payload, Source};

#[cfg(test)]
mod tests;
