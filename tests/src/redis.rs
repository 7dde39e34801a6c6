//! Redis servers of a test's own: one node ([`RedisServer`]) or a whole
//! cluster ([`RedisCluster`], started by `scripts/redis-cluster.sh`, the
//! same script the test command uses).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of a test's own on a free loopback port, with an
/// append-only file (`appendfsync always`) so a restart keeps what it
/// acknowledged; stopped on drop. The test command installs `redis-server`.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be run or does not start within 10 s.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        let mut r = RedisServer {
            port,
            dir,
            child: None,
        };
        r.up();
        r
    }

    /// Starts (or restarts) the server on the same port and data.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed (scripts/test.sh does it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it cleanly (SIGTERM), keeping its data for [`RedisServer::up`].
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.signal("-CONT");
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`-STOP` pauses it, `-CONT` resumes it).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Redis Cluster of a test's own: masters with one replica each, started
/// by `scripts/redis-cluster.sh` (failover after 1 s without a master);
/// every node is killed when the last clone is dropped.
#[derive(Clone)]
pub struct RedisCluster {
    dir: std::sync::Arc<ClusterDir>,
    urls: Vec<String>,
}

/// The cluster's data; its drop stops every node.
struct ClusterDir(tempfile::TempDir);

impl ClusterDir {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// One node, as `CLUSTER NODES` describes it.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    /// Its node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master now.
    pub master: bool,
    /// Whether it serves slots.
    pub has_slots: bool,
    /// The id of its master, when it is a replica.
    pub replica_of: Option<String>,
}

fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-cluster.sh")
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli must be installed (scripts/test.sh does it): {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    /// Starts 3 masters and 3 replicas and waits until every slot is served,
    /// every node sees the others in their roles, and every replica is in
    /// sync. Nodes write their AOF without fsync (what a SIGKILL cannot
    /// lose either).
    ///
    /// # Panics
    ///
    /// If the script fails (it says why).
    pub fn start() -> RedisCluster {
        RedisCluster::start_with_appendfsync("no")
    }

    /// [`RedisCluster::start`], with the nodes' `appendfsync` set to `mode`
    /// (`always`, `everysec` or `no`).
    ///
    /// # Panics
    ///
    /// If the script fails (it says why).
    pub fn start_with_appendfsync(mode: &str) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        let out = Command::new("bash")
            .arg(cluster_script())
            .arg("start")
            .arg(dir.path())
            .env("REDIS_CLUSTER_APPENDFSYNC", mode)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/redis-cluster.sh: {e}"));
        assert!(
            out.status.success(),
            "scripts/redis-cluster.sh start failed"
        );
        let urls = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .map(str::to_owned)
            .collect();
        RedisCluster {
            dir: std::sync::Arc::new(ClusterDir(dir)),
            urls,
        }
    }

    /// Every node's URL, comma-separated (the seeds for a client).
    pub fn seeds(&self) -> String {
        self.urls.join(",")
    }

    fn ports(&self) -> Vec<u16> {
        self.urls
            .iter()
            .filter_map(|u| u.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// The nodes as the first live one sees them.
    ///
    /// # Panics
    ///
    /// If no node answers.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        for port in self.ports() {
            let text = redis_cli(port, &["cluster", "nodes"]);
            let nodes: Vec<ClusterNode> = text
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                    Some(ClusterNode {
                        id: (*f.first()?).to_owned(),
                        port,
                        master: f.get(2)?.contains("master") && !f.get(2)?.contains("fail"),
                        has_slots: f.len() > 8,
                        replica_of: f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
                    })
                })
                .collect();
            if !nodes.is_empty() {
                return nodes;
            }
        }
        panic!("no cluster node answers")
    }

    /// What each node says of the cluster, and the end of its log: what a
    /// failed wait prints, so a failure on a loaded machine says why.
    fn describe(&self) -> String {
        let mut out = String::new();
        for port in self.ports() {
            let info = redis_cli(port, &["cluster", "info"]);
            let state = info
                .lines()
                .filter(|l| l.starts_with("cluster_state") || l.starts_with("cluster_slots_"))
                .collect::<Vec<_>>()
                .join(" ");
            let nodes = redis_cli(port, &["cluster", "nodes"]);
            let log = std::fs::read_to_string(self.dir.path().join(format!("{port}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!(
                "== node {port}: {}\n{nodes}-- log:\n{}\n",
                if info.is_empty() {
                    "not answering"
                } else {
                    &state
                },
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }

    /// Sends a signal to one node (`-STOP` pauses it, `-CONT` resumes it).
    ///
    /// # Panics
    ///
    /// If its pid file is missing.
    pub fn signal(&self, port: u16, sig: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("{port}.pid")))
            .unwrap_or_else(|e| panic!("no pid file for node {port}: {e}"));
        let _ = Command::new("kill").args([sig, pid.trim()]).status();
    }

    /// Closes a master's connections to its replicas (`CLIENT KILL TYPE
    /// replica`): until they reconnect, its writes reach only itself.
    pub fn cut_replicas(&self, master_port: u16) {
        redis_cli(master_port, &["client", "kill", "type", "replica"]);
    }

    /// Kills one node with SIGKILL.
    ///
    /// # Panics
    ///
    /// If its pid file is missing.
    pub fn kill9(&self, port: u16) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("{port}.pid")))
            .unwrap_or_else(|e| panic!("no pid file for node {port}: {e}"));
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }

    /// Starts a killed node again on its port and data: it rejoins the
    /// cluster (as a replica, if its master failed over meanwhile).
    ///
    /// # Panics
    ///
    /// If it does not start.
    pub fn restart(&self, port: u16) {
        let ok = Command::new("bash")
            .arg(cluster_script())
            .arg("restart")
            .arg(self.dir.path())
            .arg(port.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "restarting node {port} failed");
    }

    /// Waits until every master serving slots has a replica in sync.
    ///
    /// # Panics
    ///
    /// If that takes longer than `within`.
    pub fn wait_replicated(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let masters: Vec<ClusterNode> = self
                .nodes()
                .into_iter()
                .filter(|n| n.master && n.has_slots)
                .collect();
            let synced = masters.iter().all(|m| {
                let info = redis_cli(m.port, &["info", "replication"]);
                info.lines()
                    .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
            });
            if !masters.is_empty() && synced {
                return;
            }
            assert!(
                start.elapsed() < within,
                "the masters did not get replicas in sync within {within:?}:\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the node on `port` (killed) is no longer a master and
    /// the cluster serves every slot again; returns how long that took.
    ///
    /// # Panics
    ///
    /// If it takes longer than `within`.
    pub fn wait_failed_over(&self, port: u16, within: Duration) -> Duration {
        let start = Instant::now();
        while self.nodes().iter().any(|n| n.port == port && n.master) {
            assert!(
                start.elapsed() < within,
                "node {port} still a master after {within:?}:\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ok(within.saturating_sub(start.elapsed()));
        start.elapsed()
    }

    /// Waits until every live node reports `cluster_state:ok` with every
    /// slot served; returns how long that took.
    ///
    /// # Panics
    ///
    /// If it takes longer than `within`.
    pub fn wait_ok(&self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let live: Vec<String> = self
                .ports()
                .into_iter()
                .map(|p| redis_cli(p, &["cluster", "info"]))
                .filter(|i| !i.is_empty())
                .collect();
            if !live.is_empty()
                && live
                    .iter()
                    .all(|i| i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384"))
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "the cluster did not recover within {within:?}:\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Moves `slots` slots from one master to another with
    /// `redis-cli --cluster reshard`; returns its output.
    ///
    /// # Panics
    ///
    /// If the reshard fails.
    pub fn reshard(&self, from: &ClusterNode, to: &ClusterNode, slots: u32) -> String {
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", from.port)])
            .args(["--cluster-from", &from.id, "--cluster-to", &to.id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .args(["--cluster-pipeline", "10"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster reshard: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "reshard failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(cluster_script())
            .arg("stop")
            .arg(self.path())
            .status();
    }
}
