//! The shared browser setup of the page tests: Debian's Chromium, headless, driven
//! through ChromeDriver's W3C WebDriver API, and torn down completely.
//!
//! Teardown ends the WebDriver session (which closes the browser), then kills the
//! ChromeDriver process group as a fallback (ChromeDriver and the Chromium it
//! started share the group), and removes the profile directory. A Chromium that
//! outlived ChromeDriver used to stay behind, orphaned, after every CI run.
//!
//! The WebDriver client is `fantoccini`, over a plain HTTP connector (ChromeDriver
//! listens on loopback: no TLS stack to build).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

pub fn bin(env: &str, default: &str) -> Option<String> {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_string());
    std::path::Path::new(&path).exists().then_some(path)
}

pub struct Driver {
    child: Child,
    client: Client,
    /// ChromeDriver's address and the session, for the blocking teardown in `Drop`.
    addr: String,
    session: String,
    /// `--user-data-dir` of this browser: unique, so leaks can be found by it.
    pub profile: PathBuf,
    closed: bool,
}

/// Chromium's network emulation (a ChromeDriver extension command).
#[derive(Debug)]
struct NetworkConditions(Value);

impl fantoccini::wd::WebDriverCompatibleCommand for NetworkConditions {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/chromium/network_conditions",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "network_conditions": self.0 });
        (http::Method::POST, Some(body.to_string()))
    }
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
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("gwz-chromium-{}-{}", std::process::id(), fastrand::u64(..)));
        let caps = json!({
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
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await
            .expect("a WebDriver session");
        let session = client.session_id().await.unwrap().expect("a session id");
        Driver {
            child,
            client,
            addr,
            session,
            profile,
            closed: false,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Run `script` asynchronously: it ends by calling its last argument with the result.
    pub async fn js_async(&self, script: &str) -> Value {
        self.client.execute_async(script, vec![]).await.unwrap()
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

    pub async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// How many elements match `css` (WebDriver's own query: works with JavaScript off).
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Click the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Emulate a network (Chromium's `network_conditions`: latency in ms, throughputs
    /// in bytes per second).
    pub async fn throttle(&self, latency_ms: u64, down: u64, up: u64) {
        let conditions = json!({
            "offline": false, "latency": latency_ms, "download_throughput": down, "upload_throughput": up
        });
        self.client.issue_cmd(NetworkConditions(conditions)).await.unwrap();
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        std::fs::write(path, self.client.screenshot().await.unwrap()).unwrap();
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
        let addr = self.addr.clone();
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
