//! The dev server reads `.env.local` then `.env` (the real environment wins) and
//! says at start-up which file it loaded, which store and which upstream it uses,
//! never a secret's value.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn env_files_are_loaded_and_reported_without_secrets() {
    let dir = std::env::temp_dir().join(format!("gwz-devserver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join(".env.local"),
        format!(
            "CACHE_WARMING_SECRET=local-secret-value-123\nPORT={port}\n\
             GATEWAYZ_API_URL=http://apiuser:url-password-321@127.0.0.1:9/base?apikey=url-key-654\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join(".env"),
        "CACHE_WARMING_SECRET=dotenv-secret-456\nGATEWAYS=groq\nCRON_SECRET=from-dotenv-789\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dev-server"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CRON_SECRET", "real-env-wins-000") // the real environment beats both files
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.contains("try: curl") {
        assert!(Instant::now() < deadline, "no start-up banner: {log}");
        let Some(Ok(line)) = lines.next() else { break };
        log.push_str(&line);
        log.push('\n');
    }
    while !test_support::listens_on(child.id(), port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        test_support::listens_on(child.id(), port),
        "PORT from .env.local was used"
    );
    // .env.local's secret beats .env's: the one from .env is refused, the other is not.
    let status = |token: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "POST /api/cache/warm-models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    assert_eq!(status("dotenv-secret-456"), "401");
    assert_eq!(
        status("local-secret-value-123"),
        "502",
        "accepted; the unreachable upstream makes every gateway fail"
    );
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();

    assert!(log.contains("env files loaded: .env.local, .env"), "{log}");
    assert!(log.contains("store: memory"), "{log}");
    assert!(
        log.contains("upstream: http://***@127.0.0.1:9/base?apikey=***"),
        "{log}"
    );
    assert!(log.contains("CRON_SECRET required"), "{log}");
    for secret in [
        "local-secret-value-123",
        "dotenv-secret-456",
        "from-dotenv-789",
        "real-env-wins-000",
        "url-password-321",
        "url-key-654",
        "apiuser",
    ] {
        assert!(!log.contains(secret), "a secret value was printed: {log}");
    }
}
