//! A lock shared by every instance: `SET key token PX ttl NX`, released by
//! compare-and-delete so an instance never frees a lock that expired and was
//! taken by another. The value also records when the holder started, so a second
//! caller can be told "a warm is running since ...".

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::clock::now_ms;
use crate::spawn::{Spawner, boxed};
use crate::store::{Store, StoreError};

pub(crate) struct LockGuard {
    store: Store,
    key: String,
    value: Bytes,
    released: bool,
    /// When the lock expires by itself: a failed release is retried until then.
    expires: Instant,
    /// Where a release after cancellation runs: `wait_until` on Vercel, so the
    /// release is not frozen with the instance after the response.
    spawner: Arc<dyn Spawner>,
}

/// Who holds a lock and since when (unix ms), as far as the value tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub since_ms: u64,
}

/// Try once to take `key` for `ttl`. `Ok(None)` means someone else holds it.
///
/// An attempt whose outcome is unknown (it timed out: a paused server applies it
/// when the pause ends) may leave a lock nobody owns. That ghost is removed by token
/// in the background, as soon as the store answers, until it would have expired.
pub(crate) async fn try_acquire(
    store: &Store,
    key: &str,
    ttl: Duration,
    spawner: &Arc<dyn Spawner>,
) -> Result<Option<LockGuard>, StoreError> {
    let value = Bytes::from(format!(
        "{:016x}{:016x}:{}",
        fastrand::u64(..),
        fastrand::u64(..),
        now_ms()
    ));
    match store.set_nx(key, value.clone(), ttl).await {
        Ok(true) => Ok(Some(LockGuard {
            store: store.clone(),
            key: key.to_string(),
            value,
            released: false,
            expires: Instant::now() + ttl,
            spawner: spawner.clone(),
        })),
        Ok(false) => Ok(None),
        Err(e) => {
            if !e.not_applied() {
                let until = Instant::now() + ttl;
                spawner.spawn(boxed(remove_ghost(store.clone(), key.to_string(), value, until)));
            }
            Err(e)
        }
    }
}

/// Delete `key` if it holds `value` (a lock taken by an attempt we gave up on), trying
/// until it is gone or would have expired: the attempt may be applied after our
/// first tries.
async fn remove_ghost(store: Store, key: String, value: Bytes, until: Instant) {
    while Instant::now() < until {
        if let Ok(true) = store.release(&key, &value).await {
            tracing::warn!("[Cache Lock] Removed {key}, taken by an attempt that had given up");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The current holder of `key`, if any.
pub(crate) async fn holder(store: &Store, key: &str) -> Result<Option<Holder>, StoreError> {
    Ok(store.get(key).await?.and_then(|v| {
        let s = std::str::from_utf8(&v).ok()?;
        let since_ms = s.rsplit_once(':')?.1.parse().ok()?;
        Some(Holder { since_ms })
    }))
}

impl LockGuard {
    /// Extend the lock to `ttl` from now, if it is still ours (a lease renewed while
    /// its holder runs). `false`: it expired or was taken meanwhile.
    pub(crate) async fn extend(&mut self, ttl: Duration) -> bool {
        match self.store.extend_if_equals(&self.key, &self.value, ttl).await {
            Ok(true) => {
                self.expires = Instant::now() + ttl;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn since_ms(&self) -> u64 {
        std::str::from_utf8(&self.value)
            .ok()
            .and_then(|s| s.rsplit_once(':'))
            .and_then(|(_, t)| t.parse().ok())
            .unwrap_or(0)
    }

    /// Release now (compare-and-delete). If the store does not answer (or its circuit
    /// breaker is open), keep retrying in the background, past the breaker, until the
    /// lock would have expired anyway: a lock left behind blocks every warm or fill
    /// until its TTL. The first try respects the breaker so that a request never
    /// waits out a command timeout on a store known to be down.
    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Err(e) = self.store.delete_if_equals(&self.key, &self.value).await {
            tracing::warn!("[Cache Lock] release of {} failed ({e}); retrying", self.key);
            self.retry_in_background();
        }
    }

    fn retry_in_background(&mut self) {
        let (store, key, value, expires) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            self.value.clone(),
            self.expires,
        );
        self.spawner.spawn(boxed(release_until(store, key, value, expires)));
    }
}

impl Drop for LockGuard {
    /// A holder dropped mid-flight (cancelled request) releases in the background,
    /// through the spawner, rather than keeping everyone out until the TTL.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.retry_in_background();
    }
}

/// Release `key` (if it still holds `value`), retrying with backoff until `expires`.
async fn release_until(store: Store, key: String, value: Bytes, expires: Instant) {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.release(&key, &value).await {
            Ok(_) => return,
            Err(e) if Instant::now() + delay >= expires => {
                tracing::warn!("[Cache Lock] release of {key} kept failing ({e}); it expires by itself");
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::TaskSpawner;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_dropped_holder_releases_through_the_spawner() {
        let store = Store::Memory(MemoryStore::new(""));
        let tasks = TaskSpawner::new();
        let spawner: Arc<dyn Spawner> = Arc::new(tasks.clone());
        let guard = try_acquire(&store, "lock:k", Duration::from_secs(60), &spawner)
            .await
            .unwrap()
            .expect("free");
        drop(guard); // a cancelled request
        assert_eq!(
            tasks.running(),
            1,
            "the release is background work the spawner knows of"
        );
        tasks.idle().await;
        assert!(
            try_acquire(&store, "lock:k", Duration::from_secs(60), &spawner)
                .await
                .unwrap()
                .is_some(),
            "released once the spawner's work is done"
        );
    }
}
