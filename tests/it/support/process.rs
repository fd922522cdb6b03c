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
        Self::spawn_limited(bin, env, log, None)
    }

    /// Like [`spawn_logged`](Self::spawn_logged), with at most `open_files` file
    /// descriptors (`RLIMIT_NOFILE`, soft and hard) when given.
    pub fn spawn_limited(
        bin: &str,
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
        open_files: Option<u64>,
    ) -> Self {
        // Another process can take the port between free_port() and the bind; the
        // binary then exits and is started again on another port.
        for _ in 0..5 {
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
            if let Some(n) = open_files {
                limit_open_files(&mut cmd, n);
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !super::listens_on(child.id(), port) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                assert!(Instant::now() < deadline, "{bin} did not listen on {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                return FunctionProcess { port, child };
            }
        }
        panic!("{bin} exited at start 5 times (see its log)");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (not exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident set (VmHWM) and current (VmRSS) in MB, from /proc.
    pub fn memory_mb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb = |field: &str| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (kb("VmHWM:") / 1024, kb("VmRSS:") / 1024)
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

/// The child gets at most `n` file descriptors (`RLIMIT_NOFILE`, set before exec).
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are allowed;
    // setrlimit is one, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}
