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
