//! Where background work runs.
//!
//! On Vercel a bare `tokio::spawn` after the response may be frozen with the
//! function and never finish (docs/design.md, failure 3: SWR silently becomes "stale forever").
//! So background work is handed to an injected [`Spawner`]: on Vercel it wraps
//! `AppState::wait_until`, which keeps the invocation alive until the work ends;
//! locally it is [`TaskSpawner`], a `tokio::spawn` that also counts its tasks so
//! tests and graceful shutdown can wait for them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub trait Spawner: Send + Sync + 'static {
    fn spawn(&self, work: BoxFuture<()>);
}

/// `tokio::spawn`, with a count of running tasks and a way to wait for zero.
#[derive(Clone, Default)]
pub struct TaskSpawner {
    inner: Arc<Tracked>,
}

#[derive(Default)]
struct Tracked {
    running: AtomicUsize,
    idle: Notify,
}

impl TaskSpawner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Wait until every task spawned so far (and any they spawned) has finished.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Spawner for TaskSpawner {
    fn spawn(&self, work: BoxFuture<()>) {
        let inner = self.inner.clone();
        inner.running.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            // Decrement even if `work` panics: the guard runs on unwind.
            struct Done(Arc<Tracked>);
            impl Drop for Done {
                fn drop(&mut self) {
                    if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                        self.0.idle.notify_waiters();
                    }
                }
            }
            let _done = Done(inner);
            work.await;
        });
    }
}

/// Vercel's `wait_until`: the invocation stays alive until the work settles.
pub(crate) struct WaitUntil(pub vercel_runtime::AppState);

impl Spawner for WaitUntil {
    fn spawn(&self, work: BoxFuture<()>) {
        // Background work logs under the invocation that started it.
        self.0.wait_until(crate::telemetry::inherit_invocation(work));
    }
}

/// Boxes a future for a [`Spawner`].
pub(crate) fn boxed<F: Future<Output = ()> + Send + 'static>(f: F) -> BoxFuture<()> {
    Box::pin(f)
}
