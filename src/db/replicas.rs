//! Streaming replicas of the primary that cache refills may read (`DATABASE_REPLICA_URLS`;
//! the argument is "Read replicas" in the module docs of `cache`).
//!
//! A read inside a cache build (`cache::source::required` says what it needs) goes to a
//! replica only after that replica said, on the very connection the read then uses and
//! in a statement of its own before the read's, that it is still in recovery and has
//! replayed at least the position the build's tokens carry. Anything else — a replica
//! behind, promoted, down, slow, erroring, or its breaker open — sends the read to the
//! primary: speed, never correctness, and never a failed request. Reads outside a build
//! (writes, admin pages, sign-in) always use the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection, Pool};
use diesel::sql_types::{Bool, Nullable, Text};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{PgPool, run};
use crate::cache::source::{self, Required};
use crate::error::AppError;

/// How long a read waits for a replica connection before it goes to the primary.
const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(250);
/// Statements on a replica that run longer are cancelled; the read goes to the primary.
const STATEMENT_TIMEOUT_MS: u64 = 2000;
/// How often each replica's lag is measured (for the dashboard and `/metrics`).
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// The replicas (possibly none) and where refill reads went.
pub struct Replicas {
    servers: Vec<Replica>,
    /// Where the next read starts looking (reads spread over the replicas).
    next: AtomicUsize,
    /// `db_reads_total{server="primary"}` and `{server="replica"}`: refill reads, by
    /// where they went.
    reads_primary: IntCounter,
    reads_replica: IntCounter,
    /// `db_replica_lag_bytes{replica}`: how far each replica's replay was behind.
    lag: IntGaugeVec,
}

struct Replica {
    /// `host:port`, never the credentials.
    name: String,
    pool: Pool<ReplicaManager>,
    breaker: Breaker,
    /// Last seen: whether it is a replica (`STATE_*`), what it has replayed, and how far
    /// behind the primary it was (bytes), with when that was measured.
    state: AtomicU8,
    replayed: AtomicU64,
    lag_bytes: AtomicU64,
    paused: AtomicU8,
}

const STATE_UNKNOWN: u8 = 0;
const STATE_REPLICA: u8 = 1;
const STATE_PROMOTED: u8 = 2;
const STATE_DOWN: u8 = 3;

/// What the dashboard and `/metrics` show of one replica.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    /// `replica`, `promoted` (not used: not in recovery), `down` or `unknown`.
    pub state: &'static str,
    /// The last position seen replayed (an LSN as a number).
    pub replayed: u64,
    /// How far its replay was behind the primary's log, in bytes, when last measured.
    pub lag_bytes: u64,
    /// Whether replay is paused (`pg_wal_replay_pause()`).
    pub paused: bool,
    /// Whether its breaker is open (reads skip it).
    pub open: bool,
}

impl Replicas {
    /// A pool per replica (connecting lazily: a replica down at start is only skipped);
    /// its metrics registered in `registry`.
    pub fn new(urls: &[String], pool_size: u32, registry: &Registry) -> Self {
        let reads = IntCounterVec::new(
            Opts::new(
                "db_reads_total",
                "Database reads of cache refills, by the server that answered",
            ),
            &["server"],
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "db_replica_lag_bytes",
                "How far each replica's replay was behind the primary's log when last measured",
            ),
            &["replica"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(reads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lag.clone()),
        ] {
            if let Err(e) = registry.register(collector) {
                log::error!("registering the replica metrics: {e}");
            }
        }
        Self {
            servers: urls
                .iter()
                .map(|url| Replica {
                    name: server_name(url),
                    // No ping at checkout: the check each read starts with is one, and
                    // a connection it finds dead is not handed out again.
                    pool: Pool::builder()
                        .max_size(pool_size.max(1))
                        .min_idle(Some(0))
                        .connection_timeout(CHECKOUT_TIMEOUT)
                        .test_on_check_out(false)
                        .connection_customizer(Box::new(StatementTimeout))
                        .build_unchecked(ReplicaManager(ConnectionManager::new(url))),
                    breaker: Breaker::default(),
                    state: AtomicU8::new(STATE_UNKNOWN),
                    replayed: AtomicU64::new(0),
                    lag_bytes: AtomicU64::new(0),
                    paused: AtomicU8::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            reads_primary: reads.with_label_values(&["primary"]),
            reads_replica: reads.with_label_values(&["replica"]),
            lag,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Refill reads so far: (primary, replica).
    pub fn reads(&self) -> (u64, u64) {
        (self.reads_primary.get(), self.reads_replica.get())
    }

    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.servers
            .iter()
            .map(|r| ReplicaStatus {
                name: r.name.clone(),
                state: match r.state.load(Ordering::Relaxed) {
                    STATE_REPLICA => "replica",
                    STATE_PROMOTED => "promoted",
                    STATE_DOWN => "down",
                    _ => "unknown",
                },
                replayed: r.replayed.load(Ordering::Relaxed),
                lag_bytes: r.lag_bytes.load(Ordering::Relaxed),
                paused: r.paused.load(Ordering::Relaxed) == 1,
                open: !r.breaker.allows_now(),
            })
            .collect()
    }

    /// Runs a read on a server that satisfies the build running on this task (see the
    /// module docs); outside a build, on the primary. `f` may run more than once (on a
    /// replica that failed mid-read, then on the primary): it must only read.
    pub async fn read<T, F>(self: &Arc<Self>, primary: &PgPool, f: F) -> Result<T, AppError>
    where
        F: Fn(&mut PgConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let Some(required) = source::required() else {
            return run(primary, move |conn| f(conn)).await;
        };
        if let Required::AtLeast(position) = required
            && !self.servers.is_empty()
        {
            let replicas = self.clone();
            let read = actix_web::web::block(move || replicas.read_replica(position, &f).ok_or(f));
            match read.await {
                Ok(Ok(value)) => {
                    self.reads_replica.inc();
                    return Ok(value);
                }
                Ok(Err(f)) => return self.read_primary(primary, f).await,
                Err(e) => {
                    return Err(AppError::Internal(anyhow::anyhow!(
                        "blocking task failed: {e}"
                    )));
                }
            }
        }
        self.read_primary(primary, f).await
    }

    async fn read_primary<T, F>(&self, primary: &PgPool, f: F) -> Result<T, AppError>
    where
        F: Fn(&mut PgConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.reads_primary.inc();
        run(primary, move |conn| f(conn)).await
    }

    /// The read on the first replica (from `next`, round robin) that is usable and has
    /// replayed `position`; `None` if none could.
    fn read_replica<T>(
        &self,
        position: u64,
        f: &impl Fn(&mut PgConnection) -> Result<T, AppError>,
    ) -> Option<T> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| self.servers[(start + i) % n].read(position, f))
    }

    /// Measures every replica once (state, replay position, lag behind the primary).
    pub async fn poll(self: &Arc<Self>, primary: &PgPool) {
        if self.servers.is_empty() {
            return;
        }
        let head = run(primary, |conn| Ok(write_position(conn)))
            .await
            .ok()
            .flatten();
        let replicas = self.clone();
        let _ = actix_web::web::block(move || {
            for r in &replicas.servers {
                r.poll(head);
                replicas
                    .lag
                    .with_label_values(&[r.name.as_str()])
                    .set(i64::try_from(r.lag_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
            }
        })
        .await;
    }

    /// Polls every `POLL_EVERY`, for as long as these replicas are in use.
    pub fn spawn_poller(self: &Arc<Self>, primary: PgPool) {
        if self.servers.is_empty() {
            return;
        }
        let replicas = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(replicas) = replicas.upgrade() {
                replicas.poll(&primary).await;
                drop(replicas);
                tokio::time::sleep(POLL_EVERY).await;
            }
        });
    }
}

impl Replica {
    /// The read, if this replica is usable and has replayed `position` when asked on
    /// the connection the read then uses.
    fn read<T>(
        &self,
        position: u64,
        f: &impl Fn(&mut PgConnection) -> Result<T, AppError>,
    ) -> Option<T> {
        if !self.breaker.allows_now() || self.state.load(Ordering::Relaxed) == STATE_PROMOTED {
            return None;
        }
        let Ok(mut conn) = self.pool.get() else {
            self.failed();
            return None;
        };
        // A statement of its own, before the read's: the read's snapshot is taken after
        // this answer, so it holds everything replayed up to `replayed` at least.
        match recovery_status(&mut conn.conn) {
            Ok(Some(replayed)) => {
                self.state.store(STATE_REPLICA, Ordering::Relaxed);
                self.replayed.fetch_max(replayed, Ordering::Relaxed);
                if replayed < position {
                    return None;
                }
            }
            Ok(None) => {
                self.state.store(STATE_PROMOTED, Ordering::Relaxed);
                return None;
            }
            Err(e) => {
                log::debug!("replica {}: {e}", self.name);
                conn.broken = true;
                self.failed();
                return None;
            }
        }
        match f(&mut conn.conn) {
            Ok(value) => {
                self.breaker.succeeded();
                Some(value)
            }
            Err(e) => {
                log::warn!(
                    "replica {}: read failed, reading the primary: {e}",
                    self.name
                );
                conn.broken = true;
                self.failed();
                None
            }
        }
    }

    fn failed(&self) {
        if self.breaker.failed() {
            log::warn!(
                "replica {} unusable: reading the primary for now",
                self.name
            );
        }
        self.state.store(STATE_DOWN, Ordering::Relaxed);
    }

    fn poll(&self, head: Option<u64>) {
        let status = self
            .pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                let status = recovery_status(&mut conn.conn).map_err(|e| {
                    conn.broken = true;
                    e.to_string()
                })?;
                let paused = diesel::sql_query(
                    "SELECT pg_is_in_recovery() AND pg_is_wal_replay_paused() AS paused",
                )
                .get_result::<Paused>(&mut conn.conn)
                .map(|p| p.paused)
                .unwrap_or(false);
                Ok((status, paused))
            });
        match status {
            Ok((Some(replayed), paused)) => {
                self.state.store(STATE_REPLICA, Ordering::Relaxed);
                self.replayed.fetch_max(replayed, Ordering::Relaxed);
                self.paused.store(u8::from(paused), Ordering::Relaxed);
                if let Some(head) = head {
                    self.lag_bytes
                        .store(head.saturating_sub(replayed), Ordering::Relaxed);
                }
            }
            Ok((None, _)) => self.state.store(STATE_PROMOTED, Ordering::Relaxed),
            Err(_) => self.state.store(STATE_DOWN, Ordering::Relaxed),
        }
    }
}

/// Where the primary's write log ends now (`pg_current_wal_insert_lsn()`, as a number):
/// read after a commit, every change the commit made is at or before it — also with
/// `synchronous_commit = off`, where the flushed position (`pg_current_wal_lsn()`) may
/// still be short of the commit record. `None` if it cannot be read.
pub fn write_position(conn: &mut PgConnection) -> Option<u64> {
    #[derive(QueryableByName)]
    struct Position {
        #[diesel(sql_type = Text)]
        position: String,
    }
    let read = diesel::sql_query("SELECT (pg_current_wal_insert_lsn() - '0/0')::text AS position")
        .get_result::<Position>(conn);
    match read {
        Ok(p) => p.position.parse().ok(),
        Err(e) => {
            log::warn!("reading the write position: {e}");
            None
        }
    }
}

/// `Some(replayed)` on a server in recovery (a replica), `None` on one that is not (a
/// primary, or a promoted replica).
fn recovery_status(conn: &mut PgConnection) -> QueryResult<Option<u64>> {
    #[derive(QueryableByName)]
    struct Status {
        #[diesel(sql_type = Bool)]
        recovering: bool,
        #[diesel(sql_type = Nullable<Text>)]
        replayed: Option<String>,
    }
    let status: Status = diesel::sql_query(
        "SELECT pg_is_in_recovery() AS recovering, \
         (pg_last_wal_replay_lsn() - '0/0')::text AS replayed",
    )
    .get_result(conn)?;
    Ok(match (status.recovering, status.replayed) {
        (true, Some(replayed)) => Some(replayed.parse().unwrap_or(0)),
        // In recovery but nothing replayed yet (still starting): nothing is guaranteed.
        (true, None) => Some(0),
        (false, _) => None,
    })
}

#[derive(QueryableByName)]
struct Paused {
    #[diesel(sql_type = Bool)]
    paused: bool,
}

/// `host:port` of a `postgres://` URL, without user or password.
fn server_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// A replica's connections: diesel's manager, with each connection marked broken when a
/// statement on it failed, so the pool drops it instead of handing it out again (there
/// is no ping at checkout to find it).
#[derive(Debug)]
struct ReplicaManager(ConnectionManager<PgConnection>);

struct ReplicaConn {
    conn: PgConnection,
    broken: bool,
}

impl ManageConnection for ReplicaManager {
    type Connection = ReplicaConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<ReplicaConn, Self::Error> {
        Ok(ReplicaConn {
            conn: self.0.connect()?,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut ReplicaConn) -> Result<(), Self::Error> {
        self.0.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut ReplicaConn) -> bool {
        conn.broken || self.0.has_broken(&mut conn.conn)
    }
}

#[derive(Debug)]
struct StatementTimeout;

impl CustomizeConnection<ReplicaConn, diesel::r2d2::Error> for StatementTimeout {
    fn on_acquire(&self, conn: &mut ReplicaConn) -> Result<(), diesel::r2d2::Error> {
        diesel::sql_query(format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            .execute(&mut conn.conn)
            .map(|_| ())
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Closed: reads try the replica. Each failure in a row opens it for twice as long as
/// the last time (from 1 s up to 30 s); then one read tries again.
#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicI64,
}

impl Breaker {
    fn allows_now(&self) -> bool {
        now_ms() >= self.open_until_ms.load(Ordering::Relaxed)
    }

    /// Counts a failure; true when this one opened the breaker from closed.
    fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let open_ms = (1000i64 << (failures - 1).min(5)).min(30_000);
        self.open_until_ms
            .store(now_ms() + open_ms, Ordering::Relaxed);
        failures == 1
    }

    fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
}

fn now_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_named_without_its_credentials() {
        assert_eq!(
            server_name("postgres://u:secret@db-2:5433/listings?sslmode=disable"),
            "db-2:5433"
        );
        assert_eq!(server_name("postgresql://replica/listings"), "replica");
    }

    #[test]
    fn the_breaker_opens_longer_after_each_failure_and_closes_on_success() {
        let breaker = Breaker::default();
        assert!(breaker.allows_now());
        assert!(breaker.failed());
        assert!(!breaker.allows_now());
        assert!(!breaker.failed(), "already open");
        let open = breaker.open_until_ms.load(Ordering::Relaxed) - now_ms();
        assert!(
            open > 1000,
            "second failure opens for about 2 s, got {open} ms"
        );
        breaker.succeeded();
        assert_eq!(breaker.failures.load(Ordering::Relaxed), 0);
    }
}
