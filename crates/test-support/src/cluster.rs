//! A 3-master Redis Cluster on loopback ports, started by the test and torn down on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Three masters holding every slot. A node can lose its port (or its bus port)
    /// to another process between [`crate::free_port`] and its bind; then the
    /// whole cluster is started again on other ports.
    pub fn start() -> Self {
        let mut why = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(c) => return c,
                Err(e) => why = e,
            }
        }
        panic!("no Redis Cluster after 5 tries: {why}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("gwz-cluster-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let mut c = RedisCluster {
            ports: ports.clone(),
            children: Vec::new(),
            dir,
        };
        for p in &ports {
            // The bus port is named, not left at port + 10000: that one may be
            // taken, or above 65535 for a port from the upper ephemeral range.
            let bus_port = crate::free_port();
            let child = Command::new(&bin)
                .args([
                    "--port",
                    &p.to_string(),
                    "--cluster-port",
                    &bus_port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{p}.conf"),
                    "--dir",
                    c.dir.to_str().unwrap(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            c.children.push(child);
        }
        for i in 0..ports.len() {
            c.wait_for(i, |info| info.contains("cluster_state:"))?;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (package redis-tools) is needed for the cluster tests");
        if !out.status.success() {
            return Err(format!(
                "cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        for i in 0..ports.len() {
            c.wait_for(i, |info| info.contains("cluster_state:ok"))?;
        }
        Ok(c)
    }

    /// `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let extra: Vec<String> = self.ports[1..].iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{}?{}", self.ports[0], extra.join("&"))
    }

    /// Until node `i` answers `CLUSTER INFO` with what `ok` wants, while its process
    /// lives (a node that lost its port exits; another process may answer there).
    fn wait_for(&mut self, i: usize, ok: impl Fn(&str) -> bool) -> Result<(), String> {
        let port = self.ports[i];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.children[i].try_wait() {
                return Err(format!("cluster node {port} exited ({status}): a port was taken"));
            }
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output();
            if let Ok(o) = out
                && o.status.success()
                && ok(&String::from_utf8_lossy(&o.stdout))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("cluster node {port} not ready in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keys per node (so a test can see data spread over the slots).
    pub fn keys_per_node(&self) -> Vec<usize> {
        self.ports
            .iter()
            .map(|p| {
                let out = Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "dbsize"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
