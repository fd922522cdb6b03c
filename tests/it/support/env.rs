//! One environment for the black-box suites: a real redis-server on a free port and
//! the sample catalog API, and the built binaries started against both, either in
//! the runtime's local HTTP mode ([`Env::spawn`]) or under Vercel's IPC protocol
//! ([`Env::platform`]).

use std::io::Read;

use super::process::FunctionProcess;
use super::redis::RedisServer;
use super::vercel_ipc::Platform;

pub const MODELS: &str = env!("CARGO_BIN_EXE_models");
pub const WARM: &str = env!("CARGO_BIN_EXE_cache-warm-models");
pub const CRON: &str = env!("CARGO_BIN_EXE_cron-warm-cache");
pub const PAGE: &str = env!("CARGO_BIN_EXE_page");

pub struct Env {
    pub redis: RedisServer,
    pub sample: sample_catalog::Handle,
}

impl Env {
    pub async fn new() -> Env {
        Env {
            redis: RedisServer::start(),
            sample: sample_catalog::start_local().await,
        }
    }

    /// `bin` as a local HTTP server on this Redis and catalog API, generous deadlines,
    /// no in-process tier and no TTL jitter (so tests see the store), plus `extra`.
    pub fn spawn(&self, bin: &str, extra: &[(&str, &str)]) -> FunctionProcess {
        self.spawn_limited(bin, extra, None)
    }

    /// [`spawn`](Self::spawn) with at most `open_files` file descriptors.
    pub fn spawn_limited(&self, bin: &str, extra: &[(&str, &str)], open_files: Option<u64>) -> FunctionProcess {
        let (redis, base) = (self.redis.url(), self.sample.base_url());
        let mut env: Vec<(&str, &str)> = vec![
            ("REDIS_URL", &redis),
            ("GATEWAYZ_API_URL", &base),
            ("GATEWAY_TIMEOUT_FAST_MS", "10000"),
            ("GATEWAY_TIMEOUT_SLOW_MS", "10000"),
            ("LOCAL_CACHE_TTL_MS", "0"),
            ("TTL_JITTER_PERCENT", "0"),
            // The windows these tests set, exactly (the learned cadence has tests of its own).
            ("REFRESH_CADENCE", "fixed"),
        ];
        env.extend_from_slice(extra);
        FunctionProcess::spawn_limited(bin, &env, None, open_files)
    }

    /// `bin` under Vercel's IPC protocol, with the platform's side played by the test.
    pub fn platform(&self, bin: &str, extra: &[(&str, &str)]) -> Platform {
        self.platform_limited(bin, extra, None)
    }

    /// [`platform`](Self::platform) with at most `open_files` file descriptors.
    pub fn platform_limited(&self, bin: &str, extra: &[(&str, &str)], open_files: Option<u64>) -> Platform {
        let (redis, base) = (self.redis.url(), self.sample.base_url());
        let mut env: Vec<(&str, &str)> = vec![
            ("REDIS_URL", &redis),
            ("GATEWAYZ_API_URL", &base),
            ("GATEWAY_TIMEOUT_FAST_MS", "5000"),
            ("GATEWAY_TIMEOUT_SLOW_MS", "5000"),
            ("TTL_JITTER_PERCENT", "0"),
            ("REFRESH_CADENCE", "fixed"),
        ];
        env.extend_from_slice(extra);
        Platform::start_limited(bin, &env, open_files)
    }

    /// Every key in the store (`KEYS *`: tests only).
    pub fn redis_keys(&self) -> String {
        String::from_utf8_lossy(&self.redis.command(&[b"KEYS", b"*"])).into_owned()
    }

    /// The raw reply to `GET key`.
    pub fn stored(&self, key: &str) -> Vec<u8> {
        self.redis.command(&[b"GET", key.as_bytes()])
    }

    /// A shared counter (`metrics:models` hash field), 0 when absent.
    pub fn metric(&self, field: &str) -> i64 {
        let reply = self.redis.command(&[b"HGET", b"metrics:models", field.as_bytes()]);
        let text = String::from_utf8_lossy(&reply);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
    }
}

/// A client that does not decompress, so tests see the wire bytes.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().no_brotli().build().unwrap()
}

/// A body in `encoding` (`br`, `gzip` or none), decoded.
pub fn decode(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        Some("br") => {
            brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap();
        }
        Some("gzip") => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        }
        None => out.extend_from_slice(body),
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The JSON of an answer (any content coding), checking its content type.
pub async fn json_of(r: reqwest::Response) -> serde_json::Value {
    let ct = header(&r, "content-type").unwrap_or("").to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let enc = header(&r, "content-encoding").map(str::to_string);
    serde_json::from_slice(&decode(enc.as_deref(), &r.bytes().await.unwrap())).unwrap()
}
