//! The models page through the built `page` binary: the first screen is in the
//! document, served like the JSON (pre-compressed, strong ETag with 304, CDN
//! headers, a strict CSP), with links and a form that work without JavaScript, and
//! every catalog string escaped.

use crate::support;

use serde_json::json;
use support::env::{Env, MODELS, PAGE, decode, header, json_of, raw_client};

/// The rows of a page (their model ids, in order).
fn row_ids(html: &str) -> Vec<String> {
    html.split("<tr data-testid=\"model-row\"")
        .skip(1)
        .filter_map(|row| {
            let start = row.find("<div class=\"id\">")? + "<div class=\"id\">".len();
            let end = start + row[start..].find("</div>")?;
            Some(
                row[start..end]
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&#39;", "'")
                    .replace("&quot;", "\"")
                    .replace("&amp;", "&"),
            )
        })
        .collect()
}

/// GET `url` accepting `accept`: a 200 in br.
async fn get_br(c: &reqwest::Client, url: &str, accept: &str) -> reqwest::Response {
    let r = c.get(url).header("accept-encoding", accept).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert_eq!(header(&r, "content-encoding"), Some("br"), "{url}");
    r
}

async fn html_of(r: reqwest::Response) -> String {
    assert!(header(&r, "content-type").unwrap().starts_with("text/html"));
    let enc = header(&r, "content-encoding").map(str::to_string);
    String::from_utf8(decode(enc.as_deref(), &r.bytes().await.unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_screen_is_in_the_document_and_served_like_the_json() {
    let env = Env::new().await;
    let page = env.spawn(PAGE, &[]);
    let api = env.spawn(MODELS, &[]);
    let c = raw_client();
    let all = json_of(c.get(api.url("/api/models?gateway=all")).send().await.unwrap()).await;
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();

    let r = get_br(&c, &page.url("/models"), "gzip, deflate, br").await;
    let etag = header(&r, "etag").unwrap().to_string();
    let cc = header(&r, "cache-control").unwrap().to_string();
    assert!(cc.contains("s-maxage=") && cc.contains("stale-if-error="), "{cc}");
    let csp = header(&r, "content-security-policy").unwrap().to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert_eq!(header(&r, "x-cache"), Some("HIT"));
    let wire = r.bytes().await.unwrap();
    let fetched = env.sample.total_requests();
    println!("the models page, first screen: {} bytes brotli", wire.len());
    assert!(wire.len() <= 50_000, "{} bytes before the first row", wire.len());
    let html = String::from_utf8(decode(Some("br"), &wire)).unwrap();
    assert_eq!(row_ids(&html), ids[..100], "the first 100 models of `all`, in order");
    assert!(
        html.contains(&format!("data-count=\"{0}\">{1} of {1} models", ids.len(), "3,579")),
        "the model count"
    );
    assert!(
        html.contains("<option value=\"groq\">groq</option>"),
        "the gateway filter"
    );
    assert!(html.contains("data as of 20"), "the data's age");
    assert!(html.contains("<script src=\"/models.js\" defer></script>") && !html.contains("<script>"));
    assert!(
        html.contains("href=\"/models?offset=100\""),
        "a plain link to the next page"
    );

    // Same document for every visitor: 304 on its ETag, in any coding; the same bytes again.
    let again = c
        .get(page.url("/"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let gz = c
        .get(page.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
    assert_eq!(html_of(gz).await, html);
    let head = c.head(page.url("/models")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(header(&head, "content-length").unwrap().parse::<usize>().unwrap() > 10_000);

    // Without JavaScript: the next page, a gateway, a search.
    let next = html_of(c.get(page.url("/models?offset=100")).send().await.unwrap()).await;
    assert_eq!(row_ids(&next), ids[100..200]);
    assert!(next.contains("href=\"/models?offset=0\"") && next.contains("href=\"/models?offset=200\""));
    // Made per request, in the encoding asked for: the same document.
    for enc in ["br", "gzip"] {
        let r = c
            .get(page.url("/models?offset=100"))
            .header("accept-encoding", enc)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-encoding"), Some(enc));
        assert_eq!(html_of(r).await, next, "{enc}");
    }
    let groq = html_of(c.get(page.url("/models?gateway=groq")).send().await.unwrap()).await;
    assert_eq!(row_ids(&groq).len(), 11);
    assert!(groq.contains("<option value=\"groq\" selected>"));
    let found = html_of(c.get(page.url("/models?search=llama&gateway=")).send().await.unwrap()).await;
    let hits = row_ids(&found);
    assert!(!hits.is_empty() && hits.iter().all(|id| found.contains(id.as_str())));
    let far = ids[3000];
    let one = html_of(
        c.get(page.url(&format!("/models?search={}", far.replace('/', "%2F"))))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        row_ids(&one).iter().any(|id| id == far),
        "a model far from the first screen, by search"
    );
    for bad in ["search=a", "gateway=nope", "offset=-1"] {
        let r = c.get(page.url(&format!("/models?{bad}"))).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(html_of(r).await.contains("class=\"error\""));
    }
    assert_eq!(env.sample.total_requests(), fetched, "pages never reach the upstream");
}

/// Catalog strings are escaped on the server; a field of the wrong type renders empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_catalog_strings_are_text() {
    let env = Env::new().await;
    env.sample.set_catalog(
        "groq",
        vec![
            json!({"id":"x/<script>alert(1)</script>","name":"<img src=x onerror=alert(1)>","provider_slug":{"toString":0}}),
            json!({"id":"y","name":"\"><svg onload=alert(2)>","description":12345,"context_length":{"a":1}}),
        ],
    );
    let page = env.spawn(PAGE, &[("GATEWAYS", "groq")]);
    let html = html_of(raw_client().get(page.url("/models")).send().await.unwrap()).await;
    assert!(
        !html.contains("<img src=x") && !html.contains("<svg") && !html.contains("<script>alert"),
        "{html}"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert_eq!(row_ids(&html), ["x/<script>alert(1)</script>", "y"]);
}

/// The inside of the first `<tbody ...>` of `html`.
fn tbody(html: &str) -> &str {
    let start = html.find("<tbody").unwrap();
    let start = start + html[start..].find('>').unwrap() + 1;
    &html[start..start + html[start..].find("</tbody>").unwrap()]
}

/// `/models?fragment=rows`: the rows the page's script inserts, made by the document's
/// own renderer (byte for byte the rows of the no-JavaScript page), pre-compressed,
/// with its own ETag, its counts on the `<tbody>`, and JSON errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rows_fragment_is_the_documents_rows() {
    let env = Env::new().await;
    let page = env.spawn(PAGE, &[]);
    let c = raw_client();
    let next = html_of(c.get(page.url("/models?offset=100")).send().await.unwrap()).await;
    let fetched = env.sample.total_requests();

    let r = get_br(&c, &page.url("/models?offset=100&fragment=rows"), "br").await;
    let etag = header(&r, "etag").unwrap().to_string();
    let rows = html_of(r).await;
    assert!(
        rows.starts_with("<tbody data-matching=\"3579\" data-total=\"3579\" data-next=\"200\">")
            && rows.ends_with("</tbody>"),
        "{}",
        &rows[..rows.len().min(200)]
    );
    let marked = tbody(&next).replacen(" elementtiming=\"first-row\"", "", 1);
    assert_eq!(
        tbody(&rows),
        marked,
        "the same rows as the document's (its first row marked for Element Timing)"
    );
    assert_eq!(row_ids(&rows).len(), 100);
    let again = c
        .get(page.url("/models?offset=100&fragment=rows"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let doc = c.get(page.url("/models?offset=100")).send().await.unwrap();
    assert_ne!(header(&doc, "etag").unwrap(), etag, "a fragment is not the document");

    // The views the page's filter and search ask for.
    let groq = html_of(
        c.get(page.url("/models?gateway=groq&fragment=rows&offset=0"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        groq.starts_with("<tbody data-matching=\"11\" data-total=\"3579\" data-next=\"11\">"),
        "{groq}"
    );
    assert_eq!(row_ids(&groq).len(), 11);
    let found = html_of(
        c.get(page.url("/models?search=llama&fragment=rows"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let doc = html_of(c.get(page.url("/models?search=llama")).send().await.unwrap()).await;
    assert!(!row_ids(&found).is_empty());
    assert_eq!(
        tbody(&found),
        tbody(&doc).replacen(" elementtiming=\"first-row\"", "", 1)
    );
    let past = html_of(
        c.get(page.url("/models?offset=999999&fragment=rows"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        past,
        "<tbody data-matching=\"3579\" data-total=\"3579\" data-next=\"3579\"></tbody>"
    );

    // Every error the page's script can meet is JSON, a query over 2,048 bytes and a
    // repeated `fragment` included (issue 39: those came back as an HTML page).
    let long = format!("search={}&fragment=rows", "x".repeat(10_000));
    for bad in [
        "search=a&fragment=rows",
        "fragment=cols",
        "fragment=rows&gateway=nope",
        "fragment=rows&offset=x",
        "fragment=rows&fragment=rows",
        long.as_str(),
    ] {
        let r = c.get(page.url(&format!("/models?{bad}"))).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body = json_of(r).await;
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{bad}: {body}");
    }
    assert_eq!(
        env.sample.total_requests(),
        fetched,
        "fragments never reach the upstream"
    );
    // The page's own error page carries its style inline, as the page does.
    let r = c.get(page.url("/models?search=a")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains("<style>") && !html.contains("/models.css"), "{html}");
}

/// Issue 39, finding 4: a gateway's page shows "N of M models", M the merged view's
/// size. Rendered before `all` existed it says "11 of 11"; once `all` holds 3,579 the
/// same URL must be a new page with a new validator (the old tag no longer 304s), and
/// the fragment's `data-total` follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_page_validator_covers_the_total_it_shows() {
    let env = Env::new().await;
    let page = env.spawn(PAGE, &[]);
    let c = raw_client();
    let url = page.url("/models?gateway=groq&fragment=rows");
    let r = c.get(&url).send().await.unwrap();
    let before = header(&r, "etag").unwrap().to_string();
    let rows = html_of(r).await;
    assert!(rows.contains("data-total=\"11\""), "{}", &rows[..rows.len().min(120)]);

    // The merged view is built by a read of `/models`.
    html_of(c.get(page.url("/models")).send().await.unwrap()).await;
    let r = c.get(&url).header("if-none-match", &before).send().await.unwrap();
    assert_eq!(r.status(), 200, "the old validator no longer matches");
    assert_ne!(header(&r, "etag").unwrap(), before);
    let rows = html_of(r).await;
    assert!(rows.contains("data-total=\"3579\""), "{}", &rows[..rows.len().min(120)]);
}
