//! A real redis-server for tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    /// `--tls-port`, when started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    extra_args: Vec<String>,
    child: Option<Child>,
}

/// PEM files for `redis-server --tls-*`.
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl RedisServer {
    /// A server on a free port (another one if the port was taken meanwhile).
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// A server on a free port started with `extra_args` (e.g. `--rename-command SCRIPT ""`).
    pub fn start_with(extra_args: Vec<String>) -> Self {
        for _ in 0..10 {
            let mut s = RedisServer {
                port: crate::free_port(),
                tls_port: None,
                extra_args: extra_args.clone(),
                child: None,
            };
            if s.try_restart().is_ok() {
                return s;
            }
        }
        panic!("no free port for redis-server after 10 tries");
    }

    pub fn start_on(port: u16) -> Self {
        let mut s = RedisServer {
            port,
            tls_port: None,
            extra_args: Vec::new(),
            child: None,
        };
        s.restart();
        s
    }

    /// A plain port (for the test's own inspection) and a TLS port serving `tls`.
    pub fn start_tls(tls: &TlsFiles) -> Self {
        let tls_port = crate::free_port();
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let mut s = RedisServer {
            port: crate::free_port(),
            tls_port: Some(tls_port),
            extra_args: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path(&tls.cert),
                "--tls-key-file".into(),
                path(&tls.key),
                "--tls-ca-cert-file".into(),
                path(&tls.ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            child: None,
        };
        s.restart();
        s
    }

    /// A read-only replica of `master` (`--replicaof`), once it has synced: writes
    /// to it answer `READONLY`, as a managed Redis pointed at a replica does.
    pub fn start_replica_of(master: &RedisServer) -> Self {
        let s = Self::start_with(vec!["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&s.command(&[b"INFO", b"replication"])).contains("master_link_status:up") {
            assert!(Instant::now() < deadline, "the replica never synced with its master");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and wait until it answers.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("{e}");
        }
    }

    /// Start on `self.port` and wait until *this* server answers (its `process_id`),
    /// not another process that holds the port.
    fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // Its own directory: a replica's sync writes an RDB file, and a server
            // started where one lies loads it (another test's keys).
            .arg("--dir")
            .arg(self.dir())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}); run the README's test command (scripts/test.sh), which installs it")
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited ({status}): the port is taken",
                    self.port
                ));
            }
            if ping(self.port) && server_pid(self.port) == Some(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server on port {} did not answer PING", self.port))
    }

    /// The server's working directory (created on first use, removed on drop).
    fn dir(&self) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gwz-redis-{}-{}", std::process::id(), self.port));
        std::fs::create_dir_all(&dir).expect("a temp dir for redis-server");
        dir
    }

    /// Kill the server (SIGKILL): clients see dropped connections.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run a raw command through redis-cli-free RESP: returns the reply text.
    pub fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        Self::command_on(self.port, args)
    }

    /// [`command`](Self::command) on the server at `port` (from another thread).
    pub fn command_on(port: u16, args: &[&[u8]]) -> Vec<u8> {
        try_command(port, args).unwrap_or_else(|| panic!("no answer from redis-server on port {port}"))
    }
}

/// One command on a fresh connection; `None` when the server does not answer.
fn try_command(port: u16, args: &[&[u8]]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    let n = s.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The `process_id` of the server answering on `port`.
fn server_pid(port: u16) -> Option<u32> {
    let info = try_command(port, &[b"INFO", b"server"])?;
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!(
            "gwz-redis-{}-{}",
            std::process::id(),
            self.port
        )));
    }
}
