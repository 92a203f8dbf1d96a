//! A private three-shard Redis Cluster for one test (never the machine's shared Redis):
//! `redis-server --cluster-enabled yes` on free loopback ports, joined by
//! `redis-cli --cluster create`. A test can kill and restart one shard, or all, and move a slot
//! from one shard to another.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::TIMEOUT;

const INSTALL: &str = "install them (Debian or Ubuntu: `sudo apt-get install redis-server`, \
                       which brings redis-cli; macOS: `brew install redis`)";

/// Shards in the cluster.
const SHARDS: usize = 3;

/// A Redis Cluster of three primaries (no replicas) of a test's own, on loopback ports, without
/// persistence; a shard that is down leaves the others serving (`cluster-require-full-coverage
/// no`). Stopped (and its folders removed) when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

/// A port that is free, and whose cluster bus port (10000 higher) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli` against a port; its output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl RedisCluster {
    /// Starts three shards, joins them into a cluster, and waits until every one says the
    /// cluster is ok.
    ///
    /// Returns `None` when `redis-server` or `redis-cli` is not installed (the test should
    /// return: it is skipped), after one line on standard error per test binary. In CI a
    /// missing binary panics instead.
    pub async fn start() -> Option<RedisCluster> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !super::servers::available(&["redis-server", "redis-cli"], INSTALL) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let ports: Vec<u16> = (0..SHARDS).map(|_| free_cluster_port()).collect();
        let mut cluster = RedisCluster {
            dir,
            ports,
            children: (0..SHARDS).map(|_| None).collect(),
        };
        for shard in 0..SHARDS {
            std::fs::create_dir_all(cluster.dir.join(shard.to_string()))
                .expect("create a folder for a shard");
            cluster.spawn(shard).await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for shard in 0..SHARDS {
            cluster.wait_ok(shard).await;
        }
        Some(cluster)
    }

    /// The URL to give `Redis::new`: `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,..`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The shards' ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`), asked of a live shard.
    pub fn keyslot(&self, key: &str) -> u16 {
        let shard = self
            .children
            .iter()
            .position(Option::is_some)
            .expect("a live shard");
        cli(self.ports[shard], &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("a slot")
    }

    /// The address (`127.0.0.1:PORT`) of a shard.
    pub fn address(&self, shard: usize) -> String {
        format!("127.0.0.1:{}", self.ports[shard])
    }

    /// The shard (an index into [`ports`](Self::ports)) that holds `slot`, as a live
    /// shard's `CLUSTER NODES` says.
    pub fn shard_of(&self, slot: u16) -> usize {
        let live = self
            .children
            .iter()
            .position(Option::is_some)
            .expect("a live shard");
        let nodes = cli(self.ports[live], &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(address) = fields.get(1) else {
                continue;
            };
            let port = address
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            let holds = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(start)), Some(Ok(end))) => (start..=end).contains(&slot),
                    (Some(Ok(only)), None) => only == slot,
                    _ => false,
                }
            });
            if holds && let Some(shard) = port.and_then(|p| self.ports.iter().position(|&q| q == p))
            {
                return shard;
            }
        }
        panic!("no shard holds slot {slot}: {nodes}");
    }

    /// Kills one shard (as a crash would) and waits for it to end.
    pub fn kill(&mut self, shard: usize) {
        if let Some(mut child) = self.children[shard].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed shard again (it keeps its slots: its `nodes.conf` is kept; its data is
    /// not) and waits until it says the cluster is ok.
    pub async fn resume(&mut self, shard: usize) {
        self.kill(shard);
        self.spawn(shard).await;
        self.wait_ok(shard).await;
    }

    /// Kills every shard.
    pub fn kill_all(&mut self) {
        for shard in 0..SHARDS {
            self.kill(shard);
        }
    }

    /// Starts every shard again and waits until each says the cluster is ok.
    pub async fn resume_all(&mut self) {
        for shard in 0..SHARDS {
            self.kill(shard);
            self.spawn(shard).await;
        }
        for shard in 0..SHARDS {
            self.wait_ok(shard).await;
        }
    }

    /// Moves `slot` (and its keys) to shard `to`, as `redis-cli --cluster reshard` does for a
    /// range: importing, migrating, the keys, then the new owner everywhere.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.shard_of(slot);
        if from == to {
            return;
        }
        let (src, dst) = (self.ports[from], self.ports[to]);
        let (src_id, dst_id) = (
            cli(src, &["CLUSTER", "MYID"]),
            cli(dst, &["CLUSTER", "MYID"]),
        );
        let slot = slot.to_string();
        cli(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
        cli(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
        loop {
            let keys = cli(src, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let dst_port = dst.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &dst_port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            cli(src, &args);
        }
        for port in &self.ports {
            cli(*port, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
        }
    }

    async fn spawn(&mut self, shard: usize) {
        let port = self.ports[shard];
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.join(shard.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.children[shard] = Some(child);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if cli(port, &["PING"]) == "PONG" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on port {port} did not answer within {TIMEOUT:?}");
    }

    async fn wait_ok(&self, shard: usize) {
        let port = self.ports[shard];
        let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
        while tokio::time::Instant::now() < deadline {
            if cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the cluster is not ok on port {port} within {:?}",
            TIMEOUT * 3
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
