//! The Vercel function glue: a route binary is `vercel::serve(Route::X)`.
//!
//! Background work (SWR revalidation) goes through `AppState::wait_until`, so the
//! invocation stays alive until it finishes (vercel_runtime >= 2.4.1), and nothing
//! else may keep it open: the platform bills an invocation until its `end` message.
//!
//! Under the platform (`VERCEL_IPC_PATH`), an invocation's log lines go to the
//! platform attributed to it; at SIGTERM the runtime drains `wait_until` work and
//! returns, and the counters still pending in-process are flushed before exit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use vercel_runtime::{AppState, Error, Request, Response, ResponseBody};

use crate::app::RequestContext;
use crate::body::Body;
use crate::global::{global_app, init_tracing};
use crate::handlers::{self, Route};
use crate::spawn::WaitUntil;
use crate::telemetry::in_invocation;

/// Buffered responses above this go out streamed: Vercel caps buffered bodies at
/// 4.5 MB, and the merged catalog uncompressed is above that.
const STREAM_ABOVE: usize = 4 * 1024 * 1024;
const STREAM_CHUNK: usize = 256 * 1024;

pub async fn serve(route: Route) -> Result<(), Error> {
    limit_malloc_arenas();
    init_tracing();
    // Built at start, not on the first request: a deployment missing its configuration
    // logs one error now, and every request then answers 503 naming the variable.
    if let Err(e) = global_app() {
        tracing::error!("[Config] {e}; every request answers 503 until it is set");
    }
    let under_platform = std::env::var_os("VERCEL_IPC_PATH").is_some();
    let service = vercel_runtime::service_fn(move |req: Request, state: AppState| async move {
        let invocation = (under_platform && is_invocation(&req)).then(|| state.log_context.clone());
        Ok::<_, Error>(in_invocation(invocation, respond(route, req, state)).await)
    });
    let served = run_until_sigterm(|| vercel_runtime::run(service.clone())).await;
    // SIGTERM: the runtime has drained every `wait_until`; what is still counted only
    // in-process reaches the shared counters now or never.
    if let Ok(app) = global_app() {
        app.flush_metrics().await;
    }
    served
}

/// `vercel_runtime::run`, again whenever it stops on an error, until SIGTERM.
///
/// Why: the runtime's accept loop returns on the first accept error. Out of file
/// descriptors ("Too many open files", e.g. many idle keep-alive connections), the
/// process would exit and every request in flight with it. Instead it logs, backs off
/// (50 ms doubling to 1 s) so connections can close, and calls `run` again: that binds
/// the same port (`VERCEL_DEV_PORT`) and, under the platform, connects to
/// `VERCEL_IPC_PATH` and announces the same port again. Connections already accepted
/// keep being served meanwhile; new ones are refused until the port is bound again.
async fn run_until_sigterm<F, Fut>(run: F) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    // Our own SIGTERM listener, made before the first run: a SIGTERM that arrives
    // while we back off (no `run` listening) is not lost.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = std::time::Instant::now();
        let Err(e) = run().await else {
            return Ok(());
        };
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(50);
        }
        tracing::error!(
            "[Runtime] Stopped accepting connections ({e}); serving again in {} ms",
            backoff.as_millis()
        );
        // Again only once a few descriptors are free. `run` first connects to
        // `VERCEL_IPC_PATH`, silently going without IPC if that fails, then binds the
        // port: if a descriptor frees between the two, it would serve with no IPC and
        // no invocation would ever end. Waiting for headroom narrows that race (it
        // cannot close it: the check and `run` are not atomic).
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = sigterm.recv() => return Ok(()),
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if descriptors_free(4) {
                break;
            }
        }
    }
}

/// Whether `n` more file descriptors can be opened now (each is closed again).
fn descriptors_free(n: usize) -> bool {
    let probes: Vec<_> = (0..n).map_while(|_| std::fs::File::open("/dev/null").ok()).collect();
    probes.len() == n
}

/// At most `MALLOC_ARENAS` glibc malloc arenas. By default glibc gives threads up to
/// 8 per core, and a warm allocates its large buffers (pages, merged JSON, compressed
/// bodies) on whichever blocking-pool thread runs each stage: memory freed in one
/// arena is not reused by another, so the resident set grows with the number of
/// threads that ever held a big buffer. Measured on a release `cache-warm-models`
/// (warm of all 21, Featherless at 18,000 models, 3 runs each): default 300-327 MB
/// peak RSS, warm 1.58-1.64 s; 4 arenas 215-239 MB, 1.68-1.76 s; 2 arenas 209-233 MB
/// but 1.92-1.97 s (contention). The hot path makes ~4 small allocations per read.
/// Called after the runtime's workers started (they keep theirs); the blocking pool's
/// threads, where the big buffers live, share the rest.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MALLOC_ARENAS: libc::c_int = 4;
        // SAFETY: mallopt only sets an allocator parameter; no memory is touched.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// The platform's invocation headers, which the runtime needs to attribute logs.
fn is_invocation(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key("x-vercel-internal-invocation-id")
        && h.get("x-vercel-internal-request-id")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.parse::<u64>().is_ok())
}

async fn respond(route: Route, req: Request, state: AppState) -> Response<ResponseBody> {
    let (parts, _body) = req.into_parts();
    let response = match global_app() {
        // A function binary always listens on loopback, deployed or not: the
        // loopback exception of the cron route belongs to the dev server alone.
        Ok(app) => {
            let ctx = RequestContext::new(app.clone(), Arc::new(WaitUntil(state)));
            handlers::handle(route, parts, ctx).await
        }
        Err(e) => e.response(),
    };
    into_vercel(response)
}

/// Convert, streaming bodies too large for a buffered response.
pub(crate) fn into_vercel(response: http::Response<Body>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    if body.len() <= STREAM_ABOVE {
        return Response::from_parts(parts, ResponseBody(body.map_err(|e| match e {}).boxed()));
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let chunks: Vec<Result<Frame<Bytes>, Error>> = body
        .parts()
        .flat_map(|part| {
            (0..part.len())
                .step_by(STREAM_CHUNK)
                .map(|start| Ok(Frame::data(part.slice(start..(start + STREAM_CHUNK).min(part.len())))))
        })
        .collect();
    // The body (and any permit it holds) lives until the last chunk is sent.
    let stream = futures_util::stream::iter(chunks).chain(futures_util::stream::once(async move {
        drop(body);
        Ok(Frame::data(Bytes::new()))
    }));
    Response::from_parts(parts, ResponseBody(BodyExt::boxed(StreamBody::new(stream))))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn frames(r: Response<ResponseBody>) -> (http::response::Parts, Vec<Bytes>) {
        let (parts, mut body) = r.into_parts();
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        (parts, out)
    }

    #[tokio::test]
    async fn small_bodies_are_buffered_large_ones_streamed_intact() {
        let small = http::Response::builder()
            .header("content-length", "3")
            .body(Body::from(Bytes::from_static(b"abc")))
            .unwrap();
        let (parts, out) = frames(into_vercel(small)).await;
        assert_eq!(parts.headers["content-length"], "3");
        assert_eq!(out.concat(), b"abc");

        let big: Bytes = (0..5 * 1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let resp = http::Response::builder()
            .header("content-length", big.len())
            .body(Body::from_parts([big.slice(..1000), big.slice(1000..)]))
            .unwrap();
        let (parts, out) = frames(into_vercel(resp)).await;
        assert!(
            parts.headers.get("content-length").is_none(),
            "streamed (chunked), exempt from the 4.5 MB cap"
        );
        assert!(out.len() > 1 && out.iter().all(|f| f.len() <= STREAM_CHUNK));
        assert_eq!(Bytes::from(out.concat()), big, "every byte, in order");
    }
}
