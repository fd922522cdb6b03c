//! End to end over real HTTP: the built function binaries (`VERCEL_DEV_PORT`) and
//! the dev server, against a real redis-server and the sample catalog API.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sample_catalog::Fault;
use serde_json::Value;
use support::env::{Env, decode, header, json_of, raw_client};
use support::process::FunctionProcess;

const WARM_SECRET: &str = "warm-secret-0123456789abcdef";
const CRON_SECRET: &str = "cron-secret-0123456789abcdef";

// ---- /api/models ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_miss_hit_etag_and_encodings() {
    let env = Env::new().await;
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let c = raw_client();

    let first = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache"), Some("MISS"));
    let etag = header(&first, "etag").unwrap().to_string();
    let identity: Value = serde_json::from_slice(&first.bytes().await.unwrap()).unwrap();
    support::contract::assert_models_response(&identity);
    assert_eq!(identity["data"].as_array().unwrap().len(), 11);
    assert_eq!(identity["gateway"], "groq");

    for (accept, expected) in [
        ("gzip, deflate, br", Some("br")),
        ("gzip", Some("gzip")),
        ("identity", None),
    ] {
        let r = c
            .get(f.url("/api/models?gateway=groq"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-cache"), Some("HIT"));
        assert_eq!(header(&r, "content-encoding"), expected, "{accept}");
        assert_eq!(header(&r, "vary"), Some("Accept-Encoding"));
        assert!(header(&r, "cache-control").unwrap().contains("s-maxage="));
        let enc = header(&r, "content-encoding").map(str::to_string);
        let body: Value = serde_json::from_slice(&decode(enc.as_deref(), &r.bytes().await.unwrap())).unwrap();
        assert_eq!(body, identity, "{accept}: every encoding decodes to the same JSON");
    }

    let r = c
        .get(f.url("/api/models?gateway=groq"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag"), Some(etag.as_str()));
    assert!(r.bytes().await.unwrap().is_empty());

    let r = c.head(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), Some("HIT"));

    // Aliases and pages (`limit`) share one key (docs/design.md, failure 11).
    let r = c.get(f.url("/api/models?gateway=GROQ&limit=5")).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), Some("HIT"));
    assert_eq!(env.sample.requests("groq"), 1);

    // search filters without touching the upstream.
    let r = c
        .get(f.url("/api/models?gateway=groq&search=llama"))
        .send()
        .await
        .unwrap();
    let v = json_of(r).await;
    support::contract::assert_models_response(&v);
    let n = v["data"].as_array().unwrap().len();
    assert!(n > 0 && n < 11, "{n}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.to_string().to_lowercase().contains("llama"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_cache_goes_miss_hit_stale_hit_with_real_ttls() {
    let env = Env::new().await;
    let f = env.spawn(
        env!("CARGO_BIN_EXE_models"),
        &[("MODELS_FRESH_TTL_SECONDS", "1"), ("MODELS_STALE_TTL_SECONDS", "30")],
    );
    let c = raw_client();
    let get = || c.get(f.url("/api/models?gateway=cerebras")).send();
    assert_eq!(header(&get().await.unwrap(), "x-cache"), Some("MISS"));
    assert_eq!(header(&get().await.unwrap(), "x-cache"), Some("HIT"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = get().await.unwrap();
    assert_eq!(header(&stale, "x-cache"), Some("STALE"));
    assert!(header(&stale, "cache-control").unwrap().contains("s-maxage=0"));
    // The revalidation ran in the function's background (wait_until) and landed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get().await.unwrap();
        if header(&r, "x-cache") == Some("HIT") {
            break;
        }
        assert!(Instant::now() < deadline, "never revalidated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.sample.requests("cerebras"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_all_served_to_every_client() {
    let env = Env::new().await;
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let c = raw_client();
    let r = c.get(f.url("/api/models")).send().await.unwrap();
    assert_eq!(r.status(), 200, "no gateway = the merged view");
    let plain: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    support::contract::assert_models_response(&plain);
    assert!(plain["data"].as_array().unwrap().len() > 3000);
    let r = c
        .get(f.url("/api/models?gateway=all"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    let len: usize = header(&r, "content-length").unwrap().parse().unwrap();
    assert!(len < 1_000_000, "compressed merged view is small: {len}");
    let body: Value = serde_json::from_slice(&decode(Some("br"), &r.bytes().await.unwrap())).unwrap();
    assert_eq!(body, plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_rejected_quickly_and_reach_nothing() {
    let env = Env::new().await;
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let c = raw_client();
    let long = format!("gateway={}", "a".repeat(5000));
    let cases = [
        "gateway=",
        "gateway=nope",
        "gateway=..%2F..%2Fetc%2Fpasswd",
        "gateway=../../etc/passwd",
        "gateway=%ff%fe",
        "gateway=%zz",
        "gateway=groq&gateway=fal",
        "gateway=models:all",
        "gateway=groq%00",
        "gateway=*",
        "search=x&gateway=lock:warm",
        long.as_str(),
    ];
    for q in cases {
        let t = Instant::now();
        let r = c.get(f.url(&format!("/api/models?{q}"))).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert!(t.elapsed() < Duration::from_millis(500), "{q} took {:?}", t.elapsed());
        let v = json_of(r).await;
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{q}: {v}");
        if v["error"] == "unknown_gateway" {
            assert!(
                v["valid_gateways"].as_array().unwrap().iter().any(|g| g == "groq"),
                "{q}"
            );
        }
    }
    assert_eq!(env.sample.total_requests(), 0, "no bad input reached the upstream");
    assert_eq!(env.redis_keys(), "*0\r\n", "nothing at all was written to Redis");

    let r = c.post(f.url("/api/models")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
}

// ---- /api/cache/warm-models -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_warm_statuses_and_auth_matrix() {
    let env = Env::new().await;
    let bin = env!("CARGO_BIN_EXE_cache-warm-models");
    let c = raw_client();

    // No secret configured: refuses, whatever is presented (no default secret).
    let off = env.spawn(bin, &[]);
    for auth in [None, Some("Bearer default-secret-change-me"), Some("Bearer ")] {
        let mut req = c.post(off.url("/api/cache/warm-models"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(
            json_of(r).await["message"]
                .as_str()
                .unwrap()
                .contains("CACHE_WARMING_SECRET")
        );
    }
    drop(off);

    let f = env.spawn(
        bin,
        &[("CACHE_WARMING_SECRET", WARM_SECRET), ("GATEWAYS", "groq,cerebras,xai")],
    );
    let url = f.url("/api/cache/warm-models");
    let huge = format!("Bearer {}", "x".repeat(8000));
    let wrong_scheme = format!("Basic {WARM_SECRET}");
    // (Trailing whitespace is not tested here: HTTP strips it from header values.)
    let doubled = format!("Bearer  {WARM_SECRET}");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(wrong_scheme.as_str()),
        Some(doubled.as_str()),
        Some(huge.as_str()),
    ] {
        let mut req = c.post(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{:?}", auth.map(|a| &a[..a.len().min(20)]));
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(WARM_SECRET) && !body.contains("xxxxxxxx"),
            "nothing presented is echoed"
        );
    }
    assert_eq!(env.sample.total_requests(), 0, "rejected calls warm nothing");

    // Status before any run.
    let status = json_of(c.get(&url).send().await.unwrap()).await;
    support::contract::assert_status_response(&status);
    assert_eq!(status["last_run"], Value::Null);
    assert!(
        status["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] == "missing")
    );

    let bearer = format!("Bearer {WARM_SECRET}");
    let r = c.post(&url).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v["success"], true);
    assert_eq!(v["gateways_success"], 3);
    assert_eq!(v["gateways_failed"], 0);
    assert_eq!(v["total_models"], 11 + 9 + 61);
    for d in v["details"].as_array().unwrap() {
        assert_eq!(d["status"], "success");
        assert!(d["count"].as_u64().unwrap() > 0 && d["duration_ms"].is_u64() && d.get("error").is_none());
    }

    // Some fail: 207, honest per-gateway detail.
    env.sample.set_fault("xai", Fault::Html);
    let r = c.post(&url).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 207);
    let v = json_of(r).await;
    assert_eq!(v["success"], false);
    let xai = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["gateway"] == "xai")
        .unwrap()
        .clone();
    assert_eq!(xai["status"], "error");
    assert!(xai["error"].as_str().unwrap().contains("HTML"));

    // All fail: 502.
    for g in ["groq", "cerebras"] {
        env.sample.set_fault(g, Fault::ServerError);
    }
    let r = c.post(&url).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(json_of(r).await["gateways_success"], 0);
    env.sample.reset_knobs();

    // Subset, with an alias.
    let r = c
        .post(format!("{url}?gateway=groq,GROQ"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["details"].as_array().unwrap().len(), 1);
    let r = c
        .post(format!("{url}?gateway=groq,../x"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Overlap: 409 with the running warm's start time, and no duplicate fetch.
    env.sample.set_latency("xai", Duration::from_millis(800));
    let before = env.sample.requests("xai");
    let first = tokio::spawn(c.post(&url).header("authorization", &bearer).send());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = c.post(&url).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v = json_of(r).await;
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(env.sample.requests("xai"), before + 1);

    // Status after runs: last run, data age, metrics, and no secret anywhere.
    let r = c.get(&url).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(WARM_SECRET));
    let status: Value = serde_json::from_str(&text).unwrap();
    support::contract::assert_status_response(&status);
    assert_eq!(status["last_run"]["trigger"], "manual");
    let xai = status["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gateway"] == "xai")
        .unwrap()
        .clone();
    assert_eq!(xai["state"], "fresh");
    assert_eq!(xai["models"], 61);
    assert!(xai["age_seconds"].is_u64());
    assert!(
        xai["last_error"]["error"].as_str().unwrap().contains("HTML"),
        "the earlier failure stays visible"
    );
    assert!(status["metrics"]["models"].is_object());

    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), Some("GET, HEAD, POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_then_reads_are_hits_across_functions() {
    let env = Env::new().await;
    let warm = env.spawn(
        env!("CARGO_BIN_EXE_cache-warm-models"),
        &[("CACHE_WARMING_SECRET", WARM_SECRET)],
    );
    let models = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let c = raw_client();
    let r = c
        .post(warm.url("/api/cache/warm-models"))
        .bearer_auth(WARM_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = env.sample.total_requests();
    for g in ["all", "groq", "featherless", "hug", "google-vertex"] {
        let r = c
            .get(models.url(&format!("/api/models?gateway={g}")))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-cache"), Some("HIT"), "{g}");
    }
    assert_eq!(
        env.sample.total_requests(),
        before,
        "warmed data served without the upstream"
    );
}

// ---- /api/cron/warm-cache -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_auth_and_result() {
    let env = Env::new().await;
    let bin = env!("CARGO_BIN_EXE_cron-warm-cache");
    let c = raw_client();
    let f = env.spawn(bin, &[("CRON_SECRET", CRON_SECRET), ("GATEWAYS", "groq")]);
    let url = f.url("/api/cron/warm-cache");

    // Spoofed Vercel headers are not authentication.
    let r = c
        .get(&url)
        .header("x-vercel-cron", "1")
        .header("user-agent", "vercel-cron/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&url).bearer_auth("not-the-secret").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(env.sample.total_requests(), 0);

    let r = c.get(&url).bearer_auth(CRON_SECRET).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v["success"], true);
    assert!(v["message"].as_str().unwrap().contains("1/1"));
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["result"]["trigger"], "cron");
    assert_eq!(v["result"]["details"][0]["gateway"], "groq");

    let r = c.post(&url).bearer_auth(CRON_SECRET).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), Some("GET"));
    drop(f);

    // On Vercel without CRON_SECRET: refuse.
    let deployed = env.spawn(bin, &[("VERCEL", "1"), ("GATEWAYS", "groq")]);
    let r = c
        .get(deployed.url("/api/cron/warm-cache"))
        .header("x-vercel-cron", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(json_of(r).await["message"].as_str().unwrap().contains("CRON_SECRET"));
    drop(deployed);

    // A function binary run locally without CRON_SECRET refuses too: it listens on
    // loopback even when deployed, so loopback proves nothing there.
    let local = env.spawn(bin, &[("GATEWAYS", "groq")]);
    let before = env.sample.total_requests();
    let r = c.get(local.url("/api/cron/warm-cache")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(env.sample.total_requests(), before, "nothing warmed");
    drop(local);

    // The dev server without CRON_SECRET: the seed's dev curl works, from loopback only.
    let config = support::config(&[
        ("REDIS_URL", &env.redis.url()),
        ("GATEWAYZ_API_URL", &env.sample.base_url()),
        ("GATEWAYS", "groq"),
    ]);
    let addr = support::dev_server_with(
        cache_core::App::new(config).unwrap(),
        cache_core::spawn::TaskSpawner::new(),
        dev_server::Options {
            allow_local_cron: true,
            ..Default::default()
        },
    )
    .await;
    let r = c
        .get(format!("http://{addr}/api/cron/warm-cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---- the dev server ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_serves_every_route_with_the_same_handlers() {
    let env = Env::new().await;
    let config = support::config(&[
        ("REDIS_URL", &env.redis.url()),
        ("GATEWAYZ_API_URL", &env.sample.base_url()),
        ("CACHE_WARMING_SECRET", WARM_SECRET),
        ("GATEWAYS", "groq,fal"),
    ]);
    let app = cache_core::App::new(config).unwrap();
    let tasks = cache_core::spawn::TaskSpawner::new();
    let addr = support::dev_server_with(
        app.clone(),
        tasks.clone(),
        dev_server::Options {
            allow_local_cron: true,
            ..Default::default()
        },
    )
    .await;
    let plain = support::dev_server(app, tasks).await;
    let c = raw_client();
    let base = format!("http://{addr}");

    let r = c
        .post(format!("{base}/api/cache/warm-models"))
        .bearer_auth(WARM_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{base}/api/models?gateway=fal")).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), Some("HIT"));
    let r = c.get(format!("{base}/api/cron/warm-cache")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "loopback, CRON_SECRET unset, --allow-local-cron: allowed"
    );
    for via in ["x-forwarded-for", "forwarded", "via"] {
        let r = c
            .get(format!("{base}/api/cron/warm-cache"))
            .header(via, "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{via}: a proxied request is not local");
    }
    let r = c
        .get(format!("http://{plain}/api/cron/warm-cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "without --allow-local-cron loopback proves nothing");
    let r = c.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(json_of(r).await["routes"].is_array());
}

// ---- CORS -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_on_reads_only() {
    let env = Env::new().await;
    let origins = "https://gatewayz.ai, https://beta.gatewayz.ai";
    let models = env.spawn(env!("CARGO_BIN_EXE_models"), &[("CORS_ALLOW_ORIGINS", origins)]);
    let warm = env.spawn(
        env!("CARGO_BIN_EXE_cache-warm-models"),
        &[
            ("CORS_ALLOW_ORIGINS", origins),
            ("CACHE_WARMING_SECRET", WARM_SECRET),
            ("GATEWAYS", "groq"),
        ],
    );
    let c = raw_client();
    let acao = |r: &reqwest::Response| header(r, "access-control-allow-origin").map(str::to_string);

    // Preflight from an allowed origin.
    let r = c
        .request(reqwest::Method::OPTIONS, models.url("/api/models?gateway=all"))
        .header("origin", "https://beta.gatewayz.ai")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "if-none-match")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(acao(&r).as_deref(), Some("https://beta.gatewayz.ai"));
    assert!(header(&r, "access-control-allow-methods").unwrap().contains("GET"));
    assert!(header(&r, "vary").unwrap().contains("Origin"));

    // Actual read from an allowed origin, one from elsewhere, one with no Origin.
    let r = c
        .get(models.url("/api/models?gateway=groq"))
        .header("origin", "https://gatewayz.ai")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r).as_deref(), Some("https://gatewayz.ai"));
    assert!(header(&r, "access-control-expose-headers").unwrap().contains("X-Cache"));
    assert_eq!(header(&r, "vary"), Some("Accept-Encoding, Origin"));
    let r = c
        .get(models.url("/api/models?gateway=groq"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(acao(&r), None);
    assert!(
        header(&r, "vary").unwrap().contains("Origin"),
        "CDN keys on Origin even when refused"
    );

    // The status route is readable cross-origin; the warm POST never is.
    let r = c
        .get(warm.url("/api/cache/warm-models"))
        .header("origin", "https://gatewayz.ai")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r).as_deref(), Some("https://gatewayz.ai"));
    let r = c
        .request(reqwest::Method::OPTIONS, warm.url("/api/cache/warm-models"))
        .header("origin", "https://gatewayz.ai")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r), None, "no preflight approval for a mutating request");
    let r = c
        .post(warm.url("/api/cache/warm-models"))
        .bearer_auth(WARM_SECRET)
        .header("origin", "https://gatewayz.ai")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(acao(&r), None, "mutating routes never allow cross-origin");

    // Unset: no CORS headers at all.
    let plain = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let r = c
        .get(plain.url("/api/models?gateway=groq"))
        .header("origin", "https://gatewayz.ai")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r), None);
    assert_eq!(header(&r, "vary"), Some("Accept-Encoding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_miss_says_how_long_is_left_and_weak_validators_match() {
    let env = Env::new().await;
    env.sample.set_fault("groq", Fault::ServerError);
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[("REVALIDATE_RETRY_SECONDS", "120")]);
    let c = raw_client();
    let first = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(first.status(), 502);
    let throttled = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(throttled.status(), 503);
    let retry: u64 = header(&throttled, "retry-after").unwrap().parse().unwrap();
    assert!(
        (115..=120).contains(&retry),
        "Retry-After is the time left of the window: {retry}"
    );

    // A weak validator from a browser or proxy still gets its 304.
    let ok = c.get(f.url("/api/models?gateway=cerebras")).send().await.unwrap();
    let etag = header(&ok, "etag").unwrap().to_string();
    let r = c
        .get(f.url("/api/models?gateway=cerebras"))
        .header("if-none-match", format!("W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "weak If-None-Match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_known_good_past_the_stale_window_is_served_marked_fail_safe() {
    let env = Env::new().await;
    let f = env.spawn(
        env!("CARGO_BIN_EXE_models"),
        &[
            ("MODELS_FRESH_TTL_SECONDS", "1"),
            ("MODELS_STALE_TTL_SECONDS", "1"),
            ("FAILSAFE_MAX_SECONDS", "600"),
            ("GATEWAYS", "groq"),
        ],
    );
    let c = raw_client();
    let first = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let cc = header(&first, "cache-control").unwrap().to_string();
    let if_error: u64 = cc.split("stale-if-error=").nth(1).unwrap().parse().unwrap();
    assert!(
        (590..=602).contains(&if_error),
        "stale-if-error = what is left of fail-safe: {cc}"
    );
    assert_eq!(header(&first, "x-cache-fail-safe"), None);

    env.sample.set_fault("groq", Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for _ in 0..2 {
        // The first read's refetch fails; the second is throttled: both fail-safe.
        let r = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-cache"), Some("STALE"));
        assert_eq!(header(&r, "x-cache-fail-safe"), Some("1"));
        let cc = header(&r, "cache-control").unwrap();
        assert!(cc.contains("s-maxage=60") && cc.contains("stale-if-error="), "{cc}");
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 11);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_is_case_insensitive_and_each_encoding_has_its_own_etag() {
    let env = Env::new().await;
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[("GATEWAYS", "groq")]);
    let c = raw_client();
    let get = |ae: &'static str, inm: Option<String>| {
        let mut r = c.get(f.url("/api/models?gateway=groq")).header("accept-encoding", ae);
        if let Some(tag) = inm {
            r = r.header("if-none-match", tag);
        }
        r.send()
    };
    let refused = get("Br;Q=0", None).await.unwrap();
    assert_eq!(header(&refused, "content-encoding"), None, "Br;Q=0 refuses br");
    assert_eq!(header(&refused, "x-content-type-options"), Some("nosniff"));
    let mut tags = Vec::new();
    for ae in ["br", "gzip", "identity"] {
        let r = get(ae, None).await.unwrap();
        tags.push(header(&r, "etag").unwrap().to_string());
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 3, "one strong ETag per representation: {tags:?}");
    for tag in &tags {
        for ae in ["br", "gzip", "identity"] {
            let r = get(ae, Some(tag.clone())).await.unwrap();
            assert_eq!(r.status(), 304, "{tag} validates the {ae} representation too");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_status_requests_cost_at_most_one_redis_command_each() {
    let env = Env::new().await;
    let w = env.spawn(
        env!("CARGO_BIN_EXE_cache-warm-models"),
        &[("CACHE_WARMING_SECRET", WARM_SECRET)],
    );
    let c = raw_client();
    let commands = || {
        let info = env.redis.command(&[b"INFO", b"stats"]);
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let url = w.url("/api/cache/warm-models");
    let before = commands();
    let n = 100;
    for _ in 0..n {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cc = header(&r, "cache-control").unwrap().to_string();
        assert!(cc.contains("s-maxage=5"), "{cc}");
        r.bytes().await.unwrap();
    }
    let used = commands() - before - 1;
    println!("status: {n} requests, {used} Redis commands");
    assert!(used <= n, "{used} Redis commands for {n} status requests");

    // A warm shows on the status at once, not when the cached status expires.
    let v: Value = json_of(c.get(&url).send().await.unwrap()).await;
    assert!(v["last_run"].is_null());
    let r = c.post(&url).bearer_auth(WARM_SECRET).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = json_of(c.get(&url).send().await.unwrap()).await;
    assert_eq!(v["last_run"]["trigger"], "manual");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_bounded_paged_and_compressed() {
    let env = Env::new().await;
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let c = raw_client();
    let get = |q: String, ae: &'static str| {
        c.get(f.url(&format!("/api/models?{q}")))
            .header("accept-encoding", ae)
            .send()
    };

    for bad in [
        "search=a",
        "search=llama&limit=0",
        "search=llama&limit=-3",
        "search=llama&offset=-1",
    ] {
        let r = get(bad.to_string(), "identity").await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(json_of(r).await["error"], "bad_query", "{bad}");
    }

    let whole: Value = json_of(
        get("gateway=all&search=llama&limit=5000".into(), "identity")
            .await
            .unwrap(),
    )
    .await;
    let total = whole["total"].as_u64().unwrap() as usize;
    assert!(total > 10, "{total}");
    assert!(
        whole["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.to_string().to_lowercase().contains("llama"))
    );
    // Pages of 7 put back together are the whole answer, in order.
    let mut paged = Vec::new();
    let mut offset = Some(0u64);
    while let Some(o) = offset {
        let r = get(format!("gateway=all&search=llama&limit=7&offset={o}"), "br")
            .await
            .unwrap();
        assert_eq!(
            header(&r, "content-encoding"),
            Some("br"),
            "compressed (br when gzip is not offered)"
        );
        let v: Value = serde_json::from_slice(&decode(Some("br"), &r.bytes().await.unwrap())).unwrap();
        support::contract::assert_models_response(&v);
        assert_eq!(v["total"].as_u64().unwrap() as usize, total);
        assert_eq!(v["limit"], 7);
        assert_eq!(v["offset"].as_u64(), Some(o));
        assert!(v["returned"].as_u64().unwrap() <= 7);
        paged.extend(v["data"].as_array().unwrap().iter().cloned());
        offset = v["next_offset"].as_u64();
        assert_eq!(v["has_more"].as_bool(), Some(offset.is_some()));
    }
    assert_eq!(Value::Array(paged), whole["data"], "pages add up to the whole answer");

    let r = get("gateway=all&search=llama".into(), "gzip").await.unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    let etag = header(&r, "etag").unwrap().to_string();
    let again = c
        .get(f.url("/api/models?gateway=all&search=llama"))
        .header("accept-encoding", "br")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "same answer, other encoding: not modified");
}

// ---- the frontend contract ----------------------------------------------------------

/// The merge's dedup key, written again from the rule in the catalog API's docs (an
/// oracle independent of the service's code).
fn dedup_key(m: &Value) -> String {
    const PREFIXES: &[&str] = &[
        "aimo/",
        "google/",
        "openai/",
        "meta/",
        "anthropic/",
        "models/",
        "mistralai/",
        "xai/",
        "fal-ai/",
        "fal/",
        "bria/",
    ];
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    };
    let raw = m["canonical_slug"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .or(m["id"].as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let key = clean(PREFIXES.iter().find_map(|p| raw.strip_prefix(p)).unwrap_or(&raw));
    if key.is_empty() {
        clean(&m["name"].as_str().unwrap_or("").to_ascii_lowercase())
    } else {
        key
    }
}

/// The fixture catalogs' prices in USD per token, by dedup key and gateway (a
/// gateway's first listing of a key), converted from each gateway's documented unit.
fn fixture_prices() -> std::collections::HashMap<String, std::collections::BTreeMap<String, Value>> {
    const PER_MILLION: &[&str] = &["featherless", "fireworks", "together", "groq"];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/sample-catalog/fixtures");
    let mut out: std::collections::HashMap<String, std::collections::BTreeMap<String, Value>> = Default::default();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        let gw = path.file_stem().unwrap().to_str().unwrap().to_string();
        if gw == "manifest" {
            continue;
        }
        let scale = if PER_MILLION.contains(&gw.as_str()) { 1e-6 } else { 1.0 };
        let models: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for m in models {
            let key = dedup_key(&m);
            let mut price = serde_json::Map::new();
            for (field, v) in m["pricing"].as_object().into_iter().flatten() {
                let n = match v {
                    Value::String(s) => s.parse::<f64>().ok(),
                    Value::Number(n) => n.as_f64(),
                    _ => None,
                };
                if let Some(n) = n {
                    price.insert(field.clone(), Value::from(n * scale));
                }
            }
            let listings = out.entry(key).or_default();
            listings.entry(gw.clone()).or_insert(Value::Object(price));
        }
    }
    out
}

fn close(served: &Value, expected: &Value) -> bool {
    let s: f64 = served.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let e = expected.as_f64().unwrap_or(f64::NAN);
    (s - e).abs() <= 1e-12_f64.max(e.abs() * 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_json_as_the_frontend_reads_it() {
    let env = Env::new().await;
    let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[]);
    let c = raw_client();
    let (all, whole_etag) = the_whole_list(&c, &f).await;
    let models = all["data"].as_array().unwrap();
    every_listing_gateways_own_price(models);
    one_gateway_alone(&c, &f).await;
    pages_cut_from_the_cached_entry(&env, &c, &f, &all, &whole_etag).await;
}

/// The merged list as the frontend reads it: the whole list is one page. Returns it
/// and its ETag.
async fn the_whole_list(c: &reqwest::Client, f: &FunctionProcess) -> (Value, String) {
    let r = c.get(f.url("/api/models?gateway=all")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let whole_etag = header(&r, "etag").unwrap().to_string();
    let all: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    support::contract::assert_models_response(&all);
    assert_eq!(all["pricing_unit"], "usd_per_token");
    let models = all["data"].as_array().unwrap();
    let n = models.len();
    assert_eq!(
        (all["total"].as_u64(), all["returned"].as_u64(), all["offset"].as_u64()),
        (Some(n as u64), Some(n as u64), Some(0))
    );
    assert_eq!(
        (&all["limit"], &all["has_more"], &all["next_offset"]),
        (&Value::Null, &Value::Bool(false), &Value::Null)
    );

    (all, whole_etag)
}

/// Every listing gateway's own price, checked against the fixture catalogs; no price at
/// all is null, never an object of nulls.
fn every_listing_gateways_own_price(models: &[Value]) {
    let n = models.len();
    // 1. Every listing gateway's own price, checked against the fixture catalogs.
    let fixtures = fixture_prices();
    let (mut multi, mut checked, mut differing) = (0, 0, 0);
    for m in models {
        let gateways: Vec<&str> = m["source_gateways"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        let listings = &fixtures[&dedup_key(m)];
        let served = m["gateway_pricing"].as_object().unwrap();
        let priced: Vec<&String> = listings
            .iter()
            .filter(|(_, p)| !p.as_object().unwrap().is_empty())
            .map(|(g, _)| g)
            .collect();
        assert_eq!(
            served.keys().collect::<Vec<_>>(),
            priced,
            "{}: gateway_pricing holds exactly the gateways that price it",
            m["id"]
        );
        for (gw, price) in served {
            assert!(gateways.contains(&gw.as_str()), "{}: {gw} lists it", m["id"]);
            let want = listings[gw].as_object().unwrap();
            for (field, v) in want {
                assert!(
                    close(&price[field], v),
                    "{} on {gw}: {field} {} vs {v}",
                    m["id"],
                    price[field]
                );
            }
            checked += 1;
        }
        if gateways.len() > 1 {
            multi += 1;
            let prompts: std::collections::HashSet<String> = served.values().map(|p| p["prompt"].to_string()).collect();
            differing += (prompts.len() > 1) as usize;
        }
        // 2. No price at all is null, never an object of nulls.
        match &m["pricing"] {
            Value::Null => {}
            Value::Object(p) => assert!(p.values().any(|v| !v.is_null()), "{}: {p:?}", m["id"]),
            other => panic!("{}: pricing {other}", m["id"]),
        }
    }
    let unpriced = models.iter().filter(|m| m["pricing"].is_null()).count();
    println!(
        "merged view: {n} models, {multi} on several gateways ({differing} priced differently), {checked} gateway prices checked, {unpriced} unpriced"
    );
    assert!(
        multi > 100 && differing > 10 && unpriced > 100,
        "the fixtures exercise it"
    );
    // The issue's example: openrouter's price won, novita's own is kept beside it.
    let mytho = models
        .iter()
        .find(|m| {
            m["id"]
                .as_str()
                .is_some_and(|i| i.eq_ignore_ascii_case("Gryphe/MythoMax-L2-13b"))
        })
        .expect("MythoMax is in the fixtures");
    assert_eq!(mytho["gateway_pricing"]["openrouter"]["prompt"], "0.0000004", "{mytho}");
    assert_eq!(mytho["gateway_pricing"]["novita"]["prompt"], "0.00000009", "{mytho}");
}

/// Per gateway: that gateway alone in `gateway_pricing`.
async fn one_gateway_alone(c: &reqwest::Client, f: &FunctionProcess) {
    // Per gateway: that gateway alone.
    let groq: Value = json_of(c.get(f.url("/api/models?gateway=groq")).send().await.unwrap()).await;
    support::contract::assert_models_response(&groq);
    for m in groq["data"].as_array().unwrap() {
        match &m["pricing"] {
            Value::Null => assert_eq!(m["gateway_pricing"], serde_json::json!({})),
            p => assert_eq!(m["gateway_pricing"], serde_json::json!({ "groq": p })),
        }
    }
}

/// Pages cut from the cached entry: no upstream call, no store key per page.
async fn pages_cut_from_the_cached_entry(
    env: &Env,
    c: &reqwest::Client,
    f: &FunctionProcess,
    all: &Value,
    whole_etag: &str,
) {
    let models = all["data"].as_array().unwrap();
    let n = models.len();
    // 3. Pages, cut from the cached entry: no upstream call, no store key.
    let keys_before = env.redis_keys();
    env.sample.reset_counts();
    let r = c
        .get(f.url("/api/models?gateway=all&limit=50"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding"), Some("br"));
    let page_etag = header(&r, "etag").unwrap().to_string();
    assert_ne!(page_etag, whole_etag, "a page has its own ETag");
    let wire = r.bytes().await.unwrap().len();
    let first: Value = serde_json::from_slice(&decode(
        Some("br"),
        &c.get(f.url("/api/models?gateway=all&limit=50"))
            .header("accept-encoding", "br")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    ))
    .unwrap();
    support::contract::assert_models_response(&first);
    assert_eq!(first["data"].as_array().unwrap()[..], models[..50]);
    assert_eq!(
        (
            first["total"].as_u64(),
            first["returned"].as_u64(),
            first["limit"].as_u64()
        ),
        (Some(n as u64), Some(50), Some(50))
    );
    assert_eq!(
        (first["has_more"].as_bool(), first["next_offset"].as_u64()),
        (Some(true), Some(50))
    );
    assert_eq!(first["pricing_unit"], "usd_per_token");
    assert_eq!(first["gateways"], all["gateways"], "the list's own members are kept");
    println!("a 50-model page of `all`: {wire} bytes brotli");
    assert!(wire < 30_000, "{wire}");
    let r = c
        .get(f.url("/api/models?gateway=all&limit=50"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", &page_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "same page, other encoding: not modified");
    let r = c
        .get(f.url("/api/models?gateway=all&limit=50"))
        .header("if-none-match", whole_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the whole list's validator is not the page's");
    let head = c
        .head(f.url("/api/models?gateway=all&limit=50&offset=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    // Walking the pages gives the whole list back, in order.
    let mut paged = Vec::new();
    let mut offset = Some(0u64);
    let mut etags = std::collections::HashSet::new();
    while let Some(o) = offset {
        let r = c
            .get(f.url(&format!("/api/models?gateway=all&limit=1000&offset={o}")))
            .send()
            .await
            .unwrap();
        assert!(etags.insert(header(&r, "etag").unwrap().to_string()));
        let v = json_of(r).await;
        support::contract::assert_models_response(&v);
        paged.extend(v["data"].as_array().unwrap().iter().cloned());
        offset = v["next_offset"].as_u64();
    }
    assert_eq!(&paged[..], &models[..]);
    let rest = json_of(
        c.get(f.url(&format!("/api/models?gateway=all&offset={}", n - 3)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        rest["data"].as_array().unwrap()[..],
        models[n - 3..],
        "offset alone: the rest"
    );
    assert_eq!(rest["limit"], Value::Null);
    let past = json_of(
        c.get(f.url("/api/models?gateway=groq&limit=5&offset=900"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (past["returned"].as_u64(), past["has_more"].as_bool()),
        (Some(0), Some(false))
    );
    for bad in [
        "limit=0",
        "limit=ten",
        "limit=",
        "limit=1e3",
        "offset=-5",
        "limit=5&limit=6",
    ] {
        let r = c
            .get(f.url(&format!("/api/models?gateway=all&{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(json_of(r).await["error"], "bad_query", "{bad}");
    }
    assert_eq!(env.sample.total_requests(), 0, "pages never reach the upstream");
    assert_eq!(env.redis_keys(), keys_before, "no store key per page");

    let search = json_of(
        c.get(f.url("/api/models?gateway=all&search=llama&limit=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    support::contract::assert_models_response(&search);
    assert_eq!(search["pricing_unit"], "usd_per_token");
}

/// A duration from the environment outside its range (2^64 - 1 s of stale window once
/// wrapped every entry's clock around) is refused at start: every route answers 503
/// naming the variable and its range, and nothing is fetched or stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_duration_is_refused_at_start_naming_its_variable() {
    let env = Env::new().await;
    for (var, value) in [
        ("MODELS_STALE_TTL_SECONDS", "18446744073709551615"),
        ("MODELS_STALE_TTL_SECONDS", "9223372036854775807"),
        ("FAILSAFE_MAX_SECONDS", "99999999999"),
    ] {
        let f = env.spawn(env!("CARGO_BIN_EXE_models"), &[(var, value)]);
        let r = raw_client()
            .get(f.url("/api/models?gateway=groq"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{var}={value}");
        let v = json_of(r).await;
        assert_eq!(
            (v["error"].as_str(), v["variable"].as_str()),
            (Some("configuration_error"), Some(var))
        );
        assert!(
            v["message"].as_str().unwrap().contains("..="),
            "the range is named: {v}"
        );
    }
    assert_eq!(env.sample.total_requests(), 0);
    assert_eq!(env.redis_keys().trim(), "*0", "nothing stored");
}
