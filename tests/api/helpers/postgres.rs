//! A private PostgreSQL primary with streaming replicas on loopback, for the read-replica
//! tests: `PgReplicaSet::start(n)` makes a primary (`initdb`, `wal_level=replica`, trust
//! auth, replication allowed from 127.0.0.1) and `n` replicas of it (`pg_basebackup -R
//! -X stream`, hot standby), each on a free port, under the target directory. A test can
//! pause and resume a replica's replay, read LSNs as numbers, stop and restart a replica,
//! and promote one. `spawn_app_on_replicas` starts the app on them.
//!
//! The servers must not outlive the test process, however it ends (as `cluster.rs`):
//! - `Drop` stops every server (SIGQUIT: PostgreSQL's immediate shutdown, which still
//!   removes its shared memory), waits for it by PID and removes the set's directory;
//! - every postmaster is started with `PR_SET_PDEATHSIG` (SIGQUIT as well), so the
//!   kernel stops it when the thread that started it ends: start and restart servers from
//!   the test's own thread (or a runtime worker), never from `spawn_blocking`, whose
//!   threads end when idle;
//! - directories of killed runs (`pl-test-pg-<pid>-…`, whose process is gone) are
//!   removed when the next run starts a set.
//!
//! The binaries are the newest `/usr/lib/postgresql/N/bin` (or `PG_BINDIR`). `initdb`
//! runs once per test process into a template that each primary copies; the
//! template goes at exit (`atexit`). PostgreSQL refuses to run as root: as root, every
//! server and tool runs as user `postgres`, and the directories are handed to it (under
//! the temp dir when it cannot reach the target directory, e.g. a clone under /root).
//! As any other user they run as that user.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use property_listings::config::Settings;

use super::{TestApp, database_url_at, free_port, random_suffix, start, test_settings};

const DIR_PREFIX: &str = "pl-test-pg-";
/// How long a server may take to start, a replica to replay, a promotion to finish.
const PATIENCE: Duration = Duration::from_secs(30);

/// Settings of every server of a set (replicas inherit them from the primary's copy).
const SERVER_CONF: &str = "
# --- pl-test-pg: a private test server on loopback -------------------------------
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 10
hot_standby = on
# Test data need not survive a crash.
fsync = off
shared_buffers = 16MB
max_connections = 100
logging_collector = off
log_min_messages = warning
";

/// Allows everything from loopback, replication included, without a password.
const HBA_CONF: &str = "
host    all             all             127.0.0.1/32            trust
host    replication     all             127.0.0.1/32            trust
";

/// One postmaster of the set: its data directory, port and process (`None`: stopped).
struct Server {
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// A primary and its streaming replicas (see the module doc). Every method takes `&self`
/// so that a test can share the set with an app it started on it.
pub struct PgReplicaSet {
    dir: PathBuf,
    primary: Mutex<Server>,
    replicas: Vec<Mutex<Replica>>,
}

struct Replica {
    server: Server,
    /// Replay paused by `pause_replay` (`create_database` does not wait for it).
    paused: bool,
}

impl PgReplicaSet {
    /// A fresh primary and `replicas` replicas, all running and streaming.
    pub fn start(replicas: usize) -> Self {
        // One start at a time in this process, so no two servers pick the same free port.
        static STARTING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = lock(&STARTING);
        super::remove_directories_of_dead_runs(&[base_dir(), &std::env::temp_dir()], DIR_PREFIX);
        let template = template();
        let dir = private_dir(&format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            random_suffix()
        ));
        let data = dir.join("primary");
        copy_dir(template, &data);
        // Built up in place, so that a failure half way stops what did start (Drop).
        let mut set = Self {
            primary: Mutex::new(start_server(&data, None)),
            dir,
            replicas: Vec::new(),
        };
        let primary_port = lock(&set.primary).port.to_string();
        for i in 0..replicas {
            let data = set.dir.join(format!("replica-{i}"));
            let out = pg_command("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &primary_port, "-U", "postgres"])
                .args(["-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(&data)
                .current_dir(&set.dir)
                .output()
                .expect("pg_basebackup runs");
            assert!(
                out.status.success(),
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            set.replicas.push(Mutex::new(Replica {
                server: start_server(&data, None),
                paused: false,
            }));
        }
        set
    }

    /// How many replicas the set has (running or not).
    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    /// The directory holding every server's data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `127.0.0.1:P` of the primary.
    pub fn primary_addr(&self) -> String {
        format!("127.0.0.1:{}", lock(&self.primary).port)
    }

    /// `127.0.0.1:P` of replica `i` (the same after a restart).
    pub fn replica_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", lock(&self.replicas[i]).server.port)
    }

    /// The URL of database `db` on the primary (what the app gets as `DATABASE_URL`).
    pub fn primary_url(&self, db: &str) -> String {
        database_url_at(&self.primary_addr(), db)
    }

    /// The URL of database `db` on replica `i`.
    pub fn replica_url(&self, i: usize, db: &str) -> String {
        database_url_at(&self.replica_addr(i), db)
    }

    /// `replica_url(i, db)` of every replica (the app's `DATABASE_REPLICA_URLS`).
    pub fn replica_urls(&self, db: &str) -> Vec<String> {
        (0..self.replicas())
            .map(|i| self.replica_url(i, db))
            .collect()
    }

    /// A connection to `db` on the primary.
    pub fn primary(&self, db: &str) -> PgConnection {
        connect(&self.primary_url(db)).expect("the primary answers")
    }

    /// A connection to `db` on replica `i`, or the error (e.g. when it is stopped).
    pub fn try_replica(&self, i: usize, db: &str) -> ConnectionResult<PgConnection> {
        connect(&self.replica_url(i, db))
    }

    /// A connection to `db` on replica `i`.
    pub fn replica(&self, i: usize, db: &str) -> PgConnection {
        self.try_replica(i, db).expect("the replica answers")
    }

    /// PIDs of the running postmasters, primary first.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = lock(&self.primary).child.iter().map(Child::id).collect();
        for replica in &self.replicas {
            pids.extend(lock(replica).server.child.iter().map(Child::id));
        }
        pids
    }

    /// Creates database `name` on the primary and returns once every running replica
    /// whose replay is not paused (by `pause_replay`) has it.
    pub fn create_database(&self, name: &str) {
        diesel::sql_query(format!(
            "CREATE DATABASE {}",
            property_listings::db::quote_ident(name)
        ))
        .execute(&mut self.primary("postgres"))
        .expect("CREATE DATABASE");
        self.wait_replicas_caught_up();
        for i in 0..self.replicas() {
            let replica = lock(&self.replicas[i]);
            if replica.server.child.is_some() && !replica.paused {
                drop(replica);
                self.replica(i, name);
            }
        }
    }

    /// Waits until every running replica whose replay is not paused has replayed all the
    /// primary has written so far.
    pub fn wait_replicas_caught_up(&self) {
        let lsn = self.primary_lsn();
        for i in 0..self.replicas() {
            let replica = lock(&self.replicas[i]);
            if replica.server.child.is_some() && !replica.paused {
                drop(replica);
                self.wait_replayed(i, lsn);
            }
        }
    }

    /// The primary's WAL write position, as a number (`pg_current_wal_lsn() - '0/0'`).
    pub fn primary_lsn(&self) -> u64 {
        lsn(
            &mut self.primary("postgres"),
            "pg_current_wal_lsn()",
            "primary",
        )
    }

    /// The end of the last WAL record replica `i` has replayed, as a number.
    pub fn replay_lsn(&self, i: usize) -> u64 {
        lsn(
            &mut self.replica(i, "postgres"),
            "pg_last_wal_replay_lsn()",
            "replica",
        )
    }

    /// How far replica `i` has received (and flushed) the primary's WAL, as a number.
    pub fn receive_lsn(&self, i: usize) -> u64 {
        lsn(
            &mut self.replica(i, "postgres"),
            "pg_last_wal_receive_lsn()",
            "replica",
        )
    }

    /// Waits until replica `i` has replayed WAL up to `lsn` (panics after 30 s).
    pub fn wait_replayed(&self, i: usize, lsn: u64) {
        wait_until(&format!("replica {i} replays {lsn}"), || {
            self.replay_lsn(i) >= lsn
        });
    }

    /// Waits until replica `i` has received WAL up to `lsn`, whether replayed or not.
    pub fn wait_received(&self, i: usize, lsn: u64) {
        wait_until(&format!("replica {i} receives {lsn}"), || {
            self.receive_lsn(i) >= lsn
        });
    }

    /// Pauses replay on replica `i` (it goes on receiving WAL) and returns once
    /// PostgreSQL reports it `paused`, not merely requested.
    pub fn pause_replay(&self, i: usize) {
        let mut conn = self.replica(i, "postgres");
        diesel::sql_query("SELECT pg_wal_replay_pause()")
            .execute(&mut conn)
            .expect("pg_wal_replay_pause");
        lock(&self.replicas[i]).paused = true;
        wait_until(&format!("replica {i} paused"), || {
            text(&mut conn, "pg_get_wal_replay_pause_state()").as_deref() == Some("paused")
        });
    }

    /// Resumes replay on replica `i`.
    pub fn resume_replay(&self, i: usize) {
        let mut conn = self.replica(i, "postgres");
        diesel::sql_query("SELECT pg_wal_replay_resume()")
            .execute(&mut conn)
            .expect("pg_wal_replay_resume");
        lock(&self.replicas[i]).paused = false;
        wait_until(&format!("replica {i} replaying"), || {
            text(&mut conn, "pg_get_wal_replay_pause_state()").as_deref() == Some("not paused")
        });
    }

    /// Stops replica `i` at once (immediate shutdown: its connections are cut, nothing
    /// is checkpointed); its port refuses connections until `start_replica`.
    pub fn stop_replica(&self, i: usize) {
        stop(&mut lock(&self.replicas[i]).server);
    }

    /// Starts replica `i` again on the same port (it recovers, then streams on from
    /// where it was) and returns once it answers. A paused replay is not paused any more.
    pub fn start_replica(&self, i: usize) {
        let mut replica = lock(&self.replicas[i]);
        assert!(replica.server.child.is_none(), "replica {i} is running");
        let server = start_server(&replica.server.data, Some(replica.server.port));
        replica.server = server;
        replica.paused = false;
    }

    /// Whether server `i` is in recovery (a replica), asked of it.
    pub fn is_in_recovery(&self, i: usize) -> bool {
        #[derive(QueryableByName)]
        struct Recovery {
            #[diesel(sql_type = Bool)]
            in_recovery: bool,
        }
        diesel::sql_query("SELECT pg_is_in_recovery() AS in_recovery")
            .get_result::<Recovery>(&mut self.replica(i, "postgres"))
            .expect("pg_is_in_recovery")
            .in_recovery
    }

    /// Promotes replica `i` to a primary of its own (`pg_promote()`) and returns once
    /// it is no longer in recovery.
    pub fn promote_replica(&self, i: usize) {
        diesel::sql_query("SELECT pg_promote(true, 30)")
            .execute(&mut self.replica(i, "postgres"))
            .expect("pg_promote");
        lock(&self.replicas[i]).paused = false;
        wait_until(&format!("replica {i} promoted"), || !self.is_in_recovery(i));
    }
}

impl Drop for PgReplicaSet {
    fn drop(&mut self) {
        for replica in &self.replicas {
            stop(&mut lock(replica).server);
        }
        stop(&mut lock(&self.primary));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the app (as `spawn_app_with`) with its own database on `set`'s primary as
/// `DATABASE_URL` and that database on every replica as `DATABASE_REPLICA_URLS`, then
/// waits until the replicas have its schema. `customise` runs last. Dropping the app
/// drops the database on the primary (so drop the app before the set, i.e. declare it
/// after). Start it before pausing a replica: it waits for the replicas.
pub async fn spawn_app_on_replicas(
    set: &PgReplicaSet,
    customise: impl FnOnce(&mut Settings),
) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut settings = test_settings();
    let (_, db_name) = property_listings::db::split_database_url(&settings.database_url)
        .expect("test database url names a database");
    set.create_database(&db_name);
    settings.database_url = set.primary_url(&db_name);
    settings.database_replica_urls = set.replica_urls(&db_name);
    customise(&mut settings);
    let app = start(settings, true, set.primary_addr()).await;
    // The migrations ran on the primary: the replicas have the tables once they replay.
    set.wait_replicas_caught_up();
    app
}

fn connect(url: &str) -> ConnectionResult<PgConnection> {
    PgConnection::establish(&format!("{url}&connect_timeout=5"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The text value of a one-value SQL expression (`None`: NULL).
fn text(conn: &mut PgConnection, expr: &str) -> Option<String> {
    #[derive(QueryableByName)]
    struct Value {
        #[diesel(sql_type = Nullable<Text>)]
        value: Option<String>,
    }
    diesel::sql_query(format!("SELECT ({expr})::text AS value"))
        .get_result::<Value>(conn)
        .unwrap_or_else(|e| panic!("SELECT {expr}: {e}"))
        .value
}

/// An LSN-valued expression as a number: `pg_lsn - '0/0'` is numeric, read as text and
/// parsed, so no comparison ever sees the `X/Y` string form.
fn lsn(conn: &mut PgConnection, expr: &str, server: &str) -> u64 {
    let value = text(conn, &format!("{expr} - '0/0'::pg_lsn"))
        .unwrap_or_else(|| panic!("{expr} is NULL on this {server}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("{expr} = {value}: {e}"))
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The uid and gid to run PostgreSQL as: `postgres`'s when this process is root (which
/// PostgreSQL refuses to run as), else none (this process's own).
fn run_as() -> Option<(u32, u32)> {
    static RUN_AS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        // SAFETY: a NUL-terminated name; the record is copied out before any other
        // getpw* call (the tests make none).
        let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        assert!(
            !pw.is_null(),
            "running as root: PostgreSQL must run as user `postgres`, which does not exist"
        );
        // SAFETY: non-null, checked above.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Some((uid, gid))
    })
}

/// PostgreSQL's server binaries: `PG_BINDIR`, else Debian's newest
/// `/usr/lib/postgresql/N/bin` that has `initdb`, `postgres` and `pg_basebackup` (as
/// `scripts/lib/services.sh` picks it).
fn bin_dir() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let complete = |dir: &Path| {
            ["initdb", "postgres", "pg_basebackup"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                complete(&bin).then_some((major, bin))
            })
            .max()
            .map(|(_, bin)| bin)
            .expect("PostgreSQL server binaries in /usr/lib/postgresql/N/bin (or set PG_BINDIR)")
    })
}

/// A command of PostgreSQL's `bin` directory, run as `run_as()`.
fn pg_command(name: &str) -> Command {
    let mut cmd = Command::new(bin_dir().join(name));
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("LC_ALL", "C.UTF-8").stdin(Stdio::null());
    cmd
}

/// Gives `path` to the user PostgreSQL runs as, private to it.
fn hand_over(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
}

/// Where the sets live: the target directory's tmp (`CARGO_TARGET_TMPDIR`) when the user
/// PostgreSQL runs as can write there, else the temp dir.
fn base_dir() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let probe = target.join(format!("{DIR_PREFIX}{}-probe", std::process::id()));
        let reachable = std::fs::create_dir_all(&probe).is_ok() && {
            hand_over(&probe);
            pg_command("initdb")
                .arg("--version")
                .current_dir(&probe)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = std::fs::remove_dir_all(&probe);
        if reachable {
            target
        } else {
            std::env::temp_dir()
        }
    })
}

/// A fresh directory `name` under `base_dir()`, owned by the user PostgreSQL runs as.
fn private_dir(name: &str) -> PathBuf {
    let dir = base_dir().join(name);
    std::fs::create_dir_all(&dir).expect("a directory for the servers");
    hand_over(&dir);
    dir
}

/// `cp -a`: keeps owners and modes (as root, the copy stays `postgres`'s).
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

/// The data directory every primary of this process copies: `initdb` once, with the
/// set's settings; removed at exit.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_template() {
        if let Some(data) = TEMPLATE.get().and_then(|d| d.parent()) {
            let _ = std::fs::remove_dir_all(data);
        }
    }
    TEMPLATE.get_or_init(|| {
        let dir = private_dir(&format!("{DIR_PREFIX}{}-template", std::process::id()));
        // SAFETY: registers a plain function; it runs once, at normal process exit.
        unsafe { libc::atexit(remove_template) };
        let data = dir.join("data");
        let out = pg_command("initdb")
            .args(["-N", "-U", "postgres", "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C.UTF-8", "-D"])
            .arg(&data)
            .current_dir(&dir)
            .output()
            .expect("initdb runs (PostgreSQL 15 server binaries)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let append = |file: &str, text: &str| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join(file))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        };
        append("postgresql.conf", SERVER_CONF);
        std::fs::write(data.join("pg_hba.conf"), HBA_CONF).expect("pg_hba.conf");
        data
    })
}

/// Starts a postmaster on `data` (on `port`, else a free one, retried when taken) and
/// returns once it accepts connections; its log goes to `<data>.log`.
fn start_server(data: &Path, port: Option<u16>) -> Server {
    let log = data.with_extension("log");
    let given_port = port;
    for _ in 0..3 {
        let port = given_port.unwrap_or_else(free_port);
        let mut cmd = pg_command("postgres");
        cmd.arg("-D")
            .arg(data)
            .args(["-c", &format!("port={port}")])
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log"),
            );
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        // std changes the uid before this runs, and a change of uid would reset it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("postgres runs");
        let url = database_url_at(&format!("127.0.0.1:{port}"), "postgres");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if connect(&url).is_ok() {
                return Server {
                    data: data.to_path_buf(),
                    port,
                    child: Some(child),
                };
            }
            if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        // A free port chosen here may have been taken since: try another.
        if given_port.is_none() && port_taken(&log, port) {
            continue;
        }
        break;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    panic!(
        "PostgreSQL on {data:?} did not start; its log ends:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// Whether the log says the port was taken (worth another, free port).
fn port_taken(log: &Path, port: u16) -> bool {
    std::fs::read_to_string(log)
        .is_ok_and(|t| t.contains("could not bind") && t.contains(&port.to_string()))
}

/// Immediate shutdown (SIGQUIT) and a wait for the postmaster; SIGKILL after 10 s.
fn stop(server: &mut Server) {
    let Some(mut child) = server.child.take() else {
        return;
    };
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
