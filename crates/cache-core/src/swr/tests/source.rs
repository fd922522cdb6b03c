//! A scripted upstream for SWR tests: counts calls, can be slow, fail or answer empty.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::spawn::{BoxFuture, Spawner, TaskSpawner};
use crate::swr::{Payload, Purpose, Source, SourceError};
use crate::ttl::TtlPolicy;
use bytes::Bytes;

#[derive(Clone, Debug)]
pub(crate) enum Behaviour {
    /// Answer with this many items, tagged with the call number.
    Items(u32),
    Fail(&'static str),
    Hang,
}

pub(crate) struct ScriptedSource {
    /// Where the reads of this source leave their background work (revalidations):
    /// a test waits for them with `src.tasks.idle()`.
    pub tasks: TaskSpawner,
    pub calls: AtomicUsize,
    pub behaviour: Mutex<Behaviour>,
    pub delay: Duration,
    pub ttl: TtlPolicy,
    pub deadline: Duration,
}

impl ScriptedSource {
    pub(crate) fn new(fresh_ms: u64, stale_ms: u64) -> Arc<Self> {
        Arc::new(ScriptedSource {
            tasks: TaskSpawner::new(),
            calls: AtomicUsize::new(0),
            behaviour: Mutex::new(Behaviour::Items(3)),
            delay: Duration::ZERO,
            ttl: TtlPolicy::new(Duration::from_millis(fresh_ms), Duration::from_millis(stale_ms), 0),
            deadline: Duration::from_secs(2),
        })
    }

    pub(crate) fn with_delay(fresh_ms: u64, stale_ms: u64, delay: Duration) -> Arc<Self> {
        let mut s = Arc::into_inner(Self::new(fresh_ms, stale_ms)).unwrap();
        s.delay = delay;
        Arc::new(s)
    }

    pub(crate) fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Source for ScriptedSource {
    fn category(&self) -> &'static str {
        "models"
    }
    fn ttl(&self) -> TtlPolicy {
        self.ttl
    }
    fn deadline(&self) -> Duration {
        self.deadline
    }
    fn spawner(&self) -> Arc<dyn Spawner> {
        Arc::new(self.tasks.clone())
    }
    fn fetch(self: Arc<Self>, _purpose: Purpose) -> BoxFuture<Result<Payload, SourceError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            let b = self.behaviour.lock().unwrap().clone();
            match b {
                Behaviour::Items(k) => Ok(Payload::new(
                    Bytes::from(format!(
                        r#"{{"call":{n},"data":[{}]}}"#,
                        vec!["{}"; k as usize].join(",")
                    )),
                    k,
                )),
                Behaviour::Fail(m) => Err(SourceError::Unavailable(m.to_string())),
                Behaviour::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!()
                }
            }
        })
    }
}

/// The `call` number recorded in a payload built by [`ScriptedSource`].
pub(crate) fn call_of(entry: &crate::entry::Entry) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&entry.identity().unwrap()).unwrap();
    v["call"].as_u64().unwrap()
}
