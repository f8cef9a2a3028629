//! Cluster mode (`REDIS_CLUSTER_URLS`) against a real Redis Cluster on loopback: 6 private
//! `redis-server` nodes (3 masters, 3 replicas) made into a cluster by `redis-cli --cluster
//! create`.
//!
//! One cluster serves every test of this binary that does not break it (`shared_cluster`,
//! started on first use); a test that kills a node starts its own (`PrivateCluster::start`).
//! Each test keeps its own database and key prefix, so tests sharing the cluster only
//! count keys of their own prefix.
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

use futures_util::future::join_all;

use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, PrivateRedis, TestApp, client, csrf_token_in, free_port, header,
    spawn_app_with, spawn_instance_with,
};

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
        remove_directories_of_dead_runs();
        let ports = reserved.release();
        let dir = std::env::temp_dir().join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            crate::helpers::random_suffix()
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
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
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
    fn wait_until_ok(&self, ports: &[u16]) {
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

    /// `keyspace_hits` summed over the masters, read from each one directly.
    pub fn keyspace_hits_of_masters(&self) -> u64 {
        self.master_ports()
            .into_iter()
            .map(|port| {
                let info: String = redis::cmd("INFO")
                    .arg("stats")
                    .query(&mut node_connection(port).expect("master answers"))
                    .expect("INFO");
                property_listings::cache::metrics::parse_info_stats(&info)
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
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    fn release(self) -> Vec<u16> {
        self.ports
    }
}

fn node_connection(port: u16) -> Option<redis::Connection> {
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

/// Removes the directories of earlier runs whose test process is gone (their nodes died
/// with it: `PR_SET_PDEATHSIG`).
fn remove_directories_of_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TMP_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn spawn_app_on(cluster: &PrivateCluster) -> TestApp {
    let urls = cluster.urls();
    // REDIS_URL names a port where nothing listens: cluster mode must not use it.
    let unused = format!("redis://127.0.0.1:{}/0", free_port());
    spawn_app_with(move |s| {
        s.redis_cluster_urls = urls;
        s.redis_url = unused;
    })
    .await
}

/// GETs `path` until it is a page-cache HIT (the first lookups after start may bypass
/// while the client learns the cluster's slots).
async fn until_hit(app: &TestApp, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = app.get_anonymous(path).await;
        assert_eq!(res.status(), 200, "{path}");
        if header(&res, "x-cache") == "HIT" {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never became a HIT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pages_and_queries_are_cached_in_cluster_mode() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listing = app
        .insert("Cluster cottage", "1250.00", "Cluster City")
        .await;

    for path in crate::helpers::public_routes(listing.id) {
        until_hit(&app, &path).await;
    }

    let keys: Vec<String> = cluster
        .keys_per_master(&app.prefix)
        .into_values()
        .flatten()
        .collect();
    assert!(keys.iter().any(|k| k.contains(":page:")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with(":all_properties")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn after_a_write_in_cluster_mode_the_new_data_is_served_and_cached_again() {
    // The invalidation replaces the generation and deletes all_properties: two keys in
    // different slots, which one MULTI cannot do in a cluster.
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    app.insert("Before", "100.00", "Old Town").await;
    until_hit(&app, "/api/properties/").await;

    app.insert("After", "200.00", "New Town").await;

    let res = app.get_anonymous("/api/properties/").await;
    assert_ne!(header(&res, "x-cache"), "HIT");
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["count"], 2, "the write is visible at once");
    until_hit(&app, "/api/properties/").await;
    assert!(
        !app.state.cache.invalidation_pending(),
        "the invalidation reached the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_two_instances_on_a_cluster_never_see_a_price_older_than_the_last_acknowledged_one()
 {
    let cluster = shared_cluster();
    let a = spawn_app_on(cluster).await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Race", "1000", "Raceville").await;

    let last = crate::consistency::race(&a, &[&a, &b], p.id, 300).await;

    crate::consistency::assert_everyone_agrees(&[&a, &b], p.id, last).await;
}

#[tokio::test]
async fn two_hundred_detail_pages_spread_over_every_master() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listings = app.insert_many(200).await;
    until_hit(&app, &format!("/properties/{}/", listings[0].id)).await;

    let client = client();
    for chunk in listings.chunks(20) {
        let statuses = join_all(chunk.iter().map(|l| {
            let url = app.url(&format!("/properties/{}/", l.id));
            let client = client.clone();
            async move { client.get(url).send().await.unwrap().status() }
        }))
        .await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }

    let per_master = cluster.keys_per_master(&app.prefix);
    assert_eq!(per_master.len(), 3, "three masters");
    for (port, keys) in &per_master {
        let pages = keys.iter().filter(|k| k.contains(":page:")).count();
        assert!(pages > 0, "master {port} holds no page: {per_master:?}");
    }
    let pages: usize = per_master
        .values()
        .flatten()
        .filter(|k| k.contains(":page:/properties/"))
        .count();
    assert!(pages >= 200, "{pages} detail pages cached");
}

#[tokio::test]
async fn cache_clear_empties_every_master_of_this_prefix_and_nothing_else() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listings = app.insert_many(30).await;
    for l in &listings {
        until_hit(&app, &format!("/properties/{}/", l.id)).await;
    }
    assert!(
        cluster
            .keys_per_master(&app.prefix)
            .values()
            .all(|keys| !keys.is_empty()),
        "every master holds some keys before"
    );
    let mut conn = cluster.client();
    let foreign: Vec<String> = (0..30)
        .map(|i| format!("{}_other:keep:{i}", app.prefix))
        .collect();
    for key in &foreign {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("EX")
            .arg(120)
            .query(&mut conn)
            .unwrap();
    }

    // What `cache clear` runs, in a process of its own: a fresh `Cache` from the settings.
    // (Not the binary itself: the shared target directory may hold another branch's.)
    let cache = property_listings::cache::Cache::new(
        &app.settings,
        std::sync::Arc::new(property_listings::cache::metrics::Metrics::new()),
        |_| {},
    )
    .unwrap();

    let cleared = cache.clear().await;

    assert!(cleared.is_ok(), "{cleared:?}");
    let left: Vec<String> = cluster
        .keys_per_master(&app.prefix)
        .into_values()
        .flatten()
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let kept: usize = redis::cmd("EXISTS").arg(&foreign).query(&mut conn).unwrap();
    assert_eq!(kept, foreign.len(), "other prefixes are kept");
    let _: () = redis::cmd("DEL").arg(&foreign).query(&mut conn).unwrap();
}

#[tokio::test]
async fn the_key_listing_shows_keys_from_every_master() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listings = app.insert_many(30).await;
    for l in &listings {
        until_hit(&app, &format!("/properties/{}/", l.id)).await;
    }

    let json = app.get_json("/api/cache/keys").await;

    let listed: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    for (port, keys) in cluster.keys_per_master(&app.prefix) {
        let page = keys.iter().find(|k| k.contains(":page:")).unwrap();
        assert!(listed.contains(&page.as_str()), "{page} of {port} listed");
    }
    assert!(
        json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kind"] == "page")
            .all(|k| k["ttl_ms"].as_i64().is_some_and(|t| t > 0)
                && k["bytes"].as_u64().is_some_and(|b| b > 0)),
        "every page has its TTL and size (read per slot): {json}"
    );
}

#[tokio::test]
async fn metrics_sum_keyspace_hits_over_the_masters_and_list_every_node() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    until_hit(&app, "/properties/").await;

    let before = cluster.keyspace_hits_of_masters();
    let json = app.get_json("/api/cache/metrics").await;
    let after = cluster.keyspace_hits_of_masters();

    assert_eq!(json["redis_mode"], "cluster");
    let hits = json["keyspace_hits"].as_u64().unwrap();
    assert!(
        before <= hits && hits <= after,
        "{before} <= {hits} <= {after}"
    );
    let nodes = json["redis_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{json}");
    let masters: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["role"] == "master").collect();
    assert_eq!(masters.len(), 3, "{json}");
    assert!(nodes.iter().all(|n| n["reachable"] == true), "{json}");
    let summed: u64 = masters
        .iter()
        .map(|n| n["keyspace_hits"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, hits);
    let mut listed: Vec<String> = nodes
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    let dashboard = app.get_anonymous("/cache/").await.text().await.unwrap();
    assert!(
        dashboard.contains("id=\"nodes-body\""),
        "the dashboard lists the nodes"
    );
}

#[tokio::test]
async fn with_one_redis_the_metrics_list_that_one_server() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    until_hit(&app, "/properties/").await;

    let json = app.get_json("/api/cache/metrics").await;

    assert_eq!(json["redis_mode"], "single");
    let nodes = json["redis_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{json}");
    assert_eq!(nodes[0]["address"], format!("127.0.0.1:{}", redis.port));
    assert_eq!(nodes[0]["role"], "master");
    assert_eq!(nodes[0]["reachable"], true);
    assert_eq!(nodes[0]["keyspace_hits"], json["keyspace_hits"]);
    assert!(json["keyspace_hits"].as_u64().unwrap() > 0, "{json}");
}

#[tokio::test]
async fn the_sign_in_throttle_is_shared_by_instances_in_cluster_mode() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let other = spawn_instance_with(&app, |_| {}).await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let page = client().get(app.url("/admin/login")).send().await.unwrap();
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("pl_session="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let token = csrf_token_in(&page.text().await.unwrap());

    // 20 wrong guesses at once, half to each instance: with counters of their own each
    // would evaluate 5; sharing one counter, 5 are evaluated in all.
    let attempts = (0..20).map(|i| {
        let base = if i % 2 == 0 { &app } else { &other };
        let form = serde_urlencoded::to_string([
            ("username", ADMIN_USER),
            ("password", "not the password"),
            ("csrf_token", token.as_str()),
        ])
        .unwrap();
        let req = client()
            .post(base.url("/admin/login"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = join_all(attempts).await;

    let evaluated = statuses.iter().filter(|s| **s != 429).count();
    assert!(
        (1..=5).contains(&evaluated),
        "{evaluated} evaluated: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 429)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_cluster_that_does_not_answer_at_start_is_bypassed_and_used_once_it_is_up() {
    // Ports that accept connections and never answer: the slowest kind of down.
    let ports = PortReservation::new(6);
    let urls = ports.urls();
    let app = spawn_app_with(move |s| s.redis_cluster_urls = urls).await;

    let started = Instant::now();
    for _ in 0..5 {
        let res = app.get_anonymous("/properties/").await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "x-cache"), "BYPASS");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "no long waits");
    let health: serde_json::Value = app.get_anonymous("/healthz").await.json().await.unwrap();
    assert_eq!(health["cache"], "unavailable");
    assert_eq!(app.get_anonymous("/api/cache/metrics").await.status(), 503);

    let _cluster = PrivateCluster::start_on(ports);

    until_hit(&app, "/properties/").await;
}

#[tokio::test]
async fn a_killed_master_gives_no_errors_and_caching_resumes_after_the_failover() {
    // A cluster of its own: the shared one must stay whole for the other tests.
    let cluster = PrivateCluster::start();
    let app = spawn_app_on(&cluster).await;
    let listings = app.insert_many(30).await;
    let paths: Vec<String> = listings
        .iter()
        .map(|l| format!("/properties/{}/", l.id))
        .collect();
    for path in &paths {
        until_hit(&app, path).await;
    }
    // The master of the generation token: every lookup needs it.
    let generation = app.state.cache.keys().generation().to_string();
    let victim = *cluster
        .keys_per_master(&app.prefix)
        .iter()
        .find(|(_, keys)| keys.contains(&generation))
        .expect("a master holds the generation")
        .0;
    // A listing whose token lives on that master too: its edit is acknowledged just
    // before the kill, so only a replica that had the new token (WAIT) keeps its old
    // page dead after the failover.
    let on_victim = cluster.keys_per_master(&app.prefix)[&victim].clone();
    let edited = listings
        .iter()
        .find(|l| {
            let token = app.state.cache.keys().token(&format!("listing:{}", l.id));
            on_victim.contains(&token)
        })
        .expect("a listing token on the generation's master")
        .clone();
    let edited_api = format!("/api/properties/{}/", edited.id);
    until_hit(&app, &edited_api).await;
    app.state
        .properties
        .update(
            edited.id,
            crate::helpers::property_data(&edited.title, "4321", &edited.location, ""),
        )
        .await
        .unwrap();

    cluster.kill_node(victim);

    // Until a replica has taken over (node timeout 1 s, then the election), requests for
    // the lost slots bypass the cache; none fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all_hit = false;
    let mut seen = Vec::new();
    while !all_hit {
        assert!(
            Instant::now() < deadline,
            "caching did not resume: {:?}",
            &seen[seen.len().saturating_sub(3)..]
        );
        let app = &app;
        let statuses = join_all(paths.iter().map(|p| async move {
            let res = app.get_anonymous(p).await;
            (res.status().as_u16(), header(&res, "x-cache").to_string())
        }))
        .await;
        assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
        all_hit = statuses.iter().all(|(_, cache)| cache == "HIT");
        seen.push(statuses);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alive: Vec<u16> = cluster
        .ports
        .iter()
        .copied()
        .filter(|p| *p != victim)
        .collect();
    cluster.wait_until_ok(&alive);
    let json = app.get_json("/api/cache/metrics").await;
    let down: Vec<&serde_json::Value> = json["redis_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reachable"] == false)
        .collect();
    assert_eq!(down.len(), 1, "{json}");
    assert_eq!(down[0]["address"], format!("127.0.0.1:{victim}"));
    assert!(
        json["app"]["redis_errors"].as_u64().unwrap() > 0,
        "the app noticed the loss: {json}"
    );
    until_hit(&app, &edited_api).await;
    assert_eq!(app.get_json(&edited_api).await["price"], "4321.00");
    let html = app
        .get_anonymous(&format!("/properties/{}/", edited.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("4,321.00"),
        "the edit acknowledged before the kill"
    );
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

/// The port of the master that holds `key`'s slot.
fn master_of(cluster: &PrivateCluster, key: &str) -> u16 {
    let (lines, master) = nodes_and_master_of(cluster, key);
    port_of(
        lines
            .iter()
            .find(|f| f[0] == master)
            .expect("the master's line"),
    )
}

/// The port of a replica of the master that holds `key`'s slot.
fn replica_of_master_of(cluster: &PrivateCluster, key: &str) -> u16 {
    let (lines, master) = nodes_and_master_of(cluster, key);
    port_of(
        lines
            .iter()
            .find(|f| f[3] == master)
            .expect("the master has a replica"),
    )
}

#[tokio::test]
async fn a_writes_tokens_land_in_order_so_no_page_token_is_new_while_rows_is_old() {
    // A cluster of its own: one of its masters is paused.
    let cluster = PrivateCluster::start();
    let app = spawn_app_on(&cluster).await;
    let cache = app.state.cache.clone();
    let rows = cache.keys().token("rows");
    // A page's token on another master than `rows`.
    let page = (0..)
        .map(|i| format!("newest:{i}"))
        .find(|name| master_of(&cluster, &cache.keys().token(name)) != master_of(&cluster, &rows))
        .unwrap();
    let tokens = vec!["rows".to_string(), page.clone()];
    // The start's pending invalidation (a new generation) first; then both tokens exist.
    cache.ensure_no_pending_invalidation().await.unwrap();
    assert!(cache.invalidate(&tokens).await);
    let mut conn = cluster.client();
    let get = |conn: &mut redis::cluster::ClusterConnection, key: &str| -> String {
        redis::cmd("GET").arg(key).query(conn).expect("GET")
    };
    let old_page = get(&mut conn, &cache.keys().token(&page));

    // `rows`' master takes no writes for a while (shorter than a command may take).
    let mut paused = node_connection(master_of(&cluster, &rows)).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(150)
        .arg("WRITE")
        .query(&mut paused)
        .unwrap();
    let writer = {
        let (cache, tokens) = (cache.clone(), tokens.clone());
        tokio::spawn(async move { cache.invalidate(&tokens).await })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;

    // Sent at once, the page's token would be new by now, with `rows` still old: a build
    // reading them in that order would tag old rows as current.
    assert_eq!(
        get(&mut conn, &cache.keys().token(&page)),
        old_page,
        "the page's token waits for `rows` to land"
    );
    assert!(writer.await.unwrap(), "the invalidation went through");
    assert_ne!(get(&mut conn, &cache.keys().token(&page)), old_page);
}

#[tokio::test]
async fn a_write_whose_tokens_no_replica_confirms_is_not_trusted_to_have_invalidated() {
    // A cluster of its own: one of its replicas is put to sleep.
    let cluster = PrivateCluster::start();
    let app = spawn_app_on(&cluster).await;
    let p = app.insert("Quiet", "100", "A").await;
    let page = format!("/api/properties/{}/", p.id);
    until_hit(&app, &page).await;
    let token = app.state.cache.keys().token(&format!("listing:{}", p.id));
    let replica = replica_of_master_of(&cluster, &token);

    // The replica of the token's master stops answering for longer than a command may
    // take (REDIS_TIMEOUT_MS): it cannot confirm the new token.
    let thaw = cluster.freeze_node(replica, Duration::from_millis(1500));
    let errors = app.state.cache.metrics().snapshot().redis_errors;
    app.state
        .properties
        .update(p.id, crate::helpers::property_data("Quiet", "250", "A", ""))
        .await
        .unwrap();

    // The replacement counts as failed (a Redis error), so the invalidation is pending
    // and the next lookup replaces the generation (confirmed by another master's
    // replica) before using Redis again: the page shows the write.
    assert!(
        app.state.cache.metrics().snapshot().redis_errors > errors,
        "an unconfirmed replacement is a failure"
    );
    let res = app.get_anonymous(&page).await;
    assert_ne!(header(&res, "x-cache"), "HIT");
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["price"],
        "250.00"
    );
    thaw.join().unwrap();
    until_hit(&app, &page).await;
    assert_eq!(app.get_json(&page).await["price"], "250.00");
}
