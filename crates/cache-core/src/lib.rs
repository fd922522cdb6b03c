//! cache-core: the model-catalog cache behind the Gatewayz models page.
//!
//! ```text
//!  browser ──GET /models──► handlers::page ──► page (first screen, once per entry) ─┐
//!  frontend ──GET /api/models──► handlers::models ──► search (pages, search) ───────┤
//!                                                                                  ▼
//!                                               swr::Cache ──► store (Redis | memory)
//!                                                  │ miss / stale
//!                                                  ▼
//!                                           gateways::fetch ──► catalog API (21 gateways)
//!  cron / curl ──► handlers ──► warm ──► refresh every gateway in parallel ──► merged "all"
//! ```
//!
//! # Using it
//!
//! The three things a user does, each runnable (`cargo test --doc`). A route binary is
//! one line, `cache_core::vercel::serve(Route::Models).await`; underneath, any route is
//! served by [`handlers::handle`] with an [`App`] built from a [`Config`]:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let catalog_api = sample_catalog::start_local().await;
//! use std::sync::Arc;
//! use cache_core::handlers::{RequestContext, Route, handle};
//! use cache_core::spawn::TaskSpawner;
//! use cache_core::{App, Config};
//!
//! // No REDIS_URL: the embedded store (REDIS_URL is required once deployed).
//! let config = Config::from_pairs(&[("GATEWAYZ_API_URL", &catalog_api.base_url()), ("GATEWAYS", "groq")]).unwrap();
//! let app = App::new(config).unwrap();
//! let request = http::Request::get("/api/models?gateway=groq&limit=5").body(()).unwrap();
//! let ctx = RequestContext::new(app.clone(), Arc::new(TaskSpawner::new()));
//! let response = handle(Route::Models, request.into_parts().0, ctx).await;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-cache"], "MISS");
//! # }
//! ```
//!
//! Warm every gateway (what the cron and `POST /api/cache/warm-models` do), and read
//! the merged models:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let catalog_api = sample_catalog::start_local().await;
//! use std::sync::Arc;
//! use cache_core::contract::{ModelsResponse, Trigger};
//! use cache_core::spawn::TaskSpawner;
//! use cache_core::{App, CacheStatus, Config};
//!
//! let config = Config::from_pairs(&[("GATEWAYZ_API_URL", &catalog_api.base_url()), ("GATEWAYS", "groq,cerebras")]).unwrap();
//! let app = App::new(config).unwrap();
//! let tasks = Arc::new(TaskSpawner::new());
//! let run = app.warm(None, Trigger::Manual, tasks.clone()).await.unwrap();
//! assert!(run.success && run.gateways_success == 2);
//!
//! let all = app.read_all(tasks).await.unwrap();
//! assert_eq!(all.status, CacheStatus::Hit);
//! let models: ModelsResponse = serde_json::from_slice(&all.entry.identity().unwrap()).unwrap();
//! assert_eq!(models.gateway, "all");
//! assert!(models.data.iter().any(|m| m.source_gateways.contains(&"cerebras".to_string())));
//! # }
//! ```
//!
//! The JSON it answers is typed in [`contract`]; the store's keys are in [`keys`].
//!
//! # Where things are
//!
//! - Freshness is decided from the entry's own clock: `entry` (`Clock`), made by `ttl`
//!   (`TtlPolicy::clock`), acted on by `swr` (`Cache::read`).
//! - The lock protocol: `swr/fill.rs` (one protocol, a `Purpose` per caller) on `lock`.
//! - The key schema: [`keys`] (its documentation is the table).
//! - Adding a gateway: `docs/design.md`, "Adding a gateway".
//! - Response bodies: the stored JSON in `catalog` (`catalog_json`, the merge), pages
//!   and searches in `search` (`Plan`), the page HTML in `page`, the status in `status`,
//!   errors in `handlers` (`json_error`); [`body::Body`] carries them.
//!
//! # Layout
//!
//! Bottom to top, each module importing only those below it (`docs/design.md` has the
//! picture): `entry` (the stored format and its clock), `ttl`, `config`, `clock`, `keys`,
//! `upstream` (why an upstream call failed; bounded error texts), `body` (response
//! bodies); `store` (Redis or memory); `spawn`, `telemetry`; `lock`, `metrics`; `swr`
//! (the stale-while-revalidate read and the one fill protocol); `gateways` (registry,
//! fetcher, page parser, normalise, merge); `contract`, `budget`, `search`, `page`;
//! `app` (the application context); `catalog`, `warm`, `status` (its operations);
//! `handlers` (HTTP only); `global`, `vercel` (process and platform glue).

// Inside the crate, `pub(crate)` is the default: a bare `pub` marks the front door.
#![warn(unreachable_pub)]
#![warn(clippy::too_many_lines)] // a function fits on a screen: at most 80 lines (clippy.toml)

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
#[cfg(feature = "simulation")]
pub use clock::simulation;
pub use config::Config;
pub use encoding::Encoding;
pub use entry::Entry;
pub use gateways::Gateway;
pub use swr::{CacheError, CacheStatus, FetchFailure, Lookup, SourceError};
pub use upstream::FetchError;

// The machinery, bottom to top (docs/design.md has the picture).
mod answers;
mod app;
mod budget;
mod cadence;
mod catalog;
mod clock;
mod encoding;
mod entry;
mod gateways;
mod lock;
mod metrics;
mod page;
mod schedule;
mod status;
mod store;
mod swr;
mod ttl;
mod upstream;

#[cfg(test)]
mod tests;
