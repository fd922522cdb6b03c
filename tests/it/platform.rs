//! The function binaries under Vercel's IPC protocol (not the runtime's local mode):
//! when invocations end, what a STALE read keeps open, large bodies, SIGTERM, logs,
//! and what a deployment without its secrets or Redis does.
//!
//! `support::vercel_ipc` plays the platform: a Unix socket at `VERCEL_IPC_PATH`,
//! requests with the invocation headers, and every `end` message stamped on arrival.

use crate::support;

use std::time::{Duration, Instant};

use support::env::{CRON, Env, MODELS, WARM};
use support::vercel_ipc::{Platform, median_and_worst};

fn ended_after(p: &Platform, inv: &support::vercel_ipc::Invocation) -> Duration {
    let end = p
        .end_of(&inv.invocation_id, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no end message for {}", inv.invocation_id));
    end.saturating_duration_since(inv.responded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_invocations_end_within_50ms_of_their_response() {
    let env = Env::new().await;
    let p = env.platform(MODELS, &[]);
    let first = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    ended_after(&p, &first);

    let mut gaps = Vec::new();
    for _ in 0..20 {
        let inv = p
            .invoke("GET", "/api/models?gateway=groq", &[("accept-encoding", "br")])
            .await;
        assert_eq!((inv.status, inv.header("x-cache")), (200, Some("HIT")));
        gaps.push(ended_after(&p, &inv));
    }
    let (median, worst) = median_and_worst(gaps);
    println!("HIT response -> end: median {median:.2} ms, worst {worst:.2} ms (20 reads)");
    assert!(
        worst <= 50.0,
        "a HIT's invocation stayed open {worst:.1} ms after its response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_read_answers_at_once_and_ends_after_the_revalidated_value_is_stored() {
    let env = Env::new().await;
    let p = env.platform(MODELS, &[("MODELS_FRESH_TTL_SECONDS", "1")]);
    let first = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    ended_after(&p, &first);
    let slow = Duration::from_millis(600);
    env.sample.set_latency("groq", slow);

    let (mut answered, mut gaps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let before = env.stored("models:v4:groq");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let inv = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
        assert_eq!((inv.status, inv.header("x-cache")), (200, Some("STALE")));
        let end = p.end_of(&inv.invocation_id, Duration::from_secs(30)).expect("end");
        // The end came: the revalidated value must be in Redis by now.
        assert_ne!(
            env.stored("models:v4:groq"),
            before,
            "the invocation ended before the revalidated value was stored"
        );
        answered.push(inv.responded - inv.sent);
        gaps.push(end.saturating_duration_since(inv.responded));

        // The invocation's logs reached the platform, attributed to it, with the seed's prefix.
        let logs = p.logs_of(&inv.invocation_id);
        for expected in [
            "[Cache SWR] Returning stale data for models:v4:groq",
            "[Cache SWR] Revalidated models:v4:groq",
        ] {
            assert!(
                logs.iter().any(|l| l.contains(expected)),
                "{expected:?} not received by the platform for its invocation: {logs:?}"
            );
        }
    }
    let (answer_median, answer_worst) = median_and_worst(answered);
    let (median, worst) = median_and_worst(gaps.clone());
    println!(
        "STALE (3 reads, upstream latency {} ms): answered in median {answer_median:.1} / worst {answer_worst:.1} ms; \
         response -> end median {median:.1} / worst {worst:.1} ms",
        slow.as_millis()
    );
    assert!(
        answer_worst < slow.as_secs_f64() * 1e3 / 2.0,
        "a stale read waited on the upstream"
    );
    let shortest = gaps.iter().min().unwrap().as_secs_f64() * 1e3;
    assert!(
        shortest >= slow.as_secs_f64() * 1e3 * 0.9,
        "an end came before the revalidation could finish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_all_above_4_5_mb_arrives_whole() {
    let env = Env::new().await;
    env.sample.scale("featherless", 4_000);
    let p = env.platform(MODELS, &[]);
    let inv = p
        .invoke("GET", "/api/models?gateway=all", &[("accept-encoding", "identity")])
        .await;
    assert_eq!(
        inv.status,
        200,
        "{}",
        String::from_utf8_lossy(&inv.body[..200.min(inv.body.len())])
    );
    assert!(
        inv.body.len() > 4_500_000,
        "body is {} bytes; the test needs > 4.5 MB",
        inv.body.len()
    );
    assert_eq!(inv.header("content-encoding"), None);
    let v = inv.json();
    let n = v["data"].as_array().unwrap().len();
    assert_eq!(v["total"], n, "every model arrived");
    assert!(n > 5_000, "{n}");
    println!("identity all: {} bytes, {n} models, whole", inv.body.len());
    ended_after(&p, &inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_background_work_and_pending_metrics_then_exits() {
    let env = Env::new().await;
    let mut p = env.platform(
        MODELS,
        &[
            ("MODELS_FRESH_TTL_SECONDS", "1"),
            ("METRICS_FLUSH_INTERVAL_MS", "60000"),
            // One gateway: the merged rebuild after the miss then reads no other.
            ("GATEWAYS", "groq"),
        ],
    );
    let first = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
    ended_after(&p, &first);
    let before = env.stored("models:v4:groq");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    env.sample.set_latency("groq", Duration::from_millis(800));
    let stale = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    // Retire the instance while the revalidation is still running upstream.
    let t = Instant::now();
    let status = p.terminate(Duration::from_secs(20)).expect("exited after SIGTERM");
    println!("SIGTERM -> exit {} ms", t.elapsed().as_millis());
    assert!(status.success(), "{status:?}\n{}", p.stderr());
    assert!(
        p.end_of(&stale.invocation_id, Duration::ZERO).is_some(),
        "end sent before exit"
    );
    assert_ne!(
        env.stored("models:v4:groq"),
        before,
        "the revalidation finished before exit"
    );
    // Both reads were counted in Redis although the flush interval never came round.
    assert_eq!(env.metric("misses"), 1, "the miss");
    assert_eq!(
        env.metric("stale_hits"),
        1,
        "the pending stale hit was flushed at SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_seconds_apart_are_all_counted_without_held_invocations() {
    let env = Env::new().await;
    // One gateway: the merged rebuild after the first read reads (and counts) no other.
    let p = env.platform(MODELS, &[("GATEWAYS", "groq")]);
    let mut gaps = Vec::new();
    for i in 1..=3 {
        let inv = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
        let gap = ended_after(&p, &inv);
        // The first read is a miss: its invocation also rebuilds the merged view
        // (coalesced); the HITs after it end at once.
        if i > 1 {
            gaps.push(gap);
        }
        let counted = env.metric("misses") + env.metric("fresh_hits");
        assert_eq!(counted, i, "read {i} counted in Redis by the end of its invocation");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (_, worst) = median_and_worst(gaps);
    assert!(worst < 50.0, "{worst}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_cron_without_cron_secret_refuses_and_runs_nothing() {
    let env = Env::new().await;
    let p = env.platform(CRON, &[]);
    for headers in [vec![], vec![("x-vercel-cron", "1"), ("user-agent", "vercel-cron/1.0")]] {
        let inv = p.invoke("GET", "/api/cron/warm-cache", &headers).await;
        assert_eq!(inv.status, 503, "{}", String::from_utf8_lossy(&inv.body));
        let v = inv.json();
        assert_eq!(v["error"], "cron_disabled");
        assert!(v["message"].as_str().unwrap().contains("CRON_SECRET"));
    }
    assert_eq!(env.sample.total_requests(), 0, "nothing was warmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_without_redis_url_every_route_answers_503_naming_it() {
    let env = Env::new().await;
    let base = env.sample.base_url();
    for (bin, method, path) in [
        (MODELS, "GET", "/api/models?gateway=groq"),
        (WARM, "GET", "/api/cache/warm-models"),
        (WARM, "POST", "/api/cache/warm-models"),
        (CRON, "GET", "/api/cron/warm-cache"),
    ] {
        let p = Platform::start(
            bin,
            &[
                ("GATEWAYZ_API_URL", &base),
                ("CRON_SECRET", "cron-secret-0123456789abcdef"),
                ("CACHE_WARMING_SECRET", "warm-secret-0123456789abcdef"),
            ],
        );
        let auth = [("authorization", "Bearer cron-secret-0123456789abcdef")];
        let inv = p.invoke(method, path, &auth).await;
        assert_eq!(
            inv.status,
            503,
            "{bin} {method} {path}: {}",
            String::from_utf8_lossy(&inv.body)
        );
        let v = inv.json();
        assert_eq!(v["error"], "configuration_error");
        assert!(v["message"].as_str().unwrap().contains("REDIS_URL"), "{v}");
        let errors = p.stderr().matches("REDIS_URL").count();
        assert_eq!(errors, 1, "one error at start naming REDIS_URL:\n{}", p.stderr());
    }
    assert_eq!(
        env.sample.total_requests(),
        0,
        "nothing was fetched into a private cache"
    );
}

/// Out of file descriptors under the platform's protocol: the runtime's accept loop
/// stops on the error; the glue serves again (the same port, a new IPC connection
/// announcing it) and the next invocation is answered and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_function_serves_again_and_invocations_end() {
    let env = Env::new().await;
    let p = env.platform_limited(MODELS, &[], Some(64));
    let first = p.invoke("GET", "/api/models?gateway=groq", &[]).await;
    assert_eq!(first.status, 200);
    ended_after(&p, &first);
    let held: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", p.port)).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    let again = loop {
        match p.try_invoke("GET", "/api/models?gateway=groq", &[]).await {
            Ok(inv) if inv.status == 200 => break inv,
            other => assert!(
                Instant::now() < deadline,
                "no 200 after the connections closed: {:?}; stderr:\n{}",
                other.map(|i| i.status),
                p.stderr()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gap = ended_after(&p, &again);
    let announced = p
        .messages()
        .iter()
        .filter(|m| m.json["type"] == "server-started")
        .count();
    println!(
        "out of descriptors: served again, announced {announced} times, the next invocation ended {gap:?} after its response"
    );
    assert!(announced >= 2, "it announced the port again");
    assert!(p.stderr().contains("Stopped accepting connections"), "and said why");
}
