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

/// A change ledger's commit (`Store::commit_ledger`): the snapshot, the dates and the
/// log's new entries, all or nothing, and only if the snapshot still has the revision
/// it was diffed from (two fetches never record one change twice), with the summary
/// of the gateway's last change. Four keys, one hash slot. `XTRIM MINID` needs Redis 6.2: where it is refused the count bound
/// still holds (and readers skip what is older than the age bound).
const COMMIT_LEDGER: &str = r"
if redis.call('GETRANGE', KEYS[1], 0, 15) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if #ARGV > 7 then
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[4])
  for i = 8, #ARGV do
    redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[5], '*', 'e', ARGV[i])
  end
  redis.pcall('XTRIM', KEYS[3], 'MINID', ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return 1";

/// The store's scripts, each formatted once, sent by SHA-1 (`EVALSHA`, ~40 bytes a
/// call) and, when the server does not know it yet (`NOSCRIPT`: a restart, a new
/// Cluster node), by its text (`EVAL`, which also caches it there). Never `SCRIPT
/// LOAD`: managed Redis services may rename or disable `SCRIPT`, and the cache must
/// work all the same.
struct Lua {
    text: String,
    sha1: String,
}

#[derive(Clone, Copy)]
enum ScriptName {
    DeleteIfEquals,
    ExtendIfEquals,
    ServerTime,
    SetIfNewer,
    RewriteHead,
    CommitLedger,
}

fn script(name: ScriptName) -> &'static Lua {
    use std::sync::LazyLock;
    fn lua(text: String) -> Lua {
        let sha1 = fred::util::sha1_hash(&text);
        Lua { text, sha1 }
    }
    static DELETE: LazyLock<Lua> = LazyLock::new(|| lua(DELETE_IF_EQUALS.into()));
    static EXTEND: LazyLock<Lua> = LazyLock::new(|| lua(EXTEND_IF_EQUALS.into()));
    static TIME: LazyLock<Lua> = LazyLock::new(|| lua(SERVER_TIME.into()));
    // The entry's layout is the entry module's: it writes the scripts that touch it.
    static NEWER: LazyLock<Lua> = LazyLock::new(|| lua(crate::entry::lua::set_if_newer()));
    static HEAD: LazyLock<Lua> = LazyLock::new(|| lua(crate::entry::lua::rewrite_head()));
    static LEDGER: LazyLock<Lua> = LazyLock::new(|| lua(COMMIT_LEDGER.into()));
    match name {
        ScriptName::DeleteIfEquals => &DELETE,
        ScriptName::ExtendIfEquals => &EXTEND,
        ScriptName::ServerTime => &TIME,
        ScriptName::SetIfNewer => &NEWER,
        ScriptName::RewriteHead => &HEAD,
        ScriptName::CommitLedger => &LEDGER,
    }
}

/// Run a script: `EVALSHA`, then `EVAL` on `NOSCRIPT`. A server that refuses scripts
/// altogether gets one clear error line (then at most one a minute), not silence.
async fn eval<R: FromValue>(client: &Client, name: ScriptName, keys: Vec<Key>, args: Vec<Value>) -> Result<R, Error> {
    let lua = script(name);
    match client.evalsha(lua.sha1.as_str(), keys.clone(), args.clone()).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            let result = client.eval(lua.text.as_str(), keys, args).await;
            if let Err(e) = &result {
                scripts_refused(e);
            }
            result
        }
        Err(e) => {
            scripts_refused(&e);
            Err(e)
        }
        ok => ok,
    }
}

/// Log a server that will not run our scripts (`EVAL`/`EVALSHA` renamed or denied by
/// ACL): every compare-and-set would fail, so nothing would be stored.
fn scripts_refused(e: &Error) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let d = e.details().to_ascii_lowercase();
    if !(d.contains("unknown command") || d.contains("noperm") || d.contains("no permission")) {
        return;
    }
    let now = now_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(
            "[Cache Store] Redis refuses Lua scripts ({}): entries cannot be stored and locks fall back to a plain DEL; allow EVAL and EVALSHA for this user",
            e.details()
        );
    }
}

#[derive(Clone)]
pub(crate) struct RedisStore {
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
    pub(crate) fn connect(
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

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.guarded(self.pool.get(self.key(key))).await
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.guarded(self.pool.mget(keys)).await
    }

    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.guarded(self.pool.set(self.key(key), value, Some(px(ttl)), None, false))
            .await
    }

    pub(crate) async fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .guarded(
                self.pool
                    .set(self.key(key), value, Some(px(ttl)), Some(SetOptions::NX), false),
            )
            .await?;
        Ok(reply.is_some())
    }

    pub(crate) async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let deleted: i64 = self.guarded(self.compare_and_delete(key, value)).await?;
        Ok(deleted == 1)
    }

    /// Compare-and-delete by script; on a server that runs no scripts, a `GET` then a
    /// `DEL` (a release must never be skipped: a lock left behind blocks everyone
    /// until its TTL; the window between the two is what that server costs).
    async fn compare_and_delete(&self, key: &str, value: &[u8]) -> Result<i64, Error> {
        let client = self.pool.next();
        let k = self.key(key);
        match eval::<i64>(
            client,
            ScriptName::DeleteIfEquals,
            vec![k.clone().into()],
            vec![Value::Bytes(Bytes::copy_from_slice(value))],
        )
        .await
        {
            Err(e) if is_command_refused(&e) => {
                let held: Option<Bytes> = client.get(&k).await?;
                if held.as_deref() == Some(value) {
                    client.del::<i64, _>(&k).await
                } else {
                    Ok(0)
                }
            }
            other => other,
        }
    }

    pub(crate) async fn set_if_newer(&self, key: &str, write: super::Versioned) -> Result<super::Write, StoreError> {
        let script = eval::<Vec<i64>>(
            self.pool.next(),
            ScriptName::SetIfNewer,
            vec![self.key(key).into()],
            vec![
                Value::Bytes(write.value),
                Value::from(write.stamp_ms.to_string()),
                Value::from(ms(write.ttl).to_string()),
                Value::from(write.trusted_until_ms.to_string()),
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

    pub(crate) async fn rewrite_head(&self, key: &str, new: super::NewHead) -> Result<bool, StoreError> {
        let script = eval::<i64>(
            self.pool.next(),
            ScriptName::RewriteHead,
            vec![self.key(key).into()],
            vec![
                Value::from(new.stamp.to_string()),
                Value::Bytes(Bytes::from(new.head)),
                Value::from(ms(new.ttl).to_string()),
            ],
        );
        let rewritten: i64 = self.guarded(script).await?;
        Ok(rewritten == 1)
    }

    /// Extend `key` to `ttl` if it still holds `value` (a lease we own).
    pub(crate) async fn extend_if_equals(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let script = eval::<i64>(
            self.pool.next(),
            ScriptName::ExtendIfEquals,
            vec![self.key(key).into()],
            vec![
                Value::Bytes(Bytes::copy_from_slice(value)),
                Value::from(ms(ttl).to_string()),
            ],
        );
        let extended: i64 = self.guarded(script).await?;
        Ok(extended == 1)
    }

    /// The store's clock, unix ms.
    pub(crate) async fn time_ms(&self) -> Result<u64, StoreError> {
        let script = eval::<i64>(self.pool.next(), ScriptName::ServerTime, Vec::new(), Vec::new());
        let now: i64 = match self.guarded(script).await {
            Err(StoreError::Refused(_)) => {
                // No scripts: the plain command (one key-less call, any node).
                let time = fred::types::CustomCommand::new_static("TIME", fred::types::ClusterHash::Random, false);
                let (secs, micros): (i64, i64) =
                    self.guarded(self.pool.next().custom(time, Vec::<Value>::new())).await?;
                secs * 1000 + micros / 1000
            }
            other => other?,
        };
        Ok(now.max(0) as u64)
    }

    /// Compare-and-delete that ignores the circuit breaker: a lock release must not
    /// be skipped because some other call failed recently (everyone would then be
    /// locked out until the TTL). It still has the command timeout.
    pub(crate) async fn release(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let deleted: i64 = self.compare_and_delete(key, value).await.map_err(map_err)?;
        Ok(deleted == 1)
    }

    /// Time left before `key` expires (Redis's own clock, so no skew between instances).
    pub(crate) async fn get_range(&self, key: &str, len: usize) -> Result<Option<Bytes>, StoreError> {
        let raw: Bytes = self
            .guarded(self.pool.getrange(self.key(key), 0, len.saturating_sub(1)))
            .await?;
        Ok((!raw.is_empty()).then_some(raw))
    }

    pub(crate) async fn pttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms: i64 = self.guarded(self.pool.pttl(self.key(key))).await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.guarded(self.pool.del(self.key(key))).await
    }

    pub(crate) async fn incr_fields(&self, key: &str, deltas: &[(&str, i64)]) -> Result<(), StoreError> {
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

    /// `RPUSH`, `LTRIM` to the last `keep`, `PEXPIRE`: pipelined, no script (a store
    /// without `SCRIPT`/`EVAL` takes it), one round trip.
    pub(crate) async fn append_capped(
        &self,
        key: &str,
        record: Bytes,
        keep: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.breaker.check()?;
        let key = self.key(key);
        let pipeline = self.pool.next().pipeline();
        let _: () = pipeline.rpush(&key, record).await.map_err(map_err)?;
        let _: () = pipeline.ltrim(&key, -(keep as i64), -1).await.map_err(map_err)?;
        let _: () = pipeline.pexpire(&key, ms(ttl), None).await.map_err(map_err)?;
        let _: Vec<Value> = self.guarded(pipeline.all()).await?;
        Ok(())
    }

    /// `LRANGE key 0 -1`.
    pub(crate) async fn list(&self, key: &str) -> Result<Vec<Bytes>, StoreError> {
        self.guarded(self.pool.lrange(self.key(key), 0, -1)).await
    }

    pub(crate) async fn commit_ledger(&self, c: super::LedgerCommit<'_>) -> Result<bool, StoreError> {
        let keys = [c.snapshot_key, c.dates_key, c.log_key, c.last_key]
            .map(|k| self.key(k).into())
            .to_vec();
        let mut args = vec![
            Value::Bytes(Bytes::copy_from_slice(c.expected_rev)),
            Value::Bytes(c.snapshot),
            Value::Bytes(c.dates),
            Value::from(ms(c.ttl).to_string()),
            Value::from(c.log_max.to_string()),
            Value::from(c.log_min_ms.to_string()),
            Value::Bytes(c.last),
        ];
        args.extend(c.events.into_iter().map(Value::Bytes));
        let committed: i64 = self
            .guarded(eval::<i64>(self.pool.next(), ScriptName::CommitLedger, keys, args))
            .await?;
        Ok(committed == 1)
    }

    /// `XRANGE` / `XREVRANGE`, their bounds made exclusive by hand (the `(` syntax
    /// needs Redis 6.2).
    pub(crate) async fn log_range(
        &self,
        key: &str,
        from: super::LogFrom,
        count: usize,
    ) -> Result<Vec<(super::LogId, Bytes)>, StoreError> {
        use fred::types::{ClusterHash, CustomCommand};
        let (command, start, end) = match from {
            super::LogFrom::After(after) => ("XRANGE", after.next().to_string(), "+".to_string()),
            super::LogFrom::Before(None) => ("XREVRANGE", "+".to_string(), "-".to_string()),
            super::LogFrom::Before(Some(before)) if before == super::LogId::ZERO => return Ok(Vec::new()),
            super::LogFrom::Before(Some(before)) => ("XREVRANGE", before.prev().to_string(), "-".to_string()),
        };
        let cmd = CustomCommand::new_static(command, ClusterHash::FirstKey, false);
        let args: Vec<Value> = vec![
            self.key(key).into(),
            start.into(),
            end.into(),
            "COUNT".into(),
            (count.max(1) as i64).into(),
        ];
        let reply: Value = self.guarded(self.pool.next().custom(cmd, args)).await?;
        Ok(parse_stream_entries(reply))
    }

    pub(crate) async fn get_fields(&self, key: &str) -> Result<HashMap<String, i64>, StoreError> {
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

/// A stream reply (`[[id, [field, value, ...]], ...]`) as ids and each entry's first
/// value; entries of another shape are skipped.
fn parse_stream_entries(reply: Value) -> Vec<(super::LogId, Bytes)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else { return None };
            if parts.len() != 2 {
                return None;
            }
            let Value::Array(fields) = parts.pop()? else {
                return None;
            };
            let id = super::LogId::parse(parts.pop()?.as_str()?.as_ref())?;
            let value = match fields.into_iter().nth(1)? {
                Value::Bytes(b) => b,
                Value::String(s) => s.into_inner(),
                _ => return None,
            };
            Some((id, value))
        })
        .collect()
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

/// The server refused the command itself (renamed, unknown, or denied by ACL), not
/// its arguments or the key's value.
fn is_command_refused(e: &Error) -> bool {
    let d = e.details().to_ascii_lowercase();
    d.contains("unknown command") || d.contains("noperm") || d.contains("no permission")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scripts_are_formatted_from_the_entry_format() {
        let newer = crate::entry::lua::set_if_newer();
        let head = crate::entry::lua::rewrite_head();
        for lua in [&newer, &head] {
            assert!(lua.contains("'GZCE'"), "{lua}");
        }
        assert!(head.contains(&format!("~= {}", crate::entry::FORMAT_VERSION)), "{head}");
        assert!(
            newer.contains(&format!("<= {}", crate::entry::FORMAT_VERSION)),
            "{newer}"
        );
        assert!(newer.contains("for i = 7, 14"), "the stamp's bytes, 1-based: {newer}");
        assert!(
            head.contains("setrange', KEYS[1], 5,"),
            "the head starts at byte 5: {head}"
        );
    }
}
