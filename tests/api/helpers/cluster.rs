//! A real Redis Cluster on loopback for the cluster-mode tests (`cluster.rs`): 6 private
//! `redis-server` nodes (3 masters, 3 replicas) made into a cluster by `redis-cli --cluster
//! create`. `shared_cluster` is the one cluster of every test that leaves it whole,
//! started on first use; `PrivateCluster::start` gives a test that kills, pauses or
//! freezes a node a cluster of its own.
//!
//! The nodes must not outlive the test process, however it ends:
//! - a cluster of a test is stopped by `Drop` (kill by PID, wait, remove its directory);
//! - the shared cluster lives in a static, which is never dropped, so an `atexit` handler
//!   stops it when the test binary exits normally (all tests passed or some failed);
//! - if the process is killed (SIGKILL, Ctrl-C), neither runs: every node is therefore
//!   started with `PR_SET_PDEATHSIG`, so the kernel kills it when the thread that started
//!   it ends. The shared cluster is started from a thread that lives as long as the
//!   process (a test's thread ends with its test), so its nodes die with the process;
//! - directories of killed runs (`pl-test-cluster-<pid>-…` under the temp dir, whose
//!   process is gone) are removed when the next run starts a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{TestApp, free_port, random_suffix, spawn_app_with};

const TMP_PREFIX: &str = "pl-test-cluster-";

struct Node {
    port: u16,
    child: Child,
}

/// Six cluster nodes on free loopback ports, with their config files in a private
/// directory. Stopped (by PID) on drop.
pub struct PrivateCluster {
    nodes: Mutex<Vec<Node>>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl PrivateCluster {
    pub fn start() -> Self {
        Self::start_on(PortReservation::new(6))
    }

    /// The same on reserved ports (e.g. ones an app was told about before).
    pub fn start_on(reserved: PortReservation) -> Self {
        // One start at a time in this process, so no two clusters pick the same free port.
        static STARTING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        super::remove_directories_of_dead_runs(&[&std::env::temp_dir()], TMP_PREFIX);
        let ports = reserved.release();
        let dir = std::env::temp_dir().join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            random_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let nodes = ports.iter().map(|&port| start_node(port, &dir)).collect();
        let cluster = Self {
            nodes: Mutex::new(nodes),
            ports,
            dir,
        };
        for &port in &cluster.ports {
            wait_until(
                Duration::from_secs(10),
                &format!("node {port} answers"),
                || node_connection(port).is_some(),
            );
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ok(&cluster.ports);
        cluster
    }

    /// `redis://127.0.0.1:P` for every node (the app's `REDIS_CLUSTER_URLS`).
    pub fn urls(&self) -> Vec<String> {
        redis_urls(&self.ports)
    }

    /// The nodes' ports, masters and replicas.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The ports of the nodes that are masters now (answering `ROLE`).
    pub fn master_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|&port| role(port).as_deref() == Some("master"))
            .collect()
    }

    /// Stops one node (SIGSTOP) for `how_long`, then lets it go on (SIGCONT): a node
    /// that is there but does not answer, in a thread of its own.
    pub fn freeze_node(&self, port: u16, how_long: Duration) -> std::thread::JoinHandle<()> {
        let nodes = self.nodes.lock().unwrap();
        let pid = nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| libc::pid_t::try_from(n.child.id()).ok())
            .expect("a node of this cluster");
        // SAFETY: kill(2) on the pid of a child this test started; no memory involved.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::spawn(move || {
            std::thread::sleep(how_long);
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        })
    }

    /// Kills one node with SIGKILL (a crash: nothing is saved or handed over).
    pub fn kill_node(&self, port: u16) {
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(node) = nodes.iter_mut().find(|n| n.port == port) {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }

    /// Waits until every node in `ports` says `cluster_state:ok` and every replica among
    /// them has synced with its master (a replica that has not cannot take over).
    pub fn wait_until_ok(&self, ports: &[u16]) {
        let query = |port, cmd: &mut redis::Cmd| -> Option<String> {
            cmd.query(&mut node_connection(port)?).ok()
        };
        wait_until(Duration::from_secs(30), "cluster_state:ok", || {
            ports.iter().all(|&port| {
                let state = query(port, redis::cmd("CLUSTER").arg("INFO"));
                let replication = query(port, redis::cmd("INFO").arg("replication"));
                state.is_some_and(|s| s.contains("cluster_state:ok"))
                    && replication.is_some_and(|r| {
                        r.contains("role:master") || r.contains("master_link_status:up")
                    })
            })
        });
    }

    /// Keys of `prefix` held by each master, by port.
    pub fn keys_per_master(&self, prefix: &str) -> BTreeMap<u16, Vec<String>> {
        self.master_ports()
            .into_iter()
            .map(|port| {
                let mut conn = node_connection(port).expect("master answers");
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}:*"))
                    .query(&mut conn)
                    .expect("KEYS");
                (port, keys)
            })
            .collect()
    }

    /// The port of a replica of the master that holds `key`'s slot. The node asked may
    /// learn of a replication (by gossip) after the cluster said `cluster_state:ok`, so
    /// it is asked until it knows one.
    pub fn replica_of_master_of(&self, key: &str) -> u16 {
        let mut replica = None;
        wait_until(Duration::from_secs(10), "a replica of the master", || {
            let (lines, master) = nodes_and_master_of(self, key);
            replica = lines.iter().find(|f| f[3] == master).map(|f| port_of(f));
            replica.is_some()
        });
        replica.expect("a replica, found above")
    }

    /// `keyspace_hits` summed over the masters, read from each one directly.
    pub fn keyspace_hits_of_masters(&self) -> u64 {
        self.master_ports()
            .into_iter()
            .map(|port| {
                let info: String = redis::cmd("INFO")
                    .arg("stats")
                    .query(&mut node_connection(port).expect("master answers"))
                    .expect("INFO");
                property_listings::cache::store::parse_info_stats(&info)
                    .expect("keyspace fields")
                    .0
            })
            .sum()
    }

    /// A cluster-aware connection of the test itself.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    fn stop(&self) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        for node in nodes.iter_mut() {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster shared by this binary's tests that leave it intact (see the module doc).
pub fn shared_cluster() -> &'static PrivateCluster {
    static SHARED: OnceLock<PrivateCluster> = OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(cluster) = SHARED.get() {
            cluster.stop();
        }
    }
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // Started from a thread that never ends: the nodes' parent-death signal then
        // fires only when the process ends.
        std::thread::spawn(move || {
            let _ = tx.send(PrivateCluster::start());
            loop {
                std::thread::park();
            }
        });
        let cluster = rx.recv().expect("the shared cluster starts");
        // SAFETY: registers a plain function; it runs once, at normal process exit.
        unsafe { libc::atexit(stop_shared) };
        cluster
    })
}

/// An app in cluster mode on `cluster`, its dashboard details public.
pub async fn spawn_app_on(cluster: &PrivateCluster) -> TestApp {
    let urls = cluster.urls();
    // REDIS_URL names a port where nothing listens: cluster mode must not use it.
    let unused = format!("redis://127.0.0.1:{}/0", free_port());
    spawn_app_with(move |s| {
        s.redis_cluster_urls = urls;
        s.redis_url = unused;
        // The tests read the nodes and keys as any visitor (`PUBLIC_DASHBOARD=1`).
        s.public_dashboard = true;
    })
    .await
}

fn start_node(port: u16, dir: &std::path::Path) -> Node {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no"])
        .args(["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu"])
        // Replicas sync at once (the default waits 5 s for more replicas to share a sync).
        .args(["--repl-diskless-sync-delay", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("redis-server is installed");
    Node { port, child }
}

/// `n` free ports whose cluster bus ports (+10000) are free too, held (bound, never
/// accepting: a client that connects gets no answer) until a cluster starts on them.
pub struct PortReservation {
    ports: Vec<u16>,
    _held: Vec<std::net::TcpListener>,
}

impl PortReservation {
    pub fn new(n: usize) -> Self {
        let mut ports = Vec::new();
        let mut held = Vec::new();
        while ports.len() < n {
            let Ok(client) = std::net::TcpListener::bind("127.0.0.1:0") else {
                continue;
            };
            let port = client.local_addr().expect("bound").port();
            let bus = port
                .checked_add(10_000)
                .and_then(|bus| std::net::TcpListener::bind(("127.0.0.1", bus)).ok());
            if let Some(bus) = bus {
                ports.push(port);
                held.extend([client, bus]);
            }
        }
        Self { ports, _held: held }
    }

    pub fn urls(&self) -> Vec<String> {
        redis_urls(&self.ports)
    }

    fn release(self) -> Vec<u16> {
        self.ports
    }
}

/// `redis://127.0.0.1:P` for each port.
fn redis_urls(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect()
}

/// A connection to one node (not cluster-aware), `None` when it does not answer.
pub fn node_connection(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

/// `master` or `slave` (the first element of `ROLE`), `None` when the node is down.
fn role(port: u16) -> Option<String> {
    let mut conn = node_connection(port)?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
    match role.first() {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `CLUSTER NODES`, a line a node, split into fields; and the id of the master that
/// holds `key`'s slot.
fn nodes_and_master_of(cluster: &PrivateCluster, key: &str) -> (Vec<Vec<String>>, String) {
    let mut conn = node_connection(cluster.master_ports()[0]).expect("a master answers");
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut conn)
        .expect("KEYSLOT");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut conn)
        .expect("CLUSTER NODES");
    let lines: Vec<Vec<String>> = nodes
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect();
    let serves = |fields: &[String]| {
        fields.iter().skip(8).any(|range| {
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            matches!((from.parse::<i64>(), to.parse::<i64>()), (Ok(f), Ok(t)) if (f..=t).contains(&slot))
        })
    };
    let master = lines
        .iter()
        .find(|f| f[2].contains("master") && serves(f))
        .expect("a master serves the slot")[0]
        .clone();
    (lines, master)
}

/// The port in a `CLUSTER NODES` line.
fn port_of(fields: &[String]) -> u16 {
    fields[1]
        .split('@')
        .next()
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .expect("a port")
}
