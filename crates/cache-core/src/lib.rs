//! cache-core: the model-catalog cache behind the Gatewayz models page.
//!
//! ```text
//!  browser ──GET /models──► handlers::page ──► page (rows: maud) ◄── answers (index, bodies)
//!  frontend ──GET /api/models──► handlers::models ──► answers (pages, searches) ─┐
//!                                                                               ▼
//!                            RequestContext ──► swr::Cache ──► store (Redis | memory)
//!                                                  │ miss / stale
//!                                                  ▼
//!                        app::catalog (gateway / merged sources) ──► catalog API
//!  cron / curl ──► handlers ──► app::warm ──► refresh every gateway ──► merged "all"
//! ```
//!
//! An [`App`] is built once per process from a [`config::Config`]; a
//! [`RequestContext`] is one request's scope on it, and every operation a route
//! performs is one of its methods. A route binary is one line,
//! `cache_core::vercel::serve(Route::Models).await`. The three things a user does,
//! runnable (`cargo test --doc`):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let catalog_api = sample_catalog::start_local().await;
//! use std::sync::Arc;
//! use cache_core::config::Config;
//! use cache_core::contract::{ModelsResponse, Trigger};
//! use cache_core::handlers::{Route, handle};
//! use cache_core::spawn::TaskSpawner;
//! use cache_core::{App, CacheStatus, RequestContext};
//!
//! // No REDIS_URL: the embedded store (REDIS_URL is required once deployed).
//! let config = Config::from_pairs(&[("GATEWAYZ_API_URL", &catalog_api.base_url()), ("GATEWAYS", "groq,cerebras")]).unwrap();
//! let app = App::new(config).unwrap();
//! let ctx = RequestContext::new(app, Arc::new(TaskSpawner::new()));
//!
//! // 1. Serve a route: any route, on plain `http` types.
//! let request = http::Request::get("/api/models?gateway=groq&limit=5").body(()).unwrap();
//! let response = handle(Route::Models, request.into_parts().0, ctx.clone()).await;
//! assert_eq!((response.status(), &response.headers()["x-cache"]), (http::StatusCode::OK, &"MISS".parse().unwrap()));
//!
//! // 2. Warm every gateway (what the cron and `POST /api/cache/warm-models` do).
//! let run = ctx.warm(None, Trigger::Manual).await.unwrap();
//! assert!(run.success && run.gateways_success == 2);
//!
//! // 3. Read the merged models.
//! let all = ctx.read_all().await.unwrap();
//! assert_eq!(all.status, CacheStatus::Hit);
//! let models: ModelsResponse = serde_json::from_slice(&all.entry.identity().unwrap()).unwrap();
//! assert!(models.data.iter().any(|m| m.source_gateways.contains(&"cerebras".to_string())));
//! # }
//! ```
//!
//! Where things are (docs/design.md has the module table and the layer picture):
//! a model's fields in [`contract`] (`Model`); a row's HTML in `page.rs`; freshness in
//! `entry.rs` (`Clock`) and `swr/mod.rs` (`Cache::read`); the lock protocol in
//! `swr/fill.rs` on `lock.rs`; response bodies in `answers/` (pages, searches, derived
//! bodies) and `page.rs` (HTML); the store's keys in [`keys`]; adding a gateway in
//! docs/design.md, "Adding a gateway".

// Inside the crate, `pub(crate)` is the default: a bare `pub` marks the front door.
#![warn(unreachable_pub)]
#![warn(clippy::too_many_lines)] // a function fits on a screen: at most 80 lines (clippy.toml)

// ---- The front door: each item has this one path. ----
pub mod config; // Config (from the environment) and its parts
pub mod contract; // the JSON every route answers, as types
pub mod global; // the process's App, for the route binaries
pub mod handlers; // Route, handle: the routes on plain `http` types
pub mod keys; // the store's key schema
pub mod spawn; // where a request's background work runs
pub mod telemetry; // logs and Sentry
pub mod vercel; // serve(Route): a route binary's main

pub use app::{App, RequestContext, WarmError};
pub use body::{Body, Precompressed};
#[cfg(feature = "simulation")]
pub use clock::simulation;
pub use encoding::Encoding;
pub use entry::Entry;
pub use gateways::Gateway;
pub use swr::{CacheError, CacheStatus, FetchFailure, Lookup, SourceError};
pub use upstream::FetchError;

// ---- The machinery, bottom to top (docs/design.md has the picture). ----
mod answers;
mod app;
mod body;
mod budget;
mod cadence;
mod changes;
mod clock;
mod encoding;
mod entry;
mod gateways;
mod lock;
mod metrics;
mod page;
mod store;
mod swr;
mod ttl;
mod upstream;

#[cfg(test)]
mod tests;
