//! `sample-catalog [--port N] [--latency gw=ms,...] [--scale gw=n,...]`: run the
//! sample catalog API on loopback (default port 8000).

use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut port = 8000u16;
    let mut latency = String::new();
    let mut scale = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|v| v.parse().ok()).expect("--port N"),
            "--latency" => latency = args.next().expect("--latency gw=ms,..."),
            "--scale" => scale = args.next().expect("--scale gw=n,..."),
            _ => {
                eprintln!("usage: sample-catalog [--port N] [--latency gw=ms,...] [--scale gw=n,...]");
                std::process::exit(2);
            }
        }
    }
    let h = sample_catalog::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind");
    for (gw, v) in pairs(&latency) {
        h.set_latency(&gw, Duration::from_millis(v as u64));
    }
    for (gw, v) in pairs(&scale) {
        h.scale(&gw, v);
    }
    println!(
        "sample catalog API on {} (GET /v1/models?gateway=<id>&limit=&offset=)",
        h.base_url()
    );
    tokio::signal::ctrl_c().await.ok();
}

fn pairs(s: &str) -> Vec<(String, usize)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.trim_end_matches("ms").parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}
