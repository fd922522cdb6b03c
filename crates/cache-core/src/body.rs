//! A response body: one buffer, or several sent one after the other.
//!
//! Why several: a page cut from the cached list is the list's own bytes between a
//! small head and tail. Sending the three as they are costs no copy, so a client
//! asking for "the whole list but the first model" costs what it receives, not a
//! second 24 MB buffer.
//!
//! A body may also hold a share of a permit ([`Body::with_shared`]), released when
//! the last body holding it is dropped (sent, or its connection gone): that is how an
//! instance bounds how many large answers exist at once, not only how many are being
//! built, while bodies that share one buffer (identical requests served by one make)
//! share its permit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

/// What a body keeps alive until it is dropped: its permit, or a share of one.
type Hold = std::sync::Arc<dyn std::any::Any + Send + Sync>;

#[derive(Default)]
pub struct Body {
    parts: VecDeque<Bytes>,
    len: usize,
    _hold: Option<Hold>,
}

impl Body {
    pub fn empty() -> Body {
        Body::default()
    }

    /// The parts, sent in order.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Body {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        Body {
            parts,
            len,
            _hold: None,
        }
    }

    /// Hold a share of `shared` (a permit several bodies hold) until this body is
    /// dropped.
    pub(crate) fn with_shared<T: Send + Sync + 'static>(mut self, shared: Option<std::sync::Arc<T>>) -> Body {
        self._hold = shared.map(|s| s as Hold);
        self
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> impl Iterator<Item = &Bytes> {
        self.parts.iter()
    }

    /// The whole body as one buffer (a copy only when there are several parts).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts[0].clone(),
            _ => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in &self.parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::from_parts([b])
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::from(Bytes::from(v))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::from(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::from(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes in {} parts)", self.len, self.parts.len())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.pop_front();
        if let Some(p) = &next {
            self.len -= p.len();
        }
        Poll::Ready(next.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len as u64)
    }
}

/// One payload kept as it is and gzipped, made once and served many times (the
/// status JSON): a client that accepts gzip gets the small one for free.
#[derive(Clone, Debug)]
pub struct Precompressed {
    pub identity: Bytes,
    pub gzip: Bytes,
}

impl Precompressed {
    pub fn new(identity: Bytes) -> Precompressed {
        Precompressed {
            gzip: crate::encoding::stored(&identity, crate::Encoding::Gzip),
            identity,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn parts_go_out_in_order_and_the_permit_lives_as_long_as_the_body() {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let permit = sem.clone().try_acquire_owned().unwrap();
        let body = Body::from_parts([
            Bytes::from_static(b"{\"a\":["),
            Bytes::new(),
            Bytes::from_static(b"1]}"),
        ])
        .with_shared(Some(std::sync::Arc::new(permit)));
        assert_eq!((body.len(), body.to_bytes()), (9, Bytes::from_static(b"{\"a\":[1]}")));
        assert_eq!(sem.available_permits(), 0);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, Bytes::from_static(b"{\"a\":[1]}"));
        assert_eq!(sem.available_permits(), 1, "released with the body");
    }
}
