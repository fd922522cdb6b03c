//! Warm benchmark: all 21 fixture gateways from the sample catalog API with injected
//! latencies (50 ms .. 2 s), against a real redis-server on loopback.
//!
//! Prints total warm time ÷ slowest gateway latency (target ≤ 1.2), and bytes stored
//! per gateway and in total versus the raw JSON the sample server sent.
//!
//! `cargo bench --bench warm` (add `-- --featherless 18000` for a Featherless-sized run).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::catalog::{ALL_KEY, gateway_key};
use cache_core::spawn::TaskSpawner;
use cache_core::warm::Trigger;

#[tokio::main]
async fn main() {
    let featherless: usize = std::env::args()
        .skip_while(|a| a != "--featherless")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let redis = support::redis::RedisServer::start();
    let sample = sample_catalog::start_local().await;
    if featherless > 0 {
        sample.scale("featherless", featherless);
    }
    // Latencies spread from 50 ms to 2 s across the 21 gateways.
    let ids: Vec<&str> = sample_catalog::FIXTURES.iter().map(|(g, _)| *g).collect();
    let slowest = Duration::from_millis(2000);
    for (i, id) in ids.iter().enumerate() {
        let ms = 50 + (1950 * i as u64) / (ids.len() as u64 - 1);
        sample.set_latency(id, Duration::from_millis(ms));
    }
    let base = sample.base_url();
    let url = redis.url();
    let catalog = cache_core::Catalog::new(support::config(&[
        ("GATEWAYZ_API_URL", &base),
        ("REDIS_URL", &url),
        ("REDIS_COMMAND_TIMEOUT_MS", "5000"),
    ]))
    .unwrap();

    let raw_bytes: Vec<(String, usize)> = {
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for id in &ids {
            let mut total = 0;
            let mut offset = 0;
            loop {
                let r = client
                    .get(format!("{base}/v1/models?gateway={id}&limit=1000&offset={offset}"))
                    .send()
                    .await
                    .unwrap();
                let b = r.bytes().await.unwrap();
                total += b.len();
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                if v["has_more"] != true {
                    break;
                }
                offset = v["next_offset"].as_u64().unwrap() as usize;
            }
            out.push((id.to_string(), total));
        }
        out
    };
    sample.reset_counts();

    let tasks = TaskSpawner::new();
    let t = Instant::now();
    let record = catalog
        .warm(None, Trigger::Manual, Arc::new(tasks.clone()))
        .await
        .unwrap();
    let total = t.elapsed();
    assert!(record.success, "{record:?}");

    println!(
        "warm: {} gateways, {} models, merged {} ",
        record.gateways_success,
        record.total_models,
        record.merged_models.unwrap()
    );
    println!(
        "warm: total {:.0} ms, slowest injected latency {} ms, ratio {:.2} (target <= 1.2)",
        total.as_secs_f64() * 1e3,
        slowest.as_millis(),
        total.as_secs_f64() / slowest.as_secs_f64()
    );
    println!(
        "{:<20} {:>8} {:>12} {:>12} {:>7}",
        "gateway", "models", "raw bytes", "stored", "ratio"
    );
    let (mut raw_sum, mut stored_sum) = (0usize, 0usize);
    for (id, raw) in &raw_bytes {
        let e = catalog.cache.peek(&gateway_key(id)).await.unwrap();
        let stored = e.encoded_len();
        raw_sum += raw;
        stored_sum += stored;
        println!(
            "{id:<20} {:>8} {raw:>12} {stored:>12} {:>6.1}%",
            e.meta.item_count,
            100.0 * stored as f64 / *raw as f64
        );
    }
    let all = catalog.cache.peek(ALL_KEY).await.unwrap();
    println!(
        "{:<20} {:>8} {:>12} {:>12}",
        "all (merged)",
        all.meta.item_count,
        "-",
        all.encoded_len()
    );
    stored_sum += all.encoded_len();
    println!(
        "at rest: {} bytes stored (gateways + merged) for {} raw JSON bytes = {:.1}% (target <= 15%)",
        stored_sum,
        raw_sum,
        100.0 * stored_sum as f64 / raw_sum as f64
    );
    let info = redis.command(&[b"INFO", b"memory"]);
    if let Some(line) = String::from_utf8_lossy(&info)
        .lines()
        .find(|l| l.starts_with("used_memory:"))
    {
        println!("redis {line}");
    }
}
