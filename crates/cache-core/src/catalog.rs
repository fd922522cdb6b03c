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

use std::collections::HashMap;
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
use crate::swr::{CacheError, Lookup, Payload, Purpose, Source, SourceError};
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
            app: self.clone(),
            gateway: gateway.clone(),
        });
        self.cache.read(&keys::gateway(&gateway.id), source, spawner).await
    }

    /// The SWR read of the merged catalog.
    pub async fn read_all(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Result<Lookup, CacheError> {
        let source = Arc::new(MergedSource { app: self.clone() });
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
            app: self.clone(),
            gateway: gateway.clone(),
        });
        self.cache
            .refresh(&keys::gateway(&gateway.id), source, spawner, Purpose::Warm)
            .await
    }

    /// Rebuild the merged view from what is cached per gateway (no upstream calls).
    /// One at a time in this process; across instances the store lock orders them,
    /// and a rebuild never adopts another's result (it may predate our data).
    pub async fn rebuild_all(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Result<Arc<Entry>, CacheError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let source = Arc::new(MergedSource { app: self.clone() });
        self.cache
            .refresh(&self.all_key, source, spawner, Purpose::Rebuild)
            .await
    }

    /// No gateway changed in a warm: move the merged view's clock instead of
    /// rebuilding it, if it is stored, complete, and built from exactly the gateway
    /// entries stored now. The merged view is the merge of what is *stored*: when an
    /// earlier rebuild was lost (its instance killed, or the store refused the write),
    /// the gateway entries moved on without it, their fingerprint no longer matches,
    /// and the warm rebuilds. An incomplete view (missing or carried gateways) has a
    /// short fresh window and is rebuilt too, so that they get another chance.
    pub async fn retime_complete_merge(self: &Arc<Self>) -> Option<Arc<Entry>> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let merged = self.cache.peek_meta(&self.all_key).await?;
        let clock = merged.clock;
        if clock.fresh_until_ms.saturating_sub(clock.fetched_at_ms) <= INCOMPLETE_MERGE_FRESH.as_millis() as u64 {
            return None;
        }
        let stored = self.stored_sources().await;
        if merged.sources != stored {
            tracing::info!(
                "[Cache Warming] The merged view was built from other gateway data than is stored: rebuilding it"
            );
            return None;
        }
        self.cache.retime_stored(&self.all_key, self.ttl()).await
    }

    /// The fingerprint of the gateway entries stored now (their headers only).
    async fn stored_sources(&self) -> u64 {
        let metas = futures_util::future::join_all(
            self.registry
                .all()
                .iter()
                .map(|g| async move { self.cache.peek_meta_in_store(&keys::gateway(&g.id)).await }),
        )
        .await;
        sources_fingerprint(
            self.registry
                .all()
                .iter()
                .zip(&metas)
                .map(|(g, m)| (g.id.as_str(), m.as_ref().map(|m| m.etag.as_str()))),
        )
    }

    /// Rebuild the merged view soon. Requests within the coalescing window share one
    /// rebuild; a request while a rebuild runs queues the next one, which starts when
    /// the running one is done (so the newest gateway data is always merged).
    fn schedule_rebuild(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        if self.rebuild_scheduled.swap(true, Ordering::SeqCst) {
            return None;
        }
        let app = self.clone();
        Some(boxed(async move {
            tokio::time::sleep(REBUILD_COALESCE).await;
            let _one_at_a_time = app.rebuilding.lock().await;
            // From here on, a new request schedules another rebuild after this one.
            app.rebuild_scheduled.store(false, Ordering::SeqCst);
            let source = Arc::new(MergedSource { app: app.clone() });
            if let Err(e) = app.cache.refresh(&app.all_key, source, spawner, Purpose::Rebuild).await {
                tracing::warn!("[Cache SWR] Rebuilding the merged catalog failed: {e}");
            }
        }))
    }
}

/// What the merged view was built from: each configured gateway's stored entry ETag,
/// or nothing (`None`: no entry of its own), in the configured order.
fn sources_fingerprint<'a>(inputs: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (id, etag) in inputs {
        h.update(id.as_bytes());
        h.update(&[0]);
        h.update(etag.unwrap_or("-").as_bytes());
        h.update(&[0]);
    }
    h.digest()
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
pub(crate) struct GatewaySource {
    app: Arc<App>,
    gateway: Gateway,
}

impl Source for GatewaySource {
    fn category(&self) -> &'static str {
        "models"
    }

    fn ttl(&self) -> TtlPolicy {
        self.app.ttl()
    }

    fn deadline(&self) -> Duration {
        // The fetcher enforces the gateway deadline itself; this margin covers
        // normalisation and serialization of a large catalog.
        self.gateway.deadline + Duration::from_secs(2)
    }

    fn fetch(
        self: Arc<Self>,
        _purpose: Purpose,
        _spawner: Arc<dyn Spawner>,
    ) -> BoxFuture<Result<Payload, SourceError>> {
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
                    .app
                    .fetcher
                    .fetch_pages(&self.gateway, Arc::new(move |models| normalize_page(&gw, models)))
                    .await?;
                let total = pages.iter().map(|(_, n)| n).sum::<usize>();
                let parts: Vec<&[u8]> = pages.iter().map(|(p, _)| p.as_slice()).collect();
                let payload = Payload::new(catalog_json(&self.gateway.id, &parts, total, &[]), total as u32);
                drop(parts);
                drop(pages);
                tracing::info!(
                    "[Cache Fetch] Fetched {}: {} models, {} bytes in {} ms",
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

    /// A gateway stored outside a warm (a miss, a revalidation) schedules a merged
    /// rebuild; a warm rebuilds once at its end.
    fn after_write(self: Arc<Self>, purpose: Purpose, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        match purpose {
            Purpose::Warm | Purpose::Rebuild => None,
            Purpose::Read | Purpose::Revalidate => self.app.schedule_rebuild(spawner),
        }
    }
}

/// The merged catalog, built from a complete set: every configured gateway
/// contributes its stored entry, whatever its state (fresh, stale, or kept past its
/// stale window); a gateway with no entry is fetched through the cache, and if that
/// fails, this instance's own copy is used, else its listings are carried over from
/// the previous merged view ("never less than we had": an evicted key and a failing
/// upstream must not drop 1,500 models). Only a gateway with no data anywhere is
/// left out, named in `missing_gateways`; while any is missing or carried, the merged
/// entry is fresh for `INCOMPLETE_MERGE_FRESH` only. A read of `all`
/// ([`Purpose::Read`]) reads the gateways through SWR, so stale ones revalidate.
pub(crate) struct MergedSource {
    app: Arc<App>,
}

/// Where a gateway's part of the merged view comes from.
pub(crate) enum Input {
    /// Its entry in the store.
    Stored(Arc<Entry>),
    /// Its entry is gone from the store; this instance still holds a copy.
    Held(Arc<Entry>),
    /// Nothing of its own anywhere: carried over from the previous merged view, or missing.
    Absent,
}

impl Source for MergedSource {
    fn category(&self) -> &'static str {
        "models"
    }

    fn ttl(&self) -> TtlPolicy {
        self.app.ttl()
    }

    fn deadline(&self) -> Duration {
        self.app.registry.max_deadline() + Duration::from_secs(5)
    }

    fn fetch(self: Arc<Self>, purpose: Purpose, spawner: Arc<dyn Spawner>) -> BoxFuture<Result<Payload, SourceError>> {
        Box::pin(async move {
            let app = &self.app;
            let reads = app.registry.all().iter().map(|gw| {
                let spawner = spawner.clone();
                async move {
                    let key = keys::gateway(&gw.id);
                    // Taken before reading: a read that finds the key gone forgets it.
                    let held = app.cache.held(&key);
                    let stored = match purpose {
                        Purpose::Read => None,
                        _ => app.cache.peek(&key).await,
                    };
                    let read = match stored {
                        Some(e) => Ok(e),
                        None => app.read_gateway(gw, spawner).await.map(|l| l.entry),
                    };
                    let input = match (read, held) {
                        (Ok(e), _) => Input::Stored(e),
                        (Err(e), Some(h)) => {
                            tracing::warn!(
                                "[Cache SWR] Merging {} from this instance's copy: its entry is gone and {e}",
                                gw.id
                            );
                            Input::Held(h)
                        }
                        (Err(e), None) => {
                            tracing::warn!("[Cache SWR] No data of {} to merge: {e}", gw.id);
                            Input::Absent
                        }
                    };
                    (gw.id.clone(), input)
                }
            });
            let inputs: Vec<(String, Input)> = futures_util::future::join_all(reads).await;
            let absent = inputs.iter().any(|(_, i)| matches!(i, Input::Absent));
            let previous = match absent {
                true => match app.cache.peek(&app.all_key).await {
                    Some(p) => Some(p),
                    None => app.cache.held(&app.all_key),
                },
                false => None,
            };
            if previous.is_none() && inputs.iter().all(|(_, i)| matches!(i, Input::Absent)) {
                return Err(SourceError::Unavailable(
                    "no gateway has cached data to merge".to_string(),
                ));
            }
            tokio::task::spawn_blocking(move || merge_inputs(&inputs, previous.as_deref()))
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

/// The merged view of `inputs` (in the configured order). An absent gateway's
/// listings are carried over from `previous` (the merged view stored before) when it
/// has them; otherwise the gateway is missing.
pub(crate) fn merge_inputs(inputs: &[(String, Input)], previous: Option<&Entry>) -> Payload {
    let absent: Vec<&str> = inputs
        .iter()
        .filter(|(_, i)| matches!(i, Input::Absent))
        .map(|(id, _)| id.as_str())
        .collect();
    let carried_bodies = match (previous, absent.is_empty()) {
        (Some(p), false) => match p.identity_uncached() {
            Ok(json) => carry_over(&json, &absent),
            Err(e) => {
                tracing::warn!("[Cache SWR] The previous merged view is unreadable ({e}): nothing carried over");
                HashMap::new()
            }
        },
        _ => HashMap::new(),
    };
    let parts = MergeParts::gather(inputs, carried_bodies);
    let refs: Vec<&[u8]> = parts.bodies.iter().map(|b| b.as_ref()).collect();
    let (items, count) = merge_bodies(&refs);
    let incomplete = !parts.missing.is_empty() || !parts.carried.is_empty();
    let mut payload = Payload::new(
        catalog_json(
            "all",
            &[&items],
            count,
            &[
                ("gateways", Value::Array(parts.included)),
                ("missing_gateways", Value::Array(parts.missing)),
                ("carried_gateways", Value::Array(parts.carried)),
            ],
        ),
        count as u32,
    );
    payload.sources = sources_fingerprint(
        inputs
            .iter()
            .zip(&parts.stored_etags)
            .map(|((id, _), etag)| (id.as_str(), etag.as_deref())),
    );
    payload.carried = parts.carried_mask;
    if incomplete {
        payload.fresh_for = Some(INCOMPLETE_MERGE_FRESH);
    }
    payload
}

/// What the merge takes from each input, in the configured order.
struct MergeParts {
    bodies: Vec<Bytes>,
    included: Vec<Value>,
    missing: Vec<Value>,
    carried: Vec<Value>,
    /// One bit per carried gateway, by its place in the configured order.
    carried_mask: u64,
    /// Each input's stored entry ETag (`None`: not from the store).
    stored_etags: Vec<Option<String>>,
}

impl MergeParts {
    fn gather(inputs: &[(String, Input)], mut carried_bodies: HashMap<String, Bytes>) -> MergeParts {
        let mut parts = MergeParts {
            bodies: Vec::with_capacity(inputs.len()),
            included: Vec::new(),
            missing: Vec::new(),
            carried: Vec::new(),
            carried_mask: 0,
            stored_etags: Vec::with_capacity(inputs.len()),
        };
        for (n, (id, input)) in inputs.iter().enumerate() {
            let (body, stored) = match input {
                // Uncached: the merge reads each catalog once; keeping every identity
                // body in memory afterwards would only raise the resident set.
                Input::Stored(e) => (
                    e.identity_uncached().map_err(|e| e.to_string()),
                    Some(e.meta.etag.clone()),
                ),
                Input::Held(e) => (e.identity_uncached().map_err(|e| e.to_string()), None),
                Input::Absent => match carried_bodies.remove(id.as_str()) {
                    Some(body) => {
                        parts.carried.push(Value::String(id.clone()));
                        if n < 64 {
                            parts.carried_mask |= 1 << n;
                        }
                        (Ok(body), None)
                    }
                    None => (Err("no data".to_string()), None),
                },
            };
            parts.stored_etags.push(stored);
            match body {
                Ok(json) => {
                    parts.bodies.push(json);
                    parts.included.push(Value::String(id.clone()));
                }
                Err(e) => {
                    if !matches!(input, Input::Absent) {
                        tracing::warn!("[Cache SWR] Skipping unreadable cached catalog of {id}: {e}");
                    }
                    parts.missing.push(Value::String(id.clone()));
                }
            }
        }
        parts
    }
}

/// Each of the `absent` gateways' listings in a merged view's JSON, as that
/// gateway's own catalog body (`{"data":[...]}`): the records that list it, with
/// `source_gateway(s)`, `gateway_pricing` and `pricing` narrowed to it.
fn carry_over(merged_json: &[u8], absent: &[&str]) -> HashMap<String, Bytes> {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        data: Vec<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Listed {
        source_gateways: Value,
    }
    let Ok(body) = serde_json::from_slice::<Body>(merged_json) else {
        return HashMap::new();
    };
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    for raw in body.data {
        let listed: Listed = serde_json::from_str(raw.get()).unwrap_or_default();
        let Some(gateways) = listed.source_gateways.as_array() else {
            continue;
        };
        for g in absent.iter().filter(|g| gateways.iter().any(|v| v == **g)) {
            let Ok(mut m) = serde_json::from_str::<Map<String, Value>>(raw.get()) else {
                continue;
            };
            let price = m
                .get("gateway_pricing")
                .and_then(|p| p.get(*g))
                .filter(|p| p.is_object())
                .cloned();
            m.insert("source_gateway".into(), Value::String(g.to_string()));
            m.insert(
                "source_gateways".into(),
                Value::Array(vec![Value::String(g.to_string())]),
            );
            let mut own = Map::new();
            if let Some(p) = &price {
                own.insert(g.to_string(), p.clone());
            }
            m.insert("gateway_pricing".into(), Value::Object(own));
            m.insert("pricing".into(), price.unwrap_or(Value::Null));
            let buf = out.entry(g.to_string()).or_insert_with(|| b"{\"data\":[".to_vec());
            if buf.len() > 9 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut *buf, &m).expect("maps serialize");
        }
    }
    out.into_iter()
        .map(|(g, mut buf)| {
            buf.extend_from_slice(b"]}");
            (g, Bytes::from(buf))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: u32) -> Payload {
        Payload::new(Bytes::new(), n)
    }

    fn meta(n: u32) -> EntryMeta {
        EntryMeta {
            clock: crate::entry::Clock::default(),
            item_count: n,
            high_water: n,
            sources: 0,
            carried: 0,
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
