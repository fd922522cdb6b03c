//! The model catalog on top of the SWR cache: one key per gateway, one for the
//! merged view, whatever the query string (docs/design.md, failure 11).
//!
//! ```text
//!   models:<gateway>  ◄── GatewaySource: fetch pages → normalise → {"data":[...]}
//!   models:all        ◄── MergedSource: gateway entries → dedup/merge → {"data":[...]}
//! ```
//!
//! The merged view is stored pre-serialized like any entry, so serving it never
//! merges or parses per request. It follows gateway updates: every stored gateway
//! value (a miss, a revalidation, a refresh outside a warm) schedules one rebuild from
//! what is cached, coalesced, so 21 gateways revalidating together rebuild it once or
//! twice; a rebuild requested while one runs runs again after it.
//!
//! The merged key names the gateway set it was built from (`models:all` for the
//! built-in set, `models:all:<hash>` for a custom `GATEWAYS`), so two deployments
//! with different sets can share one Redis without serving each other's view.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::app::App;
use crate::contract::{Page, PricingUnit};
use crate::entry::{Entry, EntryMeta};
use crate::gateways::Gateway;
use crate::gateways::merge::merge_bodies;
use crate::gateways::normalize::normalize;
use crate::keys;
use crate::spawn::{BoxFuture, Spawner, boxed};
use crate::swr::{CacheError, Lookup, Payload, Source, SourceError};
use crate::ttl::TtlPolicy;

/// A new catalog smaller than 1/`COLLAPSE_FACTOR` of a previous one of at least
/// `COLLAPSE_MIN_PREVIOUS` models is rejected as a collapse (docs/design.md, failure 5).
const COLLAPSE_FACTOR: u32 = 10;
const COLLAPSE_MIN_PREVIOUS: u32 = 50;
/// Delay that coalesces merged-view rebuilds after gateway revalidations.
const REBUILD_COALESCE: Duration = Duration::from_millis(250);
/// Fresh window of a merged view that lacks some gateways: it is rebuilt (and the
/// missing ones fetched again) soon, not after hours.
const INCOMPLETE_MERGE_FRESH: Duration = Duration::from_secs(60);

impl App {
    /// The SWR read of one gateway's catalog.
    pub async fn read_gateway(
        self: &Arc<Self>,
        gateway: &Gateway,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Lookup, CacheError> {
        let source = Arc::new(GatewaySource {
            catalog: self.clone(),
            gateway: gateway.clone(),
            rebuild_after_write: true,
        });
        self.cache.read(&keys::gateway(&gateway.id), source, spawner).await
    }

    /// The SWR read of the merged catalog.
    pub async fn read_all(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Result<Lookup, CacheError> {
        let source = Arc::new(MergedSource {
            catalog: self.clone(),
            read_through: true,
        });
        self.cache.read(&self.all_key, source, spawner).await
    }

    /// Refetch one gateway now (warming), keeping the old value on failure. The warm
    /// rebuilds the merged view once at its end, so these writes schedule none.
    pub async fn refresh_gateway(
        self: &Arc<Self>,
        gateway: &Gateway,
        spawner: Arc<dyn Spawner>,
    ) -> Result<Arc<Entry>, CacheError> {
        let source = Arc::new(GatewaySource {
            catalog: self.clone(),
            gateway: gateway.clone(),
            rebuild_after_write: false,
        });
        self.cache.refresh(&keys::gateway(&gateway.id), source, spawner).await
    }

    /// Rebuild the merged view from what is cached per gateway (no upstream calls).
    /// One at a time in this process; across instances the store lock orders them,
    /// and a rebuild never adopts another's result (it may predate our data).
    pub async fn rebuild_all(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Result<Arc<Entry>, CacheError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let source = Arc::new(MergedSource {
            catalog: self.clone(),
            read_through: false,
        });
        self.cache.refresh(&self.all_key, source, spawner).await
    }

    /// No gateway changed: move the merged view's clock instead of rebuilding it, if
    /// it is stored and complete (an incomplete one has a short fresh window and is
    /// rebuilt, so that missing gateways get another chance).
    pub async fn retime_complete_merge(self: &Arc<Self>) -> Option<Arc<Entry>> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let merged = self.cache.peek_meta(&self.all_key).await?;
        let fresh_window = merged.fresh_until_ms.saturating_sub(merged.fetched_at_ms);
        if fresh_window <= INCOMPLETE_MERGE_FRESH.as_millis() as u64 {
            return None;
        }
        self.cache.retime_stored(&self.all_key, self.ttl()).await
    }

    /// Rebuild the merged view soon. Requests within the coalescing window share one
    /// rebuild; a request while a rebuild runs queues the next one, which starts when
    /// the running one is done (so the newest gateway data is always merged).
    fn schedule_rebuild(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        if self.rebuild_scheduled.swap(true, Ordering::SeqCst) {
            return None;
        }
        let catalog = self.clone();
        Some(boxed(async move {
            tokio::time::sleep(REBUILD_COALESCE).await;
            let _one_at_a_time = catalog.rebuilding.lock().await;
            // From here on, a new request schedules another rebuild after this one.
            catalog.rebuild_scheduled.store(false, Ordering::SeqCst);
            let source = Arc::new(MergedSource {
                catalog: catalog.clone(),
                read_through: false,
            });
            if let Err(e) = catalog.cache.refresh(&catalog.all_key, source, spawner).await {
                tracing::warn!("[Cache SWR] Rebuilding the merged catalog failed: {e}");
            }
        }))
    }
}

/// Rejects empty catalogs and collapses (0 or a handful where there were hundreds),
/// judged against the key's high-water mark, not only the last value: three warms
/// of 10 % each must not walk a catalog from 1,500 down to 1.
fn validate_catalog(new: &Payload, previous: Option<&EntryMeta>) -> Result<(), String> {
    if new.item_count == 0 {
        return Err("0 models".into());
    }
    if let Some(prev) = previous {
        let mark = prev.item_count.max(prev.high_water);
        if mark >= COLLAPSE_MIN_PREVIOUS && new.item_count.saturating_mul(COLLAPSE_FACTOR) < mark {
            return Err(format!(
                "catalog collapsed to {} models (now {}, at most {})",
                new.item_count, prev.item_count, mark
            ));
        }
    }
    Ok(())
}

/// `{"data":[...],"gateway":"<id>","pricing_unit":..,"total":N,<page fields>,..}`:
/// the body the models route serves as is ([`crate::contract::ModelsResponse`]). `parts` are comma-separated JSON objects (empty parts are skipped).
pub(crate) fn catalog_json(gateway: &str, parts: &[&[u8]], total: usize, extra: &[(&str, Value)]) -> Bytes {
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
    body.extend_from_slice(b",\"pricing_unit\":");
    serde_json::to_writer(&mut body, &PricingUnit::UsdPerToken).expect("enums serialize");
    // The whole list is one page.
    Page::of(total, 0, None).write_members(&mut body);
    for (k, v) in extra {
        body.extend_from_slice(b",");
        serde_json::to_writer(&mut body, k).expect("strings serialize");
        body.extend_from_slice(b":");
        serde_json::to_writer(&mut body, v).expect("values serialize");
    }
    body.push(b'}');
    Bytes::from(body)
}

/// Normalise and serialize one page of models: comma-separated objects and a count.
pub(crate) fn normalize_page(gw: &Gateway, models: Vec<Map<String, Value>>) -> (Vec<u8>, usize) {
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
    catalog: Arc<App>,
    gateway: Gateway,
    /// Schedule a merged rebuild after a stored value (not during a warm, which
    /// rebuilds once at its end).
    rebuild_after_write: bool,
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

    fn fetch(self: Arc<Self>, _spawner: Arc<dyn Spawner>) -> BoxFuture<Result<Payload, SourceError>> {
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
                    .await?;
                let total = pages.iter().map(|(_, n)| n).sum::<usize>();
                let parts: Vec<&[u8]> = pages.iter().map(|(p, _)| p.as_slice()).collect();
                let payload = Payload::new(catalog_json(&self.gateway.id, &parts, total, &[]), total as u32);
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

    fn after_write(self: Arc<Self>, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        if !self.rebuild_after_write {
            return None;
        }
        self.catalog.schedule_rebuild(spawner)
    }
}

/// The merged catalog, built from a complete set: every configured gateway
/// contributes its stored entry, whatever its state (fresh, stale, or kept past its
/// stale window); a gateway with no entry is fetched through the cache. Only a
/// gateway with no data at all is left out, named in `missing_gateways`, and the
/// merged entry is then fresh for `INCOMPLETE_MERGE_FRESH` only. `read_through`
/// (a read of `all`) also reads the stored ones through SWR, so stale gateways are
/// revalidated.
pub struct MergedSource {
    catalog: Arc<App>,
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

    fn fetch(self: Arc<Self>, spawner: Arc<dyn Spawner>) -> BoxFuture<Result<Payload, SourceError>> {
        Box::pin(async move {
            let catalog = &self.catalog;
            let read_through = self.read_through;
            let reads = catalog.registry.all().iter().map(|gw| {
                let spawner = spawner.clone();
                async move {
                    let stored = if read_through {
                        None
                    } else {
                        catalog.cache.peek(&keys::gateway(&gw.id)).await
                    };
                    let entry = match stored {
                        Some(e) => Ok(e),
                        None => catalog.read_gateway(gw, spawner).await.map(|l| l.entry),
                    };
                    (gw.id.clone(), entry)
                }
            });
            let mut entries: Vec<(String, Arc<Entry>)> = Vec::new();
            let mut missing: Vec<String> = Vec::new();
            for (id, entry) in futures_util::future::join_all(reads).await {
                match entry {
                    Ok(e) => entries.push((id, e)),
                    Err(e) => {
                        tracing::warn!("[Cache SWR] Merged catalog without {id}: no data ({e})");
                        missing.push(id);
                    }
                }
            }
            if entries.is_empty() {
                return Err(SourceError::Unavailable(
                    "no gateway has cached data to merge".to_string(),
                ));
            }
            tokio::task::spawn_blocking(move || merge_entries(&entries, missing))
                .await
                .map_err(|e| SourceError::Unavailable(format!("merge failed: {e}")))
        })
    }

    fn validate(&self, new: &Payload, previous: Option<&EntryMeta>) -> Result<(), String> {
        validate_catalog(new, previous).map_err(|e| format!("all: {e}"))
    }

    /// A merge that could not be built says nothing about any upstream: never
    /// throttle `all` reads for it.
    fn throttles_failures(&self) -> bool {
        false
    }
}

pub(crate) fn merge_entries(entries: &[(String, Arc<Entry>)], mut missing: Vec<String>) -> Payload {
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
            Err(e) => {
                tracing::warn!("[Cache SWR] Skipping unreadable cached catalog of {id}: {e}");
                missing.push(id.clone());
            }
        }
    }
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_ref()).collect();
    let (items, count) = merge_bodies(&refs);
    drop(bodies);
    let incomplete = !missing.is_empty();
    let missing = Value::Array(missing.into_iter().map(Value::String).collect());
    let mut payload = Payload::new(
        catalog_json(
            "all",
            &[&items],
            count,
            &[("gateways", Value::Array(included)), ("missing_gateways", missing)],
        ),
        count as u32,
    );
    if incomplete {
        payload.fresh_for = Some(INCOMPLETE_MERGE_FRESH);
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: u32) -> Payload {
        Payload::new(Bytes::new(), n)
    }

    fn meta(n: u32) -> EntryMeta {
        EntryMeta {
            fetched_at_ms: 0,
            fresh_until_ms: 0,
            stale_until_ms: 0,
            item_count: n,
            high_water: n,
            etag: String::new(),
        }
    }

    #[test]
    fn collapse_is_judged_against_the_high_water_mark() {
        let mut prev = meta(150);
        prev.high_water = 1500;
        assert!(
            validate_catalog(&payload(15), Some(&prev)).is_err(),
            "no ratchet 1500 -> 150 -> 15"
        );
        assert!(validate_catalog(&payload(150), Some(&prev)).is_ok());
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
        let b = catalog_json("groq", &[br#"{"id":"a"}"#, b"", br#"{"id":"b"}"#], 2, &[]);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"data":[{"id":"a"},{"id":"b"}],"gateway":"groq","pricing_unit":"usd_per_token",
                "total":2,"returned":2,"offset":0,"limit":null,"has_more":false,"next_offset":null})
        );
        let empty: Value = serde_json::from_slice(&catalog_json("x", &[], 0, &[])).unwrap();
        assert_eq!(empty["data"], serde_json::json!([]));
    }
}
