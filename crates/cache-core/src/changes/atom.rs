//! The Atom feed (RFC 4287) of models added (and, when asked, repriced), written with
//! `atom_syndication`: feed and entry ids, titles, `updated`, an author and links,
//! every element the RFC requires.

use atom_syndication::{Entry, Feed, FixedDateTime, Link, Person, Text};

use crate::contract::{Change, ChangeKind};

/// The feed of `changes` (newest first) of `gateway` (`None`: every gateway), its
/// links under `origin` (`https://host`, or empty for relative links).
pub(crate) fn feed(changes: &[Change], gateway: Option<&str>, origin: &str, now_ms: u64) -> String {
    let scope = gateway.unwrap_or("all gateways");
    let updated = changes
        .first()
        .and_then(|c| date(&c.at))
        .unwrap_or_else(|| date(&crate::clock::iso8601(now_ms)).expect("our dates parse"));
    let self_query = gateway.map(|g| format!("?gateway={g}")).unwrap_or_default();
    let feed = Feed {
        id: format!("{origin}/api/models/feed{self_query}"),
        title: Text::plain(format!("New models on Gatewayz ({scope})")),
        updated,
        authors: vec![Person {
            name: "Gatewayz model cache".into(),
            ..Default::default()
        }],
        links: vec![
            link(&format!("{origin}/models"), "alternate", "text/html"),
            link(
                &format!("{origin}/api/models/feed{self_query}"),
                "self",
                "application/atom+xml",
            ),
        ],
        entries: changes.iter().filter_map(|c| entry(c, origin)).collect(),
        ..Default::default()
    };
    feed.to_string()
}

fn entry(c: &Change, origin: &str) -> Option<Entry> {
    let id = c.id.as_deref()?;
    let name = c.name.as_deref().unwrap_or(id);
    let updated = date(&c.at)?;
    let (title, summary) = match c.kind {
        ChangeKind::Added => (
            format!("{name} on {}", c.gateway),
            format!("{id} is listed on {}{}", c.gateway, prices(c.after.as_ref())),
        ),
        ChangeKind::Repriced => (
            format!("{name} repriced on {}", c.gateway),
            format!(
                "{id} on {}: {} → {}",
                c.gateway,
                prices(c.before.as_ref()).trim_start_matches(", "),
                prices(c.after.as_ref()).trim_start_matches(", ")
            ),
        ),
        _ => return None,
    };
    let page = format!(
        "{origin}/models?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("gateway", &c.gateway)
            .append_pair("search", id)
            .finish()
    );
    Some(Entry {
        // One id per change: the same model added again later is another entry.
        id: format!(
            "{origin}/api/models/changes#{}:{}:{}:{}",
            c.gateway,
            c.kind.as_str(),
            id,
            c.at
        ),
        title: Text::plain(title),
        updated,
        published: Some(updated),
        links: vec![link(&page, "alternate", "text/html")],
        summary: Some(Text::plain(summary)),
        ..Default::default()
    })
}

fn link(href: &str, rel: &str, mime: &str) -> Link {
    Link {
        href: href.into(),
        rel: rel.into(),
        mime_type: Some(mime.into()),
        ..Default::default()
    }
}

/// `, $0.000001 prompt / $0.000002 completion per token`, or nothing without prices.
fn prices(f: Option<&crate::contract::ModelFacts>) -> String {
    let Some(f) = f else { return String::new() };
    match (&f.prompt, &f.completion) {
        (None, None) => String::new(),
        (p, c) => format!(
            ", ${} prompt / ${} completion per token",
            p.as_deref().unwrap_or("?"),
            c.as_deref().unwrap_or("?")
        ),
    }
}

fn date(iso: &str) -> Option<FixedDateTime> {
    FixedDateTime::parse_from_rfc3339(iso).ok()
}
