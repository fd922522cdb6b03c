//! Bearer-token checks for the mutating routes.
//!
//! Design failures 7-8 (docs/design.md): no default secret (unset = the route refuses), no header-presence
//! "auth" (`x-vercel-cron` can be sent by anyone), constant-time comparison, and
//! the presented token never appears in a log line or a response.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Longest Authorization header considered; anything longer is rejected unread.
const MAX_AUTHORIZATION_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No Authorization header.
    Missing,
    /// Present but not `Bearer <token>` (wrong scheme, whitespace, non-ASCII, too long).
    Malformed,
    /// Well-formed, wrong token.
    Invalid,
}

impl AuthFailure {
    /// A description safe to log and return: it never includes the presented value.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing Authorization header",
            AuthFailure::Malformed => "Authorization header is not 'Bearer <token>'",
            AuthFailure::Invalid => "invalid token",
        }
    }
}

/// Check `Authorization: Bearer <token>` against `secret` in constant time.
pub(crate) fn check_bearer(headers: &HeaderMap, secret: &Secret) -> Result<(), AuthFailure> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() || value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthFailure::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(AuthFailure::Malformed);
    }
    if bool::from(token.as_bytes().ct_eq(secret.expose().as_bytes())) {
        Ok(())
    } else {
        Err(AuthFailure::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::AUTHORIZATION, http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn secret() -> Secret {
        crate::config::Config::from_pairs(&[("CRON_SECRET", "s3cret-s3cret-s3cret")])
            .unwrap()
            .cron_secret
            .unwrap()
    }

    #[test]
    fn matrix() {
        let s = secret();
        assert_eq!(check_bearer(&headers(&[]), &s), Err(AuthFailure::Missing));
        assert_eq!(check_bearer(&headers(&[b"Bearer s3cret-s3cret-s3cret"]), &s), Ok(()));
        assert_eq!(check_bearer(&headers(&[b"bearer s3cret-s3cret-s3cret"]), &s), Ok(()));
        assert_eq!(
            check_bearer(&headers(&[b"Bearer wrong"]), &s),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            check_bearer(&headers(&[b"Bearer s3cret-s3cret-s3cre"]), &s),
            Err(AuthFailure::Invalid)
        );
        for bad in [
            &b"Basic s3cret-s3cret-s3cret"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer  s3cret-s3cret-s3cret",
            b"Bearer s3cret-s3cret-s3cret ",
            b"s3cret-s3cret-s3cret",
            b"Bearer s3\xffcret",
        ] {
            assert_eq!(
                check_bearer(&headers(&[bad]), &s),
                Err(AuthFailure::Malformed),
                "{bad:?}"
            );
        }
        let huge = format!("Bearer {}", "a".repeat(5000));
        assert_eq!(
            check_bearer(&headers(&[huge.as_bytes()]), &s),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            check_bearer(&headers(&[b"Bearer s3cret-s3cret-s3cret", b"Bearer x"]), &s),
            Err(AuthFailure::Malformed)
        );
    }
}
