//! Reliability and security: Redis dying under load, upstream faults, overlaps,
//! corrupt values, a lock holder that dies, the bad-input table, a Redis Cluster.
//! Each test asserts what users see and what is stored. Figures are printed
//! (`cargo test --test it reliability:: -- --nocapture`).

use crate::support;
use cache_core::RequestContext;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::contract::{Outcome, Trigger};
use cache_core::keys;
use cache_core::spawn::{Spawner, TaskSpawner};
use cache_core::{App, CacheStatus};
use sample_catalog::Fault;
use serde_json::Value;
use support::process::FunctionProcess;
use support::redis::RedisServer;

const SECRET: &str = "reliability-secret-0123456789";

fn spawner(t: &TaskSpawner) -> Arc<dyn Spawner> {
    Arc::new(t.clone())
}

fn app(redis_url: &str, sample: &sample_catalog::Handle, extra: &[(&str, &str)]) -> Arc<App> {
    let base = sample.base_url();
    let mut env = vec![
        ("REDIS_URL", redis_url),
        ("GATEWAYZ_API_URL", base.as_str()),
        // Generous: on a busy 2-core machine the 1,500-model featherless catalog has
        // taken over a second (a failed warm here is a flake, not a finding). The
        // fault test sets a short deadline for the gateway it breaks.
        ("GATEWAY_TIMEOUT_FAST_MS", "10000"),
        ("GATEWAY_TIMEOUT_SLOW_MS", "10000"),
    ];
    env.extend_from_slice(extra);
    App::new(support::config(&env)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies_under_load_and_the_process_recovers() {
    // Redis is down this long; requests that start in its first
    // `OUTAGE - CLEAR` must be answered before it comes back.
    const OUTAGE: Duration = Duration::from_millis(3500);
    const CLEAR: Duration = Duration::from_millis(2500);
    let mut redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let tasks = TaskSpawner::new();
    // Every gateway seeded: a failed one would be throttled, and its reads 503s
    // before the outage even starts.
    let seeded = RequestContext::new(app(&redis.url(), &sample, &[]), spawner(&tasks))
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    assert!(
        seeded.success,
        "the seeding warm stored every gateway: {:?}",
        seeded.details
    );
    let (url, base) = (redis.url(), sample.base_url());
    let f = FunctionProcess::spawn(
        env!("CARGO_BIN_EXE_models"),
        &[
            ("REDIS_URL", &url),
            ("GATEWAYZ_API_URL", &base),
            ("REDIS_COMMAND_TIMEOUT_MS", "300"),
            ("LOCAL_CACHE_TTL_MS", "200"),
        ],
    );
    // Past the restart, `all` is a cold refill of 21 gateways into the empty Redis:
    // seconds on a busy debug build. The bound on requests is asserted below.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stop = Instant::now() + Duration::from_millis(6500);
    let (ok, failed, slowest_us, during) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let outage = Arc::new(std::sync::Mutex::new(None::<(Instant, Instant)>));
    let whys = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for i in 0..8 {
        let (client, ok, failed, slowest_us, during, outage) = (
            client.clone(),
            ok.clone(),
            failed.clone(),
            slowest_us.clone(),
            during.clone(),
            outage.clone(),
        );
        let whys = whys.clone();
        let url = f.url(
            [
                "/api/models?gateway=all",
                "/api/models?gateway=groq",
                "/api/models?gateway=featherless",
            ][i % 3],
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let t = Instant::now();
                let res = client.get(&url).header("accept-encoding", "br").send().await;
                let us = t.elapsed().as_micros() as u64;
                let good = matches!(&res, Ok(r) if r.status() == 200);
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let why = match res {
                        Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(e) => e.to_string(),
                    };
                    let mut w = whys.lock().unwrap();
                    if w.len() < 5 {
                        w.push(format!("{url} after {:?}: {why}", t.elapsed()));
                    }
                }
                // Requests that started while Redis was down. Those that started at
                // least `CLEAR` before the restart cannot have met the refill of the
                // empty restarted Redis (cold misses, bounded by the sources'
                // deadlines, seconds on a busy machine): each must end on its own
                // deadlines, so they give the "slowest" figure.
                if let Some((a, b)) = *outage.lock().unwrap()
                    && t >= a
                    && t <= b
                {
                    during.fetch_add(1, Ordering::Relaxed);
                    if t + CLEAR <= b {
                        slowest_us.fetch_max(us, Ordering::Relaxed);
                    }
                } else {
                    assert!(us < 40_000_000, "a request outlived every deadline: {us} us");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let down = Instant::now();
    *outage.lock().unwrap() = Some((down, down + Duration::from_secs(3600)));
    redis.kill();
    tokio::time::sleep(OUTAGE).await;
    redis.restart(); // empty: no persistence
    *outage.lock().unwrap() = Some((down, Instant::now()));
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let slowest = Duration::from_micros(slowest_us.load(Ordering::Relaxed));
    println!(
        "redis outage {OUTAGE:?} under 8 connections: {} requests ({} during the outage), {} failed ({:.2}%), slowest of those started {CLEAR:?}+ before the restart {:?}",
        ok + failed,
        during.load(Ordering::Relaxed),
        failed,
        100.0 * failed as f64 / (ok + failed) as f64,
        slowest
    );
    assert_eq!(
        failed,
        0,
        "every read answered 200 (in-process copy or direct fetch): {:#?}",
        whys.lock().unwrap()
    );
    assert!(
        during.load(Ordering::Relaxed) > 0,
        "requests were served during the outage"
    );
    assert!(
        slowest > Duration::ZERO && slowest < CLEAR,
        "no request hung on the dead Redis past its deadlines: {slowest:?}"
    );

    // Recovered by itself: the process writes to the restarted Redis again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.command(&[b"EXISTS", keys::ALL.as_bytes()]) != b":1\r\n" {
        client.get(f.url("/api/models?gateway=all")).send().await.unwrap();
        assert!(Instant::now() < deadline, "the function never wrote to Redis again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_keeps_good_data_and_is_visible() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let tasks = TaskSpawner::new();
    let c = app(
        &redis.url(),
        &sample,
        &[
            ("GATEWAYS", "groq,together,xai"),
            ("FETCH_MAX_BYTES", "2000000"),
            // together (a "fast" gateway) hangs and drips below: time out quickly.
            ("GATEWAY_TIMEOUT_FAST_MS", "1000"),
        ],
    );
    let first = RequestContext::new(c.clone(), spawner(&tasks))
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    let merged = first.merged_models.unwrap();
    let faults = [
        (Fault::Hang, "timed out"),
        (Fault::SlowDrip, "timed out"),
        (Fault::Reset, "network error"),
        (Fault::ServerError, "HTTP 500"),
        (Fault::Html, "HTML"),
        (Fault::InvalidJson, "invalid JSON"),
        (Fault::Truncated, "invalid JSON"),
        (Fault::Empty, "0 models"),
        (Fault::Huge { bytes: 5 << 20 }, "larger than"),
        (
            Fault::RateLimited {
                retry_after_secs: 60,
                times: 10,
            },
            "rate limiting",
        ),
    ];
    for (fault, expected) in &faults {
        sample.set_fault("together", fault.clone());
        let run = RequestContext::new(c.clone(), spawner(&tasks))
            .warm(None, Trigger::Manual)
            .await
            .unwrap();
        let d = run.details.iter().find(|d| d.gateway == "together").unwrap();
        assert_eq!(d.status, Outcome::Error, "{fault:?}");
        assert!(
            d.error.as_deref().unwrap().contains(expected),
            "{fault:?}: {:?}",
            d.error
        );
        assert_eq!(d.count, 94, "{fault:?}: the 94 good models stay");
        assert_eq!(
            run.merged_models,
            Some(merged),
            "{fault:?}: the merged view still serves everything"
        );
        let error = c.last_failure(&keys::gateway("together")).await.unwrap().error;
        assert!(error.contains(expected), "{fault:?}: status shows the failure");
        let served = RequestContext::new(c.clone(), spawner(&tasks))
            .read_gateway(c.gateway("together").unwrap())
            .await
            .unwrap();
        assert_eq!(served.entry.meta.item_count, 94);
        sample.set_fault("together", Fault::None);
    }
    println!(
        "upstream faults injected: {} kinds, good data kept every time",
        faults.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_during_a_stampede_of_stale_reads_fetches_after_the_revalidation() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let tasks = TaskSpawner::new();
    let c = app(
        &redis.url(),
        &sample,
        &[("GATEWAYS", "groq"), ("MODELS_FRESH_TTL_SECONDS", "1")],
    );
    RequestContext::new(c.clone(), spawner(&tasks))
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sample.set_latency("groq", Duration::from_millis(200));
    sample.reset_counts();
    let gw = c.gateway("groq").unwrap().clone();
    let mut reads = Vec::new();
    for _ in 0..100 {
        let (c, gw, sp) = (c.clone(), gw.clone(), spawner(&tasks));
        reads.push(tokio::spawn(async move {
            RequestContext::new(c, sp).read_gateway(&gw).await.unwrap().status
        }));
    }
    let warm = RequestContext::new(c.clone(), spawner(&tasks))
        .warm(None, Trigger::Cron)
        .await
        .unwrap();
    assert!(warm.success);
    for r in reads {
        assert_eq!(r.await.unwrap(), CacheStatus::Stale);
    }
    tasks.idle().await;
    // 100 stale readers share at most one revalidation. The warm fetches itself (it
    // never adopts a fetch that may predate what it was asked to pick up): after the
    // revalidation if that took the lock first (2 calls), or alone if the warm took
    // it first and the revalidation then found the key fresh (1 call).
    let calls = sample.requests("groq");
    assert!((1..=2).contains(&calls), "{calls} upstream calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_warm_holder_frees_the_lock_when_it_expires() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    sample.set_latency("groq", Duration::from_secs(20));
    let (url, base) = (redis.url(), sample.base_url());
    let env = [
        ("REDIS_URL", url.as_str()),
        ("GATEWAYZ_API_URL", &base),
        ("GATEWAYS", "groq"),
        ("CACHE_WARMING_SECRET", SECRET),
        ("WARM_LOCK_TTL_SECONDS", "2"),
    ];
    let doomed = FunctionProcess::spawn(env!("CARGO_BIN_EXE_cache-warm-models"), &env);
    let client = reqwest::Client::new();
    let pending = tokio::spawn(
        client
            .post(doomed.url("/api/cache/warm-models"))
            .bearer_auth(SECRET)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(doomed); // SIGKILL mid-warm: its lock stays until the TTL
    let _ = pending.await;
    sample.set_latency("groq", Duration::ZERO);
    let next = FunctionProcess::spawn(env!("CARGO_BIN_EXE_cache-warm-models"), &env);
    let r = client
        .post(next.url("/api/cache/warm-models"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the dead holder's lock still holds");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = client
        .post(next.url("/api/cache/warm-models"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "after the TTL the next warm proceeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_foreign_values_under_our_keys_are_misses_over_http() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let (url, base) = (redis.url(), sample.base_url());
    let f = FunctionProcess::spawn(
        env!("CARGO_BIN_EXE_models"),
        &[
            ("REDIS_URL", &url),
            ("GATEWAYZ_API_URL", &base),
            ("LOCAL_CACHE_TTL_MS", "0"),
        ],
    );
    let client = reqwest::Client::new();
    let junk: [&[u8]; 5] = [
        b"{\"data\":[]}",
        b"GZCE\x01\x00",
        b"GZCE\x07future-format",
        b"\x00\xff\xfe",
        b"GZCE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01",
    ];
    for j in junk {
        redis.command(&[b"SET", b"models:v4:groq", j]);
        let r = client.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{j:?}");
        assert_eq!(r.headers()["x-cache"], "MISS", "{j:?}");
        let r = client.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT", "{j:?} was overwritten");
    }
    // A hash where a string belongs (WRONGTYPE): a store error, answered from upstream.
    redis.command(&[b"DEL", b"models:v4:xai"]);
    redis.command(&[b"HSET", b"models:v4:xai", b"k", b"v"]);
    let r = client.get(f.url("/api/models?gateway=xai")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// (function, method, path and query, headers, body, expected status)
type Case<'a> = (
    &'a FunctionProcess,
    &'a str,
    String,
    Vec<(&'a str, String)>,
    Option<&'a str>,
    u16,
);

/// The bad-input table: every case answers quickly with a JSON error, reaches
/// neither the upstream nor Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_table_end_to_end() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let (url, base) = (redis.url(), sample.base_url());
    let env = [
        ("REDIS_URL", url.as_str()),
        ("GATEWAYZ_API_URL", &base),
        ("CACHE_WARMING_SECRET", SECRET),
        ("CRON_SECRET", SECRET),
    ];
    let models = FunctionProcess::spawn(env!("CARGO_BIN_EXE_models"), &env);
    let warm = FunctionProcess::spawn(env!("CARGO_BIN_EXE_cache-warm-models"), &env);
    let cron = FunctionProcess::spawn(env!("CARGO_BIN_EXE_cron-warm-cache"), &env);
    let huge_auth = format!("Bearer {}", "A".repeat(16 * 1024));
    let long_gw = format!("/api/models?gateway={}", "x".repeat(10_000));
    let bearer_ws = format!("Bearer {SECRET}\tx");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (&models, "GET", "/api/models?gateway=".into(), vec![], None, 400),
        (&models, "GET", "/api/models?gateway=unknown-gw".into(), vec![], None, 400),
        (&models, "GET", long_gw.clone(), vec![], None, 400),
        (&models, "GET", "/api/models?gateway=groq&gateway=xai".into(), vec![], None, 400),
        (&models, "GET", "/api/models?gateway=%C0%AF".into(), vec![], None, 400),
        (&models, "GET", "/api/models?gateway=%2e%2e%2f%2e%2e%2fetc".into(), vec![], None, 400),
        (&models, "GET", "/api/models?gateway=..\\..\\windows".into(), vec![], None, 400),
        (&models, "GET", "/api/models?gateway=GROQ%20".into(), vec![], Some("body on a GET"), 200),
        (&models, "GET", "/api/models?gateway=%".into(), vec![], None, 400),
        (&models, "GET", format!("/api/models?search={}", "s".repeat(300)), vec![], None, 400),
        (&models, "PUT", "/api/models".into(), vec![], None, 405),
        (&models, "DELETE", "/api/models?gateway=groq".into(), vec![], None, 405),
        (&warm, "POST", "/api/cache/warm-models".into(), vec![("authorization", huge_auth.clone())], None, 401),
        (&warm, "POST", "/api/cache/warm-models".into(), vec![("authorization", format!("Token {SECRET}"))], None, 401),
        (&warm, "POST", "/api/cache/warm-models".into(), vec![("authorization", bearer_ws.clone())], None, 401),
        (&warm, "POST", "/api/cache/warm-models?gateway=%ff".into(), vec![("authorization", format!("Bearer {SECRET}"))], None, 400),
        (&warm, "POST", "/api/cache/warm-models?gateway=".into(), vec![("authorization", format!("Bearer {SECRET}"))], None, 400),
        (&warm, "POST", "/api/cache/warm-models?reset=everything".into(), vec![("authorization", format!("Bearer {SECRET}"))], None, 400),
        (&warm, "PATCH", "/api/cache/warm-models".into(), vec![], None, 405),
        (&cron, "GET", "/api/cron/warm-cache".into(), vec![("x-vercel-cron", "1".into()), ("user-agent", "vercel-cron/1.0".into())], None, 401),
        (&cron, "GET", "/api/cron/warm-cache".into(), vec![("authorization", huge_auth.clone())], None, 401),
        (&cron, "POST", "/api/cron/warm-cache".into(), vec![("authorization", format!("Bearer {SECRET}"))], Some("{}"), 405),
    ];
    let client = reqwest::Client::new();
    let mut tried = 0;
    for (f, method, path, headers, body, expected) in &cases {
        let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), f.url(path));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let t = Instant::now();
        let r = req.send().await.unwrap();
        let elapsed = t.elapsed();
        assert_eq!(
            r.status().as_u16(),
            *expected,
            "{method} {}",
            &path[..path.len().min(80)]
        );
        assert!(
            elapsed < Duration::from_millis(if *expected == 200 { 3000 } else { 300 }),
            "{method} {path}: {elapsed:?}"
        );
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        if *expected != 200 {
            assert!(
                v["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty() && !m.contains(SECRET)),
                "{method} {path}: {v}"
            );
        }
        tried += 1;
    }
    // Only the one valid read reached the upstream (groq); Redis holds only our own keys.
    assert_eq!(sample.total_requests(), sample.requests("groq"));
    let keys = String::from_utf8_lossy(&redis.command(&[b"KEYS", b"*"])).into_owned();
    for line in keys.lines().filter(|l| !l.starts_with('*') && !l.starts_with('$')) {
        assert!(
            [
                "models:",
                "lock:",
                "metrics:",
                "lasterror:",
                "retryafter:",
                "cadence:",
                "changes:",
                "warm:",
                "guard:"
            ]
            .iter()
            .any(|p| line.starts_with(p)),
            "unexpected key {line}"
        );
    }
    println!("bad inputs tried end to end: {tried}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_and_serve_on_a_redis_cluster() {
    let cluster = support::cluster::RedisCluster::start();
    let sample = sample_catalog::start_local().await;
    let tasks = TaskSpawner::new();
    let c = app(&cluster.url(), &sample, &[]);
    let run = RequestContext::new(c.clone(), spawner(&tasks))
        .warm(None, Trigger::Cron)
        .await
        .unwrap();
    assert!(run.success, "{run:?}");
    assert_eq!(c.last_run().await.unwrap(), run);
    // A model arrives before the next warm: the change ledger's commit (four keys, one
    // slot) and the log's reads work on a Cluster.
    let mut groq = sample.catalog("groq");
    let mut arrived = groq[0].clone();
    for field in ["id", "slug", "canonical_slug"] {
        arrived[field] = serde_json::json!("newco/on-a-cluster");
    }
    groq.push(arrived);
    sample.set_catalog("groq", groq);
    let other = app(&cluster.url(), &sample, &[]);
    assert!(
        RequestContext::new(other.clone(), spawner(&tasks))
            .warm(None, Trigger::Manual)
            .await
            .is_ok(),
        "lock released on the cluster"
    );
    assert_eq!(
        RequestContext::new(c.clone(), spawner(&tasks))
            .read_all()
            .await
            .unwrap()
            .status,
        CacheStatus::Hit
    );
    let url = format!("http://{}", support::dev_server(c.clone(), tasks.clone()).await);
    let changes: serde_json::Value = reqwest::get(format!("{url}/api/models/changes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changes["changes"].as_array().unwrap().len(), 1, "{changes}");
    assert_eq!(changes["changes"][0]["id"], "newco/on-a-cluster");
    let spread = cluster.keys_per_node();
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the masters: {spread:?}"
    );
    c.flush_metrics().await;
    assert!(c.shared_metrics().await.unwrap().fresh_hits >= 1);
}

/// A short Redis stall (CLIENT PAUSE) during a warm: the warm reports the gateways
/// whose writes failed, and its lock does not outlive the stall by minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_during_a_warm_is_reported_and_leaves_no_lock_behind() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let tasks = TaskSpawner::new();
    let c = app(&redis.url(), &sample, &[("GATEWAYS", "groq,cerebras")]);
    sample.set_latency("groq", Duration::from_millis(300));
    sample.set_latency("cerebras", Duration::from_millis(300));
    let warm = {
        let (c, sp) = (c.clone(), spawner(&tasks));
        tokio::spawn(async move { RequestContext::new(c, sp).warm(None, Trigger::Manual).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(redis.command(&[b"CLIENT", b"PAUSE", b"1500", b"ALL"]), b"+OK\r\n");
    let run = warm.await.unwrap().unwrap();
    println!("warm during a 1.5 s stall: {run:?}");
    assert!(!run.success, "writes that failed are not a success");
    assert!(run.gateways_failed > 0 || run.merged_models.is_none(), "{run:?}");
    for d in run.details.iter().filter(|d| d.status == Outcome::Error) {
        assert!(d.error.as_deref().unwrap().contains("not stored"), "{d:?}");
    }
    // The lock is released once Redis answers again: not 330 s later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.command(&[b"EXISTS", b"lock:warm"]) != b":0\r\n" {
        assert!(Instant::now() < deadline, "lock:warm left behind after the stall");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sample.reset_knobs();
    // The store's circuit breaker stays open 1 s after the last failed call.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = RequestContext::new(c.clone(), spawner(&tasks))
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    assert!(again.success, "{again:?}");
}
