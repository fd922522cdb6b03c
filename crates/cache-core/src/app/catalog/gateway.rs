//! One gateway's catalog from the catalog API: fetched page by page, each page
//! normalised as it arrives, repeated ids collapsed, judged before it is stored.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{SUSPECT_FACTOR, SUSPECT_MIN_MODELS, catalog_json};
use crate::app::RequestContext;
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
pub(super) fn fetch(ctx: RequestContext, gateway: Gateway) -> BoxFuture<Result<Payload, SourceError>> {
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
            let normalized = std::sync::Arc::new(move |models| normalize_page(&gw, models));
            let pages = ctx.app.fetcher.fetch_pages(&gateway, normalized).await?;
            // Upstream requests of this listing: its pages, and the first page asked
            // again at the end of a listing of several.
            let requests = pages.len() as u32 + u32::from(pages.len() > 1);
            let (parts, collapsed) = distinct_records(&pages);
            let total = parts.len();
            let mut payload = Payload::new(catalog_json(&gateway.id, &parts, total, &[]), total as u32);
            payload.collapsed = collapsed;
            payload.requests = requests;
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
pub(super) fn validate(gateway: &Gateway, new: &Payload, previous: Option<&EntryMeta>) -> Verdict {
    match judge_catalog(new, previous) {
        Verdict::Reject(why) => Verdict::Reject(format!("{}: {why}", gateway.id)),
        Verdict::Doubt(why) => Verdict::Doubt(format!("{}: {why}", gateway.id)),
        Verdict::Accept => Verdict::Accept,
    }
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

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
        let gw = crate::gateways::Registry::from_config(&crate::config::Config::from_pairs(&[]).unwrap())
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
}
