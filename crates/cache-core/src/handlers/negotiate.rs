//! Content negotiation: which stored encoding to send, and conditional requests.

use http::HeaderMap;

use crate::entry::Encoding;

/// The best encoding the client accepts: br, then gzip, then identity.
pub fn choose_encoding(headers: &HeaderMap) -> Encoding {
    let mut br = 0.0f32;
    let mut gzip = 0.0f32;
    let mut star = None;
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            match coding.as_str() {
                "br" => br = br.max(q),
                "gzip" | "x-gzip" => gzip = gzip.max(q),
                "*" => star = Some(q),
                _ => {}
            }
        }
    }
    if let Some(q) = star {
        if br == 0.0 && !mentions(headers, "br") {
            br = q;
        }
        if gzip == 0.0 && !mentions(headers, "gzip") {
            gzip = q;
        }
    }
    if br > 0.0 && br >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

fn mentions(headers: &HeaderMap, coding: &str) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|i| i.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(coding))
        })
}

/// Whether `If-None-Match` matches `etag` (strong or weak forms, lists, `*`).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ae: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(http::header::ACCEPT_ENCODING, ae.parse().unwrap());
        m
    }

    #[test]
    fn encodings() {
        assert_eq!(choose_encoding(&HeaderMap::new()), Encoding::Identity);
        assert_eq!(choose_encoding(&h("gzip, deflate, br")), Encoding::Brotli);
        assert_eq!(choose_encoding(&h("gzip, deflate")), Encoding::Gzip);
        assert_eq!(choose_encoding(&h("br;q=0, gzip")), Encoding::Gzip);
        assert_eq!(choose_encoding(&h("br;q=0.5, gzip;q=0.9")), Encoding::Gzip);
        assert_eq!(choose_encoding(&h("*")), Encoding::Brotli);
        assert_eq!(choose_encoding(&h("identity")), Encoding::Identity);
        assert_eq!(choose_encoding(&h("deflate")), Encoding::Identity);
    }

    #[test]
    fn etags() {
        let mut m = HeaderMap::new();
        m.insert(http::header::IF_NONE_MATCH, "\"x\", W/\"m-1\"".parse().unwrap());
        assert!(not_modified(&m, "\"m-1\""));
        assert!(!not_modified(&m, "\"m-2\""));
        assert!(!not_modified(&HeaderMap::new(), "\"m-1\""));
    }
}
