//! Configuration, read once from the environment: plain data at the bottom of the
//! crate (it imports nothing above it; the policies built from it live where they
//! are used: CORS in `handlers::cors`, gateways and their tokens in `gateways`).
//!
//! Every knob the system has lives here, with its default, so the README's
//! configuration table has one source. Tests and the dev server build a [`Config`]
//! from their own variables ([`Config::from_vars`]) instead of mutating the process
//! environment.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::ttl::TtlPolicy;

/// A secret string. `Debug` never prints it, so a config dump in a log is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A URL that may carry credentials: userinfo (`user:pass@`) or secrets in its query
/// string (`?apikey=...`). `Display` and `Debug` show it redacted, so it can be
/// logged; [`SecretUrl::expose`] gives the real one to the code that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `scheme://***@host:port/path?key=***`: userinfo and every query value hidden.
    pub fn redacted(&self) -> String {
        let url = self.0.as_str();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (authority_and_path, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match authority_and_path.find('/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, ""),
        };
        let host = match authority.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => authority.to_string(),
        };
        let mut out = if scheme.is_empty() {
            host
        } else {
            format!("{scheme}://{host}")
        };
        out.push_str(path);
        if let Some(q) = query {
            let hidden: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None => kv.to_string(),
                })
                .collect();
            out.push('?');
            out.push_str(&hidden.join("&"));
        }
        out
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Most gateways one deployment may configure (`GATEWAYS`): the merged view's header
/// marks its carried inputs in a 64-bit mask, one bit per configured gateway, so a
/// 65th would have no clock of its own and could be carried for ever (issue 38).
pub(crate) const MAX_GATEWAYS: usize = 64;

#[derive(Clone, Debug)]
pub struct Config {
    /// `REDIS_URL`; unset = embedded in-memory store. Redacted in `Debug`/`Display`.
    pub redis_url: Option<SecretUrl>,
    /// `CACHE_KEY_PREFIX`: prepended to every key so deployments can share a Redis.
    pub key_prefix: String,
    /// `REDIS_COMMAND_TIMEOUT_MS`: no Redis call waits longer than this.
    pub redis_command_timeout: Duration,
    /// `REDIS_POOL_SIZE`: connections per instance (many instances share the server's limit).
    pub redis_pool_size: usize,
    /// `MODELS_FRESH_TTL_SECONDS` / `MODELS_STALE_TTL_SECONDS` / `TTL_JITTER_PERCENT`.
    pub models_ttl: TtlPolicy,
    /// `REVALIDATE_RETRY_SECONDS`: after a failed revalidation, no new attempt on that key
    /// for this long (across instances), so a failing upstream sees no retry storm.
    pub revalidate_retry: Duration,
    /// `MISS_WAIT_MS`: how long a miss waits while another instance fetches the key
    /// (0 = as long as its lock holds, i.e. its fetch deadline + 5 s). A miss never
    /// fetches beside it.
    pub miss_wait: Duration,
    /// `FAILSAFE_MAX_SECONDS`: how long an entry is kept past its stale window, to be
    /// served (marked fail-safe) when a refetch fails, times out or is throttled.
    pub fail_safe_max: Duration,
    /// `GUARD_CONFIRM_FETCHES` / `GUARD_CONFIRM_SECONDS`: a suspect catalog (one that
    /// collapsed to under a tenth of the stored one, or grew more than tenfold)
    /// becomes the truth once the upstream answered the same size on this many
    /// fetches spread over at least this long; until then the stored one is held
    /// (see `swr::guard`). Defaults 3 and 600 s: a glitch is one answer or a few
    /// minutes; three agreeing answers over ten minutes are a real change, applied
    /// within about ten minutes.
    pub guard_confirm_fetches: u32,
    pub guard_confirm_span: Duration,
    /// `REFRESH_CADENCE` (`learned` | `fixed`), `REFRESH_BUDGET` (`1x`),
    /// `MODELS_FRESH_MIN_SECONDS` (900) / `MODELS_FRESH_MAX_SECONDS` (86400): each
    /// gateway's fresh window planned from the change histories within the budget, or
    /// the fixed default for all (see `cadence`).
    pub cadence: crate::cadence::CadenceSettings,
    /// `REFRESH_DUE_HORIZON_SECONDS`: a due-only run refreshes a gateway whose fresh
    /// window ends within this (default 0: the ones past their window). A longer horizon
    /// refreshes early, before any read asks: with the cron's 3 h it listed every
    /// gateway whose window is under 6 h at every run, 1.25x the budget.
    pub due_horizon: Duration,
    /// `REBUILD_COALESCE_MS`: gateway revalidations within this share one rebuild of the
    /// merged view (250 ms).
    pub rebuild_coalesce: Duration,
    /// `FETCH_SOFT_TIMEOUT_MS`: a read of an expired-but-kept key waits this long for
    /// the refetch, then answers with the kept value while the fetch goes on.
    pub soft_timeout: Duration,
    /// `LOCAL_CACHE_TTL_MS`: how long an instance trusts its in-process copy of an entry
    /// before asking the store again (0 disables the in-process tier).
    pub local_cache_ttl: Duration,
    /// `METRICS_FLUSH_INTERVAL_MS`: counters reach the store at most this often per instance.
    pub metrics_flush_interval: Duration,
    /// `ANSWER_CACHE_MAX_BYTES`: what an instance keeps per request shape (search
    /// indexes, match lists, compressed pages and searches), in bytes. The budget
    /// bounds memory whatever the URLs; an answer above 1/16 of it is never kept.
    pub answer_cache_max_bytes: usize,
    /// `GATEWAYZ_API_URL`: the catalog API base URL. Redacted in `Debug`/`Display`.
    pub upstream_base_url: SecretUrl,
    /// `GATEWAYS`: comma-separated gateway ids to warm; unset = the built-in gateways.
    pub gateways: Option<Vec<String>>,
    /// `GATEWAY_TIMEOUT_FAST_MS` / `GATEWAY_TIMEOUT_SLOW_MS`: per-gateway deadlines.
    pub fast_deadline: Duration,
    pub slow_deadline: Duration,
    /// `FETCH_PAGE_LIMIT` (1..=1000), `FETCH_MAX_PAGES`, `FETCH_MAX_BYTES`.
    pub page_limit: u32,
    pub max_pages: u32,
    pub max_bytes: usize,
    /// `WARM_CONCURRENCY`: gateways fetched at once by a warm.
    pub warm_concurrency: usize,
    /// `WARM_LOCK_TTL_SECONDS`: longer than any warm run (the warm routes' maxDuration is 300 s),
    /// short enough that a warm killed at maxDuration does not block the next one for long.
    pub warm_lock_ttl: Duration,
    /// `CACHE_WARMING_SECRET`: bearer token of the manual warm; unset = that endpoint refuses.
    pub warming_secret: Option<Secret>,
    /// `CRON_SECRET`: bearer token Vercel Cron sends; unset = the cron endpoint refuses on Vercel.
    pub cron_secret: Option<Secret>,
    /// `CORS_ALLOW_ORIGINS`: origins allowed to read the models JSON and status
    /// cross-origin (comma-separated, or `*`), parsed once (see `handlers::cors`).
    pub cors: CorsPolicy,
    /// Running as a deployed Vercel function. Decided here and nowhere else, from what
    /// the platform really provides: `VERCEL_IPC_PATH` is set for every deployed function
    /// (the runtime talks to the platform through it); `VERCEL=1` only when the project
    /// exposes system environment variables. When deployed, the cron route needs
    /// `CRON_SECRET` and every route needs `REDIS_URL` (no private in-memory caches).
    pub deployed: bool,
    /// `REDIS_TLS_CA_CERT`: extra CA to trust for `rediss://` (PEM text, or a path to a
    /// PEM file), for a Redis behind a private CA. Public CAs need nothing.
    pub redis_tls_ca: Option<String>,
    /// Every `GATEWAYZ_TOKEN_<ID>` variable, by name: upstream bearer tokens (the
    /// fetcher picks each gateway's; see `gateways::fetch::token_env_var`).
    pub gateway_tokens: HashMap<String, Secret>,
}

/// A configuration value that could not be parsed. Named, so start-up errors are clear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Build from variables (name, value): the process environment, a dev server's
    /// env files, a test's map.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        // Every number is range-checked here, at start: a value outside its range is an
        // error naming the variable and the range, never a silent clamp or an overflow
        // later (a stale window of 2^64 s once made every entry's stale-until wrap
        // around before its fresh-until).
        let num =
            |k: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| ranged(get(k), k, default, range);
        let secret = |k: &str| get(k).map(Secret);
        const DAY: u64 = 86_400;

        let page_limit = num("FETCH_PAGE_LIMIT", 1000, 1..=1000)?;
        let fresh = num("MODELS_FRESH_TTL_SECONDS", 4 * 3600, 1..=30 * DAY)?;
        let stale = num("MODELS_STALE_TTL_SECONDS", 12 * 3600, 0..=30 * DAY)?;
        let jitter = num("TTL_JITTER_PERCENT", 5, 0..=50)? as u8;
        let fail_safe = num("FAILSAFE_MAX_SECONDS", 7 * DAY, 0..=90 * DAY)?;

        let gateways = get("GATEWAYS").map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        if let Some(ids) = &gateways {
            let distinct: std::collections::HashSet<&String> = ids.iter().collect();
            let max = MAX_GATEWAYS;
            if distinct.len() > max {
                return Err(ConfigError {
                    var: "GATEWAYS",
                    message: format!(
                        "names {} gateways; at most {max}: the merged view keeps one clock per gateway, and a gateway past that would have none",
                        distinct.len()
                    ),
                });
            }
        }

        let gateway_tokens = vars
            .keys()
            .filter(|k| k.starts_with(TOKEN_VAR_PREFIX))
            .filter_map(|k| Some((k.clone(), secret(k)?)))
            .collect();

        Ok(Config {
            redis_url: get("REDIS_URL").map(SecretUrl::new),
            key_prefix: get("CACHE_KEY_PREFIX").unwrap_or_default(),
            redis_command_timeout: Duration::from_millis(num("REDIS_COMMAND_TIMEOUT_MS", 1000, 1..=60_000)?),
            redis_pool_size: num("REDIS_POOL_SIZE", 2, 1..=16)? as usize,
            models_ttl: TtlPolicy::new(Duration::from_secs(fresh), Duration::from_secs(stale), jitter)
                .with_fail_safe(Duration::from_secs(fail_safe)),
            revalidate_retry: Duration::from_secs(num("REVALIDATE_RETRY_SECONDS", 60, 0..=DAY)?),
            miss_wait: Duration::from_millis(num("MISS_WAIT_MS", 0, 0..=300_000)?),
            local_cache_ttl: Duration::from_millis(num("LOCAL_CACHE_TTL_MS", 1000, 0..=3_600_000)?),
            fail_safe_max: Duration::from_secs(fail_safe),
            cadence: cadence_settings(&get, fresh)?,
            due_horizon: Duration::from_secs(num("REFRESH_DUE_HORIZON_SECONDS", 0, 0..=30 * DAY)?),
            rebuild_coalesce: Duration::from_millis(num("REBUILD_COALESCE_MS", 250, 0..=60_000)?),
            guard_confirm_fetches: num("GUARD_CONFIRM_FETCHES", 3, 1..=100)? as u32,
            guard_confirm_span: Duration::from_secs(num("GUARD_CONFIRM_SECONDS", 600, 0..=7 * DAY)?),
            soft_timeout: Duration::from_millis(num("FETCH_SOFT_TIMEOUT_MS", 1000, 0..=300_000)?),
            metrics_flush_interval: Duration::from_millis(num("METRICS_FLUSH_INTERVAL_MS", 1000, 0..=3_600_000)?),
            answer_cache_max_bytes: num("ANSWER_CACHE_MAX_BYTES", 64 << 20, 1 << 20..=16 << 30)? as usize,
            upstream_base_url: SecretUrl::new(
                get("GATEWAYZ_API_URL")
                    .unwrap_or_else(|| "https://api.gatewayz.ai".into())
                    .trim_end_matches('/'),
            ),
            gateways,
            fast_deadline: Duration::from_millis(num("GATEWAY_TIMEOUT_FAST_MS", 5_000, 1..=300_000)?),
            slow_deadline: Duration::from_millis(num("GATEWAY_TIMEOUT_SLOW_MS", 30_000, 1..=300_000)?),
            page_limit: page_limit as u32,
            max_pages: num("FETCH_MAX_PAGES", 100, 1..=10_000)? as u32,
            max_bytes: num("FETCH_MAX_BYTES", 64 * 1024 * 1024, 1024..=4 << 30)? as usize,
            warm_concurrency: num("WARM_CONCURRENCY", 24, 1..=256)? as usize,
            warm_lock_ttl: Duration::from_secs(num("WARM_LOCK_TTL_SECONDS", 330, 1..=3600)?),
            warming_secret: secret("CACHE_WARMING_SECRET"),
            cron_secret: secret("CRON_SECRET"),
            cors: CorsPolicy::parse(get("CORS_ALLOW_ORIGINS").as_deref()),
            deployed: is_deployed(&get),
            redis_tls_ca: get("REDIS_TLS_CA_CERT"),
            gateway_tokens,
        })
    }

    /// Defaults with an explicit map of overrides: handy in tests.
    pub fn from_map(map: &HashMap<&str, String>) -> Result<Self, ConfigError> {
        Self::from_vars(map.iter().map(|(k, v)| (k.to_string(), v.clone())))
    }

    /// Defaults with a few overrides: `Config::from_pairs(&[("GATEWAYS", "groq")])`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }
}

/// `value` as an integer in `range` (`default` when unset), or an error naming `var`.
fn ranged(
    value: Option<String>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let n = v.parse::<u64>().map_err(|_| ConfigError {
        var,
        message: format!("expected an integer in {}..={}, got {v:?}", range.start(), range.end()),
    })?;
    if !range.contains(&n) {
        return Err(ConfigError {
            var,
            message: format!("{n} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(n)
}

/// `REFRESH_CADENCE`, `REFRESH_BUDGET`, `MODELS_FRESH_MIN_SECONDS` and
/// `MODELS_FRESH_MAX_SECONDS`, around the default window `fresh` (seconds).
fn cadence_settings(
    get: &dyn Fn(&str) -> Option<String>,
    fresh: u64,
) -> Result<crate::cadence::CadenceSettings, ConfigError> {
    use crate::cadence::{CadenceSettings, Mode};
    const DAY: u64 = 86_400;
    let mode = match get("REFRESH_CADENCE").map(|m| m.to_ascii_lowercase()).as_deref() {
        None | Some("learned") => Mode::Learned,
        Some("fixed") => Mode::Fixed,
        Some(other) => {
            return Err(ConfigError {
                var: "REFRESH_CADENCE",
                message: format!(
                    "expected learned or fixed, got {:?}",
                    crate::upstream::truncate(other.to_string(), 40)
                ),
            });
        }
    };
    let window =
        |var: &'static str, default: u64| ranged(get(var), var, default, 1..=30 * DAY).map(Duration::from_secs);
    Ok(CadenceSettings {
        mode,
        default_window: Duration::from_secs(fresh),
        budget: budget(get("REFRESH_BUDGET"))?,
        min_window: window("MODELS_FRESH_MIN_SECONDS", 900)?,
        max_window: window("MODELS_FRESH_MAX_SECONDS", DAY)?,
    })
}

/// `REFRESH_BUDGET`: upstream requests per day (`500`), or a multiple of what `fixed`
/// spends on the same gateways (`0.5x`; unset: `1x`).
fn budget(value: Option<String>) -> Result<crate::cadence::Budget, ConfigError> {
    use crate::cadence::Budget;
    let Some(v) = value else {
        return Ok(Budget::OfFixed(1.0));
    };
    let t = v.trim();
    let (number, relative) = match t.strip_suffix(['x', 'X']) {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= 1e9 => Ok(if relative {
            Budget::OfFixed(n)
        } else {
            Budget::PerDay(n)
        }),
        _ => Err(ConfigError {
            var: "REFRESH_BUDGET",
            message: format!(
                "expected upstream requests per day (a positive number) or a multiple of fixed's (like 0.5x), got {:?}",
                crate::upstream::truncate(v, 40)
            ),
        }),
    }
}

/// Whether this process is a deployed Vercel function (see [`Config::deployed`]).
pub fn is_deployed(get: &dyn Fn(&str) -> Option<String>) -> bool {
    get("VERCEL_IPC_PATH").is_some_and(|v| !v.trim().is_empty()) || get("VERCEL").is_some_and(|v| !v.trim().is_empty())
}

/// `CORS_ALLOW_ORIGINS`, parsed: plain data; `handlers::cors` applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsPolicy {
    #[default]
    Off,
    Any,
    Origins(Vec<String>),
}

impl CorsPolicy {
    pub fn parse(value: Option<&str>) -> CorsPolicy {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return CorsPolicy::Off;
        };
        let origins: Vec<String> = v
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            CorsPolicy::Any
        } else {
            CorsPolicy::Origins(origins)
        }
    }
}

/// Variables named `GATEWAYZ_TOKEN_<ID>` hold upstream bearer tokens.
pub const TOKEN_VAR_PREFIX: &str = "GATEWAYZ_TOKEN_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_gateways_than_the_merged_view_has_clocks_for_is_a_clear_error() {
        let ids = |n: usize| (0..n).map(|i| format!("gw{i}")).collect::<Vec<_>>().join(",");
        assert!(Config::from_pairs(&[("GATEWAYS", &ids(64))]).is_ok());
        let e = Config::from_pairs(&[("GATEWAYS", &ids(66))]).unwrap_err();
        assert_eq!(e.var, "GATEWAYS");
        assert!(e.message.contains("names 66 gateways; at most 64"), "{}", e.message);
        // Repeats count once.
        let twice = format!("{},{}", ids(64), ids(64));
        assert!(Config::from_pairs(&[("GATEWAYS", &twice)]).is_ok());
    }

    #[test]
    fn refresh_budget_reads_requests_or_a_multiple_and_names_a_bad_value() {
        use crate::cadence::Budget;
        let budget = |v: &str| Config::from_pairs(&[("REFRESH_BUDGET", v)]).map(|c| c.cadence.budget);
        assert_eq!(Config::from_pairs(&[]).unwrap().cadence.budget, Budget::OfFixed(1.0));
        assert_eq!(budget("500").unwrap(), Budget::PerDay(500.0));
        assert_eq!(budget(" 0.5x ").unwrap(), Budget::OfFixed(0.5));
        assert_eq!(budget("2X").unwrap(), Budget::OfFixed(2.0));
        for bad in ["x", "0", "-3", "NaN", "inf", "1e12", "half", "0.5xx"] {
            let e = budget(bad).unwrap_err();
            assert_eq!(e.var, "REFRESH_BUDGET", "{bad:?}");
            assert!(e.message.contains("requests per day"), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn defaults_match_the_design_card() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.models_ttl.fresh, Duration::from_secs(4 * 3600));
        assert_eq!(c.models_ttl.stale, Duration::from_secs(12 * 3600));
        assert!(c.redis_url.is_none());
        assert!(c.warming_secret.is_none(), "no default secret, ever");
        assert_eq!(c.upstream_base_url.expose(), "https://api.gatewayz.ai");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = Config::from_pairs(&[("MISS_WAIT_MS", "soon")]).unwrap_err();
        assert_eq!(err.var, "MISS_WAIT_MS");
    }

    #[test]
    fn every_number_is_range_checked_and_names_its_variable() {
        for (var, value) in [
            ("MODELS_STALE_TTL_SECONDS", "18446744073709551615"),
            ("MODELS_STALE_TTL_SECONDS", "9223372036854775807"),
            ("MODELS_FRESH_TTL_SECONDS", "0"),
            ("FAILSAFE_MAX_SECONDS", "99999999999"),
            ("FETCH_PAGE_LIMIT", "5000"),
            ("GATEWAY_TIMEOUT_SLOW_MS", "0"),
            ("TTL_JITTER_PERCENT", "90"),
            ("REDIS_POOL_SIZE", "-1"),
        ] {
            let err = Config::from_pairs(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains("..="), "the allowed range is named: {err}");
        }
        let c = Config::from_pairs(&[
            ("MODELS_STALE_TTL_SECONDS", "2592000"),
            ("FAILSAFE_MAX_SECONDS", "7776000"),
        ])
        .unwrap();
        assert_eq!(
            c.models_ttl.stale,
            Duration::from_secs(30 * 86_400),
            "the bounds themselves are allowed"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Config::from_pairs(&[
            ("CRON_SECRET", "hunter2hunter2hunter2"),
            ("GATEWAYZ_TOKEN_NEAR", "hunter2token"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn deployed_is_decided_from_what_the_platform_provides() {
        let with = |k: &'static str| Config::from_pairs(&[(k, "1")]).unwrap();
        assert!(
            with("VERCEL_IPC_PATH").deployed,
            "every deployed function has VERCEL_IPC_PATH"
        );
        assert!(with("VERCEL").deployed, "VERCEL=1 when system env vars are exposed");
        assert!(!with("VERCEL_DEV_PORT").deployed, "a local run is not a deployment");
    }

    #[test]
    fn urls_with_credentials_are_redacted_in_debug_and_display() {
        let c = Config::from_pairs(&[
            ("REDIS_URL", "rediss://default:hunter2pw@redis.example:6380/0"),
            (
                "GATEWAYZ_API_URL",
                "https://user:passw0rd@api.example/v?apikey=sk-123&x=1",
            ),
        ])
        .unwrap();
        let shown = format!("{c:?} {} {}", c.upstream_base_url, c.redis_url.as_ref().unwrap());
        for secret in ["hunter2pw", "passw0rd", "sk-123", "user:", "default:"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("rediss://***@redis.example:6380/0"), "{shown}");
        assert!(shown.contains("https://***@api.example/v?apikey=***&x=***"), "{shown}");
        assert_eq!(
            c.redis_url.unwrap().expose(),
            "rediss://default:hunter2pw@redis.example:6380/0"
        );
    }

    #[test]
    fn every_token_variable_is_kept_by_name() {
        let c = Config::from_pairs(&[
            ("GATEWAYZ_TOKEN_VERCEL_AI_GATEWAY", "t1"),
            ("GATEWAYZ_TOKEN_X", " "),
            ("OTHER", "x"),
        ])
        .unwrap();
        assert_eq!(c.gateway_tokens.len(), 1, "blank values are unset");
        assert_eq!(c.gateway_tokens["GATEWAYZ_TOKEN_VERCEL_AI_GATEWAY"].expose(), "t1");
    }
}
