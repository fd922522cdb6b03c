//! Test-only support shared by cache-core's own suites and the repository's
//! end-to-end tests: a real `redis-server` (plain or TLS) on a free loopback port
//! (never 6379), started per test and killed on drop, and a 3-master Cluster.

pub mod cluster;
pub mod redis;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A port nobody listens on right now, and never handed out before in this process
/// (tests run in parallel: two must not get the same port between its release here
/// and a server binding it). Another process can still take it meanwhile: servers
/// started on it check that the one answering is theirs.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Whether process `pid` holds the socket listening on `port` (from Linux's /proc).
/// A connection to the port proves nothing: if another process took the port
/// between [`free_port`] and the server's bind, the server exited and the
/// connection reached the other one.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listener_is_found_in_its_own_process_only() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(super::listens_on(std::process::id(), port));
        assert!(!super::listens_on(1, port), "pid 1 does not hold it");
        drop(l);
        assert!(!super::listens_on(std::process::id(), port));
    }
}
