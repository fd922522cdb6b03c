//! What an instance keeps per request shape stays within `ANSWER_CACHE_MAX_BYTES`,
//! counted by the allocator itself, whatever the URLs: the budget counts what is
//! really held (key copies, map and LRU slots, every buffer's capacity, `Arc`
//! headers), not an estimate of it. Its own test binary: the counting allocator sees
//! nothing but this test.

use std::sync::Arc;

use cache_core::App;
use cache_core::RequestContext;
use cache_core::config::Config;
use cache_core::contract::Trigger;
use cache_core::handlers::{Route, handle};
use cache_core::spawn::TaskSpawner;
use cap::Cap;

#[global_allocator]
static ALLOCATED: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const BUDGET: usize = 4 << 20;
/// Enough small answers to fill the budget several times at what they really cost.
const URLS: usize = 24_000;

/// GET `url` (the models page's route for `/models...`, else the models JSON's).
async fn get(ctx: &RequestContext, url: &str) -> usize {
    let route = if url.starts_with("/models") {
        Route::Page
    } else {
        Route::Models
    };
    let (parts, ()) = http::Request::builder()
        .uri(url)
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap()
        .into_parts();
    let r = handle(route, parts, ctx.clone()).await;
    assert_eq!(r.status(), 200, "{url}");
    r.body().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_bytes_stay_within_the_budget_whatever_the_urls() {
    let sample = sample_catalog::start_local().await;
    let base = sample.base_url();
    let config = Config::from_pairs(&[
        ("GATEWAYZ_API_URL", &base),
        ("GATEWAYS", "groq,together,cerebras"),
        ("ANSWER_CACHE_MAX_BYTES", &BUDGET.to_string()),
        ("LOCAL_CACHE_TTL_MS", "3600000"),
        ("METRICS_FLUSH_INTERVAL_MS", "3600000"),
        ("TTL_JITTER_PERCENT", "0"),
    ])
    .unwrap();
    let tasks = TaskSpawner::new();
    let ctx = RequestContext::new(App::new(config).unwrap(), Arc::new(tasks.clone()));
    assert!(ctx.warm(None, Trigger::Manual).await.unwrap().success);
    // Every view's index (pinned: bounded by the views, not the URLs) and the
    // runtime's own buffers exist before the baseline.
    for view in ["all", "groq", "together", "cerebras"] {
        get(&ctx, &format!("/api/models?gateway={view}&limit=5&offset=1")).await;
        get(&ctx, &format!("/api/models?gateway={view}&search=zz")).await;
    }
    get(&ctx, "/models").await; // the models page's document (pinned)
    tasks.idle().await;
    let baseline = ALLOCATED.allocated();
    let mut served = 0usize;
    let mut peak = 0usize;
    for k in 0..URLS {
        let view = ["all", "groq", "together", "cerebras"][k % 4];
        let url = match k % 10 {
            // Distinct terms that match nothing: the smallest answers, where a
            // per-entry estimate is furthest from what an entry really costs.
            0..=4 => format!("/api/models?gateway={view}&search=nomatch-{k}"),
            // The models page's other pages and the rows fragments its script asks for.
            5 => format!("/models?search=nomatch-{k}&fragment=rows"),
            6 => format!("/models?offset={}", k % 3000),
            7 => format!("/api/models?gateway={view}&search=a{}", k % 97),
            8 => format!("/api/models?gateway={view}&limit=5&offset={}", k % 90),
            _ => format!("/api/models?gateway={view}&limit={}&offset={}", 1 + k % 100, k % 7),
        };
        served += get(&ctx, &url).await;
        peak = peak.max(ALLOCATED.allocated().saturating_sub(baseline));
    }
    tasks.idle().await;
    let grown = ALLOCATED.allocated().saturating_sub(baseline);
    println!(
        "{URLS} distinct URLs, {} MB served, budget {} MiB: allocated grew {:.2} MiB (peak {:.2} MiB)",
        served >> 20,
        BUDGET >> 20,
        grown as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64
    );
    // The budget, plus a fixed baseline for what is not kept per URL (the runtime,
    // the in-flight request, the flights map's bounded handles).
    let slack = 1 << 20;
    assert!(
        grown <= BUDGET + slack,
        "grew {grown} B: more than the budget {BUDGET} + {slack}"
    );
    assert!(
        grown > BUDGET / 2,
        "and the budget filled (else this test proves nothing): {grown}"
    );
}
