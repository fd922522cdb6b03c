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
    // Same cost (one request a listing): the busy one gets the shorter window, the
    // quiet one pays for it, and the two spend the budget (fixed's: 2 x 1440 a day).
    assert!(groq < 60_000, "a busy catalog gets a shorter window: {groq} ms");
    assert!(cerebras > 60_000, "a quiet one a longer one: {cerebras} ms");
    let (spend, budget) = s.app.cadence_plan().await.spend();
    assert!(
        spend <= budget * (1.0 + 1e-9) && budget == 2.0 * 1440.0,
        "within the budget: {spend:.1} of {budget} a day"
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
        assert!(
            groq["planned_listings_per_day"].as_f64().unwrap() > cerebras["planned_listings_per_day"].as_f64().unwrap()
        );
        assert!(groq["expected_lag_seconds"].as_u64().unwrap() < cerebras["expected_lag_seconds"].as_u64().unwrap());
        let plan = &st["cadence_plan"];
        assert_eq!(plan["budget_requests_per_day"], 2880.0, "{plan}");
        assert!(plan["planned_requests_per_day"].as_f64().unwrap() <= 2880.0, "{plan}");
        assert!(groq["change_rate_per_day"].as_f64().unwrap() > cerebras["change_rate_per_day"].as_f64().unwrap());
    }
    s.sample.set_catalog("groq", groq_version(99));
    s.ctx_of(&b).refresh_gateway(&s.gw("groq")).await.unwrap();
    let from_b = window_ms(&s, &b, "groq").await;
    assert!(from_b < 60_000, "b learned from a's observations: {from_b} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_right_after_refreshes_only_the_due_ones_and_names_the_others() {
    let s = Stack::new(&with(&[("REFRESH_DUE_HORIZON_SECONDS", "45")])).await;
    watch(&s, 8).await;
    s.sample.reset_counts();
    s.sample.set_catalog("groq", groq_version(100));
    // groq's window (half a minute or so) ends within the 45 s horizon; cerebras's
    // (several minutes) does not.
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

/// `n` models of `gateway`, the first one's description saying `version`.
fn models(gateway: &str, n: usize, version: u32) -> Vec<Value> {
    (0..n)
        .map(
            |i| json!({"id": format!("{gateway}/m{i}"), "name": format!("m{i}"), "description": format!("v{version}")}),
        )
        .collect()
}

/// The bytes a warm sends to Redis (commands and values).
async fn unchanged_warm(s: &Stack) -> u64 {
    let before = bytes_sent_to(s);
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    bytes_sent_to(s) - before
}

/// The bytes Redis has read from its clients so far (`INFO stats`).
fn bytes_sent_to(s: &Stack) -> u64 {
    let info = s._redis.command(&[b"INFO", b"stats"]);
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_input_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_never_exceeds_the_budget_from_an_empty_history_to_a_full_one() {
    // Three gateways of different costs (pages of 4 models) and rates; a budget of
    // 0.7x fixed's, checked after every warm until the histories are full (128).
    let s = Stack::new(&with(&[
        ("GATEWAYS", "groq,cerebras,xai"),
        ("FETCH_PAGE_LIMIT", "4"),
        ("REFRESH_BUDGET", "0.7x"),
    ]))
    .await;
    s.sample.set_catalog("cerebras", models("cerebras", 9, 0));
    s.sample.set_catalog("xai", models("xai", 2, 0));
    let check = |plan: &crate::app::schedule::CadencePlan, when: &str| {
        let (spent, budget) = plan.spend();
        assert!(spent <= budget * (1.0 + 1e-9), "{when}: {spent} a day over {budget}");
        spent
    };
    let empty = s.app.cadence_plan().await;
    let spent = check(&empty, "no history");
    assert!(
        (spent / empty.spend().1 - 1.0).abs() < 1e-3,
        "the whole budget is planned: {spent}"
    );
    for v in 0..130u32 {
        s.sample.set_catalog("groq", models("groq", 11, v));
        if v % 5 == 0 {
            s.sample.set_catalog("cerebras", models("cerebras", 9, v));
        }
        assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
        let plan = s.app.cadence_plan().await;
        check(&plan, &format!("after warm {v}"));
        // And the windows the stored entries hold: a window given runs to its end.
        let mut held = 0.0;
        // Requests per listing in pages of 4, each later page from the last model of
        // the one before: groq's 11 models 4 pages (0, 3, 6, 9), cerebras's 9 three.
        for (g, cost) in [("groq", 4.0), ("cerebras", 3.0), ("xai", 1.0)] {
            held += cost * 86_400_000.0 / window_ms(&s, &s.app, g).await as f64;
        }
        let budget = plan.spend().1;
        assert!(
            held <= budget * 1.001,
            "after warm {v}: the windows in force spend {held:.0} of {budget:.0} a day"
        );
    }
    let list = s._redis.command(&[b"LLEN", b"cadence:v2:models:v4:groq"]);
    assert_eq!(String::from_utf8_lossy(&list).trim(), ":128", "a full history");
    // The first day's budget came from the prior; the costs learned since moved it.
    let full = s.app.cadence_plan().await;
    assert!(
        full.spend().1 > empty.spend().1,
        "budget at measured costs: {:?}",
        full.spend()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_plan_the_same_windows() {
    let s = Stack::new(&with(&[])).await;
    watch(&s, 6).await;
    let b = s.instance(&with(&[]));
    // b reads the histories a wrote; a folded its own looks in as it made them.
    let (from_a, from_b) = (s.app.cadence_plan().await.windows(), b.cadence_plan().await.windows());
    assert_eq!(from_a, from_b);
    s.app.forget_cadence_plan();
    assert_eq!(s.app.cadence_plan().await.windows(), from_b, "and a fresh read agrees");
    assert!(from_a[0] < from_a[1], "groq (busy) before cerebras (quiet): {from_a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_listing_gets_a_longer_window_than_a_same_rate_small_one() {
    // Both change at every listing; groq's takes 3 pages + the first again (4
    // requests), cerebras's one page.
    let s = Stack::new(&with(&[("FETCH_PAGE_LIMIT", "4")])).await;
    for v in 0..8 {
        s.sample.set_catalog("groq", models("groq", 11, v));
        s.sample.set_catalog("cerebras", models("cerebras", 3, v));
        assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (groq, cerebras) = (
        window_ms(&s, &s.app, "groq").await,
        window_ms(&s, &s.app, "cerebras").await,
    );
    assert!(
        groq > cerebras,
        "the costly listing waits longer: groq {groq} ms, cerebras {cerebras} ms"
    );
    let st: Value = serde_json::from_slice(&s.app.status().await.identity).unwrap();
    assert_eq!(st["gateways"][0]["cadence"]["requests_per_listing"], 4);
    assert_eq!(st["gateways"][1]["cadence"]["requests_per_listing"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_costs_the_store_the_same_few_bytes_at_any_history_length() {
    // Real catalogs: the largest and the busiest of the fixtures, and two small ones.
    let gateways = "featherless,openrouter,together,groq";
    // Real catalogs take their time in a debug build on a busy machine: deadlines
    // that are not this test's subject.
    let s = Stack::new(&with(&[
        ("GATEWAYS", gateways),
        ("GATEWAY_TIMEOUT_FAST_MS", "20000"),
        ("GATEWAY_TIMEOUT_SLOW_MS", "20000"),
    ]))
    .await;
    unchanged_warm(&s).await;
    let short = unchanged_warm(&s).await;
    // Fill every history to 128 records (as 127 looks an hour apart would), keeping
    // the last look's record last.
    for g in gateways.split(',') {
        let key = format!("cadence:v2:models:v4:{g}");
        let last = s._redis.command(&[b"LINDEX", key.as_bytes(), b"-1"]);
        let last = String::from_utf8_lossy(&last);
        let last = last.lines().nth(1).expect("a record").to_string();
        let at: u64 = last.split(' ').next().unwrap().parse().unwrap();
        s._redis.command(&[b"DEL", key.as_bytes()]);
        for i in (1..128u64).rev() {
            let r = format!("{} 3600000 0 1 0000000000000000", at - i * 3_600_000);
            s._redis.command(&[b"RPUSH", key.as_bytes(), r.as_bytes()]);
        }
        s._redis.command(&[b"RPUSH", key.as_bytes(), last.as_bytes()]);
    }
    // Read the rewritten histories once (what an instance does once a minute), then
    // measure a warm in the steady state, as `short` was.
    s.app.forget_cadence_plan();
    unchanged_warm(&s).await;
    let full = unchanged_warm(&s).await;
    let len = s._redis.command(&[b"LLEN", b"cadence:v2:models:v4:groq"]);
    assert_eq!(String::from_utf8_lossy(&len).trim(), ":128", "still 128 records");
    // A changed warm, for scale: every catalog changed.
    for g in gateways.split(',') {
        let mut m = s.models(g).await;
        m[0]["description"] = json!("changed");
        s.sample.set_catalog(g, m);
    }
    let before = bytes_sent_to(&s);
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let changed = bytes_sent_to(&s) - before;
    println!(
        "bytes sent to Redis by a warm of {gateways}: unchanged {short} (2 looks each), {full} (128 looks each); changed {changed}"
    );
    assert!(full <= short + 64, "O(1) per observation: {short} then {full} bytes");
    assert!(
        full as f64 <= 0.05 * changed as f64,
        "an unchanged warm writes {full} bytes, over 5% of a changed one's {changed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_history_is_read() {
    let s = Stack::new(&with(&[])).await;
    // What the previous release stored: groq changed at each of 40 looks a second apart.
    let now = crate::clock::now_ms();
    let observations: Vec<Value> = (0..40u64)
        .map(|i| json!({"at_ms": now - (40 - i) * 1000, "interval_ms": 1000, "changed": true}))
        .collect();
    let doc = json!({"last_ms": now - 1000, "last_etag": "\"m-x\"", "observations": observations}).to_string();
    s._redis.command(&[b"SET", b"cadence:models:v4:groq", doc.as_bytes()]);
    let st: Value = serde_json::from_slice(&s.app.status().await.identity).unwrap();
    let (groq, cerebras) = (&st["gateways"][0]["cadence"], &st["gateways"][1]["cadence"]);
    assert_eq!(groq["observations"], 40, "{groq}");
    assert_eq!(groq["changes"], 40, "{groq}");
    assert!(
        groq["fresh_for_seconds"].as_u64() < cerebras["fresh_for_seconds"].as_u64(),
        "its evidence counts: {groq} vs {cerebras}"
    );
    // And it still counts beside this release's own looks.
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    s.app.forget_cadence_plan();
    let st: Value = serde_json::from_slice(&s.app.status().await.identity).unwrap();
    assert_eq!(
        st["gateways"][0]["cadence"]["observations"], 40,
        "the first look of ours is a baseline"
    );
}

/// Issue 38, finding 6: other gateways' writes rebuild the merged view often enough to
/// keep it fresh (here a rebuild every 300 ms, the merged view's floor is 2 s), so it
/// never goes stale; cerebras, read only through `all`, must still be refreshed when
/// its window (2 s) ends, not wait for the cron.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_read_only_through_all_is_refreshed_whatever_else_is_read() {
    let s = Stack::new(&[
        ("REFRESH_CADENCE", "learned"),
        ("GATEWAYS", "groq,cerebras"),
        ("MODELS_FRESH_TTL_SECONDS", "2"),
        ("MODELS_FRESH_MIN_SECONDS", "2"),
        ("MODELS_FRESH_MAX_SECONDS", "2"),
        ("TTL_JITTER_PERCENT", "0"),
        ("REBUILD_COALESCE_MS", "0"),
    ])
    .await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let after_warm = s.sample.requests("cerebras");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        // What another gateway's write does: rebuild the merged view.
        s.ctx().rebuild_all().await.unwrap();
        for _ in 0..3 {
            s.ctx().read_all().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    s.tasks.idle().await;
    let listed = s.sample.requests("cerebras") - after_warm;
    println!("cerebras, read only through `all`, was listed {listed} times in 7 s (window 2 s)");
    assert!(listed >= 2, "refreshed when its window ends: {listed}");
    assert!(listed <= 4, "and not more often: {listed}");
}
