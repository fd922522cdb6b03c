//! The change feed's store bytes over many changing warms (issue 40): the log keeps
//! its bound (`LOG_MAX_EVENTS` changes), the ledger stays the size of the catalog.
//!
//! `cargo bench --bench changes` (10,000 fetches) or `cargo bench --bench changes --
//! --rounds 2000`. Each round changes the catalog upstream (one model repriced, one
//! added, one removed: three changes) and refetches it on a real redis-server, as a
//! warm does; the figures are Redis's own (`MEMORY USAGE`, `XLEN`, `used_memory`).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use cache_core::RequestContext;
use cache_core::contract::Trigger;
use cache_core::spawn::TaskSpawner;
use serde_json::{Value, json};
use support::redis::RedisServer;

const GW: &str = "openrouter";
const MODELS: usize = 200;

fn model(id: &str, prompt: &str) -> Value {
    json!({
        "id": id, "name": id, "context_length": 8192,
        "description": "A model of the change-feed benchmark, about as long as a real one's description.",
        "pricing": {"prompt": prompt, "completion": "0.000002"},
    })
}

/// A reply's integer (`:123`), 0 when there is none.
fn int(reply: &[u8]) -> u64 {
    String::from_utf8_lossy(reply)
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or(0)
}

fn used_memory(redis: &RedisServer) -> u64 {
    let info = String::from_utf8_lossy(&redis.command(&[b"INFO", b"memory"])).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn bytes_of(redis: &RedisServer, key: &str) -> u64 {
    int(&redis.command(&[b"MEMORY", b"USAGE", key.as_bytes(), b"SAMPLES", b"0"]))
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let redis = RedisServer::start();
    let sample = sample_catalog::start_local().await;
    let mut listed: Vec<Value> = (0..MODELS).map(|i| model(&format!("m/{i}"), "0.000001")).collect();
    sample.set_catalog(GW, listed.clone());
    let (url, api) = (redis.url(), sample.base_url());
    let app = cache_core::App::new(support::config(&[
        ("REDIS_URL", &url),
        ("GATEWAYZ_API_URL", &api),
        ("GATEWAYS", GW),
        ("RUST_LOG", "error"),
    ]))
    .unwrap();
    let ctx = RequestContext::new(app.clone(), Arc::new(TaskSpawner::new()));
    assert!(ctx.warm(None, Trigger::Manual).await.unwrap().success, "the baseline");
    let gw = app.gateway(GW).unwrap().clone();
    let baseline = used_memory(&redis);
    println!("== the change feed's store bytes: {MODELS} models, 3 changes a fetch, {rounds} fetches ==");
    println!(
        "{:>7} {:>8} {:>11} {:>13} {:>12} {:>15} {:>9}",
        "fetches", "changes", "log XLEN", "log bytes", "ledger B", "used_memory Δ", "ms/fetch"
    );
    let started = Instant::now();
    let (mut last, mut last_round) = (Instant::now(), 0);
    let mut failed = 0;
    for round in 1..=rounds {
        // One repriced, one added (at the end), one removed (the oldest still listed).
        listed[0] = model(
            listed[0]["id"].as_str().unwrap(),
            &format!("0.{:09}", round % 1_000_000 + 1),
        );
        listed.push(model(&format!("new/{round}"), "0.000001"));
        listed.remove(1);
        sample.set_catalog(GW, listed.clone());
        if ctx.refresh_gateway(&gw).await.is_err() {
            failed += 1;
        }
        if round.is_power_of_two() || round % 2_000 == 0 || round == rounds {
            let per = last.elapsed().as_secs_f64() * 1000.0 / (round - last_round) as f64;
            (last, last_round) = (Instant::now(), round);
            let ledger = ["seen", "dates", "last"]
                .iter()
                .map(|k| bytes_of(&redis, &format!("changes:{{v1}}:{k}:{GW}")))
                .sum::<u64>();
            println!(
                "{:>7} {:>8} {:>11} {:>13} {:>12} {:>15} {:>9.2}",
                round,
                round * 3,
                int(&redis.command(&[b"XLEN", b"changes:{v1}:log"])),
                bytes_of(&redis, "changes:{v1}:log"),
                ledger,
                used_memory(&redis) as i64 - baseline as i64,
                per
            );
        }
    }
    println!(
        "{rounds} changing fetches in {:.1} s ({failed} failed); the log's bound: 5,000 changes",
        started.elapsed().as_secs_f64()
    );
}
