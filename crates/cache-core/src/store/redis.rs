//! The Redis store, through `fred`.
//!
//! fred's defaults bite: no reconnect policy and no command timeout, so a dropped
//! connection makes every later command fail or hang. Here the pool reconnects
//! forever with capped exponential backoff, and every command gives up after the
//! configured timeout. The first connection is not awaited: a Redis that is down
//! at start-up behaves like one that died later.
//!
//! Why `fail_fast = true` plus our own supervisor rather than fred's
//! `fail_fast = false`: the latter sends even the first connection through the
//! reconnect path and its delay, which measured 60-160 ms on the first command of
//! every cold start. With `fail_fast` the first command takes ~1 ms; if that first
//! connection fails, [`supervise`] calls `connect` again with capped backoff until
//! it succeeds, after which fred's reconnect policy takes over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::StoreError;
use crate::ttl::now_ms;

/// Compare-and-delete: release a lock only if we still own it. One key, so it is
/// slot-safe on a Redis Cluster.
const DELETE_IF_EQUALS: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: Arc<str>,
    breaker: Arc<Breaker>,
}

/// A circuit breaker in front of Redis.
///
/// Without it, a request that needs several store calls during an outage (read,
/// throttle check, lock, write) waits out the command timeout for each one in turn:
/// measured up to 3.5 s with a 300 ms timeout. After a connection-level failure the
/// breaker opens for `OPEN_FOR`: calls fail at once (the SWR layer then serves its
/// in-process copy or fetches directly). The first call after that window probes
/// Redis again; success closes the breaker, failure opens it for another window.
#[derive(Default)]
struct Breaker {
    open_until_ms: AtomicU64,
}

const OPEN_FOR_MS: u64 = 1_000;

impl Breaker {
    fn check(&self) -> Result<(), StoreError> {
        if now_ms() < self.open_until_ms.load(Ordering::Relaxed) {
            Err(StoreError::Unavailable(
                "circuit open after a recent Redis failure".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn record<T>(&self, result: Result<T, Error>) -> Result<T, StoreError> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                // Only failures of the connection open the breaker; a command error
                // (say WRONGTYPE on one key) says nothing about Redis being reachable.
                if matches!(
                    e.kind(),
                    ErrorKind::Timeout
                        | ErrorKind::IO
                        | ErrorKind::Canceled
                        | ErrorKind::Routing
                        | ErrorKind::Backpressure
                ) {
                    self.open_until_ms.store(now_ms() + OPEN_FOR_MS, Ordering::Relaxed);
                }
                Err(map_err(e))
            }
        }
    }
}

impl RedisStore {
    pub fn connect(
        url: &str,
        prefix: &str,
        command_timeout: Duration,
        pool_size: usize,
        tls_ca: Option<&str>,
    ) -> Result<Self, StoreError> {
        let (url, tls) = super::tls::split_scheme(url);
        let mut config = Config::from_url(&url).map_err(|e| StoreError::Unavailable(format!("bad REDIS_URL: {e}")))?;
        if tls {
            config.tls = Some(fred::types::config::TlsConnector::from(super::tls::client_config(tls_ca)?).into());
        }
        config.fail_fast = true;
        let pool = Builder::from_config(config)
            .with_performance_config(|p| {
                p.default_command_timeout = command_timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = command_timeout.max(Duration::from_millis(500));
                c.internal_command_timeout = command_timeout.max(Duration::from_millis(500));
                c.max_command_attempts = 2;
            })
            // Retry forever (0 attempts = no limit), 100 ms doubling up to 2 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_pool(pool_size)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Drive the connections in the background; do not wait for the first one.
        tokio::spawn(supervise(pool.clone()));
        Ok(Self {
            pool,
            prefix: prefix.into(),
            breaker: Arc::default(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Run one command behind the circuit breaker. fred's command futures do
    /// nothing until polled, so an open breaker sends nothing at all.
    async fn guarded<T>(&self, command: impl Future<Output = Result<T, Error>>) -> Result<T, StoreError> {
        self.breaker.check()?;
        self.breaker.record(command.await)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.guarded(self.pool.get(self.key(key))).await
    }

    pub async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.guarded(self.pool.set(self.key(key), value, Some(px(ttl)), None, false))
            .await
    }

    pub async fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .guarded(
                self.pool
                    .set(self.key(key), value, Some(px(ttl)), Some(SetOptions::NX), false),
            )
            .await?;
        Ok(reply.is_some())
    }

    pub async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let script = self.pool.next().eval(
            DELETE_IF_EQUALS,
            vec![self.key(key)],
            vec![Bytes::copy_from_slice(value)],
        );
        let deleted: i64 = self.guarded(script).await?;
        Ok(deleted == 1)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.guarded(self.pool.del(self.key(key))).await
    }

    pub async fn incr_fields(&self, key: &str, deltas: &[(&str, i64)]) -> Result<(), StoreError> {
        self.breaker.check()?;
        let key = self.key(key);
        let pipeline = self.pool.next().pipeline();
        for (field, delta) in deltas {
            // Queued in the pipeline; nothing is sent until `all`.
            let _: () = pipeline.hincrby(&key, *field, *delta).await.map_err(map_err)?;
        }
        let _: Vec<Value> = self.guarded(pipeline.all()).await?;
        Ok(())
    }

    pub async fn get_fields(&self, key: &str) -> Result<HashMap<String, i64>, StoreError> {
        let raw: HashMap<String, String> = self.guarded(self.pool.hgetall(self.key(key))).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
            .collect())
    }
}

/// Keep (re)starting the pool's connection task until a connection is made. With
/// `fail_fast`, the task ends if the *first* connection fails; once connected, fred's
/// reconnect policy handles drops and the task runs until the pool quits.
async fn supervise(pool: Pool) {
    let mut delay = Duration::from_millis(100);
    loop {
        match pool.connect().await {
            Ok(Ok(())) => return, // the pool quit
            Ok(Err(e)) => tracing::warn!(
                "[Cache Store] Redis connection failed ({e}); retrying in {} ms",
                delay.as_millis()
            ),
            Err(_) => return, // the runtime is shutting down
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn px(ttl: Duration) -> Expiration {
    Expiration::PX(ttl.as_millis().clamp(1, i64::MAX as u128) as i64)
}

fn map_err(e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::Timeout => StoreError::Timeout,
        _ => StoreError::Unavailable(e.to_string()),
    }
}
