//! A built function binary running as a local HTTP server (`VERCEL_DEV_PORT`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FunctionProcess {
    pub port: u16,
    child: Child,
}

impl FunctionProcess {
    /// Spawn `bin` with only `env` (plus PATH), and wait until it accepts connections.
    pub fn spawn(bin: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_logged(bin, env, None)
    }

    /// Like [`spawn`](Self::spawn), with stderr (the logs) written to `log`.
    pub fn spawn_logged(bin: &str, env: &[(&str, &str)], log: Option<&std::path::Path>) -> Self {
        let port = super::free_port();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VERCEL_DEV_PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::null(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{bin} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        FunctionProcess { port, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
