//! Every client of the route this project replaces keeps working, and the served
//! JSON keeps its contract whatever the upstream sends: the old frontend's exact
//! requests, a hostile catalog, and an upstream that rate limits. Through the built
//! `models` binary, a real redis-server and the sample catalog API.

use crate::support;

use serde_json::{Value, json};
use support::env::{Env, MODELS, header, json_of, raw_client};

/// The Gatewayz frontend of November 2025 (the version whose Redis cache this project
/// replaces) asks for each gateway, and for `all`, with `limit=50000`: "everything".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_frontends_requests_answer_every_model() {
    let env = Env::new().await;
    let f = env.spawn(MODELS, &[]);
    let c = raw_client();
    let mut per_gateway = Vec::new();
    for (gateway, _) in sample_catalog::FIXTURES {
        let expected = env.sample.model_count(gateway);
        for url in [
            format!("/api/models?gateway={gateway}&limit=50000"),
            format!("/api/models?gateway={gateway}&limit=50000&offset=0"),
        ] {
            let r = c
                .get(f.url(&url))
                .header("accept-encoding", "gzip, deflate, br")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            let v = json_of(r).await;
            support::contract::assert_models_response(&v);
            assert_eq!(v["data"].as_array().unwrap().len(), expected, "{url}: every model");
            assert_eq!(
                (v["total"].as_u64(), v["has_more"].as_bool()),
                (Some(expected as u64), Some(false))
            );
            assert_eq!((&v["limit"], &v["next_offset"]), (&Value::Null, &Value::Null), "{url}");
        }
        per_gateway.push(format!("{gateway} {expected}"));
    }
    println!("old frontend, models per gateway: {}", per_gateway.join(", "));

    // `all` with limit=50000 is the whole list exactly as without it: the same
    // stored bytes, the same ETag, a 304 on it.
    let whole = c
        .get(f.url("/api/models?gateway=all"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    let (etag, whole_bytes) = (
        header(&whole, "etag").unwrap().to_string(),
        whole.bytes().await.unwrap(),
    );
    for url in [
        "/api/models?gateway=all&limit=50000",
        "/api/models?limit=50000&offset=0",
        "/api/models?gateway=all&limit=99999999999999999999999",
    ] {
        let r = c.get(f.url(url)).header("accept-encoding", "br").send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(header(&r, "etag"), Some(etag.as_str()), "{url}: the list's own ETag");
        assert_eq!(header(&r, "x-cache"), Some("HIT"));
        assert_eq!(r.bytes().await.unwrap(), whole_bytes, "{url}: the stored bytes");
        let r = c.get(f.url(url)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(r.status(), 304, "{url}");
    }
    let all = json_of(
        c.get(f.url("/api/models?gateway=all&limit=50000"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let n = all["total"].as_u64().unwrap();
    assert_eq!(all["data"].as_array().unwrap().len() as u64, n);
    println!("old frontend, all: {n} models");

    // Past what is left after `offset`: the rest, no next page; the limit asked for is echoed.
    let rest = json_of(
        c.get(f.url(&format!("/api/models?gateway=all&limit=50000&offset={}", n - 5)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    support::contract::assert_models_response(&rest);
    assert_eq!(rest["data"].as_array().unwrap().len(), 5);
    assert_eq!(
        (rest["has_more"].as_bool(), &rest["next_offset"], rest["limit"].as_u64()),
        (Some(false), &Value::Null, Some(50000))
    );
    // A limit that covers the list exactly is the whole list too; one short of it is a page.
    let tag = async |url: String| {
        let r = c.get(f.url(&url)).header("accept-encoding", "br").send().await.unwrap();
        header(&r, "etag").unwrap().to_string()
    };
    assert_eq!(tag(format!("/api/models?gateway=all&limit={n}")).await, etag);
    assert_ne!(tag(format!("/api/models?gateway=all&limit={}", n - 1)).await, etag);
}

/// A catalog whose typed fields hold values of every wrong type: every answer (list,
/// page, search, the gateway and `all`) keeps the schema, and every model is found by
/// its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_catalog_is_served_with_its_declared_types() {
    let env = Env::new().await;
    let hostile = vec![
        json!({"id":"findme-object-slug","provider_slug":{"toString":0},"name":{"a":1}}),
        json!({"id":"findme-number-description","description":12345,"context_length":"8192","created":"1700000000"}),
        json!({"id":"findme-odd-arrays","supported_parameters":"tools","architecture":{"input_modalities":[1,{"x":2},"text"],"modality":7}}),
        json!({"id":"findme-bad-prices","pricing":{"prompt":{"$gt":""},"completion":[1]},"canonical_slug":false,"model_logo_url":["javascript:alert(1)"]}),
        json!({"id":4242,"name":"<img src=x onerror=alert(1)>","context_length":-1,"architecture":"text->text"}),
        json!({"id":"openai/gpt-4o","name":"GPT-4o","provider_slug":"OpenAI","pricing":{"prompt":"2.5","completion":"10"}}),
    ];
    env.sample.set_catalog("groq", hostile.clone());
    let f = env.spawn(MODELS, &[]);
    let c = raw_client();
    for gateway in ["groq", "all"] {
        for q in [
            "",
            "&limit=2",
            "&limit=2&offset=3",
            "&offset=1",
            "&search=findme",
            "&search=findme&limit=1&offset=2",
        ] {
            let url = format!("/api/models?gateway={gateway}{q}");
            let r = c
                .get(f.url(&url))
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            support::contract::assert_models_response(&json_of(r).await);
        }
        let found = json_of(
            c.get(f.url(&format!("/api/models?gateway={gateway}&search=findme")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(found["total"], 4, "{gateway}: every matching model is indexed: {found}");
        for id in [
            "findme-object-slug",
            "findme-number-description",
            "findme-odd-arrays",
            "findme-bad-prices",
            "4242",
            "openai/gpt-4o",
        ] {
            let v = json_of(
                c.get(f.url(&format!(
                    "/api/models?gateway={gateway}&search={}",
                    id.replace('/', "%2F")
                )))
                .send()
                .await
                .unwrap(),
            )
            .await;
            let ids: Vec<&str> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["id"].as_str())
                .collect();
            assert!(ids.contains(&id), "{gateway}: {id} not found by its id: {ids:?}");
        }
    }
    let groq = json_of(c.get(f.url("/api/models?gateway=groq")).send().await.unwrap()).await;
    let by_id = |id: &str| {
        groq["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("findme-number-description")["description"], "12345");
    assert_eq!(by_id("findme-number-description")["context_length"], 8192);
    assert_eq!(by_id("findme-object-slug")["name"], "findme-object-slug");
    assert!(by_id("findme-object-slug").get("provider_slug").is_none());
    assert_eq!(
        by_id("4242")["name"],
        "<img src=x onerror=alert(1)>",
        "strings are data: escaping is the page's job"
    );
}

/// A missing key whose upstream answers `429 Retry-After: 7`: 503 with that
/// `Retry-After`, the throttle honours it, and the error says rate limiting. Other
/// failures stay 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_rate_limit_is_a_503_with_its_retry_after() {
    let env = Env::new().await;
    env.sample.set_fault(
        "groq",
        sample_catalog::Fault::RateLimited {
            retry_after_secs: 7,
            times: u32::MAX,
        },
    );
    env.sample.set_fault("cerebras", sample_catalog::Fault::ServerError);
    // A 7 s Retry-After does not fit in a 2 s deadline: the fetcher gives up at once.
    let f = env.spawn(
        MODELS,
        &[("GATEWAY_TIMEOUT_FAST_MS", "2000"), ("GATEWAY_TIMEOUT_SLOW_MS", "2000")],
    );
    let c = raw_client();

    let r = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), Some("7"), "the upstream's own window");
    let v = json_of(r).await;
    assert_eq!(v["error"], "upstream_rate_limited");
    assert!(v["message"].as_str().unwrap().contains("rate limiting"), "{v}");
    let ttl: u64 = String::from_utf8_lossy(&env.redis.command(&[b"PTTL", b"retryafter:models:v4:groq"]))
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(
        (5_000..=7_000).contains(&ttl),
        "the throttle key honours Retry-After: {ttl} ms"
    );

    let asked = env.sample.requests("groq");
    let r = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let secs: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=7).contains(&secs), "what is left of the window: {secs}");
    assert_eq!(
        json_of(r).await["error"],
        "upstream_rate_limited",
        "a throttled rate limit still says so"
    );
    assert_eq!(env.sample.requests("groq"), asked, "not asked again inside its window");

    let r = c.get(f.url("/api/models?gateway=cerebras")).send().await.unwrap();
    assert_eq!(r.status(), 502, "other failures stay 502");
    assert!(header(&r, "retry-after").is_none());
    assert_eq!(json_of(r).await["error"], "upstream_unavailable");
}
