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
pub fn has_price(pricing: &Value) -> bool {
    PRICE_FIELDS
        .iter()
        .any(|f| pricing.get(*f).is_some_and(|v| !v.is_null()))
}

/// Normalise one model; `None` when it has no usable id.
pub fn normalize(gw: &Gateway, mut m: Map<String, Value>) -> Option<Map<String, Value>> {
    let id = m
        .get("id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())?
        .to_string();
    m.retain(|k, _| !k.starts_with("raw_"));

    if m.get("name")
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
    {
        m.insert("name".into(), Value::String(id.clone()));
    }

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
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
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

/// A decimal string divided by 10^`exp`, exactly. Accepts `12`, `-0.5`, `1.5e-3`,
/// `.5`; returns `None` for anything else (so a garbage price becomes null).
pub fn per_token(s: &str, exp: u32) -> Option<String> {
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
    fn no_id_no_model() {
        assert!(normalize(&gw(PriceUnit::PerToken), Map::new()).is_none());
        let m: Map<String, Value> = serde_json::from_str(r#"{"id":"  "}"#).unwrap();
        assert!(normalize(&gw(PriceUnit::PerToken), m).is_none());
    }
}
