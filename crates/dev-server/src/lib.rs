//! The local stack: every route on one port, through the same handlers as the
//! Vercel functions. Background work runs on a [`TaskSpawner`] so shutdown can
//! wait for it.

pub mod env_file;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::Catalog;
use cache_core::handlers::{self, RequestContext, Route};
use cache_core::spawn::TaskSpawner;
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Serve until the task is dropped. Each connection gets its own task.
pub async fn serve(listener: TcpListener, catalog: Arc<Catalog>, tasks: TaskSpawner) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (catalog, tasks) = (catalog.clone(), tasks.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (catalog, tasks) = (catalog.clone(), tasks.clone());
                async move { Ok::<_, Infallible>(respond(req, peer, &catalog, tasks).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The models page (`public/index.html`), the same file Vercel serves statically.
pub const MODELS_PAGE: &str = include_str!("../../../public/index.html");
/// The status page (`public/status.html`), served at `/status` like Vercel's rewrite.
pub const STATUS_PAGE: &str = include_str!("../../../public/status.html");

async fn respond(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    catalog: &Arc<Catalog>,
    tasks: TaskSpawner,
) -> hyper::Response<Full<Bytes>> {
    let (parts, _body) = req.into_parts();
    let page = match parts.uri.path() {
        "/" | "/models" | "/index.html" => Some(MODELS_PAGE),
        "/status" | "/status.html" => Some(STATUS_PAGE),
        _ => None,
    };
    if let Some(page) = page
        && parts.method == http::Method::GET
    {
        return hyper::Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from_static(page.as_bytes())))
            .expect("static headers");
    }
    let response = match Route::from_path(parts.uri.path()) {
        Some(route) => {
            let ctx = RequestContext {
                local_loopback: peer.ip().is_loopback(),
            };
            handlers::handle(route, parts, catalog, Arc::new(tasks), ctx).await
        }
        None => handlers::not_found(parts.uri.path()),
    };
    response.map(Full::new)
}
