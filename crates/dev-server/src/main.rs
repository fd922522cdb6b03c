//! `cargo run --release -p dev-server [-- --demo] [--port N]`
//!
//! Serves `/api/models`, `/api/cache/warm-models` and `/api/cron/warm-cache` on
//! 127.0.0.1:$PORT (default 3000). Uses Redis when `REDIS_URL` is set, else the
//! embedded store. `--demo` also starts the sample catalog API on loopback and
//! points the upstream at it: real models with no network and nothing installed.

use std::net::SocketAddr;
use std::time::Duration;

use cache_core::config::Config;
use cache_core::spawn::TaskSpawner;

#[tokio::main]
async fn main() {
    let env = match dev_server::env_file::EnvFiles::load(std::path::Path::new(".")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot read env file {e}");
            std::process::exit(2);
        }
    };
    cache_core::telemetry::init_from(&|k: &str| env.get(k));

    let mut demo = false;
    let mut allow_local_cron = false;
    let mut port: Option<u16> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--demo" => demo = true,
            "--allow-local-cron" => allow_local_cron = true,
            "--port" => port = args.next().and_then(|p| p.parse().ok()),
            "-h" | "--help" => {
                println!(
                    "usage: dev-server [--demo] [--allow-local-cron] [--port N]   (env: PORT, REDIS_URL, GATEWAYZ_API_URL, ...; see README)\n  --demo              the sample catalog API as the upstream; implies --allow-local-cron\n  --allow-local-cron  run the cron route for loopback requests when CRON_SECRET is unset"
                );
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; try --help");
                std::process::exit(2);
            }
        }
    }
    let port = port
        .or_else(|| env.get("PORT").and_then(|p| p.parse().ok()))
        .unwrap_or(3000);

    let mut config = match Config::from_vars(env.vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    // The dev server is never a deployment, even with VERCEL=1 in a pulled .env.local.
    config.deployed = false;
    let _sample = if demo {
        let sample = sample_catalog::start_local().await;
        config.upstream_base_url = cache_core::config::SecretUrl::new(sample.base_url());
        Some(sample)
    } else {
        None
    };

    let app = match cache_core::App::new(config) {
        Ok(c) => c,
        Err(_) => {
            eprintln!("configuration error: REDIS_URL is not a valid redis://, rediss:// or redis-cluster:// URL");
            std::process::exit(2);
        }
    };
    cache_core::global::set_global_app(app.clone());

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let c = &app.config;
    let env_files = if env.loaded.is_empty() {
        "none".to_string()
    } else {
        env.loaded.join(", ")
    };
    tracing::info!("dev-server on http://{addr}");
    tracing::info!("env files loaded: {env_files}");
    tracing::info!(
        "store: {}; upstream: {}{}",
        app.store_backend(),
        c.upstream_base_url,
        if demo { " (sample app, --demo)" } else { "" }
    );
    tracing::info!(
        "manual warm: {}; cron auth: {}",
        if c.warming_secret.is_some() {
            "enabled (CACHE_WARMING_SECRET set)"
        } else {
            "disabled (set CACHE_WARMING_SECRET)"
        },
        match (c.cron_secret.is_some(), demo || allow_local_cron) {
            (true, _) => "CRON_SECRET required",
            (false, true) =>
                "CRON_SECRET unset: direct loopback requests accepted (--allow-local-cron; development only)",
            (false, false) => "CRON_SECRET unset: refused (set it, or pass --allow-local-cron)",
        }
    );
    tracing::info!("try: curl http://{addr}/api/models?gateway=all");

    let tasks = TaskSpawner::new();
    tokio::select! {
        _ = dev_server::serve_with(listener, app.clone(), tasks.clone(), dev_server::Options {
            allow_local_cron: demo || allow_local_cron,
            ..Default::default()
        }) => {}
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down; waiting for {} background task(s)", tasks.running());
            let _ = tokio::time::timeout(Duration::from_secs(10), tasks.idle()).await;
        }
    }
}
