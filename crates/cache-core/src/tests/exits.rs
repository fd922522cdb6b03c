//! Every safety net has an exit (issue 29), on a real redis-server, several app
//! instances standing for several function instances (and two releases):
//!
//! 1. the collapse guard judges against the last accepted catalog, holds a suspect
//!    answer visibly, and takes it as the truth once the upstream confirms it;
//! 2. a carried gateway keeps its data's clock and leaves `all` when its fail-safe
//!    ends; one the upstream says is gone (404) is never carried;
//! 3. two releases (entry formats 3 and 4) share one store without thrashing, and the
//!    previous release's entries are last-known-good;
//! 4. a listing that changes between pages with the same `total` is fetched again;
//! 5. a store without `SCRIPT` stores, and releases its locks;
//! 6. the fail-safe ends at `FAILSAFE_MAX_SECONDS` for reads;
//! 7. ids a listing repeats are collapsed, and the warm says how many.

use crate::RequestContext;
use std::time::Duration;

use sample_catalog::Fault;
use serde_json::{Value, json};
use test_support::redis::RedisServer;

use super::{Stack, listed_by};
use crate::app::warm::{Outcome, Trigger};
use crate::keys;

fn fixture(id: &str) -> Vec<Value> {
    serde_json::from_str(sample_catalog::FIXTURES.iter().find(|(g, _)| *g == id).unwrap().1).unwrap()
}

async fn body_of(lookup: &crate::Lookup) -> Value {
    serde_json::from_slice(&lookup.entry.identity().unwrap()).unwrap()
}

async fn status(app: &crate::App) -> Value {
    serde_json::from_slice(&app.status().await.identity).unwrap()
}

fn gateway_status<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gateway"] == id)
        .unwrap()
}

/// Finding 1: for one warm the upstream ignores the gateway filter and answers groq
/// with openrouter's and together's 413 models; then 11 again. The spike is held
/// (groq keeps its 11, marked), and the next correct answer clears it at once: no
/// high-water mark pins the wrong data for days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_is_held_visibly_and_the_next_correct_answer_clears_it() {
    let s = Stack::new(&[("GATEWAYS", "groq,together")]).await;
    let b = s.instance(&[("GATEWAYS", "groq,together")]);
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);

    let mut spike = fixture("openrouter");
    spike.extend(fixture("together"));
    assert_eq!(spike.len(), 413);
    s.sample.set_catalog("groq", spike);
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(!run.success, "{run:?}");
    let groq = &run.details[0];
    assert_eq!((groq.status, groq.count), (Outcome::Error, 11), "{groq:?}");
    let error = groq.error.as_deref().unwrap();
    assert!(
        // 413 rows, 372 distinct ids (openrouter and together share some).
        error.contains("jumped to 372 models (from 11)") && error.contains("holding the last accepted catalog"),
        "the warm's report names the held catalog: {error}"
    );

    // Any instance serves groq's 11, marked held; `all` lists groq for its own 11 only.
    let read = s.ctx_of(&b).read_gateway(&s.gw("groq")).await.unwrap();
    assert_eq!(read.entry.meta.item_count, 11);
    assert_eq!(read.fail_safe_reasons(), ["guard"]);
    let all = body_of(&s.ctx_of(&b).read_all().await.unwrap()).await;
    assert_eq!(listed_by(all["data"].as_array().unwrap(), "groq"), 11);
    let st = status(&b).await;
    let g = gateway_status(&st, "groq");
    assert_eq!(g["fail_safe_reasons"], json!(["guard"]), "{g}");
    assert_eq!(g["held"]["candidate_models"], 372, "{g}");
    assert_eq!(g["held"]["observations"], 1, "{g}");
    assert_eq!(g["models"], 11);

    // The upstream answers right again: the truth, at once, on the next warm.
    s.sample.set_catalog("groq", fixture("groq"));
    let run = s.ctx_of(&b).warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    let read = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    assert_eq!(read.entry.meta.item_count, 11);
    assert!(read.fail_safe_reasons().is_empty(), "the mark is gone");
    assert!(
        s.app.cache.evidence(&keys::gateway("groq")).await.is_none(),
        "and the evidence"
    );
    let st = status(&s.app).await;
    assert!(gateway_status(&st, "groq")["held"].is_null());
}

/// Finding 1, a real cut of more than 90 %: held while unconfirmed, then taken as the
/// truth once the upstream answered the same size on GUARD_CONFIRM_FETCHES fetches
/// over GUARD_CONFIRM_SECONDS. The evidence comes from reads too: the held entry's
/// fresh window is cut to the spacing, so reads revalidate (here every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cut_becomes_the_truth_once_the_upstream_confirms_it() {
    let vars = [
        ("GATEWAYS", "openrouter"),
        ("GUARD_CONFIRM_FETCHES", "3"),
        ("GUARD_CONFIRM_SECONDS", "2"),
        ("REVALIDATE_RETRY_SECONDS", "0"),
    ];
    let s = Stack::new(&vars).await;
    let b = s.instance(&vars);
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    s.sample.set_catalog("openrouter", fixture("openrouter")[..20].to_vec());

    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(
        run.details[0]
            .error
            .as_deref()
            .unwrap()
            .contains("collapsed to 20 models (from 319)")
    );
    let mut seen = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Reads on both instances: one fetch per key at a time, whoever reads.
        for app in [&s.app, &b] {
            let r = s.ctx_of(app).read_gateway(&s.gw("openrouter")).await.unwrap();
            if seen.last() != Some(&r.entry.meta.item_count) {
                seen.push(r.entry.meta.item_count);
            }
        }
        s.tasks.idle().await;
        if seen.last() == Some(&20) {
            break;
        }
    }
    assert_eq!(seen, [319, 20], "held, then the truth");
    let stored = s.app.cache.peek(&keys::gateway("openrouter")).await.unwrap();
    assert!(!stored.meta.held());
    println!(
        "a cut from 319 to 20 models became the truth after {} upstream requests",
        s.sample.requests("openrouter")
    );
    assert!(
        s.sample.requests("openrouter") <= 5,
        "a fetch per spacing, not per read: {}",
        s.sample.requests("openrouter")
    );
}

/// Entries that live 4 s in all (fresh 1, stale 1, fail-safe 2), retried at once.
const SHORT_LIVES: &[(&str, &str)] = &[
    ("GATEWAYS", "groq,together"),
    ("MODELS_FRESH_TTL_SECONDS", "1"),
    ("MODELS_STALE_TTL_SECONDS", "1"),
    ("FAILSAFE_MAX_SECONDS", "2"),
    ("REVALIDATE_RETRY_SECONDS", "0"),
];

/// Finding 2, the gateway gone upstream (404): its own entry serves within its
/// windows (marked fail-safe once expired); `all` keeps it while that entry may be
/// served, never carries it, and drops it when the entry's fail-safe ends. Before,
/// each rebuild carried groq's listings over with a new clock, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_gone_upstream_leaves_all_when_its_fail_safe_ends() {
    let mut vars = SHORT_LIVES.to_vec();
    vars.push(("FETCH_SOFT_TIMEOUT_MS", "200"));
    let s = Stack::new(&vars).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    s.sample.set_fault("groq", Fault::NotFound);
    let warmed_at = std::time::Instant::now();
    let mut last_with_groq = None;
    let mut carried_ever = false;
    while warmed_at.elapsed() < Duration::from_secs(8) {
        let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
        assert!(run.details[0].error.as_deref().unwrap().contains("404"), "{run:?}");
        let all = s.ctx().read_all().await.unwrap();
        let body = body_of(&all).await;
        carried_ever |= body["carried_gateways"] != json!([]);
        if listed_by(body["data"].as_array().unwrap(), "groq") > 0 {
            last_with_groq = Some(warmed_at.elapsed());
        } else {
            assert_eq!(body["missing_gateways"], json!(["groq"]));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last = last_with_groq.expect("groq was served while its own entry could be");
    println!(
        "groq, gone upstream, was in `all` until {:.1} s (its fail-safe ends at 4 s)",
        last.as_secs_f64()
    );
    assert!(!carried_ever, "a gateway the upstream says is gone is never carried");
    assert!(
        // Its fail-safe ends 4 s after the warm; a busy machine may notice late, but a
        // carried gateway would be listed to the end of the 8 s.
        last < Duration::from_millis(6_000),
        "{last:?}: it leaves when its fail-safe ends"
    );
    let err = s.ctx().read_gateway(&s.gw("groq")).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

/// Finding 2, an evicted gateway whose upstream fails (a transient 500): carried over
/// with the clock its data had, marked (`carried_gateways`, the fail-safe reason, the
/// status's age), and gone from `all` once that clock's fail-safe ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_gateway_keeps_its_clock_and_leaves_when_its_fail_safe_ends() {
    let s = Stack::new(SHORT_LIVES).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let fetched_at = s.app.cache.peek(&keys::gateway("together")).await.unwrap().meta.clock;
    s._redis.command(&[b"DEL", b"models:v4:together"]);
    s.sample.set_fault("together", Fault::ServerError);

    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let all = s.ctx().read_all().await.unwrap();
    let body = body_of(&all).await;
    assert_eq!(listed_by(body["data"].as_array().unwrap(), "together"), 94, "carried");
    assert_eq!(body["carried_gateways"], json!(["together"]));
    assert!(all.fail_safe_reasons().contains(&"carried"));
    let carried_clock = all.entry.meta.inputs[1];
    assert_eq!(
        (carried_clock.fetched_at_ms, carried_clock.kept_until_ms),
        (fetched_at.fetched_at_ms, fetched_at.kept_until_ms),
        "the carried data keeps the clock it had"
    );
    let st = status(&s.app).await;
    assert_eq!(st["merged"]["carried"][0]["gateway"], "together", "{}", st["merged"]);
    assert!(
        st["merged"]["fail_safe_reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("carried"))
    );

    // Warms go on; the carried listings leave once their fail-safe ends (4 s).
    let mut left_at = None;
    while left_at.is_none() && crate::clock::now_ms() < fetched_at.kept_until_ms + 3_000 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.ctx().warm(None, Trigger::Manual).await.unwrap();
        let body = body_of(&s.ctx().read_all().await.unwrap()).await;
        if listed_by(body["data"].as_array().unwrap(), "together") == 0 {
            assert_eq!(body["missing_gateways"], json!(["together"]));
            assert_eq!(body["carried_gateways"], json!([]));
            left_at = Some(crate::clock::now_ms());
        }
    }
    let left_at = left_at.expect("the carried listings left `all`");
    println!(
        "carried listings left `all` {} ms after their fail-safe ended",
        left_at.saturating_sub(fetched_at.kept_until_ms)
    );
    assert!(left_at >= fetched_at.kept_until_ms, "not before their fail-safe ended");
}

/// The previous release's entries (format 3, written by that release's code: the
/// fixtures), with their clocks moved to now, as that release keeps them fresh.
pub(super) fn previous_release_writes(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    previous_release_writes_kept(redis, 86_400_000)
}

/// [`previous_release_writes`], kept `kept_ms` from now (fresh for a third of it,
/// stale until two thirds).
fn previous_release_writes_kept(redis: &RedisServer, kept_ms: u64) -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tests/fixtures/format3");
    let now = crate::clock::now_ms();
    let mut written = Vec::new();
    for name in [
        "models_groq",
        "models_cerebras",
        "models_featherless",
        "models_all_a5063fc1",
    ] {
        let mut raw = std::fs::read(format!("{dir}/{name}.bin")).unwrap();
        let clock = match kept_ms {
            86_400_000 => crate::entry::Clock {
                fetched_at_ms: now,
                fresh_until_ms: now + 3_600_000,
                stale_until_ms: now + 7_200_000,
                kept_until_ms: now + 86_400_000,
            },
            kept => crate::entry::Clock {
                fetched_at_ms: now,
                fresh_until_ms: now + kept / 3,
                stale_until_ms: now + kept * 2 / 3,
                kept_until_ms: now + kept,
            },
        };
        raw[crate::entry::CLOCK_OFFSET..crate::entry::CLOCK_OFFSET + crate::entry::CLOCK_LEN]
            .copy_from_slice(&clock.encode());
        let key = name.replacen('_', ":", 1).replacen("all_", "all:", 1);
        assert_eq!(redis.command(&[b"SET", key.as_bytes(), &raw]), b"+OK\r\n");
        written.push((key, raw));
    }
    written
}

/// Finding 3: the previous release (format 3, under `models:*`) and this one share a
/// Redis. Featherless's upstream is down after the previous release's warm. This
/// release serves featherless and `all` from the previous release's entries
/// (marked), never overwrites them, and the previous release's writes do not make
/// this one refetch. Before: each read the other's entries as unreadable, refetched
/// and overwrote (up to 39 listings per gateway in 20 s), and this release built an
/// `all` of 375 models without featherless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_releases_share_a_store_and_a_deploy_loses_nothing() {
    let vars = [
        ("GATEWAYS", "groq,cerebras,featherless"),
        ("REVALIDATE_RETRY_SECONDS", "5"),
        ("FETCH_SOFT_TIMEOUT_MS", "300"),
    ];
    let s = Stack::new(&vars).await;
    let b = s.instance(&vars);
    assert_eq!(s.app.all_key(), "models:v4:all:a5063fc1", "the fixtures' gateway set");
    let mut previous = previous_release_writes(&s._redis);
    s.sample.set_fault("featherless", Fault::ServerError);

    let feather = s.ctx().read_gateway(&s.gw("featherless")).await.unwrap();
    assert_eq!(feather.entry.meta.item_count, 1_500);
    assert!(
        feather.fail_safe,
        "last-known-good: {:?} {:?}",
        feather.status, feather.entry.meta
    );
    assert_eq!(feather.fail_safe_reasons(), ["expired", "previous-format"]);
    let all = s.ctx().read_all().await.unwrap();
    let body = body_of(&all).await;
    let data = body["data"].as_array().unwrap();
    let old_all: Value = serde_json::from_slice(
        &crate::entry::Entry::decode_previous_format(previous[3].1.clone().into())
            .unwrap()
            .identity()
            .unwrap(),
    )
    .unwrap();
    let old_data = old_all["data"].as_array().unwrap();
    assert_eq!(data.len(), old_data.len(), "the deploy lost nothing");
    assert_eq!(listed_by(data, "featherless"), listed_by(old_data, "featherless"));
    assert_eq!((listed_by(data, "groq"), listed_by(data, "cerebras")), (11, 9));
    assert_eq!(body["missing_gateways"], json!([]));
    s.tasks.idle().await;

    // 20 rounds: the previous release rewrites its keys, each release reads.
    let before: Vec<u64> = ["groq", "cerebras"].iter().map(|g| s.sample.requests(g)).collect();
    for _ in 0..20 {
        previous = previous_release_writes(&s._redis);
        for app in [&s.app, &b] {
            for g in ["groq", "cerebras", "featherless"] {
                s.ctx_of(app).read_gateway(&s.gw(g)).await.unwrap();
            }
            s.ctx_of(app).read_all().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.tasks.idle().await;
    let after: Vec<u64> = ["groq", "cerebras"].iter().map(|g| s.sample.requests(g)).collect();
    println!(
        "20 rounds of reads on two instances beside the previous release's writes: {:?} more upstream listings (groq, cerebras)",
        after.iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<_>>()
    );
    assert_eq!(after, before, "no thrash: this release's own keys stay valid");
    for (key, raw) in &previous {
        // The value's length and its header (clock, ETag) are the previous release's.
        let len = s._redis.command(&[b"STRLEN", key.as_bytes()]);
        assert_eq!(len, format!(":{}\r\n", raw.len()).into_bytes(), "{key}");
        let head = s._redis.command(&[b"GETRANGE", key.as_bytes(), b"0", b"99"]);
        assert!(
            head.windows(100).any(|w| w == &raw[..100]),
            "{key}: the previous release's entry is never overwritten"
        );
    }
}

/// Finding 4: 1,500 models in pages of 500; after page 1 the upstream withdraws model
/// #3 and appends a new one, `total` unchanged. The first page asked again at the end
/// shows the move: the fetch starts again and stores the new listing, whole. Before,
/// the warm stored 1,500 models with one present in both versions missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_changes_with_the_same_total_is_fetched_again() {
    let s = Stack::new(&[("GATEWAYS", "featherless"), ("FETCH_PAGE_LIMIT", "500")]).await;
    let original = fixture("featherless");
    let id = |m: &Value| m["id"].as_str().unwrap().to_string();
    let withdrawn = id(&original[2]);
    // The model that sat at index 500 (the first of page 2) moves onto page 1.
    let at_the_seam = id(&original[500]);
    s.sample.set_fault("featherless", Fault::Swapping { times: 1 });
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    let models = s.models("featherless").await;
    let ids: std::collections::HashSet<String> = models.iter().map(id).collect();
    assert_eq!(models.len(), original.len(), "the same total");
    assert!(ids.contains(&at_the_seam), "no model lost at a page seam");
    assert!(!ids.contains(&withdrawn), "the withdrawn model is not served");
    assert!(ids.iter().any(|i| i.starts_with("appended/")), "the new one is");

    s.sample.set_fault("featherless", Fault::Swapping { times: u32::MAX });
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let error = run.details[0].error.as_deref().unwrap();
    assert!(error.contains("not the previous page's last model"), "{error}");
    assert_eq!(run.details[0].count as usize, original.len(), "the good data stays");
}

/// Finding 5: a managed Redis that renamed `SCRIPT` away. Before: nothing was
/// stored, a lock could not be released (a second instance's read waited 12 s), the
/// warm answered 502 and left `lock:warm` behind (the next warm got 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_script_stores_and_releases_its_locks() {
    let redis = RedisServer::start_with(vec!["--rename-command".into(), "SCRIPT".into(), "".into()]);
    assert!(
        String::from_utf8_lossy(&redis.command(&[b"SCRIPT", b"FLUSH"])).contains("unknown command"),
        "SCRIPT is gone on this server"
    );
    let sample = sample_catalog::start_local().await;
    let app = Stack::app_for(&sample, &redis, &[("GATEWAYS", "groq,cerebras")]);
    let other = Stack::app_for(&sample, &redis, &[("GATEWAYS", "groq,cerebras")]);
    let tasks = crate::spawn::TaskSpawner::new();
    let spawner: std::sync::Arc<dyn crate::spawn::Spawner> = std::sync::Arc::new(tasks.clone());
    let run = RequestContext::new(app.clone(), spawner.clone())
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    assert!(run.success, "{run:?}");
    assert_eq!(
        redis.command(&[b"EXISTS", b"lock:warm"]),
        b":0\r\n",
        "no lock left behind"
    );
    assert!(
        RequestContext::new(app.clone(), spawner.clone())
            .warm(None, Trigger::Manual)
            .await
            .unwrap()
            .success,
        "no 409"
    );
    let started = std::time::Instant::now();
    let r = RequestContext::new(other.clone(), spawner.clone())
        .read_gateway(other.registry.resolve("groq").unwrap())
        .await
        .unwrap();
    assert_eq!((r.status, r.entry.meta.item_count), (crate::CacheStatus::Hit, 11));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    tasks.idle().await;
    assert_eq!(sample.requests("groq"), 2, "one fetch per warm, none for the read");
}

/// Finding 6: with FAILSAFE_MAX_SECONDS=1 the kept value is served to reads until 1 s
/// past the stale window, not for the store key's extra minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fail_safe_ends_at_failsafe_max_seconds_for_reads() {
    let s = Stack::new(&[
        ("GATEWAYS", "groq"),
        ("MODELS_FRESH_TTL_SECONDS", "1"),
        ("MODELS_STALE_TTL_SECONDS", "1"),
        ("FAILSAFE_MAX_SECONDS", "1"),
        ("REVALIDATE_RETRY_SECONDS", "0"),
    ])
    .await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let kept_until = s
        .app
        .cache
        .peek(&keys::gateway("groq"))
        .await
        .unwrap()
        .meta
        .clock
        .kept_until_ms;
    s.sample.set_fault("groq", Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let r = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    assert!(r.fail_safe, "inside the fail-safe window");
    while crate::clock::now_ms() <= kept_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = s.ctx().read_gateway(&s.gw("groq")).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "past it: {err}");
    assert_eq!(
        s._redis.command(&[b"EXISTS", b"models:v4:groq"]),
        b":1\r\n",
        "the key itself is still there (the status page's minute)"
    );
    let st = status(&s.app).await;
    assert_eq!(gateway_status(&st, "groq")["state"], "expired");
}

/// Finding 7: a listing with every id twice (22 rows, 11 distinct) is served once
/// each, `total` 11, and the warm says it collapsed 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_a_listing_repeats_are_collapsed_and_counted() {
    let s = Stack::new(&[("GATEWAYS", "groq")]).await;
    let mut twice = fixture("groq");
    twice.extend(fixture("groq"));
    s.sample.set_catalog("groq", twice);
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    assert_eq!(
        (run.details[0].count, run.details[0].collapsed_duplicates),
        (11, Some(11))
    );
    let lookup = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    let body = body_of(&lookup).await;
    assert_eq!(
        (body["data"].as_array().unwrap().len(), body["total"].as_u64()),
        (11, Some(11))
    );
}

/// Issue 38, finding 9: the upstream's answer stays suspect (a cut to 20 of 319 that
/// never gathers its evidence in time) until the held catalog's fail-safe ends. From
/// then the held catalog may not be served, so the upstream's answer is taken: reads
/// answer its 20 models, not 503 while the upstream answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_takes_the_upstream_once_the_held_catalog_may_not_be_served() {
    let vars = [
        ("GATEWAYS", "openrouter"),
        ("MODELS_FRESH_TTL_SECONDS", "1"),
        ("MODELS_STALE_TTL_SECONDS", "1"),
        ("FAILSAFE_MAX_SECONDS", "1"),
        ("GUARD_CONFIRM_FETCHES", "3"),
        ("GUARD_CONFIRM_SECONDS", "600"),
        ("REVALIDATE_RETRY_SECONDS", "10"),
    ];
    let s = Stack::new(&vars).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let kept_until = s
        .app
        .cache
        .peek(&keys::gateway("openrouter"))
        .await
        .unwrap()
        .meta
        .clock
        .kept_until_ms;
    s.sample.set_catalog("openrouter", fixture("openrouter")[..20].to_vec());
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(!run.success, "held while the held catalog may be served: {run:?}");
    let read = s.ctx().read_gateway(&s.gw("openrouter")).await.unwrap();
    assert_eq!(
        (read.entry.meta.item_count, read.fail_safe_reasons()),
        (319, vec!["guard"])
    );

    while crate::clock::now_ms() <= kept_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = s.ctx().read_gateway(&s.gw("openrouter")).await;
    let read = read.expect("the upstream's answer, not an error");
    assert_eq!(read.entry.meta.item_count, 20);
    assert!(read.fail_safe_reasons().is_empty(), "{:?}", read.fail_safe_reasons());
    assert!(
        s.app.cache.evidence(&keys::gateway("openrouter")).await.is_none(),
        "the evidence is gone with it"
    );
    s.tasks.idle().await;
    let all = body_of(&s.ctx().read_all().await.unwrap()).await;
    assert_eq!(
        listed_by(all["data"].as_array().unwrap(), "openrouter"),
        20,
        "and `all` lists them"
    );
}

/// Issue 38, small: `GUARD_CONFIRM_FETCHES=1` takes the first suspect answer at once,
/// with the default span (a single fetch spans nothing), as `guard.rs` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_confirming_fetch_takes_the_first_suspect_answer_at_once() {
    let s = Stack::new(&[("GATEWAYS", "openrouter"), ("GUARD_CONFIRM_FETCHES", "1")]).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    s.sample.set_catalog("openrouter", fixture("openrouter")[..20].to_vec());
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    let read = s.ctx().read_gateway(&s.gw("openrouter")).await.unwrap();
    assert_eq!(read.entry.meta.item_count, 20);
    assert!(read.fail_safe_reasons().is_empty());
}

/// Issue 38, finding 12: a gateway the upstream says is gone (404) whose entry is
/// evicted is neither carried over from the previous merged view nor merged from this
/// instance's copy, the way an evicted gateway whose upstream merely fails is: `all`
/// drops it at once, names it missing, and carries nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_gateway_is_never_carried_even_once_evicted() {
    let s = Stack::new(&[("GATEWAYS", "groq,together")]).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let before = body_of(&s.ctx().read_all().await.unwrap()).await;
    assert_eq!(listed_by(before["data"].as_array().unwrap(), "groq"), 11);
    s._redis.command(&[b"DEL", b"models:v4:groq"]);
    s.sample.set_fault("groq", Fault::NotFound);

    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(run.details[0].error.as_deref().unwrap().contains("404"), "{run:?}");
    let all = s.ctx().read_all().await.unwrap();
    let body = body_of(&all).await;
    assert_eq!(
        listed_by(body["data"].as_array().unwrap(), "groq"),
        0,
        "{}",
        body["gateways"]
    );
    assert_eq!(body["carried_gateways"], json!([]));
    assert_eq!(body["missing_gateways"], json!(["groq"]));
    assert_eq!(listed_by(body["data"].as_array().unwrap(), "together"), 94);
}

/// Issue 38, finding 2: a ratchet. Each warm answers a fifth of the last (319 → 64 →
/// 13): the first step is within the guard's tenfold, the second is judged against
/// the largest catalog accepted within the day too, and held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_walked_down_in_steps_is_a_collapse() {
    let s = Stack::new(&[("GATEWAYS", "openrouter")]).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let models = fixture("openrouter");
    s.sample.set_catalog("openrouter", models[..64].to_vec());
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "a fifth is no collapse: {run:?}");
    s.sample.set_catalog("openrouter", models[..13].to_vec());
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(!run.success, "{run:?}");
    let error = run.details[0].error.as_deref().unwrap();
    assert!(
        error.contains("collapsed to 13 models (from 319, the largest accepted within a day)"),
        "{error}"
    );
    let read = s.ctx().read_gateway(&s.gw("openrouter")).await.unwrap();
    assert_eq!(
        (read.entry.meta.item_count, read.fail_safe_reasons()),
        (64, vec!["guard"])
    );
}

/// Issue 38, finding 3: openrouter (319) is held while the upstream answers 3, and
/// its entry is evicted (`DEL`, as `allkeys-lru` would). The judgement survives the
/// eviction: another instance's read does not store the 3 as the truth, `all` keeps
/// openrouter's listings (carried, marked), and when the upstream recovers to 319 the
/// warm takes it at once (a recovery to the peak, not a jump).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judgement_survives_an_eviction_of_the_held_entry() {
    let vars = [("GATEWAYS", "openrouter,groq"), ("REVALIDATE_RETRY_SECONDS", "0")];
    let s = Stack::new(&vars).await;
    let b = s.instance(&vars);
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let before = body_of(&s.ctx().read_all().await.unwrap()).await;
    let listed = listed_by(before["data"].as_array().unwrap(), "openrouter");
    s.sample.set_catalog("openrouter", fixture("openrouter")[..3].to_vec());
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(!run.success, "held: {run:?}");
    s._redis.command(&[b"DEL", b"models:v4:openrouter"]);

    let err = s.ctx_of(&b).read_gateway(&s.gw("openrouter")).await.unwrap_err();
    assert!(err.to_string().contains("collapsed to 3 models (from 319"), "{err}");
    assert!(
        s.app.cache.peek(&keys::gateway("openrouter")).await.is_none(),
        "the 3 are not stored as the truth"
    );
    // The next rebuild of `all` (any gateway's write would ask for one) carries it.
    s.ctx_of(&b).rebuild_all().await.unwrap();
    let all = s.ctx_of(&b).read_all().await.unwrap();
    let body = body_of(&all).await;
    assert_eq!(listed_by(body["data"].as_array().unwrap(), "openrouter"), listed);
    assert_eq!(body["carried_gateways"], json!(["openrouter"]), "marked");

    s.sample.set_catalog("openrouter", fixture("openrouter"));
    let run = s.ctx_of(&b).warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "a recovery, not a jump: {run:?}");
    let read = s.ctx().read_gateway(&s.gw("openrouter")).await.unwrap();
    assert_eq!(read.entry.meta.item_count, 319);
    assert!(read.fail_safe_reasons().is_empty());
}

/// Issue 38, finding 4: the previous release's entries are kept 9 s and featherless's
/// upstream fails. `all` merges featherless from the previous release's entry while
/// it may be served; each warm must rebuild `all` (a held input is not "nothing
/// stored"), not re-stamp it, so featherless leaves `all` once that entry's
/// `kept_until` passes. Before: a plain HIT with every featherless listing, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_release_data_leaves_all_when_it_may_no_longer_be_served() {
    let vars = [
        ("GATEWAYS", "groq,cerebras,featherless"),
        ("REVALIDATE_RETRY_SECONDS", "0"),
        ("FETCH_SOFT_TIMEOUT_MS", "300"),
    ];
    let s = Stack::new(&vars).await;
    let kept_until = crate::clock::now_ms() + 9_000;
    previous_release_writes_kept(&s._redis, 9_000);
    s.sample.set_fault("featherless", Fault::ServerError);
    let mut listed_after = Vec::new();
    let mut listed_before = 0;
    while crate::clock::now_ms() < kept_until + 4_000 {
        s.ctx().warm(None, Trigger::Manual).await.unwrap();
        let all = s.ctx().read_all().await.unwrap();
        let body = body_of(&all).await;
        let n = listed_by(body["data"].as_array().unwrap(), "featherless");
        // A busy machine may notice a little late: a second's grace.
        if crate::clock::now_ms() > kept_until + 1_000 {
            listed_after.push(n);
        } else {
            listed_before = listed_before.max(n);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        listed_before > 1_000,
        "served from the previous release's entry while it may be"
    );
    assert!(
        listed_after.iter().all(|&n| n == 0),
        "gone once it may not be served: {listed_after:?}"
    );
}

/// Issue 38, finding 1: the upstream's replicas disagree. Pages from offset 1,000 on
/// come from a version without model #700 (a page-2 model) and with one appended: the
/// same `total`, no id repeated, and the first page the same when asked again, so
/// only the page boundaries can tell. Each later page is asked from the previous
/// page's last model, which no longer matches: the listing is fetched again, moves
/// again, and is refused visibly (the warm says why), the good catalog kept. Before:
/// 200 success with the model at the seam (#1,000) silently lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_whose_pages_disagree_at_a_boundary_is_refused_visibly() {
    let mut vars = super::gateways::ROOMY_DEADLINES.to_vec();
    vars.extend([("GATEWAYS", "featherless"), ("FETCH_PAGE_LIMIT", "500")]);
    let s = Stack::new(&vars).await;
    let original = fixture("featherless");
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    s.sample.set_fault(
        "featherless",
        Fault::Replicas {
            from_offset: 1_000,
            withdrawn: 700,
        },
    );
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(!run.success, "{run:?}");
    let error = run.details[0].error.as_deref().unwrap();
    assert!(error.contains("not the previous page's last model"), "{error}");
    let models = s.models("featherless").await;
    assert_eq!(models.len(), original.len(), "the good catalog stays");
    assert!(!models.iter().any(|m| m["id"].as_str().unwrap().starts_with("replica/")));

    // One replica again: the listing is whole, every model once.
    s.sample.set_fault("featherless", Fault::None);
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    assert_eq!(s.models("featherless").await.len(), original.len());
}

/// Issue 38, finding 10: a Redis that runs no scripts at all (`EVAL`, `EVALSHA` and
/// `SCRIPT` renamed away): nothing can be stored. A warm says so (not stored), but a
/// store that refuses writes says nothing about the upstream: it must not throttle
/// the key for every instance. Another instance's reads reach the healthy upstream
/// and serve from the process (200, never 503), and the status says nothing is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_runs_no_scripts_degrades_to_serving_from_the_process() {
    let mut args = Vec::new();
    for command in ["EVAL", "EVALSHA", "SCRIPT"] {
        args.extend(["--rename-command".to_string(), command.to_string(), String::new()]);
    }
    let redis = RedisServer::start_with(args);
    assert!(String::from_utf8_lossy(&redis.command(&[b"EVAL", b"return 1", b"0"])).contains("unknown command"));
    let sample = sample_catalog::start_local().await;
    let vars = [("GATEWAYS", "groq,cerebras"), ("REVALIDATE_RETRY_SECONDS", "30")];
    let app = Stack::app_for(&sample, &redis, &vars);
    let other = Stack::app_for(&sample, &redis, &vars);
    let tasks = crate::spawn::TaskSpawner::new();
    let spawner: std::sync::Arc<dyn crate::spawn::Spawner> = std::sync::Arc::new(tasks.clone());
    let run = RequestContext::new(app.clone(), spawner.clone())
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    assert!(!run.success, "nothing could be stored: {run:?}");
    assert_eq!(
        redis.command(&[b"EXISTS", b"retryafter:models:v4:groq"]),
        b":0\r\n",
        "the store's refusal throttles no instance"
    );
    for _ in 0..3 {
        let r = RequestContext::new(other.clone(), spawner.clone())
            .read_gateway(other.registry.resolve("groq").unwrap())
            .await
            .expect("served from the upstream, not 503");
        assert_eq!(r.entry.meta.item_count, 11);
    }
    tasks.idle().await;
    let status: Value = serde_json::from_slice(&other.status().await.identity).unwrap();
    assert!(
        !status["store_write_error"].is_null(),
        "the status says the store takes no writes: {status}"
    );
}

/// Issue 39, finding 10: what every view needs to be served (its search index) is
/// pinned outside the budget's reach; the status says how much, beside the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_counts_the_pinned_answers_beside_the_budget() {
    let mut vars = super::gateways::ROOMY_DEADLINES.to_vec();
    vars.push(("ANSWER_CACHE_MAX_BYTES", "1048576"));
    let s = Stack::new(&vars).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let all = s.ctx().read_all().await.unwrap();
    s.app.answers.index("all", &all.entry).await.unwrap();
    let st = status(&s.app).await;
    let cache = &st["answer_cache"];
    let (budget, kept, pinned) = (
        cache["budget_bytes"].as_u64().unwrap(),
        cache["kept_bytes"].as_u64().unwrap(),
        cache["pinned_bytes"].as_u64().unwrap(),
    );
    println!("answer cache: budget {budget} B, kept {kept} B, of which pinned {pinned} B");
    assert_eq!(budget, 1_048_576);
    assert!(
        pinned > budget,
        "the index of `all` alone exceeds a 64 KiB budget: {cache}"
    );
    assert!(kept >= pinned, "{cache}");
}
