//! `search` over a cached catalog, cheap enough to leave unauthenticated.
//!
//! The first version parsed the whole merged JSON into maps on the async worker for
//! every request (~120 ms for `all`), and a single client looping on it slowed every
//! cached read of the instance. Now:
//! - an index is built once per entry (per ETag), off the async workers: one
//!   lowercased haystack line per model (id, name, description, provider) and the byte
//!   span of each model's object in the cached JSON;
//! - a query is a SIMD substring scan of that haystack (`memchr::memmem`), and the
//!   answer is assembled from the cached JSON's own bytes (no re-serialization);
//! - the cost is bounded: a minimum term length, a page of at most `MAX_LIMIT` results
//!   with the catalog API's page fields, one search computing at a time per instance
//!   (a cached read always has a core), and recent answers are kept by
//!   (ETag, term, page, encoding);
//! - the answer is compressed like the cached list (br or gzip, when accepted).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::contract::Page;
use crate::entry::{Encoding, Entry};

/// Shorter terms match nearly everything and are refused.
pub const MIN_TERM_CHARS: usize = 2;
/// Longest term.
pub const MAX_TERM_CHARS: usize = 200;
/// Results per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// Indexes kept (one per cached key) and answers kept, per instance.
const MAX_INDEXES: usize = 64;
const MAX_ANSWERS: usize = 512;

/// One catalog, ready to be searched or cut into pages.
pub struct SearchIndex {
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

/// The fields a model is found by. Lenient: a field of another type (a number, an
/// object, from an entry written before normalisation typed them) is skipped, never
/// a reason to leave the whole model out of the index.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow)]
    id: Searchable<'a>,
    #[serde(default, borrow)]
    name: Searchable<'a>,
    #[serde(default, borrow)]
    description: Searchable<'a>,
    #[serde(default, borrow)]
    provider_slug: Searchable<'a>,
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
    pub fn build(json: Bytes) -> Result<SearchIndex, String> {
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
            if let Ok(f) = serde_json::from_str::<Fields>(s) {
                for v in [&f.id.0, &f.name.0, &f.description.0, &f.provider_slug.0]
                    .into_iter()
                    .flatten()
                {
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
        Ok(SearchIndex {
            json,
            envelope,
            haystack,
            line_starts,
            spans,
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Indexes of the models whose line contains `term` (already lowercased).
    fn matches(&self, term: &str) -> Vec<usize> {
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
            out.push(model);
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
    /// model when `None`), as the JSON body: the models' own bytes, the catalog's
    /// other members, and the catalog API's page fields.
    #[cfg(test)]
    pub fn page(&self, term: Option<&str>, offset: usize, limit: Option<usize>) -> Vec<u8> {
        match term {
            Some(t) => self.page_of(&self.matches(t), term, offset, limit),
            None => self.page_of(&(0..self.len()).collect::<Vec<_>>(), None, offset, limit),
        }
    }

    fn page_of(&self, hits: &[usize], term: Option<&str>, offset: usize, limit: Option<usize>) -> Vec<u8> {
        let page = Page::of(hits.len(), offset, limit);
        let models = &hits[page.range()];
        let size: usize = models
            .iter()
            .map(|&i| (self.spans[i].1 - self.spans[i].0) as usize + 1)
            .sum();
        let mut out = Vec::with_capacity(size + self.envelope.len() + 256);
        out.extend_from_slice(b"{\"data\":[");
        for (n, &i) in models.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let (a, b) = self.spans[i];
            out.extend_from_slice(&self.json[a as usize..b as usize]);
        }
        out.push(b']');
        out.extend_from_slice(&self.envelope);
        if let Some(term) = term {
            out.extend_from_slice(b",\"search\":");
            serde_json::to_writer(&mut out, term).expect("strings serialize");
        }
        page.write_members(&mut out);
        out.push(b'}');
        out
    }
}

/// A compressed answer, ready to send.
#[derive(Clone)]
pub struct Answer {
    pub body: Bytes,
    pub encoding: Encoding,
    /// Strong validator of the answer's content (send it per encoding, as the list does).
    pub etag: String,
}

/// (ETag, term): one search of one catalog (no term: its whole list).
type TermKey = (String, Option<String>);
/// (ETag, term, offset, limit, encoding): one answer.
type AnswerKey = (String, Option<String>, usize, Option<usize>, Encoding);

/// Per-instance search state: indexes by ETag, recent match lists and answers, and
/// the one permit.
pub struct Searcher {
    indexes: Mutex<HashMap<String, Arc<SearchIndex>>>,
    /// (ETag, term) → matching models: other pages of the same search reuse the scan.
    hits: Mutex<HashMap<TermKey, Arc<Vec<usize>>>>,
    answers: Mutex<HashMap<AnswerKey, Answer>>,
    /// One search computes at a time per instance: cached reads keep a core.
    permit: tokio::sync::Semaphore,
}

impl Default for Searcher {
    fn default() -> Self {
        Searcher {
            indexes: Mutex::default(),
            hits: Mutex::default(),
            answers: Mutex::default(),
            permit: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Searcher {
    /// A page of `entry`'s models matching `term` (lowercased, length-checked by
    /// the caller), or of all its models when `term` is `None` (a page of the list:
    /// cut from the cached entry, no key of its own in the store).
    pub async fn search(
        &self,
        entry: &Arc<Entry>,
        term: Option<&str>,
        offset: usize,
        limit: Option<usize>,
        encoding: Encoding,
    ) -> Result<Answer, String> {
        let key = (
            entry.meta.etag.clone(),
            term.map(str::to_string),
            offset,
            limit,
            encoding,
        );
        if let Some(a) = self.answers.lock().get(&key) {
            return Ok(a.clone());
        }
        let _permit = self.permit.acquire().await.map_err(|e| e.to_string())?;
        if let Some(a) = self.answers.lock().get(&key) {
            return Ok(a.clone());
        }
        let index = self.indexes.lock().get(&entry.meta.etag).cloned();
        let hits_key = (key.0.clone(), key.1.clone());
        let hits = self.hits.lock().get(&hits_key).cloned();
        let (entry, term_owned) = (entry.clone(), key.1.clone());
        let (index, hits, answer) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let index = match index {
                Some(i) => i,
                None => Arc::new(SearchIndex::build(entry.identity().map_err(|e| e.to_string())?)?),
            };
            let hits = hits.unwrap_or_else(|| {
                Arc::new(match &term_owned {
                    Some(t) => index.matches(t),
                    None => (0..index.len()).collect(),
                })
            });
            let json = index.page_of(&hits, term_owned.as_deref(), offset, limit);
            let prefix = if term_owned.is_some() { "s" } else { "p" };
            let etag = format!("\"{prefix}-{:016x}\"", xxhash_rust::xxh3::xxh3_64(&json));
            let body = match encoding {
                Encoding::Identity => Bytes::from(json),
                Encoding::Gzip => fast_gzip(&json),
                Encoding::Brotli => fast_brotli(&json),
            };
            Ok((index, hits, Answer { body, encoding, etag }))
        })
        .await
        .map_err(|e| e.to_string())??;
        {
            let mut indexes = self.indexes.lock();
            if indexes.len() >= MAX_INDEXES {
                indexes.clear();
            }
            indexes.insert(key.0.clone(), index);
        }
        {
            let mut cached = self.hits.lock();
            if cached.len() >= MAX_ANSWERS {
                cached.clear();
            }
            cached.insert(hits_key, hits);
        }
        let mut answers = self.answers.lock();
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert(key, answer.clone());
        Ok(answer)
    }
}

/// Per-request compression favours speed over size (the stored bodies use the slow,
/// small settings once per entry).
fn fast_gzip(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    enc.write_all(data).expect("in-memory write");
    Bytes::from(enc.finish().expect("in-memory write"))
}

fn fast_brotli(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() / 4);
    let params = brotli::enc::BrotliEncoderParams {
        quality: 3,
        lgwin: 20,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).expect("in-memory write");
    Bytes::from(out)
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
