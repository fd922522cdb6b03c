//! Strict query-string parsing.
//!
//! Design failure 11 (docs/design.md): the query never shapes a cache key. Only known parameters are read;
//! values are percent-decoded and must be UTF-8; a parameter given twice is an
//! error rather than a guess; a gateway id must look like one before anything
//! else sees it.

use std::collections::HashMap;

/// Longest query string accepted.
pub(crate) const MAX_QUERY_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError(pub String);

/// Parse `raw` into name → value for the `wanted` names. Unknown names are ignored
/// (e.g. the old frontend's `limit`), so they cannot multiply cache keys.
pub(crate) fn parse<'a>(raw: Option<&str>, wanted: &[&'a str]) -> Result<HashMap<&'a str, String>, QueryError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_LEN {
        return Err(QueryError(format!("query string longer than {MAX_QUERY_LEN} bytes")));
    }
    let mut out: HashMap<&'a str, String> = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        let Some(name) = wanted.iter().find(|w| **w == k) else {
            continue;
        };
        let v = decode(v)?;
        if out.insert(name, v).is_some() {
            return Err(QueryError(format!("parameter '{name}' given more than once")));
        }
    }
    Ok(out)
}

/// Percent-decode (`+` is a space) and require UTF-8. Stricter than browsers: a `%`
/// not followed by two hex digits is an error, not a literal `%`.
fn decode(s: &str) -> Result<String, QueryError> {
    let malformed = || QueryError("malformed percent-encoding".into());
    for (i, _) in s.match_indices('%') {
        let hex = s.as_bytes().get(i + 1..i + 3).ok_or_else(malformed)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(malformed());
        }
    }
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| QueryError("query is not valid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_params_only_and_decoded() {
        let q = parse(Some("gateway=hug&limit=5&search=llama+3%21"), &["gateway", "search"]).unwrap();
        assert_eq!(q["gateway"], "hug");
        assert_eq!(q["search"], "llama 3!");
        assert!(!q.contains_key("limit"));
    }

    #[test]
    fn rejects() {
        assert!(parse(Some("gateway=a&gateway=b"), &["gateway"]).is_err());
        assert!(parse(Some("gateway=%ff"), &["gateway"]).is_err());
        assert!(parse(Some("gateway=%4"), &["gateway"]).is_err());
        assert!(parse(Some("gateway=%zz"), &["gateway"]).is_err());
        assert!(parse(Some(&"a".repeat(3000)), &["gateway"]).is_err());
        assert_eq!(
            parse(Some("gateway=..%2F..%2Fetc"), &["gateway"]).unwrap()["gateway"],
            "../../etc"
        );
    }
}
