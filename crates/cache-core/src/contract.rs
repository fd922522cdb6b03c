//! The JSON the frontend reads, as Rust types: the models response and the status
//! response.
//!
//! Why types for bytes we mostly assemble by hand: the list is served as stored
//! (no parse, no serialization on the hot path), so the types cannot be what
//! writes it. They are the contract instead. With the `contract` feature they
//! derive a JSON Schema (`schema/*.schema.json`) and TypeScript declarations
//! (`types/gatewayz.d.ts`), committed; the test suite fails when those files drift
//! from these types, and when a response served end to end does not validate.
//! What *is* serialized from here: [`Page`] (the page fields of every list, page and
//! search answer) and [`StatusResponse`].
//!
//! Regenerate after a change: `UPDATE_CONTRACT=1 cargo test --test it contract::`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod lenient;

pub use crate::metrics::CategoryMetrics;

/// Every price in every response is in this unit (normalised from each gateway's).
pub const PRICING_UNIT: &str = "usd_per_token";

/// `pricing_unit`: named in every models response, so no client has to guess
/// (the raw catalog API mixes per-token, per-million and per-billion prices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub enum PricingUnit {
    #[serde(rename = "usd_per_token")]
    UsdPerToken,
}

/// The catalog API's page fields, on every models response.
///
/// The whole list (no `limit`, no `offset`) is one page: `offset` 0, `limit` null,
/// `has_more` false.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct Page {
    /// Models in the whole list (or matching `search`).
    pub total: usize,
    /// Models in this response's `data`.
    pub returned: usize,
    pub offset: usize,
    /// The `limit` asked for; null when none was (the rest of the list).
    pub limit: Option<usize>,
    pub has_more: bool,
    /// The `offset` of the next page; null on the last.
    pub next_offset: Option<usize>,
}

impl Page {
    /// The page `[offset, offset + limit)` of `total` models (`limit` `None`: to the end).
    pub fn of(total: usize, offset: usize, limit: Option<usize>) -> Page {
        let start = offset.min(total);
        let end = limit.map_or(total, |l| start.saturating_add(l).min(total));
        let has_more = end < total;
        Page {
            total,
            returned: end - start,
            offset,
            limit,
            has_more,
            next_offset: has_more.then_some(end),
        }
    }

    /// Indexes of the models on this page.
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = self.offset.min(self.total);
        start..start + self.returned
    }

    /// The fields as JSON object members, each preceded by a comma: appended to a
    /// body that is assembled by hand.
    pub fn write_members(&self, out: &mut Vec<u8>) {
        let obj = serde_json::to_vec(self).expect("plain fields serialize");
        // `{...}` -> `,...`
        out.push(b',');
        out.extend_from_slice(&obj[1..obj.len() - 1]);
    }
}

/// `GET /api/models`: the models JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct ModelsResponse {
    pub data: Vec<Model>,
    /// `all` (the merged view) or the gateway's id.
    pub gateway: String,
    pub pricing_unit: PricingUnit,
    #[serde(flatten)]
    pub page: Page,
    /// Merged view: the gateways it was merged from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub gateways: Option<Vec<String>>,
    /// Merged view: configured gateways with no cached data, left out of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub missing_gateways: Option<Vec<String>>,
    /// Merged view: gateways whose own entry is gone and whose upstream failed, whose
    /// listings were carried over from the previous merged view (also in `gateways`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub carried_gateways: Option<Vec<String>>,
    /// `search` answers: the term, lowercased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub search: Option<String>,
}

// The one definition of a model's fields. Normalisation moves the upstream's record
// through it (`Model::take`, then `Model::overlay`), the models page renders its rows
// from it (`crate::page`), and search finds models by `Model::SEARCHED`. Reading is
// lenient (`lenient`): a field of another type than its own reads as absent (a number
// where text belongs, as its text; a numeric string where a count belongs, as the
// number), so one odd field never makes a model unreadable.
/// One model. The service guarantees the fields up to `provider_slugs`; those from
/// `description` on are the catalog API's, passed through with their type (or null).
/// Prices are normalised to USD per token. Unknown fields are kept.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[cfg_attr(feature = "contract", ts(optional_fields = nullable))]
#[serde(default)]
pub struct Model {
    #[serde(deserialize_with = "lenient::text_or_empty")]
    pub id: String,
    /// The id when the gateway gave no name.
    #[serde(deserialize_with = "lenient::text_or_empty")]
    pub name: String,
    /// USD per token. `null` when the gateway gave no price at all (not free);
    /// a partial price keeps its nulls. In the merged view, the price of the
    /// record that won the merge: see `gateway_pricing` for every gateway's.
    #[serialize_always]
    #[serde(deserialize_with = "lenient::prices")]
    #[cfg_attr(feature = "contract", ts(optional = false))]
    pub pricing: Option<Pricing>,
    /// Each gateway that lists this model with a price, with its own price (USD per
    /// token). Gateways that list it without a price are in `source_gateways` only.
    #[serde(deserialize_with = "lenient::prices_by_gateway")]
    pub gateway_pricing: BTreeMap<String, Pricing>,
    /// The gateway the record (and `pricing`) came from.
    #[serde(deserialize_with = "lenient::text_or_empty")]
    pub source_gateway: String,
    /// Every gateway that lists the model (merged view: the union).
    #[serde(deserialize_with = "lenient::texts_or_empty")]
    pub source_gateways: Vec<String>,
    /// Lowercased; from the record, else the id's `vendor/` prefix.
    #[serde(deserialize_with = "lenient::text")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub provider_slug: Option<String>,
    #[serde(deserialize_with = "lenient::texts_or_empty")]
    pub provider_slugs: Vec<String>,
    #[serde(deserialize_with = "lenient::text")]
    pub description: Option<String>,
    /// Tokens.
    #[serde(deserialize_with = "lenient::count")]
    pub context_length: Option<u64>,
    /// Unix seconds.
    #[serde(deserialize_with = "lenient::integer")]
    pub created: Option<i64>,
    #[serde(deserialize_with = "lenient::text")]
    pub canonical_slug: Option<String>,
    #[serde(deserialize_with = "lenient::object")]
    pub architecture: Option<Architecture>,
    #[serde(deserialize_with = "lenient::texts")]
    pub supported_parameters: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient::text")]
    pub model_logo_url: Option<String>,
    /// When this cache first saw the model listed (ISO 8601, UTC); in the merged view,
    /// the earliest across its gateways. Absent for models listed when the cache
    /// started recording (its baseline), so it never means "there when we started".
    /// Set by the cache, never taken from the upstream.
    #[serde(deserialize_with = "lenient::text")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub first_seen: Option<String>,
}

/// Prices in USD per token, as decimal strings (exact: never a float round trip).
/// A field is null or absent when the gateway gave no such price.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[cfg_attr(feature = "contract", ts(optional_fields = nullable))]
pub struct Pricing {
    pub prompt: Option<String>,
    pub completion: Option<String>,
    pub request: Option<String>,
    pub image: Option<String>,
    pub web_search: Option<String>,
    pub internal_reasoning: Option<String>,
}

/// As the catalog API sent it.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[cfg_attr(feature = "contract", ts(optional_fields = nullable))]
#[serde(default)]
pub struct Architecture {
    #[serde(deserialize_with = "lenient::text")]
    pub modality: Option<String>,
    #[serde(deserialize_with = "lenient::texts")]
    pub input_modalities: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient::texts")]
    pub output_modalities: Option<Vec<String>>,
}

impl Model {
    /// The fields a search looks in, in the order their text is indexed.
    pub(crate) const SEARCHED: [&'static str; 4] = ["id", "name", "description", "provider_slug"];

    /// Move the typed fields out of `record` (the upstream's object) into a model,
    /// leniently, without copying them: what the contract does not type stays, and
    /// where a typed field was, a null holds its place for [`Model::overlay`] (the
    /// `pricing` and `architecture` objects stay whole, for their own unknown fields).
    pub(crate) fn take(record: &mut serde_json::Map<String, serde_json::Value>) -> Model {
        let mut typed = serde_json::Map::new();
        for &field in lenient::fields_of::<Model>() {
            if let Some(value) = record.get_mut(field) {
                let nested = matches!(field, "pricing" | "architecture") && value.is_object();
                let held = if nested { value.clone() } else { serde_json::Value::Null };
                typed.insert(field.to_string(), std::mem::replace(value, held));
            }
        }
        Model::deserialize(serde_json::Value::Object(typed)).unwrap_or_default()
    }

    /// Read one model's JSON text, leniently (text that is not an object is an
    /// empty model).
    pub(crate) fn read_json(json: &str) -> Model {
        match json.trim_start().starts_with('{') {
            true => serde_json::from_str(json).unwrap_or_default(),
            false => Model::default(),
        }
    }

    /// Write the typed fields into `record` (the upstream's object), keeping the
    /// fields the contract does not type, and those of `pricing` and `architecture`.
    /// A typed field the record held that has no value of its type becomes `null`;
    /// `provider_slug`, optional but never null, is then absent.
    pub(crate) fn overlay(&self, record: &mut serde_json::Map<String, serde_json::Value>) {
        lenient::overlay(record, self, &|field| match field {
            "pricing" => Some(lenient::fields_of::<Pricing>()),
            "architecture" => Some(lenient::fields_of::<Architecture>()),
            _ => None,
        });
        if self.provider_slug.is_none() {
            record.remove("provider_slug");
        }
    }
}

impl Pricing {
    /// Read any JSON value as prices, leniently (see `lenient`): not an object, none.
    pub(crate) fn read(value: &serde_json::Value) -> Option<Pricing> {
        lenient::read_prices(value.clone())
    }

    /// Every price, for a change applied to each.
    pub(crate) fn prices_mut(&mut self) -> [&mut Option<String>; 6] {
        [
            &mut self.prompt,
            &mut self.completion,
            &mut self.request,
            &mut self.image,
            &mut self.web_search,
            &mut self.internal_reasoning,
        ]
    }

    /// Whether at least one price is given.
    pub(crate) fn has_any(&self) -> bool {
        [
            &self.prompt,
            &self.completion,
            &self.request,
            &self.image,
            &self.web_search,
            &self.internal_reasoning,
        ]
        .iter()
        .any(|p| p.is_some())
    }
}

// ---- the change feed: `GET /api/models/changes` (crate::changes) ---------------

/// `GET /api/models/changes`: what changed in the gateways' catalogs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct ChangesResponse {
    /// Newest first without `since`; oldest first after it.
    pub changes: Vec<Change>,
    /// The cursor to ask `since=` next: the newest change seen by this answer (without
    /// `since`: the newest in the log). Opaque.
    pub next: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    /// The prompt or completion price moved.
    Repriced,
    /// The name or context length changed.
    Changed,
    /// One fetch changed too many models to list (a confirmed collapse, a gateway
    /// listed anew): counts and a sample.
    Bulk,
}

impl ChangeKind {
    pub const LISTED: [ChangeKind; 4] = [
        ChangeKind::Added,
        ChangeKind::Removed,
        ChangeKind::Repriced,
        ChangeKind::Changed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Repriced => "repriced",
            ChangeKind::Changed => "changed",
            ChangeKind::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        [ChangeKind::Bulk]
            .into_iter()
            .chain(ChangeKind::LISTED)
            .find(|k| k.as_str() == s)
    }
}

/// One recorded change of one gateway's catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct Change {
    /// When it was seen (the store's clock at the fetch that saw it), ISO 8601.
    pub at: String,
    pub gateway: String,
    pub kind: ChangeKind,
    /// The model's id (null for `bulk`).
    pub id: Option<String>,
    pub name: Option<String>,
    /// The model as it was (null for `added` and `bulk`).
    pub before: Option<ModelFacts>,
    /// The model as it is now (null for `removed` and `bulk`).
    pub after: Option<ModelFacts>,
    /// `bulk` only: how many models changed, by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub counts: Option<ChangeCounts>,
    /// `bulk` only: a few of its changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub sample: Option<Vec<ChangeSample>>,
}

/// What a change compares, as the models JSON serves it (prices in USD per token).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct ModelFacts {
    pub name: String,
    pub prompt: Option<String>,
    pub completion: Option<String>,
    pub context_length: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct ChangeCounts {
    pub added: u32,
    pub removed: u32,
    pub repriced: u32,
    pub changed: u32,
}

impl ChangeCounts {
    pub fn of(&self, kind: ChangeKind) -> u32 {
        match kind {
            ChangeKind::Added => self.added,
            ChangeKind::Removed => self.removed,
            ChangeKind::Repriced => self.repriced,
            ChangeKind::Changed => self.changed,
            ChangeKind::Bulk => self.added + self.removed + self.repriced + self.changed,
        }
    }
}

/// A gateway's last recorded change, on the status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct LastChange {
    /// ISO 8601.
    pub at: String,
    /// Models changed then, by kind.
    pub counts: ChangeCounts,
}

/// One change of a `bulk` one's sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct ChangeSample {
    pub kind: ChangeKind,
    pub id: String,
    pub name: String,
    pub before: Option<ModelFacts>,
    pub after: Option<ModelFacts>,
}

// ---- warm runs: stored under `warm:last_run`, answered by the warm routes --------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Cron,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Error,
    /// A due-only run (the cron with a learned cadence, `?due=1`) left it alone: its
    /// fresh window ends after the next run (`next_due_at`).
    #[serde(rename = "not_due")]
    NotDue,
}

/// One gateway's part of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct GatewayOutcome {
    pub gateway: String,
    pub status: Outcome,
    /// Models now cached for this gateway (the previous count when the fetch failed).
    pub count: u32,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub error: Option<String>,
    /// `not_due` only: when it becomes due (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub next_due_at: Option<String>,
    /// Ids the upstream listed more than once, collapsed to one each (absent: none).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub collapsed_duplicates: Option<u32>,
}

/// A warm run, as stored and as answered by the warm endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct RunRecord {
    /// Every gateway succeeded.
    pub success: bool,
    pub trigger: Trigger,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// Models fetched by the gateways that succeeded.
    pub total_models: u64,
    /// Models in the merged view after the run (`null` if it could not be built).
    pub merged_models: Option<u32>,
    pub gateways_success: usize,
    pub gateways_failed: usize,
    /// Gateways a due-only run left alone (their window ends after the next run).
    #[serde(default)]
    pub gateways_not_due: usize,
    pub details: Vec<GatewayOutcome>,
}

impl RunRecord {
    /// The record of a run: success means stored (every gateway, and the merged view).
    pub fn new(
        trigger: Trigger,
        started_ms: u64,
        took: std::time::Duration,
        details: Vec<GatewayOutcome>,
        merged_models: Option<u32>,
    ) -> RunRecord {
        let ok = details.iter().filter(|d| d.status == Outcome::Success).count();
        let not_due = details.iter().filter(|d| d.status == Outcome::NotDue).count();
        RunRecord {
            success: ok + not_due == details.len() && merged_models.is_some(),
            trigger,
            started_at: crate::clock::iso8601(started_ms),
            finished_at: crate::clock::iso8601(crate::clock::now_ms()),
            duration_ms: took.as_millis() as u64,
            total_models: details
                .iter()
                .filter(|d| d.status == Outcome::Success)
                .map(|d| d.count as u64)
                .sum(),
            merged_models,
            gateways_success: ok,
            gateways_failed: details.len() - ok - not_due,
            gateways_not_due: not_due,
            details,
        }
    }
}

/// `GET /api/cache/warm-models`: what is cached, how old, what failed, the counters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct StatusResponse {
    /// `redis` or `memory`.
    pub store: String,
    /// The last store write this instance could not make, while the store has taken
    /// none since (`null`: writes go through). A replica (`READONLY`) or a full store
    /// (`OOM`) shows here; reads keep answering from what is stored or held in process.
    pub store_write_error: Option<LastError>,
    /// The last warm run, if any is recorded.
    pub last_run: Option<RunRecord>,
    pub gateways: Vec<GatewayState>,
    /// The merged view (`gateway` is `all`).
    pub merged: GatewayState,
    /// The cadence's plan: its spend against the budget.
    pub cadence_plan: CadencePlanState,
    /// This instance's kept answers against `ANSWER_CACHE_MAX_BYTES`.
    #[serde(default)]
    pub answer_cache: AnswerCacheState,
    pub metrics: StatusMetrics,
    /// When this status was assembled (ISO 8601).
    pub timestamp: String,
}

/// Freshness of a cached key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Served as is.
    Fresh,
    /// Served while it is refetched.
    Stale,
    /// Past its stale window but kept: served (fail-safe) only while refetches fail.
    Expired,
    /// Nothing cached.
    Missing,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct GatewayState {
    pub gateway: String,
    pub state: KeyState,
    /// Past its stale window but kept: reads serve it (marked fail-safe) while
    /// refetches fail.
    pub fail_safe: bool,
    /// Merged view only: configured gateways with no entry of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub missing_gateways: Option<Vec<String>>,
    /// Merged view only: the missing gateways whose listings it carried over from
    /// the previous merged view (the others are left out of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub carried_gateways: Option<Vec<String>>,
    pub age_seconds: Option<u64>,
    pub models: Option<u32>,
    pub fresh_until: Option<String>,
    /// End of the served-stale window (the status page draws age against both).
    pub stale_until: Option<String>,
    pub last_error: Option<LastError>,
    /// Why what is served is held back from the upstream's current answer, if it is
    /// (`expired`, `guard`, `carried`, `previous-format`): the same words as the
    /// `X-Cache-Fail-Safe-Reason` header. Empty: served as fetched.
    #[serde(default)]
    pub fail_safe_reasons: Vec<String>,
    /// The collapse guard doubts the upstream's current answer and holds this
    /// catalog meanwhile: what it has seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub held: Option<HeldState>,
    /// Merged view only: each carried gateway's data, with the clock it had when it
    /// was last fetched (it leaves the merged view when `until` passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub carried: Option<Vec<CarriedState>>,
    /// Gateways only: how often it is refreshed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub cadence: Option<CadenceState>,
    /// Gateways only: the last change recorded in its catalog (`/api/models/changes`);
    /// absent when none has been since the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub last_change: Option<LastChange>,
}

/// How often a gateway is refreshed, learned from its own history (see
/// docs/design.md, "Each gateway refreshed as often as it changes").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct CadenceState {
    /// `learned` or `fixed` (`REFRESH_CADENCE`).
    pub mode: String,
    /// The estimated change rate (the prior's, with no evidence).
    pub change_rate_per_day: f64,
    /// Observations kept (one per stored fetch), and how many saw a change.
    pub observations: u32,
    pub changes: u32,
    /// The fresh window the next fetch gets: its share of the budget.
    pub fresh_for_seconds: u64,
    /// Listings a day at that window (its share of `REFRESH_BUDGET`), and the upstream
    /// requests one listing takes (its pages).
    pub planned_listings_per_day: f64,
    pub requests_per_listing: u32,
    /// The mean time from an upstream change to the listing that sees it: half the
    /// window.
    pub expected_lag_seconds: u64,
    /// When a cron run will find it due (ISO 8601); null with no entry.
    pub next_due_at: Option<String>,
}

/// The cadence's plan across the configured gateways: the upstream requests a day
/// it spends against `REFRESH_BUDGET` (see docs/design.md, "Each gateway refreshed
/// as often as it changes").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct CadencePlanState {
    /// `learned` or `fixed` (`REFRESH_CADENCE`).
    pub mode: String,
    /// `REFRESH_BUDGET`, in upstream requests a day.
    pub budget_requests_per_day: f64,
    /// What the planned windows spend: never more than the budget, unless even every
    /// window at `MODELS_FRESH_MAX_SECONDS` costs more (`fixed`: what fixed spends).
    pub planned_requests_per_day: f64,
    /// The mean time from an upstream change to the listing that sees it, over every
    /// change (busy gateways weigh more).
    pub expected_lag_seconds: u64,
}

/// The answers the instance that made this status keeps (search indexes, derived
/// bodies, pages: docs/operations.md, "What an anonymous client can cost an
/// instance"). What every view needs to be served at all is pinned: counted in
/// `kept_bytes`, never evicted, bounded by the configured gateways rather than by
/// the budget, so `kept_bytes` exceeds `budget_bytes` when the pinned answers alone do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct AnswerCacheState {
    /// `ANSWER_CACHE_MAX_BYTES`.
    pub budget_bytes: u64,
    /// Bytes kept now (allocated, as counted: buffers' capacities and each entry's
    /// share of the maps).
    pub kept_bytes: u64,
    /// Of `kept_bytes`, the pinned ones.
    pub pinned_bytes: u64,
}

/// The collapse guard's evidence about a key (see docs/design.md, "Every safety net
/// has an exit").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct HeldState {
    /// Why the upstream's answer is suspect.
    pub reason: String,
    /// Models in the suspect answer.
    pub candidate_models: u32,
    /// Fetches that returned it so far, and how many must.
    pub observations: u32,
    pub needed_observations: u32,
    /// When it was first seen (ISO 8601); it becomes the truth no earlier than
    /// `confirm_after`, once `needed_observations` agree.
    pub first_seen_at: String,
    pub confirm_after: String,
}

/// A gateway whose listings the merged view carries over from its previous value.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct CarriedState {
    pub gateway: String,
    /// Age of the carried data (since it was fetched).
    pub age_seconds: u64,
    /// When its fail-safe ends and it leaves the merged view (ISO 8601).
    pub until: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct LastError {
    pub error: String,
    /// ISO 8601.
    pub at: String,
}

/// Shared counters (every instance's flushed counts, plus this instance's not yet
/// flushed).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "contract", derive(schemars::JsonSchema, ts_rs::TS))]
pub struct StatusMetrics {
    pub models: CategoryMetrics,
    /// Why the counters could not be read (they are zeros then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "contract", ts(optional))]
    pub error: Option<String>,
}

/// The committed contract files, as the types make them today: (path from the
/// repository root, content). `tests/it/contract.rs` compares them with the files.
#[cfg(feature = "contract")]
pub fn generated_files() -> Vec<(&'static str, String)> {
    use ts_rs::TS;

    // What we send: an `Option` without `skip_serializing_if` is always present
    // (null or not), so it is required.
    fn schema<T: schemars::JsonSchema>() -> String {
        let root = schemars::generate::SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator()
            .into_root_schema_for::<T>();
        let mut s = serde_json::to_string_pretty(&root).expect("schemas serialize");
        s.push('\n');
        s
    }
    // JSON numbers are JavaScript numbers: no `bigint` for 64-bit fields (every
    // count here is far below 2^53).
    let cfg = ts_rs::Config::new().with_large_int("number");
    fn decl<T: TS>(cfg: &ts_rs::Config) -> String {
        let docs = T::docs().unwrap_or_default();
        format!("{docs}export {}\n", T::decl(cfg))
    }
    let ts = [
        "// Generated from crates/cache-core/src/contract.rs: do not edit.\n".to_string(),
        "// Regenerate: UPDATE_CONTRACT=1 cargo test --test it contract::\n".to_string(),
        "// Every price is a decimal string in USD per token (`pricing_unit`).\n\n".to_string(),
        decl::<ModelsResponse>(&cfg),
        decl::<Model>(&cfg),
        decl::<Pricing>(&cfg),
        decl::<Architecture>(&cfg),
        decl::<PricingUnit>(&cfg),
        decl::<Page>(&cfg),
        decl::<ChangesResponse>(&cfg),
        decl::<Change>(&cfg),
        decl::<ChangeKind>(&cfg),
        decl::<ModelFacts>(&cfg),
        decl::<ChangeCounts>(&cfg),
        decl::<ChangeSample>(&cfg),
        decl::<LastChange>(&cfg),
        decl::<StatusResponse>(&cfg),
        decl::<GatewayState>(&cfg),
        decl::<HeldState>(&cfg),
        decl::<CadenceState>(&cfg),
        decl::<CadencePlanState>(&cfg),
        decl::<AnswerCacheState>(&cfg),
        decl::<KeyState>(&cfg),
        decl::<LastError>(&cfg),
        decl::<StatusMetrics>(&cfg),
        decl::<CategoryMetrics>(&cfg),
        decl::<RunRecord>(&cfg),
        decl::<GatewayOutcome>(&cfg),
        decl::<Trigger>(&cfg),
        decl::<Outcome>(&cfg),
    ]
    .join("");
    vec![
        ("schema/models.schema.json", schema::<ModelsResponse>()),
        ("schema/status.schema.json", schema::<StatusResponse>()),
        ("schema/changes.schema.json", schema::<ChangesResponse>()),
        ("types/gatewayz.d.ts", ts),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        assert_eq!(
            Page::of(120, 0, Some(50)),
            Page {
                total: 120,
                returned: 50,
                offset: 0,
                limit: Some(50),
                has_more: true,
                next_offset: Some(50)
            }
        );
        let last = Page::of(120, 100, Some(50));
        assert_eq!((last.returned, last.has_more, last.next_offset), (20, false, None));
        assert_eq!(last.range(), 100..120);
        let past = Page::of(120, 500, Some(50));
        assert_eq!((past.returned, past.has_more, past.range()), (0, false, 120..120));
        let rest = Page::of(120, 30, None);
        assert_eq!((rest.returned, rest.has_more, rest.limit), (90, false, None));
        assert_eq!(Page::of(3, 0, Some(usize::MAX)).returned, 3, "no overflow");
        let mut out = b"{\"data\":[]".to_vec();
        Page::of(0, 0, None).write_members(&mut out);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["limit"], serde_json::Value::Null);
        assert_eq!(v["total"], 0);
    }
}
