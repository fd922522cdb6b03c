//! The dev server faces clients directly: a request whose headers drip in, and a
//! keep-alive connection left idle, are both closed (hyper's header-read timeout, our
//! idle timeout), rather than held open for as long as the client likes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dev_server::Limits;

async fn server(limits: Limits) -> std::net::SocketAddr {
    let config = cache_core::Config::from_pairs(&[("GATEWAYZ_API_URL", "http://127.0.0.1:9")]).unwrap();
    let catalog = cache_core::App::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dev_server::serve_with(
        listener,
        catalog,
        cache_core::spawn::TaskSpawner::new(),
        limits,
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
