//! Failures and retry windows this instance could not store.
//!
//! When the store refuses writes (a replica answering `READONLY`, a full server
//! under `noeviction`), a failed fetch can record neither `lasterror:` nor
//! `retryafter:`. Without them every stale read would fetch again and the status
//! would show nothing. They are kept here instead, per key, in process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::FetchFailure;

#[derive(Default)]
pub(super) struct HeldFailures {
    by_key: Mutex<HashMap<String, Held>>,
}

struct Held {
    failure: FetchFailure,
    /// No new fetch of the key before this (in this process).
    retry_at: Option<Instant>,
}

impl HeldFailures {
    pub(super) fn fail(&self, key: &str, failure: FetchFailure, window: Option<Duration>) {
        self.by_key.lock().insert(
            key.to_string(),
            Held {
                failure,
                retry_at: window.map(|w| Instant::now() + w),
            },
        );
    }

    pub(super) fn failure(&self, key: &str) -> Option<FetchFailure> {
        self.by_key.lock().get(key).map(|h| h.failure.clone())
    }

    /// What is left of the key's retry window, if one is open.
    pub(super) fn throttle_left(&self, key: &str) -> Option<Duration> {
        let left = self
            .by_key
            .lock()
            .get(key)?
            .retry_at?
            .checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }
}
