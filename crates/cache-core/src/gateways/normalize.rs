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
use crate::contract::Model;

/// Normalise one model; `None` when it has no usable id.
pub(crate) fn normalize(gw: &Gateway, mut m: Map<String, Value>) -> Option<Map<String, Value>> {
    m.retain(|k, _| !k.starts_with("raw_"));
    let mut model = Model::take(&mut m);
    model.id = model.id.trim().to_string();
    if model.id.is_empty() {
        return None;
    }
    if model.name.trim().is_empty() {
        model.name = model.id.clone();
    }
    // Prices in USD per token; no price at all is `null`, never an object of nulls
    // (which older frontends showed as "Free"); a partial price keeps its nulls.
    if let Some(pricing) = &mut model.pricing {
        let exp = gw.price_unit.exponent();
        for price in pricing.prices_mut() {
            *price = price.take().and_then(|p| per_token(&p, exp));
        }
    }
    model.pricing = model.pricing.filter(|p| p.has_any());
    model.provider_slug = model
        .provider_slug
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let (vendor, _) = model.id.split_once('/')?;
            Some(vendor.to_ascii_lowercase()).filter(|v| !v.is_empty())
        });
    model.provider_slugs = model.provider_slug.iter().cloned().collect();
    model.source_gateway = gw.id.clone();
    model.source_gateways = vec![gw.id.clone()];
    model.overlay(&mut m);
    // The record's own price (its unknown fields and nulls kept) under this
    // gateway's id: the merge unions these.
    let own = match m.entry("pricing").or_insert(Value::Null) {
        p @ Value::Object(_) => Map::from_iter([(gw.id.clone(), p.clone())]),
        _ => Map::new(),
    };
    m.insert("gateway_pricing".into(), Value::Object(own));
    Some(m)
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
