//! The models page as HTML, and its rows: the one renderer of a model on a page.
//!
//! - The document: the first screen of rows is in it, so it draws before any script
//!   runs, with no JSON to download or parse, and without JavaScript at all.
//! - Its rows fragment ([`rows`]): what the page's script inserts as the list grows
//!   or the view changes (`/models?fragment=rows`). The same code as the first screen
//!   makes it: the price format, the cheapest gateway and the escaping live here only.
//! - Rendered on the server from the cached catalog (its per-ETag index, see
//!   [`crate::answers`]): no upstream call and no store key per page.
//! - Templates are `maud`: every value is escaped by its type at compile time (text
//!   can only be inserted escaped), and a field of the wrong type reads as absent
//!   ([`Model`] is lenient), never stops the page.
//! - The scripts are files (`/api-base.js`, `/models.js`): the Content-Security-Policy
//!   allows `script-src 'self'` only; the styles are in the document, allowed by hash.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::answers::SearchIndex;
use crate::contract::{Model, Pricing};

/// Rows in the document (the first screen, and each no-JavaScript page), and in each
/// rows fragment.
pub(crate) const ROWS: usize = 100;

/// What a document shows: which models, and what the page knows about the catalog.
pub(crate) struct View<'a> {
    /// `""` for the merged view, else a gateway id.
    pub gateway: &'a str,
    /// The search term (lowercased), if any.
    pub search: Option<&'a str>,
    pub offset: usize,
    /// Models matching the view (all of the catalog without a search).
    pub matching: usize,
    /// Models in the merged view (the "of M" in "N of M models").
    pub all_total: usize,
    /// Gateways for the filter.
    pub gateways: &'a [String],
    /// The data's clock: as of, fresh until (unix ms).
    pub fetched_at_ms: u64,
    pub fresh_until_ms: u64,
    /// `new=7d`: only models first seen within this many days.
    pub new_days: Option<u32>,
    /// Rows of models first seen since then (ISO 8601) are marked "new".
    pub new_since: &'a str,
}

/// The page's styles, in the document: the first screen paints with the document,
/// without a second, render-blocking request. The Content-Security-Policy allows this
/// one `<style>` by its hash (`handlers::page::CSP`; `tests/it/layout.rs` checks the
/// hash against this file).
pub(crate) const CRITICAL_CSS: &str = include_str!("../../../public/models.css");

/// The whole document for `view`, its rows being `models` (indexes into `index`).
pub(crate) fn render(view: &View<'_>, index: &SearchIndex, models: &[u32]) -> String {
    let search = view.search.unwrap_or("");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Models · Gatewayz" }
                meta name="gatewayz-api-base" content="";
                meta name="gatewayz-api-allow" content="";
                style { (PreEscaped(CRITICAL_CSS)) }
                script src="/api-base.js" defer {}
                script src="/models.js" defer {}
            }
            body data-gateway=(view.gateway) data-search=(search) data-new=(new_param(view.new_days)) data-offset=(view.offset) data-limit=(ROWS)
                data-matching=(view.matching) data-total=(view.all_total)
                data-fetched-at=(view.fetched_at_ms) data-fresh-until=(view.fresh_until_ms) {
                header {
                    h1 { a href="/models" { "Models" } }
                    form #filters method="get" action="/models" {
                        input #search name="search" type="search" value=(search) placeholder="Search name, id, provider…"
                            aria-label="Search models" autocomplete="off" minlength="2" maxlength="200";
                        select #gateway name="gateway" aria-label="Filter by gateway" {
                            option value="" { "All gateways" }
                            @for g in view.gateways {
                                option value=(g) selected[g == view.gateway] { (g) }
                            }
                        }
                        label #only-new title="Models this cache first saw within the last 7 days" {
                            input #new type="checkbox" name="new" value="7d" checked[view.new_days.is_some()];
                            " New"
                        }
                        button #apply type="submit" { "Apply" }
                    }
                    span #count aria-live="polite" data-count=(view.matching) {
                        (thousands(view.matching as u64)) " of " (thousands(view.all_total as u64)) " models"
                    }
                    span #cache title="When the catalog data was fetched" {
                        "data as of " (crate::clock::iso8601(view.fetched_at_ms))
                    }
                    a href="/status" title="Cache health: gateways, last warm, hit rates" { "Status" }
                }
                main {
                    table {
                        thead { tr {
                            th { "Model" } th { "Provider" } th { "Gateways" } th.num { "Context" }
                            th.num { "Prompt / 1M" } th.num { "Completion / 1M" }
                        } }
                        tbody #rows {
                            @for (n, &i) in models.iter().enumerate() {
                                (row(&Model::read_json(index.model_json(i as usize)), n == 0, view.new_since))
                            }
                        }
                    }
                    p #status { @if models.is_empty() { "No model matches." } }
                    (pager(view, models.len()))
                    div #more aria-hidden="true" {}
                }
            }
        }
    }
    .into_string()
        + "\n"
}

/// What the rows fragment says about the view, for the page's script.
pub(crate) struct Slice<'a> {
    /// Models matching the view.
    pub matching: usize,
    /// Models in the merged view.
    pub all_total: usize,
    /// Where the next fragment starts.
    pub next: usize,
    /// Rows of models first seen since then (ISO 8601) are marked "new".
    pub new_since: &'a str,
}

/// A rows fragment: `models` (indexes into `index`) as the rows of a `<tbody>` that
/// carries the counts the page shows ("N of M") and the next offset.
pub(crate) fn rows(slice: &Slice<'_>, index: &SearchIndex, models: &[u32]) -> String {
    html! {
        tbody data-matching=(slice.matching) data-total=(slice.all_total) data-next=(slice.next) {
            @for &i in models {
                (row(&Model::read_json(index.model_json(i as usize)), false, slice.new_since))
            }
        }
    }
    .into_string()
}

/// `new=` as the page's links and script carry it.
fn new_param(days: Option<u32>) -> String {
    days.map(|d| format!("{d}d")).unwrap_or_default()
}

/// A model's `first_seen` read from its JSON text, nothing else of it (a page filtered
/// to new models looks at every model once per render).
pub(crate) fn first_seen(model_json: &str) -> Option<std::borrow::Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Dated<'a> {
        #[serde(borrow, default)]
        first_seen: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Dated>(model_json).ok()?.first_seen
}

/// One model's row; a model first seen since `new_since` (ISO 8601) is marked new. The
/// first row of a document carries an Element Timing mark: when it painted.
fn row(m: &Model, first: bool, new_since: &str) -> Markup {
    let new = m.first_seen.as_deref().is_some_and(|f| f >= new_since);
    let name = if m.name.is_empty() { &m.id } else { &m.name };
    let gateways: Vec<&str> = match m.source_gateways.is_empty() {
        true => vec![m.source_gateway.as_str()],
        false => m.source_gateways.iter().map(String::as_str).collect(),
    };
    let gateways: Vec<&str> = gateways.into_iter().filter(|g| !g.is_empty()).collect();
    let price = cheapest(m);
    let via = price.as_ref().filter(|_| gateways.len() > 1).map(|(gw, _)| *gw);
    let (prompt, completion) = match price {
        Some((_, p)) => (p.prompt.as_deref(), p.completion.as_deref()),
        None => (None, None),
    };
    html! {
        tr data-testid="model-row" data-new=[new.then_some("1")] {
            td {
                div elementtiming=[first.then_some("first-row")] {
                    (name)
                    @if new {
                        " " span.new title={ "First seen " (m.first_seen.as_deref().unwrap_or("")) } { "new" }
                    }
                }
                div.id { (m.id) }
            }
            td { (m.provider_slug.as_deref().unwrap_or("")) }
            td { @for g in &gateways { span.tag { (g) } } }
            td.num { (context(m.context_length)) }
            td.num data-testid="prompt-price" title=[via.map(|gw| format!("cheapest: {gw}"))] data-gateway=[via] {
                (per_million(prompt))
            }
            td.num data-testid="completion-price" { (per_million(completion)) }
        }
    }
}

/// The cheapest gateway's price (by prompt price) from `gateway_pricing`, else the
/// record's own: (gateway, pricing). Prices are USD per token.
fn cheapest(m: &Model) -> Option<(&str, &Pricing)> {
    let prompt = |p: &Pricing| p.prompt.as_deref().and_then(number);
    m.gateway_pricing
        .iter()
        .filter_map(|(gw, p)| Some((gw.as_str(), p, prompt(p)?)))
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(gw, p, _)| (gw, p))
        .or_else(|| m.pricing.as_ref().map(|p| (m.source_gateway.as_str(), p)))
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// USD per token as dollars per million tokens (`$0.15`, `$2.50`, `$120`); "—" when
/// there is no price.
pub(crate) fn per_million(p: Option<&str>) -> String {
    let Some(n) = p.and_then(number).filter(|n| *n >= 0.0) else {
        return "—".into();
    };
    let v = n * 1e6;
    if v >= 100.0 {
        format!("${v:.0}")
    } else if v >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${}", two_significant(v))
    }
}

/// Two significant digits for 0 <= v < 1 (`0.15`, `0.0012`, `1.2e-7`).
fn two_significant(v: f64) -> String {
    if v == 0.0 {
        return "0.0".into();
    }
    let e = v.log10().floor() as i32;
    if e < -6 {
        let mantissa = v / 10f64.powi(e);
        return format!("{mantissa:.1}e{e}");
    }
    format!("{:.*}", (1 - e).max(0) as usize, v)
}

fn context(n: Option<u64>) -> String {
    match n {
        Some(n) if n > 0 => thousands(n),
        _ => "—".into(),
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Links to the previous and next pages: what a browser without JavaScript (or a
/// crawler) follows. The page's script takes over scrolling when it runs.
fn pager(view: &View<'_>, shown: usize) -> Markup {
    let link = |offset: usize| {
        let mut q = form_urlencoded::Serializer::for_suffix(format!("/models?offset={offset}"), "/models?".len());
        if !view.gateway.is_empty() {
            q.append_pair("gateway", view.gateway);
        }
        if let Some(s) = view.search {
            q.append_pair("search", s);
        }
        if view.new_days.is_some() {
            q.append_pair("new", &new_param(view.new_days));
        }
        q.finish()
    };
    let end = view.offset + shown;
    html! {
        nav #pager {
            @if view.offset > 0 {
                a #prev rel="prev" href=(link(view.offset.saturating_sub(ROWS))) { "← Previous " (ROWS) } " "
            }
            @if shown > 0 {
                span { (thousands(view.offset as u64 + 1)) "–" (thousands(end as u64)) " of " (thousands(view.matching as u64)) }
            }
            @if end < view.matching {
                " " a #next rel="next" href=(link(end)) { "Next " (ROWS) " →" }
            }
        }
    }
}

/// A page that says what went wrong.
pub(crate) fn error(message: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Models · Gatewayz" }
                // The page's own style, inline as on the page (allowed by the CSP's hash):
                // `/models.css` is not served on its own.
                style { (PreEscaped(CRITICAL_CSS)) }
            }
            body { main {
                h1 { "Models" }
                p #status .error { (message) }
                p { a href="/models" { "All models" } " · " a href="/status" { "Status" } }
            } }
        }
    }
    .into_string()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_counts_read_like_the_script_shows_them() {
        let p = |s: &str| per_million(Some(s));
        assert_eq!(p("0.00000015"), "$0.15");
        assert_eq!(p("0.0000025"), "$2.50");
        assert_eq!(p("0.00012"), "$120");
        assert_eq!(p("0.0000000012"), "$0.0012");
        assert_eq!(p("0"), "$0.0");
        assert_eq!(per_million(None), "—");
        assert_eq!(per_million(Some("n/a")), "—");
        assert_eq!(thousands(3579), "3,579");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn hostile_strings_are_text_and_odd_types_render_empty() {
        let index = SearchIndex::build(bytes::Bytes::from_static(
            br#"{"data":[{"id":"<script>alert(1)</script>","name":"\"><img src=x onerror=alert(1)>","provider_slug":{"toString":0},"source_gateways":"groq","context_length":[1],"gateway_pricing":7}],"gateway":"all"}"#,
        ))
        .unwrap();
        let gateways = vec!["a\"b<".to_string()];
        let view = View {
            gateway: "",
            search: Some("<q>"),
            offset: 0,
            matching: 1,
            all_total: 1,
            gateways: &gateways,
            fetched_at_ms: 0,
            fresh_until_ms: 0,
            new_days: None,
            new_since: "",
        };
        let html = render(&view, &index, &[0]);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("value=\"a&quot;b&lt;\""));
        assert!(html.contains("value=\"&lt;q&gt;\""));
        assert!(
            !html.contains("<script>") || html.matches("<script").count() == 1,
            "only the script file"
        );
        assert_eq!(html.matches("data-testid=\"model-row\"").count(), 1);
        let slice = Slice {
            matching: 1,
            all_total: 1,
            next: 1,
            new_since: "",
        };
        let fragment = rows(&slice, &index, &[0]);
        assert!(fragment.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !fragment.contains("<img"));
        let unmarked = html.replacen(" elementtiming=\"first-row\"", "", 1);
        assert!(unmarked.contains(&fragment["<tbody data-matching=\"1\" data-total=\"1\" data-next=\"1\">".len()..]));
    }

    #[test]
    fn models_first_seen_since_the_mark_are_new() {
        let index = SearchIndex::build(bytes::Bytes::from_static(
            br#"{"data":[{"id":"old","name":"Old"},{"id":"week","name":"Week","first_seen":"2026-12-01T00:00:00.000Z"},{"id":"today","name":"Today","extra":{"first_seen":"x"},"first_seen":"2026-12-07T09:00:00.000Z"}],"gateway":"all"}"#,
        ))
        .unwrap();
        let slice = Slice {
            matching: 3,
            all_total: 3,
            next: 3,
            new_since: "2026-12-01T00:00:00.000Z",
        };
        let html = rows(&slice, &index, &[0, 1, 2]);
        assert_eq!(html.matches("data-new=\"1\"").count(), 2, "{html}");
        assert_eq!(html.matches("<span class=\"new\"").count(), 2, "{html}");
        assert!(
            !html.split("</tr>").next().unwrap().contains("new\""),
            "the baseline model is not new"
        );
        assert_eq!(
            first_seen(index.model_json(2)).as_deref(),
            Some("2026-12-07T09:00:00.000Z")
        );
        assert_eq!(first_seen(index.model_json(0)), None);
        assert_eq!(first_seen(r#"{"first_seen":7}"#), None, "odd types read as absent");
    }
}
