//! The catalog API client: `GET {base}/v1/models?gateway=<id>&limit=&offset=`.
//!
//! - Pages on `has_more`/`next_offset`; once `total` is known the remaining pages
//!   are fetched concurrently.
//! - Copes with the legacy shape (no `has_more`; the whole catalog at once, `limit`
//!   and `offset` ignored): stops on a short page or a page that repeats the first.
//! - Caps the page count and the total body size (bodies are read chunk by chunk,
//!   so an oversized one is cut off without being buffered).
//! - Honours 429 `Retry-After` with capped exponential backoff, inside the
//!   gateway's deadline.
//! - Each page is parsed by [`super::page`] (leniently, `raw_*` copies skipped).
//! - Every failure is a [`FetchError`] that names the gateway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Map, Value};

use super::page::{first_id, parse_page};
use super::registry::Gateway;
use crate::config::{Config, Secret};
use crate::upstream::FetchError;

/// The fetcher's limits, from [`Config`].
#[derive(Clone)]
pub(crate) struct Fetcher {
    /// Built on first use: a cold start that serves from the cache never pays for it.
    client: Arc<OnceLock<reqwest::Client>>,
    base_url: String,
    page_limit: u32,
    max_pages: u32,
    max_bytes: usize,
    /// Upstream bearer tokens by variable name (`GATEWAYZ_TOKEN_<ID>`).
    tokens: std::collections::HashMap<String, Secret>,
}

/// The variable holding a gateway's upstream bearer token: `GATEWAYZ_TOKEN_HUGGINGFACE`.
pub(crate) fn token_env_var(gateway_id: &str) -> String {
    let mut s = String::from(crate::config::TOKEN_VAR_PREFIX);
    for c in gateway_id.chars() {
        s.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    s
}

/// Concurrent page requests per gateway once `total` is known.
const PAGE_CONCURRENCY: usize = 4;
/// 429 retries at most, within the deadline.
const MAX_RATE_LIMIT_RETRIES: u32 = 5;

/// The least wait after a 429, whatever `Retry-After` says: `0` or a date already
/// past once made 6 retries within 20 ms against an upstream that was rate limiting.
const MIN_RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(1);

impl Fetcher {
    pub(crate) fn new(config: &Config) -> Self {
        Fetcher {
            client: Arc::default(),
            base_url: config.upstream_base_url.expose().to_string(),
            page_limit: config.page_limit,
            max_pages: config.max_pages,
            max_bytes: config.max_bytes,
            tokens: config.gateway_tokens.clone(),
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("gatewayz-model-cache/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(8)
                .build()
                .expect("reqwest client builds with static settings")
        })
    }

    /// Every model of `gateway`, `raw_*` fields dropped, within its deadline (the
    /// tests' view; the catalog streams pages into normalised JSON instead).
    #[cfg(test)]
    pub(crate) async fn fetch(&self, gateway: &Gateway) -> Result<Vec<Map<String, Value>>, FetchError> {
        let pages = self.fetch_pages(gateway, Arc::new(|models| models)).await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Every page of `gateway`, each passed through `transform` as soon as it is
    /// parsed (on a blocking thread), in page order. Only a page's worth of parsed
    /// models exists at a time: a Featherless-sized catalog never becomes one big
    /// JSON tree.
    pub(crate) async fn fetch_pages<T: Send + 'static>(
        &self,
        gateway: &Gateway,
        transform: PageTransform<T>,
    ) -> Result<Vec<T>, FetchError> {
        let deadline = Instant::now() + gateway.deadline;
        // A listing that moves while it is paged (a model inserted before the page
        // being read, one withdrawn and another appended, replicas at two versions)
        // shows as a `total` that changes, an id of an earlier page listed again, or a
        // page boundary that does not match (each later page is asked from the last
        // model of the one before, which must be the same model): fetched once more
        // from the start. If it moves again, the fetch fails and the good data stays;
        // ids the catalog itself lists twice (the same ones, both times) are not a move.
        let attempts = async {
            let (pages, shift) = self.checked_pass(gateway, deadline, transform.clone()).await?;
            let Some(why) = shift else { return Ok(pages) };
            tracing::warn!(
                "[Cache Fetch] {}: the catalog changed while it was paged ({}); fetching it again from the start",
                gateway.id,
                why.detail()
            );
            drop(pages);
            match (self.checked_pass(gateway, deadline, transform).await?, why) {
                ((pages, None), _) => Ok(pages),
                ((pages, Some(Shift::Repeated(again))), Shift::Repeated(before)) if again == before => Ok(pages),
                ((_, Some(again)), _) => Err(FetchError::Shifted {
                    gateway: gateway.id.clone(),
                    detail: again.detail(),
                }),
            }
        };
        match tokio::time::timeout(gateway.deadline, attempts).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                gateway: gateway.id.clone(),
                after: gateway.deadline,
            }),
        }
    }

    /// Every page once, and how the listing moved meanwhile (`None`: it did not).
    /// A model withdrawn and another appended keep `total` and repeat no id, but shift
    /// every later model by one: each later page is asked from one model before its
    /// start, and that model must be the previous page's last (issue 38: a move inside
    /// page 2 onwards was invisible when only the first page was asked again). Pages
    /// the upstream's own `next_offset` leads to cannot overlap: a listing with any of
    /// those is checked at the end by asking for its first page again.
    async fn checked_pass<T: Send + 'static>(
        &self,
        gw: &Gateway,
        deadline: Instant,
        transform: PageTransform<T>,
    ) -> Result<(Vec<T>, Option<Shift>), FetchError> {
        let pass = match self.fetch_all_pages(gw, deadline, transform.clone()).await {
            Ok(pass) => pass,
            Err(FetchError::Shifted { detail, .. }) => return Ok((Vec::new(), Some(Shift::Moved(detail)))),
            Err(e) => return Err(e),
        };
        if pass.outs.len() > 1 && !pass.boundaries_checked {
            let again = self
                .fetch_page(gw, 0, false, deadline, &AtomicUsize::new(self.max_bytes), &transform)
                .await?;
            if again.ids != pass.first_ids || again.total != pass.total {
                return Ok((pass.outs, Some(Shift::FirstPage)));
            }
        }
        let shift = (!pass.repeated.is_empty()).then_some(Shift::Repeated(pass.repeated));
        Ok((pass.outs, shift))
    }

    /// Every page once, in order, and the ids an earlier page had listed already.
    async fn fetch_all_pages<T: Send + 'static>(
        &self,
        gw: &Gateway,
        deadline: Instant,
        transform: PageTransform<T>,
    ) -> Result<Pass<T>, FetchError> {
        // One byte budget shared by every page of this gateway, concurrent or not.
        let budget = AtomicUsize::new(self.max_bytes);
        let first = self.fetch_page(gw, 0, false, deadline, &budget, &transform).await?;
        let (has_more, next_offset, total) = (first.has_more, first.next_offset, first.total);
        let mut run = Paging {
            fetcher: self,
            gw,
            deadline,
            budget: &budget,
            transform: &transform,
            listing: Listing::new(gw, total),
            seen: 0,
            outs: Vec::new(),
            pages: 1,
            last_id: None,
            boundaries_checked: true,
        };
        let first_model = first.first_id.clone();
        let first_ids = first.ids.clone();
        run.take(first, 0)?;
        match (has_more, total) {
            // Paginated, with a total: fetch the rest concurrently.
            (Some(true), Some(total)) => run.rest_concurrently(next_offset.unwrap_or(run.seen), total).await?,
            // Paginated without a total: follow next_offset one page at a time.
            (Some(true), None) => run.follow_next_offset(next_offset).await?,
            // Last page already.
            (Some(false), _) => {}
            // Legacy shape: no has_more. A full page may mean more; a short one is the end.
            (None, _) => run.legacy_pages(first_model).await?,
        }
        // The API says how many models there are: fewer is a truncated catalog (an
        // empty or short page mid-way), not a smaller one, and must not be stored.
        if let Some(total) = total
            && run.seen < total
        {
            return Err(FetchError::Truncated {
                gateway: gw.id.clone(),
                received: run.seen,
                total,
            });
        }
        Ok(Pass {
            outs: run.outs,
            repeated: run.listing.repeated(),
            first_ids,
            total,
            boundaries_checked: run.boundaries_checked,
        })
    }

    /// One page, with 429 handling, parsed and transformed off the async threads.
    /// `overlap`: the page starts at the previous page's last model, which is taken
    /// out (its id kept in [`Fetched::overlap`]) before the transform.
    async fn fetch_page<T: Send + 'static>(
        &self,
        gw: &Gateway,
        offset: u64,
        overlap: bool,
        deadline: Instant,
        budget: &AtomicUsize,
        transform: &PageTransform<T>,
    ) -> Result<Fetched<T>, FetchError> {
        let url = format!(
            "{}/v1/models?gateway={}&limit={}&offset={}",
            self.base_url,
            form_urlencoded::byte_serialize(gw.id.as_bytes()).collect::<String>(),
            self.page_limit,
            offset
        );
        let mut attempt = 0u32;
        let resp = loop {
            let mut req = self.client().get(&url).header("accept", "application/json");
            if let Some(token) = self.tokens.get(&token_env_var(&gw.id)) {
                req = req.bearer_auth(token.expose());
            }
            let resp = req.send().await.map_err(|e| network(gw, e))?;
            if resp.status().as_u16() != 429 {
                break resp;
            }
            let backoff = rate_limit_backoff(gw, &resp, attempt, deadline)?;
            tracing::info!(
                "[Cache Fetch] {} rate limited; retrying in {} ms",
                gw.id,
                backoff.as_millis()
            );
            tokio::time::sleep(backoff).await;
            attempt += 1;
        };
        let status = resp.status().as_u16();
        let is_html = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if is_html {
            return Err(FetchError::Html {
                gateway: gw.id.clone(),
                status,
            });
        }
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                gateway: gw.id.clone(),
                status,
            });
        }
        let body = read_capped(gw, resp, budget, self.max_bytes).await?;
        let (page_gw, transform) = (gw.clone(), transform.clone());
        tokio::task::spawn_blocking(move || {
            let mut page = parse_page(&page_gw, &body, status)?;
            drop(body);
            let (first, raw_count) = (first_id(&page.models), page.models.len() as u64);
            let overlap =
                (overlap && !page.models.is_empty()).then(|| page.models.remove(0).get("id").and_then(id_text));
            Ok(Fetched {
                count: page.models.len() as u64,
                raw_count,
                first_id: first,
                ids: page.models.iter().filter_map(|m| id_text(m.get("id")?)).collect(),
                last_id: page.models.last().and_then(|m| id_text(m.get("id")?)),
                overlap,
                total: page.total,
                has_more: page.has_more,
                next_offset: page.next_offset,
                out: transform(page.models),
            })
        })
        .await
        .unwrap_or_else(|e| Err(FetchError::invalid_json(&gw.id, format!("parser panicked: {e}"))))
    }
}

/// How long to wait before asking again after a 429: the upstream's `Retry-After`
/// when given (at least [`MIN_RATE_LIMIT_BACKOFF`]), else the old frontend's backoff
/// (min(1000·2^n, 30000) ms + up to 500 ms jitter). A wait that does not fit in the
/// deadline, or one retry too many, is the rate limit itself.
fn rate_limit_backoff(
    gw: &Gateway,
    resp: &reqwest::Response,
    attempt: u32,
    deadline: Instant,
) -> Result<Duration, FetchError> {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after_value);
    let backoff = retry_after
        .map(|r| r.max(MIN_RATE_LIMIT_BACKOFF))
        .unwrap_or_else(|| Duration::from_millis((1000u64 << attempt.min(5)).min(30_000) + fastrand::u64(0..500)));
    let remaining = deadline.saturating_duration_since(Instant::now());
    if attempt >= MAX_RATE_LIMIT_RETRIES || backoff >= remaining {
        return Err(FetchError::RateLimited {
            gateway: gw.id.clone(),
            retry_after: backoff,
        });
    }
    Ok(backoff)
}

/// A `Retry-After` value: delay-seconds, or an HTTP-date (how long until then; a date
/// already past is no wait). Anything else is no value.
fn retry_after_value(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// One fetch's pages so far, and the three ways of getting the rest.
struct Paging<'a, T> {
    fetcher: &'a Fetcher,
    gw: &'a Gateway,
    deadline: Instant,
    budget: &'a AtomicUsize,
    transform: &'a PageTransform<T>,
    listing: Listing<'a>,
    /// Models received so far.
    seen: u64,
    outs: Vec<T>,
    pages: u32,
    /// The last model's id of the pages taken so far.
    last_id: Option<String>,
    /// Every page after the first began with the last model of the one before.
    boundaries_checked: bool,
}

impl<T: Send + 'static> Paging<'_, T> {
    fn take(&mut self, page: Fetched<T>, offset: u64) -> Result<(), FetchError> {
        match &page.overlap {
            Some(seen) if *seen != self.last_id => {
                return Err(FetchError::Shifted {
                    gateway: self.gw.id.clone(),
                    detail: crate::upstream::bounded(&format!(
                        "the page at offset {offset} began with {:?}, not the previous page's last model {:?}",
                        seen.as_deref().unwrap_or("(no id)"),
                        self.last_id.as_deref().unwrap_or("(no id)")
                    )),
                });
            }
            Some(_) => {}
            None if !self.outs.is_empty() => self.boundaries_checked = false,
            None => {}
        }
        self.listing.admit(&page, offset)?;
        self.seen += page.count;
        if page.last_id.is_some() {
            self.last_id = page.last_id;
        }
        self.outs.push(page.out);
        Ok(())
    }

    /// One more page, within the page cap.
    fn count_page(&mut self) -> Result<(), FetchError> {
        self.pages += 1;
        if self.pages > self.fetcher.max_pages {
            return Err(FetchError::TooManyPages {
                gateway: self.gw.id.clone(),
                limit: self.fetcher.max_pages,
            });
        }
        Ok(())
    }

    async fn page(&self, offset: u64, overlap: bool) -> Result<Fetched<T>, FetchError> {
        self.fetcher
            .fetch_page(self.gw, offset, overlap, self.deadline, self.budget, self.transform)
            .await
    }

    /// Whether the next page can be asked from the last model taken (`start` is where
    /// the pages taken end, and a page holds at least two models).
    fn can_overlap(&self, start: u64) -> bool {
        start >= 1 && start == self.seen && self.fetcher.page_limit >= 2 && self.last_id.is_some()
    }

    /// The pages from `start` to `total`, [`PAGE_CONCURRENCY`] at a time, in order;
    /// each asked from one model before its start, when it can be.
    async fn rest_concurrently(&mut self, start: u64, total: u64) -> Result<(), FetchError> {
        let limit = self.fetcher.page_limit as u64;
        let overlap = self.can_overlap(start);
        let offsets: Vec<u64> = match overlap {
            // Each page repeats the previous page's last model and brings `limit - 1`
            // new ones, while any are left (`offset + 1 < total`).
            true => (start - 1..total.saturating_sub(1))
                .step_by((limit - 1) as usize)
                .collect(),
            false => (start..total).step_by(limit as usize).collect(),
        };
        for _ in &offsets {
            self.count_page()?;
        }
        let mut in_flight = FuturesUnordered::new();
        let mut rest: Vec<(u64, Fetched<T>)> = Vec::with_capacity(offsets.len());
        let mut queue = offsets.into_iter();
        loop {
            while in_flight.len() < PAGE_CONCURRENCY {
                let Some(off) = queue.next() else { break };
                let this = &*self;
                in_flight.push(async move { this.page(off, overlap).await.map(|p| (off, p)) });
            }
            match in_flight.next().await {
                None => break,
                Some(res) => rest.push(res?),
            }
        }
        drop(in_flight);
        rest.sort_by_key(|(off, _)| *off);
        for (off, page) in rest {
            self.take(page, off)?;
        }
        Ok(())
    }

    /// Follow `next_offset` one page at a time while `has_more` says so.
    async fn follow_next_offset(&mut self, mut next: Option<u64>) -> Result<(), FetchError> {
        loop {
            self.count_page()?;
            let offset = next.unwrap_or(self.seen);
            let page = self.page(offset, false).await?;
            if page.count == 0 {
                return Ok(());
            }
            let more = page.has_more;
            next = page.next_offset;
            self.take(page, offset)?;
            if more != Some(true) {
                return Ok(());
            }
        }
    }

    /// The legacy shape: a full page may mean more, a short one is the end, and an API
    /// that ignores `offset` answers the first page again (then stop).
    async fn legacy_pages(&mut self, first_model: Option<Value>) -> Result<(), FetchError> {
        let mut last_len = self.seen;
        while last_len == self.fetcher.page_limit as u64 {
            self.count_page()?;
            let overlap = self.can_overlap(self.seen);
            let offset = self.seen - u64::from(overlap);
            let page = self.page(offset, overlap).await?;
            if page.count == 0 || page.first_id == first_model {
                return Ok(());
            }
            last_len = page.raw_count;
            self.take(page, offset)?;
        }
        Ok(())
    }
}

/// Applied to each page's models as soon as the page is parsed.
pub(crate) type PageTransform<T> = Arc<dyn Fn(Vec<Map<String, Value>>) -> T + Send + Sync>;

/// A transformed page and what pagination needs to know about it.
struct Fetched<T> {
    out: T,
    /// Models in `out` (the overlapping one is not).
    count: u64,
    /// Models the upstream answered (with the overlapping one).
    raw_count: u64,
    /// The first model's id as answered (the overlapping one, if any).
    first_id: Option<Value>,
    /// Every model's id in `out`, to see a listing that moves while it is paged.
    ids: Vec<String>,
    /// The last model's id in `out`.
    last_id: Option<String>,
    /// Asked from the previous page's last model: the id this page began with.
    overlap: Option<Option<String>>,
    total: Option<u64>,
    has_more: Option<bool>,
    next_offset: Option<u64>,
}

/// A model's id as text (a string, or a number's digits).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One pass over a listing's pages.
struct Pass<T> {
    /// One per page taken, in order.
    outs: Vec<T>,
    /// Ids a later page listed again (sorted).
    repeated: Vec<String>,
    /// The first page's ids, in order, and the `total` it gave.
    first_ids: Vec<String>,
    total: Option<u64>,
    /// Every later page began with the last model of the one before.
    boundaries_checked: bool,
}

/// Why a fetch is tried once more from the start.
enum Shift {
    /// The first page, asked for again at the end, is not what it was.
    FirstPage,
    /// The `total` changed between pages, or a page boundary did not match (detail
    /// says how).
    Moved(String),
    /// Ids an earlier page had listed already (sorted).
    Repeated(Vec<String>),
}

impl Shift {
    fn detail(&self) -> String {
        match self {
            Shift::Moved(d) => d.clone(),
            Shift::FirstPage => "the first page was not the same when asked again at the end".into(),
            Shift::Repeated(ids) => crate::upstream::bounded(&format!(
                "{} ids listed again on a later page, first \"{}\"",
                ids.len(),
                ids.first().map_or("", String::as_str)
            )),
        }
    }
}

/// What the pages of one fetch listed so far: a listing that moves while it is paged
/// changes its `total`, or lists an id of an earlier page again.
struct Listing<'a> {
    gw: &'a Gateway,
    total: Option<u64>,
    /// Id → the offset of the page that listed it first.
    ids: std::collections::HashMap<String, u64>,
    repeated: Vec<String>,
}

impl<'a> Listing<'a> {
    fn new(gw: &'a Gateway, total: Option<u64>) -> Self {
        Listing {
            gw,
            total,
            ids: std::collections::HashMap::new(),
            repeated: Vec::new(),
        }
    }

    /// Take in the page at `offset`. A changed `total` fails at once.
    fn admit<T>(&mut self, page: &Fetched<T>, offset: u64) -> Result<(), FetchError> {
        if let (Some(first), Some(now)) = (self.total, page.total)
            && first != now
        {
            return Err(FetchError::Shifted {
                gateway: self.gw.id.clone(),
                detail: format!("total went from {first} to {now}"),
            });
        }
        for id in &page.ids {
            match self.ids.get(id) {
                Some(first_page) if *first_page != offset => self.repeated.push(id.clone()),
                Some(_) => {}
                None => {
                    self.ids.insert(id.clone(), offset);
                }
            }
        }
        Ok(())
    }

    /// The ids a later page listed again, sorted.
    fn repeated(mut self) -> Vec<String> {
        self.repeated.sort_unstable();
        self.repeated
    }
}

fn network(gw: &Gateway, e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout {
            gateway: gw.id.clone(),
            after: gw.deadline,
        };
    }
    // The innermost cause says the most ("connection refused", "reset by peer").
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    FetchError::network(&gw.id, detail)
}

/// Read a body chunk by chunk, failing as soon as it exceeds the budget.
async fn read_capped(
    gw: &Gateway,
    mut resp: reqwest::Response,
    budget: &AtomicUsize,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::TooLarge {
        gateway: gw.id.clone(),
        limit,
    };
    let take = |n: usize| budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(n));
    if resp
        .content_length()
        .is_some_and(|n| n as usize > budget.load(Ordering::SeqCst))
    {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(64 * 1024).min(limit as u64) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| network(gw, e))? {
        take(chunk.len()).map_err(|_| too_large())?;
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        use std::time::{Duration, SystemTime};
        assert_eq!(super::retry_after_value(" 7 "), Some(Duration::from_secs(7)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let wait = super::retry_after_value(&in_a_minute).unwrap();
        assert!((58..=60).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(
            super::retry_after_value("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date already past: no wait"
        );
        assert_eq!(super::retry_after_value("soon"), None);
    }

    #[test]
    fn token_env_names() {
        assert_eq!(
            super::token_env_var("vercel-ai-gateway"),
            "GATEWAYZ_TOKEN_VERCEL_AI_GATEWAY"
        );
    }
}
