//! From the catalog API's model objects to the frontend's `Model` shape.
//!
//! - Missing or null fields are normal: nothing here fails on them.
//! - `raw_*` copies were already dropped while parsing ([`super::fetch`]).
//! - Prices become USD per token, as decimal strings, from each gateway's unit.
//!   The conversion shifts the decimal point in the string, so it is exact (no
//!   float round trip turns `0.2` per million into `1.9999999999999998e-7`).
//! - `pricing` is `null` when the gateway gave no price at all (an object of nulls
//!   read as "free" in older frontends); `gateway_pricing` holds this gateway's own
//!   price under its id (empty when unpriced), which the merge unions.
//! - `source_gateway(s)` and `provider_slug(s)` are filled in.
//! - Every field the contract types (`crate::contract::Model`) is served with its
//!   type or `null`, whatever the upstream sent: a number where a string belongs
//!   becomes its text, a numeric string where a count belongs becomes the number
//!   (lossless coercions); anything else becomes `null`. One model with an object
//!   for a `provider_slug` must not break the schema, the page or search. Fields the
//!   contract does not type are kept as they are.

use serde_json::{Map, Value};

use super::registry::Gateway;

/// Price fields converted to per-token.
const PRICE_FIELDS: &[&str] = &[
    "prompt",
    "completion",
    "request",
    "image",
    "web_search",
    "internal_reasoning",
];

/// Whether `pricing` (normalised) holds at least one price.
pub(crate) fn has_price(pricing: &Value) -> bool {
    PRICE_FIELDS
        .iter()
        .any(|f| pricing.get(*f).is_some_and(|v| !v.is_null()))
}

/// Normalise one model; `None` when it has no usable id.
pub(crate) fn normalize(gw: &Gateway, mut m: Map<String, Value>) -> Option<Map<String, Value>> {
    let id = m
        .get("id")
        .and_then(text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())?;
    m.retain(|k, _| !k.starts_with("raw_"));
    m.insert("id".into(), Value::String(id.clone()));

    let name = m.get("name").and_then(text).filter(|s| !s.trim().is_empty());
    m.insert("name".into(), Value::String(name.unwrap_or_else(|| id.clone())));
    for field in ["description", "canonical_slug", "model_logo_url"] {
        coerce(&mut m, field, |v| text(v).map(Value::String));
    }
    coerce(&mut m, "context_length", |v| {
        integer(v).filter(|n| *n >= 0).map(Value::from)
    });
    coerce(&mut m, "created", |v| integer(v).map(Value::from));
    coerce(&mut m, "supported_parameters", strings);
    coerce(&mut m, "architecture", |v| {
        let Value::Object(a) = v else { return None };
        let mut a = a.clone();
        coerce(&mut a, "modality", |v| text(v).map(Value::String));
        coerce(&mut a, "input_modalities", strings);
        coerce(&mut a, "output_modalities", strings);
        Some(Value::Object(a))
    });

    if let Some(Value::Object(pricing)) = m.get_mut("pricing") {
        let exp = gw.price_unit.exponent();
        for field in PRICE_FIELDS {
            if let Some(v) = pricing.get_mut(*field) {
                *v = match v {
                    Value::String(s) => per_token(s, exp).map(Value::String).unwrap_or(Value::Null),
                    Value::Number(n) => per_token(&n.to_string(), exp).map(Value::String).unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
        }
    }
    // No price at all is `null`, never an object of nulls (which older frontends
    // showed as "Free"); a partial price stays as it is.
    if !m.get("pricing").is_some_and(has_price) {
        m.insert("pricing".into(), Value::Null);
    }
    let mut own = Map::new();
    if let Some(p @ Value::Object(_)) = m.get("pricing") {
        own.insert(gw.id.clone(), p.clone());
    }
    m.insert("gateway_pricing".into(), Value::Object(own));

    let provider = m
        .get("provider_slug")
        .and_then(text)
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            id.split_once('/')
                .map(|(vendor, _)| vendor.to_ascii_lowercase())
                .filter(|v| !v.is_empty())
        });
    match &provider {
        Some(p) => {
            m.insert("provider_slug".into(), Value::String(p.clone()));
            m.insert("provider_slugs".into(), Value::Array(vec![Value::String(p.clone())]));
        }
        None => {
            // Optional in the contract: absent rather than whatever the record held.
            m.remove("provider_slug");
            m.insert("provider_slugs".into(), Value::Array(vec![]));
        }
    }
    m.insert("source_gateway".into(), Value::String(gw.id.clone()));
    m.insert(
        "source_gateways".into(),
        Value::Array(vec![Value::String(gw.id.clone())]),
    );
    Some(m)
}

/// Replace `field` (when present) with what `typed` makes of it, or `null`.
fn coerce(m: &mut Map<String, Value>, field: &str, typed: impl Fn(&Value) -> Option<Value>) {
    if let Some(v) = m.get_mut(field)
        && !v.is_null()
    {
        *v = typed(v).unwrap_or(Value::Null);
    }
}

/// A string field's value: a string, or the text of a number (lossless).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer field's value: an integer, a float with no fraction, or a string
/// holding one (`"8192"`).
fn integer(v: &Value) -> Option<i64> {
    let from_f64 = |f: f64| (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64);
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(from_f64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(from_f64))
        }
        _ => None,
    }
}

/// A list of strings: the strings (and numbers, as text) of an array; other
/// elements are dropped. Not an array: `None`.
fn strings(v: &Value) -> Option<Value> {
    let Value::Array(items) = v else { return None };
    Some(Value::Array(items.iter().filter_map(text).map(Value::String).collect()))
}

/// A decimal string divided by 10^`exp`, exactly. Accepts `12`, `-0.5`, `1.5e-3`,
/// `.5`; returns `None` for anything else (so a garbage price becomes null).
pub(crate) fn per_token(s: &str, exp: u32) -> Option<String> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, e10) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    if e10.unsigned_abs() > 64 {
        return None;
    }
    // digits × 10^(point) where point = e10 - exp - frac.len()
    let digits: String = format!("{int}{frac}");
    let point = e10 - exp as i32 - frac.len() as i32;
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some("0".into());
    }
    let out = if point >= 0 {
        format!("{digits}{}", "0".repeat(point as usize))
    } else {
        let shift = (-point) as usize;
        let (i, f) = if digits.len() > shift {
            (
                digits[..digits.len() - shift].to_string(),
                digits[digits.len() - shift..].to_string(),
            )
        } else {
            ("0".to_string(), format!("{}{digits}", "0".repeat(shift - digits.len())))
        };
        let f = f.trim_end_matches('0');
        if f.is_empty() { i } else { format!("{i}.{f}") }
    };
    Some(if neg { format!("-{out}") } else { out })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gateways::registry::PriceUnit;

    fn gw(unit: PriceUnit) -> Gateway {
        Gateway::new("together", unit, Duration::from_secs(5))
    }

    #[test]
    fn exact_decimal_shifts() {
        assert_eq!(per_token("0.2", 6).unwrap(), "0.0000002");
        assert_eq!(per_token("2", 6).unwrap(), "0.000002");
        assert_eq!(per_token("100", 6).unwrap(), "0.0001");
        assert_eq!(per_token("0.000002", 0).unwrap(), "0.000002");
        assert_eq!(per_token("1.5e-3", 0).unwrap(), "0.0015");
        assert_eq!(per_token("1e-7", 0).unwrap(), "0.0000001");
        assert_eq!(per_token("3", 9).unwrap(), "0.000000003");
        assert_eq!(per_token("0", 6).unwrap(), "0");
        assert_eq!(per_token("-1", 0).unwrap(), "-1");
        assert_eq!(per_token("12.50", 0).unwrap(), "12.5");
        assert_eq!(per_token(".5", 0).unwrap(), "0.5");
        for bad in ["", "abc", "1.2.3", "0x10", "1e999", "."] {
            assert!(per_token(bad, 6).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn model_shape_for_the_frontend() {
        let m: Map<String, Value> = serde_json::from_str(
            r#"{"id":"meta-llama/Llama-3-70b","pricing":{"prompt":"0.9","completion":0.9,"image":null,"request":"n/a"},"raw_x":{}}"#,
        )
        .unwrap();
        let n = normalize(&gw(PriceUnit::PerMillion), m).unwrap();
        assert_eq!(n["pricing"]["prompt"], "0.0000009");
        assert_eq!(n["pricing"]["completion"], "0.0000009");
        assert_eq!(n["pricing"]["image"], Value::Null);
        assert_eq!(n["pricing"]["request"], Value::Null);
        assert_eq!(n["name"], "meta-llama/Llama-3-70b");
        assert_eq!(n["provider_slug"], "meta-llama");
        assert_eq!(n["provider_slugs"], serde_json::json!(["meta-llama"]));
        assert_eq!(n["source_gateway"], "together");
        assert_eq!(n["source_gateways"], serde_json::json!(["together"]));
        assert!(!n.contains_key("raw_x"));
        assert_eq!(
            n["gateway_pricing"],
            serde_json::json!({"together": n["pricing"].clone()}),
            "its own price under its own id"
        );
    }

    #[test]
    fn no_price_at_all_is_null_and_partial_prices_stay() {
        for pricing in [
            r#""pricing":{"prompt":null,"completion":null,"image":null}"#,
            r#""pricing":{"prompt":"n/a"}"#,
            r#""pricing":null"#,
            r#""pricing":"free""#,
            r#""x":1"#,
        ] {
            let m: Map<String, Value> = serde_json::from_str(&format!(r#"{{"id":"a/b",{pricing}}}"#)).unwrap();
            let n = normalize(&gw(PriceUnit::PerToken), m).unwrap();
            assert_eq!(n["pricing"], Value::Null, "{pricing}");
            assert_eq!(n["gateway_pricing"], serde_json::json!({}), "{pricing}");
        }
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"id":"a/b","pricing":{"prompt":"1","completion":null}}"#).unwrap();
        let n = normalize(&gw(PriceUnit::PerMillion), m).unwrap();
        assert_eq!(n["pricing"], serde_json::json!({"prompt":"0.000001","completion":null}));
        assert_eq!(n["gateway_pricing"]["together"], n["pricing"]);
    }

    #[test]
    fn typed_fields_get_their_type_or_null_and_unknown_fields_stay() {
        let m: Map<String, Value> = serde_json::from_str(
            r#"{"id":12345,"name":{"a":1},"description":12345,"provider_slug":{"toString":0},
                "context_length":"8192","created":1.7e9,"canonical_slug":["x"],"model_logo_url":true,
                "supported_parameters":["tools",7,null,{"x":1}],
                "architecture":{"modality":[1],"input_modalities":"text","output_modalities":["text"],"tokenizer":{"k":1}},
                "top_provider":{"context_length":"odd"},"pricing":{"prompt":{"x":1},"completion":"1","discount":"x"}}"#,
        )
        .unwrap();
        let n = normalize(&gw(PriceUnit::PerMillion), m).unwrap();
        assert_eq!(n["id"], "12345", "a numeric id is its text");
        assert_eq!(n["name"], "12345", "an odd name falls back to the id");
        assert_eq!(n["description"], "12345");
        assert!(!n.contains_key("provider_slug"), "no usable provider: absent");
        assert_eq!(n["provider_slugs"], serde_json::json!([]));
        assert_eq!(n["context_length"], 8192);
        assert_eq!(n["created"], 1_700_000_000);
        assert_eq!(n["canonical_slug"], Value::Null);
        assert_eq!(n["model_logo_url"], Value::Null);
        assert_eq!(n["supported_parameters"], serde_json::json!(["tools", "7"]));
        assert_eq!(
            n["architecture"],
            serde_json::json!({"modality":null,"input_modalities":null,"output_modalities":["text"],"tokenizer":{"k":1}})
        );
        assert_eq!(
            n["top_provider"],
            serde_json::json!({"context_length":"odd"}),
            "unknown fields stay"
        );
        assert_eq!(
            n["pricing"],
            serde_json::json!({"prompt":null,"completion":"0.000001","discount":"x"})
        );
        for (bad, field) in [
            (r#""context_length":-5"#, "context_length"),
            (r#""created":"soon""#, "created"),
            (r#""architecture":"text""#, "architecture"),
        ] {
            let m: Map<String, Value> = serde_json::from_str(&format!(r#"{{"id":"a",{bad}}}"#)).unwrap();
            assert_eq!(
                normalize(&gw(PriceUnit::PerToken), m).unwrap()[field],
                Value::Null,
                "{bad}"
            );
        }
    }

    #[test]
    fn no_id_no_model() {
        assert!(normalize(&gw(PriceUnit::PerToken), Map::new()).is_none());
        let m: Map<String, Value> = serde_json::from_str(r#"{"id":"  "}"#).unwrap();
        assert!(normalize(&gw(PriceUnit::PerToken), m).is_none());
    }
}
