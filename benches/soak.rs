//! Bounded soak: mixed reads across all gateways with revalidations, periodic warms
//! and random upstream faults, against the release function binaries, a real
//! redis-server and the sample catalog API.
//!
//! `cargo bench --bench soak` (60 s) or `cargo bench --bench soak -- --seconds 180`.
//! Prints figures and PASS/FAIL for: zero panics, zero failed reads, memory flat,
//! upstream fetches per gateway per fresh window <= 1 (counted at the sample server).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sample_catalog::Fault;
use support::process::FunctionProcess;

const SECRET: &str = "soak-secret-0123456789abcdef";
const FRESH_SECS: u64 = 2;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let redis = support::redis::RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let (url, base) = (redis.url(), sample.base_url());
    let fresh = FRESH_SECS.to_string();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("GATEWAYZ_API_URL", &base),
        ("CACHE_WARMING_SECRET", SECRET),
        ("MODELS_FRESH_TTL_SECONDS", &fresh),
        ("MODELS_STALE_TTL_SECONDS", "600"),
        ("TTL_JITTER_PERCENT", "0"),
        ("REVALIDATE_RETRY_SECONDS", &fresh),
        ("GATEWAY_TIMEOUT_FAST_MS", "1000"),
        ("GATEWAY_TIMEOUT_SLOW_MS", "1000"),
        ("LOCAL_CACHE_TTL_MS", "250"),
        ("RUST_LOG", "warn"),
    ];
    let dir = std::env::temp_dir().join(format!("gwz-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logs = [dir.join("models.log"), dir.join("warm.log")];
    let models = FunctionProcess::spawn_logged(env!("CARGO_BIN_EXE_models"), &env, Some(&logs[0]));
    let warm = FunctionProcess::spawn_logged(env!("CARGO_BIN_EXE_cache-warm-models"), &env, Some(&logs[1]));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(
        client
            .post(warm.url("/api/cache/warm-models"))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ids: Vec<String> = sample_catalog::FIXTURES.iter().map(|(g, _)| g.to_string()).collect();
    let pages: Vec<u64> = ids
        .iter()
        .map(|g| (sample.model_count(g) as u64).div_ceil(1000).max(1))
        .collect();
    sample.reset_counts();

    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    let (ok, failed, slowest) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut readers = Vec::new();
    for _ in 0..16 {
        let (client, ok, failed, slowest, ids) =
            (client.clone(), ok.clone(), failed.clone(), slowest.clone(), ids.clone());
        let base = models.url("/api/models?gateway=");
        readers.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let gw = if fastrand::u8(..4) == 0 {
                    "all".to_string()
                } else {
                    ids[fastrand::usize(..ids.len())].clone()
                };
                let t = Instant::now();
                let res = client
                    .get(format!("{base}{gw}"))
                    .header("accept-encoding", "br")
                    .send()
                    .await;
                slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                match res {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let faults = Arc::new(AtomicU64::new(0));
    let injector = {
        let (sample, ids, faults) = (sample.clone(), ids.clone(), faults.clone());
        tokio::spawn(async move {
            while Instant::now() < stop {
                let gw = &ids[fastrand::usize(..ids.len())];
                let fault = match fastrand::u8(..8) {
                    0 => Fault::ServerError,
                    1 => Fault::Html,
                    2 => Fault::Empty,
                    3 => Fault::Reset,
                    4 => Fault::Truncated,
                    5 => Fault::Hang,
                    _ => Fault::None,
                };
                if fault != Fault::None {
                    faults.fetch_add(1, Ordering::Relaxed);
                }
                sample.set_fault(gw, fault);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            sample.reset_knobs();
        })
    };
    let warms = Arc::new(AtomicU64::new(0));
    let warmer = {
        let (client, url, warms) = (client.clone(), warm.url("/api/cache/warm-models"), warms.clone());
        tokio::spawn(async move {
            while Instant::now() + Duration::from_secs(10) < stop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let r = client.post(&url).bearer_auth(SECRET).send().await.unwrap();
                assert!([200, 207, 502].contains(&r.status().as_u16()), "{}", r.status());
                warms.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(seconds.min(10))).await;
    let rss_start = rss_kb(models.pid());
    let mut samples = vec![(started.elapsed().as_secs(), rss_start)];
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        samples.push((started.elapsed().as_secs(), rss_kb(models.pid())));
    }
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    for r in readers {
        r.await.unwrap();
    }
    injector.await.unwrap();
    warmer.await.unwrap();
    let rss_end = rss_kb(models.pid());
    let elapsed = started.elapsed().as_secs_f64();
    // Flat = the last third of the run peaks no higher than the middle third (+10 %):
    // allocator arenas settle early; a leak keeps climbing.
    let third = samples.len() / 3;
    let peak = |s: &[(u64, u64)]| s.iter().map(|x| x.1).max().unwrap_or(0);
    let (middle_peak, last_peak) = (peak(&samples[third..2 * third]), peak(&samples[2 * third..]));
    let timeline: Vec<String> = samples.iter().map(|(t, kb)| format!("{t}s:{}MB", kb / 1024)).collect();
    println!("soak: RSS timeline {}", timeline.join(" "));

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let warms = warms.load(Ordering::Relaxed);
    let windows = elapsed / FRESH_SECS as f64;
    let mut worst = 0.0f64;
    for (i, id) in ids.iter().enumerate() {
        // Requests that did not come from warms, in fetches (a fetch is `pages` requests
        // when it succeeds; a failed one stops at its first page, so this overestimates).
        let fetches = sample.requests(id).saturating_sub(warms * pages[i]) as f64 / pages[i] as f64;
        worst = worst.max(fetches / windows);
    }
    let panics: usize = logs
        .iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .matches("panicked")
                .count()
        })
        .sum();
    let rss_growth = last_peak as f64 / middle_peak.max(1) as f64;

    println!(
        "soak: {elapsed:.0} s, {} reads ({:.0}/s), {failed} failed, slowest {} ms",
        ok + failed,
        (ok + failed) as f64 / elapsed,
        slowest.load(Ordering::Relaxed)
    );
    println!(
        "soak: {} faults injected, {warms} warms, {} upstream requests",
        faults.load(Ordering::Relaxed),
        sample.total_requests()
    );
    println!(
        "soak: RSS of the models process {rss_start} kB after warm-up, {rss_end} kB at the end (max {rss_max} kB); last-third peak / middle-third peak = {rss_growth:.2}"
    );
    println!("soak: worst gateway: {worst:.2} upstream fetches per {FRESH_SECS} s fresh window (excluding warms)");
    let checks = [
        ("zero panics", panics == 0),
        ("zero failed reads", failed == 0),
        (
            "memory flat (last-third peak <= 1.10 x middle-third peak)",
            rss_growth <= 1.10,
        ),
        ("<= 1 upstream fetch per key per fresh window", worst <= 1.0),
    ];
    let mut all = true;
    for (name, pass) in checks {
        println!("soak: {} {name}", if pass { "PASS" } else { "FAIL" });
        all &= pass;
    }
    std::fs::remove_dir_all(&dir).ok();
    if !all {
        std::process::exit(1);
    }
}
