//! Logs and Sentry.
//!
//! Logs go through `tracing` with the seed's prefixes (`[Cache SWR]`,
//! `[Cache Warming]`, `[Cron]`), level from `RUST_LOG`, one line per event.
//!
//! Sentry is initialised only when `SENTRY_DSN` is set; otherwise nothing of it
//! runs. When on, tracing spans become Sentry transactions and spans (one
//! transaction per invocation, child spans for SWR reads, revalidations, store
//! calls and gateway fetches), info/warn logs become breadcrumbs, and failures are
//! captured explicitly with the seed's tags (`api_route`, `error_type`, `cron_job`).

use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use std::pin::Pin;

tokio::task_local! {
    /// The Vercel invocation this task works for. Log lines written while it is set go
    /// to the platform through the runtime's IPC log messages, attributed to that
    /// invocation; without it (local runs, start-up, the dev server) they go to stderr.
    static INVOCATION: Option<vercel_runtime::LogContext>;
}

/// Run `work` with its log lines attributed to `invocation` (None: plain stderr).
pub(crate) fn in_invocation<F: Future>(
    invocation: Option<vercel_runtime::LogContext>,
    work: F,
) -> impl Future<Output = F::Output> {
    INVOCATION.scope(invocation, work)
}

/// `work`, attributed to the invocation of the task that calls this: background work
/// (revalidations, flushes) logs under the invocation that started it.
pub(crate) fn inherit_invocation(
    work: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    match INVOCATION.try_with(|i| i.clone()) {
        Ok(Some(invocation)) => Box::pin(INVOCATION.scope(Some(invocation), work)),
        _ => work,
    }
}

/// `tracing`'s writer: one formatted event per [`LineSink`], sent when it drops.
struct InvocationWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for InvocationWriter {
    type Writer = LineSink;

    fn make_writer(&'a self) -> LineSink {
        LineSink {
            level: tracing::Level::INFO,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineSink {
        LineSink {
            level: *meta.level(),
            line: Vec::new(),
        }
    }
}

struct LineSink {
    level: tracing::Level,
    line: Vec<u8>,
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let sent = INVOCATION
            .try_with(|invocation| {
                let Some(log) = invocation else { return false };
                let text = String::from_utf8_lossy(&self.line);
                let text = text.trim_end();
                match self.level {
                    tracing::Level::ERROR => log.error(text),
                    tracing::Level::WARN => log.warn(text),
                    tracing::Level::INFO => log.info(text),
                    _ => log.debug(text),
                }
                true
            })
            .unwrap_or(false);
        if !sent {
            let _ = std::io::stderr().write_all(&self.line);
        }
    }
}

static SENTRY: OnceLock<Option<sentry::ClientInitGuard>> = OnceLock::new();

/// Install logging (and Sentry when `SENTRY_DSN` is set), from the process
/// environment. Idempotent.
pub fn init() {
    init_from(&|k: &str| std::env::var(k).ok());
}

/// [`init`] reading `RUST_LOG`, `SENTRY_*` and `VERCEL*` through `get` (the dev
/// server passes its `.env` files without putting them in the process environment).
pub fn init_from(get: &dyn Fn(&str) -> Option<String>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, filter::LevelFilter};

    let sentry_on = SENTRY.get_or_init(|| init_sentry(get)).is_some();
    let deployed = crate::config::is_deployed(get);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(!deployed && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_writer(InvocationWriter)
        .compact()
        .with_filter(
            get("RUST_LOG")
                .and_then(|f| EnvFilter::try_new(f).ok())
                .unwrap_or_else(|| EnvFilter::new("info")),
        );
    let sentry_layers = sentry_on.then(|| {
        use sentry::integrations::tracing::{BreadcrumbLayer, SpanLayer};
        SpanLayer::new()
            .with_filter(LevelFilter::INFO)
            .and_then(BreadcrumbLayer::new().with_filter(LevelFilter::INFO))
    });
    let _ = tracing_subscriber::registry().with(fmt).with(sentry_layers).try_init();
}

fn init_sentry(get: &dyn Fn(&str) -> Option<String>) -> Option<sentry::ClientInitGuard> {
    let dsn = get("SENTRY_DSN").filter(|d| !d.trim().is_empty())?;
    let Ok(dsn) = dsn.trim().parse::<sentry::types::Dsn>() else {
        eprintln!("SENTRY_DSN is not a valid DSN; Sentry stays off");
        return None;
    };
    let rate = get("SENTRY_TRACES_SAMPLE_RATE")
        .and_then(|r| r.parse::<f32>().ok())
        .unwrap_or(0.1);
    let mut options = sentry::ClientOptions::new()
        .traces_sample_rate(rate.clamp(0.0, 1.0))
        .release(concat!("gatewayz-model-cache@", env!("CARGO_PKG_VERSION")))
        .send_default_pii(false);
    options.dsn = Some(dsn);
    if let Some(env) = get("VERCEL_ENV") {
        options = options.environment(env);
    }
    Some(sentry::init(options))
}

pub(crate) fn sentry_enabled() -> bool {
    SENTRY.get().is_some_and(Option::is_some)
}

/// Report a failure as a Sentry event with the seed's tags. A no-op without Sentry.
pub(crate) fn capture_failure(api_route: &str, error_type: &str, cron_job: Option<&str>, message: &str) {
    if !sentry_enabled() {
        return;
    }
    sentry::with_scope(
        |scope| {
            scope.set_tag("api_route", api_route);
            scope.set_tag("error_type", error_type);
            if let Some(job) = cron_job {
                scope.set_tag("cron_job", job);
            }
        },
        || sentry::capture_message(message, sentry::Level::Error),
    );
}

/// Flush queued Sentry envelopes, on a blocking thread (`flush` blocks). Run after
/// the response, as background work (on Vercel, `wait_until`).
pub(crate) async fn flush_sentry() {
    // Let spans that close with the response reach the transport first.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = tokio::task::spawn_blocking(|| {
        if let Some(client) = sentry::Hub::current().client() {
            client.flush(Some(Duration::from_secs(2)));
        }
    })
    .await;
}
