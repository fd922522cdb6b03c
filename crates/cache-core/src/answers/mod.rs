//! Answers: everything an instance makes from a cached catalog for a request, made
//! once, kept within one byte budget, and made off the async workers.
//!
//! What is made: a catalog's search index (and so its identity body), its bodies in
//! codings that are not stored (gzip), the models page's document, search matches,
//! pages and search answers, other pages of the models page. Every one of them:
//!
//! - **is kept by content**: keyed by the entry's ETag (a hash of its content), never
//!   by the entry object, so a refresh that only moves the clock keeps them;
//! - **is counted** in `ANSWER_CACHE_MAX_BYTES` by what it really holds on the heap
//!   (every buffer's capacity, `Arc` headers) plus what the map adds per entry (slots,
//!   the key twice): [`Kept::heap_bytes`], [`crate::budget::ByteLru`];
//! - **is made once** (single flight): identical concurrent requests wait for the
//!   one making it, and the maker looks again once it holds the permit (an identical
//!   request may have just stored it);
//! - **holds the CPU permit while it is made**: one index build, scan, render or
//!   compression at a time per instance, so cached reads keep a core. The permit is
//!   taken before the work and moved into the blocking task: a request that goes away
//!   does not free it while the work goes on.
//!
//! What a view needs to be served at all (its index, its derived bodies, the models
//! page's document) is *pinned*: one per view, replaced when the content changes,
//! counted, never evicted. A budget smaller than an index is then no cliff (the index
//! is not built and thrown away per request); what is pinned is bounded by the views
//! (the configured gateways and `all`), not by the URLs. Everything else is evicted
//! least recently used first; an answer above 1/16 of the budget is served, not kept.

mod index;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

pub(crate) use index::{DEFAULT_LIMIT, MAX_TERM_CHARS, MIN_TERM_CHARS, SearchIndex, answer_etag};

use crate::body::Body;
use crate::budget::{ByteLru, HeapSize};
use crate::encoding::{self, Effort, Encoding, Rendered};
use crate::entry::Entry;
use index::Plan;

/// An answer whose JSON is larger than this takes one of [`LARGE_AT_ONCE`] permits
/// while it is made and, unless it is kept, until it is sent.
pub(crate) const LARGE_ANSWER_BYTES: usize = 1 << 20;
/// Large answers alive at once per instance.
pub(crate) const LARGE_AT_ONCE: usize = 3;

/// An answer, ready to send.
pub(crate) struct Answer {
    /// Empty for a HEAD request.
    pub body: Body,
    /// The body's length when known without making it (a HEAD of a compressed
    /// answer not kept has none: its length is known only by compressing it).
    pub len: Option<usize>,
    pub encoding: Encoding,
}

/// What is kept, and under which key. The pinned kinds are keyed by their view (one
/// each, replaced when the view's content changes); the others by content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// Pinned: a view's index (its identity body included).
    Index(Arc<str>),
    /// Pinned: a view's body in a coding that is not stored.
    Body(Arc<str>, Encoding),
    /// Pinned: the models page's document for a view.
    Document(Arc<str>),
    /// (ETag, term): the matching models, shared by every page of one search.
    Hits(String, String),
    /// (ETag, term, offset, limit, encoding): a page or search answer.
    Answer(String, Option<String>, usize, Option<usize>, Encoding),
    /// (page ETag, encoding): another page of the models page.
    Html(String, Encoding),
}

impl Key {
    fn pinned(&self) -> bool {
        matches!(self, Key::Index(_) | Key::Body(..) | Key::Document(_))
    }
}

impl HeapSize for Key {
    fn heap_bytes(&self) -> usize {
        // An `Arc<str>` is shared by its view's keys: its header and text, once.
        match self {
            Key::Index(v) | Key::Body(v, _) | Key::Document(v) => 16 + v.len(),
            Key::Hits(e, t) => e.capacity() + t.capacity(),
            Key::Answer(e, t, ..) => e.capacity() + t.as_ref().map_or(0, String::capacity),
            Key::Html(e, _) => e.capacity(),
        }
    }
}

/// A kept value.
#[derive(Clone)]
enum Kept {
    Index(Arc<SearchIndex>),
    Hits(Arc<Vec<u32>>),
    Bytes(Bytes),
    Document(Arc<Rendered>),
}

/// An `Arc`'s header (two counts).
const ARC_HEADER: usize = 16;
/// A `Bytes` allocation's shared header.
const BYTES_HEADER: usize = 32;

impl Kept {
    /// What the value holds on the heap: every buffer's capacity, `Arc` headers.
    fn heap_bytes(&self) -> usize {
        match self {
            Kept::Index(i) => ARC_HEADER + std::mem::size_of::<SearchIndex>() + i.heap_bytes(),
            Kept::Hits(h) => ARC_HEADER + std::mem::size_of::<Vec<u32>>() + h.capacity() * 4,
            Kept::Bytes(b) => BYTES_HEADER + b.len(),
            Kept::Document(d) => {
                ARC_HEADER
                    + std::mem::size_of::<Rendered>()
                    + 3 * BYTES_HEADER
                    + d.identity.len()
                    + d.gzip.len()
                    + d.br.len()
            }
        }
    }
}

/// A kept value and the content it was made for.
#[derive(Clone)]
struct Made {
    etag: Arc<str>,
    kept: Kept,
}

type Making = BoxFuture<'static, Result<Kept, String>>;
type Flight = Shared<Making>;
/// Flights by (key, ETag): a number (so that a flight removes only itself) and a
/// weak handle.
type Flights = Arc<Mutex<HashMap<(Key, Arc<str>), (u64, WeakShared<Making>)>>>;

/// A large answer's permit and, once made, its bytes: shared by every body of that
/// answer, gone with the last (so are the permit and the buffer).
struct LargeShare {
    _permit: tokio::sync::OwnedSemaphorePermit,
    made: tokio::sync::OnceCell<Kept>,
}

type WeakShare = std::sync::Weak<LargeShare>;

/// The values kept, under one budget.
type Store = Arc<Mutex<ByteLru<Key, Made>>>;

/// Per-instance answers: what is kept, the flights making them, the permits.
pub(crate) struct Answers {
    kept: Store,
    /// Values being made, by (key, ETag): a weak handle, so that a flight every
    /// asker left is dropped (its work, if started, still ends and is kept).
    flights: Flights,
    next_flight: AtomicU64,
    /// An answer larger than this is served without being kept.
    keep_max: usize,
    /// One index build, scan, render or compression at a time: cached reads keep a core.
    compute: Arc<Semaphore>,
    large: Arc<Semaphore>,
    /// The large-answer permit each large answer being made or sent holds, by (key,
    /// ETag): identical requests share it, and so the one make and its one buffer,
    /// instead of queueing for permits of their own and making it again once the
    /// first is sent (an answer above the keep limit is not kept). Weak: the permit
    /// goes with the last body that holds it.
    large_shared: Mutex<HashMap<(Key, Arc<str>), WeakShare>>,
}

impl Answers {
    /// Keep at most `budget` bytes per instance (`ANSWER_CACHE_MAX_BYTES`), pinned
    /// values aside when they alone exceed it.
    pub(crate) fn new(budget: usize) -> Self {
        Answers {
            kept: Arc::new(Mutex::new(ByteLru::new(budget))),
            flights: Arc::default(),
            next_flight: AtomicU64::new(0),
            keep_max: budget / 16,
            compute: Arc::new(Semaphore::new(1)),
            large: Arc::new(Semaphore::new(LARGE_AT_ONCE)),
            large_shared: Mutex::default(),
        }
    }

    /// Bytes kept now.
    #[cfg(test)]
    pub(crate) fn kept_bytes(&self) -> usize {
        self.kept.lock().used()
    }

    /// The budget, the bytes kept, and of those the pinned ones (what every view
    /// needs to be served at all: bounded by the configured views, not the budget).
    pub(crate) fn memory(&self) -> (usize, usize, usize) {
        let kept = self.kept.lock();
        (kept.budget(), kept.used(), kept.pinned())
    }

    /// Whether the CPU permit is free now (tests).
    #[cfg(test)]
    pub(crate) fn computing(&self) -> bool {
        self.compute.available_permits() == 0
    }

    /// The index of `view`'s `entry`, built once per content and pinned.
    pub(crate) async fn index(&self, view: &str, entry: &Arc<Entry>) -> Result<Arc<SearchIndex>, String> {
        let owned = entry.clone();
        let made = self
            .made(Key::Index(view.into()), &entry.meta.etag, move || {
                let json = owned.identity().map_err(|e| e.to_string())?;
                SearchIndex::build(json).map(|i| Kept::Index(Arc::new(i)))
            })
            .await?;
        match made {
            Kept::Index(i) => Ok(i),
            _ => Err("not an index".into()),
        }
    }

    /// `view`'s `entry` in `encoding`: the stored body, or one derived once per
    /// content (identity: the index's JSON; gzip: compressed from it) and pinned.
    pub(crate) async fn body(&self, view: &str, entry: &Arc<Entry>, encoding: Encoding) -> Result<Bytes, String> {
        if let Some(b) = entry.body(encoding) {
            return Ok(b.clone());
        }
        let index = self.index(view, entry).await?;
        if encoding == Encoding::Identity {
            return Ok(index.json().clone());
        }
        let made = self
            .made(Key::Body(view.into(), encoding), &entry.meta.etag, move || {
                Ok(Kept::Bytes(encoding::stored(index.json(), encoding)))
            })
            .await?;
        match made {
            Kept::Bytes(b) => Ok(b),
            _ => Err("not a body".into()),
        }
    }

    /// The models of `index` (of the content `etag`) matching `term`, scanned once.
    pub(crate) async fn hits(&self, index: &Arc<SearchIndex>, etag: &str, term: &str) -> Result<Arc<Vec<u32>>, String> {
        let (index, owned) = (index.clone(), term.to_string());
        let made = self
            .made(Key::Hits(etag.to_string(), term.to_string()), etag, move || {
                let mut hits = index.matches(&owned);
                hits.shrink_to_fit();
                Ok(Kept::Hits(Arc::new(hits)))
            })
            .await?;
        match made {
            Kept::Hits(h) => Ok(h),
            _ => Err("not a match list".into()),
        }
    }

    /// The models page's document for `view`, made by `render` once per page ETag and
    /// pinned (the one page every visitor asks for).
    pub(crate) async fn document(
        &self,
        view: &str,
        page_etag: &str,
        render: impl FnOnce() -> Result<String, String> + Send + 'static,
    ) -> Result<Arc<Rendered>, String> {
        let made = self
            .made(Key::Document(view.into()), page_etag, move || {
                Ok(Kept::Document(Arc::new(Rendered::new(render()?))))
            })
            .await?;
        match made {
            Kept::Document(d) => Ok(d),
            _ => Err("not a document".into()),
        }
    }

    /// Another page of the models page (a URL a client picks), made by `render` once
    /// per page ETag and encoding, compressed fast, kept like any answer.
    pub(crate) async fn html(
        &self,
        page_etag: &str,
        encoding: Encoding,
        render: impl FnOnce() -> Result<String, String> + Send + 'static,
    ) -> Result<Bytes, String> {
        let made = self
            .made(Key::Html(page_etag.to_string(), encoding), page_etag, move || {
                let html = render()?;
                Ok(Kept::Bytes(encoding::compress(
                    &[html.as_bytes()],
                    encoding,
                    Effort::Fast,
                )))
            })
            .await?;
        match made {
            Kept::Bytes(b) => Ok(b),
            _ => Err("not a page".into()),
        }
    }

    /// A page of `view`'s `entry` matching `term` (lowercased, length-checked by the
    /// caller), or of all its models when `term` is `None` (a page of the list: cut
    /// from the cached entry, no key of its own in the store).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn answer(
        &self,
        view: &str,
        entry: &Arc<Entry>,
        term: Option<&str>,
        offset: usize,
        limit: Option<usize>,
        encoding: Encoding,
        head_only: bool,
    ) -> Result<Answer, String> {
        let etag = entry.meta.etag.as_str();
        let key = Key::Answer(etag.to_string(), term.map(str::to_string), offset, limit, encoding);
        if let Some(Kept::Bytes(body)) = self.kept_now(&key, etag) {
            let len = Some(body.len());
            let body = if head_only { Body::empty() } else { Body::from(body) };
            return Ok(Answer { body, len, encoding });
        }
        let index = self.index(view, entry).await?;
        let hits = match term {
            Some(t) => Some(self.hits(&index, etag, t).await?),
            None => None,
        };
        let size = Plan::new(&index, hits.as_deref().map(Vec::as_slice), term, offset, limit).len();
        let answer = |body: Body, len: Option<usize>| Answer { body, len, encoding };
        match (head_only, encoding) {
            // A HEAD makes nothing: the identity length is planned, a compressed one unknown.
            (true, Encoding::Identity) => return Ok(answer(Body::empty(), Some(size))),
            (true, _) => return Ok(answer(Body::empty(), None)),
            // A page of the list, uncompressed: the cached bytes themselves.
            (false, Encoding::Identity) if hits.is_none() => {
                let body = Body::from_parts(Plan::new(&index, None, term, offset, limit).parts());
                return Ok(answer(body, Some(size)));
            }
            _ => {}
        }
        let large = match size > LARGE_ANSWER_BYTES {
            true => Some(self.large_share(&key, etag).await?),
            false => None,
        };
        let term = term.map(str::to_string);
        let make = move || {
            let plan = Plan::new(
                &index,
                hits.as_deref().map(Vec::as_slice),
                term.as_deref(),
                offset,
                limit,
            );
            debug_assert!(!plan.is_slice() || encoding != Encoding::Identity);
            let parts = plan.parts();
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
            Ok(Kept::Bytes(encoding::compress(&parts, encoding, Effort::Fast)))
        };
        // A large answer is made once per share: whoever holds it first makes it (through
        // the flight), the others wait for that, and a request that comes after the make
        // ended, while the answer is still being sent, takes its bytes.
        let made = match &large {
            Some(share) => share.made.get_or_try_init(|| self.made(key, etag, make)).await?.clone(),
            None => self.made(key, etag, make).await?,
        };
        let Kept::Bytes(made) = made else {
            return Err("not an answer".into());
        };
        let len = Some(made.len());
        Ok(answer(Body::from(made).with_shared(large), len))
    }

    /// The large-answer permit for `key` at `etag`: a share of the one an identical
    /// answer holds now (with its bytes once made: a request that comes after the
    /// make ended, while the answer is still being sent, needs no make of its own), or
    /// a new one (waiting while [`LARGE_AT_ONCE`] are out).
    async fn large_share(&self, key: &Key, etag: &str) -> Result<Arc<LargeShare>, String> {
        let id = (key.clone(), Arc::<str>::from(etag));
        if let Some(shared) = self.large_shared.lock().get(&id).and_then(std::sync::Weak::upgrade) {
            return Ok(shared);
        }
        let permit = self.large.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let mut shared = self.large_shared.lock();
        // Another identical request may have got one while this one waited.
        if let Some(theirs) = shared.get(&id).and_then(std::sync::Weak::upgrade) {
            return Ok(theirs);
        }
        if shared.len() >= 64 {
            shared.retain(|_, w| w.strong_count() > 0);
        }
        let share = Arc::new(LargeShare {
            _permit: permit,
            made: tokio::sync::OnceCell::new(),
        });
        shared.insert(id, Arc::downgrade(&share));
        Ok(share)
    }

    /// What is kept under `key` for the content `etag`.
    fn kept_now(&self, key: &Key, etag: &str) -> Option<Kept> {
        kept_now(&self.kept, key, etag)
    }

    /// The value under `key` for the content `etag`: kept, or made by `make` once
    /// (single flight), on the blocking pool, under the CPU permit.
    async fn made<F>(&self, key: Key, etag: &str, make: F) -> Result<Kept, String>
    where
        F: FnOnce() -> Result<Kept, String> + Send + 'static,
    {
        if let Some(kept) = self.kept_now(&key, etag) {
            return Ok(kept);
        }
        self.flight(key, etag, make).await
    }

    /// The flight making `key` for `etag`: the one already under way, or a new one.
    fn flight<F>(&self, key: Key, etag: &str, make: F) -> Flight
    where
        F: FnOnce() -> Result<Kept, String> + Send + 'static,
    {
        let etag: Arc<str> = etag.into();
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(&(key.clone(), etag.clone())).and_then(|(_, w)| w.upgrade()) {
            return flight;
        }
        // Flights every asker left (before their work started) leave a dead handle.
        if flights.len() >= 64 {
            flights.retain(|_, (_, w)| w.upgrade().is_some());
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (kept, all, compute, keep_max) = (
            self.kept.clone(),
            self.flights.clone(),
            self.compute.clone(),
            self.keep_max,
        );
        let (k, e) = (key.clone(), etag.clone());
        let work = async move {
            let permit = compute.acquire_owned().await.map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || {
                // Held until the work ends, whoever still waits for it.
                let _permit = permit;
                let result = make_and_keep(&kept, &k, &e, keep_max, make);
                let mut flights = all.lock();
                if flights.get(&(k.clone(), e.clone())).is_some_and(|(fid, _)| *fid == id) {
                    flights.remove(&(k, e));
                }
                result
            })
            .await
            .map_err(|e| format!("making an answer failed: {e}"))?
        };
        let flight = work.boxed().shared();
        if let Some(weak) = flight.downgrade() {
            flights.insert((key, etag), (id, weak));
        }
        flight
    }
}

/// What `kept` holds under `key` for the content `etag`.
fn kept_now(kept: &Store, key: &Key, etag: &str) -> Option<Kept> {
    kept.lock().get(key).filter(|m| &*m.etag == etag).map(|m| m.kept)
}

/// Make the value (unless a flight that ended meanwhile kept it) and keep it: pinned,
/// or within the budget when at most `keep_max`.
fn make_and_keep<F>(kept: &Store, key: &Key, etag: &Arc<str>, keep_max: usize, make: F) -> Result<Kept, String>
where
    F: FnOnce() -> Result<Kept, String>,
{
    if let Some(k) = kept_now(kept, key, etag) {
        return Ok(k);
    }
    let made = make()?;
    let weight = made.heap_bytes();
    let value = Made {
        etag: etag.clone(),
        kept: made.clone(),
    };
    let mut kept = kept.lock();
    if key.pinned() {
        kept.pin(key.clone(), value, weight);
    } else if weight <= keep_max {
        kept.insert(key.clone(), value, weight);
    }
    Ok(made)
}

#[cfg(test)]
mod tests;
