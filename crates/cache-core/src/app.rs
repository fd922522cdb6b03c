//! The application context: what every route and background task shares in a
//! process: configuration, the store and the SWR cache on it, the gateway registry
//! and fetcher, the search indexes, the CORS policy. Built once per process (see
//! [`crate::global`]); its operations live beside their concerns (catalog reads in
//! [`crate::catalog`], warming in [`crate::warm`], status in [`crate::status`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Mutex as AsyncMutex;

use crate::config::Config;
use crate::gateways::{Fetcher, Registry};
use crate::keys;
use crate::store::{Store, StoreError};
use crate::swr::{Cache, SwrSettings};
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
