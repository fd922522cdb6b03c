//! The SWR read against a real redis-server (started per test on a free port), a
//! 3-master Cluster and the embedded store: the same suite runs on every backend.
//! Inside the crate: it tests internals (the cache, the store, the lock) that are
//! not part of cache-core's public API.

mod source;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use source::{Behaviour, ScriptedSource, call_of};
use test_support::redis::RedisServer;

use crate::spawn::{Spawner, TaskSpawner};
use crate::store::Store;
use crate::swr::{Cache, CacheError, CacheStatus, SwrSettings};

use crate::tests::config;

/// One backend under test. `instance()` is a new client ("another instance") on the
/// same data: a new fred pool for Redis, a clone of the shared map for memory.
struct Backend {
    _redis: Option<RedisServer>,
    _cluster: Option<test_support::cluster::RedisCluster>,
    memory: Option<Store>,
    url: Option<String>,
}

impl Backend {
    fn memory() -> Self {
        Backend {
            _redis: None,
            _cluster: None,
            memory: Some(Store::from_config(&config(&[])).unwrap()),
            url: None,
        }
    }
    fn redis() -> Self {
        let r = RedisServer::start();
        let url = r.url();
        Backend {
            _redis: Some(r),
            _cluster: None,
            memory: None,
            url: Some(url),
        }
    }
    /// A 3-master Redis Cluster: keys spread over slots, scripts must be slot-safe.
    fn cluster() -> Self {
        let c = test_support::cluster::RedisCluster::start();
        let url = c.url();
        Backend {
            _redis: None,
            _cluster: Some(c),
            memory: None,
            url: Some(url),
        }
    }
    fn store(&self) -> Store {
        match (&self.memory, &self.url) {
            (Some(m), _) => m.clone(),
            (None, Some(url)) => Store::from_config(&config(&[("REDIS_URL", url)])).unwrap(),
            _ => unreachable!(),
        }
    }
    fn instance(&self) -> Arc<Cache> {
        Cache::new(self.store(), settings())
    }
}

fn settings() -> SwrSettings {
    SwrSettings {
        revalidate_retry: Duration::from_secs(30),
        miss_wait: Duration::from_secs(2),
        local_ttl: Duration::ZERO,
        metrics_flush_interval: Duration::ZERO,
        ..SwrSettings::default()
    }
}

/// `cache`'s fill lock on `models:groq`, as another instance's fill holds it.
async fn fill_lock(cache: &Cache) -> crate::lock::LockGuard {
    let key = crate::keys::lock("models:groq");
    let guard = crate::lock::try_acquire(cache.store(), &key, Duration::from_secs(10), &spawner().1).await;
    guard.unwrap().expect("the lock is free")
}

/// What the holder of the fill lock stores: call 42's value, fetched `lag_ms` ago by
/// our clock.
async fn store_as_holder(holder: &Cache, lag_ms: u64) {
    let now = crate::clock::now_ms();
    let clock = crate::entry::Clock {
        fetched_at_ms: now - lag_ms,
        fresh_until_ms: now + 60_000,
        stale_until_ms: now + 120_000,
        kept_until_ms: now + 120_000,
    };
    let json = Bytes::from_static(br#"{"call":42,"data":[{},{}]}"#);
    let entry = crate::entry::Entry::build(json, 2, clock, crate::entry::STORED_ENCODINGS);
    let stored = holder
        .store()
        .set("models:groq", entry.encode(), Duration::from_secs(120));
    stored.await.unwrap();
}

fn spawner() -> (TaskSpawner, Arc<dyn Spawner>) {
    let s = TaskSpawner::new();
    (s.clone(), Arc::new(s))
}

async fn fresh_to_stale_to_expired(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::new(1_000, 1_000);

    let first = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(first.status, CacheStatus::Miss);
    assert_eq!(src.calls(), 1);

    let hit = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(hit.status, CacheStatus::Hit);
    assert_eq!(call_of(&hit.entry), 1);
    assert_eq!(src.calls(), 1, "a fresh hit never calls the upstream");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stale = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(
        stale.status,
        CacheStatus::Stale,
        "past fresh, within stale: served stale"
    );
    assert_eq!(call_of(&stale.entry), 1, "the stale value itself is returned at once");
    src.tasks.idle().await;
    assert_eq!(src.calls(), 2, "exactly one background revalidation");

    let after = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(after.status, CacheStatus::Hit);
    assert_eq!(call_of(&after.entry), 2, "the revalidated value is served next");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(expired.status, CacheStatus::Miss, "past the stale window: a miss");
    assert_eq!(call_of(&expired.entry), 3);
}

async fn concurrent_miss_fetches_once(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(200));
    let reads = (0..200).map(|_| {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { cache.read("models:all", src).await.unwrap() })
    });
    let results = futures_util::future::join_all(reads).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().status == CacheStatus::Miss));
    assert_eq!(
        src.calls(),
        1,
        "200 concurrent readers of a missing key: one upstream call"
    );
}

async fn concurrent_stale_revalidates_once(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::with_delay(300, 60_000, Duration::from_millis(100));
    cache.read("models:groq", src.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let reads = (0..200).map(|_| {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { cache.read("models:groq", src).await.unwrap().status })
    });
    let statuses = futures_util::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s.as_ref().unwrap() == CacheStatus::Stale));
    src.tasks.idle().await;
    assert_eq!(src.calls(), 2, "200 stale readers: one revalidation");
}

async fn two_instances_race_on_stale_key(b: Backend) {
    let a = b.instance();
    let other = b.instance();
    let src = ScriptedSource::with_delay(300, 60_000, Duration::from_millis(150));
    a.read("models:groq", src.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut joins = Vec::new();
    for i in 0..100 {
        let cache = if i % 2 == 0 { a.clone() } else { other.clone() };
        let src = src.clone();
        joins.push(tokio::spawn(async move {
            cache.read("models:groq", src).await.unwrap().status
        }));
    }
    for j in joins {
        assert_eq!(j.await.unwrap(), CacheStatus::Stale);
    }
    src.tasks.idle().await;
    assert_eq!(
        src.calls(),
        2,
        "two instances racing on one stale key: one upstream call"
    );
    let fresh = other.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(fresh.status, CacheStatus::Hit);
    assert_eq!(call_of(&fresh.entry), 2);
}

async fn failing_revalidation_keeps_stale_and_is_throttled(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::new(300, 60_000);
    cache.read("models:groq", src.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    src.set(Behaviour::Fail("HTTP 500 from upstream"));
    for _ in 0..20 {
        let r = cache.read("models:groq", src.clone()).await.unwrap();
        assert_eq!(r.status, CacheStatus::Stale);
        assert_eq!(call_of(&r.entry), 1, "the old value keeps being served");
        src.tasks.idle().await;
    }
    assert_eq!(
        src.calls(),
        2,
        "one failed revalidation, then throttled: not a call per read"
    );
    let failure = cache.last_failure("models:groq").await.expect("failure recorded");
    assert!(failure.error.contains("HTTP 500"), "{failure:?}");
}

async fn rejected_empty_value_does_not_overwrite(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::new(300, 60_000);
    cache.read("models:groq", src.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    src.set(Behaviour::Items(0));
    cache.read("models:groq", src.clone()).await.unwrap();
    src.tasks.idle().await;
    assert_eq!(src.calls(), 2);
    let r = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(
        r.entry.meta.item_count, 3,
        "the empty value was rejected; good data stays"
    );
    assert_eq!(call_of(&r.entry), 1);
    assert!(cache.last_failure("models:groq").await.unwrap().error.contains("empty"));
}

async fn failed_miss_returns_error_and_caches_nothing(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::new(60_000, 60_000);
    src.set(Behaviour::Fail("connection reset"));
    let err = cache.read("models:groq", src.clone()).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Source(ref e) if e.to_string().contains("connection reset")),
        "{err:?}"
    );
    assert_eq!(src.calls(), 1, "a failure is not retried in the same request");
    assert!(
        cache.store().get("models:groq").await.unwrap().is_none(),
        "nothing cached"
    );
    // A second read inside the retry window does not hammer the upstream either.
    let again = cache.read("models:groq", src.clone()).await.unwrap_err();
    assert!(matches!(again, CacheError::Throttled { .. }), "{again:?}");
    assert_eq!(src.calls(), 1);
}

async fn fetch_deadline_is_enforced(b: Backend) {
    let cache = b.instance();
    let mut src = Arc::into_inner(ScriptedSource::new(60_000, 60_000)).unwrap();
    src.deadline = Duration::from_millis(300);
    let src = Arc::new(src);
    src.set(Behaviour::Hang);
    let t = Instant::now();
    let err = cache.read("models:groq", src.clone()).await.unwrap_err();
    assert!(matches!(err, CacheError::Timeout(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

async fn corrupt_value_is_a_miss_and_is_overwritten(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::new(60_000, 60_000);
    for junk in [
        &b"{\"data\":[]}"[..],
        b"GZCE\x01",
        b"GZCE\x09rest-of-a-future-format",
        b"",
    ] {
        cache
            .store()
            .set("models:groq", Bytes::copy_from_slice(junk), Duration::from_secs(60))
            .await
            .unwrap();
        let r = cache.read("models:groq", src.clone()).await.unwrap();
        assert_eq!(r.status, CacheStatus::Miss, "junk {junk:?} reads as a miss");
        let r = cache.read("models:groq", src.clone()).await.unwrap();
        assert_eq!(
            r.status,
            CacheStatus::Hit,
            "and was overwritten with a good value ({junk:?})"
        );
    }
}

async fn miss_waits_for_the_instance_holding_the_lock(b: Backend) {
    let holder = b.instance();
    let waiter = b.instance();
    let src = ScriptedSource::new(60_000, 60_000);
    // Another instance holds the fill lock, writes its value in 300 ms, then
    // releases (as a fill does: the value lands before the lock is freed).
    let guard = fill_lock(&holder).await;
    let writer = {
        let holder = holder.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store_as_holder(&holder, 0).await;
            guard.release().await;
        })
    };
    let r = waiter.read("models:groq", src.clone()).await.unwrap();
    writer.await.unwrap();
    assert_eq!(r.status, CacheStatus::Miss);
    assert_eq!(call_of(&r.entry), 42, "the holder's value");
    assert_eq!(
        src.calls(),
        0,
        "the waiting instance took the winner's value instead of fetching"
    );
}

async fn key_prefix_isolates_deployments(b: Backend) {
    if b.url.is_none() {
        return; // prefixes are a shared-Redis concern
    }
    let url = b.url.clone().unwrap();
    let a = Cache::new(
        Store::from_config(&config(&[("REDIS_URL", &url), ("CACHE_KEY_PREFIX", "prod:")])).unwrap(),
        settings(),
    );
    let c = Cache::new(
        Store::from_config(&config(&[("REDIS_URL", &url), ("CACHE_KEY_PREFIX", "preview:")])).unwrap(),
        settings(),
    );
    let src = ScriptedSource::new(60_000, 60_000);
    a.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(
        c.read("models:groq", src.clone()).await.unwrap().status,
        CacheStatus::Miss
    );
    if let Some(r) = &b._redis {
        assert_eq!(r.command(&[b"EXISTS", b"prod:models:groq"]), b":1\r\n");
    }
}

// ---- ordering and truthfulness (newer data always wins) --------------------------

/// A lock that expired under its holder and was taken by another is not freed by
/// the first holder's release (compare-and-delete, not DEL).
async fn a_release_never_frees_another_holders_lock(b: Backend) {
    let (store, (_tasks, sp)) = (b.store(), spawner());
    let first = crate::lock::try_acquire(&store, "lock:k", Duration::from_millis(200), &sp)
        .await
        .unwrap()
        .expect("free");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = crate::lock::try_acquire(&store, "lock:k", Duration::from_secs(30), &sp)
        .await
        .unwrap()
        .expect("the first holder's lock expired");
    first.release().await;
    assert!(
        crate::lock::try_acquire(&store, "lock:k", Duration::from_secs(30), &sp)
            .await
            .unwrap()
            .is_none(),
        "the second holder still holds it"
    );
    second.release().await;
}

/// Instance A's slow fetch started first; B's started later (A's lock was lost).
/// A finishes last and must not replace B's newer value.
async fn an_older_fetch_never_replaces_a_newer_one(b: Backend) {
    let (a, bb) = (b.instance(), b.instance());
    let old = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(600));
    let new = ScriptedSource::new(60_000, 60_000);
    new.set(Behaviour::Items(5));
    let slow = {
        let (a, old) = (a.clone(), old.clone());
        tokio::spawn(async move { a.read("models:groq", old).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A's lock is lost (expired, evicted): B fills the key with newer data.
    a.store().delete("lock:models:groq").await.unwrap();
    let newer = bb.read("models:groq", new.clone()).await.unwrap();
    assert_eq!(newer.entry.meta.item_count, 5);
    let a_got = slow.await.unwrap();
    assert_eq!(old.calls(), 1);
    assert_eq!(
        a_got.entry.meta.item_count, 5,
        "A serves the newer stored value, not its own older one"
    );
    let stored = b.instance().read("models:groq", old.clone()).await.unwrap();
    assert_eq!(stored.entry.meta.item_count, 5, "the store keeps B's newer value");
}

/// A warm (refresh) while another instance revalidates: it waits for that fetch to
/// end (not its deadline), then fetches itself rather than adopting a value that
/// was requested before whatever the warm is for.
async fn a_refresh_fetches_itself_after_another_instances_fetch(b: Backend) {
    let (a, bb) = (b.instance(), b.instance());
    let mut src = Arc::into_inner(ScriptedSource::with_delay(300, 60_000, Duration::from_millis(500))).unwrap();
    src.deadline = Duration::from_secs(5);
    let src = Arc::new(src);
    a.read("models:groq", src.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        a.read("models:groq", src.clone()).await.unwrap().status,
        CacheStatus::Stale
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // A's revalidation holds the lock
    src.set(Behaviour::Items(7)); // the upstream changes; then a warm runs
    let t = Instant::now();
    let warmed = bb
        .refresh("models:groq", src.clone(), crate::swr::Purpose::Warm)
        .await
        .unwrap();
    let took = t.elapsed();
    src.tasks.idle().await;
    assert_eq!(src.calls(), 3, "miss, revalidation, and the warm's own fetch");
    assert_eq!(call_of(&warmed), 3, "the warm stored its own fetch");
    assert_eq!(warmed.meta.item_count, 7, "with the changed upstream");
    assert!(
        took < Duration::from_secs(3),
        "waited for the fetch, not its deadline: {took:?}"
    );
}

/// Two instances miss a failing key together: one calls the upstream; the other
/// sees the lock released with a failure recorded and answers throttled, at once.
async fn a_waiter_takes_the_holders_failure_instead_of_fetching(b: Backend) {
    let (a, bb) = (b.instance(), b.instance());
    let src = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(400));
    src.set(Behaviour::Fail("upstream down"));
    let first = {
        let (a, src) = (a.clone(), src.clone());
        tokio::spawn(async move { a.read("models:groq", src).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let second = bb.read("models:groq", src.clone()).await.unwrap_err();
    let waited = t.elapsed();
    assert!(first.await.unwrap().is_err());
    assert_eq!(src.calls(), 1, "the waiter never called the failing upstream itself");
    match second {
        CacheError::Throttled { retry_after, .. } => {
            assert!(
                retry_after <= Duration::from_secs(30) && retry_after > Duration::from_secs(25),
                "{retry_after:?}"
            )
        }
        other => panic!("expected the holder's failure, got {other:?}"),
    }
    assert!(
        waited < Duration::from_millis(1500),
        "stopped when the lock was released: {waited:?}"
    );
}

/// The holder's clock may lag the waiter's: its entry is stamped "before" the waiter
/// started. It is still the value the waiter was waiting for.
async fn a_waiter_takes_a_value_stamped_by_a_lagging_clock(b: Backend) {
    let (holder, waiter) = (b.instance(), b.instance());
    let src = ScriptedSource::new(60_000, 60_000);
    let guard = fill_lock(&holder).await;
    let read = {
        let (waiter, src) = (waiter.clone(), src.clone());
        tokio::spawn(async move { waiter.read("models:groq", src).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    store_as_holder(&holder, 5_000).await; // its clock lags ours by 5 s
    guard.release().await;
    let got = read.await.unwrap();
    assert_eq!(call_of(&got.entry), 42, "the other instance's value");
    assert_eq!(src.calls(), 0, "no second upstream request");
}

/// Bytes flipped in a stored body, header and TTL intact: a miss, refetched.
async fn a_corrupt_body_behind_a_valid_header_is_a_miss(b: Backend) {
    let src = ScriptedSource::new(60_000, 60_000);
    b.instance().read("models:groq", src.clone()).await.unwrap();
    let store = b.store();
    let mut raw = store.get("models:groq").await.unwrap().unwrap().to_vec();
    let n = raw.len();
    for byte in &mut raw[n - 16..] {
        *byte ^= 0x5a;
    }
    store
        .set("models:groq", Bytes::from(raw), Duration::from_secs(60))
        .await
        .unwrap();
    let r = b.instance().read("models:groq", src.clone()).await.unwrap();
    assert_eq!(r.status, CacheStatus::Miss, "corrupt body: a miss");
    assert_eq!(src.calls(), 2, "refetched at once, not at the end of the fresh window");
    assert_eq!(call_of(&r.entry), 2);
}

/// Concurrent misses in one process share one fetch *in process*: the same entry,
/// not one per reader loaded after the store lock (which would hide its absence).
async fn concurrent_misses_in_one_process_share_one_entry(b: Backend) {
    let cache = b.instance();
    let src = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(200));
    let reads = (0..50).map(|_| {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { cache.read("models:groq", src).await.unwrap() })
    });
    let results: Vec<_> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        results.iter().all(|r| Arc::ptr_eq(&r.entry, &results[0].entry)),
        "one in-process flight: every reader got the same entry"
    );
}

/// A warm (refresh) while another instance's revalidation is failing: it stops waiting
/// when that instance releases the lock (not after its deadline) and fetches itself.
async fn a_refresh_waits_only_until_a_failing_holder_releases(b: Backend) {
    let (a, bb) = (b.instance(), b.instance());
    let mut failing = Arc::into_inner(ScriptedSource::with_delay(300, 60_000, Duration::from_millis(500))).unwrap();
    failing.deadline = Duration::from_secs(5);
    let failing = Arc::new(failing);
    a.read("models:groq", failing.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    failing.set(Behaviour::Fail("upstream down"));
    assert_eq!(
        a.read("models:groq", failing.clone()).await.unwrap().status,
        CacheStatus::Stale
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // A's failing revalidation holds the lock
    let good = ScriptedSource::new(60_000, 60_000);
    good.set(Behaviour::Items(9));
    let t = Instant::now();
    let warmed = bb
        .refresh("models:groq", good.clone(), crate::swr::Purpose::Warm)
        .await
        .unwrap();
    let took = t.elapsed();
    failing.tasks.idle().await;
    good.tasks.idle().await;
    assert_eq!(failing.calls(), 2, "the miss and the failing revalidation");
    assert_eq!(
        (good.calls(), warmed.meta.item_count),
        (1, 9),
        "the warm fetched itself after the release"
    );
    assert!(
        took < Duration::from_secs(2),
        "waited for the release, not the 5 s deadline: {took:?}"
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::memory()).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::redis()).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::cluster()).await })*
        }
    };
}

on_both_backends!(
    fresh_to_stale_to_expired,
    concurrent_miss_fetches_once,
    concurrent_stale_revalidates_once,
    two_instances_race_on_stale_key,
    failing_revalidation_keeps_stale_and_is_throttled,
    rejected_empty_value_does_not_overwrite,
    failed_miss_returns_error_and_caches_nothing,
    fetch_deadline_is_enforced,
    corrupt_value_is_a_miss_and_is_overwritten,
    miss_waits_for_the_instance_holding_the_lock,
    key_prefix_isolates_deployments,
    a_release_never_frees_another_holders_lock,
    an_older_fetch_never_replaces_a_newer_one,
    a_refresh_fetches_itself_after_another_instances_fetch,
    a_waiter_takes_the_holders_failure_instead_of_fetching,
    a_waiter_takes_a_value_stamped_by_a_lagging_clock,
    a_corrupt_body_behind_a_valid_header_is_a_miss,
    concurrent_misses_in_one_process_share_one_entry,
    a_refresh_waits_only_until_a_failing_holder_releases,
);

// ---- Redis outages (real server killed and restarted) -----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_degrades_then_recovers() {
    let port = test_support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let cache = Cache::new(Store::from_config(&config(&[("REDIS_URL", &url)])).unwrap(), settings());
    let src = ScriptedSource::new(60_000, 60_000);

    let t = Instant::now();
    let r = cache.read("models:groq", src.clone()).await.unwrap();
    assert_eq!(r.status, CacheStatus::Miss, "no Redis: the read fetches directly");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "bounded by command timeouts, took {:?}",
        t.elapsed()
    );

    // Redis comes up: the same process starts using it without a restart.
    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cache.read("models:groq", src.clone()).await.unwrap();
        if matches!(cache.store().get("models:groq").await, Ok(Some(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "client never reconnected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cache.read("models:groq", src.clone()).await.unwrap().status,
        CacheStatus::Hit
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_serves_local_copy_then_recovers() {
    let mut redis = RedisServer::start();
    let mut s = settings();
    s.local_ttl = Duration::from_millis(100);
    let cache = Cache::new(Store::from_config(&config(&[("REDIS_URL", &redis.url())])).unwrap(), s);
    let src = ScriptedSource::new(60_000, 60_000);
    cache.read("models:groq", src.clone()).await.unwrap();

    redis.kill();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for _ in 0..5 {
        let t = Instant::now();
        let r = cache.read("models:groq", src.clone()).await.unwrap();
        assert_eq!(r.status, CacheStatus::Hit, "served from the in-process copy");
        assert_eq!(call_of(&r.entry), 1);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "no hang past the command timeout: {:?}",
            t.elapsed()
        );
    }
    // A key never seen by this process: fetched directly, bounded.
    let t = Instant::now();
    let r = cache.read("models:fal", src.clone()).await.unwrap();
    assert_eq!(r.status, CacheStatus::Miss);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cache.forget_local("models:fal");
        cache.read("models:fal", src.clone()).await.unwrap();
        if matches!(cache.store().get("models:fal").await, Ok(Some(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "client never reconnected after restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The in-process single-flight alone (the store is unreachable, so no lock helps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_holds_without_a_store() {
    let url = format!("redis://127.0.0.1:{}", test_support::free_port());
    let cache = Cache::new(Store::from_config(&config(&[("REDIS_URL", &url)])).unwrap(), settings());
    let src = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(300));
    let reads = (0..50).map(|_| {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { cache.read("models:groq", src).await.unwrap().status })
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap(), CacheStatus::Miss);
    }
    assert_eq!(
        src.calls(),
        1,
        "50 concurrent misses in one process, store down: one upstream call"
    );
}

/// An instance whose in-process copy is stale revalidates after another instance
/// already refreshed the key: it notices the fresh value under the lock and does not fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_revalidation_sees_the_other_instances_refresh() {
    let redis = RedisServer::start();
    let store = || Store::from_config(&config(&[("REDIS_URL", &redis.url())])).unwrap();
    let a = Cache::new(store(), settings());
    let mut slow_local = settings();
    slow_local.local_ttl = Duration::from_secs(30);
    let b = Cache::new(store(), slow_local);
    let src = ScriptedSource::new(300, 60_000);
    a.read("models:groq", src.clone()).await.unwrap();
    b.read("models:groq", src.clone()).await.unwrap(); // b keeps a local copy
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        a.read("models:groq", src.clone()).await.unwrap().status,
        CacheStatus::Stale
    );
    src.tasks.idle().await;
    assert_eq!(src.calls(), 2, "a revalidated");
    assert_eq!(
        b.read("models:groq", src.clone()).await.unwrap().status,
        CacheStatus::Stale,
        "b's local copy is stale"
    );
    src.tasks.idle().await;
    assert_eq!(
        src.calls(),
        2,
        "b found a's fresh value under the lock and did not fetch again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_shared_across_instances_and_separate_per_outcome() {
    let redis = RedisServer::start();
    let settings = SwrSettings {
        revalidate_retry: Duration::from_secs(30),
        miss_wait: Duration::from_secs(1),
        local_ttl: Duration::ZERO,
        metrics_flush_interval: Duration::ZERO,
        ..SwrSettings::default()
    };
    let store = || Store::from_config(&config(&[("REDIS_URL", &redis.url())])).unwrap();
    let (a, b) = (Cache::new(store(), settings.clone()), Cache::new(store(), settings));
    let src = ScriptedSource::new(300, 60_000);
    let key = "models:groq";

    assert_eq!(a.read(key, src.clone()).await.unwrap().status, CacheStatus::Miss);
    assert_eq!(a.read(key, src.clone()).await.unwrap().status, CacheStatus::Hit);
    assert_eq!(b.read(key, src.clone()).await.unwrap().status, CacheStatus::Hit);
    tokio::time::sleep(Duration::from_millis(350)).await;
    src.set(Behaviour::Fail("upstream down"));
    assert_eq!(b.read(key, src.clone()).await.unwrap().status, CacheStatus::Stale);
    src.tasks.idle().await;
    assert_eq!(a.read(key, src.clone()).await.unwrap().status, CacheStatus::Stale);
    src.tasks.idle().await;
    a.metrics().flush(a.store()).await;
    b.metrics().flush(b.store()).await;

    let m = crate::metrics::Metrics::read(a.store(), "models").await.unwrap();
    assert_eq!((m.fresh_hits, m.stale_hits, m.misses, m.errors), (2, 2, 1, 0), "{m:?}");
    assert_eq!(
        (
            m.revalidations_started,
            m.revalidations_failed,
            m.revalidations_throttled
        ),
        (1, 1, 1),
        "{m:?}"
    );
    assert_eq!(m.revalidations_succeeded, 0);
    assert_eq!(m.hit_rate, Some(4.0 / 5.0));
    assert_eq!(
        m.fresh_rate,
        Some(2.0 / 5.0),
        "stale hits are not counted as fresh (docs/design.md, failure 12)"
    );
    // The numbers live in Redis: a new instance (a restart) sees them.
    let c = Cache::new(
        store(),
        SwrSettings {
            revalidate_retry: Duration::ZERO,
            miss_wait: Duration::ZERO,
            local_ttl: Duration::ZERO,
            metrics_flush_interval: Duration::ZERO,
            ..SwrSettings::default()
        },
    );
    assert_eq!(crate::metrics::Metrics::read(c.store(), "models").await.unwrap(), m);
}
