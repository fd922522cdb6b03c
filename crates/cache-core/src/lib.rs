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
//! # Using it
//!
//! A route binary is `cache_core::vercel::serve(Route::Models).await`; the dev server
//! builds an [`App`] from a [`Config`] and calls [`handlers::handle`] for each request.
//! The JSON it answers is typed in [`contract`]; the store's keys are in [`keys`].
//!
//! # Layout
//!
//! Bottom to top, each module importing only those below it (`docs/design.md` has the
//! picture): `config`, `clock`, `ttl`, `keys` (plain data); `entry` (the stored format
//! and its clock); `store` (Redis or memory); `spawn`, `telemetry`; `lock`, `metrics`;
//! `swr` (the stale-while-revalidate read and the one fill protocol); `gateways`
//! (registry, fetcher, page parser, normalise, merge); `contract`, `search`; `app`
//! (the application context); `catalog`, `warm`, `status` (its operations);
//! `handlers` (HTTP only); `global`, `vercel` (process and platform glue).

// The front door: what the route binaries, the dev server, the benches and the
// end-to-end tests use. Everything else is private to the crate.
pub mod body;
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
pub use swr::{CacheError, CacheStatus, FetchFailure, Lookup, SourceError};
pub use upstream::FetchError;

// The machinery, bottom to top (docs/design.md has the picture).
mod app;
mod budget;
mod catalog;
mod clock;
mod entry;
mod gateways;
mod lock;
mod metrics;
mod page;
mod search;
mod status;
mod store;
mod swr;
mod ttl;
mod upstream;

#[cfg(test)]
mod tests;
