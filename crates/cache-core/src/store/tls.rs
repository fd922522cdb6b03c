//! TLS for `rediss://` (managed Redis: Upstash, Redis Cloud, ...).
//!
//! fred's own `rediss://` handling builds its roots from the system's CA bundle only,
//! and fails outright if any system certificate cannot be read. A function image may
//! carry no bundle at all, so here the roots are:
//! - Mozilla's roots compiled into the binary (`webpki-roots`): public CAs always work;
//! - plus whatever the system bundle has (unreadable entries are skipped);
//! - plus `REDIS_TLS_CA_CERT` (PEM text, or a path to a PEM file) for a private CA.
//!
//! The provider is named explicitly (aws-lc, as fred and reqwest use) rather than the
//! process default, which is ambiguous when more than one provider is compiled in.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::StoreError;

/// The client configuration for a `rediss://` connection.
pub(crate) fn client_config(extra_ca: Option<&str>) -> Result<rustls::ClientConfig, StoreError> {
    let system = rustls_native_certs::load_native_certs().certs;
    let roots = root_store(system, extra_ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Mozilla's roots, plus the system's, plus the configured private CA.
fn root_store(system: Vec<CertificateDer<'static>>, extra_ca: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(system);
    if let Some(ca) = extra_ca {
        let bad = |why: String| StoreError::Unavailable(format!("REDIS_TLS_CA_CERT: {why}"));
        let pem = if ca.trim_start().starts_with("-----BEGIN") {
            ca.as_bytes().to_vec()
        } else {
            std::fs::read(ca).map_err(|e| bad(format!("cannot read {ca}: {e}")))?
        };
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
            roots.add(cert).map_err(|e| bad(format!("not a CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate found".into()));
        }
    }
    Ok(roots)
}

/// `rediss://...` → (`redis://...`, true): the TLS connector is ours, not fred's.
pub(crate) fn split_scheme(url: &str) -> (String, bool) {
    for (tls, plain) in [("rediss-cluster://", "redis-cluster://"), ("rediss://", "redis://")] {
        if let Some(rest) = url.strip_prefix(tls) {
            return (format!("{plain}{rest}"), true);
        }
    }
    (url.to_string(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_are_there_without_any_system_bundle() {
        let roots = root_store(Vec::new(), None).unwrap();
        assert!(roots.len() > 100, "Mozilla's roots ship in the binary: {}", roots.len());
    }

    #[test]
    fn a_bad_private_ca_is_a_clear_error() {
        let err = root_store(Vec::new(), Some("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("REDIS_TLS_CA_CERT"), "{err}");
        let err = root_store(
            Vec::new(),
            Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("REDIS_TLS_CA_CERT"), "{err}");
    }

    #[test]
    fn tls_schemes_are_split() {
        assert_eq!(
            split_scheme("rediss://:pw@h:6380/0"),
            ("redis://:pw@h:6380/0".into(), true)
        );
        assert_eq!(
            split_scheme("rediss-cluster://h:1?node=h:2"),
            ("redis-cluster://h:1?node=h:2".into(), true)
        );
        assert_eq!(split_scheme("redis://h:6379"), ("redis://h:6379".into(), false));
    }
}
