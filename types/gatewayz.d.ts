// Generated from crates/cache-core/src/contract.rs: do not edit.
// Regenerate: UPDATE_CONTRACT=1 cargo test --test it contract::
// Every price is a decimal string in USD per token (`pricing_unit`).

/**
 * `GET /api/models`: the models JSON.
 */
export type ModelsResponse = { data: Array<Model>, 
/**
 * `all` (the merged view) or the gateway's id.
 */
gateway: string, pricing_unit: PricingUnit, 
/**
 * Merged view: the gateways it was merged from.
 */
gateways?: Array<string>, 
/**
 * Merged view: configured gateways with no cached data, left out of it.
 */
missing_gateways?: Array<string>, 
/**
 * Merged view: gateways whose own entry is gone and whose upstream failed, whose
 * listings were carried over from the previous merged view (also in `gateways`).
 */
carried_gateways?: Array<string>, 
/**
 * `search` answers: the term, lowercased.
 */
search?: string, 
/**
 * Models in the whole list (or matching `search`).
 */
total: number, 
/**
 * Models in this response's `data`.
 */
returned: number, offset: number, 
/**
 * The `limit` asked for; null when none was (the rest of the list).
 */
limit: number | null, has_more: boolean, 
/**
 * The `offset` of the next page; null on the last.
 */
next_offset: number | null, };
/**
 * One model. The service guarantees the fields up to `provider_slugs`; those from
 * `description` on are the catalog API's, passed through with their type (or null).
 * Prices are normalised to USD per token. Unknown fields are kept.
 */
export type Model = { id: string, 
/**
 * The id when the gateway gave no name.
 */
name: string, 
/**
 * USD per token. `null` when the gateway gave no price at all (not free);
 * a partial price keeps its nulls. In the merged view, the price of the
 * record that won the merge: see `gateway_pricing` for every gateway's.
 */
pricing: Pricing | null, 
/**
 * Each gateway that lists this model with a price, with its own price (USD per
 * token). Gateways that list it without a price are in `source_gateways` only.
 */
gateway_pricing: { [key in string]: Pricing }, 
/**
 * The gateway the record (and `pricing`) came from.
 */
source_gateway: string, 
/**
 * Every gateway that lists the model (merged view: the union).
 */
source_gateways: Array<string>, 
/**
 * Lowercased; from the record, else the id's `vendor/` prefix.
 */
provider_slug?: string, provider_slugs: Array<string>, description?: string | null, 
/**
 * Tokens.
 */
context_length?: number | null, 
/**
 * Unix seconds.
 */
created?: number | null, canonical_slug?: string | null, architecture?: Architecture | null, supported_parameters?: Array<string> | null, model_logo_url?: string | null, 
/**
 * When this cache first saw the model listed (ISO 8601, UTC); in the merged view,
 * the earliest across its gateways. Absent for models listed when the cache
 * started recording (its baseline), so it never means "there when we started".
 * Set by the cache, never taken from the upstream.
 */
first_seen?: string, };
/**
 * Prices in USD per token, as decimal strings (exact: never a float round trip).
 * A field is null or absent when the gateway gave no such price.
 */
export type Pricing = { prompt?: string | null, completion?: string | null, request?: string | null, image?: string | null, web_search?: string | null, internal_reasoning?: string | null, };
/**
 * As the catalog API sent it.
 */
export type Architecture = { modality?: string | null, input_modalities?: Array<string> | null, output_modalities?: Array<string> | null, };
/**
 * `pricing_unit`: named in every models response, so no client has to guess
 * (the raw catalog API mixes per-token, per-million and per-billion prices).
 */
export type PricingUnit = "usd_per_token";
/**
 * The catalog API's page fields, on every models response.
 *
 * The whole list (no `limit`, no `offset`) is one page: `offset` 0, `limit` null,
 * `has_more` false.
 */
export type Page = { 
/**
 * Models in the whole list (or matching `search`).
 */
total: number, 
/**
 * Models in this response's `data`.
 */
returned: number, offset: number, 
/**
 * The `limit` asked for; null when none was (the rest of the list).
 */
limit: number | null, has_more: boolean, 
/**
 * The `offset` of the next page; null on the last.
 */
next_offset: number | null, };
/**
 * `GET /api/models/changes`: what changed in the gateways' catalogs.
 */
export type ChangesResponse = { 
/**
 * Newest first without `since`; oldest first after it.
 */
changes: Array<Change>, 
/**
 * The cursor to ask `since=` next: the newest change seen by this answer (without
 * `since`: the newest in the log). Opaque.
 */
next: string, };
/**
 * One recorded change of one gateway's catalog.
 */
export type Change = { 
/**
 * When it was seen (the store's clock at the fetch that saw it), ISO 8601.
 */
at: string, gateway: string, kind: ChangeKind, 
/**
 * The model's id (null for `bulk`).
 */
id: string | null, name: string | null, 
/**
 * The model as it was (null for `added` and `bulk`).
 */
before: ModelFacts | null, 
/**
 * The model as it is now (null for `removed` and `bulk`).
 */
after: ModelFacts | null, 
/**
 * `bulk` only: how many models changed, by kind.
 */
counts?: ChangeCounts, 
/**
 * `bulk` only: a few of its changes.
 */
sample?: Array<ChangeSample>, };
export type ChangeKind = "added" | "removed" | "repriced" | "changed" | "bulk";
/**
 * What a change compares, as the models JSON serves it (prices in USD per token).
 */
export type ModelFacts = { name: string, prompt: string | null, completion: string | null, context_length: number | null, };
export type ChangeCounts = { added: number, removed: number, repriced: number, changed: number, };
/**
 * One change of a `bulk` one's sample.
 */
export type ChangeSample = { kind: ChangeKind, id: string, name: string, before: ModelFacts | null, after: ModelFacts | null, };
/**
 * A gateway's last recorded change, on the status.
 */
export type LastChange = { 
/**
 * ISO 8601.
 */
at: string, 
/**
 * Models changed then, by kind.
 */
counts: ChangeCounts, };
/**
 * `GET /api/cache/warm-models`: what is cached, how old, what failed, the counters.
 */
export type StatusResponse = { 
/**
 * `redis` or `memory`.
 */
store: string, 
/**
 * The last store write this instance could not make, while the store has taken
 * none since (`null`: writes go through). A replica (`READONLY`) or a full store
 * (`OOM`) shows here; reads keep answering from what is stored or held in process.
 */
store_write_error: LastError | null, 
/**
 * The last warm run, if any is recorded.
 */
last_run: RunRecord | null, gateways: Array<GatewayState>, 
/**
 * The merged view (`gateway` is `all`).
 */
merged: GatewayState, 
/**
 * The cadence's plan: its spend against the budget.
 */
cadence_plan: CadencePlanState, 
/**
 * This instance's kept answers against `ANSWER_CACHE_MAX_BYTES`.
 */
answer_cache: AnswerCacheState, metrics: StatusMetrics, 
/**
 * When this status was assembled (ISO 8601).
 */
timestamp: string, };
export type GatewayState = { gateway: string, state: KeyState, 
/**
 * Past its stale window but kept: reads serve it (marked fail-safe) while
 * refetches fail.
 */
fail_safe: boolean, 
/**
 * Merged view only: configured gateways with no entry of their own.
 */
missing_gateways?: Array<string>, 
/**
 * Merged view only: the missing gateways whose listings it carried over from
 * the previous merged view (the others are left out of it).
 */
carried_gateways?: Array<string>, age_seconds: number | null, models: number | null, fresh_until: string | null, 
/**
 * End of the served-stale window (the status page draws age against both).
 */
stale_until: string | null, last_error: LastError | null, 
/**
 * Why what is served is held back from the upstream's current answer, if it is
 * (`expired`, `guard`, `carried`, `previous-format`): the same words as the
 * `X-Cache-Fail-Safe-Reason` header. Empty: served as fetched.
 */
fail_safe_reasons: Array<string>, 
/**
 * The collapse guard doubts the upstream's current answer and holds this
 * catalog meanwhile: what it has seen so far.
 */
held?: HeldState, 
/**
 * Merged view only: each carried gateway's data, with the clock it had when it
 * was last fetched (it leaves the merged view when `until` passes).
 */
carried?: Array<CarriedState>, 
/**
 * Gateways only: how often it is refreshed, and why.
 */
cadence?: CadenceState, 
/**
 * Gateways only: the last change recorded in its catalog (`/api/models/changes`);
 * absent when none has been since the baseline.
 */
last_change?: LastChange, };
/**
 * The collapse guard's evidence about a key (see docs/design.md, "Every safety net
 * has an exit").
 */
export type HeldState = { 
/**
 * Why the upstream's answer is suspect.
 */
reason: string, 
/**
 * Models in the suspect answer.
 */
candidate_models: number, 
/**
 * Fetches that returned it so far, and how many must.
 */
observations: number, needed_observations: number, 
/**
 * When it was first seen (ISO 8601); it becomes the truth no earlier than
 * `confirm_after`, once `needed_observations` agree.
 */
first_seen_at: string, confirm_after: string, };
/**
 * How often a gateway is refreshed, learned from its own history (see
 * docs/design.md, "Each gateway refreshed as often as it changes").
 */
export type CadenceState = { 
/**
 * `learned` or `fixed` (`REFRESH_CADENCE`).
 */
mode: string, 
/**
 * The estimated change rate (the prior's, with no evidence).
 */
change_rate_per_day: number, 
/**
 * Observations kept (one per stored fetch), and how many saw a change.
 */
observations: number, changes: number, 
/**
 * The fresh window the next fetch gets: its share of the budget.
 */
fresh_for_seconds: number, 
/**
 * Listings a day at that window (its share of `REFRESH_BUDGET`), and the upstream
 * requests one listing takes (its pages).
 */
planned_listings_per_day: number, requests_per_listing: number, 
/**
 * The mean time from an upstream change to the listing that sees it: half the
 * window.
 */
expected_lag_seconds: number, 
/**
 * When a cron run will find it due (ISO 8601); null with no entry.
 */
next_due_at: string | null, };
/**
 * The cadence's plan across the configured gateways: the upstream requests a day
 * it spends against `REFRESH_BUDGET` (see docs/design.md, "Each gateway refreshed
 * as often as it changes").
 */
export type CadencePlanState = { 
/**
 * `learned` or `fixed` (`REFRESH_CADENCE`).
 */
mode: string, 
/**
 * `REFRESH_BUDGET`, in upstream requests a day.
 */
budget_requests_per_day: number, 
/**
 * What the planned windows spend: never more than the budget, unless even every
 * window at `MODELS_FRESH_MAX_SECONDS` costs more (`fixed`: what fixed spends).
 */
planned_requests_per_day: number, 
/**
 * The mean time from an upstream change to the listing that sees it, over every
 * change (busy gateways weigh more).
 */
expected_lag_seconds: number, };
/**
 * The answers the instance that made this status keeps (search indexes, derived
 * bodies, pages: docs/operations.md, "What an anonymous client can cost an
 * instance"). What every view needs to be served at all is pinned: counted in
 * `kept_bytes`, never evicted, bounded by the configured gateways rather than by
 * the budget, so `kept_bytes` exceeds `budget_bytes` when the pinned answers alone do.
 */
export type AnswerCacheState = { 
/**
 * `ANSWER_CACHE_MAX_BYTES`.
 */
budget_bytes: number, 
/**
 * Bytes kept now (allocated, as counted: buffers' capacities and each entry's
 * share of the maps).
 */
kept_bytes: number, 
/**
 * Of `kept_bytes`, the pinned ones.
 */
pinned_bytes: number, };
/**
 * Freshness of a cached key.
 */
export type KeyState = "fresh" | "stale" | "expired" | "missing";
export type LastError = { error: string, 
/**
 * ISO 8601.
 */
at: string, };
/**
 * Shared counters (every instance's flushed counts, plus this instance's not yet
 * flushed).
 */
export type StatusMetrics = { models: CategoryMetrics, 
/**
 * Why the counters could not be read (they are zeros then).
 */
error?: string, };
/**
 * Counters of one category, with the derived rates.
 */
export type CategoryMetrics = { 
/**
 * Reads answered from a fresh entry.
 */
fresh_hits: number, 
/**
 * Reads answered from a stale entry (while it is refetched).
 */
stale_hits: number, 
/**
 * Reads that found nothing usable and fetched (or waited for a fetch).
 */
misses: number, 
/**
 * Reads answered with an error.
 */
errors: number, revalidations_started: number, revalidations_succeeded: number, revalidations_failed: number, 
/**
 * Another instance held the key's lock: nothing fetched here.
 */
revalidations_skipped_by_lock: number, 
/**
 * The key failed recently: not refetched until its retry window ends.
 */
revalidations_throttled: number, 
/**
 * Reads answered with last-known-good (past the stale window, or the store down).
 */
fail_safe_serves: number, 
/**
 * Store commands that failed or timed out.
 */
store_errors: number, 
/**
 * Writes the store refused or did not answer (a replica's `READONLY`, a full
 * server's `OOM`, a pause): what was fetched is held in process, not shared.
 */
store_write_errors: number, 
/**
 * Counts dropped because a flush's outcome was unknown (it timed out: it may or
 * may not have been applied). Counted so that no count is ever added twice.
 */
metrics_lost: number, 
/**
 * (fresh + stale) / all reads; `null` before any read.
 */
hit_rate: number | null, 
/**
 * fresh / all reads.
 */
fresh_rate: number | null, };
/**
 * A warm run, as stored and as answered by the warm endpoints.
 */
export type RunRecord = { 
/**
 * Every gateway succeeded.
 */
success: boolean, trigger: Trigger, started_at: string, finished_at: string, duration_ms: number, 
/**
 * Models fetched by the gateways that succeeded.
 */
total_models: number, 
/**
 * Models in the merged view after the run (`null` if it could not be built).
 */
merged_models: number | null, gateways_success: number, gateways_failed: number, 
/**
 * Gateways a due-only run left alone (their window ends after the next run).
 */
gateways_not_due: number, details: Array<GatewayOutcome>, };
/**
 * One gateway's part of a run.
 */
export type GatewayOutcome = { gateway: string, status: Outcome, 
/**
 * Models now cached for this gateway (the previous count when the fetch failed).
 */
count: number, duration_ms: number, error?: string, 
/**
 * `not_due` only: when it becomes due (ISO 8601).
 */
next_due_at?: string, 
/**
 * Ids the upstream listed more than once, collapsed to one each (absent: none).
 */
collapsed_duplicates?: number, };
export type Trigger = "manual" | "cron";
export type Outcome = "success" | "error" | "not_due";
