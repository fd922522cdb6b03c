//! Content negotiation: which stored encoding to send, and conditional requests.

use http::HeaderMap;

use crate::entry::Encoding;

/// The encoding of an answer compressed for this request only (a page or a search):
/// gzip when accepted (about 6x cheaper to produce than brotli for a few percent more
/// bytes), brotli only for clients without gzip. Stored and kept bodies, compressed
/// once, use [`choose_encoding`].
pub(crate) fn choose_encoding_per_request(headers: &HeaderMap) -> Encoding {
    match choose_encoding(headers) {
        Encoding::Brotli if accepts(headers, "gzip") => Encoding::Gzip,
        other => other,
    }
}

/// The best encoding the client accepts: br, then gzip, then identity.
pub(crate) fn choose_encoding(headers: &HeaderMap) -> Encoding {
    let mut br = 0.0f32;
    let mut gzip = 0.0f32;
    let mut star = None;
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            // Coding names and the q parameter are case-insensitive (RFC 9110 §12.5.3).
            let item = item.to_ascii_lowercase();
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_string();
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

/// Whether the client accepts `coding` (listed with a q above 0).
pub(crate) fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let item = item.to_ascii_lowercase();
            let mut parts = item.split(';');
            parts.next().unwrap_or("").trim() == coding
                && parts
                    .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                    .unwrap_or(1.0)
                    > 0.0
        })
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

pub(crate) use crate::entry::encoding_etag;

/// Whether `If-None-Match` matches the entry's `etag` in any of its encodings
/// (strong or weak forms, lists, `*`): the content is the same, so a client that
/// cached one coding gets a 304 whichever it asks for now.
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| {
            let tag = t.trim_start_matches("W/").trim_matches('"');
            let tag = tag
                .strip_suffix("-br")
                .or_else(|| tag.strip_suffix("-gzip"))
                .unwrap_or(tag);
            t == "*" || tag == bare
        })
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
    fn an_answer_made_per_request_prefers_gzip() {
        assert_eq!(choose_encoding_per_request(&h("gzip, deflate, br")), Encoding::Gzip);
        assert_eq!(choose_encoding_per_request(&h("br")), Encoding::Brotli);
        assert_eq!(choose_encoding_per_request(&h("br, gzip;q=0")), Encoding::Brotli);
        assert_eq!(choose_encoding_per_request(&HeaderMap::new()), Encoding::Identity);
    }

    #[test]
    fn coding_names_and_q_are_case_insensitive() {
        assert_eq!(choose_encoding(&h("Br;Q=0")), Encoding::Identity);
        assert_eq!(choose_encoding(&h("GZIP, BR;q=0")), Encoding::Gzip);
        assert_eq!(choose_encoding(&h("BR")), Encoding::Brotli);
    }

    #[test]
    fn each_encoding_has_its_own_etag_and_any_of_them_validates() {
        assert_eq!(encoding_etag("\"m-1\"", Encoding::Identity), "\"m-1\"");
        assert_eq!(encoding_etag("\"m-1\"", Encoding::Brotli), "\"m-1-br\"");
        assert_eq!(encoding_etag("\"m-1\"", Encoding::Gzip), "\"m-1-gzip\"");
        for sent in ["\"m-1-br\"", "\"m-1-gzip\"", "W/\"m-1-br\"", "\"m-1\""] {
            let mut m = HeaderMap::new();
            m.insert(http::header::IF_NONE_MATCH, sent.parse().unwrap());
            assert!(not_modified(&m, "\"m-1\""), "{sent}");
            assert!(!not_modified(&m, "\"m-2\""), "{sent}");
        }
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
