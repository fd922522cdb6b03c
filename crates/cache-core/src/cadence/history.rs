//! A gateway's change history as the store keeps it: one compact record per stored
//! fetch, appended to a list (`RPUSH` + `LTRIM`), so that an observation costs the
//! store a few dozen bytes whatever the history's length. Every instance reads the
//! same list; the previous release's JSON document (`cadence:<key>`) is read beside it.
//!
//! A record is text, fields separated by spaces:
//!
//! ```text
//!   <at_ms> <interval_ms> <changed 0|1> <requests> <tag>
//!   1796000000000 14400000 1 3 9f2c6a1e0b7d4c55
//! ```
//!
//! `at_ms` is the store's clock when the look was recorded (one clock for every
//! instance); `interval_ms` the time since the previous look (0: the first look, a
//! baseline that observes nothing); `requests` the upstream requests the listing took
//! (its cost); `tag` 16 hex digits of the content's ETag, to tell the next look whether
//! the catalog changed.

use bytes::Bytes;
use serde::Deserialize;

/// Records kept per gateway (the oldest go first).
pub(crate) const MAX_RECORDS: usize = 128;

/// One look at the upstream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Observation {
    /// When (unix ms, the store's clock).
    pub at_ms: u64,
    /// Since the previous look (ms).
    pub interval_ms: u64,
    pub changed: bool,
}

/// One stored record: a look, what it cost, and the content's tag.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub at_ms: u64,
    /// 0: the first look (a baseline, no observation).
    pub interval_ms: u64,
    pub changed: bool,
    /// Upstream requests the listing took.
    pub requests: u32,
    pub tag: String,
}

impl Record {
    /// The record of a look at `at_ms` that found content `etag` after `last` (none:
    /// the first look), costing `requests`. `None`: a look not after the last one (a
    /// slower fetch that started earlier, or the same instant seen twice) counts nothing.
    pub(crate) fn after(last: Option<&Record>, at_ms: u64, etag: &str, requests: u32) -> Option<Record> {
        let tag = tag_of(etag);
        let (interval_ms, changed) = match last {
            None => (0, false),
            Some(last) if at_ms <= last.at_ms => return None,
            Some(last) => (at_ms - last.at_ms, last.tag != tag),
        };
        Some(Record {
            at_ms,
            interval_ms,
            changed,
            requests,
            tag,
        })
    }

    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{} {} {} {} {}",
            self.at_ms,
            self.interval_ms,
            u8::from(self.changed),
            self.requests,
            self.tag
        ))
    }

    /// A stored record; `None` for anything else (a record of a later format is skipped,
    /// never misread).
    pub(crate) fn decode(raw: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut f = text.split(' ');
        let record = Record {
            at_ms: f.next()?.parse().ok()?,
            interval_ms: f.next()?.parse().ok()?,
            changed: match f.next()? {
                "0" => false,
                "1" => true,
                _ => return None,
            },
            requests: f.next()?.parse().ok()?,
            tag: f.next()?.to_string(),
        };
        f.next().is_none().then_some(record)
    }

    /// The observation this record is (`None` for a baseline).
    pub(crate) fn observation(&self) -> Option<Observation> {
        (self.interval_ms > 0).then_some(Observation {
            at_ms: self.at_ms,
            interval_ms: self.interval_ms,
            changed: self.changed,
        })
    }
}

/// 16 hex digits of an ETag (`"m-<32 hex>"`): enough to tell two catalogs apart.
fn tag_of(etag: &str) -> String {
    let hex: String = etag.chars().filter(char::is_ascii_hexdigit).collect();
    let start = hex.len().saturating_sub(16);
    hex[start..].to_string()
}

/// What is known of a gateway's changes: its records and the previous release's
/// observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct History {
    pub records: Vec<Record>,
    /// Observations the previous release recorded (its JSON document), read as evidence.
    pub previous_release: Vec<Observation>,
}

impl History {
    /// From the stored list and the previous release's document (either may be absent).
    pub(crate) fn read(list: &[Bytes], previous_release: Option<&[u8]>) -> History {
        History {
            records: list.iter().filter_map(|r| Record::decode(r)).collect(),
            previous_release: previous_release.map(legacy_observations).unwrap_or_default(),
        }
    }

    /// Every observation, both releases', oldest first.
    pub(crate) fn observations(&self) -> Vec<Observation> {
        let mut all: Vec<Observation> = self
            .previous_release
            .iter()
            .copied()
            .chain(self.records.iter().filter_map(Record::observation))
            .collect();
        all.sort_by_key(|o| o.at_ms);
        all
    }

    pub(crate) fn last(&self) -> Option<&Record> {
        self.records.last()
    }

    /// Upstream requests one listing takes (the last look's), 1 before any look.
    pub(crate) fn cost(&self) -> f64 {
        self.last().map_or(1.0, |r| f64::from(r.requests.max(1)))
    }

    /// Add `record` as the store does (the oldest beyond [`MAX_RECORDS`] go).
    pub(crate) fn push(&mut self, record: Record) {
        self.records.push(record);
        if self.records.len() > MAX_RECORDS {
            let extra = self.records.len() - MAX_RECORDS;
            self.records.drain(..extra);
        }
    }

    /// The latest instant any observation was recorded at.
    pub(crate) fn latest_ms(&self) -> u64 {
        let ours = self.last().map_or(0, |r| r.at_ms);
        let theirs = self.previous_release.iter().map(|o| o.at_ms).max().unwrap_or(0);
        ours.max(theirs)
    }
}

/// The previous release's document: `{"last_ms","last_etag","observations":[{"at_ms",
/// "interval_ms","changed"}]}`. Unreadable parts are skipped.
fn legacy_observations(raw: &[u8]) -> Vec<Observation> {
    #[derive(Deserialize)]
    struct Legacy {
        #[serde(default)]
        observations: Vec<LegacyObservation>,
    }
    #[derive(Deserialize)]
    struct LegacyObservation {
        at_ms: u64,
        interval_ms: u64,
        changed: bool,
    }
    serde_json::from_slice::<Legacy>(raw)
        .map(|l| {
            l.observations
                .into_iter()
                .filter(|o| o.interval_ms > 0)
                .map(|o| Observation {
                    at_ms: o.at_ms,
                    interval_ms: o.interval_ms,
                    changed: o.changed,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG_A: &str = "\"m-0123456789abcdef0123456789abcdef\"";
    const ETAG_B: &str = "\"m-fedcba9876543210fedcba9876543210\"";

    #[test]
    fn a_record_is_a_few_dozen_bytes_and_reads_back() {
        let r = Record::after(None, 1_796_000_000_000, ETAG_A, 3).unwrap();
        assert_eq!((r.interval_ms, r.changed), (0, false), "the first look is a baseline");
        assert_eq!(r.observation(), None);
        let next = Record::after(Some(&r), 1_796_014_400_000, ETAG_B, 3).unwrap();
        let bytes = next.encode();
        assert!(bytes.len() <= 48, "{} bytes: {:?}", bytes.len(), bytes);
        assert_eq!(Record::decode(&bytes), Some(next.clone()));
        assert_eq!(
            next.observation(),
            Some(Observation {
                at_ms: 1_796_014_400_000,
                interval_ms: 14_400_000,
                changed: true
            })
        );
        for bad in [&b""[..], b"1 2 3", b"1 2 x 3 t", b"1 2 1 3 t extra", b"\xff"] {
            assert_eq!(Record::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_look_counts_once_and_only_after_the_last() {
        let first = Record::after(None, 1_000, ETAG_A, 1).unwrap();
        assert!(
            Record::after(Some(&first), 1_000, ETAG_B, 1).is_none(),
            "the same instant"
        );
        assert!(Record::after(Some(&first), 900, ETAG_B, 1).is_none(), "an older look");
        let same = Record::after(Some(&first), 2_000, ETAG_A, 1).unwrap();
        assert!(!same.changed);
        let mut h = History::default();
        for i in 0..(MAX_RECORDS as u64 * 2) {
            let r = Record::after(h.last(), 1_000 + i, ETAG_A, 2).unwrap();
            h.push(r);
        }
        assert_eq!(h.records.len(), MAX_RECORDS, "bounded");
        assert_eq!(h.cost(), 2.0);
    }

    #[test]
    fn the_previous_releases_history_is_evidence() {
        let legacy = br#"{"last_ms":3000,"last_etag":"x","observations":[
            {"at_ms":2000,"interval_ms":1000,"changed":true},
            {"at_ms":3000,"interval_ms":1000,"changed":false}]}"#;
        let ours = [
            Record::after(None, 4_000, ETAG_A, 1).unwrap().encode(),
            Bytes::from_static(b"junk"),
        ];
        let h = History::read(&ours, Some(legacy));
        assert_eq!(h.records.len(), 1, "junk skipped");
        assert_eq!(
            h.observations().len(),
            2,
            "the baseline observes nothing; both legacy ones count"
        );
        assert_eq!(h.latest_ms(), 4_000);
        assert_eq!(History::read(&[], Some(b"not json")).observations(), vec![]);
    }
}
