//! The cadence's policies against each other on a trace of catalog changes, in
//! scaled time through the real code: `fixed` (every gateway every
//! `MODELS_FRESH_TTL_SECONDS`), the learned cadence at its default budget (what
//! `fixed` spends), and at `--budget F` times it. Reads of `all` every 10 minutes and
//! the 3-hourly cron, on the same trace for every policy, one after the other.
//!
//! Real parts: the cache (the SWR read, the fill protocol, the merge, the warm, the
//! due-only cron), its embedded store, and the project's catalog API on loopback
//! answering real fixture catalogs over HTTP (every listing is fetched, normalised
//! and compared for real). Only the clock is simulated: it jumps from one event to
//! the next (`cache-core`'s `simulation` feature), and background work is awaited
//! before it jumps again.
//!
//! ```text
//! cargo bench --bench cadence -- [--trace FILE] [--budget F] [--json OUT] [--models N] [--set VAR=VALUE] [--explain]
//! ```
//!
//! Without `--trace`, one simulated week: 20 gateways whose catalogs change as Poisson
//! processes (from hourly to monthly) plus one bursty gateway. `FILE` is
//! `{"days": D, "gateways": {"<id>": [hours since the start at which it changed, ...]}}`
//! (ids of the sample catalog; a gateway absent never changes), for example
//! `benches/traces/litellm-year.json`, a year of real changes (scripts/real-trace.py).
//! It prints, per policy: upstream requests (pages) and bytes per day, the mean and p95
//! time from an upstream change until `all` serves it, and the share of reads that
//! served an out-of-date catalog; `--json OUT` writes the same figures.

use cache_core::RequestContext;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cache_core::contract::Trigger;
use cache_core::simulation;
use cache_core::spawn::TaskSpawner;
use serde_json::{Value, json};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
const READ_EVERY: u64 = 10 * 60_000;
const CRON_EVERY: u64 = 3 * HOUR;

/// One gateway's upstream changes (ms since the start), and its rate per day.
struct Trace {
    gateway: &'static str,
    per_day: f64,
    changes: Vec<u64>,
}

/// The trace in `path` (see the module doc), over `days`.
fn traces_from(path: &str) -> (Vec<Trace>, u64) {
    let v: Value = serde_json::from_slice(&std::fs::read(path).expect("--trace FILE")).expect("a JSON trace");
    let days = v["days"].as_f64().expect("\"days\": a number");
    let span = (days * DAY as f64) as u64;
    let traces = sample_catalog::FIXTURES
        .iter()
        .map(|(id, _)| {
            let mut changes: Vec<u64> = v["gateways"][*id]
                .as_array()
                .map(|hours| {
                    hours
                        .iter()
                        .filter_map(Value::as_f64)
                        .map(|h| (h * HOUR as f64) as u64)
                        .filter(|&at| at > 0 && at < span)
                        .collect()
                })
                .unwrap_or_default();
            changes.sort_unstable();
            Trace {
                gateway: id,
                per_day: changes.len() as f64 / days,
                changes,
            }
        })
        .collect();
    (traces, span)
}

/// The default trace: 20 gateways with rates from 24/day down to 1/30 per day
/// (log-spaced), and one bursty gateway, over a week.
fn traces() -> Vec<Trace> {
    let mut rng = fastrand::Rng::with_seed(32);
    let ids: Vec<&'static str> = sample_catalog::FIXTURES.iter().map(|(g, _)| *g).collect();
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i == ids.len() - 1 {
            // Bursty: quiet, then 12 changes within an hour on day 2 and on day 5.
            let mut changes = Vec::new();
            for day in [2, 5] {
                let start = day * DAY + 9 * HOUR;
                changes.extend((0..12).map(|k| start + k * 5 * 60_000));
            }
            out.push(Trace {
                gateway: id,
                per_day: 24.0 / 7.0,
                changes,
            });
            continue;
        }
        let per_day = 24.0 * (1.0 / (24.0 * 30.0f64)).powf(i as f64 / (ids.len() - 2) as f64);
        let mut changes = Vec::new();
        let mut t = 0.0f64;
        loop {
            // Exponential gaps: a Poisson process.
            t += -(1.0 - rng.f64()).ln() / per_day * DAY as f64;
            if t >= WEEK as f64 {
                break;
            }
            changes.push(t as u64);
        }
        out.push(Trace {
            gateway: id,
            per_day,
            changes,
        });
    }
    out
}

/// `gateway`'s fixture catalog at `version`: a sentinel model's id says which.
fn catalog(fixtures: &HashMap<&str, Vec<Value>>, gateway: &str, version: usize) -> Vec<Value> {
    let mut models = vec![json!({"id": format!("sim/{gateway}/v{version}"), "name": "sim"})];
    models.extend(fixtures[gateway].iter().cloned());
    models
}

/// The version of each gateway the served `all` holds: its sentinel ids, found by a
/// scan (a year of reads cannot afford parsing every merged body).
fn served_versions(body: &[u8]) -> HashMap<String, usize> {
    let needle = b"\"sim/";
    let mut out = HashMap::new();
    let mut at = 0;
    while let Some(i) = body[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + i + needle.len();
        let end = start + body[start..].iter().position(|&b| b == b'"').unwrap_or(0);
        at = end.max(start);
        let Ok(id) = std::str::from_utf8(&body[start..end]) else {
            continue;
        };
        if let Some((g, v)) = id.rsplit_once("/v")
            && let Ok(v) = v.parse::<usize>()
        {
            let e = out.entry(g.to_string()).or_insert(v);
            *e = (*e).max(v);
        }
    }
    out
}

#[derive(Default)]
struct Figures {
    listings: u64,
    bytes: u64,
    delays_ms: Vec<u64>,
    busy_delays_ms: Vec<u64>,
    /// Per gateway (trace order): upstream requests per listing.
    costs: Vec<f64>,
    /// Per gateway (trace order): its changes' delays.
    gateway_delays_ms: Vec<Vec<u64>>,
    reads: u64,
    stale_reads: u64,
    seconds: f64,
    /// Per gateway at the end: true and learned changes a day, the planned window, the
    /// listings a day it really got (`--explain`).
    explained: Vec<String>,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

async fn run(
    policy: &str,
    extra: &[(&str, &str)],
    traces: &[Trace],
    span: u64,
    fixtures: &HashMap<&str, Vec<Value>>,
) -> Figures {
    let started = Instant::now();
    let sample = sample_catalog::start_local().await;
    for t in traces {
        sample.set_catalog(t.gateway, catalog(fixtures, t.gateway, 0));
    }
    let base = sample.base_url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("GATEWAYZ_API_URL", &base),
        ("REFRESH_CADENCE", policy),
        ("LOCAL_CACHE_TTL_MS", "0"),
        ("REBUILD_COALESCE_MS", "0"),
        ("METRICS_FLUSH_INTERVAL_MS", "3600000"),
        ("FETCH_SOFT_TIMEOUT_MS", "60000"),
    ];
    vars.extend_from_slice(extra);
    let config = cache_core::config::Config::from_pairs(&vars).unwrap();
    let app = cache_core::App::new(config).unwrap();
    let tasks = TaskSpawner::new();
    let t0 = simulation::now_ms();
    let learned = policy == "learned";
    let ctx = RequestContext::new(app.clone(), Arc::new(tasks.clone()));
    assert!(ctx.warm(None, Trigger::Manual).await.unwrap().success);
    sample.reset_counts();

    // Every event of the week, in time order: changes, reads, crons.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        Change(usize),
        Cron,
        Read,
    }
    let mut events: Vec<(u64, Event)> = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        events.extend(t.changes.iter().map(|&at| (at, Event::Change(i))));
    }
    events.extend((1..=span / CRON_EVERY).map(|k| (k * CRON_EVERY, Event::Cron)));
    events.extend((1..=span / READ_EVERY).map(|k| (k * READ_EVERY, Event::Read)));
    events.sort();

    let mut version = vec![0usize; traces.len()];
    // Per gateway: (version, changed at) not yet served.
    let mut pending: Vec<Vec<(usize, u64)>> = vec![Vec::new(); traces.len()];
    let mut f = Figures {
        gateway_delays_ms: vec![Vec::new(); traces.len()],
        ..Figures::default()
    };
    // The versions an ETag of `all` serves: parsed once per merged body.
    let mut served: (String, HashMap<String, usize>) = Default::default();
    for (at, event) in events {
        let now = t0 + at;
        let behind = now.saturating_sub(simulation::now_ms());
        simulation::advance(behind);
        match event {
            Event::Change(i) => {
                version[i] += 1;
                sample.set_catalog(traces[i].gateway, catalog(fixtures, traces[i].gateway, version[i]));
                pending[i].push((version[i], at));
            }
            Event::Cron => {
                ctx.warm_scoped(None, learned, Trigger::Cron).await.unwrap();
                tasks.idle().await;
            }
            Event::Read => {
                let lookup = ctx.read_all().await.unwrap();
                let etag = lookup.entry.etag_in(cache_core::Encoding::Identity).to_string();
                if etag != served.0 {
                    served = (etag, served_versions(&lookup.entry.identity().unwrap()));
                }
                let served = &served.1;
                tasks.idle().await;
                f.reads += 1;
                let mut stale = false;
                for (i, t) in traces.iter().enumerate() {
                    let v = served.get(t.gateway).copied().unwrap_or(0);
                    stale |= v < version[i];
                    pending[i].retain(|&(pv, changed_at)| {
                        if pv <= v {
                            f.delays_ms.push(at - changed_at);
                            f.gateway_delays_ms[i].push(at - changed_at);
                            if t.per_day > 1.0 {
                                f.busy_delays_ms.push(at - changed_at);
                            }
                            false
                        } else {
                            true
                        }
                    });
                }
                f.stale_reads += u64::from(stale);
            }
        }
    }
    f.listings = sample.total_requests();
    f.bytes = sample.total_bytes();
    f.delays_ms.sort_unstable();
    f.busy_delays_ms.sort_unstable();
    f.seconds = started.elapsed().as_secs_f64();
    let status: Value = serde_json::from_slice(&app.status().await.identity).unwrap();
    let days = span as f64 / DAY as f64;
    for ((t, g), delays) in traces
        .iter()
        .zip(status["gateways"].as_array().unwrap())
        .zip(&f.gateway_delays_ms)
    {
        let c = &g["cadence"];
        let per_listing = c["requests_per_listing"].as_f64().unwrap_or(1.0).max(1.0);
        f.costs.push(per_listing);
        let mean_h = delays.iter().sum::<u64>() as f64 / delays.len().max(1) as f64 / HOUR as f64;
        let max_h = delays.iter().max().copied().unwrap_or(0) as f64 / HOUR as f64;
        f.explained.push(format!(
            "| {} | {:.2} | {:.2} | {:.2} h | {:.1} | {:.1} | {} | {mean_h:.2} h | {max_h:.2} h |",
            t.gateway,
            t.per_day,
            c["change_rate_per_day"].as_f64().unwrap_or(0.0),
            c["fresh_for_seconds"].as_f64().unwrap_or(0.0) / 3600.0,
            c["planned_listings_per_day"].as_f64().unwrap_or(0.0),
            sample.requests(t.gateway) as f64 / per_listing / days,
            delays.len(),
        ));
    }
    f
}

/// The mean change-to-listing lag (hours) of the square-root plan for `traces`' true
/// rates at `budget` requests a day (no window bounds): `Iᵢ = √(cᵢ / (μ λᵢ))` with `μ`
/// such that `Σ cᵢ · 24 / Iᵢ = budget`, which has a closed form.
fn bound_lag_hours(traces: &[Trace], costs: &[f64], budget: f64) -> f64 {
    // Σ cᵢ / Iᵢ = √μ Σ √(cᵢ λᵢ) = budget / 24 (I in hours, λ per hour).
    let busy: Vec<(f64, f64)> = traces
        .iter()
        .zip(costs)
        .map(|(t, &c)| (t.per_day / 24.0, c))
        .filter(|&(l, _)| l > 0.0)
        .collect();
    let root_mu = budget / 24.0 / busy.iter().map(|&(l, c)| (c * l).sqrt()).sum::<f64>();
    let total: f64 = busy.iter().map(|&(l, _)| l).sum();
    busy.iter()
        .map(|&(l, c)| l * (c / l).sqrt() / root_mu / 2.0)
        .sum::<f64>()
        / total
}

/// `--trace FILE`, `--budget F`, `--json OUT` (cargo's own `--bench` is ignored).
struct Args {
    trace: Option<String>,
    budget: Option<f64>,
    json: Option<String>,
    /// `--models N`: each fixture catalog cut to its first N models (a year of merges
    /// of every full catalog takes hours; the policies' requests and lags do not depend
    /// on the catalogs' size, their bytes do).
    models: Option<usize>,
    /// `--explain`: each gateway's true and learned rate, window and listings.
    explain: bool,
    /// `--set VAR=VALUE` (repeatable): more configuration for the learned runs (for
    /// example `REFRESH_DUE_HORIZON_SECONDS=10800`, to see what one knob costs).
    set: Vec<(String, String)>,
}

fn args() -> Args {
    let mut a = Args {
        trace: None,
        budget: None,
        json: None,
        models: None,
        explain: false,
        set: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--trace" => a.trace = it.next(),
            "--budget" => {
                a.budget = it
                    .next()
                    .map(|f| f.parse().expect("--budget F: a number (0.5 is half)"))
            }
            "--json" => a.json = it.next(),
            "--models" => a.models = it.next().map(|n| n.parse().expect("--models N: a count")),
            "--explain" => a.explain = true,
            "--set" => {
                let pair = it.next().expect("--set VAR=VALUE");
                let (k, v) = pair.split_once('=').expect("--set VAR=VALUE");
                a.set.push((k.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let args = args();
    let (traces, span) = match &args.trace {
        Some(path) => traces_from(path),
        None => (traces(), WEEK),
    };
    let fixtures: HashMap<&str, Vec<Value>> = sample_catalog::FIXTURES
        .iter()
        .map(|(g, json)| {
            let mut models: Vec<Value> = serde_json::from_str(json).unwrap();
            models.truncate(args.models.unwrap_or(usize::MAX));
            (*g, models)
        })
        .collect();
    let total_changes: usize = traces.iter().map(|t| t.changes.len()).sum();
    let days = span as f64 / DAY as f64;
    println!(
        "{}{}: {days:.1} days, {} gateways, {total_changes} upstream changes ({} on gateways changing more than daily), a read of `all` every {} min, the cron every {} h",
        args.trace.as_deref().unwrap_or("the default trace"),
        args.models
            .map(|n| format!(" (catalogs cut to {n} models)"))
            .unwrap_or_default(),
        traces.len(),
        traces
            .iter()
            .filter(|t| t.per_day > 1.0)
            .map(|t| t.changes.len())
            .sum::<usize>(),
        READ_EVERY / 60_000,
        CRON_EVERY / HOUR
    );
    // `--set` applies to the learned runs only: `fixed` is the baseline they are measured against.
    let set: Vec<(&str, &str)> = args.set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut runs = vec![
        ("fixed".to_string(), run("fixed", &[], &traces, span, &fixtures).await),
        (
            "learned".to_string(),
            run("learned", &set, &traces, span, &fixtures).await,
        ),
    ];
    if let Some(f) = args.budget {
        let budget = format!("{f}x");
        let mut vars = set.clone();
        vars.push(("REFRESH_BUDGET", &budget));
        runs.push((
            "budget".to_string(),
            run("learned", &vars, &traces, span, &fixtures).await,
        ));
    }
    let hours = |ms: f64| ms / HOUR as f64;
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let name = |n: &str| match n {
        "learned" => "`learned` (budget 1x)".to_string(),
        "budget" => format!("`learned`, budget {}x", args.budget.unwrap_or(1.0)),
        other => format!("`{other}`"),
    };
    println!();
    println!(
        "| per policy | {} |",
        runs.iter().map(|(n, _)| name(n)).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(runs.len()));
    let row = |label: &str, value: &dyn Fn(&Figures) -> f64, unit: &str| {
        let cells: Vec<String> = runs
            .iter()
            .map(|(_, f)| {
                let v = value(f);
                let base = value(&runs[0].1).max(1e-9);
                format!("{v:.2}{unit} ({:.2}x)", v / base)
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    let listings = |f: &Figures| f.listings as f64 / days;
    let bytes = |f: &Figures| f.bytes as f64 / days;
    let mean_lag = |f: &Figures| hours(mean(&f.delays_ms));
    let p95_lag = |f: &Figures| hours(pct(&f.delays_ms, 0.95));
    let stale = |f: &Figures| f.stale_reads as f64 / f.reads.max(1) as f64;
    row("upstream requests (pages) per day", &listings, "");
    row("upstream MB per day", &|f| bytes(f) / 1e6, "");
    row("change → served, mean", &mean_lag, " h");
    row("change → served, p95", &p95_lag, " h");
    row(
        "… gateways changing > daily, mean",
        &|f| hours(mean(&f.busy_delays_ms)),
        " h",
    );
    row("reads serving an out-of-date catalog", &|f| 100.0 * stale(f), " %");
    for (n, f) in &runs {
        println!(
            "{}: {} of {total_changes} changes served within the trace; {:.0} s real time",
            name(n),
            f.delays_ms.len(),
            f.seconds
        );
    }
    // The rule's own bound: the square-root plan with the true rates known, each gateway
    // listed exactly when its window ends and served at once (Σ λ I / 2 over Σ λ).
    let costs: Vec<f64> = {
        let status: Vec<f64> = runs[1].1.costs.clone();
        traces
            .iter()
            .enumerate()
            .map(|(i, _)| status.get(i).copied().unwrap_or(1.0))
            .collect()
    };
    let fixed_requests = runs[0].1.listings as f64 / days;
    for (n, _) in runs.iter().skip(1) {
        let budget = fixed_requests * if n == "budget" { args.budget.unwrap_or(1.0) } else { 1.0 };
        let lag = bound_lag_hours(&traces, &costs, budget);
        println!(
            "{}: the square-root rule with the true rates known, listing on time and serving at once: mean lag {lag:.2} h ({:.2}x)",
            name(n),
            lag / mean_lag(&runs[0].1).max(1e-9)
        );
    }
    println!(
        "targets: at the default budget, requests <= 1.0x fixed, mean lag <= 0.6x, p95 <= 1x; at half of it, requests <= 0.55x, mean lag <= 1.15x"
    );
    if args.explain {
        for (n, f) in &runs {
            println!(
                "\n{}: | gateway | true changes/day | learned | window | planned listings/day | listings/day | changes served | mean lag | max lag |",
                name(n)
            );
            f.explained.iter().for_each(|l| println!("{l}"));
        }
    }
    if let Some(out) = &args.json {
        let figures: serde_json::Map<String, Value> = runs
            .iter()
            .map(|(n, f)| {
                (
                    n.clone(),
                    json!({
                        "listings_per_day": listings(f),
                        "bytes_per_day": bytes(f),
                        "mean_lag_hours": mean_lag(f),
                        "p95_lag_hours": p95_lag(f),
                        "stale_read_share": stale(f),
                    }),
                )
            })
            .collect();
        std::fs::write(out, serde_json::to_vec_pretty(&figures).unwrap()).expect("--json OUT");
        println!("figures written to {out}");
    }
}
