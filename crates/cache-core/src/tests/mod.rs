//! Suites that test the crate's internals together (gateways, fetcher, merged view,
//! warming) against real servers on loopback. Unit tests live beside their code;
//! the SWR suite in `swr::tests`.

mod cadence;
mod changes;
mod exits;
mod gateways;
mod properties;
mod store_faults;

use std::sync::Arc;

use serde_json::Value;
use test_support::redis::RedisServer;

use crate::spawn::{Spawner, TaskSpawner};
use crate::{App, RequestContext};

/// An app on a real redis-server and the sample catalog API.
pub(crate) struct Stack {
    pub(crate) sample: sample_catalog::Handle,
    pub(crate) _redis: RedisServer,
    pub(crate) app: Arc<App>,
    pub(crate) tasks: TaskSpawner,
}

impl Stack {
    pub(crate) async fn new(overrides: &[(&str, &str)]) -> Stack {
        let sample = sample_catalog::start_local().await;
        let redis = RedisServer::start();
        let app = Self::app_for(&sample, &redis, overrides);
        Stack {
            sample,
            _redis: redis,
            app,
            tasks: TaskSpawner::new(),
        }
    }

    pub(crate) fn app_for(
        sample: &sample_catalog::Handle,
        redis: &RedisServer,
        overrides: &[(&str, &str)],
    ) -> Arc<App> {
        let base = sample.base_url();
        let url = redis.url();
        let mut all: Vec<(&str, &str)> = vec![
            ("GATEWAYZ_API_URL", &base),
            ("REDIS_URL", &url),
            ("GATEWAY_TIMEOUT_FAST_MS", "2000"),
            ("GATEWAY_TIMEOUT_SLOW_MS", "2000"),
        ];
        all.extend_from_slice(overrides);
        App::new(config(&all)).unwrap()
    }

    /// The same, on the embedded store instead of Redis.
    pub(crate) async fn memory(overrides: &[(&str, &str)]) -> Stack {
        let sample = sample_catalog::start_local().await;
        let redis = RedisServer::start();
        let base = sample.base_url();
        let mut all: Vec<(&str, &str)> = vec![
            ("GATEWAYZ_API_URL", &base),
            ("GATEWAY_TIMEOUT_FAST_MS", "2000"),
            ("GATEWAY_TIMEOUT_SLOW_MS", "2000"),
        ];
        all.extend_from_slice(overrides);
        let app = App::new(config(&all)).unwrap();
        assert_eq!(app.store().backend_name(), "memory");
        Stack {
            sample,
            _redis: redis,
            app,
            tasks: TaskSpawner::new(),
        }
    }

    /// Another instance on the same Redis and upstream.
    pub(crate) fn instance(&self, overrides: &[(&str, &str)]) -> Arc<App> {
        Self::app_for(&self.sample, &self._redis, overrides)
    }

    pub(crate) fn spawner(&self) -> Arc<dyn Spawner> {
        Arc::new(self.tasks.clone())
    }

    /// A request's scope on this stack's app, its background work on `tasks`.
    pub(crate) fn ctx(&self) -> RequestContext {
        self.ctx_of(&self.app)
    }

    /// A request's scope on another instance's `app`, its background work on `tasks`.
    pub(crate) fn ctx_of(&self, app: &Arc<App>) -> RequestContext {
        RequestContext::new(app.clone(), self.spawner())
    }

    pub(crate) fn gw(&self, id: &str) -> crate::gateways::Gateway {
        self.app.registry.resolve(id).unwrap().clone()
    }

    pub(crate) async fn models(&self, id: &str) -> Vec<Value> {
        let lookup = if id == "all" {
            self.ctx().read_all().await.unwrap()
        } else {
            self.ctx().read_gateway(&self.gw(id)).await.unwrap()
        };
        let v: Value = serde_json::from_slice(&lookup.entry.identity().unwrap()).unwrap();
        v["data"].as_array().unwrap().clone()
    }
}

/// How many models of a merged view's `data` list `gateway`.
pub(crate) fn listed_by(all: &[Value], gateway: &str) -> usize {
    all.iter()
        .filter(|m| {
            m["source_gateways"]
                .as_array()
                .is_some_and(|g| g.iter().any(|v| v == gateway))
        })
        .count()
}

/// Config with test-friendly defaults plus `overrides`.
pub(crate) fn config(overrides: &[(&str, &str)]) -> crate::config::Config {
    let mut vars = vec![
        ("TTL_JITTER_PERCENT", "0"),
        ("LOCAL_CACHE_TTL_MS", "0"),
        ("REDIS_COMMAND_TIMEOUT_MS", "500"),
        ("METRICS_FLUSH_INTERVAL_MS", "0"),
        // The windows these tests set, exactly (`tests::cadence` opts into learning).
        ("REFRESH_CADENCE", "fixed"),
    ];
    vars.extend_from_slice(overrides);
    crate::config::Config::from_pairs(&vars).unwrap()
}
