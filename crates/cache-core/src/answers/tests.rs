//! The answers' mechanisms: the budget whatever the URLs, single flight, the permit
//! held by the work (not the request), derived bodies kept by content, no cliff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::entry::Entry;

/// A catalog of `n` models, about 200 bytes each, as a cached entry.
fn entry(n: usize) -> Arc<Entry> {
    let models: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"vendor/model-{i}","name":"Model {i}","description":"{}"}}"#,
                "lorem ipsum ".repeat(12)
            )
        })
        .collect();
    let json = format!(r#"{{"data":[{}],"gateway":"all","total":{n}}}"#, models.join(","));
    Arc::new(Entry::build(
        Bytes::from(json),
        n as u32,
        crate::entry::Clock::default(),
        crate::entry::STORED_ENCODINGS,
    ))
}

#[tokio::test]
async fn what_is_kept_stays_within_the_byte_budget_whatever_the_urls() {
    let budget = 1 << 20;
    let s = Answers::new(budget);
    let e = entry(1_500); // ~300 KB of JSON: nearly whole-list answers are as large
    let mut served = 0usize;
    for k in 0..150usize {
        // Offset walks without a limit (each nearly the whole list), random limits,
        // distinct searches, in every encoding.
        let (term, offset, limit) = match k % 3 {
            0 => (None, k, None),
            1 => (None, k % 7, Some(1 + k * 13 % 1500)),
            _ => (Some(format!("model-{k}")), 0, Some(k)),
        };
        for enc in [Encoding::Gzip, Encoding::Brotli, Encoding::Identity] {
            let a = s
                .answer("all", &e, term.as_deref(), offset, limit, enc, false)
                .await
                .unwrap();
            served += a.body.len();
            assert!(s.kept_bytes() <= budget, "kept {} > budget {budget}", s.kept_bytes());
        }
    }
    assert!(
        served > 20 * budget,
        "the test asked for far more than the budget: {served}"
    );
    assert!(s.kept_bytes() > 0, "small answers are kept");
}

#[tokio::test]
async fn a_page_of_the_list_is_the_cached_bytes_themselves() {
    let s = Answers::new(64 << 20);
    let e = entry(100);
    let a = s
        .answer("all", &e, None, 1, None, Encoding::Identity, false)
        .await
        .unwrap();
    let identity = s.body("all", &e, Encoding::Identity).await.unwrap();
    let middle = a.body.parts().nth(1).unwrap();
    assert!(
        identity.as_ptr_range().contains(&middle.as_ptr()),
        "the models are a slice of the cached JSON, not a copy"
    );
    let v: serde_json::Value = serde_json::from_slice(&a.body.to_bytes()).unwrap();
    assert_eq!(
        (v["returned"].as_u64(), v["data"][0]["id"].as_str()),
        (Some(99), Some("vendor/model-1"))
    );
    let head = s
        .answer("all", &e, None, 1, None, Encoding::Identity, true)
        .await
        .unwrap();
    assert_eq!(
        (head.body.len(), head.len),
        (0, Some(a.body.len())),
        "a HEAD makes nothing but knows the length"
    );
    let head = s.answer("all", &e, None, 1, None, Encoding::Gzip, true).await.unwrap();
    assert_eq!((head.body.len(), head.len), (0, None), "nor compresses anything");
}

/// The same content under another clock (an unchanged refresh): another entry
/// object, the same ETag.
fn retimed(e: &Arc<Entry>) -> Arc<Entry> {
    let mut head = e.meta.head();
    head.clock.fetched_at_ms += 1_000;
    head.clock.fresh_until_ms += 1_000;
    head.clock.stale_until_ms += 1_000;
    head.clock.kept_until_ms += 1_000;
    Arc::new(e.with_head(&head))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_requests_make_the_answer_once() {
    let s = Arc::new(Answers::new(64 << 20));
    let made = Arc::new(AtomicUsize::new(0));
    let asks = (0..16).map(|_| {
        let (s, made) = (s.clone(), made.clone());
        tokio::spawn(async move {
            s.html("\"h-1\"", Encoding::Gzip, move || {
                made.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                Ok("<p>the page</p>".repeat(100))
            })
            .await
            .unwrap()
        })
    });
    let bodies = futures_util::future::join_all(asks).await;
    assert_eq!(made.load(Ordering::SeqCst), 1, "16 identical requests, one render");
    assert!(
        bodies
            .iter()
            .all(|b| b.as_ref().unwrap() == bodies[0].as_ref().unwrap())
    );
    // And later ones find it kept.
    s.html("\"h-1\"", Encoding::Gzip, || panic!("kept")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_goes_away_leaves_the_permit_with_its_work() {
    let s = Arc::new(Answers::new(64 << 20));
    let (started, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(std::sync::Barrier::new(2)),
    );
    let (st, rel) = (started.clone(), release.clone());
    let ask = {
        let s = s.clone();
        tokio::spawn(async move {
            s.html("\"h-2\"", Encoding::Gzip, move || {
                st.notify_one();
                rel.wait();
                Ok("<p>slow</p>".into())
            })
            .await
        })
    };
    started.notified().await;
    ask.abort();
    let _ = ask.await;
    assert!(s.computing(), "the request is gone; its work still holds the permit");
    release.wait();
    for _ in 0..100 {
        if !s.computing() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!s.computing(), "freed when the work ended");
    s.html("\"h-2\"", Encoding::Gzip, || panic!("the abandoned work was kept"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_bodies_are_made_once_per_content_and_survive_a_clock_move() {
    let s = Answers::new(64 << 20);
    let e = entry(2_000);
    let gzip = s.body("all", &e, Encoding::Gzip).await.unwrap();
    let identity = s.body("all", &e, Encoding::Identity).await.unwrap();
    assert_eq!(
        crate::encoding::decompress(Encoding::Gzip, &gzip, 1 << 30).unwrap(),
        identity
    );
    let moved = retimed(&e);
    assert!(!Arc::ptr_eq(&e, &moved));
    let again = s.body("all", &moved, Encoding::Gzip).await.unwrap();
    assert_eq!(again.as_ptr(), gzip.as_ptr(), "the same bytes: not derived again");
    assert_eq!(
        s.body("all", &moved, Encoding::Identity).await.unwrap().as_ptr(),
        identity.as_ptr()
    );
    assert_eq!(
        s.body("all", &e, Encoding::Brotli).await.unwrap(),
        *e.body(Encoding::Brotli).unwrap(),
        "a stored body is served as stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_the_index_builds_it_once() {
    // 1 MiB (the least ANSWER_CACHE_MAX_BYTES takes) against a ~2 MB index.
    let s = Answers::new(1 << 20);
    let e = entry(8_000);
    let first = s.index("all", &e).await.unwrap();
    assert!(first.heap_bytes() > 1 << 20, "{}", first.heap_bytes());
    for offset in 0..200 {
        s.answer("all", &e, None, offset * 7, Some(50), Encoding::Gzip, false)
            .await
            .unwrap();
        let again = s.index("all", &e).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the served view's index is kept: built once"
        );
    }
    // A new content replaces it: one index per view, whatever the budget.
    let other = entry(8_001);
    let next = s.index("all", &other).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &next));
    assert!(s.kept_bytes() < 2 * next.heap_bytes(), "the old one is gone");
}

/// Issue 39, finding 5: 16 identical concurrent requests for a large answer that is
/// not kept (over the keep limit) share one make and one buffer, and one of the
/// large-answer permits: before, each waited for a permit of its own (3 at a time)
/// and made the answer again once the first was sent (3.3-11x the cost of one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_large_answers_not_kept_share_one_make_and_one_permit() {
    let s = Arc::new(Answers::new(4 << 20));
    let e = entry(12_000);
    let asks = (0..16).map(|_| {
        let (s, e) = (s.clone(), e.clone());
        tokio::spawn(async move {
            s.answer("all", &e, Some("model"), 0, Some(20_000), Encoding::Identity, false)
                .await
                .unwrap()
        })
    });
    // Every body is held until all are in, as 16 slow readers would: with a permit
    // each, the 4th would wait for ever.
    let answers: Vec<Answer> = tokio::time::timeout(Duration::from_secs(20), futures_util::future::join_all(asks))
        .await
        .expect("16 identical answers held at once: only 3 large-answer permits exist, so they must share one")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let first = answers[0].body.to_bytes();
    assert!(
        first.len() > LARGE_ANSWER_BYTES,
        "a large answer: {} bytes",
        first.len()
    );
    assert!(first.len() > (4 << 20) / 16, "not kept");
    let distinct: std::collections::HashSet<*const u8> = answers.iter().map(|a| a.body.to_bytes().as_ptr()).collect();
    assert_eq!(distinct.len(), 1, "16 identical requests, one buffer");
    assert_eq!(
        s.large.available_permits(),
        LARGE_AT_ONCE - 1,
        "and one permit, held while the bodies live"
    );
    drop(answers);
    assert_eq!(
        s.large.available_permits(),
        LARGE_AT_ONCE,
        "released with the last body"
    );
}
