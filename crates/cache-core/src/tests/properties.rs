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
use proptest::test_runner::TestCaseError;

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
        let clock = crate::entry::Clock { fetched_at_ms: 0, fresh_until_ms: fresh, stale_until_ms: stale, kept_until_ms: stale };
        let entry = Entry::build(Bytes::from(json.clone()), count, clock, STORED_ENCODINGS);
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

// ---- served bodies keep the contract whatever the upstream sends -----------------

/// Any JSON value, a few levels deep: what a hostile or broken upstream may put in
/// any field.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[0-9]{1,6}".prop_map(Value::String),
        "[a-z]{1,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,16}|toString|prompt|input_modalities", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A model with a usable id and arbitrary values in every field the contract types.
fn hostile_model() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    const TYPED: &[&str] = &[
        "name",
        "description",
        "provider_slug",
        "context_length",
        "created",
        "canonical_slug",
        "architecture",
        "supported_parameters",
        "model_logo_url",
        "pricing",
        "source_gateways",
        "provider_slugs",
        "gateway_pricing",
    ];
    (
        "[a-zA-Z0-9][a-zA-Z0-9 ./:_-]{1,20}",
        prop::collection::vec((0..TYPED.len(), any_json()), 0..8),
        prop::option::of(("[a-z_]{1,10}", any_json(), any_json())),
    )
        .prop_map(|(id, fields, nested)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), id.into());
            for (f, v) in fields {
                m.insert(TYPED[f].into(), v);
            }
            // Typed fields inside objects (`pricing.prompt`, `architecture.*_modalities`).
            if let Some((k, a, b)) = nested {
                m.insert(
                    "pricing".into(),
                    serde_json::json!({ "prompt": a, "completion": b, k.clone(): 1 }),
                );
                m.insert(
                    "architecture".into(),
                    serde_json::json!({ "input_modalities": a, "modality": b, k: [] }),
                );
            }
            m
        })
}

fn models_schema() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/models.schema.json");
        let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

/// Every body a client can get from `body` (a catalog as stored): the list, a page,
/// and a search for each model's id, each valid against the schema; every model is
/// found by its id. Returns the ids checked.
fn every_served_body_keeps_the_contract(body: &Bytes) -> Result<usize, TestCaseError> {
    use crate::answers::SearchIndex;
    let valid = |what: &str, json: &[u8]| -> Result<serde_json::Value, TestCaseError> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
        let errors: Vec<String> = models_schema()
            .iter_errors(&v)
            .take(3)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        prop_assert!(errors.is_empty(), "{what} breaks the schema: {errors:?}\n{v}");
        Ok(v)
    };
    let list = valid("list", body)?;
    let index = SearchIndex::build(body.clone()).map_err(TestCaseError::fail)?;
    valid("page", &index.page(None, 1, Some(2)))?;
    let ids: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().expect("id is a string").to_string())
        .collect();
    for id in &ids {
        let term = id.to_lowercase();
        if term.chars().count() < crate::answers::MIN_TERM_CHARS {
            continue;
        }
        let found = valid("search", &index.page(Some(&term), 0, Some(usize::MAX)))?;
        let hits: Vec<&str> = found["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        prop_assert!(hits.contains(&id.as_str()), "{id:?} not found by its id: {hits:?}");
    }
    Ok(ids.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)))]

    #[test]
    fn any_value_in_a_typed_field_is_served_with_its_type_and_found_by_id(
        a in prop::collection::vec(hostile_model(), 1..6),
        b in prop::collection::vec(hostile_model(), 1..6),
    ) {
        use std::sync::Arc;
        let gateways = [
            Gateway::new("groq", PriceUnit::PerMillion, Duration::from_secs(5)),
            Gateway::new("together", PriceUnit::PerToken, Duration::from_secs(5)),
        ];
        let mut entries = Vec::new();
        for (gw, models) in gateways.iter().zip([a, b]) {
            let n_in = models.len();
            let page = [crate::app::catalog::normalize_page(gw, models, &Default::default())];
            let (parts, collapsed) = crate::app::catalog::distinct_records(&page);
            let n = parts.len();
            prop_assert_eq!(n + collapsed as usize, n_in, "every model with an id is kept, once");
            let body = crate::app::catalog::catalog_json(&gw.id, &parts, n, &[]);
            prop_assert_eq!(every_served_body_keeps_the_contract(&body)?, n);
            let entry = Entry::build(body, n as u32, crate::entry::Clock::default(), STORED_ENCODINGS);
            entries.push((gw.id.clone(), crate::app::catalog::Input::Stored(Arc::new(entry))));
        }
        entries.push(("missing".into(), crate::app::catalog::Input::Absent { gone: false }));
        let merged = crate::app::catalog::merge_inputs(&entries, None, crate::clock::now_ms());
        every_served_body_keeps_the_contract(&merged.json)?;
    }
}
