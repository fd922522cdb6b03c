//! Test-only support shared by cache-core's own suites and the repository's
//! end-to-end tests: a real `redis-server` (plain or TLS) on a free loopback port
//! (never 6379), started per test and killed on drop, and a 3-master Cluster.

pub mod cluster;
pub mod redis;

use std::net::TcpListener;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
