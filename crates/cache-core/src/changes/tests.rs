//! The change ledger on the embedded store (its Redis twin runs in `tests/it`).

use super::*;
use crate::store::MemoryStore;

fn rebuild() -> Rebuild {
    Arc::new(|parts: &[&[u8]]| crate::app::catalog::catalog_json("groq", parts, parts.len(), &[]))
}

fn catalog(models: &[(&str, &str, &str)]) -> Bytes {
    let parts: Vec<Vec<u8>> = models
        .iter()
        .map(|(id, prompt, name)| {
            serde_json::to_vec(&serde_json::json!({
                "id": id, "name": name, "pricing": {"prompt": prompt, "completion": "0.000002"},
                "context_length": 8192,
            }))
            .unwrap()
        })
        .collect();
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    rebuild()(&parts)
}

/// A fetch as the gateway source makes it: its dates read first and written into the
/// models, then recorded. The catalog as stored.
async fn fetch(store: &Store, models: &[(&str, &str, &str)]) -> (Recorded, Bytes) {
    let dates = read_dates(store, "groq").await.unwrap();
    let mut json = catalog(models);
    if let Some(dated) = with_first_seen(&json, &dates.dates, &*rebuild()) {
        json = dated;
    }
    let (recorded, rewritten) = record_catalog(store, "groq", json.clone(), &dates, rebuild()).await;
    (recorded, rewritten.unwrap_or(json))
}

async fn log(store: &Store) -> Vec<Change> {
    let q = Query {
        since: Some(crate::store::LogId::ZERO),
        gateway: None,
        kinds: Vec::new(),
        limit: 10_000,
    };
    read(store, &q, crate::clock::now_ms()).await.unwrap().changes
}

fn first_seen(json: &Bytes) -> Vec<(String, Option<String>)> {
    let v: Value = serde_json::from_slice(json).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["first_seen"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_first_sight_is_a_baseline_and_later_changes_are_recorded_once_each() {
    let store = Store::Memory(MemoryStore::new(""));
    let (r, p) = fetch(&store, &[("a", "0.000001", "A"), ("b", "0.000001", "B")]).await;
    assert_eq!(r, Recorded::Baseline);
    assert!(
        first_seen(&p).iter().all(|(_, d)| d.is_none()),
        "baseline models are not new"
    );
    assert!(log(&store).await.is_empty());

    // The same catalog again: nothing to record, nothing rewritten.
    let (r, again) = fetch(&store, &[("a", "0.000001", "A"), ("b", "0.000001", "B")]).await;
    assert_eq!(r, Recorded::Nothing);
    assert_eq!(again, p);

    // b repriced and renamed, c added, a removed.
    let (r, p) = fetch(&store, &[("b", "0.000003", "B2"), ("c", "0.000001", "C")]).await;
    assert_eq!(r, Recorded::Changes(4));
    let kinds: Vec<(ChangeKind, Option<String>)> = log(&store).await.into_iter().map(|c| (c.kind, c.id)).collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Repriced, Some("b".into())),
            (ChangeKind::Changed, Some("b".into())),
            (ChangeKind::Added, Some("c".into())),
            (ChangeKind::Removed, Some("a".into())),
        ]
    );
    let repriced = &log(&store).await[0];
    assert_eq!(repriced.before.as_ref().unwrap().prompt.as_deref(), Some("0.000001"));
    assert_eq!(repriced.after.as_ref().unwrap().prompt.as_deref(), Some("0.000003"));
    let dates = first_seen(&p);
    assert_eq!(dates[0].1, None, "b was there at the baseline");
    assert!(dates[1].1.is_some(), "c is new: {dates:?}");

    // Stable: the next fetch of the same catalog has the same bytes and records nothing.
    let (r, same) = fetch(&store, &[("b", "0.000003", "B2"), ("c", "0.000001", "C")]).await;
    assert_eq!(r, Recorded::Nothing);
    assert_eq!((first_seen(&same), &same), (dates, &p));
    assert_eq!(log(&store).await.len(), 4);
}

#[tokio::test]
async fn a_change_of_many_models_is_one_bulk_change_and_its_models_are_not_new() {
    let store = Store::Memory(MemoryStore::new(""));
    fetch(&store, &[("a", "1", "A")]).await;
    let ids: Vec<String> = (0..5_000).map(|i| format!("m{i}")).collect();
    let many: Vec<(&str, &str, &str)> = ids.iter().map(|id| (id.as_str(), "1", id.as_str())).collect();
    let (r, p) = fetch(&store, &many).await;
    assert_eq!(r, Recorded::Changes(1));
    let log = log(&store).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, ChangeKind::Bulk);
    let counts = log[0].counts.unwrap();
    assert_eq!((counts.added, counts.removed), (5_000, 1));
    assert_eq!(log[0].sample.as_ref().unwrap().len(), BULK_SAMPLE);
    assert!(first_seen(&p).iter().all(|(_, d)| d.is_none()));
}

#[tokio::test]
async fn two_fetches_diffed_from_one_snapshot_record_it_once() {
    let store = Store::Memory(MemoryStore::new(""));
    fetch(&store, &[("a", "1", "A")]).await;
    // Two fetches read the same dates; both saw b added.
    let dates = read_dates(&store, "groq").await.unwrap();
    let json = catalog(&[("a", "1", "A"), ("b", "1", "B")]);
    let (first, second) = tokio::join!(
        record_catalog(&store, "groq", json.clone(), &dates, rebuild()),
        record_catalog(&store, "groq", json.clone(), &dates, rebuild())
    );
    assert_eq!(log(&store).await.len(), 1, "{:?} {:?}", first.0, second.0);
    assert_eq!(first.1, second.1, "both carry the one recorded date");
}

#[test]
fn an_upstream_first_seen_is_never_served() {
    let mut m = serde_json::Map::new();
    m.insert("first_seen".into(), "1999-01-01".into());
    stamp_first_seen(&mut m, "x", &Dates::default());
    assert!(!m.contains_key("first_seen"));
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_read_is_replaced_by_a_baseline() {
    let store = Store::Memory(MemoryStore::new(""));
    fetch(&store, &[("a", "1", "A")]).await;
    store
        .set(
            &crate::keys::changes_snapshot("groq"),
            Bytes::from_static(b"garbage"),
            LEDGER_TTL,
        )
        .await
        .unwrap();
    let (r, _) = fetch(&store, &[("a", "1", "A"), ("b", "1", "B")]).await;
    assert_eq!(r, Recorded::Baseline, "not stuck on a revision it cannot match");
    let (r, _) = fetch(&store, &[("b", "1", "B")]).await;
    assert_eq!(r, Recorded::Changes(1));
}
