//! The model catalog on top of the SWR cache: one key per gateway, one for the
//! merged view, whatever the query string (docs/design.md, failure 11).
//!
//! ```text
//!   models:<gateway>  ◄── CatalogSource (gateway.rs): fetch pages → normalise → {"data":[...]}
//!   models:all        ◄── CatalogSource (merged.rs): gateway entries → dedup/merge → {"data":[...]}
//! ```
//!
//! The merged view is stored pre-serialized like any entry, so serving it never
//! merges or parses per request. It follows gateway updates: every stored gateway
//! value (a miss, a revalidation, a refresh outside a warm) schedules one rebuild from
//! what is cached, coalesced, so every gateway revalidating together rebuilds it once or
//! twice; a rebuild requested while one runs runs again after it.
//!
//! The merged key names the gateway set it was built from (`models:all` for the
//! built-in set, `models:all:<hash>` for a custom `GATEWAYS`), so two deployments
//! with different sets can share one Redis without serving each other's view.

mod gateway;
mod merged;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

#[cfg(test)]
pub(crate) use gateway::{distinct_records, normalize_page};
#[cfg(test)]
pub(crate) use merged::{Input, merge_inputs};
use merged::{fresh_for_inputs, sources_fingerprint};

use crate::app::{App, RequestContext};
use crate::cadence::Mode;
use crate::clock::now_ms;
use crate::contract::{Page, PricingUnit};
use crate::entry::{Entry, EntryMeta, InputClock};
use crate::gateways::Gateway;
use crate::keys;
use crate::spawn::{BoxFuture, Spawner, boxed};
use crate::swr::{CacheError, Lookup, Payload, Purpose, ScopedFuture, Source, SourceError, Verdict};
use crate::ttl::TtlPolicy;

/// A new catalog under 1/`SUSPECT_FACTOR` of the stored one (of at least
/// `SUSPECT_MIN_MODELS`), or over `SUSPECT_FACTOR` times it (reaching at least
/// `SUSPECT_MIN_MODELS`), is suspect: held back until the upstream confirms it
/// (`swr::guard`; docs/design.md, failure 5).
const SUSPECT_FACTOR: u32 = 10;
const SUSPECT_MIN_MODELS: u32 = 50;
/// Fresh window of a merged view that lacks some gateways: it is rebuilt (and the
/// missing ones fetched again) soon, not after hours.
const INCOMPLETE_MERGE_FRESH: Duration = Duration::from_secs(60);

/// The source of a catalog key, made per request (it carries the request's scope):
/// one gateway's catalog (`gateway.rs`) or the merged view (`merged.rs`).
struct CatalogSource {
    ctx: RequestContext,
    of: Catalog,
    /// A gateway's first-seen dates its last fetch wrote into the models: what
    /// `accepted` records the catalog against (`crate::changes`). `None` for the merged
    /// view, or when they could not be read (then nothing is recorded).
    dates: DatesSlot,
}

/// Where a gateway's fetch leaves the dates it used (a std-like Mutex: held for a swap,
/// never across an await).
type DatesSlot = Arc<parking_lot::Mutex<Option<Arc<crate::changes::Dates>>>>;

enum Catalog {
    Gateway(Gateway),
    Merged,
}

impl CatalogSource {
    fn gateway(ctx: &RequestContext, gateway: &Gateway) -> Arc<Self> {
        let of = Catalog::Gateway(gateway.clone());
        Arc::new(CatalogSource {
            ctx: ctx.clone(),
            of,
            dates: DatesSlot::default(),
        })
    }

    fn merged(ctx: &RequestContext) -> Arc<Self> {
        let of = Catalog::Merged;
        Arc::new(CatalogSource {
            ctx: ctx.clone(),
            of,
            dates: DatesSlot::default(),
        })
    }
}

impl CatalogSource {
    /// Record `payload`, a catalog of `gateway` fit to store, in the change feed, unless
    /// the dates its fetch wrote into it were recorded with it already: the catalog with
    /// its models' `first_seen` as recorded, when that changed it. Its own task, so a
    /// fresh stack: a gateway filled inside the merged view's fill is polled deep, and
    /// the recording's futures (store calls, the blocking diff) overflowed a debug
    /// build's 2 MiB there; the task builds them itself, boxed.
    fn record(&self, gateway: &Gateway, payload: &Payload) -> Option<tokio::task::JoinHandle<Option<Bytes>>> {
        let dates = self.dates.lock().take()?;
        if dates.records(&payload.etag) {
            return None;
        }
        let (store, id, json) = (self.ctx.app.store().clone(), gateway.id.clone(), payload.json.clone());
        let span = tracing::Span::current();
        Some(tokio::spawn(async move {
            let of = id.clone();
            let rebuild: crate::changes::Rebuild = Arc::new(move |parts| catalog_json(&of, parts, parts.len(), &[]));
            let recording = Box::pin(crate::changes::record(store, id, json, dates, rebuild));
            tracing::Instrument::instrument(recording, span).await
        }))
    }
}

impl Source for CatalogSource {
    fn category(&self) -> &'static str {
        "models"
    }

    fn ttl(&self) -> TtlPolicy {
        self.ctx.app.ttl()
    }

    fn spawner(&self) -> Arc<dyn Spawner> {
        self.ctx.spawner.clone()
    }

    fn deadline(&self) -> Duration {
        match &self.of {
            Catalog::Gateway(gateway) => gateway::deadline(gateway),
            Catalog::Merged => merged::deadline(&self.ctx.app),
        }
    }

    fn fetch(self: Arc<Self>, purpose: Purpose) -> BoxFuture<Result<Payload, SourceError>> {
        match &self.of {
            Catalog::Gateway(gateway) => gateway::fetch(self.ctx.clone(), gateway.clone(), self.dates.clone()),
            Catalog::Merged => merged::fetch(self.ctx.clone(), purpose),
        }
    }

    fn validate(&self, new: &Payload, previous: Option<&EntryMeta>, peak: Option<u32>) -> Verdict {
        match &self.of {
            Catalog::Gateway(gateway) => gateway::validate(gateway, new, previous, peak),
            Catalog::Merged => merged::validate(new),
        }
    }

    /// A gateway's catalog is guarded with a memory; the merged view is the merge of
    /// guarded gateways.
    fn guarded(&self) -> bool {
        matches!(self.of, Catalog::Gateway(_))
    }

    /// A gateway's catalog, once judged fit to store, is recorded in the change feed
    /// (what changed, and the first-seen dates it then carries), then observed for
    /// its cadence (with its final ETag, so that the dates never count as a change);
    /// the merged view learns nothing (it follows its inputs).
    fn accepted<'a>(&'a self, payload: &'a mut Payload) -> ScopedFuture<'a, Option<Duration>> {
        match &self.of {
            Catalog::Gateway(gateway) => Box::pin(async move {
                if let Some(recording) = self.record(gateway, payload)
                    && let Ok(Some(json)) = recording.await
                {
                    let rewritten = Payload::new(json, payload.item_count);
                    (payload.json, payload.etag) = (rewritten.json, rewritten.etag);
                }
                // Boxed: this is polled deep inside a merged view's fill (see `record`).
                Box::pin(self.ctx.app.observe(gateway, &payload.etag, payload.requests.max(1))).await
            }),
            Catalog::Merged => Box::pin(async { None }),
        }
    }

    /// A merge that could not be built says nothing about any upstream: never
    /// throttle `all` reads for it.
    fn throttles_failures(&self) -> bool {
        matches!(self.of, Catalog::Gateway(_))
    }

    /// A gateway stored outside a warm (a miss, a revalidation) schedules a merged
    /// rebuild; a warm rebuilds once at its end.
    fn after_write(self: Arc<Self>, purpose: Purpose) -> Option<BoxFuture<()>> {
        match (&self.of, purpose) {
            (Catalog::Gateway(_), Purpose::Read | Purpose::Revalidate) => schedule_rebuild(&self.ctx),
            _ => None,
        }
    }
}

/// The SWR read of one gateway's catalog.
pub(super) async fn read_gateway(ctx: &RequestContext, gateway: &Gateway) -> Result<Lookup, CacheError> {
    let source = CatalogSource::gateway(ctx, gateway);
    ctx.app.cache.read(&keys::gateway(&gateway.id), source).await
}

/// The SWR read of the merged catalog.
pub(super) async fn read_all(ctx: &RequestContext) -> Result<Lookup, CacheError> {
    let source = CatalogSource::merged(ctx);
    ctx.app.cache.read(&ctx.app.all_key, source).await
}

/// Refetch one gateway now (warming), keeping the old value on failure. The warm
/// rebuilds the merged view once at its end, so these writes schedule none.
pub(super) async fn refresh_gateway(ctx: &RequestContext, gateway: &Gateway) -> Result<Arc<Entry>, CacheError> {
    let source = CatalogSource::gateway(ctx, gateway);
    ctx.app
        .cache
        .refresh(&keys::gateway(&gateway.id), source, Purpose::Warm)
        .await
}

/// Rebuild the merged view from what is cached per gateway (no upstream calls).
/// One at a time in this process; across instances the store lock orders them,
/// and a rebuild never adopts another's result (it may predate our data).
pub(super) async fn rebuild_all(ctx: &RequestContext) -> Result<Arc<Entry>, CacheError> {
    let _one_at_a_time = ctx.app.rebuilding.lock().await;
    rebuild_holding_the_turn(ctx).await
}

/// The rebuild itself, by whoever holds `App::rebuilding`.
async fn rebuild_holding_the_turn(ctx: &RequestContext) -> Result<Arc<Entry>, CacheError> {
    let source = CatalogSource::merged(ctx);
    ctx.app.cache.refresh(&ctx.app.all_key, source, Purpose::Rebuild).await
}

/// Rebuild the merged view soon. Requests within the coalescing window share one
/// rebuild; a request while a rebuild runs queues the next one, which starts when
/// the running one is done (so the newest gateway data is always merged).
fn schedule_rebuild(ctx: &RequestContext) -> Option<BoxFuture<()>> {
    if ctx.app.rebuild_scheduled.swap(true, Ordering::SeqCst) {
        return None;
    }
    let ctx = ctx.clone();
    Some(boxed(async move {
        let app = &ctx.app;
        tokio::time::sleep(app.config.rebuild_coalesce).await;
        let _one_at_a_time = app.rebuilding.lock().await;
        // From here on, a new request schedules another rebuild after this one.
        app.rebuild_scheduled.store(false, Ordering::SeqCst);
        if let Err(e) = rebuild_holding_the_turn(&ctx).await {
            tracing::warn!("[Cache SWR] Rebuilding the merged catalog failed: {e}");
        }
    }))
}

impl App {
    /// No gateway changed in a warm: move the merged view's clock instead of
    /// rebuilding it, if it is stored, complete, and built from exactly the gateway
    /// entries stored now. The merged view is the merge of what is *stored*: when an
    /// earlier rebuild was lost (its instance killed, or the store refused the write),
    /// the gateway entries moved on without it, their fingerprint no longer matches,
    /// and the warm rebuilds. An incomplete view (missing or carried gateways) has a
    /// short fresh window and is rebuilt too, so that they get another chance.
    pub(crate) async fn retime_complete_merge(&self) -> Option<Arc<Entry>> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let merged = self.cache.peek_meta(&self.all_key).await?;
        let clock = merged.clock;
        if clock.fresh_until_ms.saturating_sub(clock.fetched_at_ms) <= INCOMPLETE_MERGE_FRESH.as_millis() as u64 {
            return None;
        }
        let (stored, inputs) = self.stored_sources().await;
        if merged.sources != stored {
            tracing::info!(
                "[Cache Warming] The merged view was built from other gateway data than is stored: rebuilding it"
            );
            return None;
        }
        let fresh_for = fresh_for_inputs(None, &inputs, self.follows_inputs(), now_ms());
        self.cache
            .retime_stored(&self.all_key, self.ttl(), inputs, fresh_for)
            .await
    }

    /// The fingerprint of the gateway entries stored now (their headers only), and
    /// their clocks.
    async fn stored_sources(&self) -> (u64, Vec<InputClock>) {
        let metas = futures_util::future::join_all(
            self.registry
                .all()
                .iter()
                .map(|g| async move { self.cache.peek_meta_in_store(&keys::gateway(&g.id)).await }),
        )
        .await;
        let fingerprint = sources_fingerprint(
            self.registry
                .all()
                .iter()
                .zip(&metas)
                .map(|(g, m)| (g.id.as_str(), m.as_ref().map(|m| m.etag.as_str()))),
        );
        let inputs = metas
            .iter()
            .map(|m| {
                m.as_ref()
                    .map_or_else(InputClock::default, |m| InputClock::of(&m.clock))
            })
            .collect();
        (fingerprint, inputs)
    }

    /// With a learned cadence the merged view is fresh no longer than its inputs (at
    /// least `MODELS_FRESH_MIN_SECONDS`): it goes stale when a gateway is due, and a
    /// read then refreshes that gateway. `fixed`: as before, its own window.
    fn follows_inputs(&self) -> Option<Duration> {
        let c = &self.config.cadence;
        (c.mode == Mode::Learned).then_some(c.min_window.min(c.default_window))
    }

    /// The gateways a merged view's header marks carried, each with the clock its
    /// data had (none for a merged view of the previous format).
    pub(crate) fn carried_of(&self, meta: &EntryMeta) -> Vec<(&str, Option<InputClock>)> {
        self.registry
            .all()
            .iter()
            .enumerate()
            .filter(|(n, _)| *n < 64 && meta.carried & (1 << n) != 0)
            .map(|(n, g)| (g.id.as_str(), meta.inputs.get(n).copied()))
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
