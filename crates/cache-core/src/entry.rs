//! The stored entry: a value that carries its own clock.
//!
//! Design failure 1 (docs/design.md): freshness decided from Redis `TTL` never saw a stale
//! key. Here every value records when it was fetched, until when it is fresh and
//! until when it may be served stale, and the reader decides from those.
//!
//! The payload is stored pre-serialized and pre-compressed, so the hot path serves
//! the stored bytes as they are: no JSON parse, no re-serialization, no compression
//! per request. A strong ETag is computed once at write time.
//!
//! Binary layout (all integers big-endian), format 4:
//!
//! ```text
//! "GZCE" | version u8
//! | head: flags u8 | clock: fetched_at_ms u64 | fresh_until_ms u64 | stale_until_ms u64 | kept_until_ms u64
//! |       input_count u8 | (fetched_at_ms u64, fresh_until_ms u64, kept_until_ms u64) * input_count
//! | item_count u32 | collapsed u32 | sources u64 | carried u64 | checksum u64 | etag_len u8 | etag bytes
//! | body_count u8 | (encoding u8, len u32) * body_count | body bytes, in the same order
//! ```
//!
//! - The head ([`Head`], from byte [`HEAD_OFFSET`]) is what changes without the
//!   bodies changing: an unchanged refetch moves the clock, the collapse guard marks
//!   the entry held, a merged view records its inputs' clocks. The store rewrites it
//!   in place (one `SETRANGE`), checked against the stamp and the input count, by the
//!   scripts this module writes ([`lua`]): nothing else knows these offsets.
//! - The clock ([`Clock`]) is the entry's whole life: fetched at (when the fetch
//!   *started*: the instant the data is "as of"), fresh until, stale until, kept until
//!   (fail-safe serving ends; the store key expires a little after). Its first field
//!   is the fetch stamp, at byte [`CLOCK_OFFSET`] in every format since 1: the
//!   store's compare-and-set reads it there.
//! - `flags`: [`FLAG_HELD`], the collapse guard doubts what the upstream answers now
//!   and this (the last accepted catalog) is held meanwhile.
//! - The inputs are a derived entry's (the merged view's) sources' clocks, one per
//!   configured gateway in order (0 when it had none): a carried gateway keeps the
//!   clock its data had, and leaves the merged view when that clock's fail-safe ends.
//! - `collapsed`: ids the upstream listed more than once, collapsed to one each.
//! - `sources` fingerprints what a derived entry was built from (the merged view: the
//!   ETag of each gateway entry it merged); 0 for a gateway's own catalog. A warm
//!   compares it with what is stored now and rebuilds when they differ.
//! - `carried` marks (one bit per gateway, in the configured order) the gateways whose
//!   listings a merged view carried over from the previous one, because their own
//!   entry was gone and their upstream failed; 0 otherwise.
//! - `checksum` is xxh3-64 of the bodies. A value whose bodies do not match is corrupt,
//!   and corrupt values are misses, whatever their header says.
//!
//! Format 3 (the previous release: no head, a `high_water` count after `item_count`)
//! is still decoded, marked [`EntryMeta::previous_format`]: it is read from the
//! previous release's keys as last-known-good (see [`crate::keys`]), never written.
//!
//! Decoding is zero-copy: bodies are `Bytes` slices of the value read from the store.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// The first bytes of every entry.
pub(crate) const MAGIC: &[u8; 4] = b"GZCE";
/// Bump when the layout changes, and the keys move with it (`keys::FORMAT_NAMESPACE`):
/// two releases on one store never overwrite each other's entries.
pub(crate) const FORMAT_VERSION: u8 = 4;
/// The format of the previous release, read (never written) as last-known-good.
pub(crate) const PREVIOUS_FORMAT_VERSION: u8 = 3;
/// The oldest format whose fetch stamp sits at [`CLOCK_OFFSET`]: the store's
/// compare-and-set still refuses to replace a newer entry of such a format (a rolling
/// deploy writes both), though this version cannot read it.
pub(crate) const STAMPED_SINCE_VERSION: u8 = 1;
/// Byte offset of the head (flags, clock, inputs): what the store rewrites in place.
pub(crate) const HEAD_OFFSET: usize = 5;
/// Byte offset of the clock; its first field, `fetched_at_ms`, is the fetch stamp.
pub(crate) const CLOCK_OFFSET: usize = 6;
/// The head's bytes without its inputs: flags, clock, input count.
const HEAD_FIXED_LEN: usize = 1 + CLOCK_LEN + 1;
/// At most this many inputs (one per configured gateway; the `carried` mask has 64 bits).
pub(crate) const MAX_INPUTS: usize = 64;
/// [`EntryMeta::flags`]: the collapse guard doubts the upstream's current answer; this
/// entry (the last accepted catalog) is held meanwhile.
pub(crate) const FLAG_HELD: u8 = 1;
/// [`EntryMeta::flags`], in memory only: decoded from the previous release's format.
const FLAG_PREVIOUS_FORMAT: u8 = 0x80;
/// The clock's bytes: four u64, big-endian.
pub(crate) const CLOCK_LEN: usize = 32;
/// A decoded identity body larger than this is treated as corrupt (zip-bomb guard).
const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;

pub(crate) use crate::encoding::Encoding;

/// Where an entry is in its life at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
    Expired,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Expired => "expired",
        }
    }
}

/// An entry's clock, in unix milliseconds: made by the TTL policy
/// ([`crate::ttl::TtlPolicy::clock`]), carried in the entry's header, and read by
/// everyone who decides about freshness. Arithmetic on it saturates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Clock {
    /// When the fetch started: the instant the data is "as of" (the write's stamp).
    pub fetched_at_ms: u64,
    pub fresh_until_ms: u64,
    /// End of the served-stale window.
    pub stale_until_ms: u64,
    /// End of fail-safe serving (`FAILSAFE_MAX_SECONDS` past the stale window).
    pub kept_until_ms: u64,
}

/// Extra life of a store key past its entry's `kept_until`, so a reader that sees
/// "expired" can still read the old value's header (age, count) for the status page.
pub(crate) const KEY_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

impl Clock {
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        if now_ms < self.fresh_until_ms {
            Freshness::Fresh
        } else if now_ms < self.stale_until_ms {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.fetched_at_ms)
    }

    /// How long the store keeps the key: to `kept_until`, plus a margin.
    pub fn key_ttl(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.kept_until_ms.saturating_sub(now_ms)) + KEY_EXPIRY_MARGIN
    }

    /// The clock as stored ([`CLOCK_LEN`] bytes at [`CLOCK_OFFSET`]).
    pub fn encode(&self) -> [u8; CLOCK_LEN] {
        let mut out = [0u8; CLOCK_LEN];
        for (i, v) in [
            self.fetched_at_ms,
            self.fresh_until_ms,
            self.stale_until_ms,
            self.kept_until_ms,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// Whether the windows are in order (a clock that is not is corrupt).
    fn is_ordered(&self) -> bool {
        self.fresh_until_ms <= self.stale_until_ms && self.stale_until_ms <= self.kept_until_ms
    }

    /// Whether the entry may still be served at all (fail-safe ends at `kept_until`,
    /// whatever the store key's extra minute for the status page).
    pub fn is_kept(&self, now_ms: u64) -> bool {
        now_ms < self.kept_until_ms
    }
}

/// The clock of the data a derived entry took from one input: when it was fetched,
/// until when it was fresh, and until when it may be served at all. Zero: the input
/// gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InputClock {
    pub fetched_at_ms: u64,
    pub fresh_until_ms: u64,
    pub kept_until_ms: u64,
}

/// An input's clock, stored: three u64.
const INPUT_LEN: usize = 24;

impl InputClock {
    pub fn of(clock: &Clock) -> Self {
        InputClock {
            fetched_at_ms: clock.fetched_at_ms,
            fresh_until_ms: clock.fresh_until_ms,
            kept_until_ms: clock.kept_until_ms,
        }
    }
}

/// The part of an entry's header that changes while its bodies stay: flags, clock,
/// inputs' clocks. [`Head::encode`] is what the store writes at [`HEAD_OFFSET`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub flags: u8,
    pub clock: Clock,
    pub inputs: Vec<InputClock>,
}

impl Head {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_FIXED_LEN + INPUT_LEN * self.inputs.len());
        out.push(self.flags & !FLAG_PREVIOUS_FORMAT);
        out.extend_from_slice(&self.clock.encode());
        let n = self.inputs.len().min(MAX_INPUTS);
        out.push(n as u8);
        for i in &self.inputs[..n] {
            out.extend_from_slice(&i.fetched_at_ms.to_be_bytes());
            out.extend_from_slice(&i.fresh_until_ms.to_be_bytes());
            out.extend_from_slice(&i.kept_until_ms.to_be_bytes());
        }
        out
    }
}

/// The entry's metadata: its clock, size, sources and validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub clock: Clock,
    /// [`FLAG_HELD`] (and, in memory, whether it was decoded from the previous format).
    pub flags: u8,
    /// A derived entry's inputs' clocks, in the configured order (see the module doc).
    pub inputs: Vec<InputClock>,
    /// Number of items in the payload (models), for status and collapse checks.
    pub item_count: u32,
    /// Ids the upstream listed more than once, collapsed to one each.
    pub collapsed: u32,
    /// What a derived entry was built from (see the module doc); 0 for a source's own.
    pub sources: u64,
    /// Inputs a derived entry carried over from its previous value (see the module doc).
    pub carried: u64,
    /// Strong validator, quoted, e.g. `"m-0123abcd..."`.
    pub etag: String,
}

impl EntryMeta {
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        self.clock.freshness(now_ms)
    }

    pub fn age_ms(&self, now_ms: u64) -> u64 {
        self.clock.age_ms(now_ms)
    }

    /// The collapse guard holds this entry while it doubts the upstream's answer.
    pub fn held(&self) -> bool {
        self.flags & FLAG_HELD != 0
    }

    /// Why this entry is held back from the upstream's answer, whatever its age:
    /// `guard` (held by the collapse guard), `carried` (a merged view carrying a
    /// gateway's listings over), `previous-format` (the previous release's entry).
    pub fn held_back_reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.held() {
            reasons.push("guard");
        }
        if self.carried != 0 {
            reasons.push("carried");
        }
        if self.previous_format() {
            reasons.push("previous-format");
        }
        reasons
    }

    /// Decoded from the previous release's format (its keys): last-known-good only.
    pub fn previous_format(&self) -> bool {
        self.flags & FLAG_PREVIOUS_FORMAT != 0
    }

    pub(crate) fn head(&self) -> Head {
        Head {
            flags: self.flags,
            clock: self.clock,
            inputs: self.inputs.clone(),
        }
    }
}

/// A cached value: metadata plus one or more encodings of the same JSON payload.
#[derive(Clone, Debug)]
pub struct Entry {
    pub meta: EntryMeta,
    bodies: Vec<(Encoding, Bytes)>,
    /// The ETag of each representation (identity, gzip, br), made once: the 304 path
    /// is hot enough that a per-request `format!` shows.
    encoding_etags: OnceLock<[String; 3]>,
}

/// Why a stored value could not be decoded. Any of these is treated as a miss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a cache entry (bad magic)")]
    NotAnEntry,
    #[error("unsupported entry format version {0}")]
    UnsupportedVersion(u8),
    #[error("truncated entry")]
    Truncated,
    #[error("unknown body encoding {0}")]
    BadEncoding(u8),
    #[error("corrupt body: {0}")]
    BadBody(&'static str),
    /// The bodies do not match the header's checksum.
    #[error("corrupt body: checksum mismatch")]
    ChecksumMismatch,
}

/// Which encodings are stored at write time. Brotli alone is the smallest at rest
/// (~8-10 % of the raw catalog JSON; storing gzip too would put it near 19 %).
/// Identity and gzip are derived when asked for, once per content (`crate::answers`).
pub(crate) const STORED_ENCODINGS: &[Encoding] = &[Encoding::Brotli];

impl Entry {
    /// Build an entry from a JSON payload, compressing it into `encodings`.
    pub fn build(json: Bytes, item_count: u32, clock: Clock, encodings: &[Encoding]) -> Self {
        let etag = etag_for(&json);
        Self::build_tagged(json, etag, item_count, clock, encodings)
    }

    /// [`Entry::build`] with the payload's ETag already computed (`etag_for(&json)`).
    pub(crate) fn build_tagged(
        json: Bytes,
        etag: String,
        item_count: u32,
        clock: Clock,
        encodings: &[Encoding],
    ) -> Self {
        let mut bodies = Vec::with_capacity(encodings.len());
        for &enc in encodings {
            let body = match enc {
                Encoding::Identity => json.clone(),
                Encoding::Gzip | Encoding::Brotli => crate::encoding::stored(&json, enc),
            };
            bodies.push((enc, body));
        }
        if bodies.is_empty() {
            bodies.push((Encoding::Identity, json));
        }
        Entry::from_parts(
            EntryMeta {
                clock,
                flags: 0,
                inputs: Vec::new(),
                item_count,
                collapsed: 0,
                sources: 0,
                carried: 0,
                etag,
            },
            bodies,
        )
    }

    /// Record what this entry was derived from, and what it carried over (see the
    /// module doc).
    pub fn with_sources(mut self, sources: u64, carried: u64) -> Self {
        self.meta.sources = sources;
        self.meta.carried = carried;
        self
    }

    /// Record the clocks of a derived entry's inputs (see the module doc).
    pub fn with_inputs(mut self, inputs: Vec<InputClock>) -> Self {
        self.meta.inputs = inputs;
        self.meta.inputs.truncate(MAX_INPUTS);
        self
    }

    /// Record how many repeated ids the listing had (collapsed to one each).
    pub fn with_collapsed(mut self, collapsed: u32) -> Self {
        self.meta.collapsed = collapsed;
        self
    }

    /// The same entry with another head (clock, flags, inputs): what the store holds
    /// after it rewrote the head in place.
    pub(crate) fn with_head(&self, head: &Head) -> Self {
        let mut meta = self.meta.clone();
        meta.flags = head.flags;
        meta.clock = head.clock;
        meta.inputs = head.inputs.clone();
        Entry::from_parts(meta, self.bodies.clone())
    }

    fn from_parts(meta: EntryMeta, bodies: Vec<(Encoding, Bytes)>) -> Self {
        Entry {
            meta,
            bodies,
            encoding_etags: OnceLock::new(),
        }
    }

    /// The strong ETag of this entry in `enc` (`"m-…"`, `"m-…-gzip"`, `"m-…-br"`).
    pub fn etag_in(&self, enc: Encoding) -> &str {
        let tags = self.encoding_etags.get_or_init(|| {
            [Encoding::Identity, Encoding::Gzip, Encoding::Brotli].map(|e| encoding_etag(&self.meta.etag, e))
        });
        &tags[enc as usize]
    }

    /// The stored bytes for an encoding, if that encoding was stored.
    pub fn body(&self, enc: Encoding) -> Option<&Bytes> {
        self.bodies.iter().find(|(e, _)| *e == enc).map(|(_, b)| b)
    }

    /// The uncompressed JSON: stored, or decompressed now. Not kept with the entry:
    /// what is derived from an entry is kept by content (ETag) and counted in the
    /// answers' byte budget (`crate::answers`), so a clock move keeps it and nothing
    /// outside the budget holds a 25 MB body.
    pub fn identity(&self) -> Result<Bytes, DecodeError> {
        if let Some(b) = self.body(Encoding::Identity) {
            return Ok(b.clone());
        }
        let (enc, body) = self.bodies.first().ok_or(DecodeError::BadBody("no body"))?;
        decompress(*enc, body)
    }

    /// The same as [`Entry::identity`] (kept for the readers that said so).
    pub fn identity_uncached(&self) -> Result<Bytes, DecodeError> {
        self.identity()
    }

    /// The body in `enc`: stored, or derived now (from identity, made to be served
    /// many times) and not kept.
    pub fn body_in(&self, enc: Encoding) -> Result<Bytes, DecodeError> {
        match self.body(enc) {
            Some(b) => Ok(b.clone()),
            None => Ok(crate::encoding::stored(&self.identity()?, enc)),
        }
    }

    /// Bytes on the wire/at rest for this entry.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.bodies.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    fn header_len(&self) -> usize {
        HEADER_FIXED_LEN
            + INPUT_LEN * self.meta.inputs.len().min(MAX_INPUTS)
            + self.meta.etag.len()
            + 1
            + 5 * self.bodies.len()
    }

    fn checksum(bodies: &[(Encoding, Bytes)]) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (_, body) in bodies {
            h.update(body);
        }
        h.digest()
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        out.put_slice(MAGIC);
        out.put_u8(FORMAT_VERSION);
        out.put_slice(&self.meta.head().encode());
        out.put_u32(self.meta.item_count);
        out.put_u32(self.meta.collapsed);
        out.put_u64(self.meta.sources);
        out.put_u64(self.meta.carried);
        out.put_u64(Self::checksum(&self.bodies));
        let etag = &self.meta.etag.as_bytes()[..self.meta.etag.len().min(255)];
        out.put_u8(etag.len() as u8);
        out.put_slice(etag);
        out.put_u8(self.bodies.len() as u8);
        for (enc, body) in &self.bodies {
            out.put_u8(*enc as u8);
            out.put_u32(body.len() as u32);
        }
        for (_, body) in &self.bodies {
            out.put_slice(body);
        }
        out.freeze()
    }

    /// Decode a stored value of this format. Never panics on foreign or truncated input.
    pub fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        Self::decode_as(raw, FORMAT_VERSION)
    }

    /// Decode a value the previous release stored (format 3), marked
    /// `EntryMeta::previous_format`.
    pub fn decode_previous_format(raw: Bytes) -> Result<Self, DecodeError> {
        Self::decode_as(raw, PREVIOUS_FORMAT_VERSION)
    }

    fn decode_as(raw: Bytes, version: u8) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: &raw, pos: 0 };
        let (meta, checksum) = read_header(&mut r, version)?;
        let count = r.u8()? as usize;
        if count == 0 {
            return Err(DecodeError::BadBody("no body"));
        }
        let mut index = Vec::with_capacity(count);
        for _ in 0..count {
            let enc = r.u8()?;
            let enc = Encoding::from_u8(enc).ok_or(DecodeError::BadEncoding(enc))?;
            index.push((enc, r.u32()? as usize));
        }
        let mut bodies = Vec::with_capacity(count);
        for (enc, len) in index {
            let start = r.pos;
            r.take(len)?;
            bodies.push((enc, raw.slice(start..start + len)));
        }
        if r.pos != raw.len() {
            return Err(DecodeError::BadBody("trailing bytes"));
        }
        if !meta.clock.is_ordered() {
            return Err(DecodeError::BadBody("the clock's windows are out of order"));
        }
        if Self::checksum(&bodies) != checksum {
            return Err(DecodeError::ChecksumMismatch);
        }
        Ok(Entry::from_parts(meta, bodies))
    }
}

/// The strong ETag of one representation: each content coding is its own
/// representation (RFC 9110 §8.8.3), so `"m-1"` (identity), `"m-1-gzip"`, `"m-1-br"`.
pub(crate) fn encoding_etag(etag: &str, encoding: Encoding) -> String {
    match encoding.header_value() {
        None => etag.to_string(),
        Some(coding) => format!("\"{}-{coding}\"", etag.trim_matches('"')),
    }
}

/// Magic, version, the head without inputs, counts, sources, checksum and the ETag's length.
const HEADER_FIXED_LEN: usize = 4 + 1 + HEAD_FIXED_LEN + 4 + 4 + 8 + 8 + 8 + 1;
/// The longest header an entry can have (every input, a 255-byte ETag): reading this
/// many bytes of a value is enough for [`EntryMeta::from_header`].
pub(crate) const MAX_HEADER_LEN: usize = HEADER_FIXED_LEN + INPUT_LEN * MAX_INPUTS + 255;

impl EntryMeta {
    /// The metadata from the first bytes of a stored value (at least up to its ETag),
    /// without its bodies: what the status page needs, for a few hundred bytes.
    pub fn from_header(prefix: &[u8]) -> Result<EntryMeta, DecodeError> {
        read_header(&mut Reader { buf: prefix, pos: 0 }, FORMAT_VERSION).map(|(meta, _checksum)| meta)
    }
}

/// Magic, version, head, counts, checksum and ETag: everything before the bodies.
/// Reads `expected`: this format or the previous one (see the module doc).
fn read_header(r: &mut Reader<'_>, expected: u8) -> Result<(EntryMeta, u64), DecodeError> {
    if r.take(4)? != MAGIC {
        return Err(DecodeError::NotAnEntry);
    }
    let version = r.u8()?;
    if version != expected {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let flags = r.u8()?;
    let clock = Clock {
        fetched_at_ms: r.u64()?,
        fresh_until_ms: r.u64()?,
        stale_until_ms: r.u64()?,
        kept_until_ms: r.u64()?,
    };
    let (flags, inputs) = if version == FORMAT_VERSION {
        let n = r.u8()? as usize;
        if n > MAX_INPUTS {
            return Err(DecodeError::BadBody("too many inputs"));
        }
        let mut inputs = Vec::with_capacity(n);
        for _ in 0..n {
            inputs.push(InputClock {
                fetched_at_ms: r.u64()?,
                fresh_until_ms: r.u64()?,
                kept_until_ms: r.u64()?,
            });
        }
        (flags & !FLAG_PREVIOUS_FORMAT, inputs)
    } else {
        (FLAG_PREVIOUS_FORMAT, Vec::new())
    };
    // Format 3's second count is its high-water mark, which nothing reads any more.
    let (item_count, second) = (r.u32()?, r.u32()?);
    let collapsed = if version == FORMAT_VERSION { second } else { 0 };
    let (sources, carried, checksum) = (r.u64()?, r.u64()?, r.u64()?);
    let etag_len = r.u8()? as usize;
    let etag = std::str::from_utf8(r.take(etag_len)?)
        .map_err(|_| DecodeError::BadBody("etag is not UTF-8"))?
        .to_string();
    let meta = EntryMeta {
        clock,
        flags,
        inputs,
        item_count,
        collapsed,
        sources,
        carried,
        etag,
    };
    Ok((meta, checksum))
}

/// The fetch stamp of a stored value, read without decoding it (store compare-and-set).
pub(crate) fn stamp_of(raw: &[u8]) -> Option<u64> {
    // Only a version we know places the stamp there; anything else is overwritten.
    if raw.len() < CLOCK_OFFSET + 8 || &raw[..4] != MAGIC || !(STAMPED_SINCE_VERSION..=FORMAT_VERSION).contains(&raw[4])
    {
        return None;
    }
    Some(u64::from_be_bytes(raw[CLOCK_OFFSET..CLOCK_OFFSET + 8].try_into().ok()?))
}

/// `stored` with its head replaced by `head` (encoded), if `stored` is an entry of
/// this format fetched at `expected_stamp` whose head has as many inputs as the new
/// one; `None` otherwise (the entry changed: write it whole). The embedded store's
/// half of what [`lua::REWRITE_HEAD`] does in Redis.
pub(crate) fn rewrite_head(stored: &[u8], expected_stamp: u64, head: &[u8]) -> Option<Vec<u8>> {
    let n_at = HEAD_OFFSET + HEAD_FIXED_LEN - 1;
    if stored.len() <= n_at
        || &stored[..4] != MAGIC
        || stored[4] != FORMAT_VERSION
        || stamp_of(stored) != Some(expected_stamp)
        || head.len() != HEAD_FIXED_LEN + INPUT_LEN * stored[n_at] as usize
        || head.get(HEAD_FIXED_LEN - 1) != Some(&stored[n_at])
        || stored.len() < HEAD_OFFSET + head.len()
    {
        return None;
    }
    let mut value = stored.to_vec();
    value[HEAD_OFFSET..HEAD_OFFSET + head.len()].copy_from_slice(head);
    Some(value)
}

/// The store's scripts that read or rewrite an entry in place, written from this
/// module's layout constants: the only other code that knows where the bytes are.
/// Lua strings are 1-based, so byte `k` of the value is `string.byte(v, k + 1)`.
pub(crate) mod lua {
    use super::{CLOCK_OFFSET, FORMAT_VERSION, HEAD_FIXED_LEN, HEAD_OFFSET, INPUT_LEN, MAGIC, STAMPED_SINCE_VERSION};

    /// Compare-and-set on the fetch stamp: write ARGV[1] unless the stored entry was
    /// fetched later than ARGV[2] (an older fetch never replaces a newer one). The
    /// stamp is read where every stamped format puts it; anything else under the key
    /// is overwritten. A stored stamp past ARGV[4] (the store's clock plus a
    /// tolerance) came from an instance whose clock runs ahead: not trusted,
    /// overwritten. Returns `{1}` when written, `{0, stored stamp}` when refused.
    /// ms stamps fit a Lua double exactly (< 2^53).
    pub(crate) fn set_if_newer() -> String {
        format!(
            r#"
local cur = redis.call('get', KEYS[1])
if cur and string.len(cur) >= {stamp_last} and string.sub(cur, 1, 4) == '{magic}'
   and string.byte(cur, 5) >= {since} and string.byte(cur, 5) <= {version} then
  local t = 0
  for i = {stamp_first}, {stamp_last} do t = t * 256 + string.byte(cur, i) end
  if t > tonumber(ARGV[2]) and t <= tonumber(ARGV[4]) then return {{0, t}} end
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {{1}}
"#,
            magic = std::str::from_utf8(MAGIC).expect("ASCII magic"),
            since = STAMPED_SINCE_VERSION,
            version = FORMAT_VERSION,
            stamp_first = CLOCK_OFFSET + 1,
            stamp_last = CLOCK_OFFSET + 8,
        )
    }

    /// Rewrite an entry's head in place: if the stored entry is of this format, was
    /// fetched at ARGV[1], and its head has as many inputs as ARGV[2] (the new head),
    /// overwrite the head with ARGV[2] and the key's expiry with ARGV[3]. The bodies
    /// are not sent again. Returns 1 when rewritten, 0 when the entry changed.
    pub(crate) fn rewrite_head() -> String {
        format!(
            r#"
local cur = redis.call('getrange', KEYS[1], 0, {n_at})
if string.len(cur) < {n_at} + 1 or string.sub(cur, 1, 4) ~= '{magic}' or string.byte(cur, 5) ~= {version} then return 0 end
local t = 0
for i = {stamp_first}, {stamp_last} do t = t * 256 + string.byte(cur, i) end
local n = string.byte(cur, {n_at} + 1)
if t ~= tonumber(ARGV[1]) or string.len(ARGV[2]) ~= {fixed} + {input} * n or string.byte(ARGV[2], {fixed}) ~= n then return 0 end
redis.call('setrange', KEYS[1], {head}, ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"#,
            magic = std::str::from_utf8(MAGIC).expect("ASCII magic"),
            version = FORMAT_VERSION,
            stamp_first = CLOCK_OFFSET + 1,
            stamp_last = CLOCK_OFFSET + 8,
            n_at = HEAD_OFFSET + HEAD_FIXED_LEN - 1,
            fixed = HEAD_FIXED_LEN,
            input = INPUT_LEN,
            head = HEAD_OFFSET,
        )
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
}

/// A strong ETag from the payload's content: identical data fetched again (by any
/// instance) gets the same ETag, so browsers and the CDN keep getting 304s.
pub(crate) fn etag_for(json: &[u8]) -> String {
    format!("\"m-{:032x}\"", xxhash_rust::xxh3::xxh3_128(json))
}

pub(crate) fn decompress(enc: Encoding, body: &[u8]) -> Result<Bytes, DecodeError> {
    crate::encoding::decompress(enc, body, MAX_DECODED_BYTES).map_err(|_| DecodeError::BadBody("cannot decompress"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(fetched: u64, fresh: u64, stale: u64) -> Clock {
        Clock {
            fetched_at_ms: fetched,
            fresh_until_ms: fresh,
            stale_until_ms: stale,
            kept_until_ms: stale + 5,
        }
    }

    fn sample() -> Entry {
        Entry::build(
            Bytes::from_static(br#"{"data":[{"id":"a"}]}"#),
            1,
            clock(10, 20, 30),
            STORED_ENCODINGS,
        )
        .with_sources(0xfeed, 0b101)
    }

    #[test]
    fn round_trip_keeps_everything() {
        let e = sample();
        let d = Entry::decode(e.encode()).unwrap();
        assert_eq!(d.meta, e.meta);
        assert_eq!(d.identity().unwrap(), Bytes::from_static(br#"{"data":[{"id":"a"}]}"#));
        assert_eq!(
            decompress(Encoding::Brotli, d.body(Encoding::Brotli).unwrap()).unwrap(),
            d.identity().unwrap()
        );
        assert!(d.body(Encoding::Gzip).is_none(), "only brotli is stored");
        let gz = d.body_in(Encoding::Gzip).unwrap();
        assert_eq!(decompress(Encoding::Gzip, &gz).unwrap(), d.identity().unwrap());
        assert_eq!(d.encoded_len(), e.encode().len());
    }

    #[test]
    fn freshness_from_own_clock() {
        let m = sample().meta;
        assert_eq!(m.freshness(19), Freshness::Fresh);
        assert_eq!(m.freshness(20), Freshness::Stale);
        assert_eq!(m.freshness(29), Freshness::Stale);
        assert_eq!(m.freshness(30), Freshness::Expired);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let raw = sample().encode();
        for n in 0..raw.len() {
            assert!(Entry::decode(raw.slice(..n)).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn foreign_and_old_values_are_rejected() {
        assert_eq!(
            Entry::decode(Bytes::from_static(b"{\"data\":[]}")).unwrap_err(),
            DecodeError::NotAnEntry
        );
        let mut raw = sample().encode().to_vec();
        raw[4] = 0;
        assert_eq!(
            Entry::decode(Bytes::from(raw)).unwrap_err(),
            DecodeError::UnsupportedVersion(0)
        );
    }

    #[test]
    fn a_flipped_body_byte_is_corrupt_whatever_the_header_says() {
        let raw = sample().encode().to_vec();
        for i in [raw.len() - 1, raw.len() - 5] {
            let mut bad = raw.clone();
            bad[i] ^= 0xff;
            assert_eq!(
                Entry::decode(Bytes::from(bad)).unwrap_err(),
                DecodeError::ChecksumMismatch,
                "byte {i}"
            );
        }
    }

    #[test]
    fn the_clock_sits_where_the_store_reads_and_rewrites_it() {
        let raw = sample().encode();
        assert_eq!(
            &raw[CLOCK_OFFSET..CLOCK_OFFSET + CLOCK_LEN],
            &sample().meta.clock.encode()
        );
        let at = u64::from_be_bytes(raw[CLOCK_OFFSET..CLOCK_OFFSET + 8].try_into().unwrap());
        assert_eq!(at, 10);
        assert_eq!(stamp_of(&raw), Some(10));
        assert_eq!(stamp_of(b"{}"), None);
    }

    #[test]
    fn the_header_alone_gives_the_metadata() {
        let e = sample().with_collapsed(7).with_inputs(vec![
            InputClock {
                fetched_at_ms: 1,
                fresh_until_ms: 2,
                kept_until_ms: 3
            };
            21
        ]);
        let raw = e.encode();
        assert_eq!(
            EntryMeta::from_header(&raw[..MAX_HEADER_LEN.min(raw.len())]).unwrap(),
            e.meta
        );
        assert!(EntryMeta::from_header(&raw[..20]).is_err(), "cut before the ETag");
    }

    #[test]
    fn the_head_is_rewritten_in_place_only_for_the_same_fetch_and_inputs() {
        let e = sample().with_inputs(vec![InputClock::default(); 2]);
        let raw = e.encode();
        let mut head = e.meta.head();
        head.flags = FLAG_HELD;
        head.clock.fresh_until_ms = 15;
        head.inputs[1] = InputClock {
            fetched_at_ms: 7,
            fresh_until_ms: 8,
            kept_until_ms: 9,
        };
        let rewritten = rewrite_head(&raw, 10, &head.encode()).expect("same stamp, same inputs");
        let d = Entry::decode(Bytes::from(rewritten)).unwrap();
        assert!(d.meta.held());
        assert_eq!(d.meta.head(), head);
        assert_eq!(d.identity().unwrap(), e.identity().unwrap(), "bodies untouched");
        assert!(rewrite_head(&raw, 11, &head.encode()).is_none(), "another fetch");
        let mut three = head.clone();
        three.inputs.push(InputClock::default());
        assert!(rewrite_head(&raw, 10, &three.encode()).is_none(), "another input count");
    }

    #[test]
    fn the_previous_format_is_read_only_when_asked_for() {
        let raw = Bytes::from_static(include_bytes!("tests/fixtures/format3/models_groq.bin"));
        assert_eq!(
            Entry::decode(raw.clone()).unwrap_err(),
            DecodeError::UnsupportedVersion(PREVIOUS_FORMAT_VERSION)
        );
        let old = Entry::decode_previous_format(raw).unwrap();
        assert!(old.meta.previous_format());
        assert_eq!(old.meta.item_count, 11);
        let body: serde_json::Value = serde_json::from_slice(&old.identity().unwrap()).unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 11);
        assert_eq!(old.meta.held_back_reasons(), ["previous-format"]);
    }

    #[test]
    fn etag_depends_on_content_only() {
        assert_eq!(etag_for(b"x"), etag_for(b"x"));
        assert_ne!(etag_for(b"x"), etag_for(b"y"));
    }
}
