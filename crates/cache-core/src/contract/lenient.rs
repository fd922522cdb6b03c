//! Reading a model whatever the upstream sent, and writing it back into the record.
//!
//! Each typed field of [`super::Model`] is read by one of these: a value of its type
//! is taken, a lossless neighbour is converted (a number where text belongs becomes
//! its text; an integral float or a numeric string where an integer belongs becomes
//! the integer), anything else reads as absent. Nothing here fails, so one odd field
//! never makes a model unreadable, whether it comes from an upstream (normalisation)
//! or from a stored entry (the page's rows).

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, forward_to_deserialize_any};
use serde_json::{Map, Value};

use super::Pricing;

fn into_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn into_integer(v: Value) -> Option<i64> {
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

fn into_texts(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => Some(items.into_iter().filter_map(into_text).collect()),
        _ => None,
    }
}

/// Text: a string, or the text of a number.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(into_text(Value::deserialize(d)?))
}

/// Text that is always there: empty when it is not text.
pub(super) fn text_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(text(d)?.unwrap_or_default())
}

/// An integer: an integer, a float with no fraction, or a string holding one (`"8192"`).
pub(super) fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(into_integer(Value::deserialize(d)?))
}

/// A count: an integer of at least zero.
pub(super) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(integer(d)?.and_then(|n| u64::try_from(n).ok()))
}

/// A list of text: the strings (and numbers, as text) of an array; other elements
/// are dropped. Not an array: absent.
pub(super) fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(into_texts(Value::deserialize(d)?))
}

/// A list of text that is always there: empty when it is not a list.
pub(super) fn texts_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(texts(d)?.unwrap_or_default())
}

/// An object of a lenient type: absent when it is not an object.
pub(super) fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        v @ Value::Object(_) => T::deserialize(v).ok(),
        _ => None,
    })
}

/// Prices: an object whose members are text (a number as its text; a member of any
/// other type dropped); not an object, absent.
pub(super) fn prices<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pricing>, D::Error> {
    Ok(read_prices(Value::deserialize(d)?))
}

/// Prices by gateway: the members that read as prices; not an object, empty.
pub(super) fn prices_by_gateway<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Pricing>, D::Error> {
    let Value::Object(m) = Value::deserialize(d)? else {
        return Ok(BTreeMap::new());
    };
    Ok(m.into_iter().filter_map(|(k, v)| Some((k, read_prices(v)?))).collect())
}

pub(super) fn read_prices(v: Value) -> Option<Pricing> {
    let Value::Object(m) = v else { return None };
    let texts: Map<String, Value> = m
        .into_iter()
        .filter_map(|(k, v)| Some((k, Value::String(into_text(v)?))))
        .collect();
    Pricing::deserialize(Value::Object(texts)).ok()
}

/// Write `typed`'s fields into `record`: a field with a value replaces the record's,
/// one without makes the record's (if it has one) `null`; fields `typed` does not
/// declare stay. The members named by `nested` are objects written the same way,
/// field by field, so their own unknown fields and nulls stay too.
pub(super) fn overlay<T: Serialize + DeserializeOwned>(
    record: &mut Map<String, Value>,
    typed: &T,
    nested: &dyn Fn(&str) -> Option<&'static [&'static str]>,
) {
    let Ok(Value::Object(values)) = serde_json::to_value(typed) else {
        return;
    };
    overlay_fields(record, values, fields_of::<T>(), nested);
}

fn overlay_fields(
    record: &mut Map<String, Value>,
    mut values: Map<String, Value>,
    fields: &[&str],
    nested: &dyn Fn(&str) -> Option<&'static [&'static str]>,
) {
    for &field in fields {
        match (values.remove(field), nested(field), record.get_mut(field)) {
            (Some(Value::Object(inner)), Some(names), Some(Value::Object(held))) => {
                overlay_fields(held, inner, names, &|_| None);
            }
            (Some(v), ..) => {
                record.insert(field.to_string(), v);
            }
            (None, _, Some(held)) => *held = Value::Null,
            (None, _, None) => {}
        }
    }
}

/// The field names a derived `Deserialize` struct declares (what serde hands
/// `deserialize_struct`): the list is written once, on the type.
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Names<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("names only"))
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Model;

    #[test]
    fn the_field_names_are_the_types_own() {
        assert_eq!(fields_of::<Pricing>().len(), 6);
        assert!(fields_of::<Model>().contains(&"gateway_pricing"));
        for f in Model::SEARCHED {
            assert!(fields_of::<Model>().contains(&f), "{f}");
        }
    }

    #[test]
    fn any_value_reads_as_a_model() {
        for v in ["7", "null", "[1]", "\"x\""] {
            assert_eq!(Model::read_json(v).id, "", "{v}");
        }
        let mut record = serde_json::json!({"id": 5, "pricing": {"prompt": 1, "k": 2}, "extra": true});
        let taken = Model::take(record.as_object_mut().unwrap());
        assert_eq!(taken.id, "5");
        assert_eq!(
            record,
            serde_json::json!({"id": null, "pricing": {"prompt": 1, "k": 2}, "extra": true}),
            "typed fields moved out, their places held; nested objects and unknown fields stay"
        );
        let m = Model::read_json(
            r#"{"id":5,"context_length":"12","gateway_pricing":{"a":{"prompt":1},"b":3},"pricing":"free"}"#,
        );
        assert_eq!((m.id.as_str(), m.context_length), ("5", Some(12)));
        assert_eq!(m.gateway_pricing.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(m.gateway_pricing["a"].prompt.as_deref(), Some("1"));
        assert!(m.pricing.is_none());
    }
}
