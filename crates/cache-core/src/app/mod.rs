//! The application and its operations, in two types:
//!
//! - [`App`]: what every route and background task shares in a process
//!   (configuration, the store and the SWR cache on it, the gateway registry and
//!   fetcher, the answers layer, the CORS policy), built once per process (see
//!   [`crate::global`]), with what can be read of it without a request: the status,
//!   the last warm, a stored entry.
//! - [`RequestContext`]: one request's scope, the App and where the work the request
//!   leaves behind runs. Every operation a route performs is a method of it: read a
//!   catalog, refresh a gateway, rebuild the merged view, warm.
//!
//! Both types list every operation here; each is done in the module its doc names:
//! `catalog` (reads and the merged view; `catalog/gateway.rs` and `catalog/merged.rs`
//! are the two sources), `warm`, `schedule` (the learned cadence), `status`, `page`
//! (the models page: what it shows; `crate::page` renders it).

pub(crate) mod catalog;
pub(crate) mod page;
pub(crate) mod schedule;
pub(crate) mod status;
pub(crate) mod warm;

pub use warm::WarmError;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Mutex as AsyncMutex;

use crate::body::Precompressed;
use crate::config::Config;
use crate::contract::{RunRecord, Trigger};
use crate::entry::Entry;
use crate::gateways::Gateway;
use crate::gateways::{Fetcher, Registry};
use crate::keys;
use crate::spawn::Spawner;
use crate::store::{Store, StoreError};
use crate::swr::{Cache, SwrSettings};
use crate::swr::{CacheError, Lookup};
use crate::ttl::TtlPolicy;

/// Everything a route handler needs, created once per process.
pub struct App {
    pub config: Config,
    pub(crate) cache: Arc<Cache>,
    pub(crate) registry: Registry,
    pub(crate) fetcher: Fetcher,
    /// The merged view's key, named by the gateway set it is built from.
    pub(crate) all_key: String,
    /// A coalesced rebuild is queued (not yet started).
    pub(crate) rebuild_scheduled: AtomicBool,
    /// Rebuilds in this process run one at a time, so a rebuild requested while one
    /// runs starts after it, from what the store holds then.
    pub(crate) rebuilding: AsyncMutex<()>,
    /// The assembled status JSON and when it was built: the unauthenticated status
    /// GET is answered from here for a few seconds (a tokio Mutex: held while one
    /// request assembles it, so a burst costs one assembly).
    pub(crate) status_cache: AsyncMutex<Option<(std::time::Instant, crate::body::Precompressed)>>,
    /// Everything made per request shape, within `ANSWER_CACHE_MAX_BYTES` (see
    /// [`crate::answers`]).
    pub(crate) answers: crate::answers::Answers,
    /// The cadence's plan, as this instance last read the histories (see
    /// [`schedule`]): reread after a minute, updated by this instance's own looks.
    pub(crate) cadence_plan: parking_lot::Mutex<Option<Arc<schedule::CadencePlan>>>,
    /// Held while this instance reads the histories, so that a warm's concurrent
    /// looks read them once, not once per gateway (a tokio Mutex: held across reads).
    pub(crate) cadence_plan_reading: AsyncMutex<()>,
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, StoreError> {
        let store = Store::from_config(&config)?;
        Ok(Self::with_store(config, store))
    }

    pub(crate) fn with_store(config: Config, store: Store) -> Arc<Self> {
        let settings = SwrSettings::from_config(&config);
        let registry = Registry::from_config(&config);
        let answer_budget = config.answer_cache_max_bytes;
        Arc::new(App {
            cache: Cache::new(store, settings),
            all_key: all_key_for(&registry),
            registry,
            fetcher: Fetcher::new(&config),
            config,
            rebuild_scheduled: AtomicBool::new(false),
            rebuilding: AsyncMutex::new(()),
            status_cache: AsyncMutex::new(None),
            answers: crate::answers::Answers::new(answer_budget),
            cadence_plan: parking_lot::Mutex::new(None),
            cadence_plan_reading: AsyncMutex::new(()),
        })
    }

    /// The merged view's key: `models:all` for the built-in gateway set, else
    /// `models:all:<hash of the sorted ids>`.
    pub fn all_key(&self) -> &str {
        &self.all_key
    }

    pub(crate) fn store(&self) -> &Store {
        self.cache.store()
    }

    /// Push this instance's pending counters to the store now (shutdown, status).
    pub async fn flush_metrics(&self) {
        self.cache.metrics().flush(self.store()).await;
    }

    /// A configured gateway by id or alias (`hug` → huggingface).
    pub fn gateway(&self, name: &str) -> Option<&crate::Gateway> {
        self.registry.resolve(name)
    }

    /// What is stored under `key` (see [`crate::keys`]), without fetching.
    pub async fn peek(&self, key: &str) -> Option<Arc<crate::Entry>> {
        self.cache.peek(key).await
    }

    /// The last recorded fetch failure of `key`.
    pub async fn last_failure(&self, key: &str) -> Option<crate::FetchFailure> {
        self.cache.last_failure(key).await
    }

    /// The shared counters (every instance's flushed counts).
    pub async fn shared_metrics(&self) -> Result<crate::contract::CategoryMetrics, String> {
        crate::metrics::Metrics::read(self.store(), "models")
            .await
            .map_err(|e| e.to_string())
    }

    /// The store's kind: `redis` or `memory`.
    pub fn store_backend(&self) -> &'static str {
        self.store().backend_name()
    }

    pub(crate) fn ttl(&self) -> TtlPolicy {
        self.config.models_ttl
    }

    /// The status JSON, assembled at most once per `STATUS_TTL` (5 s) per instance
    /// (reading entry headers, not catalogs), as is and gzipped (`status`).
    pub async fn status(&self) -> Precompressed {
        status::cached(self).await
    }

    /// Zero the shared counters, every instance's (`status`).
    pub async fn reset_metrics(&self) -> Result<(), StoreError> {
        status::reset_metrics(self).await
    }

    /// The last stored warm run record (`warm`).
    pub async fn last_run(&self) -> Option<RunRecord> {
        warm::last_run(self).await
    }
}

/// One request's scope: the process's [`App`], and where the work the request
/// leaves behind runs (a revalidation, a merged rebuild; `waitUntil` on Vercel, so
/// the platform keeps the function alive for it). Cheap to clone: the sources a
/// request's reads fill keys with carry it, so nothing below takes a spawner beside
/// the app.
#[derive(Clone)]
pub struct RequestContext {
    pub app: Arc<App>,
    pub spawner: Arc<dyn Spawner>,
    /// The dev server saw this request come directly from loopback and allows the
    /// local cron. Only the dev server sets it: a function binary listens on loopback
    /// even when deployed (the platform's proxy connects from there), so for it
    /// "loopback" proves nothing.
    pub local_loopback: bool,
}

impl RequestContext {
    pub fn new(app: Arc<App>, spawner: Arc<dyn Spawner>) -> Self {
        RequestContext {
            app,
            spawner,
            local_loopback: false,
        }
    }

    /// The SWR read of one gateway's catalog (`catalog`).
    pub async fn read_gateway(&self, gateway: &Gateway) -> Result<Lookup, CacheError> {
        catalog::read_gateway(self, gateway).await
    }

    /// The SWR read of the merged catalog (`catalog`).
    pub async fn read_all(&self) -> Result<Lookup, CacheError> {
        catalog::read_all(self).await
    }

    /// Refetch one gateway now, keeping the old value on failure; schedules no
    /// merged rebuild (a warm rebuilds once at its end) (`catalog`).
    pub async fn refresh_gateway(&self, gateway: &Gateway) -> Result<Arc<Entry>, CacheError> {
        catalog::refresh_gateway(self, gateway).await
    }

    /// Rebuild the merged view from what is stored per gateway, no upstream call
    /// (`catalog`).
    pub async fn rebuild_all(&self) -> Result<Arc<Entry>, CacheError> {
        catalog::rebuild_all(self).await
    }

    /// Warm `gateways` (all configured ones when `None`): refetch each now, rebuild
    /// the merged view, record the run (`warm`).
    pub async fn warm(&self, gateways: Option<Vec<Gateway>>, trigger: Trigger) -> Result<RunRecord, WarmError> {
        warm::run(self, gateways, false, trigger).await
    }

    /// [`RequestContext::warm`], of the gateways whose fresh window ends within
    /// `REFRESH_DUE_HORIZON_SECONDS` when `due_only` (the others are in the record as
    /// `not_due`, with when they will be) (`warm`, `schedule`).
    pub async fn warm_scoped(
        &self,
        gateways: Option<Vec<Gateway>>,
        due_only: bool,
        trigger: Trigger,
    ) -> Result<RunRecord, WarmError> {
        warm::run(self, gateways, due_only, trigger).await
    }

    /// A page of the models page: the read behind it and its validator; its HTML on
    /// demand (`page`).
    pub(crate) async fn models_page(&self, ask: page::PageAsk) -> Result<page::PageView, CacheError> {
        page::view(self, ask).await
    }
}

/// `models:all` for the built-in gateway set, `models:all:<hash>` for any other.
fn all_key_for(registry: &Registry) -> String {
    let mut ids: Vec<&str> = registry.all().iter().map(|g| g.id.as_str()).collect();
    ids.sort_unstable();
    let mut defaults: Vec<&str> = crate::gateways::DEFAULT_GATEWAYS.iter().map(|g| g.id).collect();
    defaults.sort_unstable();
    if ids == defaults {
        return keys::ALL.to_string();
    }
    let hash = xxhash_rust::xxh3::xxh3_64(ids.join(",").as_bytes());
    crate::keys::merged(hash as u32)
}
