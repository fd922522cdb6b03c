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
use crate::clock::now_ms;

/// Compare-and-delete: release a lock only if we still own it. One key, so it is
/// slot-safe on a Redis Cluster.
const DELETE_IF_EQUALS: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Extend a lease we still own: `PEXPIRE` only if the value is ours.
const EXTEND_IF_EQUALS: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// The store's clock in unix ms (`TIME`): the same for every instance.
const SERVER_TIME: &str =
    "local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";

/// The entry format's constants as Lua source: the scripts below are formatted with
/// them once, so raising the format version never means editing Lua by hand.
fn entry_format_lua(script: &str) -> String {
    use crate::entry::{CLOCK_LEN, CLOCK_OFFSET, FORMAT_VERSION, MAGIC, STAMPED_SINCE_VERSION};
    script
        .replace("{MAGIC}", std::str::from_utf8(MAGIC).expect("ASCII magic"))
        .replace("{VERSION}", &FORMAT_VERSION.to_string())
        .replace("{STAMPED_SINCE}", &STAMPED_SINCE_VERSION.to_string())
        // Lua strings are 1-based: the stamp's bytes are CLOCK_OFFSET+1 ..= CLOCK_OFFSET+8.
        .replace("{STAMP_FIRST}", &(CLOCK_OFFSET + 1).to_string())
        .replace("{STAMP_LAST}", &(CLOCK_OFFSET + 8).to_string())
        .replace("{CLOCK_OFFSET}", &CLOCK_OFFSET.to_string())
        .replace("{CLOCK_LEN}", &CLOCK_LEN.to_string())
}

/// Compare-and-set on the fetch stamp: write the entry unless the stored one was
/// fetched later (an older fetch never replaces a newer one). The stamp is read
/// where `entry` puts it, in any format that has one; anything else under the key is
/// overwritten. A stored stamp past ARGV[4] (the store's clock plus a tolerance) is
/// not trusted: it came from an instance whose clock runs ahead, and is overwritten.
/// Returns `{1}` when written, `{0, stored stamp}` when refused. ms stamps fit a Lua
/// double exactly (< 2^53).
const SET_IF_NEWER: &str = r#"
local cur = redis.call('get', KEYS[1])
if cur and string.len(cur) >= {STAMP_LAST} and string.sub(cur, 1, 4) == '{MAGIC}'
   and string.byte(cur, 5) >= {STAMPED_SINCE} and string.byte(cur, 5) <= {VERSION} then
  local t = 0
  for i = {STAMP_FIRST}, {STAMP_LAST} do t = t * 256 + string.byte(cur, i) end
  if t > tonumber(ARGV[2]) and t <= tonumber(ARGV[4]) then return {0, t} end
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {1}
"#;

/// Move an unchanged entry's clock without rewriting its bodies: if the stored
/// entry is still the one with stamp ARGV[1] (and of this format), overwrite its
/// clock with ARGV[2] and its expiry with ARGV[3]. Sends the clock instead of the
/// whole value.
const TOUCH: &str = r#"
local cur = redis.call('getrange', KEYS[1], 0, {STAMP_LAST} - 1)
if string.len(cur) < {STAMP_LAST} or string.sub(cur, 1, 4) ~= '{MAGIC}' or string.byte(cur, 5) ~= {VERSION} then return 0 end
local t = 0
for i = {STAMP_FIRST}, {STAMP_LAST} do t = t * 256 + string.byte(cur, i) end
if t ~= tonumber(ARGV[1]) or string.len(ARGV[2]) ~= {CLOCK_LEN} then return 0 end
redis.call('setrange', KEYS[1], {CLOCK_OFFSET}, ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"#;

/// The scripts, formatted once and sent once per server (`SCRIPT LOAD`, on every node
/// of a Cluster), then run by their SHA-1 (`EVALSHA`, reloaded on `NOSCRIPT`): a warm
/// sends ~40 bytes per script call instead of the script text.
fn script(lua: &'static str) -> &'static fred::types::scripts::Script {
    use fred::types::scripts::Script;
    use std::sync::LazyLock;
    static DELETE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(DELETE_IF_EQUALS));
    static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::from_lua(EXTEND_IF_EQUALS));
    static TIME: LazyLock<Script> = LazyLock::new(|| Script::from_lua(SERVER_TIME));
    static NEWER: LazyLock<Script> = LazyLock::new(|| Script::from_lua(entry_format_lua(SET_IF_NEWER)));
    static RETIME: LazyLock<Script> = LazyLock::new(|| Script::from_lua(entry_format_lua(TOUCH)));
    match lua {
        DELETE_IF_EQUALS => &DELETE,
        EXTEND_IF_EQUALS => &EXTEND,
        SERVER_TIME => &TIME,
        SET_IF_NEWER => &NEWER,
        TOUCH => &RETIME,
        _ => unreachable!("not one of the store's scripts"),
    }
}

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
            Err(StoreError::CircuitOpen)
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
        let script = script(DELETE_IF_EQUALS).evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            vec![self.key(key)],
            vec![Bytes::copy_from_slice(value)],
        );
        let deleted: i64 = self.guarded(script).await?;
        Ok(deleted == 1)
    }

    pub async fn set_if_newer(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        stamp_ms: u64,
        trusted_until_ms: u64,
    ) -> Result<super::Write, StoreError> {
        let script = script(SET_IF_NEWER).evalsha_with_reload::<Vec<i64>, _, _>(
            self.pool.next(),
            vec![self.key(key)],
            vec![
                fred::types::Value::Bytes(value),
                fred::types::Value::from(stamp_ms.to_string()),
                fred::types::Value::from(ms(ttl).to_string()),
                fred::types::Value::from(trusted_until_ms.to_string()),
            ],
        );
        let reply = self.guarded(script).await?;
        Ok(match reply.as_slice() {
            [1, ..] => super::Write::Stored,
            [0, stored, ..] => super::Write::Refused {
                stored_stamp_ms: *stored as u64,
            },
            other => return Err(StoreError::Unavailable(format!("unexpected script reply {other:?}"))),
        })
    }

    pub async fn touch(
        &self,
        key: &str,
        expected_stamp: u64,
        clock: [u8; crate::entry::CLOCK_LEN],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let script = script(TOUCH).evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            vec![self.key(key)],
            vec![
                fred::types::Value::from(expected_stamp.to_string()),
                fred::types::Value::Bytes(Bytes::copy_from_slice(&clock)),
                fred::types::Value::from(ms(ttl).to_string()),
            ],
        );
        let touched: i64 = self.guarded(script).await?;
        Ok(touched == 1)
    }

    /// Extend `key` to `ttl` if it still holds `value` (a lease we own).
    pub async fn extend_if_equals(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let script = script(EXTEND_IF_EQUALS).evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            vec![self.key(key)],
            vec![
                fred::types::Value::Bytes(Bytes::copy_from_slice(value)),
                fred::types::Value::from(ms(ttl).to_string()),
            ],
        );
        let extended: i64 = self.guarded(script).await?;
        Ok(extended == 1)
    }

    /// The store's clock, unix ms.
    pub async fn time_ms(&self) -> Result<u64, StoreError> {
        let script = script(SERVER_TIME).evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            Vec::<String>::new(),
            Vec::<String>::new(),
        );
        let now: i64 = self.guarded(script).await?;
        Ok(now.max(0) as u64)
    }

    /// Compare-and-delete that ignores the circuit breaker: a lock release must not
    /// be skipped because some other call failed recently (everyone would then be
    /// locked out until the TTL). It still has the command timeout.
    pub async fn release(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let script = script(DELETE_IF_EQUALS).evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            vec![self.key(key)],
            vec![Bytes::copy_from_slice(value)],
        );
        let deleted: i64 = script.await.map_err(map_err)?;
        Ok(deleted == 1)
    }

    /// Time left before `key` expires (Redis's own clock, so no skew between instances).
    pub async fn get_range(&self, key: &str, len: usize) -> Result<Option<Bytes>, StoreError> {
        let raw: Bytes = self
            .guarded(self.pool.getrange(self.key(key), 0, len.saturating_sub(1)))
            .await?;
        Ok((!raw.is_empty()).then_some(raw))
    }

    pub async fn pttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms: i64 = self.guarded(self.pool.pttl(self.key(key))).await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
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
    Expiration::PX(ms(ttl))
}

/// A TTL in whole ms for Redis: at least 1, at most what Redis takes.
fn ms(ttl: Duration) -> i64 {
    ttl.as_millis().clamp(1, i64::MAX as u128 / 2) as i64
}

fn map_err(e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::Timeout => StoreError::Timeout,
        // The connection, not the command: the outcome is unknown.
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing | ErrorKind::Backpressure | ErrorKind::Tls => {
            StoreError::Unavailable(e.to_string())
        }
        // The server answered with an error reply: nothing was applied.
        _ => StoreError::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scripts_are_formatted_from_the_entry_format() {
        let newer = super::entry_format_lua(super::SET_IF_NEWER);
        let touch = super::entry_format_lua(super::TOUCH);
        for lua in [&newer, &touch] {
            assert!(
                !lua.contains('{') || !lua.contains("{MAGIC}"),
                "every placeholder filled: {lua}"
            );
            assert!(lua.contains("'GZCE'"), "{lua}");
        }
        assert!(
            touch.contains(&format!("~= {}", crate::entry::FORMAT_VERSION)),
            "{touch}"
        );
        assert!(
            newer.contains(&format!("<= {}", crate::entry::FORMAT_VERSION)),
            "{newer}"
        );
        assert!(newer.contains("for i = 7, 14"), "the stamp's bytes, 1-based: {newer}");
    }
}
