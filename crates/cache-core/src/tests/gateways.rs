//! Gateway fetchers, normalisation, the merged view and warming, against the
//! project's sample catalog API (and wiremock for shapes it does not produce) on
//! loopback, with a real redis-server. Inside the crate: it reaches the fetcher,
//! the cache and the store, which are not part of cache-core's public API.

use crate::RequestContext;
use std::time::{Duration, Instant};

use sample_catalog::Fault;
use serde_json::{Value, json};

use super::{Stack, config};
use crate::app::warm::{Outcome, Trigger, WarmError};
use crate::gateways::FetchError;
use crate::keys;
use crate::{App, CacheStatus};

fn fixture_count(id: &str) -> usize {
    let json = sample_catalog::FIXTURES.iter().find(|(g, _)| *g == id).unwrap().1;
    serde_json::from_str::<Vec<Value>>(json).unwrap().len()
}

// ---- fetcher -------------------------------------------------------------------

#[tokio::test]
async fn pages_concurrently_once_total_is_known() {
    let s = Stack::new(&[("FETCH_PAGE_LIMIT", "100")]).await;
    let models = s.app.fetcher.fetch(&s.gw("featherless")).await.unwrap();
    assert_eq!(models.len(), fixture_count("featherless"));
    assert_eq!(
        s.sample.requests("featherless"),
        16,
        "1500 models / 100 per page, and the first page again at the end (did the listing move?)"
    );
    let ids: std::collections::HashSet<_> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), models.len(), "pages are neither repeated nor skipped");
}

#[tokio::test]
async fn legacy_shape_whole_catalog_at_once() {
    let s = Stack::new(&[("FETCH_PAGE_LIMIT", "100")]).await;
    s.sample.set_fault("featherless", Fault::Legacy);
    let models = s.app.fetcher.fetch(&s.gw("featherless")).await.unwrap();
    assert_eq!(models.len(), fixture_count("featherless"));
    assert_eq!(
        s.sample.requests("featherless"),
        1,
        "a page longer than limit is the whole catalog"
    );
}

#[tokio::test]
async fn legacy_shape_that_ignores_offset_does_not_loop() {
    // Exactly `limit` models and offset ignored: the second page repeats the first.
    let s = Stack::new(&[("FETCH_PAGE_LIMIT", "11")]).await;
    s.sample.set_fault("groq", Fault::Legacy);
    let models = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap();
    assert_eq!(models.len(), 11);
    assert_eq!(s.sample.requests("groq"), 2);
}

#[tokio::test]
async fn has_more_without_total_follows_next_offset() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    // The first page is asked for again at the end (did the listing move?).
    for (offset, ids, more, next, times) in [
        ("0", vec!["a", "b"], true, json!(2), 2),
        ("2", vec!["c"], false, Value::Null, 1),
    ] {
        let data: Vec<Value> = ids.iter().map(|i| json!({"id": i})).collect();
        Mock::given(method("GET"))
            .and(path("/v1/models"))
            .and(query_param("offset", offset))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"data": data, "has_more": more, "next_offset": next})),
            )
            .expect(times)
            .mount(&server)
            .await;
    }
    let c = App::new(config(&[
        ("GATEWAYZ_API_URL", &server.uri()),
        ("FETCH_PAGE_LIMIT", "2"),
    ]))
    .unwrap();
    let models = c.fetcher.fetch(c.registry.resolve("groq").unwrap()).await.unwrap();
    assert_eq!(
        models.iter().map(|m| m["id"].as_str().unwrap()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn page_cap_stops_a_runaway_catalog() {
    let s = Stack::new(&[("FETCH_PAGE_LIMIT", "100"), ("FETCH_MAX_PAGES", "3")]).await;
    let err = s.app.fetcher.fetch(&s.gw("featherless")).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::TooManyPages {
            gateway: "featherless".into(),
            limit: 3
        }
    );
    assert_eq!(
        s.sample.requests("featherless"),
        1,
        "refused before fetching pages it would not keep"
    );
}

#[tokio::test]
async fn size_cap_cuts_off_a_huge_body() {
    let s = Stack::new(&[("FETCH_MAX_BYTES", "200000")]).await;
    s.sample.set_fault("groq", Fault::Huge { bytes: 5 << 20 });
    let err = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::TooLarge {
            gateway: "groq".into(),
            limit: 200_000
        }
    );
    // The total across pages is capped too, not just one page.
    let err = s.app.fetcher.fetch(&s.gw("featherless")).await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn deadline_per_gateway() {
    let s = Stack::new(&[("GATEWAY_TIMEOUT_FAST_MS", "300")]).await;
    s.sample.set_latency("groq", Duration::from_secs(5));
    let t = Instant::now();
    let err = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Timeout { ref gateway, .. } if gateway == "groq"),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    s.sample.set_fault("fal", Fault::SlowDrip);
    let err = s.app.fetcher.fetch(&s.gw("fal")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Timeout { .. }),
        "a slow drip hits the deadline: {err:?}"
    );
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured_within_the_deadline() {
    let s = Stack::new(&[("GATEWAY_TIMEOUT_FAST_MS", "3000")]).await;
    s.sample.set_fault(
        "groq",
        Fault::RateLimited {
            retry_after_secs: 1,
            times: 1,
        },
    );
    let t = Instant::now();
    let models = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap();
    assert_eq!(models.len(), 11);
    assert!(t.elapsed() >= Duration::from_secs(1), "waited for Retry-After");
    assert_eq!(s.sample.requests("groq"), 2);

    // A Retry-After beyond the deadline fails at once instead of sleeping past it.
    s.sample.set_fault(
        "groq",
        Fault::RateLimited {
            retry_after_secs: 30,
            times: 1,
        },
    );
    let t = Instant::now();
    let err = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap_err();
    assert!(matches!(err, FetchError::RateLimited { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// Issue 39, finding 6: an upstream that rate limits with `Retry-After: 0` is asked
/// again at most once a second, not six times within 20 ms.
#[tokio::test]
async fn retry_after_zero_makes_at_most_one_retry_a_second() {
    let s = Stack::new(&[("GATEWAY_TIMEOUT_FAST_MS", "2500")]).await;
    s.sample.set_fault(
        "groq",
        Fault::RateLimited {
            retry_after_secs: 0,
            times: u32::MAX,
        },
    );
    let t = Instant::now();
    let err = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap_err();
    assert!(matches!(err, FetchError::RateLimited { .. }), "{err:?}");
    let (requests, secs) = (s.sample.requests("groq"), t.elapsed().as_secs_f64());
    println!("Retry-After: 0 for {secs:.1} s: {requests} requests");
    assert!(
        requests as f64 <= 1.0 + secs.ceil(),
        "{requests} requests in {secs:.1} s"
    );
}

#[tokio::test]
async fn each_bad_payload_is_a_typed_error_naming_the_gateway() {
    let s = Stack::new(&[]).await;
    let cases = [
        (Fault::ServerError, "HTTP 500"),
        (Fault::Html, "HTML page (HTTP 502)"),
        (Fault::InvalidJson, "invalid JSON"),
        (Fault::Truncated, "invalid JSON"),
    ];
    for (fault, expected) in cases {
        s.sample.set_fault("groq", fault.clone());
        let err = s.app.fetcher.fetch(&s.gw("groq")).await.unwrap_err().to_string();
        assert!(
            err.starts_with("groq: ") && err.contains(expected),
            "{fault:?} -> {err}"
        );
    }
    // Connection refused.
    let c = App::new(config(&[(
        "GATEWAYZ_API_URL",
        &format!("http://127.0.0.1:{}", test_support::free_port()),
    )]))
    .unwrap();
    let err = c.fetcher.fetch(c.registry.resolve("groq").unwrap()).await.unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err:?}");
}

#[tokio::test]
async fn bearer_token_from_env_for_gateways_that_need_one() {
    let s = Stack::new(&[("GATEWAYZ_TOKEN_HUGGINGFACE", "hf-test-token")]).await;
    s.sample.require_token("huggingface", "hf-test-token");
    assert_eq!(
        s.app.fetcher.fetch(&s.gw("huggingface")).await.unwrap().len(),
        fixture_count("huggingface")
    );
    let without = s.instance(&[]);
    let err = without
        .fetcher
        .fetch(without.registry.resolve("hug").unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::Status {
            gateway: "huggingface".into(),
            status: 401
        }
    );
}

// ---- normalisation and merge ---------------------------------------------------

#[tokio::test]
async fn prices_are_per_token_for_every_unit() {
    let s = Stack::new(&[]).await;
    let models = s.models("groq").await; // per million
    let guard = models.iter().find(|m| m["id"] == "llama-guard-3-8b").unwrap();
    assert_eq!(guard["pricing"]["prompt"], "0.0000002", "0.2 per million");
    let or = s.models("openrouter").await; // already per token
    let fixture: Vec<Value> = serde_json::from_str(sample_catalog::FIXTURES[0].1).unwrap();
    let with_price = fixture.iter().find(|m| m["pricing"]["prompt"].is_string()).unwrap();
    let served = or.iter().find(|m| m["id"] == with_price["id"]).unwrap();
    assert_eq!(served["pricing"]["prompt"], with_price["pricing"]["prompt"]);
    for m in models.iter().chain(&or) {
        assert!(
            m.as_object().unwrap().keys().all(|k| !k.starts_with("raw_")),
            "raw copies dropped"
        );
        assert_eq!(m["source_gateways"].as_array().unwrap().len(), 1);
    }
    // No price anywhere is ever above $1 per token: units are normalised.
    for id in ["featherless", "together", "fireworks"] {
        for m in s.models(id).await {
            if let Some(p) = m["pricing"]["prompt"].as_str() {
                assert!(p.parse::<f64>().unwrap() < 1.0, "{id} {} {p}", m["id"]);
            }
        }
    }
}

#[tokio::test]
async fn merge_rules_on_crafted_duplicates() {
    let s = Stack::new(&[("GATEWAYS", "openrouter,together,groq")]).await;
    s.sample.set_catalog(
        "openrouter",
        vec![json!({"id":"openai/gpt-4o","name":"GPT-4o","provider_slug":"openai"})],
    );
    s.sample.set_catalog(
        "together",
        vec![
            json!({"id":"gpt-4o","name":"GPT-4o (Together)","description":"omni","context_length":128000,
                     "pricing":{"prompt":"5","completion":"15"},"architecture":{"input_modalities":["text","image"]},
                     "provider_slug":"azure"}),
        ],
    );
    s.sample
        .set_catalog("groq", vec![json!({"id":"llama-3-8b","name":"Llama 3 8B"})]);
    let record = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(record.success, "{record:?}");
    let all = s.models("all").await;
    assert_eq!(all.len(), 2);
    let gpt = all
        .iter()
        .find(|m| m["name"] == "GPT-4o (Together)")
        .expect("most complete record kept");
    assert_eq!(gpt["source_gateways"], json!(["openrouter", "together"]));
    assert_eq!(gpt["provider_slugs"], json!(["openai", "azure"]));
    assert_eq!(
        gpt["pricing"]["prompt"], "0.000005",
        "Together's per-million price, normalised"
    );
}

// ---- warming -------------------------------------------------------------------

/// Deadlines a debug build meets for every built-in catalog (featherless's 1,500
/// models) on a busy 2-core machine, for tests whose subject is not deadlines.
pub(super) const ROOMY_DEADLINES: [(&str, &str); 2] = [
    ("GATEWAY_TIMEOUT_FAST_MS", "20000"),
    ("GATEWAY_TIMEOUT_SLOW_MS", "20000"),
];

#[tokio::test]
async fn warm_every_built_in_gateway_and_serve_hits() {
    let s = Stack::new(&ROOMY_DEADLINES).await;
    let record = s.ctx().warm(None, Trigger::Cron).await.unwrap();
    assert!(record.success, "{record:?}");
    assert_eq!(record.gateways_success, crate::gateways::DEFAULT_GATEWAYS.len());
    assert_eq!(
        record.total_models as usize,
        sample_catalog::FIXTURES
            .iter()
            .map(|(g, _)| fixture_count(g))
            .sum::<usize>()
    );
    assert!(record.merged_models.unwrap() > 1000);
    let stored = s.app.last_run().await.unwrap();
    assert_eq!(stored, record, "the run record is stored as reported");
    let before = s.sample.total_requests();
    let all = s.ctx().read_all().await.unwrap();
    assert_eq!(all.status, CacheStatus::Hit);
    for gw in s.app.registry.all() {
        assert_eq!(s.ctx().read_gateway(gw).await.unwrap().status, CacheStatus::Hit);
    }
    assert_eq!(
        s.sample.total_requests(),
        before,
        "reads after a warm never reach the upstream"
    );
}

#[tokio::test]
async fn warm_refetches_even_when_cached() {
    let s = Stack::new(&[("GATEWAYS", "groq")]).await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert_eq!(
        s.sample.requests("groq"),
        2,
        "docs/design.md, failure 6: a warm refetches a key that is already fresh"
    );
}

#[tokio::test]
async fn warm_with_one_failing_and_one_slow_gateway_keeps_last_known_good() {
    let s = Stack::new(&[
        ("GATEWAYS", "groq,together,xai,cerebras"),
        ("GATEWAY_TIMEOUT_FAST_MS", "500"),
        ("GATEWAY_TIMEOUT_SLOW_MS", "500"),
    ])
    .await;
    let first = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(first.success);
    let merged_before = first.merged_models.unwrap();

    s.sample.set_fault("together", Fault::ServerError);
    s.sample.set_latency("xai", Duration::from_secs(3));
    s.sample.set_fault("cerebras", Fault::Empty);
    let t = Instant::now();
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "bounded by deadlines, not by the slow gateway: {:?}",
        t.elapsed()
    );
    assert!(!run.success, "honest: not every gateway succeeded");
    assert_eq!((run.gateways_success, run.gateways_failed), (1, 3));
    let by_id = |id: &str| run.details.iter().find(|d| d.gateway == id).unwrap().clone();
    assert_eq!(by_id("groq").status, Outcome::Success);
    let together = by_id("together");
    assert_eq!(together.status, Outcome::Error);
    assert!(together.error.as_deref().unwrap().contains("HTTP 500"), "{together:?}");
    assert_eq!(together.count, 94, "the previous 94 models are still cached");
    assert!(by_id("xai").error.as_deref().unwrap().contains("timed out"));
    assert!(by_id("cerebras").error.as_deref().unwrap().contains("0 models"));
    assert_eq!(s.models("together").await.len(), 94, "old data kept");
    assert_eq!(s.models("cerebras").await.len(), 9, "an empty answer never overwrites");
    assert_eq!(
        run.merged_models,
        Some(merged_before),
        "the merged view keeps every gateway's cached data"
    );
    let failure = s.app.cache.last_failure(&keys::gateway("together")).await.unwrap();
    assert!(failure.error.contains("HTTP 500"));
}

#[tokio::test]
async fn overlapping_warms_do_not_refetch() {
    let s = Stack::new(&[("GATEWAYS", "groq,xai")]).await;
    s.sample.set_latency("xai", Duration::from_millis(700));
    let other = s.instance(&[("GATEWAYS", "groq,xai")]);
    let first = {
        let (c, sp) = (s.app.clone(), s.spawner());
        tokio::spawn(async move { RequestContext::new(c.clone(), sp).warm(None, Trigger::Cron).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = s.ctx_of(&other).warm(None, Trigger::Manual).await;
    let Err(WarmError::AlreadyRunning {
        started_at_ms: Some(started),
    }) = second
    else {
        panic!("expected AlreadyRunning with a start time, got {second:?}");
    };
    assert!(crate::clock::now_ms() - started < 5_000);
    assert!(first.await.unwrap().unwrap().success);
    assert_eq!(s.sample.requests("xai"), 1, "the second warm fetched nothing");
    assert!(
        s.ctx_of(&other).warm(None, Trigger::Manual).await.is_ok(),
        "the lock is released after a run"
    );
}

#[tokio::test]
async fn merged_view_follows_a_gateway_revalidation() {
    let s = Stack::new(&[("GATEWAYS", "groq,cerebras"), ("MODELS_FRESH_TTL_SECONDS", "1")]).await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    // groq (11) and cerebras (9) share one model: 19 after dedup.
    assert_eq!(s.models("all").await.len(), 19);
    s.sample.set_catalog(
        "groq",
        (0..12)
            .map(|i| json!({"id": format!("brand-new-{i}"), "name": "Brand New"}))
            .collect(),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    assert_eq!(stale.status, CacheStatus::Stale);
    s.tasks.idle().await;
    let all = s.models("all").await;
    assert!(
        all.iter().any(|m| m["id"] == "brand-new-0"),
        "the merged view was rebuilt after groq revalidated"
    );
    assert_ne!(
        s.app.all_key(),
        keys::ALL,
        "a custom gateway set has its own merged key"
    );
    let raw = s._redis.command(&[b"EXISTS", s.app.all_key().as_bytes()]);
    assert_eq!(raw, b":1\r\n");
}

#[tokio::test]
async fn cold_merged_read_fills_gateways_and_tolerates_a_dead_one() {
    let s = Stack::new(&[("GATEWAYS", "groq,together,cerebras")]).await;
    s.sample.set_fault("together", Fault::ServerError);
    let lookup = s.ctx().read_all().await.unwrap();
    assert_eq!(lookup.status, CacheStatus::Miss);
    let v: Value = serde_json::from_slice(&lookup.entry.identity().unwrap()).unwrap();
    assert_eq!(v["gateways"], json!(["groq", "cerebras"]));
    assert_eq!(v["total"], 19, "groq (11) + cerebras (9), one model shared");
}

// ---- ordering and truthfulness ---------------------------------------------------

#[tokio::test]
async fn a_catalog_short_of_its_total_is_rejected() {
    let s = Stack::new(&[("GATEWAYS", "featherless"), ("FETCH_PAGE_LIMIT", "1000")]).await;
    s.sample.set_fault("featherless", Fault::ShortPages);
    let err = s.app.fetcher.fetch(&s.gw("featherless")).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::Truncated {
            gateway: "featherless".into(),
            received: 1000,
            total: 1500
        }
    );
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(!run.success);
    assert_eq!(run.details[0].status, Outcome::Error);
    assert!(
        s.app.cache.peek(&keys::gateway("featherless")).await.is_none(),
        "nothing stored"
    );
}

/// The collapse guard judges against the last accepted catalog (not an all-time
/// high): 1500 -> 150 is a tenth and passes; 150 -> 14 is a collapse and is held.
#[tokio::test]
async fn a_collapse_is_judged_against_the_last_accepted_catalog_and_held() {
    let s = Stack::new(&[("GATEWAYS", "featherless")]).await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let all: Vec<Value> = serde_json::from_str(
        sample_catalog::FIXTURES
            .iter()
            .find(|(g, _)| *g == "featherless")
            .unwrap()
            .1,
    )
    .unwrap();
    let mut counts = Vec::new();
    for keep in [150, 14] {
        s.sample.set_catalog("featherless", all[..keep].to_vec());
        s.ctx().warm(None, Trigger::Manual).await.unwrap();
        let stored = s.app.cache.peek(&keys::gateway("featherless")).await.unwrap();
        counts.push((stored.meta.item_count, stored.meta.held()));
    }
    assert_eq!(counts, vec![(150, false), (150, true)]);
}

#[tokio::test]
async fn an_empty_answer_from_a_large_gateway_keeps_its_catalog() {
    let s = Stack::new(&[("GATEWAYS", "openrouter,featherless")]).await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    for gw in ["openrouter", "featherless"] {
        s.sample.set_fault(gw, Fault::Empty);
    }
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert_eq!(run.gateways_failed, 2, "{run:?}");
    for gw in ["openrouter", "featherless"] {
        let kept = s.app.cache.peek(&keys::gateway(gw)).await.unwrap();
        assert_eq!(kept.meta.item_count as usize, fixture_count(gw), "{gw} kept");
    }
}

#[tokio::test]
async fn a_gateway_filled_by_a_miss_reaches_the_merged_view() {
    let s = Stack::new(&[("GATEWAYS", "groq,cerebras")]).await;
    s.sample.set_fault("groq", Fault::ServerError);
    let run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert_eq!(run.gateways_failed, 1);
    assert_eq!(s.models("all").await.len(), 9, "cerebras alone");
    // groq recovers; a reader's miss fills it (not a warm, not a revalidation).
    s.sample.set_fault("groq", Fault::None);
    s._redis.command(&[b"DEL", b"retryafter:models:v4:groq"]);
    let filled = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    assert_eq!(filled.status, CacheStatus::Miss);
    s.tasks.idle().await;
    assert_eq!(s.models("all").await.len(), 19, "the merged view now has groq too");
}

/// Instance B's cold `all` read merges the old groq while a slow,
/// failing cerebras holds it up; meanwhile groq changes and A's warm of groq rebuilds
/// the merged view. A's rebuild waits for B's merge and must not adopt it (it was
/// built from groq as it was before the change): when A's warm returns, `all` has the
/// new groq. Nothing else would heal it: B stores no gateway, so it schedules no rebuild.
#[tokio::test]
async fn a_rebuild_never_adopts_a_concurrent_merge_of_older_gateway_data() {
    let set = [("GATEWAYS", "groq,cerebras")];
    let s = Stack::new(&set).await;
    let b = s.instance(&set);
    s.sample.set_fault("cerebras", Fault::ServerError);
    s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    s.tasks.idle().await;
    // B's `all` read must be a miss that fetches cerebras (slowly) itself.
    let all_key = s.app.all_key().to_string();
    s.app.store().delete(&all_key).await.unwrap();
    s.app
        .store()
        .delete(&keys::retry_after(&keys::gateway("cerebras")))
        .await
        .unwrap();
    s.sample.set_latency("cerebras", Duration::from_millis(800));

    let (b2, spawner) = (b.clone(), s.spawner());
    let b_read = tokio::spawn(async move { RequestContext::new(b2, spawner).read_all().await });
    tokio::time::sleep(Duration::from_millis(200)).await; // B holds the merged key's lock
    let new_groq: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("brand-new-{i}"), "name": "Brand New"}))
        .collect();
    s.sample.set_catalog("groq", new_groq);
    let run = s.ctx().warm(Some(vec![s.gw("groq")]), Trigger::Manual).await.unwrap();
    assert!(run.success, "{run:?}");
    let b_saw = b_read.await.unwrap().unwrap();
    assert_eq!(b_saw.status, CacheStatus::Miss);
    assert_eq!(b_saw.entry.meta.item_count, 11, "B merged groq as it was");

    // What the store holds, through a fresh instance (no in-process copy).
    let merged = s.instance(&set).cache.peek(&all_key).await.unwrap();
    let ids: Vec<String> = body_of(&merged)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        12,
        "the rebuild merged the new groq, not B's older merge: {ids:?}"
    );
    assert!(ids.iter().all(|id| id.starts_with("brand-new-")), "{ids:?}");
    assert_eq!(run.merged_models, Some(12));
}

#[tokio::test]
async fn deployments_with_different_gateway_sets_share_one_redis() {
    let s = Stack::new(&ROOMY_DEADLINES).await; // the built-in set
    let small = s.instance(&[("GATEWAYS", "groq,cerebras")]);
    let big_run = s.ctx().warm(None, Trigger::Manual).await.unwrap();
    assert!(big_run.success, "{big_run:?}");
    let small_run = s.ctx_of(&small).warm(None, Trigger::Manual).await.unwrap();
    assert!(
        small_run.success,
        "the smaller set's merge is no collapse of the bigger one: {small_run:?}"
    );
    assert_eq!(small_run.merged_models, Some(19));
    assert_ne!(small.all_key(), s.app.all_key());
    let big_all = s.ctx().read_all().await.unwrap();
    assert_eq!(big_all.status, CacheStatus::Hit);
    assert_eq!(
        big_all.entry.meta.item_count, 3579,
        "the big deployment still serves its own view"
    );
    let small_all = s.ctx_of(&small).read_all().await.unwrap();
    assert_eq!(small_all.entry.meta.item_count, 19);
}

// ---- never serve less than we had (merged completeness, fail-safe, unchanged) ------

async fn stack(memory: bool, overrides: &[(&str, &str)]) -> Stack {
    if memory {
        Stack::memory(overrides).await
    } else {
        Stack::new(overrides).await
    }
}

fn body_of(entry: &crate::entry::Entry) -> Value {
    serde_json::from_slice(&entry.identity().unwrap()).unwrap()
}

/// The reproduction: one gateway read, then its revalidation rebuilds the
/// merged view. It must hold every gateway, not just that one.
async fn a_single_gateways_revalidation_keeps_the_merged_view_whole(memory: bool) {
    let s = stack(
        memory,
        &[
            ("MODELS_FRESH_TTL_SECONDS", "1"),
            ("LOCAL_CACHE_TTL_MS", "0"),
            ROOMY_DEADLINES[0],
            ROOMY_DEADLINES[1],
        ],
    )
    .await;
    assert_eq!(
        s.ctx().read_gateway(&s.gw("groq")).await.unwrap().status,
        CacheStatus::Miss
    );
    s.tasks.idle().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        s.ctx().read_gateway(&s.gw("groq")).await.unwrap().status,
        CacheStatus::Stale
    );
    s.tasks.idle().await;
    let all = s.ctx().read_all().await.unwrap();
    assert_eq!(all.entry.meta.item_count, 3579, "every gateway, not groq alone");
    assert_eq!(body_of(&all.entry)["missing_gateways"], json!([]));
}

/// A gateway evicted from the store (LRU, flush, new prefix) is fetched through the
/// cache by the next rebuild instead of vanishing from `all`.
async fn a_rebuild_refetches_an_evicted_gateway(memory: bool) {
    let s = stack(memory, &[("GATEWAYS", "groq,cerebras,together")]).await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let before = s.ctx().read_all().await.unwrap().entry.meta.item_count;
    s.app.store().delete(&keys::gateway("together")).await.unwrap();
    s.app.cache.forget_local(&keys::gateway("together"));
    let calls = s.sample.requests("together");
    let rebuilt = s.ctx().rebuild_all().await.unwrap();
    assert_eq!(rebuilt.meta.item_count, before, "together is back in the merged view");
    assert_eq!(
        s.sample.requests("together"),
        calls + 1,
        "fetched through the cache by the rebuild"
    );
}

/// A gateway down for "two days" (scaled: 1 s fresh, 1 s stale, 60 s kept): past its
/// stale window it is still served, marked fail-safe; warms keep it too.
async fn a_gateway_down_for_days_is_served_by_fail_safe(memory: bool) {
    let s = stack(
        memory,
        &[
            ("GATEWAYS", "groq,cerebras"),
            ("MODELS_FRESH_TTL_SECONDS", "1"),
            ("MODELS_STALE_TTL_SECONDS", "1"),
            ("FAILSAFE_MAX_SECONDS", "60"),
            ("LOCAL_CACHE_TTL_MS", "0"),
        ],
    )
    .await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    s.sample.set_fault("groq", Fault::ServerError);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(2200)).await; // past fresh and stale
        let r = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
        assert_eq!(
            (r.status, r.fail_safe),
            (CacheStatus::Stale, true),
            "last-known-good, marked"
        );
        assert_eq!(r.entry.meta.item_count, 11);
        s.tasks.idle().await;
        let run = s.ctx().warm(None, Trigger::Cron).await.unwrap();
        assert_eq!(run.gateways_failed, 1);
        let kept = s
            .app
            .cache
            .peek(&keys::gateway("groq"))
            .await
            .expect("the warm kept it");
        assert_eq!(kept.meta.item_count, 11);
    }
    let all = s.ctx().read_all().await.unwrap();
    assert_eq!(all.entry.meta.item_count, 19, "groq's kept catalog is still merged");
    s.app.flush_metrics().await;
    let m = crate::metrics::Metrics::read(s.app.store(), "models").await.unwrap();
    assert!(m.fail_safe_serves >= 2, "{m:?}");
}

/// A kept key whose refetch hangs: the reader gets the kept value at the soft
/// timeout; the fetch finishes in the background and is stored.
async fn a_hanging_refetch_answers_at_the_soft_timeout_then_lands(memory: bool) {
    let s = stack(
        memory,
        &[
            ("GATEWAYS", "groq"),
            // Fresh 2 s: the refetch (1.2 s, stamped at its start) is still fresh when it lands.
            ("MODELS_FRESH_TTL_SECONDS", "2"),
            ("MODELS_STALE_TTL_SECONDS", "1"),
            ("FETCH_SOFT_TIMEOUT_MS", "300"),
            ("LOCAL_CACHE_TTL_MS", "0"),
        ],
    )
    .await;
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let first = s.app.cache.peek(&keys::gateway("groq")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    s.sample.set_latency("groq", Duration::from_millis(1200));
    s.sample.set_catalog(
        "groq",
        (0..12)
            .map(|i| json!({"id": format!("brand-new-{i}"), "name": "Brand New"}))
            .collect(),
    );
    let t = Instant::now();
    let r = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    let waited = t.elapsed();
    assert!(r.fail_safe && r.status == CacheStatus::Stale);
    assert_eq!(r.entry.meta.etag, first.meta.etag, "the kept value");
    assert!(
        waited < Duration::from_millis(1000),
        "answered at the soft timeout: {waited:?}"
    );
    s.tasks.idle().await;
    let after = s.ctx().read_gateway(&s.gw("groq")).await.unwrap();
    assert_eq!(
        (after.status, after.entry.meta.item_count),
        (CacheStatus::Hit, 12),
        "the background fetch was stored"
    );
}

/// A gateway that never succeeded is named in the merged view and the status, and
/// the merged view is fresh only briefly, so it heals soon.
async fn a_gateway_that_never_succeeded_is_named_missing(memory: bool) {
    let s = stack(memory, &[("GATEWAYS", "groq,together")]).await;
    s.sample.set_fault("together", Fault::ServerError);
    let all = s.ctx().read_all().await.unwrap();
    let body = body_of(&all.entry);
    assert_eq!(body["missing_gateways"], json!(["together"]));
    assert_eq!(body["gateways"], json!(["groq"]));
    let window = all.entry.meta.clock.fresh_until_ms - all.entry.meta.clock.fetched_at_ms;
    assert!(
        window <= 60_000,
        "an incomplete merge is fresh for a minute, not hours: {window} ms"
    );
    let status = crate::handlers::handle(
        crate::handlers::Route::WarmModels,
        http::Request::get("/api/cache/warm-models")
            .body(())
            .unwrap()
            .into_parts()
            .0,
        crate::RequestContext::new(s.app.clone(), s.spawner()),
    )
    .await;
    let v: Value = serde_json::from_slice(&status.body().to_bytes()).unwrap();
    assert_eq!(v["merged"]["missing_gateways"], json!(["together"]), "{v}");
}

/// An unchanged refetch keeps the ETag (and bodies); a changed gateway gets a new
/// one; a warm in which nothing changed does not rebuild the merged view.
async fn an_unchanged_warm_keeps_etags_and_a_changed_gateway_gets_a_new_one(memory: bool) {
    let s = stack(
        memory,
        &[
            ("GATEWAYS", "groq,featherless"),
            ("LOCAL_CACHE_TTL_MS", "0"),
            ROOMY_DEADLINES[0],
            ROOMY_DEADLINES[1],
        ],
    )
    .await;
    let etag = |key: String| {
        let c = s.app.clone();
        async move { c.cache.peek(&key).await.unwrap().meta.clone() }
    };
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let (groq1, featherless1, all1) = (
        etag(keys::gateway("groq")).await,
        etag(keys::gateway("featherless")).await,
        etag(s.app.all_key().into()).await,
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let net_input = || {
        let info = s._redis.command(&[b"INFO", b"stats"]);
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = net_input();
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    if !memory {
        // Bodies were not sent again: a few hundred bytes per key, not the values.
        let mut values = 0;
        for key in [
            keys::gateway("groq"),
            keys::gateway("featherless"),
            s.app.all_key().to_string(),
        ] {
            values += s.app.cache.peek(&key).await.unwrap().encoded_len() as u64;
        }
        let written = net_input() - before;
        assert!(
            written * 2 < values,
            "an unchanged warm wrote {written} B; the values are {values} B"
        );
    }
    let (groq2, all2) = (etag(keys::gateway("groq")).await, etag(s.app.all_key().into()).await);
    assert_eq!(groq2.etag, groq1.etag, "unchanged: same ETag");
    assert!(
        groq2.clock.fetched_at_ms > groq1.clock.fetched_at_ms,
        "but its clock moved"
    );
    assert_eq!(all2.etag, all1.etag, "the merged view is unchanged too");
    assert!(
        all2.clock.fetched_at_ms > all1.clock.fetched_at_ms,
        "and its clock moved"
    );

    let mut changed: Vec<Value> =
        serde_json::from_str(sample_catalog::FIXTURES.iter().find(|(g, _)| *g == "groq").unwrap().1).unwrap();
    changed[0]["description"] = json!("a new description");
    s.sample.set_catalog("groq", changed);
    s.ctx().warm(None, Trigger::Manual).await.unwrap();
    let (groq3, featherless3, all3) = (
        etag(keys::gateway("groq")).await,
        etag(keys::gateway("featherless")).await,
        etag(s.app.all_key().into()).await,
    );
    assert_ne!(groq3.etag, groq1.etag, "changed: a new ETag");
    assert_eq!(featherless3.etag, featherless1.etag, "featherless did not change");
    assert_ne!(all3.etag, all1.etag, "the merged view was rebuilt");
}

macro_rules! on_redis_and_memory {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(false).await })*
        }
        mod on_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(true).await })*
        }
    };
}

on_redis_and_memory!(
    a_single_gateways_revalidation_keeps_the_merged_view_whole,
    a_rebuild_refetches_an_evicted_gateway,
    a_gateway_down_for_days_is_served_by_fail_safe,
    a_hanging_refetch_answers_at_the_soft_timeout_then_lands,
    a_gateway_that_never_succeeded_is_named_missing,
    an_unchanged_warm_keeps_etags_and_a_changed_gateway_gets_a_new_one,
);
