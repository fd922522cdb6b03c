//! The pages in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver's W3C WebDriver API, against the dev server and the sample catalog.
//!
//! The models page: its first screen is in the document (with JavaScript off too),
//! scrolling adds rows, the search box finds a model far from the first screen
//! through the server's search, the gateway filter works, hostile catalog strings
//! render as text. The status page: rows, a failing gateway, the unreachable banner.
//! Each test proves no Chromium process or profile is left behind. Load-time
//! figures are the browser benchmark's (`cargo bench --bench page`).
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: chromium,
//! chromium-driver). Without them it is skipped, and scripts/test.sh says so;
//! with REQUIRE_BROWSER=1 (CI) a missing browser is a failure.

use crate::support;

use std::sync::Arc;

use cache_core::contract::Trigger;
use cache_core::spawn::TaskSpawner;
use serde_json::{Value, json};
use support::browser::{Driver, bin};
use support::env::json_of;

/// A dev server on a free port with its own embedded store and the sample catalog.
async fn dev_server(sample: &sample_catalog::Handle, warm: bool) -> String {
    dev_server_with(sample, warm, &[]).await
}

async fn dev_server_with(sample: &sample_catalog::Handle, warm: bool, extra: &[(&str, &str)]) -> String {
    let base = sample.base_url();
    let mut vars = vec![("GATEWAYZ_API_URL", base.as_str()), ("LOCAL_CACHE_TTL_MS", "1000")];
    vars.extend_from_slice(extra);
    let app = cache_core::App::new(support::config(&vars)).unwrap();
    let tasks = TaskSpawner::new();
    if warm {
        cache_core::RequestContext::new(app.clone(), Arc::new(tasks.clone()))
            .warm(None, Trigger::Manual)
            .await
            .unwrap();
    }
    format!("http://{}", support::dev_server(app, tasks).await)
}

/// The page's script has run (the first screen was in the document before it).
const READY: &str = "return document.body.dataset.ready === '1' || null;";
const ROWS: &str = "return document.querySelectorAll('[data-testid=model-row]').length";

/// Chromium and ChromeDriver, or None (skipped; a failure under REQUIRE_BROWSER=1).
fn browser() -> Option<(String, String)> {
    let (Some(chromium), Some(chromedriver)) = (
        bin("CHROMIUM_BIN", "/usr/bin/chromium"),
        bin("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"),
    ) else {
        assert!(
            std::env::var("REQUIRE_BROWSER").is_err(),
            "REQUIRE_BROWSER is set but chromium/chromedriver are missing"
        );
        eprintln!("browser test SKIPPED: /usr/bin/chromium or /usr/bin/chromedriver not installed");
        return None;
    };
    Some((chromium, chromedriver))
}

/// Close the browser and prove nothing of it is left: no process with its profile,
/// no profile directory.
fn quit_leaving_nothing(d: Driver) {
    let profile = d.profile.clone();
    let (left, dir) = d.quit();
    assert!(
        left.is_empty(),
        "Chromium processes left behind: {left:?} ({})",
        profile.display()
    );
    assert!(!dir, "profile dir left behind: {}", profile.display());
}

/// The ids of the rows on screen, in order.
const IDS: &str = "return [...document.querySelectorAll('[data-testid=model-row] .id')].map(e => e.textContent)";

/// Type `text` into the search box the way a person does (input events).
fn search(text: &str) -> String {
    format!(
        "{{ const s = document.getElementById('search'); s.value = {}; s.dispatchEvent(new Event('input')); }}",
        json!(text)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_page_in_headless_chromium() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let sample = sample_catalog::start_local().await;
    let url = dev_server(&sample, true).await;
    let expected: Value = json_of(reqwest::get(format!("{url}/api/models?gateway=all")).await.unwrap()).await;
    let models = expected["data"].as_array().unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let total = ids.len();
    let groq = models
        .iter()
        .filter(|m| m["source_gateways"].as_array().unwrap().contains(&json!("groq")))
        .count();

    let d = Driver::start(&chromium, &chromedriver).await;
    d.goto(&format!("{url}/models")).await;
    d.wait_for(READY).await;
    assert_eq!(d.js(ROWS).await, json!(100), "the first screen, from the document");
    let count = d
        .js("return Number(document.getElementById('count').dataset.count)")
        .await;
    assert_eq!(count.as_u64().unwrap() as usize, total, "N of M: every model");
    d.screenshot(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/models-page.png"))
        .await;

    // Scrolling loads further pages from the API, in order.
    for want in [200, 300] {
        d.js("window.scrollTo(0, document.body.scrollHeight)").await;
        d.wait_for(&format!("{ROWS} >= {want} || null")).await;
    }
    let shown: Vec<String> = serde_json::from_value(d.js(IDS).await).unwrap();
    assert_eq!(shown, ids[..shown.len()], "pages appended in order");
    d.js("window.scrollTo(0, 0)").await;

    // The search box asks the server: a model far from the first screen is found.
    let far = ids[total - 7];
    d.js(&search(far)).await;
    let found = d
        .wait_for(&format!(
            "const ids = [...document.querySelectorAll('[data-testid=model-row] .id')].map(e => e.textContent); return ids.includes({}) ? ids.length : null;",
            json!(far)
        ))
        .await;
    assert!(found.as_u64().unwrap() >= 1);
    let n = d
        .js("return Number(document.getElementById('count').dataset.count)")
        .await;
    assert!(n.as_u64().unwrap() < total as u64, "the count follows the search: {n}");
    // Typed fast, only the last term's answer lands (the one in flight is cancelled).
    let gemma: Value = json_of(
        reqwest::get(format!("{url}/api/models?gateway=all&search=gemma&limit=100"))
            .await
            .unwrap(),
    )
    .await;
    d.js(&format!(
        "{} {} {}",
        search("llama"),
        search("mistral"),
        search("gemma")
    ))
    .await;
    let want: Vec<&str> = gemma["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    d.wait_for(&format!(
        "const ids = [...document.querySelectorAll('[data-testid=model-row] .id')].map(e => e.textContent); \
         return Number(document.getElementById('count').dataset.count) === {} && JSON.stringify(ids.slice(0, 100)) === {} || null;",
        gemma["total"],
        json!(serde_json::to_string(&want).unwrap())
    ))
    .await;

    // Prices: a model on several gateways shows the cheapest gateway's price; a
    // model no gateway prices shows "—", never a free price.
    let cells = |id: &str| {
        format!(
            "const r = [...document.querySelectorAll('[data-testid=model-row]')].find(r => r.querySelector('.id').textContent === {});\
             return r ? [r.querySelector('[data-testid=prompt-price]').textContent, r.querySelector('[data-testid=completion-price]').textContent, r.querySelector('[data-testid=prompt-price]').dataset.gateway ?? null] : null;",
            json!(id)
        )
    };
    let mytho = models
        .iter()
        .find(|m| m["id"] == "Gryphe/MythoMax-L2-13b")
        .expect("in the fixtures");
    let cheapest = mytho["gateway_pricing"]
        .as_object()
        .unwrap()
        .iter()
        .min_by(|a, b| {
            let p = |v: &Value| v["prompt"].as_str().unwrap().parse::<f64>().unwrap();
            p(a.1).total_cmp(&p(b.1))
        })
        .unwrap();
    d.js(&search("Gryphe/MythoMax-L2-13b")).await;
    let shown = d.wait_for(&cells("Gryphe/MythoMax-L2-13b")).await;
    let per_million = cheapest.1["prompt"].as_str().unwrap().parse::<f64>().unwrap() * 1e6;
    assert_eq!(shown[2], json!(cheapest.0), "the cheapest gateway's price: {shown}");
    let price: f64 = shown[0].as_str().unwrap().trim_start_matches('$').parse().unwrap();
    assert_eq!(price, (per_million * 1000.0).round() / 1000.0, "{shown}");
    let unpriced = models
        .iter()
        .find(|m| m["pricing"].is_null())
        .expect("the fixtures have unpriced models");
    let id = unpriced["id"].as_str().unwrap();
    d.js(&search(id)).await;
    let shown = d.wait_for(&cells(id)).await;
    assert_eq!(
        (shown[0].as_str(), shown[1].as_str()),
        (Some("—"), Some("—")),
        "{id} is not free: {shown}"
    );

    // The gateway filter asks the server for that gateway.
    d.js("document.getElementById('search').value=''; const s = document.getElementById('gateway'); s.value = 'groq'; s.dispatchEvent(new Event('change'));").await;
    let by_gw = d
        .wait_for(&format!(
            "const n = Number(document.getElementById('count').dataset.count); return n === {groq} ? n : null;"
        ))
        .await;
    assert_eq!(by_gw.as_u64().unwrap() as usize, groq, "gateway filter");
    assert_eq!(d.js(ROWS).await, json!(groq));

    // Served from a host that is not localhost, the page ignores an attacker's ?api=:
    // its rows come from its own origin (the closed port would fail).
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let public = url.replace("127.0.0.1", "models.test");
    d.goto(&format!("{public}/models?api={closed}")).await;
    d.wait_for(READY).await;
    d.js("window.scrollTo(0, document.body.scrollHeight)").await;
    d.wait_for(&format!("{ROWS} > 100 || null")).await;
    quit_leaving_nothing(d);
}

/// With JavaScript off, the first screen shows and the plain links page through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_page_without_javascript() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let sample = sample_catalog::start_local().await;
    let url = dev_server(&sample, true).await;
    let all: Value = json_of(reqwest::get(format!("{url}/api/models?gateway=all")).await.unwrap()).await;
    let d = Driver::start_with(&chromium, &chromedriver, false).await;
    d.goto(&format!("{url}/models")).await;
    assert_eq!(
        d.count("[data-testid=model-row]").await,
        100,
        "the first screen, without a script"
    );
    assert_eq!(d.count("body.js").await, 0, "the page's script did not run");
    assert_eq!(
        d.text("[data-testid=model-row] .id").await,
        all["data"][0]["id"].as_str().unwrap()
    );
    d.click("#next").await;
    assert!(d.url().await.ends_with("/models?offset=100"), "{}", d.url().await);
    assert_eq!(d.count("[data-testid=model-row]").await, 100);
    assert_eq!(
        d.text("[data-testid=model-row] .id").await,
        all["data"][100]["id"].as_str().unwrap()
    );
    assert_eq!(d.count("#prev").await, 1);
    quit_leaving_nothing(d);
}

/// The list keeps loading while its end stays near: on a screen taller than a page of
/// rows (a tall monitor, a zoomed-out browser) with no scrolling, and when each scroll
/// lands in the same frame as the new rows. The loader is an IntersectionObserver,
/// which reports only when the end marker *enters* its margin; in both cases the marker
/// never leaves it, so the page must observe it anew after each page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_keeps_loading_while_its_end_stays_near() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let sample = sample_catalog::start_local().await;
    let url = dev_server(&sample, true).await;
    let d = Driver::start(&chromium, &chromedriver).await;
    d.goto(&format!("{url}/models")).await;
    d.wait_for(READY).await;
    let row_px = d
        .js("return document.querySelector('[data-testid=model-row]').getBoundingClientRect().height")
        .await
        .as_f64()
        .unwrap();
    // Tall enough for ~250 rows: the first page and the next both end inside the
    // marker's margin.
    let height = (row_px * 250.0) as u64;
    d.set_window_size(1280, height as u32).await;
    let inner = d.js("return window.innerHeight").await.as_f64().unwrap();
    assert!(
        inner > row_px * 200.0,
        "the window grew: {inner} px for rows of {row_px} px"
    );
    let filled = "const r = document.getElementById('more').getBoundingClientRect(); \
        const rows = document.querySelectorAll('[data-testid=model-row]').length; \
        return r.top > window.innerHeight ? rows : null;";
    let rows = d.wait_for(filled).await.as_u64().unwrap();
    println!("tall screen: {inner} px, rows of {row_px} px: {rows} rows loaded without scrolling");
    assert!(rows >= 300, "three pages at least: {rows}");

    // A scroll in the same frame as the new rows (a fling on a slow phone): the marker
    // never leaves the observer's margin between two frames. A MutationObserver's
    // callback runs before the next frame, so scrolling there makes that race certain.
    d.set_window_size(1280, 900).await;
    d.js(
        "window.flinger = new MutationObserver(() => window.scrollTo(0, document.body.scrollHeight)); \
          window.flinger.observe(document.getElementById('rows'), { childList: true }); \
          window.scrollTo(0, document.body.scrollHeight);",
    )
    .await;
    d.wait_for(&format!("{ROWS} >= {} || null", rows + 300)).await;
    d.js("window.flinger.disconnect()").await;
    println!("scrolled to the end as each page arrived: {} rows", d.js(ROWS).await);
    let ids: Vec<String> = serde_json::from_value(d.js(IDS).await).unwrap();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "each model once");
    quit_leaving_nothing(d);
}

/// Catalog strings that look like markup render as text, in the document and in
/// rows the script adds; a model with odd field types does not stop the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_catalog_strings_render_as_text() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let sample = sample_catalog::start_local().await;
    let mut hostile = vec![
        json!({"id":"evil/<img src=x onerror=window.pwned=1>","name":"<img src=x onerror=window.pwned=1>","provider_slug":{"toString":0}}),
        json!({"id":"evil/svg","name":"\"><svg onload=window.pwned=2>","description":12345,"context_length":{"a":1},"pricing":{"prompt":{"x":1}}}),
    ];
    for i in 0..150 {
        hostile.push(json!({"id": format!("filler/model-{i}"), "name": format!("Filler {i}")}));
    }
    hostile.push(json!({"id":"evil/last","name":"<b onmouseover=window.pwned=3>last</b>","source_gateways":{"x":1}}));
    sample.set_catalog("groq", hostile);
    let url = dev_server_with(&sample, true, &[("GATEWAYS", "groq")]).await;
    let d = Driver::start(&chromium, &chromedriver).await;
    d.goto(&format!("{url}/models")).await;
    d.wait_for(READY).await;
    assert_eq!(d.count("img, svg, b").await, 0, "no markup from the catalog");
    let text = d.js("return document.getElementById('rows').textContent").await;
    assert!(
        text.as_str().unwrap().contains("<img src=x onerror=window.pwned=1>"),
        "{text}"
    );
    d.js(&search("evil")).await;
    d.wait_for("return document.querySelectorAll('[data-testid=model-row]').length === 3 || null")
        .await;
    assert_eq!(d.count("img, svg, b").await, 0, "nor in rows the script renders");
    assert_eq!(d.js("return window.pwned ?? null").await, Value::Null);
    quit_leaving_nothing(d);
}

const STATUS_RENDERED_MS: &str = "const m = performance.getEntriesByName('status-rendered')[0]; return document.body.dataset.ready === '1' && m ? m.startTime : null;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let sample = sample_catalog::start_local().await;
    sample.set_fault("xai", sample_catalog::Fault::ServerError);
    let url = dev_server(&sample, true).await;

    let d = Driver::start(&chromium, &chromedriver).await;
    d.goto(&format!("{url}/status")).await;
    d.wait_for(STATUS_RENDERED_MS).await;
    d.goto(&format!("{url}/status")).await;
    let warm_ms = d.wait_for(STATUS_RENDERED_MS).await.as_f64().unwrap();

    let rows = d
        .js("return document.querySelectorAll('[data-testid=gateway-row]').length")
        .await;
    let gateways = sample_catalog::FIXTURES.len();
    assert_eq!(rows, json!(gateways), "one row per gateway");
    let xai = d
        .js("const r = document.querySelector('[data-gateway=xai]'); return [r.dataset.state, r.className, r.textContent]")
        .await;
    assert_eq!(xai[0], "missing", "{xai}");
    assert!(
        xai[1].as_str().unwrap().contains("failing"),
        "the failing gateway is marked: {xai}"
    );
    assert!(xai[2].as_str().unwrap().contains("HTTP 500"), "with its error: {xai}");
    let groq = d
        .js("const r = document.querySelector('[data-gateway=groq]'); return [r.dataset.state, r.className]")
        .await;
    assert_eq!(groq, json!(["fresh", ""]));
    let missing = d
        .js("return document.querySelector('[data-testid=merged-missing]').textContent")
        .await;
    assert_eq!(missing, "xai");
    let run = d
        .js("return document.querySelector('[data-testid=run-result]').textContent")
        .await;
    assert_eq!(run, json!(format!("1 of {gateways} failed")));
    let banner = d.js("return document.getElementById('banner').className").await;
    assert_eq!(banner, "", "no error banner when the endpoint answers");
    d.screenshot(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png"))
        .await;

    // An unreachable status endpoint is shown as such, not as a blank page.
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    d.goto(&format!("{url}/status?api={closed}")).await;
    d.wait_for(STATUS_RENDERED_MS).await;
    let banner = d
        .js("const b = document.getElementById('banner'); return [b.className, b.textContent]")
        .await;
    assert_eq!(banner[0], "shown");
    assert!(banner[1].as_str().unwrap().contains("unreachable"), "{banner}");

    println!("status page, navigation start -> rendered: warm cache {warm_ms:.0} ms (target < 100 ms)");
    assert!(warm_ms < 2000.0, "warm status page took {warm_ms} ms");
    quit_leaving_nothing(d);
}

/// Issue 40: a model first seen within 7 days is marked "new", and `?new=7d` lists only
/// those, with JavaScript (the checkbox refilters in place) and without (the form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_models_are_marked_and_filtered_with_and_without_javascript() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let sample = sample_catalog::start_local().await;
    let base = sample.base_url();
    let app = cache_core::App::new(support::config(&[("GATEWAYZ_API_URL", base.as_str())])).unwrap();
    let tasks = TaskSpawner::new();
    let ctx = cache_core::RequestContext::new(app.clone(), Arc::new(tasks.clone()));
    assert!(ctx.warm(None, Trigger::Manual).await.unwrap().success, "the baseline");
    // A model arrives at groq, and the next warm sees it.
    let mut groq = sample.catalog("groq");
    let mut arrived = groq[0].clone();
    arrived["id"] = json!("newco/brand-new-model");
    arrived["name"] = json!("Brand New Model");
    // Its own model, not another listing of the one it was copied from (merged by slug).
    arrived["canonical_slug"] = json!("newco/brand-new-model");
    arrived["slug"] = json!("newco/brand-new-model");
    groq.push(arrived);
    sample.set_catalog("groq", groq);
    ctx.warm(None, Trigger::Manual).await.unwrap();
    let url = format!("http://{}", support::dev_server(app, tasks).await);
    const NEW_ROWS: &str =
        "return [...document.querySelectorAll('[data-testid=model-row][data-new=\"1\"] .id')].map(e => e.textContent)";

    for javascript in [true, false] {
        let d = Driver::start_with(&chromium, &chromedriver, javascript).await;
        d.goto(&format!("{url}/models?new=7d")).await;
        if javascript {
            d.wait_for(READY).await;
        }
        assert_eq!(
            d.js(NEW_ROWS).await,
            json!(["newco/brand-new-model"]),
            "js {javascript}"
        );
        assert_eq!(d.js(ROWS).await, json!(1), "only the new model (js {javascript})");
        assert_eq!(d.text("[data-testid=model-row] .new").await, "new");
        assert_eq!(d.js("return document.getElementById('new').checked").await, json!(true));
        // The filter off: every model, the new one still marked where it is listed.
        d.click("#new").await;
        if !javascript {
            d.click("#apply").await;
        }
        d.wait_for(&format!("{ROWS} > 1 || null")).await;
        assert!(!d.url().await.contains("new="), "{}", d.url().await);
        d.goto(&format!("{url}/models?search=brand-new")).await;
        if javascript {
            d.wait_for(READY).await;
        }
        assert_eq!(d.js(NEW_ROWS).await, json!(["newco/brand-new-model"]));
        // And on again, from the page's own control.
        d.click("#new").await;
        if !javascript {
            d.click("#apply").await;
        }
        d.wait_for(
            "return location.search.includes('new=7d') \
             && document.querySelectorAll('[data-testid=model-row]').length === 1 || null",
        )
        .await;
        quit_leaving_nothing(d);
    }
}
