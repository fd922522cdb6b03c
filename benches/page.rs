//! The models page in a real browser: how soon the first row shows, against the
//! fastest a page with data can be (a static document with the same first 100 rows
//! in its markup, no script), served in the same run. Prints figures, asserts none.
//!
//! `cargo bench --bench page` (needs Debian's chromium and chromium-driver).
//!
//! - Catalog: the sample catalog at its default size (3,579 merged models) and with
//!   Featherless scaled to 18,000 (~20,000), served by the dev server (release build)
//!   with a warm cache.
//! - Each load in a cold browser (a fresh profile), unthrottled and under Chromium's
//!   network emulation at 60 ms latency and 1.5 MB/s ("4G"); the median of 7 loads,
//!   the four pages (reference and /models, at both sizes) interleaved in each round.
//! - First row: Element Timing of the first row's text (`elementtiming="first-row"`);
//!   LCP: the last `largest-contentful-paint` entry; bytes: the document's and every
//!   resource's transfer size that ended before the first row.
//!
//! Targets (issue 24): first row ≤ 1.25× the reference at both sizes; ≤ 50 KB before
//! the first row; first row at 20k ÷ at 3.5k ≤ 1.2.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::contract::Trigger;
use cache_core::spawn::TaskSpawner;
use serde_json::Value;
use support::browser::{Driver, bin};

const LOADS: usize = 7;

/// What one load measured (ms, bytes).
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    first_row: f64,
    lcp: f64,
    bytes: f64,
}

/// Reads the timings after the page loaded (buffered observers see past entries).
const MEASURE: &str = r#"
const done = arguments[arguments.length - 1];
const out = { first_row: null, lcp: null, bytes: null };
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) if (e.identifier === 'first-row') out.first_row = e.renderTime || e.loadTime;
}).observe({ type: 'element', buffered: true });
new PerformanceObserver((l) => {
  const es = l.getEntries();
  if (es.length) out.lcp = es[es.length - 1].startTime;
}).observe({ type: 'largest-contentful-paint', buffered: true });
setTimeout(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const before = performance.getEntriesByType('resource').filter((r) => r.responseEnd <= (out.first_row ?? 0));
  out.bytes = nav.transferSize + before.reduce((n, r) => n + r.transferSize, 0);
  done(out);
}, 500);
"#;

async fn measure(chromium: &str, chromedriver: &str, url: &str, throttled: bool) -> Load {
    let d = Driver::start(chromium, chromedriver).await;
    if throttled {
        d.throttle(60, 1_500_000, 750_000).await;
    }
    d.goto(url).await;
    d.wait_for("return document.readyState === 'complete' || null").await;
    let v = d.js_async(MEASURE).await;
    let (left, _) = d.quit();
    assert!(left.is_empty(), "Chromium left behind: {left:?}");
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Load {
        first_row: f("first_row"),
        lcp: f("lcp"),
        bytes: f("bytes"),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The reference: the page's own first screen as a static document without its
/// script, brotli-compressed, served by a bare HTTP server. The fastest a page with
/// these rows can be: one document, no script, no work per request.
async fn reference_server(html: String, css: &'static str) -> String {
    let without_script = html
        .replace("<script src=\"/api-base.js\" defer></script>", "")
        .replace("<script src=\"/models.js\" defer></script>", "");
    let body = cache_core_brotli(&without_script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (body, css) = (Bytes::from(body), Bytes::from_static(css.as_bytes()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (body, css) = (body.clone(), css.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (body, css) = (body.clone(), css.clone());
                    async move {
                        let r = if req.uri().path() == "/models.css" {
                            hyper::Response::builder()
                                .header("content-type", "text/css")
                                .body(http_body_util::Full::new(css))
                        } else {
                            hyper::Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .header("content-encoding", "br")
                                .body(http_body_util::Full::new(body))
                        };
                        Ok::<_, Infallible>(r.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/reference")
}

fn cache_core_brotli(s: &str) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 9, 22);
        w.write_all(s.as_bytes()).unwrap();
    }
    out
}

async fn dev_server(sample: &sample_catalog::Handle) -> String {
    let base = sample.base_url();
    let config = support::config(&[("GATEWAYZ_API_URL", base.as_str()), ("LOCAL_CACHE_TTL_MS", "1000")]);
    let app = cache_core::App::new(config).unwrap();
    let tasks = TaskSpawner::new();
    cache_core::RequestContext::new(app.clone(), Arc::new(tasks.clone()))
        .warm(None, Trigger::Manual)
        .await
        .unwrap();
    format!("http://{}", support::dev_server(app, tasks).await)
}

#[tokio::main]
async fn main() {
    let (Some(chromium), Some(chromedriver)) = (
        bin("CHROMIUM_BIN", "/usr/bin/chromium"),
        bin("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"),
    ) else {
        println!("page benchmark SKIPPED: /usr/bin/chromium or /usr/bin/chromedriver not installed");
        return;
    };
    println!("== the models page in headless Chromium: cold profile, median of {LOADS} loads, interleaved ==");
    // Both catalog sizes up at once, so every round measures all four pages under the
    // same machine load: the reference and /models at ~3.5k, then at ~20k.
    let mut sites = Vec::new();
    for scale in [None, Some(18_000)] {
        let sample = sample_catalog::start_local().await;
        if let Some(n) = scale {
            sample.scale("featherless", n);
        }
        let url = dev_server(&sample).await;
        let head: Value = serde_json::from_slice(
            &reqwest::get(format!("{url}/api/models?gateway=all&limit=1"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let n = head["total"].as_u64().unwrap() as usize;
        // The first request renders the page (once per entry); the loads measure it served.
        let html = reqwest::get(format!("{url}/models"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let css = dev_server::STATIC_FILES
            .iter()
            .find(|(p, _, _)| *p == "/models.css")
            .unwrap()
            .2;
        let reference = reference_server(html, css).await;
        sites.push((n, reference, format!("{url}/models"), sample));
    }
    for throttled in [false, true] {
        let label = if throttled {
            "4G (60 ms, 1.5 MB/s)"
        } else {
            "unthrottled"
        };
        let mut runs: Vec<(Vec<Load>, Vec<Load>)> = vec![(Vec::new(), Vec::new()); sites.len()];
        for _ in 0..LOADS {
            for (k, (_, reference, page, _)) in sites.iter().enumerate() {
                runs[k]
                    .0
                    .push(measure(&chromium, &chromedriver, reference, throttled).await);
                runs[k].1.push(measure(&chromium, &chromedriver, page, throttled).await);
            }
        }
        let med = |loads: &[Load]| Load {
            first_row: median(loads.iter().map(|l| l.first_row).collect()),
            lcp: median(loads.iter().map(|l| l.lcp).collect()),
            bytes: median(loads.iter().map(|l| l.bytes).collect()),
        };
        let mut firsts = Vec::new();
        for (k, (n, ..)) in sites.iter().enumerate() {
            let (r, p) = (med(&runs[k].0), med(&runs[k].1));
            println!(
                "{n:>6} models, {label:<21} reference: first row {:>5.0} ms, LCP {:>5.0} ms, {:>5.1} KB | /models: first row {:>5.0} ms = {:.2}x the reference (target <= 1.25x), LCP {:>5.0} ms, {:>5.1} KB before the first row (target <= 50 KB)",
                r.first_row,
                r.lcp,
                r.bytes / 1024.0,
                p.first_row,
                p.first_row / r.first_row,
                p.lcp,
                p.bytes / 1024.0
            );
            firsts.push((r.first_row, p.first_row));
        }
        println!(
            "{label}: first row at {} ÷ at {} models: /models {:.2} (target <= 1.2); the same static reference {:.2} (the noise)",
            sites[1].0,
            sites[0].0,
            firsts[1].1 / firsts[0].1,
            firsts[1].0 / firsts[0].0
        );
    }
}
