//! The change feed on real Redis, with the sample catalog changing between warms
//! (issue 40): what is recorded, once, by whom, and what is not.

use serde_json::{Value, json};

use super::Stack;
use crate::contract::{Change, ChangeKind, Trigger};
use crate::store::LogId;

const GW: &str = "openrouter";

fn model(id: &str, prompt: &str) -> Value {
    json!({
        "id": id, "name": id.to_uppercase(), "context_length": 8192,
        "pricing": {"prompt": prompt, "completion": "0.000002"},
    })
}

fn catalog(n: usize, prompt: &str) -> Vec<Value> {
    (0..n).map(|i| model(&format!("m/{i}"), prompt)).collect()
}

async fn stack() -> Stack {
    let s = Stack::new(&[("GATEWAYS", "openrouter,groq")]).await;
    s.sample.set_catalog(GW, catalog(60, "0.000001"));
    s
}

async fn log(s: &Stack) -> Vec<Change> {
    let q = crate::changes::Query {
        since: Some(LogId::ZERO),
        gateway: None,
        kinds: Vec::new(),
        limit: 10_000,
    };
    crate::changes::read(s.app.store(), &q, crate::clock::now_ms())
        .await
        .unwrap()
        .changes
}

fn first_seen_of(models: &[Value], id: &str) -> Option<String> {
    let m = models
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} listed"));
    m.get("first_seen").and_then(Value::as_str).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_removed_and_repriced_models_are_recorded_once_each_by_two_instances_at_once() {
    let s = stack().await;
    let other = s.instance(&[("GATEWAYS", "openrouter,groq")]);
    let warm = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(warm.success, "{:?}", warm.details);
    assert!(log(&s).await.is_empty(), "a first sight is a baseline");
    let before = s.models("all").await;
    assert!(
        before.iter().all(|m| m.get("first_seen").is_none()),
        "nothing is new at the baseline"
    );

    // m/0 removed, m/1 repriced, m/new added.
    let mut next = catalog(60, "0.000001");
    next.remove(0);
    next[0] = model("m/1", "0.000005");
    next.push(model("m/new", "0.000003"));
    s.sample.set_catalog(GW, next);
    let gw = s.gw(GW);
    let (one, two) = (s.ctx(), s.ctx_of(&other));
    let (a, b) = tokio::join!(one.refresh_gateway(&gw), two.refresh_gateway(&gw));
    assert!(a.is_ok() && b.is_ok(), "{:?} {:?}", a.err(), b.err());
    // And two whole warms at once, of the same catalog: nothing more.
    let (w1, w2) = tokio::join!(one.warm(None, Trigger::Manual), two.warm(None, Trigger::Manual));
    assert!(w1.is_ok() || w2.is_ok());

    let changes = log(&s).await;
    let seen: Vec<(ChangeKind, &str)> = changes.iter().map(|c| (c.kind, c.id.as_deref().unwrap())).collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Repriced, "m/1"),
            (ChangeKind::Added, "m/new"),
            (ChangeKind::Removed, "m/0")
        ],
        "{changes:#?}"
    );
    let repriced = &changes[0];
    assert_eq!(repriced.gateway, GW);
    assert_eq!(repriced.before.as_ref().unwrap().prompt.as_deref(), Some("0.000001"));
    assert_eq!(repriced.after.as_ref().unwrap().prompt.as_deref(), Some("0.000005"));
    assert_eq!(changes[2].before.as_ref().unwrap().name, "M/0");

    // first_seen: the added model only, the change's time, in the gateway and in `all`,
    // the same on the other instance, and after a restart (a new instance) and a warm.
    s.ctx().rebuild_all().await.unwrap();
    let added_at = Some(changes[1].at.clone());
    for models in [s.models(GW).await, s.models("all").await] {
        assert_eq!(first_seen_of(&models, "m/new"), added_at);
        assert_eq!(first_seen_of(&models, "m/2"), None);
    }
    let restarted = s.instance(&[("GATEWAYS", "openrouter,groq")]);
    s.ctx_of(&restarted).warm(None, Trigger::Manual).await.unwrap();
    let lookup = s.ctx_of(&restarted).read_gateway(&gw).await.unwrap();
    let v: Value = serde_json::from_slice(&lookup.entry.identity().unwrap()).unwrap();
    assert_eq!(first_seen_of(v["data"].as_array().unwrap(), "m/new"), added_at);
    assert_eq!(log(&s).await.len(), 3, "warms of an unchanged catalog record nothing");

    // The status shows each gateway's last change.
    let st: Value = serde_json::from_slice(&restarted.status().await.identity).unwrap();
    let gws = st["gateways"].as_array().unwrap();
    let of = |id: &str| gws.iter().find(|g| g["gateway"] == id).unwrap().clone();
    assert_eq!(of(GW)["last_change"]["at"], json!(changes[0].at));
    assert_eq!(
        of(GW)["last_change"]["counts"],
        json!({"added": 1, "removed": 1, "repriced": 1, "changed": 0})
    );
    assert!(of("groq").get("last_change").is_none(), "no change since its baseline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_catalog_records_nothing_until_confirmed_then_one_bulk_change() {
    let s = Stack::new(&[
        ("GATEWAYS", "openrouter"),
        ("GUARD_CONFIRM_FETCHES", "2"),
        ("GUARD_CONFIRM_SECONDS", "1"),
        ("REVALIDATE_RETRY_SECONDS", "0"),
    ])
    .await;
    s.sample.set_catalog(GW, catalog(5_000, "0.000001"));
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    // Collapsed to 3 models: doubted, held.
    s.sample.set_catalog(GW, catalog(3, "0.000001"));
    let gw = s.gw(GW);
    let held = s.ctx().refresh_gateway(&gw).await;
    assert!(held.is_err(), "held: {held:?}");
    assert!(log(&s).await.is_empty(), "a held catalog records nothing");
    // Confirmed: one bulk change of 4,997 removals.
    let mut confirmed = None;
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        if let Ok(e) = s.ctx().refresh_gateway(&gw).await {
            confirmed = Some(e);
            break;
        }
    }
    assert_eq!(confirmed.expect("the guard confirms it").meta.item_count, 3);
    let changes = log(&s).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].kind, ChangeKind::Bulk);
    assert_eq!(changes[0].counts.unwrap().removed, 4_997);
    // Back to 5,000: one bulk change, and the models that came back are not "new".
    s.sample.set_catalog(GW, catalog(5_000, "0.000001"));
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        if s.ctx().refresh_gateway(&gw).await.is_ok() {
            break;
        }
    }
    let changes = log(&s).await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].counts.unwrap().added, 4_997);
    assert!(s.models(GW).await.iter().all(|m| m.get("first_seen").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_entries_are_no_baseline_and_record_nothing() {
    let s = Stack::new(&[("GATEWAYS", "groq,cerebras,featherless")]).await;
    super::exits::previous_release_writes(&s._redis);
    // Read as last-known-good, then fetched: the first sight is a baseline.
    s.models("groq").await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(log(&s).await.is_empty());
    assert!(s.models("all").await.iter().all(|m| m.get("first_seen").is_none()));
}
