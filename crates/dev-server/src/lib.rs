//! The local stack: every route on one port, through the same handlers as the
//! Vercel functions. Background work runs on a [`TaskSpawner`] so shutdown can
//! wait for it.

pub mod env_file;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_core::App;
use cache_core::Body;
use cache_core::RequestContext;
use cache_core::handlers::{self, Route};
use cache_core::spawn::TaskSpawner;
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Timeouts of the dev server's connections. The function binaries sit behind
/// Vercel's proxy, which has its own; the dev server faces clients directly.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request's headers must arrive within this (a client dripping one header line
    /// a second is cut off).
    pub header_read: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

/// How long the accept loop waits after an accept error (EMFILE: connections must
/// close before another can be accepted).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the dev server runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub limits: Limits,
    /// Run the cron route for a request from loopback when `CRON_SECRET` is unset
    /// (`--allow-local-cron`; `--demo` sets it). Off by default: behind a reverse
    /// proxy on the same host every client is loopback, so "loopback" alone must not
    /// run an upstream fetch per gateway for anyone. A request with forwarding headers
    /// (`Forwarded`, `X-Forwarded-For`, `Via`, ...) never counts as local.
    pub allow_local_cron: bool,
}

/// Serve until the task is dropped. Each connection gets its own task.
pub async fn serve(listener: TcpListener, app: Arc<App>, tasks: TaskSpawner) {
    serve_with(listener, app, tasks, Options::default()).await
}

/// [`serve`] with explicit options.
pub async fn serve_with(listener: TcpListener, app: Arc<App>, tasks: TaskSpawner, options: Options) {
    let limits = options.limits;
    let mut last_logged: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors (or another transient accept error): retrying at
            // once would spin a core. Log (once a second at most), back off, go on.
            Err(e) => {
                if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::error!(
                        "[Dev Server] accept failed ({e}); backing off {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    last_logged = Some(std::time::Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (app, tasks) = (app.clone(), tasks.clone());
        tokio::spawn(async move {
            // Requests in flight, and when the last one ended (for the idle timeout).
            let activity = Arc::new(Activity::default());
            let seen = activity.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (app, tasks, seen) = (app.clone(), tasks.clone(), seen.clone());
                async move {
                    let _busy = seen.begin();
                    Ok::<_, Infallible>(respond(req, peer, &app, tasks, options.allow_local_cron).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                // Our requests are a line and a few headers: a small read buffer bounds
                // what a client holding half-sent headers can pin in memory.
                .max_buf_size(16 * 1024)
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::pin!(conn);
            loop {
                let idle_for = activity.idle_for();
                let wait = limits.idle.saturating_sub(idle_for.unwrap_or_default());
                tokio::select! {
                    _ = &mut conn => return,
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {
                        if activity.idle_for().is_some_and(|d| d >= limits.idle) {
                            // Closes at once when idle; lets a request in flight finish.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.as_mut().await;
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Requests in flight on a connection and when it was last active.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last: parking_lot::Mutex<std::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: Default::default(),
            last: parking_lot::Mutex::new(std::time::Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How long the connection has had nothing in flight (None while a request runs).
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.last.lock().elapsed())
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock() = std::time::Instant::now();
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether a proxy forwarded this request (then its peer address says nothing about
/// the client).
fn forwarded(headers: &http::HeaderMap) -> bool {
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "via"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

/// The pages' static files, as Vercel serves them from `public/`: (path, content
/// type, content). The models page itself is the `page` route's HTML.
pub const STATIC_FILES: &[(&str, &str, &str)] = &[
    (
        "/status",
        "text/html; charset=utf-8",
        include_str!("../../../public/status.html"),
    ),
    (
        "/status.html",
        "text/html; charset=utf-8",
        include_str!("../../../public/status.html"),
    ),
    (
        "/status.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../public/status.js"),
    ),
    (
        "/status.css",
        "text/css; charset=utf-8",
        include_str!("../../../public/status.css"),
    ),
    (
        "/api-base.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../public/api-base.js"),
    ),
    (
        "/models.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../public/models.js"),
    ),
    (
        "/models.css",
        "text/css; charset=utf-8",
        include_str!("../../../public/models.css"),
    ),
];

/// The pages' Content-Security-Policy: what `vercel.json` (and the page route) send,
/// except that local API origins are allowed for `?api=` (a layout test compares them).
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-UG9WOW1JXaCsf2lA7eK4XTWCV/oOT0+nhYdtXzAtxGs='; \
    connect-src 'self' http://127.0.0.1:* http://localhost:*; img-src 'self' data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

async fn respond(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    app: &Arc<App>,
    tasks: TaskSpawner,
    allow_local_cron: bool,
) -> hyper::Response<Body> {
    let (parts, _body) = req.into_parts();
    let file = STATIC_FILES.iter().find(|(path, _, _)| *path == parts.uri.path());
    if let Some((_, content_type, content)) = file
        && (parts.method == http::Method::GET || parts.method == http::Method::HEAD)
    {
        return hyper::Response::builder()
            .header("content-type", *content_type)
            .header("cache-control", "no-cache")
            .header("content-security-policy", PAGE_CSP)
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer")
            .body(Body::from(Bytes::from_static(content.as_bytes())))
            .expect("static headers");
    }
    let route = match parts.uri.path() {
        "/" | "/models" | "/index.html" => Some(Route::Page),
        path => Route::from_path(path),
    };
    match route {
        Some(route) => {
            let ctx = RequestContext {
                local_loopback: allow_local_cron && peer.ip().is_loopback() && !forwarded(&parts.headers),
                ..RequestContext::new(app.clone(), Arc::new(tasks))
            };
            let mut response = handlers::handle(route, parts, ctx).await;
            if route == Route::Page {
                response
                    .headers_mut()
                    .insert("content-security-policy", http::HeaderValue::from_static(PAGE_CSP));
            }
            response
        }
        None => handlers::not_found(parts.uri.path()),
    }
}
