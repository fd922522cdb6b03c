//! Each gateway refreshed as often as it changes (issue 32), end to end in scaled
//! time: real redis-server, the real fetch-and-compare, the sample catalog API with
//! catalogs that change at every listing or never.

use std::time::Duration;

use serde_json::{Value, json};

use super::Stack;
use crate::app::warm::{Outcome, Trigger};
use crate::keys;

/// Scaled time: a default window of 60 s, windows from 1 s to 600 s.
const SCALED: &[(&str, &str)] = &[
    ("REFRESH_CADENCE", "learned"),
    ("GATEWAYS", "groq,cerebras"),
    ("MODELS_FRESH_TTL_SECONDS", "60"),
    ("MODELS_FRESH_MIN_SECONDS", "1"),
    ("MODELS_FRESH_MAX_SECONDS", "600"),
    ("REFRESH_DUE_HORIZON_SECONDS", "5"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = SCALED.to_vec();
    v.extend_from_slice(extra);
    v
}

/// groq's catalog, with a description that says `version`: new content.
fn groq_version(version: u32) -> Vec<Value> {
    let mut models: Vec<Value> =
        serde_json::from_str(sample_catalog::FIXTURES.iter().find(|(g, _)| *g == "groq").unwrap().1).unwrap();
    models[0]["description"] = json!(format!("version {version}"));
    models
}

/// The fresh window the stored entry of `gateway` got, in ms.
async fn window_ms(s: &Stack, app: &crate::App, gateway: &str) -> u64 {
    let _ = s;
    let m = app.cache.peek_meta_in_store(&keys::gateway(gateway)).await.unwrap();
    m.clock.fresh_until_ms - m.clock.fetched_at_ms
}

/// `warms` warms 200 ms apart; groq changes before each one, cerebras never.
async fn watch(s: &Stack, warms: u32) {
    for v in 0..warms {
        s.sample.set_catalog("groq", groq_version(v));
        assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_that_changes_at_every_listing_is_refreshed_sooner_a_quiet_one_not_sooner() {
    let s = Stack::new(&with(&[])).await;
    watch(&s, 8).await;
    let (groq, cerebras) = (
        window_ms(&s, &s.app, "groq").await,
        window_ms(&s, &s.app, "cerebras").await,
    );
    println!(
        "after 8 looks 200 ms apart: groq (changed every time) {groq} ms, cerebras (never) {cerebras} ms; default 60,000 ms"
    );
    assert!(groq < 60_000 / 4, "a busy catalog gets a shorter window: {groq} ms");
    assert!(
        cerebras >= 60_000,
        "a quiet one no shorter than the default: {cerebras} ms"
    );

    // The status says so, and a second instance sees the same windows.
    let b = s.instance(&with(&[]));
    for app in [&s.app, &b] {
        let st: Value = serde_json::from_slice(&app.status().await.identity).unwrap();
        let g = st["gateways"].as_array().unwrap();
        let (groq, cerebras) = (&g[0]["cadence"], &g[1]["cadence"]);
        assert_eq!(groq["mode"], "learned");
        assert_eq!(
            (groq["observations"].as_u64(), groq["changes"].as_u64()),
            (Some(7), Some(7)),
            "{groq}"
        );
        assert_eq!(
            (cerebras["observations"].as_u64(), cerebras["changes"].as_u64()),
            (Some(7), Some(0))
        );
        assert!(groq["fresh_for_seconds"].as_u64().unwrap() < cerebras["fresh_for_seconds"].as_u64().unwrap());
        assert!(groq["change_rate_per_day"].as_f64().unwrap() > cerebras["change_rate_per_day"].as_f64().unwrap());
    }
    s.sample.set_catalog("groq", groq_version(99));
    s.ctx_of(&b).refresh_gateway(&s.gw("groq")).await.unwrap();
    let from_b = window_ms(&s, &b, "groq").await;
    assert!(from_b < 60_000 / 4, "b learned from a's observations: {from_b} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_right_after_refreshes_only_the_due_ones_and_names_the_others() {
    let s = Stack::new(&with(&[])).await;
    watch(&s, 8).await;
    s.sample.reset_counts();
    s.sample.set_catalog("groq", groq_version(100));
    // groq's window (a second or so) ends within the 5 s horizon; cerebras's does not.
    let run = s.ctx().warm_scoped(None, true, Trigger::Cron).await.unwrap();
    assert!(run.success, "{run:?}");
    assert_eq!((run.gateways_success, run.gateways_not_due), (1, 1), "{run:?}");
    assert_eq!(run.details[0].status, Outcome::Success);
    assert_eq!(run.details[1].status, Outcome::NotDue);
    assert!(run.details[1].next_due_at.is_some(), "{run:?}");
    assert_eq!((s.sample.requests("groq"), s.sample.requests("cerebras")), (1, 0));
    let all: Value = serde_json::from_slice(&s.ctx().read_all().await.unwrap().entry.identity().unwrap()).unwrap();
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["description"] == "version 100"),
        "the merged view was rebuilt with the change"
    );
    // A manual warm still refreshes every gateway.
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert_eq!((s.sample.requests("groq"), s.sample.requests("cerebras")), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_gives_every_gateway_the_default_window_and_the_cron_refreshes_all() {
    let mut fixed = with(&[]);
    fixed.retain(|(k, _)| *k != "REFRESH_CADENCE");
    fixed.push(("REFRESH_CADENCE", "fixed"));
    let s = Stack::new(&fixed).await;
    watch(&s, 8).await;
    for g in ["groq", "cerebras"] {
        assert_eq!(window_ms(&s, &s.app, g).await, 60_000, "{g}: the default window");
    }
    s.sample.reset_counts();
    let run = s.ctx().warm_scoped(None, false, Trigger::Cron).await.unwrap();
    assert_eq!((run.gateways_success, run.gateways_not_due), (2, 0));
    assert_eq!((s.sample.requests("groq"), s.sample.requests("cerebras")), (1, 1));
    let st: Value = serde_json::from_slice(&s.app.status().await.identity).unwrap();
    assert_eq!(st["gateways"][0]["cadence"]["mode"], "fixed");
    assert_eq!(st["gateways"][0]["cadence"]["fresh_for_seconds"], 60);
}
