//! The change feed's routes end to end (issue 40): the dev server on a real Redis,
//! the sample catalog changing between fetches, answers read as a client reads them.

use std::collections::HashSet;
use std::sync::Arc;

use cache_core::RequestContext;
use cache_core::contract::Trigger;
use cache_core::spawn::TaskSpawner;
use serde_json::{Value, json};

use crate::support::{self, redis::RedisServer};

const GW: &str = "openrouter";

struct Stack {
    _redis: RedisServer,
    sample: sample_catalog::Handle,
    ctx: RequestContext,
    base: String,
    /// Models listed now, and the round of changes made so far.
    listed: Vec<Value>,
    round: usize,
}

fn model(id: &str, prompt: &str) -> Value {
    json!({
        "id": id, "name": id, "context_length": 8192,
        "pricing": {"prompt": prompt, "completion": "0.000002"},
    })
}

impl Stack {
    async fn new() -> Stack {
        let redis = RedisServer::start();
        let sample = sample_catalog::start_local().await;
        let listed: Vec<Value> = (0..20).map(|i| model(&format!("m/{i}"), "0.000001")).collect();
        sample.set_catalog(GW, listed.clone());
        let (url, api) = (redis.url(), sample.base_url());
        let app = cache_core::App::new(support::config(&[
            ("REDIS_URL", &url),
            ("GATEWAYZ_API_URL", &api),
            ("GATEWAYS", GW),
        ]))
        .unwrap();
        let tasks = TaskSpawner::new();
        let ctx = RequestContext::new(app.clone(), Arc::new(tasks.clone()));
        assert!(ctx.warm(None, Trigger::Manual).await.unwrap().success, "the baseline");
        let base = format!("http://{}", support::dev_server(app, tasks).await);
        Stack {
            _redis: redis,
            sample,
            ctx,
            base,
            listed,
            round: 0,
        }
    }

    /// One round of changes upstream, fetched: two models added, one repriced.
    async fn change(&mut self) {
        self.round += 1;
        let r = self.round;
        self.listed.push(model(&format!("new/{r}a"), "0.000001"));
        self.listed.push(model(&format!("new/{r}b"), "0.000001"));
        self.listed[0] = model("m/0", &format!("0.00000{}", r % 9 + 1));
        self.sample.set_catalog(GW, self.listed.clone());
        let gw = self.ctx.app.gateway(GW).unwrap().clone();
        self.ctx.refresh_gateway(&gw).await.unwrap();
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base)).await.unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let v = r.json().await.unwrap();
        support::contract::assert_changes_response(&v);
        v
    }
}

fn identity(c: &Value) -> (String, String, String) {
    (
        c["at"].as_str().unwrap().into(),
        c["kind"].as_str().unwrap().into(),
        c["id"].as_str().unwrap().into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_pages_without_gaps_or_repeats_while_changes_arrive() {
    let mut s = Stack::new().await;
    for _ in 0..3 {
        s.change().await;
    }
    let mut cursor = "0".to_string();
    let mut paged = Vec::new();
    for page in 0..40 {
        let v = s.json(&format!("/api/models/changes?since={cursor}&limit=2")).await;
        let changes = v["changes"].as_array().unwrap();
        paged.extend(changes.iter().map(identity));
        cursor = v["next"].as_str().unwrap().to_string();
        // Changes keep arriving while the client pages.
        if page < 4 {
            s.change().await;
        }
        if changes.is_empty() && page >= 4 {
            break;
        }
    }
    let everything = s.json("/api/models/changes?since=0&limit=500").await;
    let all: Vec<_> = everything["changes"].as_array().unwrap().iter().map(identity).collect();
    assert_eq!(all.len(), 7 * 3, "three changes a round, seven rounds");
    let unique: HashSet<_> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "no repeats: {paged:?}");
    assert_eq!(paged, all, "no gaps, in the order they were recorded");

    // Without `since`: newest first, and `next` is the newest (polling from it gets nothing).
    let newest = s.json("/api/models/changes?limit=3").await;
    let first3: Vec<_> = newest["changes"].as_array().unwrap().iter().map(identity).collect();
    let mut tail: Vec<_> = all[all.len() - 3..].to_vec();
    tail.reverse();
    assert_eq!(first3, tail);
    let after = s
        .json(&format!(
            "/api/models/changes?since={}",
            newest["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(after["changes"], json!([]));

    // Filters.
    let added = s
        .json("/api/models/changes?since=0&kind=added&gateway=openrouter&limit=500")
        .await;
    assert_eq!(added["changes"].as_array().unwrap().len(), 14);
    let repriced = s.json("/api/models/changes?since=0&kind=repriced&limit=500").await;
    let r = &repriced["changes"][0];
    assert_eq!(
        (r["before"]["prompt"].as_str(), r["after"]["prompt"].as_str()),
        (Some("0.000001"), Some("0.000002"))
    );
    let none = s.json("/api/models/changes?kind=removed,changed").await;
    assert_eq!(none["changes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_json_and_answers_are_conditional() {
    let mut s = Stack::new().await;
    s.change().await;
    for query in [
        "since=abc",
        "since=1-2-3",
        "since=-1",
        "kind=bulky",
        "kind=added,nope",
        "limit=0",
        "limit=501",
        "limit=ten",
        "limit=-1",
        "gateway=nope",
        "gateway=%00",
    ] {
        let r = s.get(&format!("/api/models/changes?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {v}");
    }
    let r = s.get("/api/models/feed?kind=removed").await;
    assert_eq!(r.status(), 400, "the feed lists added and repriced models only");

    let r = s.get("/api/models/changes").await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let cc = r.headers()["cache-control"].to_str().unwrap();
    assert!(cc.contains("s-maxage=60"), "{cc}");
    let again = support::env::raw_client()
        .get(format!("{}/api/models/changes", s.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    s.change().await;
    let changed = support::env::raw_client()
        .get(format!("{}/api/models/changes", s.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "a new change is a new answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_atom_a_feed_reader_reads() {
    let mut s = Stack::new().await;
    s.change().await;
    s.change().await;
    let r = s.get("/api/models/feed?gateway=openrouter").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/atom+xml; charset=utf-8");
    let xml = r.text().await.unwrap();
    let feed = feed_rs::parser::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(feed.feed_type, feed_rs::model::FeedType::Atom);
    // RFC 4287 4.1.1: a feed has an id, a title, updated, and an author (or every entry one).
    assert!(!feed.id.is_empty());
    assert!(feed.title.as_ref().is_some_and(|t| t.content.contains("openrouter")));
    assert!(feed.updated.is_some());
    assert!(!feed.authors.is_empty());
    assert!(feed.links.iter().any(|l| l.rel.as_deref() == Some("self")));
    // Four models added, newest first; each entry an id, a title, updated, a link to
    // the models page filtered to it.
    assert_eq!(feed.entries.len(), 4, "{xml}");
    let ids: HashSet<_> = feed.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 4, "entry ids are unique");
    let first = &feed.entries[0];
    assert!(first.title.as_ref().unwrap().content.contains("new/2b"), "{xml}");
    assert!(first.updated.is_some());
    let link = &first.links[0].href;
    assert!(link.ends_with("/models?gateway=openrouter&search=new%2F2b"), "{link}");
    assert!(
        link.starts_with("http://127.0.0.1:"),
        "absolute, from the request's host: {link}"
    );

    // Repriced too, when asked.
    let xml = s
        .get("/api/models/feed?kind=added,repriced")
        .await
        .text()
        .await
        .unwrap();
    let feed = feed_rs::parser::parse(xml.as_bytes()).unwrap();
    assert_eq!(feed.entries.len(), 6, "{xml}");
    assert!(
        feed.entries
            .iter()
            .any(|e| e.title.as_ref().unwrap().content.contains("repriced"))
    );
}
