//! The merged view's assembly: every configured gateway's part (stored, held, or
//! carried over from the previous merged view), merged and deduplicated
//! ([`crate::gateways::merge`]), with the clock of each input.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{INCOMPLETE_MERGE_FRESH, catalog_json};
use crate::app::{App, RequestContext};
use crate::cadence::Mode;
use crate::clock::now_ms;
use crate::entry::{Entry, InputClock};
use crate::gateways::merge::merge_bodies;
use crate::keys;
use crate::spawn::BoxFuture;
use crate::swr::{Payload, Purpose, SourceError, Verdict};

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

/// How long one merge may take: its gateways' reads, then the merge.
pub(super) fn deadline(app: &App) -> Duration {
    app.registry.max_deadline() + Duration::from_secs(5)
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
pub(super) fn fetch(ctx: RequestContext, purpose: Purpose) -> BoxFuture<Result<Payload, SourceError>> {
    Box::pin(async move {
        let (ctx, app) = (&ctx, &ctx.app);
        let reads = app.registry.all().iter().map(|gw| {
            async move {
                let key = keys::gateway(&gw.id);
                // Taken before reading: a read that finds the key gone forgets it.
                let held = app.cache.held(&key);
                // A read, and (with a learned cadence) a revalidation or a rebuild,
                // read each gateway through the cache: a gateway past its window
                // revalidates (and the merged view follows it). The rebuild too: when
                // other gateways are read directly, their rebuilds keep the merged view
                // fresh, and a gateway read only through it would wait for the cron
                // (issue 38, finding 6). A warm takes what it just stored.
                let through_cache = match purpose {
                    Purpose::Read => true,
                    Purpose::Revalidate | Purpose::Rebuild => app.config.cadence.mode == Mode::Learned,
                    Purpose::Warm => false,
                };
                let stored = match through_cache {
                    true => None,
                    false => app.cache.peek(&key).await,
                };
                let read = match stored {
                    Some(e) => Ok(e),
                    // Boxed: a fill inside a fill (this merge is one) nests two deep
                    // state machines, too deep for a 2 MiB stack in a debug build.
                    None => Box::pin(super::read_gateway(ctx, gw)).await.map(|l| l.entry),
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

/// The merged view is the merge of what is stored, each gateway guarded on its own:
/// guarding the merge again would be a second net with no exit. Only an empty merge
/// is refused.
pub(super) fn validate(new: &Payload) -> Verdict {
    match new.item_count {
        0 => Verdict::Reject("all: 0 models".into()),
        _ => Verdict::Accept,
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
    if let Some(until) = parts.held_until {
        // A held input leaves when it may no longer be served: rebuilt by then.
        let left = Duration::from_millis(until.saturating_sub(now_ms).max(1));
        payload.fresh_for = Some(payload.fresh_for.map_or(left, |f| f.min(left)));
    }
    if incomplete {
        // Rebuilt soon, and no later than the first carried listing's fail-safe ends.
        let carried_left = parts
            .carried_until
            .map(|until| Duration::from_millis(until.saturating_sub(now_ms).max(1)));
        let soon = carried_left.map_or(INCOMPLETE_MERGE_FRESH, |l| l.min(INCOMPLETE_MERGE_FRESH));
        payload.fresh_for = Some(payload.fresh_for.map_or(soon, |f| f.min(soon)));
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
    /// When the first held input (this instance's copy, the previous release's entry)
    /// may no longer be served.
    held_until: Option<u64>,
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
            held_until: None,
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
                // Not "stored": its own fingerprint, so that a warm rebuilds the merged
                // view instead of re-stamping it (issue 38), and the merged view is fresh
                // no longer than this copy may be served.
                Input::Held(e) => {
                    clock = InputClock::of(&e.meta.clock);
                    parts.held_until = Some(
                        parts
                            .held_until
                            .map_or(clock.kept_until_ms, |u| u.min(clock.kept_until_ms)),
                    );
                    (
                        e.identity_uncached().map_err(|e| e.to_string()),
                        Some(format!("held:{}", e.meta.etag)),
                    )
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

/// The merged view's fresh window: `fresh_for` (an incomplete view's), cut to when
/// the first input stops being fresh when it `follows` its inputs (but never under
/// that floor).
pub(super) fn fresh_for_inputs(
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
pub(super) fn sources_fingerprint<'a>(inputs: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (id, etag) in inputs {
        h.update(id.as_bytes());
        h.update(&[0]);
        h.update(etag.unwrap_or("-").as_bytes());
        h.update(&[0]);
    }
    h.digest()
}
