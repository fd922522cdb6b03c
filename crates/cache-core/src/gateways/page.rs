//! One page of the catalog API, parsed: the models (each `raw_*` copy dropped while
//! parsing, never materialised), and the page fields that drive pagination. Both
//! answer shapes are accepted (`{"data":[...],...}` and a bare array); an HTML page,
//! an error object or broken JSON is a [`FetchError`] naming the gateway.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::registry::Gateway;
use crate::upstream::FetchError;

/// One page of the catalog API.
#[derive(Debug)]
pub(crate) struct Page {
    pub models: Vec<Map<String, Value>>,
    pub total: Option<u64>,
    pub has_more: Option<bool>,
    pub next_offset: Option<u64>,
}

#[derive(Deserialize)]
struct PageWire {
    data: Option<Vec<ModelSlot>>,
    total: Option<u64>,
    has_more: Option<bool>,
    next_offset: Option<u64>,
}

/// Parse a catalog page: the object shape, or a bare array of models.
pub(crate) fn parse_page(gw: &Gateway, body: &[u8], status: u16) -> Result<Page, FetchError> {
    let invalid = |detail: String| FetchError::invalid_json(&gw.id, detail);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => Err(FetchError::Html {
            gateway: gw.id.clone(),
            status,
        }),
        Some(b'[') => {
            let slots: Vec<ModelSlot> = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
            Ok(Page {
                models: slots.into_iter().filter_map(|s| s.0).collect(),
                total: None,
                has_more: Some(false),
                next_offset: None,
            })
        }
        Some(b'{') => {
            let wire: PageWire = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
            let data = wire
                .data
                .ok_or_else(|| invalid("response has no `data` array".into()))?;
            Ok(Page {
                models: data.into_iter().filter_map(|s| s.0).collect(),
                total: wire.total,
                has_more: wire.has_more,
                next_offset: wire.next_offset,
            })
        }
        _ => Err(invalid("response is not a JSON object or array".into())),
    }
}

pub(super) fn first_id(models: &[Map<String, Value>]) -> Option<Value> {
    models.first().and_then(|m| m.get("id").cloned())
}

/// One element of `data`: a model object without its `raw_*` fields, or `None`
/// for anything that is not an object (skipped, not an error: lenient parsing).
struct ModelSlot(Option<Map<String, Value>>);

impl<'de> Deserialize<'de> for ModelSlot {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelSlot;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelSlot, A::Error> {
                let mut out = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key.starts_with("raw_") {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        let v: Value = map.next_value()?;
                        out.insert(key, v);
                    }
                }
                Ok(ModelSlot(Some(out)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ModelSlot, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ModelSlot(None))
            }
            fn visit_unit<E>(self) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
            fn visit_none<E>(self) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<ModelSlot, E> {
                Ok(ModelSlot(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gateways::registry::PriceUnit;

    fn gw() -> Gateway {
        Gateway::new("groq", PriceUnit::PerMillion, Duration::from_secs(5))
    }

    #[test]
    fn raw_copies_are_dropped_while_parsing() {
        let p = parse_page(
            &gw(),
            br#"{"data":[{"id":"a","raw_groq":{"huge":[1,2,3]}}, null, 3, "x"],"has_more":false}"#,
            200,
        )
        .unwrap();
        assert_eq!(p.models.len(), 1);
        assert!(!p.models[0].contains_key("raw_groq"));
        assert_eq!(p.has_more, Some(false));
    }

    #[test]
    fn shapes_and_errors() {
        assert_eq!(parse_page(&gw(), br#"[{"id":"a"}]"#, 200).unwrap().models.len(), 1);
        assert!(matches!(
            parse_page(&gw(), b"<html>", 200),
            Err(FetchError::Html { .. })
        ));
        assert!(matches!(
            parse_page(&gw(), br#"{"error":"x"}"#, 200),
            Err(FetchError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_page(&gw(), br#"{"data":[{"id":"#, 200),
            Err(FetchError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_page(&gw(), b"", 200),
            Err(FetchError::InvalidJson { .. })
        ));
        let e = parse_page(&gw(), b"nope", 200).unwrap_err();
        assert!(e.to_string().starts_with("groq: "), "errors name the gateway: {e}");
    }
}
