//! The models page as an HTML document: the first screen of rows is in the
//! document itself, so it draws before any script runs, with no JSON to download or
//! parse, and without JavaScript at all.
//!
//! - Rendered on the server from the cached catalog (its per-ETag index, see
//!   [`crate::search`]): no upstream call and no store key per page.
//! - The default document (`/models`: the first [`ROWS`] rows of `all`) is the same
//!   for every visitor and is rendered once per entry (ETag and clock), then kept
//!   pre-compressed ([`Rendered`]); other pages (`?offset=`, `?gateway=`, `?search=`,
//!   what the no-JavaScript links and form ask for) are rendered per request, at the
//!   cost of a JSON page.
//! - Every string from the catalog is escaped here ([`escape`]); a field of the wrong
//!   type renders as empty, never stops the page.
//! - The scripts and the styles are files (`/api-base.js`, `/models.js`, `/models.css`): the
//!   Content-Security-Policy allows `script-src 'self'` only.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::answers::SearchIndex;

/// Rows in the document (the first screen, and each no-JavaScript page).
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
}

/// The fields a row shows. Lenient: any of them may hold anything.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Row {
    id: Value,
    name: Value,
    provider_slug: Value,
    source_gateway: Value,
    source_gateways: Value,
    context_length: Value,
    pricing: Value,
    gateway_pricing: Value,
}

/// The whole document for `view`, its rows being `models` (indexes into `index`).
pub(crate) fn render(view: &View<'_>, index: &SearchIndex, models: &[u32]) -> String {
    let mut out = String::with_capacity(16 * 1024 + models.len() * 600);
    head(&mut out, view);
    out.push_str("<tbody id=\"rows\">");
    for (n, &i) in models.iter().enumerate() {
        let row: Row = serde_json::from_str(index.model_json(i as usize)).unwrap_or_default();
        row_html(&mut out, &row, n == 0);
    }
    out.push_str("</tbody></table>");
    if models.is_empty() {
        out.push_str("<p id=\"status\">No model matches.</p>");
    } else {
        out.push_str("<p id=\"status\"></p>");
    }
    pager(&mut out, view, models.len());
    out.push_str("<div id=\"more\" aria-hidden=\"true\"></div></main></body></html>\n");
    out
}

/// The page's styles, in the document: the first screen paints with the document,
/// without a second, render-blocking request. The Content-Security-Policy allows this
/// one `<style>` by its hash (`handlers::page::CSP`; `tests/it/layout.rs` checks the
/// hash against this file).
pub(crate) const CRITICAL_CSS: &str = include_str!("../../../public/models.css");

fn head(out: &mut String, view: &View<'_>) {
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Models · Gatewayz</title>\
         <meta name=\"gatewayz-api-base\" content=\"\"><meta name=\"gatewayz-api-allow\" content=\"\"><style>",
    );
    out.push_str(CRITICAL_CSS);
    out.push_str(
        "</style><script src=\"/api-base.js\" defer></script><script src=\"/models.js\" defer></script></head>",
    );
    let _ = write!(
        out,
        "<body data-gateway=\"{}\" data-search=\"{}\" data-offset=\"{}\" data-limit=\"{ROWS}\" data-matching=\"{}\" \
         data-total=\"{}\" data-fetched-at=\"{}\" data-fresh-until=\"{}\"><header><h1><a href=\"/models\">Models</a></h1>\
         <form id=\"filters\" method=\"get\" action=\"/models\">\
         <input id=\"search\" name=\"search\" type=\"search\" value=\"{}\" placeholder=\"Search name, id, provider…\" \
         aria-label=\"Search models\" autocomplete=\"off\" minlength=\"2\" maxlength=\"200\">\
         <select id=\"gateway\" name=\"gateway\" aria-label=\"Filter by gateway\"><option value=\"\">All gateways</option>",
        escape(view.gateway),
        escape(view.search.unwrap_or("")),
        view.offset,
        view.matching,
        view.all_total,
        view.fetched_at_ms,
        view.fresh_until_ms,
        escape(view.search.unwrap_or("")),
    );
    for g in view.gateways {
        let selected = if g == view.gateway { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{0}\"{selected}>{0}</option>", escape(g));
    }
    let _ = write!(
        out,
        "</select><button id=\"apply\" type=\"submit\">Apply</button></form>\
         <span id=\"count\" aria-live=\"polite\" data-count=\"{0}\">{1} of {2} models</span>\
         <span id=\"cache\" title=\"When the catalog data was fetched\">data as of {3}</span>\
         <a href=\"/status\" title=\"Cache health: gateways, last warm, hit rates\">Status</a></header>\
         <main><table><thead><tr><th>Model</th><th>Provider</th><th>Gateways</th><th class=\"num\">Context</th>\
         <th class=\"num\">Prompt / 1M</th><th class=\"num\">Completion / 1M</th></tr></thead>",
        view.matching,
        thousands(view.matching as u64),
        thousands(view.all_total as u64),
        escape(&crate::clock::iso8601(view.fetched_at_ms)),
    );
}

fn row_html(out: &mut String, m: &Row, first: bool) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let id = text(&m.id);
    let name = match text(&m.name) {
        n if n.is_empty() => id.clone(),
        n => n,
    };
    let gateways: Vec<String> = match &m.source_gateways {
        Value::Array(a) => a.iter().map(text).filter(|g| !g.is_empty()).collect(),
        _ => vec![text(&m.source_gateway)]
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect(),
    };
    let price = cheapest(m);
    // Element Timing marks the first row's text: when the first row painted.
    let timing = if first { " elementtiming=\"first-row\"" } else { "" };
    let _ = write!(
        out,
        "<tr data-testid=\"model-row\"><td><div{timing}>{}</div><div class=\"id\">{}</div></td><td>{}</td><td>",
        escape(&name),
        escape(&id),
        escape(&text(&m.provider_slug))
    );
    for g in &gateways {
        let _ = write!(out, "<span class=\"tag\">{}</span>", escape(g));
    }
    let via = match &price {
        Some((gw, _)) if gateways.len() > 1 => format!(" title=\"cheapest: {0}\" data-gateway=\"{0}\"", escape(gw)),
        _ => String::new(),
    };
    let prompt = price.as_ref().and_then(|(_, p)| p.get("prompt"));
    let completion = price.as_ref().and_then(|(_, p)| p.get("completion"));
    let _ = write!(
        out,
        "</td><td class=\"num\">{}</td><td class=\"num\" data-testid=\"prompt-price\"{via}>{}</td>\
         <td class=\"num\" data-testid=\"completion-price\">{}</td></tr>",
        context(&m.context_length),
        per_million(prompt),
        per_million(completion)
    );
}

/// The cheapest gateway's price (by prompt price) from `gateway_pricing`, else the
/// record's own: (gateway, pricing). Prices are USD per token.
fn cheapest(m: &Row) -> Option<(String, Value)> {
    let prompt = |p: &Value| p.get("prompt").and_then(number);
    let best = m
        .gateway_pricing
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(gw, p)| Some((gw.clone(), p.clone(), prompt(p)?)))
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(gw, p, _)| (gw, p));
    best.or_else(|| {
        m.pricing
            .is_object()
            .then(|| (m.source_gateway.as_str().unwrap_or("").to_string(), m.pricing.clone()))
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// USD per token as dollars per million tokens, the way the page's script shows it
/// (`$0.15`, `$2.50`, `$120`); "—" when there is no price.
pub(crate) fn per_million(p: Option<&Value>) -> String {
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

/// JavaScript's `toPrecision(2)` for 0 <= v < 1.
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

fn context(v: &Value) -> String {
    match number(v) {
        Some(n) if n > 0.0 => thousands(n as u64),
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
fn pager(out: &mut String, view: &View<'_>, shown: usize) {
    let link = |offset: usize| {
        let mut q = vec![format!("offset={offset}")];
        if !view.gateway.is_empty() {
            q.push(format!("gateway={}", query_escape(view.gateway)));
        }
        if let Some(s) = view.search {
            q.push(format!("search={}", query_escape(s)));
        }
        format!("/models?{}", escape(&q.join("&")))
    };
    out.push_str("<nav id=\"pager\">");
    if view.offset > 0 {
        let _ = write!(
            out,
            "<a id=\"prev\" rel=\"prev\" href=\"{}\">← Previous {ROWS}</a> ",
            link(view.offset.saturating_sub(ROWS))
        );
    }
    let end = view.offset + shown;
    if shown > 0 {
        let _ = write!(
            out,
            "<span>{}–{} of {}</span>",
            thousands(view.offset as u64 + 1),
            thousands(end as u64),
            thousands(view.matching as u64)
        );
    }
    if end < view.matching {
        let _ = write!(
            out,
            " <a id=\"next\" rel=\"next\" href=\"{}\">Next {ROWS} →</a>",
            link(end)
        );
    }
    out.push_str("</nav>");
}

/// HTML-escape text for element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_counts_read_like_the_script_shows_them() {
        let p = |s: &str| per_million(Some(&Value::String(s.into())));
        assert_eq!(p("0.00000015"), "$0.15");
        assert_eq!(p("0.0000025"), "$2.50");
        assert_eq!(p("0.00012"), "$120");
        assert_eq!(p("0.0000000012"), "$0.0012");
        assert_eq!(p("0"), "$0.0");
        assert_eq!(per_million(None), "—");
        assert_eq!(per_million(Some(&serde_json::json!({"x": 1}))), "—");
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
    }
}
