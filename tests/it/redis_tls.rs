//! `rediss://` end to end: the `models` function binary against a redis-server that
//! speaks TLS with a certificate from a CA made here, trusted through
//! `REDIS_TLS_CA_CERT` (a path or the PEM itself). Without that trust the certificate
//! is refused: the read still answers (from the upstream), and nothing is stored.

use crate::support;

use std::path::Path;

use support::process::FunctionProcess;
use support::redis::{RedisServer, TlsFiles};

/// A private CA and a server certificate for 127.0.0.1, written under `dir`.
fn make_certificates(dir: &Path) -> (TlsFiles, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gatewayz test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "redis test server");
    let server = server_params.signed_by(&server_key, &ca).unwrap();

    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca: dir.join("ca.pem"),
    };
    std::fs::write(&files.cert, server.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();
    (files, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_end_to_end() {
    let dir = std::env::temp_dir().join(format!("gwz-tls-{}", std::process::id()));
    let (tls, ca_pem) = make_certificates(&dir);
    let redis = RedisServer::start_tls(&tls);
    let sample = sample_catalog::start_local().await;
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port.unwrap());
    let base = sample.base_url();
    let ca_path = tls.ca.to_str().unwrap().to_string();
    let exists = |key: &str| redis.command(&[b"EXISTS", key.as_bytes()]) == b":1\r\n";
    let c = reqwest::Client::new();

    for (prefix, ca) in [
        ("path:", Some(ca_path.as_str())),
        ("pem:", Some(ca_pem.as_str())),
        ("untrusted:", None),
    ] {
        let mut env = vec![
            ("REDIS_URL", url.as_str()),
            ("GATEWAYZ_API_URL", base.as_str()),
            ("CACHE_KEY_PREFIX", prefix),
            ("LOCAL_CACHE_TTL_MS", "0"),
        ];
        if let Some(ca) = ca {
            env.push(("REDIS_TLS_CA_CERT", ca));
        }
        let f = FunctionProcess::spawn(env!("CARGO_BIN_EXE_models"), &env);
        let first = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
        assert_eq!(first.status(), 200, "{prefix}");
        assert_eq!(first.headers()["x-cache"], "MISS");
        let key = format!("{prefix}models:v4:groq");
        if ca.is_some() {
            assert!(exists(&key), "{prefix}: the entry went to Redis over TLS");
            let second = c.get(f.url("/api/models?gateway=groq")).send().await.unwrap();
            assert_eq!(
                second.headers()["x-cache"],
                "HIT",
                "{prefix}: and is read back over TLS"
            );
            assert_eq!(sample.requests("groq"), 1, "{prefix}: one upstream fetch");
        } else {
            assert!(!exists(&key), "an untrusted certificate must be refused");
        }
        sample.reset_counts();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
