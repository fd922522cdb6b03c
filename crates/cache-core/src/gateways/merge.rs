//! The merged `all` view: one list across gateways, deduplicated.
//!
//! Rules (from the catalog API's own frontend):
//! - dedup key: `canonical_slug` or else `id`, lowercased, one leading vendor
//!   prefix stripped, characters other than `[a-z0-9_-]` removed; the normalised
//!   name when that leaves nothing;
//! - `source_gateways` and `provider_slugs` are the union over duplicates;
//! - `gateway_pricing` too: each listing gateway's own price under its id (a
//!   gateway listing the model twice keeps its first), so the frontend can show
//!   every gateway's price and not only the winner's;
//! - `first_seen` is the earliest of its listings', and absent when any listing has
//!   none (a model some gateway listed at the baseline is not new);
//! - the most complete record wins: a point each for a description, a prompt price
//!   and a context length > 0, plus the number of input modalities (ties: the
//!   gateway listed first).
//!
//! Memory: models are borrowed from the cached catalog bodies as `&RawValue` and
//! only the fields the rules need are parsed. A kept model is written out as its
//! original bytes unless the union changed its gateways or providers, so a
//! 20,000-model merge never builds 20,000 JSON trees.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
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

/// The fields of a model the merge rules look at. `Value`s, so an unexpected type
/// in one field never makes a model unreadable (lenient parsing).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(crate) struct Facts {
    id: Value,
    canonical_slug: Value,
    name: Value,
    description: Value,
    context_length: Value,
    pricing: Value,
    architecture: Value,
    source_gateways: Value,
    provider_slugs: Value,
    source_gateway: Value,
    gateway_pricing: Value,
    first_seen: Value,
}

impl Facts {
    pub(crate) fn dedup_key(&self) -> String {
        let raw = self
            .canonical_slug
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| self.id.as_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let key = clean(VENDOR_PREFIXES.iter().find_map(|p| raw.strip_prefix(p)).unwrap_or(&raw));
        if !key.is_empty() {
            return key;
        }
        clean(&self.name.as_str().unwrap_or("").to_ascii_lowercase())
    }

    pub(crate) fn completeness(&self) -> usize {
        let has_description = self.description.as_str().is_some_and(|s| !s.trim().is_empty());
        let has_prompt_price = self.pricing.get("prompt").is_some_and(|p| !p.is_null());
        let has_context = self.context_length.as_f64().is_some_and(|c| c > 0.0);
        let modalities = self
            .architecture
            .get("input_modalities")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        has_description as usize + has_prompt_price as usize + has_context as usize + modalities
    }

    /// This listing's prices by gateway: its `gateway_pricing`, or (a record
    /// normalised before that field existed) its own price under `source_gateway`.
    fn prices(&self) -> Map<String, Value> {
        if let Value::Object(m) = &self.gateway_pricing {
            return m.clone();
        }
        let mut m = Map::new();
        if let (Some(gw), true) = (
            self.source_gateway.as_str(),
            crate::contract::Pricing::read(&self.pricing).is_some_and(|p| p.has_any()),
        ) {
            m.insert(gw.to_string(), self.pricing.clone());
        }
        m
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

struct Kept<'a> {
    raw: &'a RawValue,
    score: usize,
    own_gateways: Value,
    own_providers: Value,
    own_prices: Value,
    own_first_seen: Value,
    gateways: Vec<Value>,
    providers: Vec<Value>,
    prices: Map<String, Value>,
    /// The earliest `first_seen` of its listings; `None` once one has none.
    first_seen: Option<String>,
}

/// Merge catalog bodies (`{"data":[...]}`) given in gateway order. Returns the
/// merged models as comma-separated JSON objects (first-seen order) and their count.
/// Bodies that are not catalogs are skipped.
pub(crate) fn merge_bodies(bodies: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut kept: Vec<Kept> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for body in bodies {
        let Ok(body) = serde_json::from_slice::<Body>(body) else {
            continue;
        };
        for raw in body.data {
            let facts: Facts = serde_json::from_str(raw.get()).unwrap_or_default();
            let key = facts.dedup_key();
            if key.is_empty() {
                continue;
            }
            let score = facts.completeness();
            match index.get(&key) {
                None => {
                    index.insert(key, kept.len());
                    kept.push(Kept {
                        raw,
                        score,
                        gateways: array(&facts.source_gateways),
                        providers: array(&facts.provider_slugs),
                        prices: facts.prices(),
                        first_seen: facts.first_seen.as_str().map(str::to_string),
                        own_gateways: facts.source_gateways,
                        own_providers: facts.provider_slugs,
                        own_prices: facts.gateway_pricing,
                        own_first_seen: facts.first_seen,
                    });
                }
                Some(&i) => {
                    let k = &mut kept[i];
                    union_into(&mut k.gateways, &facts.source_gateways);
                    union_into(&mut k.providers, &facts.provider_slugs);
                    for (gw, price) in facts.prices() {
                        k.prices.entry(gw).or_insert(price);
                    }
                    // ISO 8601 in one format: the text orders as the time.
                    k.first_seen = match (k.first_seen.take(), facts.first_seen.as_str()) {
                        (Some(a), Some(b)) => Some(a.min(b.to_string())),
                        _ => None,
                    };
                    if score > k.score {
                        k.raw = raw;
                        k.score = score;
                        k.own_gateways = facts.source_gateways;
                        k.own_providers = facts.provider_slugs;
                        k.own_prices = facts.gateway_pricing;
                        k.own_first_seen = facts.first_seen;
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(kept.iter().map(|k| k.raw.get().len() + 1).sum());
    for (i, k) in kept.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let unchanged = array(&k.own_gateways) == k.gateways
            && array(&k.own_providers) == k.providers
            && k.own_prices.as_object() == Some(&k.prices)
            && k.own_first_seen.as_str() == k.first_seen.as_deref();
        match serde_json::from_str::<Map<String, Value>>(k.raw.get()) {
            Ok(mut m) if !unchanged => {
                m.insert("source_gateways".into(), Value::Array(k.gateways.clone()));
                m.insert("provider_slugs".into(), Value::Array(k.providers.clone()));
                m.insert("gateway_pricing".into(), Value::Object(k.prices.clone()));
                match &k.first_seen {
                    Some(first) => m.insert("first_seen".into(), Value::String(first.clone())),
                    None => m.remove("first_seen"),
                };
                serde_json::to_writer(&mut out, &m).expect("maps serialize");
            }
            _ => out.extend_from_slice(k.raw.get().as_bytes()),
        }
    }
    (out, kept.len())
}

fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn union_into(into: &mut Vec<Value>, more: &Value) {
    for v in more.as_array().into_iter().flatten() {
        if !into.contains(v) {
            into.push(v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(v: Value) -> Facts {
        serde_json::from_value(v).unwrap()
    }

    fn merged(catalogs: &[Value]) -> Vec<Value> {
        let bodies: Vec<Vec<u8>> = catalogs
            .iter()
            .map(|c| serde_json::to_vec(&json!({ "data": c })).unwrap())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let (items, n) = merge_bodies(&refs);
        let list: Vec<Value> = serde_json::from_slice(&[b"[", items.as_slice(), b"]"].concat()).unwrap();
        assert_eq!(list.len(), n);
        list
    }

    #[test]
    fn keys() {
        assert_eq!(facts(json!({"id":"OpenAI/GPT-4o"})).dedup_key(), "gpt-4o");
        assert_eq!(
            facts(json!({"id":"x","canonical_slug":"anthropic/claude-3.5"})).dedup_key(),
            "claude-35"
        );
        assert_eq!(
            facts(json!({"id":"meta-llama/Llama-3"})).dedup_key(),
            "meta-llamallama-3"
        );
        assert_eq!(
            facts(json!({"id":"google/","name":"Gemini Pro"})).dedup_key(),
            "geminipro"
        );
        assert_eq!(
            facts(json!({"id":7,"context_length":"big"})).dedup_key(),
            "",
            "odd types are tolerated"
        );
    }

    #[test]
    fn union_and_most_complete_wins() {
        let list = merged(&[
            json!([{"id":"openai/gpt-4o","source_gateways":["openrouter"],"provider_slugs":["openai"]}]),
            json!([{
                "id":"gpt-4o","description":"d","pricing":{"prompt":"0.000005"},"context_length":128000,
                "architecture":{"input_modalities":["text","image"]},
                "source_gateways":["together"],"provider_slugs":["openai","azure"]
            }]),
            json!([{"id":"gpt-4o","source_gateways":["groq","together"],"provider_slugs":[]}]),
        ]);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["description"], "d", "the more complete record is kept");
        assert_eq!(list[0]["source_gateways"], json!(["openrouter", "together", "groq"]));
        assert_eq!(list[0]["provider_slugs"], json!(["openai", "azure"]));
    }

    #[test]
    fn ties_keep_the_first_gateway_and_unmerged_models_are_byte_identical() {
        let list = merged(&[
            json!([{"id":"x","name":"first","source_gateways":["a"],"gateway_pricing":{}}, {"id":"solo","extra":{"k":[1,2]},"source_gateways":["a"],"gateway_pricing":{}}]),
            json!([{"id":"x","name":"second","source_gateways":["b"],"gateway_pricing":{}}]),
        ]);
        assert_eq!(list[0]["name"], "first");
        assert_eq!(list[0]["source_gateways"], json!(["a", "b"]));
        assert_eq!(
            list[1],
            json!({"id":"solo","extra":{"k":[1,2]},"source_gateways":["a"],"gateway_pricing":{}})
        );
    }

    #[test]
    fn every_listing_gateway_keeps_its_own_price() {
        let p = |x: &str| json!({"prompt": x, "completion": x});
        let list = merged(&[
            json!([{"id":"m/x","source_gateway":"a","source_gateways":["a"],"pricing":p("0.1"),"gateway_pricing":{"a":p("0.1")}},
                   {"id":"m/x","source_gateway":"a","source_gateways":["a"],"pricing":p("0.9"),"gateway_pricing":{"a":p("0.9")}}]),
            json!([{"id":"m/x","description":"more complete","source_gateway":"b","source_gateways":["b"],"pricing":p("0.2"),"gateway_pricing":{"b":p("0.2")}}]),
            json!([{"id":"m/x","source_gateway":"c","source_gateways":["c"],"pricing":null,"gateway_pricing":{}}]),
            // Normalised before `gateway_pricing` existed: derived from its own price.
            json!([{"id":"m/x","source_gateway":"d","source_gateways":["d"],"pricing":p("0.3")}]),
        ]);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["description"], "more complete");
        assert_eq!(
            list[0]["pricing"],
            p("0.2"),
            "the winner's own price stays in `pricing`"
        );
        assert_eq!(
            list[0]["gateway_pricing"],
            json!({"a": p("0.1"), "b": p("0.2"), "d": p("0.3")}),
            "a gateway's first listing; an unpriced gateway is left out"
        );
        assert_eq!(list[0]["source_gateways"], json!(["a", "b", "c", "d"]));
    }

    #[test]
    fn first_seen_is_the_earliest_and_absent_once_a_listing_has_none() {
        let m = |gw: &str, first: Option<&str>| {
            let mut v = json!({"id":"m/x","source_gateways":[gw],"gateway_pricing":{}});
            if let Some(f) = first {
                v["first_seen"] = json!(f);
            }
            json!([v])
        };
        let (late, early) = ("2026-12-07T10:00:00.000Z", "2026-12-01T10:00:00.000Z");
        let list = merged(&[m("a", Some(late)), m("b", Some(early))]);
        assert_eq!(list[0]["first_seen"], early, "the winner (a) carried the later one");
        let list = merged(&[m("a", Some(late)), m("b", None)]);
        assert!(
            list[0].get("first_seen").is_none(),
            "b listed it at its baseline: not new"
        );
        let list = merged(&[m("a", None), m("b", Some(early))]);
        assert!(list[0].get("first_seen").is_none());
        let list = merged(&[m("a", Some(late))]);
        assert_eq!(list[0]["first_seen"], late);
    }

    #[test]
    fn non_catalog_bodies_are_skipped() {
        let (items, n) = merge_bodies(&[b"not json", br#"{"data":[{"id":"a","gateway_pricing":{}}]}"#]);
        assert_eq!((n, items), (1, br#"{"id":"a","gateway_pricing":{}}"#.to_vec()));
    }
}
