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
use crate::cadence::Mode;
use crate::clock::now_ms;
use crate::contract::{Page, PricingUnit};
use crate::entry::{Entry, EntryMeta, InputClock};
use crate::gateways::Gateway;
use crate::gateways::merge::merge_bodies;
use crate::gateways::normalize::normalize;
use crate::keys;
use crate::spawn::{BoxFuture, Spawner, boxed};
use crate::swr::{CacheError, Lookup, Payload, Purpose, Source, SourceError, Verdict};
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

    /// Rebuild the merged view soon. Requests within the coalescing window share one
    /// rebuild; a request while a rebuild runs queues the next one, which starts when
    /// the running one is done (so the newest gateway data is always merged).
    fn schedule_rebuild(self: &Arc<Self>, spawner: Arc<dyn Spawner>) -> Option<BoxFuture<()>> {
        if self.rebuild_scheduled.swap(true, Ordering::SeqCst) {
            return None;
        }
        let app = self.clone();
        Some(boxed(async move {
            tokio::time::sleep(app.config.rebuild_coalesce).await;
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

/// The merged view's fresh window: `fresh_for` (an incomplete view's), cut to when
/// the first input stops being fresh when it `follows` its inputs (but never under
/// that floor).
fn fresh_for_inputs(
    fresh_for: Option<Duration>,
    inputs: &[InputClock],
    follows: Option<Duration>,
    now_ms: u64,
) -> Option<Duration> {
    let Some(floor) = follows else { return fresh_for };
    let Some(first) = inputs
        .iter()
        .filter(|i| i.fresh_until_ms > 0)
        .map(|i| i.fresh_until_ms)
        .min()
    else {
        return fresh_for;
    };
    let left = Duration::from_millis(first.saturating_sub(now_ms)).max(floor);
    Some(fresh_for.map_or(left, |f| f.min(left)))
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

/// Rejects empty catalogs; doubts one that collapsed under a tenth of the stored
/// (last accepted) one, or grew over tenfold: the guard then wants the upstream to
/// confirm it before it replaces what is stored.
fn judge_catalog(new: &Payload, previous: Option<&EntryMeta>) -> Verdict {
    if new.item_count == 0 {
        return Verdict::Reject("0 models".into());
    }
    let Some(prev) = previous else {
        return Verdict::Accept;
    };
    let (was, now) = (prev.item_count, new.item_count);
    if was >= SUSPECT_MIN_MODELS && now.saturating_mul(SUSPECT_FACTOR) < was {
        Verdict::Doubt(format!("catalog collapsed to {now} models (from {was})"))
    } else if now >= SUSPECT_MIN_MODELS && now > was.saturating_mul(SUSPECT_FACTOR) {
        Verdict::Doubt(format!("catalog jumped to {now} models (from {was})"))
    } else {
        Verdict::Accept
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

/// One page of models, normalised and serialized: the objects back to back, and
/// each one's id and end offset (so that a listing's repeated ids can be collapsed
/// across pages without parsing again).
pub(crate) struct NormalizedPage {
    json: Vec<u8>,
    records: Vec<(String, usize)>,
}

/// Normalise and serialize one page of models.
pub(crate) fn normalize_page(gw: &Gateway, models: Vec<Map<String, Value>>) -> NormalizedPage {
    let mut page = NormalizedPage {
        json: Vec::with_capacity(models.len() * 900),
        records: Vec::with_capacity(models.len()),
    };
    for m in models {
        if let Some(m) = normalize(gw, m) {
            let id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            serde_json::to_writer(&mut page.json, &m).expect("maps serialize");
            page.records.push((id, page.json.len()));
        }
    }
    page
}

/// The records of `pages`, each id once (the first listing wins), and how many
/// repeated ones were collapsed.
pub(crate) fn distinct_records(pages: &[NormalizedPage]) -> (Vec<&[u8]>, u32) {
    let mut seen = std::collections::HashSet::with_capacity(pages.iter().map(|p| p.records.len()).sum());
    let mut parts = Vec::with_capacity(seen.capacity());
    let mut collapsed = 0u32;
    for page in pages {
        let mut start = 0;
        for (id, end) in &page.records {
            if seen.insert(id.as_str()) {
                parts.push(&page.json[start..*end]);
            } else {
                collapsed += 1;
            }
            start = *end;
        }
    }
    (parts, collapsed)
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
                let looked_at = now_ms();
                let gw = self.gateway.clone();
                let pages = self
                    .app
                    .fetcher
                    .fetch_pages(&self.gateway, Arc::new(move |models| normalize_page(&gw, models)))
                    .await?;
                let (parts, collapsed) = distinct_records(&pages);
                let total = parts.len();
                let mut payload = Payload::new(catalog_json(&self.gateway.id, &parts, total, &[]), total as u32);
                payload.collapsed = collapsed;
                drop(parts);
                drop(pages);
                // A look at the upstream: changed since the last one or not. An empty
                // answer (refused anyway) is no look at the catalog.
                if payload.item_count > 0 {
                    let key = keys::gateway(&self.gateway.id);
                    payload.fresh_window = self.app.observe(&key, looked_at, &payload.etag).await;
                }
                tracing::info!(
                    "[Cache Fetch] Fetched {}: {} models{}, {} bytes in {} ms",
                    self.gateway.id,
                    payload.item_count,
                    match collapsed {
                        0 => String::new(),
                        n => format!(" ({n} repeated ids collapsed)"),
                    },
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

    fn validate(&self, new: &Payload, previous: Option<&EntryMeta>) -> Verdict {
        match judge_catalog(new, previous) {
            Verdict::Reject(why) => Verdict::Reject(format!("{}: {why}", self.gateway.id)),
            Verdict::Doubt(why) => Verdict::Doubt(format!("{}: {why}", self.gateway.id)),
            Verdict::Accept => Verdict::Accept,
        }
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
    /// Nothing of its own anywhere: carried over from the previous merged view while
    /// the clock its data had allows, or missing. `gone`: the upstream says the
    /// catalog does not exist (404), so nothing is carried.
    Absent { gone: bool },
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
                    // A read, and (with a learned cadence) a revalidation, read each
                    // gateway through the cache: a gateway past its window revalidates
                    // (and the merged view follows it). A warm or rebuild takes what is stored.
                    let through_cache = match purpose {
                        Purpose::Read => true,
                        Purpose::Revalidate => app.config.cadence.mode == Mode::Learned,
                        Purpose::Warm | Purpose::Rebuild => false,
                    };
                    let stored = match through_cache {
                        true => None,
                        false => app.cache.peek(&key).await,
                    };
                    let read = match stored {
                        Some(e) => Ok(e),
                        // Boxed: a fill inside a fill (this merge is one) nests two deep
                        // state machines, too deep for a 2 MiB stack in a debug build.
                        None => Box::pin(app.read_gateway(gw, spawner)).await.map(|l| l.entry),
                    };
                    let input = match (read, held) {
                        // The previous release's entry: last-known-good, not "stored" here.
                        (Ok(e), _) if e.meta.previous_format() => Input::Held(e),
                        (Ok(e), _) => Input::Stored(e),
                        (Err(e), _) if e.is_gone() => {
                            tracing::warn!("[Cache SWR] {} is gone upstream (404): not merged, not carried", gw.id);
                            Input::Absent { gone: true }
                        }
                        (Err(e), Some(h)) => {
                            tracing::warn!(
                                "[Cache SWR] Merging {} from this instance's copy: its entry is gone and {e}",
                                gw.id
                            );
                            Input::Held(h)
                        }
                        (Err(e), None) => {
                            tracing::warn!("[Cache SWR] No data of {} to merge: {e}", gw.id);
                            Input::Absent { gone: false }
                        }
                    };
                    (gw.id.clone(), input)
                }
            });
            let inputs: Vec<(String, Input)> = futures_util::future::join_all(reads).await;
            let absent = inputs.iter().any(|(_, i)| matches!(i, Input::Absent { gone: false }));
            let previous = match absent {
                true => match app.cache.peek(&app.all_key).await {
                    Some(p) => Some(p),
                    None => app.cache.held(&app.all_key),
                },
                false => None,
            };
            if previous.is_none() && inputs.iter().all(|(_, i)| matches!(i, Input::Absent { .. })) {
                return Err(SourceError::Unavailable(
                    "no gateway has cached data to merge".to_string(),
                ));
            }
            let follows = app.follows_inputs();
            tokio::task::spawn_blocking(move || {
                let mut payload = merge_inputs(&inputs, previous.as_deref(), now_ms());
                payload.fresh_for = fresh_for_inputs(payload.fresh_for, &payload.inputs, follows, now_ms());
                payload
            })
            .await
            .map_err(|e| SourceError::Unavailable(format!("merge failed: {e}")))
        })
    }

    /// The merged view is the merge of what is stored, each gateway guarded on its
    /// own: guarding the merge again would be a second net with no exit. Only an
    /// empty merge is refused.
    fn validate(&self, new: &Payload, _previous: Option<&EntryMeta>) -> Verdict {
        match new.item_count {
            0 => Verdict::Reject("all: 0 models".into()),
            _ => Verdict::Accept,
        }
    }

    /// A merge that could not be built says nothing about any upstream: never
    /// throttle `all` reads for it.
    fn throttles_failures(&self) -> bool {
        false
    }
}

/// The merged view of `inputs` (in the configured order), at `now_ms`. An absent
/// gateway's listings are carried over from `previous` (the merged view stored
/// before) with the clock its data had there, while that clock's fail-safe lasts
/// and the upstream has not said it is gone; otherwise the gateway is missing.
pub(crate) fn merge_inputs(inputs: &[(String, Input)], previous: Option<&Entry>, now_ms: u64) -> Payload {
    let carry_clocks: HashMap<&str, InputClock> = inputs
        .iter()
        .enumerate()
        .filter(|(_, (_, i))| matches!(i, Input::Absent { gone: false }))
        .filter_map(|(n, (id, _))| Some((id.as_str(), carry_clock(previous?, n, inputs.len(), now_ms)?)))
        .collect();
    let carried_bodies = match previous {
        Some(p) if !carry_clocks.is_empty() => match p.identity_uncached() {
            Ok(json) => carry_over(&json, &carry_clocks.keys().copied().collect::<Vec<_>>()),
            Err(e) => {
                tracing::warn!("[Cache SWR] The previous merged view is unreadable ({e}): nothing carried over");
                HashMap::new()
            }
        },
        _ => HashMap::new(),
    };
    let parts = MergeParts::gather(inputs, carried_bodies, &carry_clocks);
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
    payload.inputs = parts.clocks;
    if incomplete {
        // Rebuilt soon, and no later than the first carried listing's fail-safe ends.
        let carried_left = parts
            .carried_until
            .map(|until| Duration::from_millis(until.saturating_sub(now_ms).max(1)));
        payload.fresh_for = Some(carried_left.map_or(INCOMPLETE_MERGE_FRESH, |l| l.min(INCOMPLETE_MERGE_FRESH)));
    }
    payload
}

/// The clock of what `previous` (a merged view) holds for input `n` of `count`, if
/// it may still be served at `now_ms`. A merged view of the previous format has no
/// per-input clocks: its own clock stands for all of them.
fn carry_clock(previous: &Entry, n: usize, count: usize, now_ms: u64) -> Option<InputClock> {
    let clock = match previous.meta.inputs.len() == count {
        true => previous.meta.inputs[n],
        false => InputClock::of(&previous.meta.clock),
    };
    (clock.kept_until_ms > now_ms).then_some(clock)
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
    /// The clock of each input's data (zero when missing).
    clocks: Vec<InputClock>,
    /// When the first carried listing's fail-safe ends.
    carried_until: Option<u64>,
}

impl MergeParts {
    fn gather(
        inputs: &[(String, Input)],
        mut carried_bodies: HashMap<String, Bytes>,
        carry_clocks: &HashMap<&str, InputClock>,
    ) -> MergeParts {
        let mut parts = MergeParts {
            bodies: Vec::with_capacity(inputs.len()),
            included: Vec::new(),
            missing: Vec::new(),
            carried: Vec::new(),
            carried_mask: 0,
            stored_etags: Vec::with_capacity(inputs.len()),
            clocks: Vec::with_capacity(inputs.len()),
            carried_until: None,
        };
        for (n, (id, input)) in inputs.iter().enumerate() {
            let mut clock = InputClock::default();
            let (body, stored) = match input {
                // Uncached: the merge reads each catalog once; keeping every identity
                // body in memory afterwards would only raise the resident set.
                Input::Stored(e) => {
                    clock = InputClock::of(&e.meta.clock);
                    (
                        e.identity_uncached().map_err(|e| e.to_string()),
                        Some(e.meta.etag.clone()),
                    )
                }
                Input::Held(e) => {
                    clock = InputClock::of(&e.meta.clock);
                    (e.identity_uncached().map_err(|e| e.to_string()), None)
                }
                Input::Absent { .. } => match (carried_bodies.remove(id.as_str()), carry_clocks.get(id.as_str())) {
                    (Some(body), Some(carried)) => {
                        parts.carried.push(Value::String(id.clone()));
                        if n < 64 {
                            parts.carried_mask |= 1 << n;
                        }
                        clock = *carried;
                        parts.carried_until = Some(
                            parts
                                .carried_until
                                .map_or(carried.kept_until_ms, |u| u.min(carried.kept_until_ms)),
                        );
                        (Ok(body), None)
                    }
                    _ => (Err("no data".to_string()), None),
                },
            };
            parts.stored_etags.push(stored);
            match body {
                Ok(json) => {
                    parts.bodies.push(json);
                    parts.included.push(Value::String(id.clone()));
                    parts.clocks.push(clock);
                }
                Err(e) => {
                    if !matches!(input, Input::Absent { .. }) {
                        tracing::warn!("[Cache SWR] Skipping unreadable cached catalog of {id}: {e}");
                    }
                    parts.missing.push(Value::String(id.clone()));
                    parts.clocks.push(InputClock::default());
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
            flags: 0,
            inputs: Vec::new(),
            item_count: n,
            collapsed: 0,
            sources: 0,
            carried: 0,
            etag: String::new(),
        }
    }

    fn doubted(v: Verdict) -> bool {
        matches!(v, Verdict::Doubt(_))
    }

    #[test]
    fn collapses_and_jumps_are_doubted_against_the_last_accepted_catalog() {
        assert_eq!(judge_catalog(&payload(0), None), Verdict::Reject("0 models".into()));
        assert_eq!(judge_catalog(&payload(1), None), Verdict::Accept);
        assert!(doubted(judge_catalog(&payload(5), Some(&meta(300)))), "a collapse");
        assert_eq!(judge_catalog(&payload(30), Some(&meta(300))), Verdict::Accept);
        assert_eq!(
            judge_catalog(&payload(2), Some(&meta(40))),
            Verdict::Accept,
            "small catalogs may shrink"
        );
        assert!(doubted(judge_catalog(&payload(413), Some(&meta(11)))), "a jump");
        assert_eq!(
            judge_catalog(&payload(40), Some(&meta(3))),
            Verdict::Accept,
            "small catalogs may grow"
        );
        assert_eq!(
            judge_catalog(&payload(11), Some(&meta(11))),
            Verdict::Accept,
            "back to the truth after a spike: judged against what is stored, not a high-water mark"
        );
    }

    #[test]
    fn repeated_ids_are_collapsed_across_pages_first_listing_wins() {
        let gw = crate::gateways::Registry::from_config(&crate::Config::from_pairs(&[]).unwrap())
            .resolve("groq")
            .unwrap()
            .clone();
        let model = |id: &str, name: &str| {
            serde_json::from_value::<Map<String, Value>>(serde_json::json!({"id": id, "name": name})).unwrap()
        };
        let pages = [
            normalize_page(&gw, vec![model("a", "first"), model("b", "b"), model("a", "again")]),
            normalize_page(&gw, vec![model("c", "c"), model("b", "again")]),
        ];
        let (parts, collapsed) = distinct_records(&pages);
        assert_eq!(collapsed, 2);
        let body: Value = serde_json::from_slice(&catalog_json("groq", &parts, parts.len(), &[])).unwrap();
        let names: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["first", "b", "c"]);
        assert_eq!(body["total"], 3);
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
