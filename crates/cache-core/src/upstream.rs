//! Why a call to the catalog API failed: [`FetchError`], plain data at the bottom of
//! the crate, so the fetcher that makes it, the SWR layer that records and throttles
//! it, and the handler that answers it all speak the same type (a rate limit stays a
//! rate limit all the way to the `503 Retry-After`).
//!
//! Error texts are bounded where they are made ([`bounded`]): a parser's message
//! quotes the offending value, and an upstream that sends a 4 MB string must not
//! make a 4 MB error that is stored, logged and served by the status route.

use std::time::Duration;

/// Longest error text kept anywhere (stored failures, logs, answers), in bytes.
pub(crate) const MAX_ERROR_TEXT: usize = 300;
/// A quoted value inside an error text longer than `CUT_QUOTED_ABOVE` characters is
/// cut to its first `MAX_QUOTED_CHARS` (and its length). A value cut once stays under
/// the threshold, so bounding a bounded text changes nothing.
const MAX_QUOTED_CHARS: usize = 40;
const CUT_QUOTED_ABOVE: usize = 64;

/// The bounds put on an upstream's `Retry-After` (seconds): at least 1 s, so the
/// throttle exists; at most an hour, so a hostile value cannot lock a key for days.
pub(crate) const RETRY_AFTER_BOUNDS: (u64, u64) = (1, 3600);

/// Why a gateway's catalog could not be fetched. Every variant names the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{gateway}: timed out after {} ms", after.as_millis())]
    Timeout { gateway: String, after: Duration },
    #[error("{gateway}: network error: {detail}")]
    Network { gateway: String, detail: String },
    #[error("{gateway}: upstream answered HTTP {status}")]
    Status { gateway: String, status: u16 },
    #[error("{gateway}: upstream answered an HTML page (HTTP {status})")]
    Html { gateway: String, status: u16 },
    #[error("{gateway}: invalid JSON: {detail}")]
    InvalidJson { gateway: String, detail: String },
    #[error("{gateway}: catalog larger than {limit} bytes")]
    TooLarge { gateway: String, limit: usize },
    #[error("{gateway}: more than {limit} pages")]
    TooManyPages { gateway: String, limit: u32 },
    /// The upstream answered 429 and its `Retry-After` (or our backoff) does not fit
    /// in the gateway's deadline.
    #[error("{gateway}: the upstream is rate limiting (retry after {} s)", retry_after.as_secs())]
    RateLimited { gateway: String, retry_after: Duration },
    /// The pages added up to fewer models than the API's own `total`.
    #[error("{gateway}: truncated catalog: received {received} of {total} models")]
    Truncated { gateway: String, received: u64, total: u64 },
    /// The listing moved while it was paged (duplicate ids, a `total` that changed),
    /// and did again when fetched once more from the start.
    #[error("{gateway}: the catalog changed while it was paged ({detail})")]
    Shifted { gateway: String, detail: String },
}

impl FetchError {
    /// `InvalidJson` with its detail bounded (a parser quotes the offending value).
    pub fn invalid_json(gateway: &str, detail: impl AsRef<str>) -> Self {
        FetchError::InvalidJson {
            gateway: gateway.to_string(),
            detail: bounded(detail.as_ref()),
        }
    }

    /// `Network` with its detail bounded.
    pub fn network(gateway: &str, detail: impl AsRef<str>) -> Self {
        FetchError::Network {
            gateway: gateway.to_string(),
            detail: bounded(detail.as_ref()),
        }
    }

    /// How long the upstream asked us to wait, bounded by `RETRY_AFTER_BOUNDS`:
    /// `Some` only for a rate limit.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after, .. } => Some(bound_retry_after(*retry_after)),
            _ => None,
        }
    }

    /// The upstream answered 404 for the gateway's listing: it says the catalog does
    /// not exist (evidence the gateway is gone), not that it failed to serve it.
    pub fn is_gone(&self) -> bool {
        matches!(self, FetchError::Status { status: 404, .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, FetchError::Timeout { .. })
    }
}

/// `d` within [`RETRY_AFTER_BOUNDS`], rounded up to whole seconds.
pub(crate) fn bound_retry_after(d: Duration) -> Duration {
    let (lo, hi) = RETRY_AFTER_BOUNDS;
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.clamp(lo, hi))
}

/// `text` cut to at most [`MAX_ERROR_TEXT`] bytes, with every quoted value longer
/// than a few dozen characters shortened to its start and its length. What remains
/// says what went wrong, never carries what the upstream sent.
pub(crate) fn bounded(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_TEXT + 8));
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        // The closing quote (a `\"` inside is part of the value).
        let mut close = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    close = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let value = &rest[..close.unwrap_or(rest.len())];
        let chars = value.chars().count();
        if chars > CUT_QUOTED_ABOVE {
            out.extend(value.chars().take(MAX_QUOTED_CHARS));
            out.push_str(&format!("…({} bytes)", value.len()));
        } else {
            out.push_str(value);
        }
        match close {
            Some(i) => {
                out.push('"');
                rest = &rest[i + 1..];
            }
            None => rest = "",
        }
        if out.len() > MAX_ERROR_TEXT {
            break;
        }
    }
    out.push_str(rest);
    truncate(out, MAX_ERROR_TEXT)
}

/// `s` cut at a character boundary to at most `max` bytes (plus an ellipsis).
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut_and_the_whole_is_bounded() {
        let huge = "x".repeat(1 << 20);
        let msg = format!("invalid type: string \"{huge}\", expected u64 at line 1 column 1048600");
        let b = bounded(&msg);
        assert!(b.len() <= MAX_ERROR_TEXT + 4, "{}", b.len());
        assert!(b.starts_with("invalid type: string \"xxxx"), "{b}");
        assert!(b.contains("(1048576 bytes)\", expected u64 at line 1"), "{b}");
        // An unterminated quote, many quotes, multi-byte characters.
        assert!(bounded(&format!("a \"{huge}")).len() <= MAX_ERROR_TEXT + 4);
        let many = "\"ab\" ".repeat(100_000);
        assert!(bounded(&many).len() <= MAX_ERROR_TEXT + 4);
        let wide = "é".repeat(10_000);
        assert!(bounded(&wide).len() <= MAX_ERROR_TEXT + 4);
        assert_eq!(bounded("short \"ok\" text"), "short \"ok\" text");
        assert_eq!(bounded(&b), b, "bounding a bounded text changes nothing");
        assert_eq!(bounded(r#"a "b\"c" d"#), r#"a "b\"c" d"#);
    }

    #[test]
    fn retry_after_is_bounded_and_only_for_rate_limits() {
        let rl = |s| FetchError::RateLimited {
            gateway: "g".into(),
            retry_after: Duration::from_secs(s),
        };
        assert_eq!(rl(7).retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(rl(0).retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(rl(10_000_000).retry_after(), Some(Duration::from_secs(3600)));
        assert_eq!(bound_retry_after(Duration::from_millis(1500)), Duration::from_secs(2));
        let other = FetchError::Status {
            gateway: "g".into(),
            status: 500,
        };
        assert_eq!(other.retry_after(), None);
        assert!(rl(7).to_string().contains("rate limiting"));
    }
}
