//! The collapse guard's exit: evidence.
//!
//! A catalog that collapses to a fraction of itself, or jumps by a large factor, is
//! suspect ([`super::Verdict::Doubt`]): an upstream that ignored the gateway filter
//! once, a half-deployed upstream. Held back for ever, though, a *real* change would
//! be refused for as long as the key lives (days), and a glitch accepted once would
//! be the reference every later, correct answer is judged against. So:
//!
//! - the reference is the **last accepted** catalog (the stored entry) and the
//!   **largest accepted within a day** (`guard:peak:<key>`), never an all-time high:
//!   steps of a fifth each (1,500 → 300 → 60) are a collapse at the second, and an
//!   answer after the held entry was evicted is judged as it would have been; a
//!   return to the peak is a recovery, not a jump. A spike is held, never accepted,
//!   so it is no peak; a doubt settled (confirmed, or the held catalog's time up)
//!   forgets the peak, and the memory ends a day after its catalog was accepted (its
//!   exit). A spike that got in is undone by the next correct answer, which is a
//!   collapse of the spike and is doubted only as long as below;
//! - a suspect answer is **evidence**, kept in the store (`guard:<key>`, shared by
//!   every instance): its size, how many fetches returned it, since when. The
//!   upstream answering the same size (within [`SAME_SIZE_PERCENT`]) on
//!   `GUARD_CONFIRM_FETCHES` fetches spread over at least `GUARD_CONFIRM_SECONDS`
//!   makes it the truth: it is stored like any answer;
//! - meanwhile the stored entry is served **held**: its head carries
//!   [`crate::entry::FLAG_HELD`] (the response says `X-Cache-Fail-Safe: 1`,
//!   `X-Cache-Fail-Safe-Reason: guard`, the status shows the evidence), fresh for
//!   the spacing the evidence needs from each doubted answer on (never past its
//!   stale window), so that reads revalidate and gather it, once per spacing (a
//!   fetch per key at a time, throttled by `REVALIDATE_RETRY_SECONDS`);
//! - an answer consistent with what is held clears the evidence and the mark;
//! - evidence not seen for a day is dropped (its key expires).
//!
//! The held entry's stale window and fail-safe never move while it is held: if the
//! upstream keeps answering inconsistent sizes, the held catalog goes stale, then
//! fail-safe, and at `kept_until` the upstream's answer is taken (it is all there
//! is: holding on would answer 503 while the upstream answers 200). A bound in
//! evidence, and one in time. Times are the store's (`TIME`), as entries' are.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Cache, CacheError, Payload};
use crate::clock::now_ms;
use crate::entry::{EntryMeta, FLAG_HELD};
use crate::keys;

/// Two answers "agree" on a catalog's size when they differ by at most this percent
/// (and at least 1 model): a real cut still changes a model or two between fetches.
const SAME_SIZE_PERCENT: u32 = 5;

/// `GUARD_CONFIRM_FETCHES` / `GUARD_CONFIRM_SECONDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuardSettings {
    /// Fetches that must agree (1: the first suspect answer is taken at once).
    pub fetches: u32,
    /// The least time from the first to the last of them.
    pub span: Duration,
}

impl GuardSettings {
    /// How long a held entry stays fresh: the spacing between the fetches the
    /// evidence needs (at least a second).
    fn spacing(&self) -> Duration {
        let gaps = self.fetches.saturating_sub(1).max(1);
        (self.span / gaps).max(Duration::from_secs(1))
    }
}

/// What the guard has seen of a suspect answer (`guard:<key>`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Evidence {
    /// Why it is suspect (bounded text).
    pub why: String,
    /// The suspect catalog's size.
    pub candidate: u32,
    /// The held (last accepted) catalog's size.
    pub held: u32,
    /// Fetches that returned it.
    pub seen: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    /// Until when the held catalog may be served (its `kept_until`, unix ms), kept here
    /// so that the time exit holds after the entry itself is evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until_ms: Option<u64>,
}

/// What weighing a suspect answer decided.
pub(super) enum Weighed {
    /// The evidence is in: store it.
    Confirmed,
    /// Not yet: hold what is stored.
    Held(CacheError),
}

fn same_size(a: u32, b: u32) -> bool {
    a.abs_diff(b) <= (a.min(b) / (100 / SAME_SIZE_PERCENT)).max(1)
}

impl Cache {
    /// Add this fetch to the evidence about `key` (the fetch holds the key's lock, so
    /// no other instance weighs the same key at once), and say whether it is in.
    /// `previous` is the stored entry (none: evicted, judged against the `peak` alone,
    /// with nothing to hold: the key then has no data of its own until the evidence
    /// is in, and the merged view carries what it had).
    pub(super) async fn weigh(
        &self,
        key: &str,
        payload: &Payload,
        previous: Option<&EntryMeta>,
        peak: Option<u32>,
        why: String,
    ) -> Weighed {
        let settings = self.settings.guard;
        let held_size = previous.map(|p| p.item_count).or(peak).unwrap_or(0);
        // The store's clock, as entries are stamped: an instance whose clock runs ahead
        // must not make the evidence look spread over the span it needs.
        let now = self.store.time_ms().await.unwrap_or_else(|_| now_ms());
        // The time exit: the held catalog may no longer be served (past its fail-safe),
        // so the upstream's answer is all there is. Holding on would answer 503 while
        // the upstream answers 200.
        let known = self.evidence(key).await;
        let held_until = previous
            .map(|p| p.clock.kept_until_ms)
            .or(known.as_ref().and_then(|e| e.held_until_ms));
        if held_until.is_some_and(|until| until <= now) {
            tracing::warn!(
                "[Cache SWR] {key}: {why}; the held catalog's fail-safe has ended: taking the upstream's answer"
            );
            self.forget_judgement(key).await;
            return Weighed::Confirmed;
        }
        // The same size again adds to what was seen; another size starts over.
        let (seen, first_ms) = match known {
            Some(e) if same_size(e.candidate, payload.item_count) => (e.seen.saturating_add(1), e.first_ms),
            _ => (1, now),
        };
        let evidence = Evidence {
            why: crate::upstream::bounded(&why),
            candidate: payload.item_count,
            held: held_size,
            seen,
            first_ms,
            last_ms: now,
            held_until_ms: held_until,
        };
        let span_ms = settings.span.as_millis() as u64;
        // One fetch needed: the first suspect answer is the truth at once, whatever the
        // span (a single fetch spans nothing).
        let spanned = settings.fetches <= 1 || evidence.last_ms.saturating_sub(evidence.first_ms) >= span_ms;
        if evidence.seen >= settings.fetches && spanned {
            tracing::warn!(
                "[Cache SWR] {key}: {why}; the upstream answered it on {} fetches over {} s: taking it as the truth",
                evidence.seen,
                evidence.last_ms.saturating_sub(evidence.first_ms) / 1000
            );
            self.forget_judgement(key).await;
            return Weighed::Confirmed;
        }
        let json = serde_json::to_vec(&evidence).expect("serializable");
        if let Err(e) = self
            .store
            .set(&keys::guard(key), Bytes::from(json), keys::GUARD_EVIDENCE_TTL)
            .await
        {
            tracing::warn!("[Cache SWR] {key}: the guard's evidence was not stored ({e})");
        }
        match previous {
            Some(previous) => {
                self.mark_held(key, previous).await;
                tracing::warn!(
                    "[Cache SWR] {key}: {why}; holding the last accepted catalog ({} models), seen {}/{}",
                    previous.item_count,
                    evidence.seen,
                    settings.fetches
                );
            }
            None => tracing::warn!(
                "[Cache SWR] {key}: {why}; its entry is gone, so nothing is stored until the upstream confirms it, seen {}/{}",
                evidence.seen,
                settings.fetches
            ),
        }
        Weighed::Held(CacheError::Held {
            why,
            seen: evidence.seen,
            needed: settings.fetches,
            span_s: settings.span.as_secs(),
        })
    }

    /// Mark the stored entry held, and make it fresh for the evidence's spacing from
    /// now (never past its stale window, which stays where it was, as does its
    /// fail-safe): reads then revalidate once per spacing, not on every request.
    async fn mark_held(&self, key: &str, previous: &EntryMeta) {
        if previous.previous_format() {
            return; // the previous release's key: not ours to mark
        }
        let mut head = previous.head();
        head.flags |= FLAG_HELD;
        let until = now_ms().saturating_add(self.settings.guard.spacing().as_millis() as u64);
        head.clock.fresh_until_ms = until.min(head.clock.stale_until_ms);
        let ttl = head.clock.key_ttl(now_ms());
        let new = crate::store::NewHead {
            head: head.encode(),
            stamp: previous.clock.fetched_at_ms,
            ttl,
        };
        if let Err(e) = self.store.rewrite_head(key, new).await {
            tracing::warn!("[Cache SWR] {key}: could not mark the held entry ({e})");
        }
        self.local.forget(key);
    }

    /// The evidence about `key`, if any (the status shows it).
    pub(crate) async fn evidence(&self, key: &str) -> Option<Evidence> {
        let raw = self.store.get(&keys::guard(key)).await.ok()??;
        serde_json::from_slice(&raw).ok()
    }

    /// The largest catalog accepted for `key` within the guard's memory.
    pub(crate) async fn peak(&self, key: &str) -> Option<u32> {
        let raw = self.store.get(&keys::guard_peak(key)).await.ok()??;
        std::str::from_utf8(&raw).ok()?.split(' ').next()?.parse().ok()
    }

    /// `count` models were accepted and stored for `key`, whose peak was `peak`: a
    /// larger catalog becomes the peak, remembered for [`keys::GUARD_MEMORY`] from
    /// now (an equal or smaller one writes nothing: an unchanged warm costs no write).
    pub(super) async fn remember_accepted(&self, key: &str, count: u32, peak: Option<u32>) {
        if peak.is_some_and(|p| count <= p) {
            return;
        }
        let at = self.store.time_ms().await.unwrap_or_else(|_| now_ms());
        let value = Bytes::from(format!("{count} {at}"));
        if let Err(e) = self.store.set(&keys::guard_peak(key), value, keys::GUARD_MEMORY).await {
            tracing::debug!("[Cache SWR] {key}: the guard's memory was not stored ({e})");
        }
    }

    /// A doubt is settled for the upstream (confirmed, or the held catalog's time is
    /// up): the evidence and the memory go, and the answer stored next is the new
    /// reference.
    async fn forget_judgement(&self, key: &str) {
        self.clear_evidence(key).await;
        if let Err(e) = self.store.delete(&keys::guard_peak(key)).await {
            tracing::debug!("[Cache SWR] {key}: the guard's memory was not cleared ({e})");
        }
    }

    /// Forget the evidence about `key`: the upstream agrees with what is stored.
    pub(super) async fn clear_evidence(&self, key: &str) {
        if let Err(e) = self.store.delete(&keys::guard(key)).await {
            tracing::debug!("[Cache SWR] {key}: the guard's evidence was not cleared ({e})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_agree_within_five_percent_and_one_model() {
        assert!(same_size(20, 20));
        assert!(same_size(20, 21), "one model either way");
        assert!(same_size(1000, 1050));
        assert!(!same_size(1000, 1051));
        assert!(!same_size(11, 413));
    }

    #[test]
    fn a_held_entry_is_fresh_for_the_spacing_the_evidence_needs() {
        let g = |fetches, secs| GuardSettings {
            fetches,
            span: Duration::from_secs(secs),
        };
        assert_eq!(g(3, 600).spacing(), Duration::from_secs(300));
        assert_eq!(g(1, 600).spacing(), Duration::from_secs(600));
        assert_eq!(g(5, 0).spacing(), Duration::from_secs(1), "at least a second");
    }
}
