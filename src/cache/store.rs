//! Every Redis command is built here, and every call goes through here: a multiplexed,
//! self-reconnecting connection per worker thread, a hard timeout per command, a small
//! circuit breaker, and fail-open errors. Callers get typed methods (`get`, `set_px`,
//! `scan`…), never a raw command, so no call can skip the timeout or the breaker.
//!
//! Why one connection per thread: a connection's driver task lives on the runtime that
//! opened it. Shared by all workers, every command from another worker would hop to that
//! thread and back (two cross-thread wake-ups per command, the largest cost of a cache
//! hit in profiles). Each actix worker runs its own single-threaded runtime, so a
//! connection per thread keeps every command on the thread that sent it. A failure
//! is returned as `CacheUnavailable` (callers treat it as a miss/bypass), counted, and
//! logged — never a panic, never a 5xx.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Pipeline};

use super::entry::now_ms;
use super::metrics::Metrics;

/// Redis could not be used for this call (down, slow, breaker open, bad reply).
#[derive(Clone, Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheUnavailable(pub String);

/// Consecutive failures that open the breaker, and how long it then stays open.
const BREAKER_THRESHOLD: u32 = 3;
const BREAKER_COOL_DOWN_MS: i64 = 1_000;

#[derive(Clone)]
pub struct RedisStore {
    /// Unique per store in this process: names its connections in `CONNECTIONS`.
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    metrics: Arc<Metrics>,
    breaker: Arc<Breaker>,
    /// Told how long each command took.
    on_time: fn(Duration),
}

#[derive(Default)]
struct Breaker {
    consecutive_failures: AtomicU32,
    open_until_ms: AtomicI64,
}

impl RedisStore {
    /// Connects lazily: the app starts without Redis and the connection manager
    /// reconnects by itself once Redis is back.
    pub fn new(
        url: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
        on_time: fn(Duration),
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL {url:?} is not usable: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            config,
            timeout,
            metrics,
            breaker: Arc::default(),
            on_time,
        })
    }

    /// Unique per store in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// This thread's connection to this store's Redis, opened (lazily: nothing is sent
    /// until the first command) on first use.
    fn connection(&self) -> Result<ConnectionManager, CacheUnavailable> {
        thread_local! {
            static CONNECTIONS: RefCell<HashMap<u64, ConnectionManager>> = RefCell::default();
        }
        CONNECTIONS.with(|all| {
            if let Some(conn) = all.borrow().get(&self.id) {
                return Ok(conn.clone());
            }
            let conn = self
                .client
                .get_connection_manager_lazy(self.config.clone())
                .map_err(|e| CacheUnavailable(format!("opening a connection: {e}")))?;
            all.borrow_mut().insert(self.id, conn.clone());
            Ok(conn)
        })
    }

    /// Whether the breaker is currently skipping Redis.
    pub fn circuit_open(&self) -> bool {
        self.breaker.open_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// Runs one command with the timeout and the breaker.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheUnavailable> {
        self.guarded(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a pipeline (optionally atomic: `MULTI`/`EXEC`) the same way.
    async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, CacheUnavailable> {
        self.guarded(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    // ---- The commands ------------------------------------------------------------

    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, CacheUnavailable> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// `MGET keys…`.
    pub async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheUnavailable> {
        self.query(redis::cmd("MGET").arg(keys)).await
    }

    /// `SET key value PX ms`.
    pub async fn set_px(&self, key: &str, value: &[u8], ms: u64) -> Result<(), CacheUnavailable> {
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms.max(1)),
        )
        .await
    }

    /// `SET key 1 NX PX ms`: whether this caller set it (a lock taken).
    pub async fn set_nx_px(&self, key: &str, ms: u64) -> Result<bool, CacheUnavailable> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Ok(set.is_some())
    }

    /// `SET key value NX GET [PX ms]`: the value already there, if any (then nothing is
    /// set).
    pub async fn set_nx_get(
        &self,
        key: &str,
        value: &str,
        px: Option<u64>,
    ) -> Result<Option<String>, CacheUnavailable> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("GET");
        if let Some(ms) = px {
            cmd.arg("PX").arg(ms.max(1));
        }
        self.query(&cmd).await
    }

    /// `SET key value NX PX ms` for each pair, in one pipeline: whether every one was
    /// set (a key that already existed keeps its value).
    pub async fn set_all_nx(
        &self,
        pairs: &[(String, String)],
        px: u64,
    ) -> Result<bool, CacheUnavailable> {
        let mut pipe = redis::pipe();
        for (key, value) in pairs {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(px.max(1));
        }
        let replies: Vec<Option<String>> = self.pipe(&pipe).await?;
        Ok(replies.iter().all(Option::is_some))
    }

    /// `SET key value PX ms`, and `INCR` of each counter (expiring after `counter_px`),
    /// in one pipeline.
    pub async fn set_px_counting(
        &self,
        key: &str,
        value: &[u8],
        ms: u64,
        counters: &[String],
        counter_px: u64,
    ) -> Result<(), CacheUnavailable> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ms.max(1))
            .ignore();
        for counter in counters {
            pipe.cmd("INCR").arg(counter).ignore();
            pipe.cmd("PEXPIRE")
                .arg(counter)
                .arg(counter_px.max(1))
                .ignore();
        }
        self.pipe(&pipe).await
    }

    /// Sets each token to its new value (expiring after `px` ms), deletes `delete` and
    /// takes each counter's value (`GETDEL`), atomically (`MULTI`): the counts.
    pub async fn replace_tokens(
        &self,
        pairs: &[(String, String)],
        px: u64,
        delete: &str,
        counters: &[String],
    ) -> Result<Vec<u64>, CacheUnavailable> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value) in pairs {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(px.max(1))
                .ignore();
        }
        pipe.cmd("DEL").arg(delete).ignore();
        for counter in counters {
            pipe.cmd("GETDEL").arg(counter);
        }
        let counts: Vec<Option<u64>> = self.pipe(&pipe).await?;
        Ok(counts.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Sets each key to its value (expiring after `px` ms, if given) and deletes
    /// `delete`, atomically (`MULTI`).
    pub async fn set_all_and_delete(
        &self,
        pairs: &[(String, String)],
        px: Option<u64>,
        delete: &str,
    ) -> Result<(), CacheUnavailable> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value) in pairs {
            let set = pipe.cmd("SET").arg(key).arg(value);
            if let Some(ms) = px {
                set.arg("PX").arg(ms.max(1));
            }
            set.ignore();
        }
        pipe.cmd("DEL").arg(delete).ignore();
        self.pipe(&pipe).await
    }

    pub async fn del(&self, key: &str) -> Result<(), CacheUnavailable> {
        self.query(redis::cmd("DEL").arg(key)).await
    }

    /// `UNLINK keys…`: how many existed.
    pub async fn unlink(&self, keys: &[String]) -> Result<u64, CacheUnavailable> {
        self.query(redis::cmd("UNLINK").arg(keys)).await
    }

    /// `INCR key` and, if it has none yet, an expiry of `ms`, atomically: the new count
    /// and the milliseconds left.
    pub async fn incr_expiring(&self, key: &str, ms: u64) -> Result<(u64, i64), CacheUnavailable> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("INCR")
            .arg(key)
            .cmd("PEXPIRE")
            .arg(key)
            .arg(ms)
            .arg("NX")
            .ignore()
            .cmd("PTTL")
            .arg(key);
        self.pipe(&pipe).await
    }

    /// One `SCAN cursor MATCH pattern COUNT count` step: the next cursor and the keys.
    pub async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: u64,
    ) -> Result<(u64, Vec<String>), CacheUnavailable> {
        self.query(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count),
        )
        .await
    }

    /// Each key's `PTTL` reply and `MEMORY USAGE` (`None` where Redis does not report
    /// it: renamed or disabled on some hosted Redis), in one pipeline.
    pub async fn ttls_and_sizes(
        &self,
        keys: &[String],
    ) -> Result<Vec<(Option<i64>, Option<i64>)>, CacheUnavailable> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("PTTL").arg(key);
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
        pipe.ignore_errors();
        let replies: Vec<redis::Value> = self.pipe(&pipe).await?;
        let int = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => Some(*n),
            _ => None,
        };
        Ok((0..keys.len())
            .map(|i| (int(replies.get(2 * i)), int(replies.get(2 * i + 1))))
            .collect())
    }

    pub async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.is_ok()
    }

    /// `INFO section`.
    pub async fn info(&self, section: &str) -> Result<String, CacheUnavailable> {
        self.query(redis::cmd("INFO").arg(section)).await
    }

    async fn guarded<T, F, Fut>(&self, f: F) -> Result<T, CacheUnavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.circuit_open() {
            return Err(CacheUnavailable("circuit breaker open".into()));
        }
        let conn = match self.connection() {
            Ok(conn) => conn,
            Err(e) => return Err(self.on_failure(e.0)),
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, f(conn)).await;
        (self.on_time)(started.elapsed());
        match result {
            Ok(Ok(v)) => {
                self.on_success();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.on_failure(e.to_string())),
            Err(_) => Err(self.on_failure(format!("timed out after {:?}", self.timeout))),
        }
    }

    fn on_success(&self) {
        // Only after a failure is there anything to reset (this runs on every hit).
        if self.breaker.consecutive_failures.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.breaker.consecutive_failures.swap(0, Ordering::Relaxed) >= BREAKER_THRESHOLD {
            log::info!("redis is answering again; circuit breaker closed");
        }
        self.metrics.set_circuit_open(false);
    }

    fn on_failure(&self, cause: String) -> CacheUnavailable {
        self.metrics.redis_error();
        let failures = self
            .breaker
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failures >= BREAKER_THRESHOLD {
            self.breaker
                .open_until_ms
                .store(now_ms() + BREAKER_COOL_DOWN_MS, Ordering::Relaxed);
            self.metrics.set_circuit_open(true);
            if failures == BREAKER_THRESHOLD {
                log::warn!(
                    "redis failed {failures} times in a row ({cause}); skipping it for {BREAKER_COOL_DOWN_MS} ms at a time"
                );
            }
        } else {
            log::warn!("redis command failed, bypassing the cache: {cause}");
        }
        CacheUnavailable(cause)
    }
}
