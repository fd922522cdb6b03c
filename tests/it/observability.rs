//! Observability through the built binaries: log prefixes, no secrets in logs,
//! Sentry envelopes, the authenticated metrics reset. (Counters shared across
//! instances are tested inside cache-core: `swr::tests`.)

use crate::support;

use std::time::{Duration, Instant};

use sample_catalog::Fault;
use support::process::FunctionProcess;
use support::redis::RedisServer;

const WARM_SECRET: &str = "warm-secret-observability-0123456789";
const CRON_SECRET: &str = "cron-secret-observability-0123456789";

fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_seed_prefixes_and_never_a_secret() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let dir = std::env::temp_dir().join(format!("gwz-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (redis_url, base) = (redis.url(), sample.base_url());
    let env: Vec<(&str, &str)> = vec![
        ("REDIS_URL", &redis_url),
        ("GATEWAYZ_API_URL", &base),
        ("GATEWAYS", "groq,xai"),
        ("CACHE_WARMING_SECRET", WARM_SECRET),
        ("CRON_SECRET", CRON_SECRET),
        ("MODELS_FRESH_TTL_SECONDS", "1"),
        ("LOCAL_CACHE_TTL_MS", "0"),
        ("RUST_LOG", "info"),
    ];
    let logs = [dir.join("models.log"), dir.join("warm.log"), dir.join("cron.log")];
    let models = FunctionProcess::spawn_logged(env!("CARGO_BIN_EXE_models"), &env, Some(&logs[0]));
    let warm = FunctionProcess::spawn_logged(env!("CARGO_BIN_EXE_cache-warm-models"), &env, Some(&logs[1]));
    let cron = FunctionProcess::spawn_logged(env!("CARGO_BIN_EXE_cron-warm-cache"), &env, Some(&logs[2]));
    let c = reqwest::Client::new();

    // Wrong tokens of every shape, on every authenticated route.
    let attempts = [
        "Bearer guess-1234567890",
        "Bearer cron-secret-observability",
        "Basic d2FybQ==",
        "Bearer warm-secret-observability-0123456789x",
    ];
    for a in attempts {
        assert_eq!(
            c.post(warm.url("/api/cache/warm-models"))
                .header("authorization", a)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            c.get(cron.url("/api/cron/warm-cache"))
                .header("authorization", a)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    sample.set_fault("xai", Fault::ServerError);
    assert_eq!(
        c.post(warm.url("/api/cache/warm-models"))
            .bearer_auth(WARM_SECRET)
            .send()
            .await
            .unwrap()
            .status(),
        207
    );
    assert_eq!(
        c.get(cron.url("/api/cron/warm-cache"))
            .bearer_auth(CRON_SECRET)
            .send()
            .await
            .unwrap()
            .status(),
        207
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(models.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "STALE");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (m, w, cr) = (read_log(&logs[0]), read_log(&logs[1]), read_log(&logs[2]));
    assert!(m.contains("[Cache SWR] Returning stale data for models:v4:groq"), "{m}");
    assert!(
        m.contains("[Cache SWR] Revalidated models:v4:groq"),
        "the background revalidation's outcome is logged: {m}"
    );
    assert!(w.contains("[Cache Warming] Starting"), "{w}");
    assert!(w.contains("[Cache Warming] xai failed"), "{w}");
    assert!(w.contains("[Cache Warming] Done in"), "{w}");
    assert!(w.contains("[Cache Warming] Rejected manual warm: invalid token"), "{w}");
    assert!(cr.contains("[Cron] warm-cache invoked"), "{cr}");
    assert!(cr.contains("[Cron] Rejected: invalid token"), "{cr}");
    for (name, text) in [("models", &m), ("warm", &w), ("cron", &cr)] {
        for secret in [WARM_SECRET, CRON_SECRET, "guess-1234567890", "d2FybQ=="] {
            assert!(
                !text.contains(secret),
                "{name} log contains a secret or presented token"
            );
        }
        assert!(text.lines().all(|l| !l.is_empty()), "one line per event");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_envelopes_reach_a_loopback_ingest_with_the_seed_tags() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let ingest = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&ingest)
        .await;
    let dsn = format!("http://public@{}/42", ingest.address());

    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    sample.set_fault("xai", Fault::Html);
    let (redis_url, base) = (redis.url(), sample.base_url());
    let f = FunctionProcess::spawn(
        env!("CARGO_BIN_EXE_cron-warm-cache"),
        &[
            ("REDIS_URL", &redis_url),
            ("GATEWAYZ_API_URL", &base),
            ("GATEWAYS", "groq,xai"),
            ("CRON_SECRET", CRON_SECRET),
            ("SENTRY_DSN", &dsn),
            ("SENTRY_TRACES_SAMPLE_RATE", "1.0"),
        ],
    );
    let r = reqwest::Client::new()
        .get(f.url("/api/cron/warm-cache"))
        .bearer_auth(CRON_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut event, mut transaction) = (None, None);
    while Instant::now() < deadline && (event.is_none() || transaction.is_none()) {
        for req in ingest.received_requests().await.unwrap_or_default() {
            assert!(req.url.path().starts_with("/api/42/"), "{}", req.url);
            let body = String::from_utf8_lossy(&req.body).into_owned();
            if body.contains("\"type\":\"event\"") {
                event = Some(body);
            } else if body.contains("\"type\":\"transaction\"") {
                transaction = Some(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let event = event.expect("an error event for the partly failed cron warm");
    assert!(event.contains("\"api_route\":\"/api/cron/warm-cache\""), "{event}");
    assert!(event.contains("\"error_type\":\"warm_partial_failure\""), "{event}");
    assert!(event.contains("\"cron_job\":\"warm-cache\""), "{event}");
    assert!(event.contains("xai"), "names the failed gateway");
    assert!(!event.contains(CRON_SECRET));
    let tx = transaction.expect("a transaction for the invocation");
    assert!(
        tx.contains("gateway.fetch"),
        "gateway fetches are spans: {}",
        &tx[..tx.len().min(2000)]
    );
    assert!(
        tx.contains("store.set") || tx.contains("store.get"),
        "store calls are spans"
    );
    assert!(!tx.contains(CRON_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reset_is_authenticated() {
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let (redis_url, base) = (redis.url(), sample.base_url());
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("GATEWAYZ_API_URL", &base),
        ("GATEWAYS", "groq"),
        ("CACHE_WARMING_SECRET", WARM_SECRET),
        // Every read flushes: counts pending between flushes wait for the next read
        // or SIGTERM (no timer holds an invocation open; see tests/it/platform.rs).
        ("METRICS_FLUSH_INTERVAL_MS", "0"),
    ];
    let models = FunctionProcess::spawn(env!("CARGO_BIN_EXE_models"), &env);
    let warm = FunctionProcess::spawn(env!("CARGO_BIN_EXE_cache-warm-models"), &env);
    let c = reqwest::Client::new();
    for _ in 0..3 {
        c.get(models.url("/api/models?gateway=groq")).send().await.unwrap();
    }
    let status_url = warm.url("/api/cache/warm-models");
    let deadline = Instant::now() + Duration::from_secs(5);
    let reads = |v: &serde_json::Value| {
        let m = &v["metrics"]["models"];
        m["fresh_hits"].as_i64().unwrap() + m["misses"].as_i64().unwrap()
    };
    loop {
        let v: serde_json::Value =
            serde_json::from_slice(&c.get(&status_url).send().await.unwrap().bytes().await.unwrap()).unwrap();
        if reads(&v) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "metrics never flushed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reset = format!("{status_url}?reset=metrics");
    assert_eq!(c.post(&reset).send().await.unwrap().status(), 401);
    assert_eq!(c.post(&reset).bearer_auth("nope").send().await.unwrap().status(), 401);
    assert_eq!(
        c.post(&reset).bearer_auth(WARM_SECRET).send().await.unwrap().status(),
        200
    );
    let v: serde_json::Value =
        serde_json::from_slice(&c.get(&status_url).send().await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(reads(&v), 0);
    assert_eq!(sample.requests("groq"), 1, "a reset runs no warm");
}
