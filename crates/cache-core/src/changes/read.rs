//! Reading the log: `GET /api/models/changes` and the Atom feed.
//!
//! The cursor is a log id (`<ms>-<seq>`, the order entries were appended in), opaque
//! to clients. Paging forward with `since` never skips nor repeats a change while new
//! ones arrive: a commit appends all its changes in one script, after every id
//! already given out.

use super::{LOG_MAX_AGE, LOG_MAX_EVENTS};
use crate::contract::{Change, ChangeKind, ChangesResponse};
use crate::store::{LogFrom, LogId, Store, StoreError};

/// Changes in an answer when `limit` is not given, and at most.
pub(crate) const DEFAULT_LIMIT: usize = 50;
pub(crate) const MAX_LIMIT: usize = 500;
/// Log entries read per round trip.
const CHUNK: usize = 500;

/// What a client asks the log for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Query {
    /// After this cursor, oldest first; `None`: the newest first.
    pub since: Option<LogId>,
    pub gateway: Option<String>,
    /// `bulk` changes count for a kind they include.
    pub kinds: Vec<ChangeKind>,
    pub limit: usize,
}

impl Query {
    fn wants(&self, c: &Change) -> bool {
        self.gateway.as_ref().is_none_or(|g| *g == c.gateway)
            && (self.kinds.is_empty()
                || self
                    .kinds
                    .iter()
                    .any(|k| c.kind == *k || (c.kind == ChangeKind::Bulk && c.counts.is_some_and(|n| n.of(*k) > 0))))
    }
}

/// A cursor as clients send it back (`0`: from the start of the log): `None` when it
/// is not one.
pub(crate) fn parse_cursor(s: &str) -> Option<LogId> {
    match s.trim() {
        "0" => Some(LogId::ZERO),
        s => LogId::parse(s),
    }
}

/// The changes `q` asks for, read in chunks: at most the whole log (its bound) per
/// answer, whatever the filters.
pub(crate) async fn read(store: &Store, q: &Query, now_ms: u64) -> Result<ChangesResponse, StoreError> {
    let oldest_ms = now_ms.saturating_sub(LOG_MAX_AGE.as_millis() as u64);
    let mut changes = Vec::new();
    let mut from = match q.since {
        Some(c) => LogFrom::After(c),
        None => LogFrom::Before(None),
    };
    let mut next = q.since;
    let mut scanned = 0;
    'chunks: while scanned < LOG_MAX_EVENTS + CHUNK {
        let chunk = store.log_range(crate::keys::CHANGES_LOG, from, CHUNK).await?;
        scanned += chunk.len();
        for (id, record) in &chunk {
            match q.since {
                // Forward: the cursor moves over every entry read.
                Some(_) => next = Some(*id),
                // Newest first: the cursor is the newest entry.
                None if next.is_none() => next = Some(*id),
                None => {}
            }
            if id.ms < oldest_ms {
                continue;
            }
            let Ok(change) = serde_json::from_slice::<Change>(record) else {
                continue;
            };
            if q.wants(&change) {
                changes.push(change);
                if changes.len() >= q.limit {
                    break 'chunks;
                }
            }
        }
        match chunk.last() {
            Some((last, _)) if chunk.len() == CHUNK => {
                from = match from {
                    LogFrom::After(_) => LogFrom::After(*last),
                    LogFrom::Before(_) => LogFrom::Before(Some(*last)),
                }
            }
            _ => break,
        }
    }
    Ok(ChangesResponse {
        changes,
        next: next.unwrap_or(LogId::ZERO).to_string(),
    })
}
