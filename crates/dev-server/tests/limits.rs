//! The dev server faces clients directly: a request whose headers drip in, and a
//! keep-alive connection left idle, are both closed (hyper's header-read timeout, our
//! idle timeout), rather than held open for as long as the client likes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dev_server::{Limits, Options};

async fn server(limits: Limits) -> std::net::SocketAddr {
    let config = cache_core::config::Config::from_pairs(&[("GATEWAYZ_API_URL", "http://127.0.0.1:9")]).unwrap();
    let app = cache_core::App::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dev_server::serve_with(
        listener,
        app,
        cache_core::spawn::TaskSpawner::new(),
        Options {
            limits,
            ..Default::default()
        },
    ));
    addr
}

/// Read until the server closes the connection; how long that took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripping_headers_are_cut_off() {
    let limits = Limits {
        header_read: Duration::from_millis(800),
        idle: Duration::from_secs(30),
    };
    let addr = server(limits).await;
    let dripper = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
        let watcher = s.try_clone().unwrap();
        let drip = std::thread::spawn(move || {
            for i in 0..40 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(format!("x-drip-{i}: 1\r\n").as_bytes()).is_err() {
                    return;
                }
            }
        });
        let closed = closed_within(watcher, Duration::from_secs(6));
        let _ = drip.join();
        closed
    });
    let closed = dripper.await.unwrap();
    assert!(closed.is_some(), "a request dripping headers was kept open");
    assert!(closed.unwrap() < Duration::from_secs(3), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let limits = Limits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_millis(800),
    };
    let addr = server(limits).await;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        // Read the response head at least, then stay idle on the kept-alive connection.
        let mut buf = [0u8; 16];
        s.read_exact(&mut buf).unwrap();
        assert!(buf.starts_with(b"HTTP/1.1 200"));
        closed_within(s, Duration::from_secs(6))
    })
    .await
    .unwrap();
    assert!(closed.is_some(), "an idle keep-alive connection stayed open");
    assert!(closed.unwrap() < Duration::from_secs(3), "{closed:?}");
}

/// CPU seconds (user + system) the process has used so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name: utime and stime are 14th and 15th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Out of file descriptors, the accept loop backs off instead of spinning on the
/// error (it burned ~7.5 CPU-seconds in 9 s), and serves again once connections close.
#[test]
fn running_out_of_file_descriptors_neither_spins_nor_stops_the_server() {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dev-server"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEWAYZ_API_URL", "http://127.0.0.1:9")
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !test_support::listens_on(child.id(), port) {
        assert!(matches!(child.try_wait(), Ok(None)), "the dev server exited at start");
        assert!(Instant::now() < deadline, "the dev server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_seconds(child.id()) - before;
    assert!(matches!(child.try_wait(), Ok(None)), "the dev server exited");
    assert!(spent < 0.5, "the accept loop spun: {spent:.2} CPU-seconds in 2 s");
    drop(held);
    let ok = loop {
        let answered = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            s.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            Some(head.starts_with(b"HTTP/1.1 200"))
        });
        if answered == Some(true) || Instant::now() > deadline + Duration::from_secs(10) {
            break answered == Some(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no 200 once the connections closed");
    println!("out of file descriptors: {spent:.3} CPU-seconds in 2 s, then 200");
}
