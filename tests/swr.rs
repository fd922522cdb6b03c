//! The SWR read against a real redis-server (started per test on a free port) and
//! against the embedded store: the same suite runs on both backends.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::spawn::{Spawner, TaskSpawner};
use cache_core::store::Store;
use cache_core::swr::SwrSettings;
use cache_core::{Cache, CacheError, CacheStatus};
use support::redis::RedisServer;
use support::source::{Behaviour, ScriptedSource, call_of};

/// One backend under test. `instance()` is a new client ("another instance") on the
/// same data: a new fred pool for Redis, a clone of the shared map for memory.
struct Backend {
    _redis: Option<RedisServer>,
    _cluster: Option<support::cluster::RedisCluster>,
    memory: Option<Store>,
    url: Option<String>,
}

impl Backend {
    fn memory() -> Self {
        Backend {
            _redis: None,
            _cluster: None,
            memory: Some(Store::from_config(&support::config(&[])).unwrap()),
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
        let c = support::cluster::RedisCluster::start();
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
            (None, Some(url)) => Store::from_config(&support::config(&[("REDIS_URL", url)])).unwrap(),
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
    }
}

fn spawner() -> (TaskSpawner, Arc<dyn Spawner>) {
    let s = TaskSpawner::new();
    (s.clone(), Arc::new(s))
}

async fn fresh_to_stale_to_expired(b: Backend) {
    let cache = b.instance();
    let (tasks, sp) = spawner();
    let src = ScriptedSource::new(1_000, 1_000);

    let first = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(first.status, CacheStatus::Miss);
    assert_eq!(src.calls(), 1);

    let hit = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(hit.status, CacheStatus::Hit);
    assert_eq!(call_of(&hit.entry), 1);
    assert_eq!(src.calls(), 1, "a fresh hit never calls the upstream");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stale = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(
        stale.status,
        CacheStatus::Stale,
        "past fresh, within stale: served stale"
    );
    assert_eq!(call_of(&stale.entry), 1, "the stale value itself is returned at once");
    tasks.idle().await;
    assert_eq!(src.calls(), 2, "exactly one background revalidation");

    let after = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(after.status, CacheStatus::Hit);
    assert_eq!(call_of(&after.entry), 2, "the revalidated value is served next");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(expired.status, CacheStatus::Miss, "past the stale window: a miss");
    assert_eq!(call_of(&expired.entry), 3);
}

async fn concurrent_miss_fetches_once(b: Backend) {
    let cache = b.instance();
    let (_tasks, sp) = spawner();
    let src = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(200));
    let reads = (0..200).map(|_| {
        let (cache, src, sp) = (cache.clone(), src.clone(), sp.clone());
        tokio::spawn(async move { cache.read("models:all", src, sp).await.unwrap() })
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
    let (tasks, sp) = spawner();
    let src = ScriptedSource::with_delay(300, 60_000, Duration::from_millis(100));
    cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let reads = (0..200).map(|_| {
        let (cache, src, sp) = (cache.clone(), src.clone(), sp.clone());
        tokio::spawn(async move { cache.read("models:groq", src, sp).await.unwrap().status })
    });
    let statuses = futures_util::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s.as_ref().unwrap() == CacheStatus::Stale));
    tasks.idle().await;
    assert_eq!(src.calls(), 2, "200 stale readers: one revalidation");
}

async fn two_instances_race_on_stale_key(b: Backend) {
    let a = b.instance();
    let other = b.instance();
    let (tasks, sp) = spawner();
    let src = ScriptedSource::with_delay(300, 60_000, Duration::from_millis(150));
    a.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut joins = Vec::new();
    for i in 0..100 {
        let cache = if i % 2 == 0 { a.clone() } else { other.clone() };
        let (src, sp) = (src.clone(), sp.clone());
        joins.push(tokio::spawn(async move {
            cache.read("models:groq", src, sp).await.unwrap().status
        }));
    }
    for j in joins {
        assert_eq!(j.await.unwrap(), CacheStatus::Stale);
    }
    tasks.idle().await;
    assert_eq!(
        src.calls(),
        2,
        "two instances racing on one stale key: one upstream call"
    );
    let fresh = other.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(fresh.status, CacheStatus::Hit);
    assert_eq!(call_of(&fresh.entry), 2);
}

async fn failing_revalidation_keeps_stale_and_is_throttled(b: Backend) {
    let cache = b.instance();
    let (tasks, sp) = spawner();
    let src = ScriptedSource::new(300, 60_000);
    cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    src.set(Behaviour::Fail("HTTP 500 from upstream"));
    for _ in 0..20 {
        let r = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
        assert_eq!(r.status, CacheStatus::Stale);
        assert_eq!(call_of(&r.entry), 1, "the old value keeps being served");
        tasks.idle().await;
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
    let (tasks, sp) = spawner();
    let src = ScriptedSource::new(300, 60_000);
    cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    src.set(Behaviour::Items(0));
    cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    tasks.idle().await;
    assert_eq!(src.calls(), 2);
    let r = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(
        r.entry.meta.item_count, 3,
        "the empty value was rejected; good data stays"
    );
    assert_eq!(call_of(&r.entry), 1);
    assert!(cache.last_failure("models:groq").await.unwrap().error.contains("empty"));
}

async fn failed_miss_returns_error_and_caches_nothing(b: Backend) {
    let cache = b.instance();
    let (_tasks, sp) = spawner();
    let src = ScriptedSource::new(60_000, 60_000);
    src.set(Behaviour::Fail("connection reset"));
    let err = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Fetch(ref m) if m.contains("connection reset")),
        "{err:?}"
    );
    assert_eq!(src.calls(), 1, "a failure is not retried in the same request");
    assert!(
        cache.store().get("models:groq").await.unwrap().is_none(),
        "nothing cached"
    );
    // A second read inside the retry window does not hammer the upstream either.
    let again = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap_err();
    assert!(matches!(again, CacheError::Throttled(_)), "{again:?}");
    assert_eq!(src.calls(), 1);
}

async fn fetch_deadline_is_enforced(b: Backend) {
    let cache = b.instance();
    let (_tasks, sp) = spawner();
    let mut src = Arc::into_inner(ScriptedSource::new(60_000, 60_000)).unwrap();
    src.deadline = Duration::from_millis(300);
    let src = Arc::new(src);
    src.set(Behaviour::Hang);
    let t = Instant::now();
    let err = cache.read("models:groq", src.clone(), sp).await.unwrap_err();
    assert!(matches!(err, CacheError::Timeout(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

async fn corrupt_value_is_a_miss_and_is_overwritten(b: Backend) {
    let cache = b.instance();
    let (_tasks, sp) = spawner();
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
        let r = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
        assert_eq!(r.status, CacheStatus::Miss, "junk {junk:?} reads as a miss");
        let r = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
        assert_eq!(r.status, CacheStatus::Hit, "and was overwritten with a good value");
    }
}

async fn miss_waits_for_the_instance_holding_the_lock(b: Backend) {
    let holder = b.instance();
    let waiter = b.instance();
    let (_tasks, sp) = spawner();
    let src = ScriptedSource::new(60_000, 60_000);
    // Another instance holds the fill lock and will write in 300 ms.
    let guard = cache_core::lock::try_acquire(
        holder.store(),
        &cache_core::swr::lock_key("models:groq"),
        Duration::from_secs(10),
        &sp,
    )
    .await
    .unwrap()
    .unwrap();
    let writer = {
        let (holder, src2) = (holder.clone(), ScriptedSource::new(60_000, 60_000));
        let sp = sp.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            guard.release().await;
            holder.refresh("models:groq", src2, sp).await.unwrap();
        })
    };
    let r = waiter.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    writer.await.unwrap();
    assert_eq!(r.status, CacheStatus::Miss);
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
        Store::from_config(&support::config(&[("REDIS_URL", &url), ("CACHE_KEY_PREFIX", "prod:")])).unwrap(),
        settings(),
    );
    let c = Cache::new(
        Store::from_config(&support::config(&[
            ("REDIS_URL", &url),
            ("CACHE_KEY_PREFIX", "preview:"),
        ]))
        .unwrap(),
        settings(),
    );
    let (_t, sp) = spawner();
    let src = ScriptedSource::new(60_000, 60_000);
    a.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(
        c.read("models:groq", src.clone(), sp.clone()).await.unwrap().status,
        CacheStatus::Miss
    );
    if let Some(r) = &b._redis {
        assert_eq!(r.command(&[b"EXISTS", b"prod:models:groq"]), b":1\r\n");
    }
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
);

// ---- Redis outages (real server killed and restarted) -----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_degrades_then_recovers() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let cache = Cache::new(
        Store::from_config(&support::config(&[("REDIS_URL", &url)])).unwrap(),
        settings(),
    );
    let (_t, sp) = spawner();
    let src = ScriptedSource::new(60_000, 60_000);

    let t = Instant::now();
    let r = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
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
        cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
        if matches!(cache.store().get("models:groq").await, Ok(Some(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "client never reconnected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cache.read("models:groq", src.clone(), sp).await.unwrap().status,
        CacheStatus::Hit
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_serves_local_copy_then_recovers() {
    let mut redis = RedisServer::start();
    let mut s = settings();
    s.local_ttl = Duration::from_millis(100);
    let cache = Cache::new(
        Store::from_config(&support::config(&[("REDIS_URL", &redis.url())])).unwrap(),
        s,
    );
    let (_t, sp) = spawner();
    let src = ScriptedSource::new(60_000, 60_000);
    cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();

    redis.kill();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for _ in 0..5 {
        let t = Instant::now();
        let r = cache.read("models:groq", src.clone(), sp.clone()).await.unwrap();
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
    let r = cache.read("models:fal", src.clone(), sp.clone()).await.unwrap();
    assert_eq!(r.status, CacheStatus::Miss);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cache.forget_local("models:fal");
        cache.read("models:fal", src.clone(), sp.clone()).await.unwrap();
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
    let url = format!("redis://127.0.0.1:{}", support::free_port());
    let cache = Cache::new(
        Store::from_config(&support::config(&[("REDIS_URL", &url)])).unwrap(),
        settings(),
    );
    let (_t, sp) = spawner();
    let src = ScriptedSource::with_delay(60_000, 60_000, Duration::from_millis(300));
    let reads = (0..50).map(|_| {
        let (cache, src, sp) = (cache.clone(), src.clone(), sp.clone());
        tokio::spawn(async move { cache.read("models:groq", src, sp).await.unwrap().status })
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
    let store = || Store::from_config(&support::config(&[("REDIS_URL", &redis.url())])).unwrap();
    let a = Cache::new(store(), settings());
    let mut slow_local = settings();
    slow_local.local_ttl = Duration::from_secs(30);
    let b = Cache::new(store(), slow_local);
    let (tasks, sp) = spawner();
    let src = ScriptedSource::new(300, 60_000);
    a.read("models:groq", src.clone(), sp.clone()).await.unwrap();
    b.read("models:groq", src.clone(), sp.clone()).await.unwrap(); // b keeps a local copy
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        a.read("models:groq", src.clone(), sp.clone()).await.unwrap().status,
        CacheStatus::Stale
    );
    tasks.idle().await;
    assert_eq!(src.calls(), 2, "a revalidated");
    assert_eq!(
        b.read("models:groq", src.clone(), sp.clone()).await.unwrap().status,
        CacheStatus::Stale,
        "b's local copy is stale"
    );
    tasks.idle().await;
    assert_eq!(
        src.calls(),
        2,
        "b found a's fresh value under the lock and did not fetch again"
    );
}
