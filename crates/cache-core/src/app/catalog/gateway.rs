//! One gateway's catalog from the catalog API: fetched page by page, each page
//! normalised as it arrives, repeated ids collapsed, judged before it is stored.

use std::time::Duration;

use serde_json::{Map, Value};

use super::DatesSlot;
use super::{SUSPECT_FACTOR, SUSPECT_MIN_MODELS, catalog_json};
use crate::app::RequestContext;
use crate::changes::{Dates, stamp_first_seen};
use crate::entry::EntryMeta;
use crate::gateways::Gateway;
use crate::gateways::normalize::normalize;
use crate::spawn::BoxFuture;
use crate::swr::{Payload, SourceError, Verdict};

/// How long one fetch of `gateway` may take: the fetcher enforces the gateway's
/// deadline itself; the margin covers normalisation and serialization of a large
/// catalog.
pub(super) fn deadline(gateway: &Gateway) -> Duration {
    gateway.deadline + Duration::from_secs(2)
}

/// Fetch `gateway`'s catalog page by page, each page normalised as it arrives, repeated
/// ids collapsed.
/// The first-seen dates the fetch wrote into the models are left in `dates_used`, for
/// recording the catalog once it is judged fit to store (`super::CatalogSource::accepted`).
pub(super) fn fetch(
    ctx: RequestContext,
    gateway: Gateway,
    dates_used: DatesSlot,
) -> BoxFuture<Result<Payload, SourceError>> {
    let span = tracing::info_span!(
        "gateway.fetch",
        gateway = %gateway.id,
        models = tracing::field::Empty,
        bytes = tracing::field::Empty
    );
    let record = span.clone();
    Box::pin(tracing::Instrument::instrument(
        async move {
            let started = std::time::Instant::now();
            let gw = gateway.clone();
            // The first-seen dates go into each model as it is normalised (and the
            // catalog's ETag covers them): an unchanged catalog stays byte-identical.
            let first_seen = crate::changes::read_dates(ctx.app.store(), &gateway.id).await;
            let dates = first_seen.clone().unwrap_or_default();
            let normalized = std::sync::Arc::new(move |models| normalize_page(&gw, models, &dates));
            let pages = ctx.app.fetcher.fetch_pages(&gateway, normalized).await?;
            // Upstream requests of this listing: its pages (each later one overlapping
            // the one before by a model; a listing the upstream's `next_offset` leads
            // asks its first page again too, not counted: rare, and one request).
            let requests = pages.len() as u32;
            let (parts, collapsed) = distinct_records(&pages);
            let total = parts.len();
            let mut payload = Payload::new(catalog_json(&gateway.id, &parts, total, &[]), total as u32);
            payload.collapsed = collapsed;
            payload.requests = requests;
            *dates_used.lock() = first_seen;
            drop(parts);
            drop(pages);
            tracing::info!(
                "[Cache Fetch] Fetched {}: {} models{}, {} bytes in {} ms",
                gateway.id,
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

/// Judge a fetched catalog of `gateway` against what is stored.
pub(super) fn validate(gateway: &Gateway, new: &Payload, previous: Option<&EntryMeta>, peak: Option<u32>) -> Verdict {
    match judge_catalog(new.item_count, previous.map(|p| p.item_count), peak) {
        Verdict::Reject(why) => Verdict::Reject(format!("{}: {why}", gateway.id)),
        Verdict::Doubt(why) => Verdict::Doubt(format!("{}: {why}", gateway.id)),
        Verdict::Accept => Verdict::Accept,
    }
}

/// Rejects empty catalogs; doubts one of `now` models that collapsed under a tenth of
/// the stored (last accepted) one, `was`, or of the largest accepted within the
/// guard's memory, `peak` (so that steps of 20 % each, 1,500 → 300 → 60, are a
/// collapse at the second, and an answer after the entry was evicted is still
/// judged); and one that grew over tenfold from `was` beyond anything in that memory
/// (a return to the peak is a recovery, not a spike). The guard then wants the
/// upstream to confirm it before it replaces what is stored.
fn judge_catalog(now: u32, was: Option<u32>, peak: Option<u32>) -> Verdict {
    if now == 0 {
        return Verdict::Reject("0 models".into());
    }
    let reference = was.max(peak);
    if let Some(reference) = reference
        && reference >= SUSPECT_MIN_MODELS
        && now.saturating_mul(SUSPECT_FACTOR) < reference
    {
        return Verdict::Doubt(match (was, peak) {
            (Some(was), _) if was == reference => format!("catalog collapsed to {now} models (from {was})"),
            _ => format!("catalog collapsed to {now} models (from {reference}, the largest accepted within a day)"),
        });
    }
    let Some(was) = was else {
        return Verdict::Accept;
    };
    let beyond_peak = peak.is_none_or(|p| now > p.saturating_add(p / 20));
    if now >= SUSPECT_MIN_MODELS && now > was.saturating_mul(SUSPECT_FACTOR) && beyond_peak {
        Verdict::Doubt(format!("catalog jumped to {now} models (from {was})"))
    } else {
        Verdict::Accept
    }
}

/// One page of models, normalised and serialized: the objects back to back, and
/// each one's id and end offset (so that a listing's repeated ids can be collapsed
/// across pages without parsing again).
pub(crate) struct NormalizedPage {
    json: Vec<u8>,
    records: Vec<(String, usize)>,
}

/// Normalise and serialize one page of models, each with its `first_seen` from `dates`.
pub(crate) fn normalize_page(gw: &Gateway, models: Vec<Map<String, Value>>, dates: &Dates) -> NormalizedPage {
    let mut page = NormalizedPage {
        json: Vec::with_capacity(models.len() * 900),
        records: Vec::with_capacity(models.len()),
    };
    for m in models {
        if let Some(mut m) = normalize(gw, m) {
            let id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            stamp_first_seen(&mut m, &id, dates);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doubted(v: Verdict) -> bool {
        matches!(v, Verdict::Doubt(_))
    }

    #[test]
    fn collapses_and_jumps_are_doubted_against_the_last_accepted_catalog() {
        assert_eq!(judge_catalog(0, None, None), Verdict::Reject("0 models".into()));
        assert_eq!(judge_catalog(1, None, None), Verdict::Accept);
        assert!(doubted(judge_catalog(5, Some(300), None)), "a collapse");
        assert_eq!(judge_catalog(30, Some(300), None), Verdict::Accept);
        assert_eq!(
            judge_catalog(2, Some(40), None),
            Verdict::Accept,
            "small catalogs may shrink"
        );
        assert!(doubted(judge_catalog(413, Some(11), None)), "a jump");
        assert_eq!(
            judge_catalog(40, Some(3), None),
            Verdict::Accept,
            "small catalogs may grow"
        );
        assert_eq!(
            judge_catalog(11, Some(11), Some(11)),
            Verdict::Accept,
            "back to the truth after a held spike: the spike was never accepted, so it is no peak"
        );
    }

    #[test]
    fn the_largest_catalog_accepted_within_a_day_is_a_reference_too() {
        // A ratchet: 1,500 → 300 is accepted (a fifth), 300 → 60 is a collapse of the peak.
        assert_eq!(judge_catalog(300, Some(1500), Some(1500)), Verdict::Accept);
        let v = judge_catalog(60, Some(300), Some(1500));
        assert!(
            matches!(&v, Verdict::Doubt(why) if why.contains("from 1500, the largest accepted within a day")),
            "{v:?}"
        );
        // The entry evicted: the peak still judges.
        assert!(doubted(judge_catalog(3, None, Some(319))), "evicted mid-doubt");
        assert_eq!(judge_catalog(319, None, Some(319)), Verdict::Accept);
        // A recovery to the peak is no spike; beyond it, it is.
        assert_eq!(judge_catalog(319, Some(3), Some(319)), Verdict::Accept, "recovered");
        assert!(doubted(judge_catalog(4000, Some(3), Some(319))), "beyond the peak");
    }

    #[test]
    fn repeated_ids_are_collapsed_across_pages_first_listing_wins() {
        let gw = crate::gateways::Registry::from_config(&crate::config::Config::from_pairs(&[]).unwrap())
            .resolve("groq")
            .unwrap()
            .clone();
        let model = |id: &str, name: &str| {
            serde_json::from_value::<Map<String, Value>>(serde_json::json!({"id": id, "name": name})).unwrap()
        };
        let pages = [
            normalize_page(
                &gw,
                vec![model("a", "first"), model("b", "b"), model("a", "again")],
                &Dates::default(),
            ),
            normalize_page(&gw, vec![model("c", "c"), model("b", "again")], &Dates::default()),
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
}
