//! Property tests ("fuzzing" on stable Rust) for the three parsers that see
//! untrusted bytes: the stored-entry decoder (whatever is under our keys in Redis),
//! the catalog-page parser (whatever the upstream sends) and the query parser
//! (whatever a client sends). None may panic; each must keep its invariants.
//!
//! Case counts scale with `PROPTEST_CASES` (default 256 per property here);
//! `scripts/fuzz.sh` runs them long. Regressions found are kept as explicit cases
//! at the bottom of this file.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::entry::{Encoding, Entry, STORED_ENCODINGS};
use crate::gateways::page::parse_page;
use crate::gateways::{Gateway, PriceUnit};
use crate::handlers::query;

fn gw() -> Gateway {
    Gateway::new("groq", PriceUnit::PerMillion, Duration::from_secs(5))
}

/// JSON-shaped text: catalog pages with random models, and random mutations of them.
fn page_text() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        "[a-zA-Z0-9 /._-]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("true".to_string()),
    ];
    let field =
        ("(id|name|raw_x|pricing|context_length|[a-z_]{1,8})", scalar.clone()).prop_map(|(k, v)| format!("{k:?}:{v}"));
    let model = prop::collection::vec(field, 0..6).prop_map(|fs| format!("{{{}}}", fs.join(",")));
    let item = prop_oneof![4 => model, 1 => scalar];
    (
        prop::collection::vec(item, 0..8),
        any::<Option<bool>>(),
        any::<Option<u16>>(),
    )
        .prop_map(|(items, more, total)| {
            let mut s = format!("{{\"data\":[{}]", items.join(","));
            if let Some(m) = more {
                s.push_str(&format!(",\"has_more\":{m}"));
            }
            if let Some(t) = total {
                s.push_str(&format!(",\"total\":{t}"));
            }
            s.push('}');
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
    fn entry_decoder_never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Entry::decode(Bytes::from(raw));
    }

    #[test]
    fn entry_decoder_never_panics_on_mutated_entries(
        json in "[ -~]{0,200}", count in any::<u32>(), a in any::<u64>(), b in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let (fresh, stale) = (a.min(b), a.max(b));
        let entry = Entry::build(Bytes::from(json.clone()), count, 0, fresh, stale, STORED_ENCODINGS);
        let good = entry.encode();
        // The unmodified value round-trips exactly.
        let back = Entry::decode(good.clone()).unwrap();
        prop_assert_eq!(&back.meta, &entry.meta);
        prop_assert_eq!(back.identity().unwrap(), Bytes::from(json));
        // Flipped bytes and truncations are errors or other entries, never panics,
        // and decompression of corrupt bodies fails cleanly.
        let mut bad = good.to_vec();
        for (i, v) in flips {
            let i = i.index(bad.len());
            bad[i] = v;
        }
        bad.truncate(cut.index(bad.len() + 1));
        if let Ok(e) = Entry::decode(Bytes::from(bad)) {
            let _ = e.identity();
            let _ = e.body_in(Encoding::Gzip);
        }
    }

    #[test]
    fn page_parser_never_panics_and_keeps_only_objects(text in page_text(), cut in any::<prop::sample::Index>()) {
        if let Ok(page) = parse_page(&gw(), text.as_bytes(), 200) {
            for m in &page.models {
                prop_assert!(m.keys().all(|k| !k.starts_with("raw_")), "raw_* dropped");
            }
        }
        let cut = &text.as_bytes()[..cut.index(text.len() + 1)];
        let _ = parse_page(&gw(), cut, 200);
    }

    #[test]
    fn page_parser_never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_page(&gw(), &raw, 200);
    }

    #[test]
    fn query_parser_never_panics_and_returns_only_wanted_names(raw in "[a-z%=&+0-9A-F.\\x00-\\x7f]{0,300}") {
        if let Ok(q) = query::parse(Some(&raw), &["gateway", "search"]) {
            prop_assert!(q.keys().all(|k| *k == "gateway" || *k == "search"));
            for v in q.values() {
                prop_assert!(std::str::from_utf8(v.as_bytes()).is_ok());
            }
        }
    }

    #[test]
    fn query_parser_handles_any_unicode(raw in "\\PC{0,100}") {
        let _ = query::parse(Some(&raw), &["gateway"]);
    }
}
