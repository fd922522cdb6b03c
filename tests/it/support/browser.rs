//! The shared browser setup of the page tests: Debian's Chromium, headless, driven
//! through ChromeDriver's W3C WebDriver API, and torn down completely.
//!
//! Teardown ends the WebDriver session (which closes the browser), then kills the
//! ChromeDriver process group as a fallback (ChromeDriver and the Chromium it
//! started share the group), and removes the profile directory. A Chromium that
//! outlived ChromeDriver used to stay behind, orphaned, after every CI run.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub fn bin(env: &str, default: &str) -> Option<String> {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_string());
    std::path::Path::new(&path).exists().then_some(path)
}

pub struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// `--user-data-dir` of this browser: unique, so leaks can be found by it.
    pub profile: PathBuf,
    closed: bool,
}

impl Driver {
    pub async fn start(chromium: &str, chromedriver: &str) -> Driver {
        Self::start_with(chromium, chromedriver, true).await
    }

    /// A browser with JavaScript on or off (a content setting: the page's scripts do
    /// not run; WebDriver's own commands still work).
    pub async fn start_with(chromium: &str, chromedriver: &str, javascript: bool) -> Driver {
        let port = super::free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("gwz-chromium-{}-{}", std::process::id(), fastrand::u64(..)));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         // A non-localhost name for the dev server (the pages treat localhost specially).
                         "--host-resolver-rules=MAP models.test 127.0.0.1",
                         format!("--user-data-dir={}", profile.display())],
                "prefs": { "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 } }
            }
        }}});
        let v: Value = http.post(format!("{base}/session")).json_body(&caps).await;
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Driver {
            child,
            base,
            session,
            http,
            profile,
            closed: false,
        }
    }

    pub async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let bytes = req.send().await.unwrap().bytes().await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    pub async fn wait_for(&self, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script).await;
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {script}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// WebDriver's id of the first element matching `css`.
    async fn element(&self, css: &str) -> String {
        let el = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        el.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_string()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// How many elements match `css` (WebDriver's own query: works with JavaScript off).
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array().map_or(0, Vec::len)
    }

    /// Click the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        std::fs::write(path, base64_decode(b64.as_str().unwrap())).unwrap();
    }
}

impl Driver {
    /// End the session (the browser quits), then make sure: kill the process group,
    /// remove the profile. Also run by `Drop` (a failing test still cleans up).
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // DELETE /session/{id} with a plain blocking request: Drop cannot await.
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        let _ = Command::new("bash")
            .args(["-c", &format!("kill -KILL -- -{} 2>/dev/null", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_using(&self.profile).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    /// Close now and report what is left: the pids still running with this profile.
    pub fn quit(mut self) -> (Vec<u32>, bool) {
        self.close();
        (processes_using(&self.profile), self.profile.exists())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.close();
    }
}

/// Pids whose command line mentions `profile` (Chromium's processes carry
/// `--user-data-dir=<profile>`).
pub fn processes_using(profile: &std::path::Path) -> Vec<u32> {
    let needle = profile.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            pids.push(pid);
        }
    }
    pids
}

trait JsonBody {
    async fn json_body(self, v: &Value) -> Value;
}

impl JsonBody for reqwest::RequestBuilder {
    async fn json_body(self, v: &Value) -> Value {
        let r = self
            .header("content-type", "application/json")
            .body(v.to_string())
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | (val(*c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
