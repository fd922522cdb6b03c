//! The model catalog on top of the SWR cache: one key per gateway, one for the
//! merged view, whatever the query string (lesson 11).
//!
//! ```text
//!   models:<gateway>  ◄── GatewaySource: fetch pages → normalise → {"data":[...]}
//!   models:all        ◄── MergedSource: gateway entries → dedup/merge → {"data":[...]}
//! ```
//!
//! The merged view is stored pre-serialized like any entry, so serving it never
//! merges or parses per request. It follows gateway updates: a successful
//! background revalidation of a gateway schedules one rebuild from what is cached
//! (coalesced, so 21 gateways revalidating together rebuild it once or twice).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::entry::{Entry, EntryMeta};
use crate::gateways::merge::merge_bodies;
use crate::gateways::normalize::normalize;
use crate::gateways::{Fetcher, Gateway, Registry};
use crate::spawn::{BoxFuture, Spawner, boxed};
use crate::store::{Store, StoreError};
use crate::swr::{Cache, CacheError, Lookup, Payload, Source, SwrSettings};
use crate::ttl::TtlPolicy;

pub const ALL_KEY: &str = "models:all";

pub fn gateway_key(id: &str) -> String {
    format!("models:{id}")
}

/// A new catalog smaller than 1/`COLLAPSE_FACTOR` of a previous one of at least
/// `COLLAPSE_MIN_PREVIOUS` models is rejected as a collapse (lesson 5).
const COLLAPSE_FACTOR: u32 = 10;
const COLLAPSE_MIN_PREVIOUS: u32 = 50;
/// Delay that coalesces merged-view rebuilds after gateway revalidations.
const REBUILD_COALESCE: Duration = Duration::from_millis(250);

/// Everything a route handler needs, created once per process.
pub struct Catalog {
    pub config: Config,
    pub cache: Arc<Cache>,
    pub registry: Registry,
    pub fetcher: Fetcher,
    rebuild_scheduled: AtomicBool,
}

impl Catalog {
    pub fn new(config: Config) -> Result<Arc<Self>, StoreError> {
        let store = Store::from_config(&config)?;
        Ok(Self::with_store(config, store))
    }

    pub fn with_store(config: Config, store: Store) -> Arc<Self> {
        let settings = SwrSettings {
            revalidate_retry: config.revalidate_retry,
            miss_wait: config.miss_wait,
            local_ttl: config.local_cache_ttl,
            metrics_flush_interval: config.metrics_flush_interval,
        };
        Arc::new(Catalog {
            cache: Cache::new(store, settings),
            registry: Registry::from_config(&config),
            fetcher: Fetcher::new(&config),
            config,
            rebuild_scheduled: AtomicBool::new(false),
        })
    }

    pub fn store(&self) -> &Store {
        self.cache.store()
    }

    /// Push this instance's pending counters to the store now (shutdown, status).
    pub async fn flush_metrics(&self) {
        self.cache.metrics().flush(self.store()).await;
    }

    /// The SWR read of one gateway's catalog.
    pub async fn read_gateway(
        self: &Arc<Self>,
        gateway: &Gateway,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Lookup, CacheError> {
        let source = Arc::new(GatewaySource {
            catalog: self.clone(),
            gateway: gateway.clone(),
        });
        self.cache.read(&gateway_key(&gateway.id), source, spawner).await
    }

    /// The SWR read of the merged catalog.
    pub async fn read_all(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Result<Lookup, CacheError> {
        let source = Arc::new(MergedSource {
            catalog: self.clone(),
            read_through: true,
        });
        self.cache.read(ALL_KEY, source, spawner).await
    }

    /// Refetch one gateway now (warming), keeping the old value on failure.
    pub async fn refresh_gateway(
        self: &Arc<Self>,
        gateway: &Gateway,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Arc<Entry>, CacheError> {
        let source = Arc::new(GatewaySource {
            catalog: self.clone(),
            gateway: gateway.clone(),
        });
        self.cache.refresh(&gateway_key(&gateway.id), source, spawner).await
    }

    /// Rebuild the merged view from what is cached per gateway (no upstream calls).
    pub async fn rebuild_all(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Result<Arc<Entry>, CacheError> {
        let source = Arc::new(MergedSource {
            catalog: self.clone(),
            read_through: false,
        });
        self.cache.refresh(ALL_KEY, source, spawner).await
    }

    /// Rebuild the merged view soon; calls within the coalescing window share one rebuild.
    fn schedule_rebuild(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        if self.rebuild_scheduled.swap(true, Ordering::SeqCst) {
            return None;
        }
        let catalog = self.clone();
        Some(boxed(async move {
            tokio::time::sleep(REBUILD_COALESCE).await;
            catalog.rebuild_scheduled.store(false, Ordering::SeqCst);
            if let Err(e) = catalog.rebuild_all(spawner).await {
                tracing::warn!("[Cache SWR] Rebuilding the merged catalog failed: {e}");
            }
        }))
    }

    fn ttl(&self) -> TtlPolicy {
        self.config.models_ttl
    }
}

/// Rejects empty catalogs and collapses (0 or a handful where there were hundreds).
fn validate_catalog(new: &Payload, previous: Option<&EntryMeta>) -> Result<(), String> {
    if new.item_count == 0 {
        return Err("0 models".into());
    }
    if let Some(prev) = previous
        && prev.item_count >= COLLAPSE_MIN_PREVIOUS
        && new.item_count.saturating_mul(COLLAPSE_FACTOR) < prev.item_count
    {
        return Err(format!(
            "catalog collapsed from {} to {} models",
            prev.item_count, new.item_count
        ));
    }
    Ok(())
}

/// `{"data":[...],"gateway":"<id>","total":N}`: the body the models route serves
/// as is. `parts` are comma-separated JSON objects (empty parts are skipped).
fn catalog_json(gateway: &str, parts: &[&[u8]], total: usize, extra: Option<(&str, Value)>) -> Bytes {
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 128);
    body.extend_from_slice(b"{\"data\":[");
    let mut first = true;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if !first {
            body.push(b',');
        }
        body.extend_from_slice(part);
        first = false;
    }
    body.extend_from_slice(b"],\"gateway\":");
    serde_json::to_writer(&mut body, gateway).expect("strings serialize");
    body.extend_from_slice(format!(",\"total\":{total}").as_bytes());
    if let Some((k, v)) = extra {
        body.extend_from_slice(b",");
        serde_json::to_writer(&mut body, k).expect("strings serialize");
        body.extend_from_slice(b":");
        serde_json::to_writer(&mut body, &v).expect("values serialize");
    }
    body.push(b'}');
    Bytes::from(body)
}

/// Normalise and serialize one page of models: comma-separated objects and a count.
fn normalize_page(gw: &Gateway, models: Vec<Map<String, Value>>) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(models.len() * 900);
    let mut n = 0;
    for m in models {
        if let Some(m) = normalize(gw, m) {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &m).expect("maps serialize");
            n += 1;
        }
    }
    (out, n)
}

/// One gateway's catalog from the catalog API.
pub struct GatewaySource {
    catalog: Arc<Catalog>,
    gateway: Gateway,
}

impl Source for GatewaySource {
    fn category(&self) -> &'static str {
        "models"
    }

    fn ttl(&self) -> TtlPolicy {
        self.catalog.ttl()
    }

    fn deadline(&self) -> Duration {
        // The fetcher enforces the gateway deadline itself; this margin covers
        // normalisation and serialization of a large catalog.
        self.gateway.deadline + Duration::from_secs(2)
    }

    fn fetch(self: Arc<Self>, _cache: Arc<Cache>, _spawner: Arc<dyn Spawner>) -> BoxFuture<Result<Payload, String>> {
        let span = tracing::info_span!(
            "gateway.fetch",
            gateway = %self.gateway.id,
            models = tracing::field::Empty,
            bytes = tracing::field::Empty
        );
        let record = span.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let started = std::time::Instant::now();
                let gw = self.gateway.clone();
                let pages = self
                    .catalog
                    .fetcher
                    .fetch_pages(&self.gateway, Arc::new(move |models| normalize_page(&gw, models)))
                    .await
                    .map_err(|e| e.to_string())?;
                let total = pages.iter().map(|(_, n)| n).sum::<usize>();
                let parts: Vec<&[u8]> = pages.iter().map(|(p, _)| p.as_slice()).collect();
                let payload = Payload {
                    json: catalog_json(&self.gateway.id, &parts, total, None),
                    item_count: total as u32,
                };
                drop(parts);
                drop(pages);
                tracing::info!(
                    "[Cache Warming] Fetched {}: {} models, {} bytes in {} ms",
                    self.gateway.id,
                    payload.item_count,
                    payload.json.len(),
                    started.elapsed().as_millis()
                );
                record.record("models", payload.item_count);
                record.record("bytes", payload.json.len());
                Ok(payload)
            },
            span,
        ))
    }

    fn validate(&self, new: &Payload, previous: Option<&EntryMeta>) -> Result<(), String> {
        validate_catalog(new, previous).map_err(|e| format!("{}: {e}", self.gateway.id))
    }

    fn after_revalidation(self: Arc<Self>, _cache: Arc<Cache>, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        self.catalog.schedule_rebuild(spawner)
    }
}

/// The merged catalog. `read_through` reads gateways through SWR (a cold `all`
/// fills its gateways); otherwise it merges only what is already cached.
pub struct MergedSource {
    catalog: Arc<Catalog>,
    read_through: bool,
}

impl Source for MergedSource {
    fn category(&self) -> &'static str {
        "models"
    }

    fn ttl(&self) -> TtlPolicy {
        self.catalog.ttl()
    }

    fn deadline(&self) -> Duration {
        self.catalog.registry.max_deadline() + Duration::from_secs(5)
    }

    fn fetch(self: Arc<Self>, _cache: Arc<Cache>, spawner: Arc<dyn Spawner>) -> BoxFuture<Result<Payload, String>> {
        Box::pin(async move {
            let catalog = &self.catalog;
            let read_through = self.read_through;
            let reads = catalog.registry.all().iter().map(|gw| {
                let spawner = spawner.clone();
                async move {
                    let entry = if read_through {
                        match catalog.read_gateway(gw, spawner).await {
                            Ok(l) => Some(l.entry),
                            Err(e) => {
                                tracing::warn!("[Cache SWR] Merged catalog without {}: {e}", gw.id);
                                None
                            }
                        }
                    } else {
                        catalog.cache.peek(&gateway_key(&gw.id)).await
                    };
                    entry.map(|e| (gw.id.clone(), e))
                }
            });
            let entries: Vec<(String, Arc<Entry>)> = futures_util::future::join_all(reads)
                .await
                .into_iter()
                .flatten()
                .collect();
            if entries.is_empty() {
                return Err("no gateway has cached data to merge".to_string());
            }
            tokio::task::spawn_blocking(move || merge_entries(&entries))
                .await
                .map_err(|e| format!("merge failed: {e}"))?
        })
    }

    fn validate(&self, new: &Payload, previous: Option<&EntryMeta>) -> Result<(), String> {
        validate_catalog(new, previous).map_err(|e| format!("all: {e}"))
    }
}

fn merge_entries(entries: &[(String, Arc<Entry>)]) -> Result<Payload, String> {
    let mut bodies = Vec::with_capacity(entries.len());
    let mut included = Vec::with_capacity(entries.len());
    for (id, entry) in entries {
        // Uncached: the merge reads each catalog once; keeping every identity body
        // in memory afterwards would only raise the resident set.
        match entry.identity_uncached() {
            Ok(json) => {
                bodies.push(json);
                included.push(Value::String(id.clone()));
            }
            Err(e) => tracing::warn!("[Cache SWR] Skipping unreadable cached catalog of {id}: {e}"),
        }
    }
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_ref()).collect();
    let (items, count) = merge_bodies(&refs);
    drop(bodies);
    Ok(Payload {
        json: catalog_json("all", &[&items], count, Some(("gateways", Value::Array(included)))),
        item_count: count as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: u32) -> Payload {
        Payload {
            json: Bytes::new(),
            item_count: n,
        }
    }

    fn meta(n: u32) -> EntryMeta {
        EntryMeta {
            fetched_at_ms: 0,
            fresh_until_ms: 0,
            stale_until_ms: 0,
            item_count: n,
            etag: String::new(),
        }
    }

    #[test]
    fn collapse_rule() {
        assert!(validate_catalog(&payload(0), None).is_err());
        assert!(validate_catalog(&payload(1), None).is_ok());
        assert!(validate_catalog(&payload(5), Some(&meta(300))).is_err());
        assert!(validate_catalog(&payload(30), Some(&meta(300))).is_ok());
        assert!(
            validate_catalog(&payload(2), Some(&meta(40))).is_ok(),
            "small catalogs may shrink"
        );
    }

    #[test]
    fn body_shape() {
        let b = catalog_json("groq", &[br#"{"id":"a"}"#, b"", br#"{"id":"b"}"#], 2, None);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"data":[{"id":"a"},{"id":"b"}],"gateway":"groq","total":2})
        );
        let empty: Value = serde_json::from_slice(&catalog_json("x", &[], 0, None)).unwrap();
        assert_eq!(empty["data"], serde_json::json!([]));
    }
}
