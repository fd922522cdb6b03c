//! The index of one catalog, and the plan of an answer cut from it.
//!
//! - An index is built once per content (per ETag), off the async workers: one
//!   lowercased haystack line per model (id, name, description, provider) and the
//!   byte span of each model's object in the cached JSON.
//! - A query is a SIMD substring scan of that haystack (`memchr::memmem`); an answer
//!   is assembled from the cached JSON's own bytes, never re-serialized. A page of the
//!   list is a contiguous run of those bytes: it is sent as a slice of them between a
//!   small head and tail, with no copy at all ([`crate::body::Body`]).
//! - ETags of pages and searches are derived from the entry's (a content hash) and
//!   the cut, so they cost nothing to compute and agree across instances.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::contract::{Model, Page};

/// Shorter terms match nearly everything and are refused.
pub(crate) const MIN_TERM_CHARS: usize = 2;
/// Longest term.
pub(crate) const MAX_TERM_CHARS: usize = 200;
/// Results per page unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: usize = 50;

/// One catalog, ready to be searched or cut into pages.
pub(crate) struct SearchIndex {
    /// The cached identity JSON the spans point into.
    json: Bytes,
    /// The catalog's top-level members other than `data` and the page fields
    /// (`gateway`, `pricing_unit`, `missing_gateways`, ...), as `,"k":v` JSON: every
    /// page and search answer repeats them.
    envelope: Vec<u8>,
    /// Lowercased `id name description provider_slug` per model, one per line.
    haystack: Vec<u8>,
    /// Where each model's line starts in `haystack`.
    line_starts: Vec<u32>,
    /// Each model's object in `json`.
    spans: Vec<(u32, u32)>,
}

/// A catalog body's top-level members, by name (`RawValue`s cannot go through
/// `#[serde(flatten)]`, so `data` is parsed from its member).
type Members<'a> = std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a RawValue>;

/// Members a page or search answer sets itself.
const PAGE_MEMBERS: &[&str] = &[
    "total",
    "returned",
    "offset",
    "limit",
    "has_more",
    "next_offset",
    "search",
];

/// The text a model is found by: the fields [`Model::SEARCHED`] names, in its order.
/// Lenient: a field of another type (a number, an object, from an entry written
/// before normalisation typed them) is skipped, never a reason to leave the whole
/// model out of the index.
struct Searched<'a>([Searchable<'a>; 4]);

impl<'de: 'a, 'a> Deserialize<'de> for Searched<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Searched<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a model object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found: [Searchable<'de>; 4] = Default::default();
                while let Some(Searchable(key)) = map.next_key::<Searchable<'de>>()? {
                    match Model::SEARCHED.iter().position(|f| key.as_deref() == Some(*f)) {
                        Some(i) => found[i] = map.next_value()?,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Searched(found))
            }
        }
        d.deserialize_map(V)
    }
}

/// A string (borrowed when it has no escapes), the text of a number, or nothing.
#[derive(Default)]
struct Searchable<'a>(Option<std::borrow::Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Searchable<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        use std::borrow::Cow;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Searchable<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Searchable(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Searchable(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Searchable(Some(Cow::Owned(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Searchable(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Searchable(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Searchable(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Searchable(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Searchable(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Searchable(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Searchable(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Searchable(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl SearchIndex {
    /// Build from a cached catalog body `{"data":[...],"gateway":...}`.
    pub(crate) fn build(json: Bytes) -> Result<SearchIndex, String> {
        let text = std::str::from_utf8(&json).map_err(|e| e.to_string())?;
        let members: Members = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let data: Vec<&RawValue> = serde_json::from_str(members.get("data").ok_or("not a catalog: no \"data\"")?.get())
            .map_err(|e| e.to_string())?;
        let base = text.as_ptr() as usize;
        let mut haystack = Vec::with_capacity(data.len() * 160);
        let mut line_starts = Vec::with_capacity(data.len());
        let mut spans = Vec::with_capacity(data.len());
        for raw in &data {
            let s = raw.get();
            let start = s.as_ptr() as usize - base;
            spans.push((start as u32, (start + s.len()) as u32));
            line_starts.push(haystack.len() as u32);
            if let Ok(Searched(fields)) = serde_json::from_str::<Searched>(s) {
                for v in fields.iter().filter_map(|f| f.0.as_ref()) {
                    haystack.extend(v.to_lowercase().bytes().map(|b| if b == b'\n' { b' ' } else { b }));
                    haystack.push(b' ');
                }
            }
            haystack.push(b'\n');
        }
        let mut envelope = Vec::new();
        let own = |k: &str| k == "data" || PAGE_MEMBERS.contains(&k);
        for (k, v) in members.iter().filter(|(k, _)| !own(k)) {
            envelope.push(b',');
            serde_json::to_writer(&mut envelope, k).expect("strings serialize");
            envelope.push(b':');
            envelope.extend_from_slice(v.get().as_bytes());
        }
        drop((data, members));
        // Kept for as long as the content is served: no spare capacity behind them.
        haystack.shrink_to_fit();
        envelope.shrink_to_fit();
        Ok(SearchIndex {
            json,
            envelope,
            haystack,
            line_starts,
            spans,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Model `i`'s object, as the cached JSON holds it.
    pub(crate) fn model_json(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        std::str::from_utf8(&self.json[a as usize..b as usize]).unwrap_or("{}")
    }

    /// The cached identity JSON this index points into: the view's identity body.
    pub(crate) fn json(&self) -> &Bytes {
        &self.json
    }

    /// Bytes this index keeps allocated: the cached JSON it points into, and every
    /// buffer's capacity (not its length).
    pub(super) fn heap_bytes(&self) -> usize {
        self.json.len()
            + self.envelope.capacity()
            + self.haystack.capacity()
            + self.line_starts.capacity() * 4
            + self.spans.capacity() * 8
    }

    /// Indexes of the models whose line contains `term` (already lowercased).
    pub(super) fn matches(&self, term: &str) -> Vec<u32> {
        // Lines end in '\n' and no field contains one: such a term could only match
        // across two models.
        if term.is_empty() || term.contains('\n') {
            return Vec::new();
        }
        let finder = memchr::memmem::Finder::new(term.as_bytes());
        let mut out = Vec::new();
        let mut from = 0usize;
        while let Some(pos) = finder.find(&self.haystack[from..]) {
            let at = from + pos;
            // The model whose line holds `at`.
            let model = self.line_starts.partition_point(|s| (*s as usize) <= at) - 1;
            out.push(model as u32);
            // Next search starts at the next model's line.
            from = self
                .line_starts
                .get(model + 1)
                .map_or(self.haystack.len(), |s| *s as usize);
            if from >= self.haystack.len() {
                break;
            }
        }
        out
    }

    /// The page `[offset, offset + limit)` of the models matching `term` (every
    /// model when `None`), as one JSON body (tests).
    #[cfg(test)]
    pub(crate) fn page(&self, term: Option<&str>, offset: usize, limit: Option<usize>) -> Vec<u8> {
        let hits = term.map(|t| self.matches(t));
        let plan = Plan::new(self, hits.as_deref(), term, offset, limit);
        plan.parts().iter().flat_map(|p| p.iter().copied()).collect()
    }
}

/// The start of every answer.
const HEAD: &[u8] = b"{\"data\":[";

/// An answer's JSON, planned: its size is known before anything is copied.
pub(super) struct Plan<'a> {
    index: &'a SearchIndex,
    models: Models<'a>,
    /// `]`, the catalog's other members, `search`, the page fields, `}`.
    tail: Vec<u8>,
}

/// Which models an answer holds.
enum Models<'a> {
    /// A run of the list: contiguous in the cached JSON.
    Run(std::ops::Range<usize>),
    /// Models picked by a search.
    Picked(&'a [u32]),
}

impl<'a> Plan<'a> {
    pub(super) fn new(
        index: &'a SearchIndex,
        hits: Option<&'a [u32]>,
        term: Option<&str>,
        offset: usize,
        limit: Option<usize>,
    ) -> Self {
        let page = Page::of(hits.map_or(index.len(), <[u32]>::len), offset, limit);
        let models = match hits {
            None => Models::Run(page.range()),
            Some(h) => Models::Picked(&h[page.range()]),
        };
        let mut tail = Vec::with_capacity(index.envelope.len() + 160);
        tail.push(b']');
        tail.extend_from_slice(&index.envelope);
        if let Some(term) = term {
            tail.extend_from_slice(b",\"search\":");
            serde_json::to_writer(&mut tail, term).expect("strings serialize");
        }
        page.write_members(&mut tail);
        tail.push(b'}');
        Plan { index, models, tail }
    }

    /// The byte range of a run of models in the cached JSON (commas between them included).
    fn run_bytes(&self, run: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        if run.is_empty() {
            return 0..0;
        }
        self.index.spans[run.start].0 as usize..self.index.spans[run.end - 1].1 as usize
    }

    pub(super) fn len(&self) -> usize {
        let models = match &self.models {
            Models::Run(r) => self.run_bytes(r).len(),
            Models::Picked(p) => p
                .iter()
                .map(|&i| (self.index.spans[i as usize].1 - self.index.spans[i as usize].0) as usize + 1)
                .sum::<usize>()
                .saturating_sub(1),
        };
        HEAD.len() + models + self.tail.len()
    }

    /// Whether the answer is a slice of the cached JSON (no copy to send it).
    pub(super) fn is_slice(&self) -> bool {
        matches!(self.models, Models::Run(_))
    }

    /// The answer: a run is the cached bytes themselves between head and tail; picked
    /// models are copied, once, into one buffer.
    pub(super) fn parts(&self) -> Vec<Bytes> {
        match &self.models {
            Models::Run(r) => vec![
                Bytes::from_static(HEAD),
                self.index.json.slice(self.run_bytes(r)),
                Bytes::copy_from_slice(&self.tail),
            ],
            Models::Picked(picked) => {
                let mut out = Vec::with_capacity(self.len());
                out.extend_from_slice(HEAD);
                for (n, &i) in picked.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    let (a, b) = self.index.spans[i as usize];
                    out.extend_from_slice(&self.index.json[a as usize..b as usize]);
                }
                out.extend_from_slice(&self.tail);
                vec![Bytes::from(out)]
            }
        }
    }
}

/// An answer's ETag: the entry's (a hash of its content) and the cut determine the
/// bytes, so they determine the tag: `"p-…"` for a page, `"s-…"` for a search.
pub(crate) fn answer_etag(entry_etag: &str, term: Option<&str>, offset: usize, limit: Option<usize>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(entry_etag.as_bytes());
    h.update(&[0]);
    h.update(term.unwrap_or("").as_bytes());
    h.update(&[0]);
    h.update(&(offset as u64).to_le_bytes());
    h.update(&limit.map_or(u64::MAX, |l| l as u64).to_le_bytes());
    let prefix = if term.is_some() { "s" } else { "p" };
    format!("\"{prefix}-{:032x}\"", h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> SearchIndex {
        SearchIndex::build(Bytes::from_static(
            br#"{"data":[{"id":"meta-llama/Llama-3","name":"Llama 3","provider_slug":"meta"},{"id":"x/mistral","name":"Mistral","description":"not a llama"},{"id":"q","name":7}],"gateway":"all","total":3}"#,
        ))
        .unwrap()
    }

    #[test]
    fn finds_each_model_once_and_pages() {
        let i = index();
        let v: serde_json::Value = serde_json::from_slice(&i.page(Some("llama"), 0, Some(50))).unwrap();
        assert_eq!(v["total"], 2, "a model matching twice counts once");
        assert_eq!(v["data"][0]["id"], "meta-llama/Llama-3");
        assert_eq!(v["data"][1]["id"], "x/mistral");
        assert_eq!(v["gateway"], "all");
        let p: serde_json::Value = serde_json::from_slice(&i.page(Some("llama"), 1, Some(1))).unwrap();
        assert_eq!(p["data"].as_array().unwrap().len(), 1);
        assert_eq!((p["offset"].as_u64(), p["has_more"].as_bool()), (Some(1), Some(false)));
        let first: serde_json::Value = serde_json::from_slice(&i.page(Some("llama"), 0, Some(1))).unwrap();
        assert_eq!(
            (first["has_more"].as_bool(), first["next_offset"].as_u64()),
            (Some(true), Some(1))
        );
        let none: serde_json::Value = serde_json::from_slice(&i.page(Some("zzq"), 0, Some(50))).unwrap();
        assert_eq!(none["total"], 0);
    }

    #[test]
    fn list_pages_keep_the_catalogs_members_and_set_their_own() {
        let i = SearchIndex::build(Bytes::from_static(
            br#"{"data":[{"id":"a"},{"id":"b"},{"id":"c"}],"gateway":"all","pricing_unit":"usd_per_token","total":3,"returned":3,"offset":0,"limit":null,"has_more":false,"next_offset":null,"missing_gateways":["x"]}"#,
        ))
        .unwrap();
        let p: serde_json::Value = serde_json::from_slice(&i.page(None, 1, Some(1))).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"data":[{"id":"b"}],"gateway":"all","pricing_unit":"usd_per_token","missing_gateways":["x"],
                "total":3,"returned":1,"offset":1,"limit":1,"has_more":true,"next_offset":2})
        );
        let rest: serde_json::Value = serde_json::from_slice(&i.page(None, 1, None)).unwrap();
        assert_eq!(
            (rest["returned"].as_u64(), rest["has_more"].as_bool()),
            (Some(2), Some(false))
        );
        assert!(rest.get("search").is_none());
    }

    #[test]
    fn models_with_odd_field_types_are_still_found() {
        let i = SearchIndex::build(Bytes::from_static(
            br#"{"data":[{"id":"findme-1","provider_slug":{"toString":0}},{"id":"findme-2","description":12345},{"id":"findme-3","name":["x"]},{"id":"findme-4"}],"gateway":"all"}"#,
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&i.page(Some("findme"), 0, Some(50))).unwrap();
        assert_eq!(v["total"], 4, "every model is indexed");
        let v: serde_json::Value = serde_json::from_slice(&i.page(Some("12345"), 0, Some(50))).unwrap();
        assert_eq!(v["data"][0]["id"], "findme-2", "a number is searchable as its text");
    }

    #[test]
    fn a_term_never_matches_across_two_models() {
        let i = index();
        let v: serde_json::Value = serde_json::from_slice(&i.page(Some("meta \nx/mis"), 0, Some(50))).unwrap();
        assert_eq!(v["total"], 0);
    }
}
