//! The merged `all` view: one list across gateways, deduplicated.
//!
//! Rules (from the catalog API's own frontend):
//! - dedup key: `canonical_slug` or else `id`, lowercased, one leading vendor
//!   prefix stripped, characters other than `[a-z0-9_-]` removed; the normalised
//!   name when that leaves nothing;
//! - `source_gateways` and `provider_slugs` are the union over duplicates;
//! - the most complete record wins: a point each for a description, a prompt price
//!   and a context length > 0, plus the number of input modalities (ties: the
//!   gateway listed first).

use std::collections::HashMap;

use serde_json::{Map, Value};

const VENDOR_PREFIXES: &[&str] = &[
    "aimo/",
    "google/",
    "openai/",
    "meta/",
    "anthropic/",
    "models/",
    "mistralai/",
    "xai/",
    "fal-ai/",
    "fal/",
    "bria/",
];

pub fn dedup_key(m: &Map<String, Value>) -> String {
    let raw = m
        .get("canonical_slug")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| m.get("id").and_then(Value::as_str))
        .unwrap_or("")
        .to_ascii_lowercase();
    let key = clean(VENDOR_PREFIXES.iter().find_map(|p| raw.strip_prefix(p)).unwrap_or(&raw));
    if !key.is_empty() {
        return key;
    }
    clean(&m.get("name").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase())
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

pub fn completeness(m: &Map<String, Value>) -> usize {
    let has_description = m
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    let has_prompt_price = m
        .get("pricing")
        .and_then(|p| p.get("prompt"))
        .is_some_and(|p| !p.is_null());
    let has_context = m.get("context_length").and_then(Value::as_f64).is_some_and(|c| c > 0.0);
    let modalities = m
        .get("architecture")
        .and_then(|a| a.get("input_modalities"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    has_description as usize + has_prompt_price as usize + has_context as usize + modalities
}

/// Merge catalogs given in gateway order. Output keeps first-seen order.
pub fn merge(catalogs: impl IntoIterator<Item = Vec<Map<String, Value>>>) -> Vec<Map<String, Value>> {
    let mut out: Vec<Map<String, Value>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for catalog in catalogs {
        for model in catalog {
            let key = dedup_key(&model);
            if key.is_empty() {
                continue;
            }
            match index.get(&key) {
                None => {
                    index.insert(key, out.len());
                    out.push(model);
                }
                Some(&i) => {
                    let kept = &mut out[i];
                    let gateways = union(kept.get("source_gateways"), model.get("source_gateways"));
                    let providers = union(kept.get("provider_slugs"), model.get("provider_slugs"));
                    if completeness(&model) > completeness(kept) {
                        *kept = model;
                    }
                    kept.insert("source_gateways".into(), gateways);
                    kept.insert("provider_slugs".into(), providers);
                }
            }
        }
    }
    out
}

fn union(a: Option<&Value>, b: Option<&Value>) -> Value {
    let mut items: Vec<Value> = Vec::new();
    for v in a
        .and_then(Value::as_array)
        .into_iter()
        .chain(b.and_then(Value::as_array))
        .flatten()
    {
        if !items.contains(v) {
            items.push(v.clone());
        }
    }
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keys() {
        assert_eq!(dedup_key(&m(json!({"id":"OpenAI/GPT-4o"}))), "gpt-4o");
        assert_eq!(
            dedup_key(&m(json!({"id":"x","canonical_slug":"anthropic/claude-3.5"}))),
            "claude-35"
        );
        assert_eq!(dedup_key(&m(json!({"id":"meta-llama/Llama-3"}))), "meta-llamallama-3");
        assert_eq!(dedup_key(&m(json!({"id":"google/","name":"Gemini Pro"}))), "geminipro");
    }

    #[test]
    fn union_and_most_complete_wins() {
        let a = vec![m(
            json!({"id":"openai/gpt-4o","source_gateways":["openrouter"],"provider_slugs":["openai"]}),
        )];
        let b = vec![m(json!({
            "id":"gpt-4o","description":"d","pricing":{"prompt":"0.000005"},"context_length":128000,
            "architecture":{"input_modalities":["text","image"]},
            "source_gateways":["together"],"provider_slugs":["openai","azure"]
        }))];
        let c = vec![m(
            json!({"id":"gpt-4o","source_gateways":["groq","together"],"provider_slugs":[]}),
        )];
        let merged = merge([a, b, c]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0]["description"], "d", "the more complete record is kept");
        assert_eq!(merged[0]["source_gateways"], json!(["openrouter", "together", "groq"]));
        assert_eq!(merged[0]["provider_slugs"], json!(["openai", "azure"]));
    }

    #[test]
    fn ties_keep_the_first_gateway() {
        let merged = merge([
            vec![m(json!({"id":"x","name":"first","source_gateways":["a"]}))],
            vec![m(json!({"id":"x","name":"second","source_gateways":["b"]}))],
        ]);
        assert_eq!(merged[0]["name"], "first");
    }
}
