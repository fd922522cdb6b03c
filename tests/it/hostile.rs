//! What an anonymous client (or a hostile upstream) can cost an instance: memory
//! under many distinct URLs, error texts that quote huge values, how old a CDN copy
//! may be, and running out of file descriptors. Through the built binaries.

use crate::support;

use std::time::{Duration, Instant};

use sample_catalog::Fault;
use support::env::{Env, MODELS, WARM, header, json_of, raw_client};

const WARM_SECRET: &str = "warm-secret-0123456789abcdef";

/// (s-maxage, stale-while-revalidate, stale-if-error) of a `Cache-Control` value.
fn windows(cc: &str) -> (u64, u64, u64) {
    let field = |name: &str| {
        cc.split(',')
            .filter_map(|d| d.trim().strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .next()
            .unwrap_or(0)
    };
    (
        field("s-maxage"),
        field("stale-while-revalidate"),
        field("stale-if-error"),
    )
}

/// With production TTLs (4 h fresh, 12 h stale) a CDN may still hand out a copy at
/// most 15 minutes old: `s-maxage + stale-while-revalidate` ≤ 900 on every cached
/// answer; `stale-if-error` (its fail-safe) stays long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_copy_is_at_most_15_minutes_older_than_the_data() {
    let env = Env::new().await;
    let f = env.spawn(MODELS, &[]);
    // Its own key prefix: `f` stores the same gateways with the 4 h window.
    let stale = env.spawn(
        MODELS,
        &[("MODELS_FRESH_TTL_SECONDS", "1"), ("CACHE_KEY_PREFIX", "short:")],
    );
    let c = raw_client();
    for (p, query) in [
        (&f, "gateway=groq"),
        (&f, "gateway=all"),
        (&f, "gateway=all&limit=50"),
        (&f, "gateway=all&offset=3"),
        (&f, "gateway=all&search=llama"),
        (&stale, "gateway=cerebras"),
    ] {
        let url = p.url(&format!("/api/models?{query}"));
        c.get(&url).send().await.unwrap();
        if query == "gateway=cerebras" {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
        }
        let r = c.get(&url).header("accept-encoding", "br").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cc = header(&r, "cache-control").unwrap().to_string();
        let (s_maxage, swr, if_error) = windows(&cc);
        let state = header(&r, "x-cache").unwrap().to_string();
        println!("{query} ({state}): {cc}");
        if query == "gateway=cerebras" {
            assert_eq!(state, "STALE");
        }
        assert!(s_maxage + swr <= 900, "{query}: {cc}");
        if !query.contains("search") {
            assert!(if_error > 86_400, "{query}: stale-if-error stays long: {cc}");
        }
    }
}

/// Three gateways send a `total` that is a 1 MB string: the parser's error quotes it.
/// The warm's answer and the status GET stay small (≤ 64 KB), and both are gzipped
/// when the client accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_stay_small_and_answers_are_compressed() {
    let env = Env::new().await;
    for gw in ["groq", "together", "cerebras"] {
        env.sample.set_fault(gw, Fault::StringTotal { bytes: 1 << 20 });
    }
    let f = env.spawn(WARM, &[("CACHE_WARMING_SECRET", WARM_SECRET)]);
    let c = raw_client();
    let r = c
        .post(f.url("/api/cache/warm-models"))
        .bearer_auth(WARM_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let identity = r.bytes().await.unwrap();
    let run: serde_json::Value = serde_json::from_slice(&identity).unwrap();
    assert_eq!(run["gateways_failed"], 3, "{run}");
    let error = run["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["gateway"] == "groq")
        .unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("invalid JSON") && error.len() <= 500,
        "bounded where made: {error}"
    );
    println!("warm answer: {} bytes; groq's error: {error}", identity.len());
    assert!(identity.len() <= 64 << 10, "warm answer {} bytes", identity.len());

    for path in ["/api/cache/warm-models"] {
        let plain = c.get(f.url(path)).send().await.unwrap().bytes().await.unwrap();
        assert!(plain.len() <= 64 << 10, "status {} bytes", plain.len());
        let r = c
            .get(f.url(path))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-encoding"), Some("gzip"));
        let gz = json_of(r).await;
        support::contract::assert_status_response(&gz);
        let failing: Vec<&serde_json::Value> = gz["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| !g["last_error"].is_null())
            .collect();
        assert_eq!(failing.len(), 3);
        assert!(
            failing
                .iter()
                .all(|g| g["last_error"]["error"].as_str().unwrap().len() <= 500)
        );
        println!("status: {} bytes identity", plain.len());
    }
    let r = c
        .post(f.url("/api/cache/warm-models"))
        .bearer_auth(WARM_SECRET)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("gzip"), "the warm answer too");
    assert_eq!(json_of(r).await["gateways_failed"], 3);
}

/// A function binary with 64 file descriptors, sent more connections than that: it
/// logs, backs off and keeps serving; once the connections close, it answers 200.
/// (vercel_runtime's accept loop returns on the first accept error; before, the
/// process exited with status 1.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_survives_running_out_of_file_descriptors() {
    let env = Env::new().await;
    let mut f = env.spawn_limited(MODELS, &[], Some(64));
    let c = raw_client();
    assert_eq!(
        c.get(f.url("/api/models?gateway=groq")).send().await.unwrap().status(),
        200
    );
    let held: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", f.port)).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(f.alive(), "the process must not exit on an accept error");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = reqwest::Client::new();
        match fresh.get(f.url("/api/models?gateway=groq")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no 200 after the connections closed: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(f.alive());
}

/// An anonymous client's worst URLs at the fixture size (3,579 models, ~4 MB of JSON
/// in `all`): offset walks without a limit (HEAD and GET, identity and gzip), random
/// limits, distinct searches. Before the byte budget, 511 HEADs took RSS to ~2 GB.
/// Peak RSS here stays far below; cached `all` reads keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_whatever_the_urls() {
    let env = Env::new().await;
    let f = env.spawn(MODELS, &[("ANSWER_CACHE_MAX_BYTES", "16000000")]);
    let c = raw_client();
    assert_eq!(
        c.get(f.url("/api/models?gateway=all")).send().await.unwrap().status(),
        200
    );
    let (before, _) = f.memory_mb();
    let hostile = |k: usize| match k % 6 {
        0 | 1 => (
            reqwest::Method::HEAD,
            format!("/api/models?gateway=all&offset={k}"),
            "identity",
        ),
        2 => (
            reqwest::Method::GET,
            format!("/api/models?gateway=all&offset={k}"),
            "identity",
        ),
        3 if k % 48 == 3 => (
            reqwest::Method::GET,
            format!("/api/models?gateway=all&offset={k}"),
            "gzip",
        ),
        3 => (
            reqwest::Method::HEAD,
            format!("/api/models?gateway=all&offset={k}"),
            "gzip",
        ),
        4 => (
            reqwest::Method::GET,
            format!("/api/models?gateway=all&limit={}", 1 + k * 7919 % 3579),
            "identity",
        ),
        _ => (
            reqwest::Method::GET,
            format!("/api/models?gateway=all&search=q{k}x&limit=50000"),
            "gzip",
        ),
    };
    let mut workers = Vec::new();
    for w in 0..6usize {
        let (c, base) = (c.clone(), f.url(""));
        workers.push(tokio::spawn(async move {
            for k in (w..480).step_by(6) {
                let (method, path, ae) = hostile(k);
                let r = c
                    .request(method, format!("{base}{path}"))
                    .header("accept-encoding", ae)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{path}");
                r.bytes().await.unwrap();
            }
        }));
    }
    let reader = {
        let (c, url) = (c.clone(), f.url("/api/models?gateway=all"));
        tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..200 {
                let r = c.get(&url).header("accept-encoding", "br").send().await.unwrap();
                assert_eq!(r.status(), 200, "a cached read failed beside the hostile mix");
                r.bytes().await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    let reads = reader.await.unwrap();
    let (peak, now) = f.memory_mb();
    println!(
        "480 hostile requests from 6 connections: peak RSS {before} -> {peak} MB (now {now} MB); {reads} cached reads, none failed"
    );
    assert!(peak < 400, "peak RSS {peak} MB");
}
