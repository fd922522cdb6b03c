//! Vercel's side of the function IPC protocol, played against a built function binary.
//!
//! What the platform does (vercel_runtime 2.4.1, see `docs/design.md` and the
//! runtime's source): it listens on a Unix socket, starts the binary with
//! `VERCEL_IPC_PATH` pointing at it, waits for `{"type":"server-started",...}\0`,
//! then sends each invocation as HTTP/1.1 to `127.0.0.1:<httpPort>` with
//! `x-vercel-internal-invocation-id` and `x-vercel-internal-request-id`. The
//! invocation is open (billed) until the binary sends `{"type":"end",...}\0` for it.
//! Log lines of an invocation arrive as `{"type":"log",...}` with a base64 message.
//!
//! Every message is stamped with the instant the reader thread received it, so a
//! test can compare "response fully received" with "invocation ended".

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Debug)]
pub struct Message {
    pub at: Instant,
    pub json: Value,
}

/// One function binary under the emulated platform.
pub struct Platform {
    pub port: u16,
    child: Option<Child>,
    messages: Arc<Mutex<Vec<Message>>>,
    dir: PathBuf,
    pub stderr_path: PathBuf,
}

/// A completed HTTP exchange of one invocation.
pub struct Invocation {
    pub invocation_id: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
    /// When the whole response body had been received.
    pub responded: Instant,
    /// When the request was sent.
    pub sent: Instant,
}

impl Invocation {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Platform {
    /// Start `bin` the way Vercel does (no `VERCEL`, only what the project sets plus
    /// `VERCEL_IPC_PATH`), and wait for `server-started`.
    pub fn start(bin: &str, env: &[(&str, &str)]) -> Platform {
        Self::start_limited(bin, env, None)
    }

    /// [`start`](Self::start) with at most `open_files` file descriptors.
    pub fn start_limited(bin: &str, env: &[(&str, &str)], open_files: Option<u64>) -> Platform {
        // Another process can take the port between free_port() and the binary's
        // bind; the binary then exits at start and is started again on another port.
        let mut last = None;
        for _ in 0..5 {
            match Self::try_start(bin, env, open_files) {
                Ok(p) => return p,
                Err(exited) => last = Some(exited.stderr()),
            }
        }
        panic!("{bin} exited at start 5 times; stderr:\n{}", last.unwrap_or_default());
    }

    /// The binary started, or the platform of a binary that exited before it sent
    /// `server-started`.
    fn try_start(bin: &str, env: &[(&str, &str)], open_files: Option<u64>) -> Result<Platform, Platform> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gwz-ipc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("ipc.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let port = super::free_port();
        let stderr_path = dir.join("stderr.log");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VERCEL_IPC_PATH", &socket)
            .env("VERCEL_DEV_PORT", port.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = open_files {
            super::process::limit_open_files(&mut cmd, n);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let messages: Arc<Mutex<Vec<Message>>> = Arc::default();
        let sink = messages.clone();
        // Every connection the binary makes (a runtime that starts serving again
        // connects again), each read by its own thread into one message list.
        std::thread::spawn(move || {
            while let Ok((mut stream, _)) = listener.accept() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        let n = match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let at = Instant::now();
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(nul) = pending.iter().position(|b| *b == 0) {
                            let frame: Vec<u8> = pending.drain(..=nul).collect();
                            let json = serde_json::from_slice(&frame[..frame.len() - 1]).unwrap_or_else(|e| {
                                panic!("IPC frame is not JSON ({e}): {:?}", String::from_utf8_lossy(&frame))
                            });
                            sink.lock().unwrap().push(Message { at, json });
                        }
                    }
                });
            }
        });
        let mut p = Platform {
            port,
            child: Some(child),
            messages,
            dir,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            if let Some(m) = p.wait_for(Duration::ZERO, |m| m.json["type"] == "server-started") {
                break m;
            }
            if p.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                return Err(p);
            }
            assert!(
                Instant::now() < deadline,
                "{bin} sent no server-started; stderr:\n{}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            started.json["payload"]["httpPort"], port,
            "server-started names the port"
        );
        Ok(p)
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Wait (polling; stamps come from the reader thread) for a message matching `f`.
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&Message) -> bool) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages.lock().unwrap().iter().find(|m| f(m)) {
                return Some(m.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The `end` message of an invocation, waiting up to `timeout`.
    pub fn end_of(&self, invocation_id: &str, timeout: Duration) -> Option<Instant> {
        self.wait_for(timeout, |m| {
            m.json["type"] == "end" && m.json["payload"]["context"]["invocationId"] == invocation_id
        })
        .map(|m| m.at)
    }

    /// Decoded log lines the platform received for an invocation.
    pub fn logs_of(&self, invocation_id: &str) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m.json["type"] == "log" && m.json["payload"]["context"]["invocationId"] == invocation_id)
            .filter_map(|m| m.json["payload"]["message"].as_str().map(base64_decode))
            .collect()
    }

    /// Send one invocation (a GET or POST with the platform's headers) and read it whole.
    pub async fn invoke(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Invocation {
        self.try_invoke(method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("invocation failed: {e}"))
    }

    /// [`invoke`](Self::invoke), or why the request failed (the port refused it).
    pub async fn try_invoke(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Invocation, reqwest::Error> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let invocation_id = format!("inv-{id}");
        let client = reqwest::Client::builder().no_gzip().no_brotli().build().unwrap();
        let mut req = client
            .request(method.parse().unwrap(), format!("http://127.0.0.1:{}{path}", self.port))
            .header("x-vercel-internal-invocation-id", &invocation_id)
            .header("x-vercel-internal-request-id", id.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let sent = Instant::now();
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok(Invocation {
            invocation_id,
            status,
            headers,
            body,
            responded: Instant::now(),
            sent,
        })
    }

    /// SIGTERM, as the platform sends when it retires an instance; waits for exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = Command::new("bash")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Standard base64 (the runtime encodes log messages with it).
fn base64_decode(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Median and worst of a set of durations, in ms.
pub fn median_and_worst(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(*v.last().unwrap()))
}
