//! The models page as an operation: which models a page shows, its validator, and
//! its HTML made once and kept in the answers layer. `crate::page` renders it; the
//! page route only translates HTTP.

use bytes::Bytes;

use crate::app::{App, RequestContext};
use crate::encoding::Encoding;
use crate::entry::Entry;
use crate::page::{ROWS, Slice, View};
use crate::swr::{CacheError, Lookup};

/// What a page request asks for (validated by the route).
pub(crate) struct PageAsk {
    /// `""` for the merged view, else a configured gateway's id.
    pub gateway: String,
    /// Lowercased, of a valid length.
    pub search: Option<String>,
    pub offset: usize,
    /// `fragment=rows`: the rows only.
    pub fragment: bool,
    /// `new=7d`: only models first seen within this many days.
    pub new_days: Option<u32>,
    /// Rows of models first seen at or after this (unix ms, a whole hour: pages are
    /// re-rendered at most hourly as models age) carry the "new" mark (and `new_days`
    /// counts from it). Set by [`PageAsk::marks_since`].
    pub marks_since_ms: u64,
}

/// How long a model is "new" on the page.
pub(crate) const NEW_FOR_DAYS: u32 = 7;

impl PageAsk {
    /// The hour from which a model first seen `days` ago is new, as of `now_ms`.
    pub(crate) fn marks_since(now_ms: u64, days: u32) -> u64 {
        const HOUR: u64 = 3_600_000;
        (now_ms.saturating_sub(days as u64 * 24 * HOUR) / HOUR) * HOUR
    }
}

/// A page of a catalog read for a request: what its headers say, and its HTML on
/// demand ([`PageView::body`]).
pub(crate) struct PageView {
    pub lookup: Lookup,
    /// The page's validator.
    pub etag: String,
    ask: PageAsk,
    /// A gateway's page: the merged view's size it shows ("11 of 3,579 models").
    all_total: Option<usize>,
}

/// The read behind a page.
pub(super) async fn view(ctx: &RequestContext, ask: PageAsk) -> Result<PageView, CacheError> {
    let lookup = match ctx.app.gateway(&ask.gateway).cloned() {
        Some(gw) if !ask.gateway.is_empty() => ctx.read_gateway(&gw).await?,
        _ => ctx.read_all().await?,
    };
    // A gateway's page shows the merged view's size too, so its validator covers it
    // (issue 39: "11 of 11" rendered before `all` existed kept its ETag after).
    let all_total = match ask.gateway.is_empty() {
        true => None,
        false => Some(
            ctx.app
                .cache
                .peek_meta(ctx.app.all_key())
                .await
                .map_or(0, |m| m.item_count as usize),
        ),
    };
    let etag = page_etag(&lookup.entry, &ask, all_total);
    Ok(PageView {
        lookup,
        etag,
        ask,
        all_total,
    })
}

impl PageView {
    /// `/models` itself: the merged view's first screen, the same for every visitor.
    pub(crate) fn is_shared(&self) -> bool {
        let ask = &self.ask;
        ask.gateway.is_empty() && ask.search.is_none() && ask.offset == 0 && !ask.fragment && ask.new_days.is_none()
    }

    /// The page's HTML in `encoding`: rendered and compressed off the async workers,
    /// under the CPU permit, once per page ETag (identical requests wait for the one
    /// render). The shared document is pinned in every encoding; other pages (URLs a
    /// client picks) are kept like any answer, compressed fast in the one encoding
    /// asked, as search answers are.
    pub(crate) async fn body(&self, app: &App, encoding: Encoding) -> Result<Bytes, String> {
        let render = prepare(app, &self.lookup, &self.ask, self.all_total).await?;
        match self.is_shared() {
            true => app
                .answers
                .document("all", &self.etag, render)
                .await
                .map(|page| page.encoded(encoding)),
            false => app.answers.html(&self.etag, encoding, render).await,
        }
    }
}

/// The page's validator: the entry's content and clock (the page says "data as of"),
/// what was asked, and on a gateway's page the merged view's size it shows.
fn page_etag(entry: &Entry, ask: &PageAsk, all_total: Option<usize>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(entry.meta.etag.as_bytes());
    h.update(&entry.meta.clock.fetched_at_ms.to_le_bytes());
    h.update(ask.gateway.as_bytes());
    h.update(&[0]);
    h.update(ask.search.as_deref().unwrap_or("").as_bytes());
    h.update(&(ask.offset as u64).to_le_bytes());
    h.update(&[ask.fragment as u8]);
    h.update(&ask.new_days.map_or(u64::MAX, u64::from).to_le_bytes());
    h.update(&ask.marks_since_ms.to_le_bytes());
    h.update(&(all_total.map_or(u64::MAX, |t| t as u64)).to_le_bytes());
    format!("\"h-{:032x}\"", h.digest128())
}

/// What rendering `ask`'s page of `lookup`'s catalog needs, gathered here (the index
/// and the matches, each made once), and the render itself, to run off the async
/// workers.
async fn prepare(
    app: &App,
    lookup: &Lookup,
    ask: &PageAsk,
    all_total: Option<usize>,
) -> Result<impl FnOnce() -> Result<String, String> + Send + 'static, String> {
    let view_name = if ask.gateway.is_empty() {
        "all"
    } else {
        ask.gateway.as_str()
    };
    let index = app.answers.index(view_name, &lookup.entry).await?;
    let hits = match &ask.search {
        Some(term) => Some(app.answers.hits(&index, &lookup.entry.meta.etag, term).await?),
        None => None,
    };
    // The size the validator covers; a gateway's page before `all` exists shows its own.
    let all_total = all_total.filter(|&t| t > 0).unwrap_or(index.len());
    let gateways: Vec<String> = app.registry.ids().into_iter().map(str::to_string).collect();
    let (gateway, search, offset, fragment) = (ask.gateway.clone(), ask.search.clone(), ask.offset, ask.fragment);
    let new_days = ask.new_days;
    let new_since = crate::clock::iso8601(ask.marks_since_ms);
    // `marks_since_ms` is NEW_FOR_DAYS back, on the hour; another span is whole days
    // from it (so the validator, which covers both, changes on the same hours).
    let new_filter = new_days.map(|days| {
        const DAY: u64 = 86_400_000;
        crate::clock::iso8601((ask.marks_since_ms + NEW_FOR_DAYS as u64 * DAY).saturating_sub(days as u64 * DAY))
    });
    let clock = lookup.entry.meta.clock;
    Ok(move || {
        // `new=7d`: of the matches, those first seen since then (ISO 8601 in one
        // format orders as text); once per render, which is kept per page ETag.
        let hits = match &new_filter {
            None => hits,
            Some(since) => {
                let all = || Box::new(0..index.len() as u32) as Box<dyn Iterator<Item = u32>>;
                let candidates = match &hits {
                    Some(h) => Box::new(h.iter().copied()) as Box<dyn Iterator<Item = u32>>,
                    None => all(),
                };
                let fresh: Vec<u32> = candidates
                    .filter(|&i| {
                        crate::page::first_seen(index.model_json(i as usize)).is_some_and(|f| *f >= *since.as_str())
                    })
                    .collect();
                Some(std::sync::Arc::new(fresh))
            }
        };
        let matching = hits.as_ref().map_or(index.len(), |h| h.len());
        let start = offset.min(matching);
        let end = start.saturating_add(ROWS).min(matching);
        let models: Vec<u32> = match &hits {
            Some(h) => h[start..end].to_vec(),
            None => (start as u32..end as u32).collect(),
        };
        if fragment {
            let slice = Slice {
                matching,
                all_total,
                next: end,
                new_since: &new_since,
            };
            return Ok(crate::page::rows(&slice, &index, &models));
        }
        let view = View {
            gateway: &gateway,
            search: search.as_deref(),
            offset,
            matching,
            all_total,
            gateways: &gateways,
            fetched_at_ms: clock.fetched_at_ms,
            fresh_until_ms: clock.fresh_until_ms,
            new_days,
            new_since: &new_since,
        };
        Ok(crate::page::render(&view, &index, &models))
    })
}
