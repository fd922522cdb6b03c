//! The store's bad days, on a real redis-server: a lost merged rebuild, an evicted
//! gateway key (and a FLUSHALL), a replica or a full server refusing writes, a write
//! pause during a warm's lock, a clock that runs ahead, a listing that moves while it
//! is paged, and a counter flush whose outcome is unknown. Several app instances on
//! one Redis stand for several function instances.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sample_catalog::Fault;
use serde_json::{Value, json};
use test_support::redis::RedisServer;

use super::{Stack, config, listed_by};
use crate::app::warm::{Outcome, Trigger, WarmError};
use crate::entry::{Clock, Entry, STORED_ENCODINGS};

fn shrunk_groq(keep: usize) -> Vec<Value> {
    let all: Vec<Value> =
        serde_json::from_str(sample_catalog::FIXTURES.iter().find(|(g, _)| *g == "groq").unwrap().1).unwrap();
    all.into_iter().take(keep).collect()
}

/// Item 1: instance A stores a changed groq and its merged rebuild is lost (killed,
/// or the store refused it). The next warm (on B) finds no gateway *fetch* changed,
/// but the merged view is not the merge of what is stored: it rebuilds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_rebuild_is_healed_by_the_next_warm_that_changes_nothing() {
    let s = Stack::new(&[("GATEWAYS", "groq,cerebras")]).await;
    let b = s.instance(&[("GATEWAYS", "groq,cerebras")]);
    assert!(s.ctx_of(&b).warm(None, Trigger::Manual).await.unwrap().success);
    assert_eq!(listed_by(&s.models("all").await, "groq"), 11);

    // A stores the changed groq; the rebuild that would follow never happens.
    s.sample.set_catalog("groq", shrunk_groq(6));
    s.ctx().refresh_gateway(&s.gw("groq")).await.unwrap();
    assert_eq!(s.models("groq").await.len(), 6);
    assert_eq!(
        listed_by(&s.models("all").await, "groq"),
        11,
        "the lost rebuild: `all` is behind"
    );

    let run = s.ctx_of(&b).warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    let all = s.models("all").await;
    assert_eq!(
        listed_by(&all, "groq"),
        6,
        "the warm rebuilt the merged view from what is stored"
    );
    // And once it matches, an unchanged warm only moves its clock again.
    let before = b.cache.peek_meta_in_store(b.all_key()).await.unwrap();
    s.ctx_of(&b).warm(None, Trigger::Manual).await.unwrap();
    let after = b.cache.peek_meta_in_store(b.all_key()).await.unwrap();
    assert_eq!(after.etag, before.etag);
    assert!(after.clock.fetched_at_ms > before.clock.fetched_at_ms);
}

/// Item 2: `models:together` is evicted (LRU), its upstream fails, and a warm of
/// another gateway rebuilds `all`: together's listings are carried over from the
/// merged view, not dropped; `carried_gateways` and the status say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_gateway_is_carried_over_not_dropped() {
    let s = Stack::new(&[("GATEWAYS", "groq,together,cerebras")]).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let before = s.models("all").await;
    assert_eq!(listed_by(&before, "together"), 94);

    s._redis.command(&[b"DEL", b"models:v4:together"]);
    s.sample.set_fault("together", Fault::ServerError);
    s.sample.set_catalog("groq", shrunk_groq(10));
    let run = s.ctx().warm(Some(vec![s.gw("groq")]), Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    let lookup = s.ctx().read_all().await.unwrap();
    let body: Value = serde_json::from_slice(&lookup.entry.identity().unwrap()).unwrap();
    let all = body["data"].as_array().unwrap();
    assert_eq!(listed_by(all, "together"), 94, "never less than we had");
    assert_eq!(listed_by(all, "groq"), 10, "and the change is merged");
    assert_eq!(body["carried_gateways"], json!(["together"]));
    assert_eq!(body["missing_gateways"], json!([]));
    let carried = all.iter().find(|m| m["source_gateway"] == "together").unwrap();
    assert_eq!(carried["source_gateways"], json!(["together"]));
    let status: Value = serde_json::from_slice(&s.app.status().await.identity).unwrap();
    assert_eq!(
        status["merged"]["carried_gateways"],
        json!(["together"]),
        "{}",
        status["merged"]
    );
    assert_eq!(status["merged"]["missing_gateways"], json!(["together"]));
}

/// Item 2, FLUSHALL: every key gone, two upstreams failing. The instance still
/// holds their catalogs in process and merges those rather than dropping them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_flushall_an_instance_merges_what_it_still_holds() {
    let s = Stack::new(&[("GATEWAYS", "groq,together,cerebras"), ("LOCAL_CACHE_TTL_MS", "60000")]).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let n = s.models("all").await.len();
    s._redis.command(&[b"FLUSHALL"]);
    s.sample.set_fault("groq", Fault::ServerError);
    s.sample.set_fault("together", Fault::ServerError);
    let run = s
        .ctx()
        .warm(Some(vec![s.gw("cerebras")]), Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(run.merged_models, Some(n as u32), "{run:?}");
    let all = s.models("all").await;
    assert_eq!((listed_by(&all, "groq"), listed_by(&all, "together")), (11, 94));
}

/// Item 3: an instance pointed at a replica (`READONLY`). Stale reads keep answering
/// and cost one upstream call per retry window, not one each; the failure is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_refuses_writes_costs_one_upstream_call_per_retry_window() {
    let s = Stack::new(&[("GATEWAYS", "groq"), ("MODELS_FRESH_TTL_SECONDS", "1")]).await;
    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    let replica = RedisServer::start_replica_of(&s._redis);
    let (base, url) = (s.sample.base_url(), replica.url());
    let on_replica = crate::App::new(config(&[
        ("GATEWAYZ_API_URL", &base),
        ("REDIS_URL", &url),
        ("GATEWAYS", "groq"),
        ("MODELS_FRESH_TTL_SECONDS", "1"),
        ("REVALIDATE_RETRY_SECONDS", "60"),
    ]))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await; // groq is stale now
    s.sample.reset_counts();
    let started = Instant::now();
    for _ in 0..100 {
        let r = s.ctx_of(&on_replica).read_gateway(&s.gw("groq")).await.unwrap();
        assert_eq!(r.entry.meta.item_count, 11, "reads keep answering");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.tasks.idle().await;
    let calls = s.sample.requests("groq");
    println!(
        "100 stale reads on a replica over {:.1} s: {calls} upstream requests",
        started.elapsed().as_secs_f64()
    );
    assert!(
        calls <= 2,
        "{calls} upstream requests: refused writes must be throttled"
    );
    let status: Value = serde_json::from_slice(&on_replica.status().await.identity).unwrap();
    let groq = &status["gateways"][0];
    assert!(
        groq["last_error"]["error"].as_str().unwrap().contains("not stored"),
        "{groq}"
    );
    assert!(
        status["store_write_error"]["error"]
            .as_str()
            .unwrap()
            .contains("READONLY"),
        "{}",
        status["store_write_error"]
    );
    assert!(status["metrics"]["models"]["store_write_errors"].as_i64().unwrap() >= 1);
}

/// Fill the server (`noeviction`, `maxmemory 1`: every write answers `OOM`), read
/// groq 20 times: every read is answered, and only the first goes upstream.
async fn twenty_reads_of_a_full_store_make_one_upstream_request(s: &Stack) {
    s._redis
        .command(&[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"]);
    s._redis.command(&[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    for _ in 0..20 {
        let r = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
        assert_eq!(r.entry.meta.item_count, 11);
    }
    s.tasks.idle().await;
    assert_eq!(s.sample.requests("groq"), 1, "fetched once, then held in process");
}

/// Item 3, a full server under `noeviction` (another tenant's data): writes answer
/// `OOM`. A miss is served and held in process; the next reads answer from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_serves_what_it_fetched_from_the_process() {
    let s = Stack::new(&[("GATEWAYS", "groq,cerebras"), ("LOCAL_CACHE_TTL_MS", "0")]).await;
    twenty_reads_of_a_full_store_make_one_upstream_request(&s).await;
    let status: Value = serde_json::from_slice(&s.app.status().await.identity).unwrap();
    assert!(
        status["store_write_error"]["error"].as_str().unwrap().contains("OOM"),
        "{status}"
    );
    // The store takes writes again: the held copy is written back by the next read.
    s._redis.command(&[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    s.tasks.idle().await;
    assert_ne!(
        s._redis.command(&[b"EXISTS", b"models:v4:groq"]),
        b":0\r\n",
        "written back"
    );
    assert!(
        s.app.cache.store_write_error().is_none(),
        "and the status says writes go through"
    );
}

/// A full store that holds an unreadable value (a corrupt write, an older format):
/// the miss is served and held in process, and the next reads answer from it
/// rather than treating the junk, which the store will not let us replace, as a
/// miss each time (one upstream request per read before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_holding_junk_serves_what_it_fetched_from_the_process() {
    let s = Stack::new(&[("GATEWAYS", "groq,cerebras"), ("LOCAL_CACHE_TTL_MS", "0")]).await;
    assert_eq!(
        s._redis.command(&[b"SET", b"models:v4:groq", br#"{"data":[]}"#]),
        b"+OK\r\n"
    );
    twenty_reads_of_a_full_store_make_one_upstream_request(&s).await;
}

/// Item 4: `CLIENT PAUSE 3000 WRITE` (what a failover does) while a warm takes its
/// lock: the warm gives up after the command timeout, Redis applies its `SET NX`
/// when the pause ends, and that lock has no owner. It is removed by token: the next
/// warm runs within seconds, not after 5.5 minutes of 409s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_that_gave_up_on_its_lock_leaves_none_behind() {
    let s = Stack::new(&[("GATEWAYS", "groq")]).await;
    assert_eq!(s._redis.command(&[b"CLIENT", b"PAUSE", b"3000", b"WRITE"]), b"+OK\r\n");
    let paused = Instant::now();
    let err = s.ctx().warm(None, Trigger::Manual).await.unwrap_err();
    assert!(matches!(err, WarmError::StoreUnavailable(_)), "{err:?}");
    while paused.elapsed() < Duration::from_millis(3_200) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let run = loop {
        match s.ctx().warm(None, Trigger::Manual).await {
            Ok(run) => break run,
            Err(e) => assert!(Instant::now() < deadline, "still refused after the pause: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(run.success, "{run:?}");
    println!(
        "after a 3 s write pause, the next warm ran {:.1} s after it ended",
        paused.elapsed().as_secs_f64() - 3.0
    );
}

/// Item 5: an instance whose clock runs 120 s ahead stored groq stamped in the
/// future. A correct instance's warm is not refused by it (the stamp is not trusted
/// against the store's clock): it stores the upstream's 9 models. A write refused by
/// a stamp that *is* trusted (a fetch that truly started later) is reported as not
/// stored, never as success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_from_the_future_is_not_trusted_and_a_refused_write_is_not_success() {
    let s = Stack::new(&[("GATEWAYS", "groq")]).await;
    let store_entry = |models: usize, stamp: u64| {
        let data: Vec<Value> = shrunk_groq(models);
        let json = serde_json::to_vec(&json!({ "data": data, "gateway": "groq" })).unwrap();
        let clock = Clock {
            fetched_at_ms: stamp,
            fresh_until_ms: stamp + 3_600_000,
            stale_until_ms: stamp + 7_200_000,
            kept_until_ms: stamp + 7_200_000,
        };
        Entry::build(Bytes::from(json), models as u32, clock, STORED_ENCODINGS).encode()
    };
    let now = crate::clock::now_ms();
    s._redis
        .command(&[b"SET", b"models:v4:groq", &store_entry(6, now + 120_000)]);
    s.sample.set_catalog("groq", shrunk_groq(9));
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    assert_eq!(run.details[0].count, 9);
    assert_eq!(
        s.models("groq").await.len(),
        9,
        "the future-stamped entry was overwritten"
    );

    // A fetch stamped 2 s from now (within the tolerance) is stored meanwhile: ours is older.
    let later = crate::clock::now_ms() + 2_000;
    s.sample.set_latency("groq", Duration::from_millis(300));
    let writer = {
        let r = s._redis.port;
        let value = store_entry(7, later);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let redis = RedisServer::command_on(r, &[b"SET", b"models:v4:groq", &value]);
            assert_eq!(redis, b"+OK\r\n");
        })
    };
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    writer.join().unwrap();
    assert!(!run.success, "a refused write is not a success: {run:?}");
    assert_eq!(run.details[0].status, Outcome::Error);
    assert!(
        run.details[0].error.as_deref().unwrap().contains("not stored"),
        "{run:?}"
    );
}

/// Item 6: 1,500 models in pages of 500, one inserted at the start after page 1.
/// The fetch starts again from offset 0 and gets all 1,501, each once; a listing
/// that keeps moving fails the fetch, and the good data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_moves_while_paged_is_fetched_again_or_refused() {
    let s = Stack::new(&[("GATEWAYS", "groq"), ("FETCH_PAGE_LIMIT", "500")]).await;
    s.sample.scale("groq", 1_500);
    s.sample.set_fault("groq", Fault::Shifting { times: 1 });
    let models = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap();
    let ids: std::collections::HashSet<&str> = models.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(
        (models.len(), ids.len()),
        (1_501, 1_501),
        "every model once, the new one too"
    );
    assert!(ids.contains("inserted/model-1500"));

    assert!(s.ctx().warm(None, Trigger::Manual).await.unwrap().success);
    s.sample.set_fault("groq", Fault::Shifting { times: u32::MAX });
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert_eq!(run.details[0].status, Outcome::Error);
    assert!(
        run.details[0]
            .error
            .as_deref()
            .unwrap()
            .contains("changed while it was paged"),
        "{run:?}"
    );
    assert_eq!(run.details[0].count, 1_501, "the good data stays");
}

/// Item 7: a counter flush that times out during a write pause may still be applied
/// when the pause ends. It is never sent again: counts never exceed what happened,
/// and what could not be counted shows as `metrics_lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_never_exceed_what_happened_after_a_write_pause() {
    let s = Stack::new(&[("GATEWAYS", "groq")]).await;
    s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    s.tasks.idle().await;
    s.app.reset_metrics().await.unwrap();
    assert_eq!(s._redis.command(&[b"CLIENT", b"PAUSE", b"2500", b"WRITE"]), b"+OK\r\n");
    let mut reads = 0i64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3_500) {
        s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
        reads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.tasks.idle().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the breaker closes
    s.app.flush_metrics().await;
    let m = s.app.shared_metrics().await.unwrap();
    let counted = m.fresh_hits + m.stale_hits + m.misses + m.errors;
    println!(
        "{reads} reads during and after a 2.5 s write pause: {counted} counted, {} lost",
        m.metrics_lost
    );
    assert!(
        counted <= reads,
        "counted {counted} of {reads} reads: a flush was applied twice"
    );
    assert!(
        counted + m.metrics_lost >= reads,
        "every read is counted or counted as lost"
    );
}
