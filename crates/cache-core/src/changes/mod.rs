//! The change feed: what changed in each gateway's catalog, and when this cache first
//! saw each model (issue 40; docs/design.md, "The change feed").
//!
//! ```text
//!  gateway fetch ──► its dates (small, read every fetch) ──► first_seen written into the models
//!        │
//!   judged fit to store ──► dates' etag = the catalog's? ── yes ──► nothing new since recorded
//!        │ no
//!        └──► snapshot (read) ──► diff ──► commit, one script, only over the snapshot it
//!              was diffed from: new snapshot + new dates + the events appended to the log
//! ```
//!
//! The ledger, not the stored entry, is what a catalog is compared with: a previous
//! release's entry, an evicted entry or a write that failed after the commit change
//! nothing it says, and a commit that failed is made by the next fetch (its dates'
//! etag still differs). A held catalog never reaches it (only what the guard lets
//! through is recorded); a first sight (no snapshot) is a baseline: its models get
//! no `first_seen` and nothing is recorded.
//!
//! Keys (`crate::keys`; one hash slot, `{v1}`, so the commit is one script on a Cluster too):
//!
//! | key | holds |
//! |---|---|
//! | `changes:{v1}:seen:<gateway>` | the snapshot: a 16-hex revision, then gzip of `[[id, name, prompt, completion, context_length], ...]` |
//! | `changes:{v1}:dates:<gateway>` | `{"etag": <the recorded catalog's>, "dates": {<id>: <first seen, unix ms>}}`: only models seen after the baseline |
//! | `changes:{v1}:last:<gateway>` | its last change: when, and how many models of each kind ([`LastChange`]) |
//! | `changes:{v1}:log` | the log: a stream of [`Change`]s (JSON), at most [`LOG_MAX_EVENTS`], none older than [`LOG_MAX_AGE`] |

mod atom;
mod read;

pub(crate) use atom::feed as atom_feed;
pub(crate) use read::{DEFAULT_LIMIT, MAX_LIMIT, Query, parse_cursor, read};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::clock::iso8601;
use crate::contract::{Change, ChangeCounts, ChangeKind, ChangeSample, LastChange, ModelFacts};
use crate::encoding::Encoding;
use crate::keys;
use crate::store::{LedgerCommit, Store};

/// The log keeps this many changes (a Redis stream's `MAXLEN`): about 1.5 MB.
pub(crate) const LOG_MAX_EVENTS: usize = 5_000;
/// And none older than this.
pub(crate) const LOG_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
/// A fetch that changes more models than this records one `bulk` change.
pub(crate) const BULK_OVER: usize = 100;
/// A `bulk` change shows this many of its changes.
const BULK_SAMPLE: usize = 10;
/// The snapshot and the dates outlive the last change of their gateway by this much.
pub(crate) const LEDGER_TTL: Duration = Duration::from_secs(400 * 86_400);
/// Commits tried before giving up (another fetch committing in between).
const TRIES: usize = 3;
/// The largest snapshot decoded (a catalog's facts, gzip-bombed or not).
const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;

/// Each of `gateways`' last recorded change (for the status), in one round trip.
pub(crate) async fn last_changes(store: &Store, gateways: &[&str]) -> Vec<Option<LastChange>> {
    let keys: Vec<String> = gateways.iter().map(|g| keys::changes_last(g)).collect();
    match store.get_many(&keys).await {
        Ok(values) => values
            .into_iter()
            .map(|v| v.and_then(|raw| serde_json::from_slice(&raw).ok()))
            .collect(),
        Err(_) => vec![None; gateways.len()],
    }
}

/// A gateway's first-seen dates, and the catalog (its ETag) they were recorded with.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Dates {
    #[serde(default)]
    etag: String,
    #[serde(default)]
    dates: HashMap<String, u64>,
}

impl Dates {
    /// When `id` was first seen (unix ms); `None` for a baseline model.
    pub(crate) fn first_seen(&self, id: &str) -> Option<u64> {
        self.dates.get(id).copied()
    }
}

/// `gateway`'s dates; an empty set when none are stored (nothing recorded yet, or
/// unreadable), `None` when the store cannot be read (then nothing is recorded).
pub(crate) async fn read_dates(store: &Store, gateway: &str) -> Option<Arc<Dates>> {
    match store.get(&keys::changes_dates(gateway)).await {
        Ok(Some(raw)) => Some(Arc::new(serde_json::from_slice(&raw).unwrap_or_default())),
        Ok(None) => Some(Arc::default()),
        Err(e) => {
            tracing::warn!(
                "[Cache Changes] Cannot read {gateway}'s first-seen dates ({e}): none written, none recorded"
            );
            None
        }
    }
}

/// Set `model`'s `first_seen` from `dates`, whatever the upstream sent under that name.
pub(crate) fn stamp_first_seen(model: &mut serde_json::Map<String, Value>, id: &str, dates: &Dates) {
    match dates.first_seen(id) {
        Some(ms) => {
            model.insert("first_seen".into(), Value::String(iso8601(ms)));
        }
        None => {
            model.remove("first_seen");
        }
    }
}

/// What recording a fetched catalog did (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The catalog is the one last recorded, or its dates could not be read.
    Nothing,
    /// No snapshot: the baseline was stored, no change recorded.
    Baseline,
    /// `n` changes were appended (1 for a bulk one).
    Changes(usize),
    /// Another fetch recorded it first, or the store failed: nothing written.
    NotCommitted,
}

/// Makes a gateway's catalog body from its models' JSON (`app::catalog::catalog_json`).
pub(crate) type Rebuild = Arc<dyn Fn(&[&[u8]]) -> Bytes + Send + Sync>;

impl Dates {
    /// Whether these dates were recorded with the catalog whose ETag is `etag`: it has
    /// nothing new to record.
    pub(crate) fn records(&self, etag: &str) -> bool {
        self.etag == etag
    }
}

/// Record what changed in `gateway`'s catalog `json` (judged fit to store; its models
/// carry `first_seen` from `dates`) since the last recorded one. Returns the catalog
/// with each model's `first_seen` as recorded (made by `rebuild`) when that changed it
/// (a model new to it, another fetch's dates). Only the fetch holding the key's lock
/// calls this; the commit's revision check keeps even two fetches at once from
/// recording one change twice. The parsing and diffing (a large catalog's are tens of
/// ms) run off the async workers.
pub(crate) async fn record(
    store: Store,
    gateway: String,
    json: Bytes,
    dates: Arc<Dates>,
    rebuild: Rebuild,
) -> Option<Bytes> {
    let (recorded, json) = record_catalog(&store, &gateway, json, &dates, rebuild).await;
    tracing::debug!("[Cache Changes] {gateway}: {recorded:?}");
    json
}

async fn record_catalog(
    store: &Store,
    gateway: &str,
    json: Bytes,
    dates: &Dates,
    rebuild: Rebuild,
) -> (Recorded, Option<Bytes>) {
    if dates.records(&crate::entry::etag_for(&json)) {
        return (Recorded::Nothing, None);
    }
    let parsed = json.clone();
    let Ok(Some(listed)) = tokio::task::spawn_blocking(move || listed_facts(&parsed)).await else {
        return (Recorded::Nothing, None);
    };
    let listed = Arc::new(listed);
    let now = store.time_ms().await.unwrap_or_else(|_| crate::clock::now_ms());
    let mut current = json;
    let mut rewritten = None;
    for _ in 0..TRIES {
        let snapshot = match store.get(&keys::changes_snapshot(gateway)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("[Cache Changes] Cannot read {gateway}'s snapshot ({e}): not recorded this time");
                return (Recorded::NotCommitted, rewritten);
            }
        };
        // Read after the snapshot: the commit checks the snapshot's revision, so dates
        // committed with a later snapshot make it fail and go round again.
        let Some(dates) = read_dates(store, gateway).await else {
            return (Recorded::NotCommitted, rewritten);
        };
        let (listed_now, body, id, make) = (listed.clone(), current.clone(), gateway.to_string(), rebuild.clone());
        let Ok(step) =
            tokio::task::spawn_blocking(move || Step::plan(snapshot, &dates, &listed_now, &body, &id, now, &*make))
                .await
        else {
            return (Recorded::NotCommitted, rewritten);
        };
        if let Some(json) = step.json {
            current = json.clone();
            rewritten = Some(json);
        }
        let new_dates = Dates {
            etag: crate::entry::etag_for(&current),
            dates: step.dates,
        };
        let commit = LedgerCommit {
            snapshot_key: &keys::changes_snapshot(gateway),
            dates_key: &keys::changes_dates(gateway),
            log_key: keys::CHANGES_LOG,
            last_key: &keys::changes_last(gateway),
            last: Bytes::from(serde_json::to_vec(&step.last).expect("plain fields serialize")),
            expected_rev: &step.expected_rev,
            snapshot: step.snapshot,
            dates: Bytes::from(serde_json::to_vec(&new_dates).expect("maps serialize")),
            ttl: LEDGER_TTL,
            events: step.events,
            log_max: LOG_MAX_EVENTS,
            log_min_ms: now.saturating_sub(LOG_MAX_AGE.as_millis() as u64),
        };
        let count = commit.events.len();
        match store.commit_ledger(commit).await {
            Ok(true) if step.baseline => {
                tracing::info!(
                    "[Cache Changes] {gateway}: baseline of {} models recorded",
                    listed.len()
                );
                return (Recorded::Baseline, rewritten);
            }
            Ok(true) => {
                if count > 0 {
                    tracing::info!("[Cache Changes] {gateway}: {count} change(s) recorded");
                }
                return (Recorded::Changes(count), rewritten);
            }
            // Another fetch committed between our read and our commit: diff again
            // against what it recorded, with its dates.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("[Cache Changes] {gateway}: changes not recorded ({e}); the next fetch records them");
                return (Recorded::NotCommitted, rewritten);
            }
        }
    }
    (Recorded::NotCommitted, rewritten)
}

/// One attempt's commit, planned from what the store holds (off the async workers).
struct Step {
    /// No snapshot was stored: this commit is the baseline.
    baseline: bool,
    /// The revision the commit expects (empty: none).
    expected_rev: Vec<u8>,
    snapshot: Bytes,
    dates: HashMap<String, u64>,
    events: Vec<Bytes>,
    last: LastChange,
    /// The catalog with its models' `first_seen` set, when that changed it.
    json: Option<Bytes>,
}

impl Step {
    fn plan(
        raw_snapshot: Option<Bytes>,
        dates: &Dates,
        listed: &[(String, ModelFacts)],
        json: &[u8],
        gateway: &str,
        now: u64,
        rebuild: &dyn Fn(&[&[u8]]) -> Bytes,
    ) -> Step {
        // What the store holds decides the revision the commit expects, decodable or
        // not: a snapshot it cannot read (corrupt, another format) is replaced by a baseline.
        let expected_rev = raw_snapshot
            .as_ref()
            .map(|raw| raw[..raw.len().min(16)].to_vec())
            .unwrap_or_default();
        let snapshot = raw_snapshot.and_then(|raw| Snapshot::decode(&raw));
        let (changes, new_dates) = match &snapshot {
            None => (Vec::new(), kept_dates(dates, listed)),
            Some(snap) => diff(snap, listed, dates, now),
        };
        let rev = snapshot.as_ref().map_or(0, |s| s.rev);
        Step {
            baseline: snapshot.is_none(),
            expected_rev,
            snapshot: Snapshot::encode(rev + 1, listed),
            events: events(gateway, now, &changes),
            last: LastChange {
                at: iso8601(now),
                counts: counts(&changes),
            },
            json: with_first_seen(json, &new_dates, rebuild),
            dates: new_dates,
        }
    }
}

/// A gateway's catalog body, its models unparsed.
#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

/// The models of a catalog body, as a change compares them, in listing order.
fn listed_facts(json: &[u8]) -> Option<Vec<(String, ModelFacts)>> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Listed {
        id: Value,
        name: Value,
        pricing: Value,
        context_length: Value,
    }
    let body: Listing = serde_json::from_slice(json).ok()?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    Some(
        body.data
            .iter()
            .filter_map(|raw| {
                let m: Listed = serde_json::from_str(raw.get()).unwrap_or_default();
                let id = text(&m.id)?;
                let facts = ModelFacts {
                    name: text(&m.name).unwrap_or_else(|| id.clone()),
                    prompt: m.pricing.get("prompt").and_then(text),
                    completion: m.pricing.get("completion").and_then(text),
                    context_length: m.context_length.as_u64(),
                };
                Some((id, facts))
            })
            .collect(),
    )
}

/// The last recorded catalog of a gateway, as a change compares it.
struct Snapshot {
    rev: u64,
    models: HashMap<String, ModelFacts>,
    /// Ids in listing order (removals are reported in it).
    order: Vec<String>,
}

/// A snapshot's row: id, name, prompt, completion, context length.
type SnapshotRow = (String, String, Option<String>, Option<String>, Option<u64>);
type SnapshotRowRef<'a> = (
    &'a String,
    &'a String,
    &'a Option<String>,
    &'a Option<String>,
    Option<u64>,
);

impl Snapshot {
    fn encode(rev: u64, listed: &[(String, ModelFacts)]) -> Bytes {
        let rows: Vec<SnapshotRowRef> = listed
            .iter()
            .map(|(id, f)| (id, &f.name, &f.prompt, &f.completion, f.context_length))
            .collect();
        let json = serde_json::to_vec(&rows).expect("rows serialize");
        let mut out = format!("{rev:016x}").into_bytes();
        out.extend_from_slice(&crate::encoding::stored(&json, Encoding::Gzip));
        Bytes::from(out)
    }

    fn decode(raw: &[u8]) -> Option<Snapshot> {
        let rev = u64::from_str_radix(std::str::from_utf8(raw.get(..16)?).ok()?, 16).ok()?;
        let json = crate::encoding::decompress(Encoding::Gzip, &raw[16..], MAX_SNAPSHOT_BYTES).ok()?;
        let rows: Vec<SnapshotRow> = serde_json::from_slice(&json).ok()?;
        let mut models = HashMap::with_capacity(rows.len());
        let mut order = Vec::with_capacity(rows.len());
        for (id, name, prompt, completion, context_length) in rows {
            order.push(id.clone());
            models.insert(
                id,
                ModelFacts {
                    name,
                    prompt,
                    completion,
                    context_length,
                },
            );
        }
        Some(Snapshot { rev, models, order })
    }
}

/// The dates of the models still listed (a baseline keeps those it had: a snapshot
/// evicted before its dates).
fn kept_dates(dates: &Dates, listed: &[(String, ModelFacts)]) -> HashMap<String, u64> {
    listed
        .iter()
        .filter_map(|(id, _)| dates.first_seen(id).map(|ms| (id.clone(), ms)))
        .collect()
}

/// The changes from `snap` to `listed`, and the new dates: models added get `now`,
/// unless the change is a bulk one (a gateway listed anew, a catalog back from a
/// collapse: "new" must not mean "back").
fn diff(
    snap: &Snapshot,
    listed: &[(String, ModelFacts)],
    dates: &Dates,
    now: u64,
) -> (Vec<ChangeSample>, HashMap<String, u64>) {
    let mut changes = Vec::new();
    let mut added = Vec::new();
    let sample = |kind, id: &str, before: Option<&ModelFacts>, after: Option<&ModelFacts>| ChangeSample {
        kind,
        id: id.to_string(),
        name: after.or(before).map(|f| f.name.clone()).unwrap_or_default(),
        before: before.cloned(),
        after: after.cloned(),
    };
    let mut present = std::collections::HashSet::with_capacity(listed.len());
    for (id, now_facts) in listed {
        present.insert(id.as_str());
        match snap.models.get(id) {
            None => {
                added.push(id.clone());
                changes.push(sample(ChangeKind::Added, id, None, Some(now_facts)));
            }
            Some(was) => {
                if was.prompt != now_facts.prompt || was.completion != now_facts.completion {
                    changes.push(sample(ChangeKind::Repriced, id, Some(was), Some(now_facts)));
                }
                if was.name != now_facts.name || was.context_length != now_facts.context_length {
                    changes.push(sample(ChangeKind::Changed, id, Some(was), Some(now_facts)));
                }
            }
        }
    }
    for id in snap.order.iter().filter(|id| !present.contains(id.as_str())) {
        changes.push(sample(ChangeKind::Removed, id, snap.models.get(id), None));
    }
    let mut new_dates = kept_dates(dates, listed);
    if changes.len() <= BULK_OVER {
        new_dates.extend(added.into_iter().map(|id| (id, now)));
    }
    (changes, new_dates)
}

/// The log's records for `changes`: one each, or one `bulk` over [`BULK_OVER`].
fn events(gateway: &str, now: u64, changes: &[ChangeSample]) -> Vec<Bytes> {
    let at = iso8601(now);
    let record = |c: &Change| Bytes::from(serde_json::to_vec(c).expect("changes serialize"));
    if changes.len() > BULK_OVER {
        return vec![record(&Change {
            at,
            gateway: gateway.to_string(),
            kind: ChangeKind::Bulk,
            id: None,
            name: None,
            before: None,
            after: None,
            counts: Some(counts(changes)),
            sample: Some(changes.iter().take(BULK_SAMPLE).cloned().collect()),
        })];
    }
    changes
        .iter()
        .map(|c| {
            record(&Change {
                at: at.clone(),
                gateway: gateway.to_string(),
                kind: c.kind,
                id: Some(c.id.clone()),
                name: Some(c.name.clone()),
                before: c.before.clone(),
                after: c.after.clone(),
                counts: None,
                sample: None,
            })
        })
        .collect()
}

/// How many of `changes` are of each kind.
fn counts(changes: &[ChangeSample]) -> ChangeCounts {
    let mut counts = ChangeCounts::default();
    for c in changes {
        *match c.kind {
            ChangeKind::Added => &mut counts.added,
            ChangeKind::Removed => &mut counts.removed,
            ChangeKind::Repriced => &mut counts.repriced,
            ChangeKind::Changed | ChangeKind::Bulk => &mut counts.changed,
        } += 1;
    }
    counts
}

/// `json` (a gateway's catalog body) with each model's `first_seen` from `dates`;
/// `None` when it has them already.
fn with_first_seen(json: &[u8], dates: &HashMap<String, u64>, rebuild: &dyn Fn(&[&[u8]]) -> Bytes) -> Option<Bytes> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Dated {
        id: Value,
        first_seen: Value,
    }
    let body: Listing = serde_json::from_slice(json).ok()?;
    let mut rewritten: Vec<Option<Vec<u8>>> = Vec::with_capacity(body.data.len());
    let mut any = false;
    for raw in &body.data {
        let m: Dated = serde_json::from_str(raw.get()).unwrap_or_default();
        let id = m.id.as_str().unwrap_or_default();
        let want = dates.get(id).map(|ms| iso8601(*ms));
        if m.first_seen.as_str() == want.as_deref() {
            rewritten.push(None);
            continue;
        }
        let mut model: serde_json::Map<String, Value> = serde_json::from_str(raw.get()).ok()?;
        match want {
            Some(w) => model.insert("first_seen".into(), Value::String(w)),
            None => model.remove("first_seen"),
        };
        rewritten.push(Some(serde_json::to_vec(&model).expect("maps serialize")));
        any = true;
    }
    if !any {
        return None;
    }
    let parts: Vec<&[u8]> = body
        .data
        .iter()
        .zip(&rewritten)
        .map(|(raw, new)| new.as_deref().unwrap_or(raw.get().as_bytes()))
        .collect();
    Some(rebuild(&parts))
}

#[cfg(test)]
mod tests;
