//! Content codings, and the one owner of compression.
//!
//! Two efforts, for two kinds of bytes:
//! - [`Effort::Stored`]: made once and served many times (an entry's bodies, the
//!   models page's document, a gateway's derived gzip): brotli at quality 9 (~10x
//!   faster than 11 for a few percent more bytes), gzip at level 6.
//! - [`Effort::Fast`]: made for one answer (a search, a page of the list, a page of
//!   the models page): brotli at quality 3, gzip at level 1.
//!
//! Compression reads the parts as they are: an answer cut from the cached list is
//! never joined into one buffer first.

use std::io::{Read, Write};

use bytes::Bytes;

/// A content encoding a body can be stored or sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity = 0,
    Gzip = 1,
    Brotli = 2,
}

impl Encoding {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Identity),
            1 => Some(Self::Gzip),
            2 => Some(Self::Brotli),
            _ => None,
        }
    }

    /// The `Content-Encoding` token, `None` for identity.
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Brotli => Some("br"),
        }
    }
}

/// How hard to compress (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effort {
    Stored,
    Fast,
}

/// `parts`, one after the other, in `encoding`. Identity joins them (one copy).
pub(crate) fn compress(parts: &[&[u8]], encoding: Encoding, effort: Effort) -> Bytes {
    let size: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = match encoding {
        Encoding::Identity => {
            let mut out = Vec::with_capacity(size);
            parts.iter().for_each(|p| out.extend_from_slice(p));
            out
        }
        Encoding::Gzip => {
            let level = match effort {
                Effort::Stored => flate2::Compression::new(6),
                Effort::Fast => flate2::Compression::fast(),
            };
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(size / 5), level);
            parts.iter().for_each(|p| enc.write_all(p).expect("in-memory write"));
            enc.finish().expect("in-memory write")
        }
        Encoding::Brotli => {
            let (quality, window) = match effort {
                Effort::Stored => (9, 22),
                Effort::Fast => (3, 20),
            };
            let mut out = Vec::with_capacity(size / 6);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, window);
                parts.iter().for_each(|p| w.write_all(p).expect("in-memory write"));
            }
            out
        }
    };
    // What is kept is weighed by its length: no spare capacity behind it.
    out.shrink_to_fit();
    Bytes::from(out)
}

/// `data` in `encoding`, made once to be served many times.
pub(crate) fn stored(data: &[u8], encoding: Encoding) -> Bytes {
    compress(&[data], encoding, Effort::Stored)
}

/// A document in every coding, made once to be served many times (the models page's
/// first screen).
#[derive(Clone)]
pub(crate) struct Rendered {
    pub identity: Bytes,
    pub gzip: Bytes,
    pub br: Bytes,
}

impl Rendered {
    pub(crate) fn new(text: String) -> Rendered {
        let identity = Bytes::from(text);
        Rendered {
            gzip: stored(&identity, Encoding::Gzip),
            br: stored(&identity, Encoding::Brotli),
            identity,
        }
    }

    /// The document in `encoding` (a cheap clone).
    pub(crate) fn encoded(&self, encoding: Encoding) -> Bytes {
        match encoding {
            Encoding::Identity => self.identity.clone(),
            Encoding::Gzip => self.gzip.clone(),
            Encoding::Brotli => self.br.clone(),
        }
    }
}

/// `body` decoded from `encoding`, refusing to grow past `max` bytes (a zip bomb).
pub(crate) fn decompress(encoding: Encoding, body: &[u8], max: u64) -> std::io::Result<Bytes> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(6));
    match encoding {
        Encoding::Identity => return Ok(Bytes::copy_from_slice(body)),
        Encoding::Gzip => flate2::read::GzDecoder::new(body).take(max).read_to_end(&mut out)?,
        Encoding::Brotli => brotli::Decompressor::new(body, 64 * 1024)
            .take(max)
            .read_to_end(&mut out)?,
    };
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_coding_and_effort_round_trips_parts_as_one_body() {
        let parts: [&[u8]; 3] = [b"{\"data\":[", &b"{\"id\":\"a\"},".repeat(500), b"]}"];
        let whole: Vec<u8> = parts.concat();
        for enc in [Encoding::Identity, Encoding::Gzip, Encoding::Brotli] {
            for effort in [Effort::Stored, Effort::Fast] {
                let c = compress(&parts, enc, effort);
                assert_eq!(decompress(enc, &c, 1 << 20).unwrap(), whole, "{enc:?} {effort:?}");
                if enc != Encoding::Identity {
                    assert!(c.len() < whole.len() / 10, "{enc:?} {effort:?}: {}", c.len());
                }
            }
        }
        assert!(
            decompress(Encoding::Gzip, &stored(&whole, Encoding::Gzip), 100)
                .unwrap()
                .len()
                <= 100
        );
    }
}
