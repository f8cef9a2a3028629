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
//!
//! # Redis Cluster (`REDIS_CLUSTER_URLS`)
//!
//! The same methods run over the `redis` crate's cluster client instead: it routes each
//! command to the master of its key's slot, follows `MOVED`/`ASK`, refreshes its slot map
//! after a failover, and splits `MGET`/`DEL`/`UNLINK` over several slots into one command
//! per slot (not atomic). What it cannot split is a pipeline or a `MULTI`: those must stay
//! in one slot, so the methods below that use one either check that their keys share a
//! slot or group them per slot. Commands that are per server — `SCAN`, `INFO` — are sent
//! to every node on purpose (`scan_all`, `node_stats`); a plain `SCAN` would reach only one
//! random node.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{join_all, try_join_all};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture,
    Value,
};

use super::entry::now_ms;
use super::metrics::Metrics;

/// Lua: `now`, Redis's clock in ms — the one clock leases and the hash's age are
/// judged by, so no two machines' clocks are ever compared.
macro_rules! lua_now {
    () => {
        "local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        "
    };
}

/// Lua: the leases' hash (`KEYS[1]`) created with its birth time and numbering when it
/// does not exist (first use, eviction, a restart of Redis).
macro_rules! lua_create_sync {
    () => {
        "if redis.call('EXISTS', KEYS[1]) == 0 then
            redis.call('HSET', KEYS[1], 'born', now, 'seq', 0)
        end
        "
    };
}

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
    client: Client,
    /// Of the connection to a single Redis, and of those to each cluster node.
    manager_config: ConnectionManagerConfig,
    timeout: Duration,
    metrics: Arc<Metrics>,
    breaker: Arc<Breaker>,
    /// Told how long each command took.
    on_time: fn(Duration),
}

/// One Redis server, or a Redis Cluster (and how to reach one of its nodes directly:
/// like the first seed node, at another address).
#[derive(Clone)]
enum Client {
    Single(redis::Client),
    Cluster(Box<(ClusterClient, ClusterConfig, ConnectionInfo, Vec<String>)>),
}

/// A connection made by `Client`: both reconnect by themselves.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis server as `node_stats` reports it: its address, its role (`master` or
/// `replica`), whether it answered `INFO stats`, and its keyspace hits and misses.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeStats {
    pub address: String,
    pub role: &'static str,
    pub reachable: bool,
    pub keyspace_hits: Option<u64>,
    pub keyspace_misses: Option<u64>,
}

/// How far `scan_all` goes: it stops once more than `keys` keys are found, and walks at
/// most `rounds_per_node` `SCAN` steps on each master.
#[derive(Clone, Copy, Debug)]
pub struct ScanLimit {
    pub keys: usize,
    pub rounds_per_node: usize,
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
        Ok(Self::with_client(
            Client::Single(client),
            timeout,
            metrics,
            on_time,
        ))
    }

    /// The same over a Redis Cluster, given its seed nodes (`REDIS_CLUSTER_URLS`). Also
    /// lazy: the cluster may be down when the app starts; the first commands then fail
    /// (fail-open) and the client keeps trying the seeds until the cluster answers.
    pub fn new_cluster(
        urls: &[String],
        timeout: Duration,
        metrics: Arc<Metrics>,
        on_time: fn(Duration),
    ) -> anyhow::Result<Self> {
        // Few, short retries: a command that cannot be served at once is a bypass; the
        // client's own retries (16 by default, up to minutes apart) would hold requests.
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|e| anyhow::anyhow!("REDIS_CLUSTER_URLS {urls:?} is not usable: {e}"))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let seed = urls
            .first()
            .ok_or_else(|| anyhow::anyhow!("REDIS_CLUSTER_URLS names no node"))?
            .as_str()
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("REDIS_CLUSTER_URLS {urls:?} is not usable: {e}"))?;
        Ok(Self::with_client(
            Client::Cluster(Box::new((client, config, seed, urls.to_vec()))),
            timeout,
            metrics,
            on_time,
        ))
    }

    fn with_client(
        client: Client,
        timeout: Duration,
        metrics: Arc<Metrics>,
        on_time: fn(Duration),
    ) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            manager_config,
            timeout,
            metrics,
            breaker: Arc::default(),
            on_time,
        }
    }

    /// Whether this store speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(..))
    }

    /// Unique per store in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// This thread's connection to this store's Redis (`node` `None`), or to one node of
    /// the cluster (`host:port`: for the per-server commands, `SCAN` and `INFO`), opened
    /// (lazily: nothing is sent until the first command) on first use.
    fn connection(&self, node: Option<&str>) -> Result<Connection, CacheUnavailable> {
        thread_local! {
            static CONNECTIONS: RefCell<HashMap<(u64, Option<String>), Connection>> =
                RefCell::default();
        }
        let key = (self.id, node.map(str::to_string));
        CONNECTIONS.with(|all| {
            if let Some(conn) = all.borrow().get(&key) {
                return Ok(conn.clone());
            }
            let opening =
                |e: redis::RedisError| CacheUnavailable(format!("opening a connection: {e}"));
            let conn = match (&self.client, node) {
                (Client::Single(client), _) => client
                    .get_connection_manager_lazy(self.manager_config.clone())
                    .map(Connection::Single)
                    .map_err(opening)?,
                (Client::Cluster(cluster), None) => Connection::Cluster(
                    cluster
                        .0
                        .get_pending_async_connection_with_config(cluster.1.clone()),
                ),
                (Client::Cluster(cluster), Some(address)) => {
                    let seed = &cluster.2;
                    let info = seed.clone().set_addr(node_addr(address)?);
                    redis::Client::open(info)
                        .and_then(|c| c.get_connection_manager_lazy(self.manager_config.clone()))
                        .map(Connection::Single)
                        .map_err(opening)?
                }
            };
            all.borrow_mut().insert(key, conn.clone());
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

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheUnavailable> {
        self.query(redis::cmd("GET").arg(key)).await
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

    /// `SET key value NX GET PX ms`: the value already there, if any (then nothing is
    /// set).
    pub async fn set_nx_get(
        &self,
        key: &str,
        value: &str,
        ms: u64,
    ) -> Result<Option<String>, CacheUnavailable> {
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(ms.max(1)),
        )
        .await
    }

    /// Stores an entry: `SET token marker NX PX token_px` for each token in `missing`,
    /// `SET key value PX ms`, and `INCR` (with `PEXPIRE token_px`) of each counter — one
    /// `MULTI` on a single Redis, so no lookup sees the tokens created and the entry not
    /// yet there (it would start a build of its own); in a cluster, one command each.
    /// Whether every missing token took its marker: if one did not, the entry was stored
    /// dead (its version names the marker) and the caller treats it as not stored.
    pub async fn store_entry(
        &self,
        missing: &[(String, String)],
        key: &str,
        value: &[u8],
        ms: u64,
        counters: &[String],
        token_px: u64,
    ) -> Result<bool, CacheUnavailable> {
        let mut ops: Vec<(&str, Cmd)> = Vec::new();
        for (token, marker) in missing {
            let mut set = redis::cmd("SET");
            set.arg(token)
                .arg(marker)
                .arg("NX")
                .arg("PX")
                .arg(token_px.max(1));
            ops.push((token, set));
        }
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value).arg("PX").arg(ms.max(1));
        ops.push((key, set));
        for counter in counters {
            ops.push((counter, redis::cmd("INCR").arg(counter).to_owned()));
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(counter).arg(token_px.max(1));
            ops.push((counter, expire));
        }
        let replies = self.per_slot(ops, true).await?;
        Ok(replies[..missing.len()]
            .iter()
            .all(|r| !matches!(r, Value::Nil)))
    }

    /// A write's invalidation, as one script on the slot of the tokens (so atomic also
    /// in a cluster): each token of `pairs` set to its new value (expiring after `px`
    /// ms) — with `position` known, the value carries the higher of it and the position
    /// the value replaced carried (`VALUE@POSITION`: positions only grow; see "Read
    /// replicas" in the module docs of `cache`) — each counter taken (`GETDEL`: how many entries were stored under the value
    /// replaced), and the invalidation appended to the log under the next number
    /// (`Keys::sync`, `Keys::log`; the log keeps about `max_len` entries; both keys live
    /// `keep_ms` without use). Returns the counts and where it stands in the log.
    #[allow(clippy::too_many_arguments)]
    pub async fn invalidate(
        &self,
        sync: &str,
        log: &str,
        pairs: &[(String, String)],
        counters: &[String],
        names: &str,
        position: Option<u64>,
        px: u64,
        max_len: u64,
        keep_ms: u64,
    ) -> Result<(Vec<u64>, Appended), CacheUnavailable> {
        const SCRIPT: &str = concat!(
            lua_now!(),
            lua_create_sync!(),
            r"
            local n = tonumber(ARGV[1])
            local position = ARGV[6]
            for i = 1, n do
                local value = ARGV[6 + i]
                if position ~= '' then
                    local highest = position
                    local old = redis.call('GET', KEYS[2 + i])
                    local was = old and string.match(old, '@(%d+)$')
                    -- Decimal numbers without leading zeros: the longer is the larger.
                    if was and (#was > #highest or (#was == #highest and was > highest)) then
                        highest = was
                    end
                    value = value .. '@' .. highest
                end
                redis.call('SET', KEYS[2 + i], value, 'PX', ARGV[2])
            end
            local counts = {}
            for i = 1, n do
                counts[i] = redis.call('GETDEL', KEYS[2 + n + i]) or '0'
            end
            local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'seq', seq,
                'tokens', ARGV[3])
            redis.call('PEXPIRE', KEYS[1], ARGV[5])
            redis.call('PEXPIRE', KEYS[2], ARGV[5])
            return {seq, redis.call('HGET', KEYS[1], 'born'), counts}"
        );
        let mut keys: Vec<&str> = vec![sync, log];
        keys.extend(pairs.iter().map(|(key, _)| key.as_str()));
        keys.extend(counters.iter().map(String::as_str));
        let mut cmd = script(SCRIPT, &keys);
        cmd.arg(pairs.len())
            .arg(px.max(1))
            .arg(names)
            .arg(max_len)
            .arg(keep_ms)
            .arg(position.map(|p| p.to_string()).unwrap_or_default());
        for (_, value) in pairs {
            cmd.arg(value);
        }
        let (seq, born, counts): (u64, i64, Vec<String>) = self.query(&cmd).await?;
        Ok((
            counts.iter().map(|c| c.parse().unwrap_or(0)).collect(),
            Appended { seq, born },
        ))
    }

    /// The values of `tokens` and where the log stands, read at one instant (one script
    /// on their slot); on a single Redis also `entry`'s value (in a cluster it lives in
    /// another slot: read beside it, at the same time).
    pub async fn read_tokens(
        &self,
        sync: &str,
        tokens: &[String],
        entry: Option<&str>,
    ) -> Result<TokenRead, CacheUnavailable> {
        const SCRIPT: &str = r"
            local seq = redis.call('HGET', KEYS[1], 'seq')
            local born = redis.call('HGET', KEYS[1], 'born')
            local n = tonumber(ARGV[1])
            local values = {}
            if n > 0 then values = redis.call('MGET', unpack(KEYS, 2, n + 1)) end
            local entry = false
            if #KEYS > n + 1 then entry = redis.call('GET', KEYS[n + 2]) end
            return {seq or false, born or false, values, entry}";
        let cluster = self.is_cluster();
        let mut keys: Vec<&str> = vec![sync];
        keys.extend(tokens.iter().map(String::as_str));
        if let (Some(entry), false) = (entry, cluster) {
            keys.push(entry);
        }
        let mut cmd = script(SCRIPT, &keys);
        cmd.arg(tokens.len());
        let read = async {
            let reply: ScriptedRead = self.query(&cmd).await?;
            Ok::<_, CacheUnavailable>(reply)
        };
        let ((seq, born, values, entry_value), entry) = match (entry, cluster) {
            (Some(entry), true) => tokio::try_join!(read, self.get(entry))?,
            _ => (read.await?, None),
        };
        Ok(TokenRead {
            at: born.map(|born| (born, seq.unwrap_or(0))),
            values,
            entry: entry.or(entry_value),
        })
    }

    /// Runs `ops` (each with the key that places it) as one pipeline — `MULTI` when
    /// `atomic` — on a single Redis: the replies, in the order of `ops`. In a cluster,
    /// where a pipeline cannot span slots and one sent to a slot's old master after a
    /// failover is refused (`MOVED`) rather than redirected, each command is sent on its
    /// own (the client follows redirections and refreshes its slot map), all at once.
    /// A failure of any part fails the whole, some parts possibly done (callers treat
    /// that as a failed whole).
    async fn per_slot(
        &self,
        ops: Vec<(&str, Cmd)>,
        atomic: bool,
    ) -> Result<Vec<Value>, CacheUnavailable> {
        if self.is_cluster() {
            return try_join_all(ops.iter().map(|(_, cmd)| self.query::<Value>(cmd))).await;
        }
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for (_, cmd) in ops {
            pipe.add_command(cmd);
        }
        self.pipe(&pipe).await
    }

    /// Waits until the replicas of the master of each key's slot — `replicas` of them,
    /// or all it has when it has fewer (after a failover a master may have none, and
    /// then no replica can be promoted with older data) — have every write sent so far
    /// (`ROLE`, then `WAIT`, bounded by the command timeout). In a cluster both go to
    /// exactly that master (the crate's own routing of `WAIT` asks every master, and
    /// fails while any is down). An error, or fewer acknowledgments, is a failure.
    pub async fn wait_for_replicas(
        &self,
        keys: &[String],
        replicas: u32,
    ) -> Result<(), CacheUnavailable> {
        if replicas == 0 {
            return Ok(());
        }
        let mut slots: Vec<Option<Slot>> = Vec::new();
        for key in keys {
            let slot = self.is_cluster().then(|| Slot::for_key(key));
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        for slot in slots {
            let role: Value = self.query_master(redis::cmd("ROLE"), slot).await?;
            let attached = match &role {
                Value::Array(parts) => match parts.get(2) {
                    Some(Value::Array(attached)) => attached.len() as u32,
                    _ => 0,
                },
                _ => 0,
            };
            let wanted = replicas.min(attached);
            if wanted == 0 {
                continue;
            }
            let mut wait = redis::cmd("WAIT");
            wait.arg(wanted).arg(self.timeout.as_millis().max(1) as u64);
            let acked: i64 = self.query_master(wait, slot).await?;
            if acked < i64::from(wanted) {
                return Err(self.on_failure(format!(
                    "WAIT: {acked} of {wanted} replicas acknowledged the write"
                )));
            }
        }
        Ok(())
    }

    /// One command on the master of `slot` (in a cluster; `None`: the single Redis).
    async fn query_master<T: FromRedisValue>(
        &self,
        cmd: Cmd,
        slot: Option<Slot>,
    ) -> Result<T, CacheUnavailable> {
        let Some(slot) = slot else {
            return self.query(&cmd).await;
        };
        self.guarded(|conn| async move {
            let Connection::Cluster(mut conn) = conn else {
                return cmd.query_async(&mut { conn }).await;
            };
            let route = Route::with_slot(slot, SlotAddr::Master);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            let value = conn.route_command(cmd, routing).await?;
            Ok(T::from_redis_value(value)?)
        })
        .await
    }

    // ---- The instances' leases and the invalidation log (`lease.rs`) -------------
    //
    // One hash (`Keys::sync`) holds `born` (when it was created, Redis time in ms),
    // `seq` (the last invalidation's number) and per instance `lease:ID` (when its lease
    // ends), `ack:ID` (the last invalidation it applied) and `rseq:ID` (`seq` when its
    // lease was last extended); the log is a stream beside it (`Keys::log`), in the
    // same slot. Every change to them is one script, so each is atomic also in a
    // cluster; the times are Redis's own clock (`TIME`), so no two instances' clocks
    // are compared.

    /// Registers instance `id` with a lease of `lease_ms`: its lease, its acknowledgment
    /// and its `rseq` at the current `seq`. Returns where the log stands (`born`, `seq`)
    /// and its last entry's id (where the instance starts reading).
    pub async fn register(
        &self,
        sync: &str,
        log: &str,
        id: &str,
        lease_ms: u64,
        keep_ms: u64,
    ) -> Result<(Appended, String), CacheUnavailable> {
        const SCRIPT: &str = concat!(
            lua_now!(),
            lua_create_sync!(),
            r"
            local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
            redis.call('HSET', KEYS[1], 'lease:' .. ARGV[1], now + tonumber(ARGV[2]),
                'ack:' .. ARGV[1], seq, 'rseq:' .. ARGV[1], seq)
            redis.call('HDEL', KEYS[1], 'revoked:' .. ARGV[1])
            redis.call('PEXPIRE', KEYS[1], ARGV[3])
            local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
            local cursor = '0-0'
            if last[1] then cursor = last[1][1] end
            return {seq, redis.call('HGET', KEYS[1], 'born'), cursor}"
        );
        let mut cmd = script(SCRIPT, &[sync, log]);
        cmd.arg(id).arg(lease_ms).arg(keep_ms);
        let (seq, born, cursor): (u64, i64, String) = self.query(&cmd).await?;
        Ok((Appended { seq, born }, cursor))
    }

    /// Extends instance `id`'s lease by `lease_ms` from now, if it still holds one that
    /// has not run out, and if it has applied (`applied`) every invalidation logged
    /// before its last extension (one that falls behind is not extended, so a writer
    /// never waits for it longer than a lease and a renewal). Records `applied` as its
    /// acknowledgment too.
    pub async fn renew(
        &self,
        sync: &str,
        id: &str,
        lease_ms: u64,
        applied: u64,
        keep_ms: u64,
    ) -> Result<Renewal, CacheUnavailable> {
        const SCRIPT: &str = concat!(
            lua_now!(),
            r"
            local ends = redis.call('HGET', KEYS[1], 'lease:' .. ARGV[1])
            if not ends or tonumber(ends) <= now then return 0 end
            if redis.call('HEXISTS', KEYS[1], 'revoked:' .. ARGV[1]) == 1 then return 0 end
            local ack = tonumber(redis.call('HGET', KEYS[1], 'ack:' .. ARGV[1]) or '0')
            if tonumber(ARGV[3]) > ack then
                redis.call('HSET', KEYS[1], 'ack:' .. ARGV[1], ARGV[3])
                redis.call('PEXPIRE', KEYS[1], ARGV[4])
            end
            local rseq = tonumber(redis.call('HGET', KEYS[1], 'rseq:' .. ARGV[1]) or '0')
            if tonumber(ARGV[3]) < rseq then return 1 end
            local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
            redis.call('HSET', KEYS[1], 'lease:' .. ARGV[1], now + tonumber(ARGV[2]),
                'rseq:' .. ARGV[1], seq)
            redis.call('PEXPIRE', KEYS[1], ARGV[4])
            return 2"
        );
        let mut cmd = script(SCRIPT, &[sync]);
        cmd.arg(id).arg(lease_ms).arg(applied).arg(keep_ms);
        Ok(match self.query::<i64>(&cmd).await? {
            2 => Renewal::Extended,
            1 => Renewal::Behind,
            _ => Renewal::Lost,
        })
    }

    /// Records that instance `id` applied every invalidation up to `seq`, if it still
    /// holds a lease entry (a lost one is not brought back by an acknowledgment).
    pub async fn acknowledge(
        &self,
        sync: &str,
        id: &str,
        seq: u64,
        keep_ms: u64,
    ) -> Result<(), CacheUnavailable> {
        const SCRIPT: &str = r"
            if redis.call('HEXISTS', KEYS[1], 'lease:' .. ARGV[1]) == 0 then return 0 end
            local ack = tonumber(redis.call('HGET', KEYS[1], 'ack:' .. ARGV[1]) or '0')
            if tonumber(ARGV[2]) > ack then
                redis.call('HSET', KEYS[1], 'ack:' .. ARGV[1], ARGV[2])
                redis.call('PEXPIRE', KEYS[1], ARGV[3])
            end
            return 1";
        let mut cmd = script(SCRIPT, &[sync]);
        cmd.arg(id).arg(seq).arg(keep_ms);
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// Refuses every further extension of these instances' leases (each then runs out,
    /// and the instance registers again, forgetting what it knew): for a write that an
    /// instance has not acknowledged in time.
    pub async fn revoke(&self, sync: &str, ids: &[String]) -> Result<(), CacheUnavailable> {
        const SCRIPT: &str = r"
            for i = 1, #ARGV do
                if redis.call('HEXISTS', KEYS[1], 'lease:' .. ARGV[i]) == 1 then
                    redis.call('HSET', KEYS[1], 'revoked:' .. ARGV[i], 1)
                end
            end
            return 1";
        let mut cmd = script(SCRIPT, &[sync]);
        cmd.arg(ids);
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// What writers wait on: Redis's clock now (ms) and every field of the hash.
    pub async fn sync_state(&self, sync: &str) -> Result<SyncState, CacheUnavailable> {
        const SCRIPT: &str = concat!(
            lua_now!(),
            r"
            return {now, redis.call('HGETALL', KEYS[1])}"
        );
        let (now, fields): (i64, Vec<(String, String)>) =
            self.query(&script(SCRIPT, &[sync])).await?;
        Ok(SyncState::from_fields(now, fields))
    }

    /// Reads the log after `cursor`, blocking up to `block_ms` for new entries, on a
    /// connection of its own (a blocking read would hold up every command behind it):
    /// each entry's id, number and token names. `None` when the wait ran out.
    pub async fn read_log(
        &self,
        reader: &mut LogReader,
        log: &str,
        cursor: &str,
        block_ms: u64,
    ) -> Result<Vec<LogEntry>, CacheUnavailable> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(log)
            .arg(cursor);
        let conn = match reader.connection(self, block_ms) {
            Ok(conn) => conn,
            Err(e) => return Err(self.on_failure(e.0)),
        };
        // The wait, and a slow round trip on either side of it.
        let bound = 2 * self.timeout + Duration::from_millis(block_ms);
        let reply = match tokio::time::timeout(bound, cmd.query_async::<Value>(conn)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                reader.reset();
                return Err(self.on_failure(format!("reading the invalidation log: {e}")));
            }
            Err(_) => {
                reader.reset();
                return Err(self.on_failure("reading the invalidation log timed out".into()));
            }
        };
        Ok(LogEntry::parse_xread(reply))
    }

    pub async fn del(&self, key: &str) -> Result<(), CacheUnavailable> {
        self.query(redis::cmd("DEL").arg(key)).await
    }

    /// `UNLINK keys…`: how many existed. In a cluster the client splits it into one
    /// `UNLINK` per slot and sums the replies.
    pub async fn unlink(&self, keys: &[String]) -> Result<u64, CacheUnavailable> {
        self.query(redis::cmd("UNLINK").arg(keys)).await
    }

    /// The keys matching `pattern` (deduplicated and sorted) on every master — one
    /// `SCAN` cursor per master, since each holds its own slots — and whether every match
    /// is among them (`false` when `limit` cut the walk short). `None`: walk everything.
    pub async fn scan_all(
        &self,
        pattern: &str,
        count: u64,
        limit: Option<ScanLimit>,
    ) -> Result<(BTreeSet<String>, bool), CacheUnavailable> {
        let nodes = match self.client {
            Client::Single(..) => vec![None],
            Client::Cluster(..) => self
                .cluster_nodes()
                .await?
                .into_iter()
                .filter(|n| n.master && !n.failed)
                .map(|n| Some(n.address))
                .collect(),
        };
        let mut found = BTreeSet::new();
        for node in nodes {
            let mut cursor: u64 = 0;
            let mut rounds = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                let (next, keys): (u64, Vec<String>) = match &node {
                    None => self.query(&scan).await?,
                    Some(address) => self.query_at(&scan, address).await?,
                };
                found.extend(keys);
                rounds += 1;
                if next == 0 {
                    break;
                }
                if let Some(limit) = limit
                    && (found.len() > limit.keys || rounds >= limit.rounds_per_node)
                {
                    return Ok((found, false));
                }
                cursor = next;
            }
            if limit.is_some_and(|l| found.len() > l.keys) {
                return Ok((found, false));
            }
        }
        Ok((found, true))
    }

    /// Each key's `PTTL` reply and `MEMORY USAGE` (`None` where Redis does not report
    /// it: renamed or disabled on some hosted Redis), in one pipeline — in a cluster, one
    /// pipeline per slot, all sent at once.
    pub async fn ttls_and_sizes(
        &self,
        keys: &[String],
    ) -> Result<Vec<(Option<i64>, Option<i64>)>, CacheUnavailable> {
        let mut groups: HashMap<Option<Slot>, Vec<&String>> = HashMap::new();
        for key in keys {
            let slot = self.is_cluster().then(|| Slot::for_key(key));
            groups.entry(slot).or_default().push(key);
        }
        let replies = try_join_all(groups.into_values().map(|keys| async move {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("PTTL").arg(*key);
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(*key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            pipe.ignore_errors();
            let replies: Vec<Value> = self.pipe(&pipe).await?;
            Ok::<_, CacheUnavailable>((keys, replies))
        }))
        .await?;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let mut by_key = HashMap::new();
        for (keys, replies) in &replies {
            for (i, key) in keys.iter().enumerate() {
                by_key.insert(
                    key.as_str(),
                    (int(replies.get(2 * i)), int(replies.get(2 * i + 1))),
                );
            }
        }
        Ok(keys
            .iter()
            .map(|key| by_key.get(key.as_str()).copied().unwrap_or((None, None)))
            .collect())
    }

    pub async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.is_ok()
    }

    /// `INFO stats` of every server: one entry for a single Redis; in a cluster, every
    /// node of `CLUSTER NODES` (masters first), each asked on its own, so an unreachable
    /// node is listed as such instead of failing the whole. Errors only when no master
    /// answers (or the cluster's node list cannot be read). A node that does not answer
    /// is not counted as a Redis error and does not trip the breaker: it is reported.
    pub async fn node_stats(&self) -> Result<Vec<NodeStats>, CacheUnavailable> {
        let stats = |info: &str, address: String, role| {
            let (hits, misses) = parse_info_stats(info).unzip();
            NodeStats {
                address,
                role,
                reachable: true,
                keyspace_hits: hits,
                keyspace_misses: misses,
            }
        };
        let info = redis::cmd("INFO").arg("stats").to_owned();
        let nodes = match &self.client {
            Client::Single(client) => {
                let text: String = self.query(&info).await?;
                let address = client.get_connection_info().addr().to_string();
                return Ok(vec![stats(&text, address, "master")]);
            }
            Client::Cluster(..) => self.cluster_nodes().await?,
        };
        let info = &info;
        let mut all = join_all(nodes.into_iter().map(|node| async move {
            let role = if node.master { "master" } else { "replica" };
            match self.probe_at::<String>(info, &node.address).await {
                Some(text) => stats(&text, node.address, role),
                None => NodeStats {
                    address: node.address,
                    role,
                    reachable: false,
                    keyspace_hits: None,
                    keyspace_misses: None,
                },
            }
        }))
        .await;
        if !all.iter().any(|n| n.role == "master" && n.reachable) {
            return Err(CacheUnavailable("no cluster master answered INFO".into()));
        }
        all.sort_by(|a, b| (a.role, &a.address).cmp(&(b.role, &b.address)));
        Ok(all)
    }

    /// The nodes of the cluster (`CLUSTER NODES`, asked of any node).
    async fn cluster_nodes(&self) -> Result<Vec<ClusterNode>, CacheUnavailable> {
        let text: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        Ok(parse_cluster_nodes(&text))
    }

    /// One command on the cluster node at `address` (`host:port`), with the timeout and
    /// the breaker.
    async fn query_at<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        address: &str,
    ) -> Result<T, CacheUnavailable> {
        self.guarded_on(Some(address), |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// The same with the timeout only: `None` when the node did not answer (a probe for
    /// the node list, which must not count as failures of the cache itself).
    async fn probe_at<T: FromRedisValue>(&self, cmd: &Cmd, address: &str) -> Option<T> {
        let mut conn = self.connection(Some(address)).ok()?;
        let started = std::time::Instant::now();
        let reply = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await;
        (self.on_time)(started.elapsed());
        match reply {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                log::debug!("redis node {address} did not answer: {e}");
                None
            }
            Err(_) => {
                log::debug!("redis node {address} timed out");
                None
            }
        }
    }

    async fn guarded<T, F, Fut>(&self, f: F) -> Result<T, CacheUnavailable>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.guarded_on(None, f).await
    }

    /// `guarded` on the connection to one cluster node (`None`: the usual connection).
    async fn guarded_on<T, F, Fut>(&self, node: Option<&str>, f: F) -> Result<T, CacheUnavailable>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.circuit_open() {
            return Err(CacheUnavailable("circuit breaker open".into()));
        }
        let conn = match self.connection(node) {
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
            Ok(Err(e)) => Err(self.on_failure(match node {
                Some(node) => format!("{node}: {e}"),
                None => e.to_string(),
            })),
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

/// A node of a Redis Cluster, as `CLUSTER NODES` lists it.
#[derive(Debug, PartialEq)]
struct ClusterNode {
    /// `host:port` (the client port, without `@cport` or a hostname).
    address: String,
    master: bool,
    /// Flagged `fail` by the cluster (not just `fail?`, one node's suspicion).
    failed: bool,
}

/// Reads `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> …` per line; nodes
/// without an address (`noaddr`, or still in the handshake) are left out.
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let address = addr.split(['@', ',']).next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if address.starts_with(':') || flags.contains(&"noaddr") || flags.contains(&"handshake")
            {
                return None;
            }
            Some(ClusterNode {
                address: address.to_string(),
                master: flags.contains(&"master"),
                failed: flags.contains(&"fail"),
            })
        })
        .collect()
}

/// The TCP address of a node given as `host:port`.
fn node_addr(address: &str) -> Result<ConnectionAddr, CacheUnavailable> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        .ok_or_else(|| CacheUnavailable(format!("bad node address {address:?}")))?;
    Ok(ConnectionAddr::Tcp(host.to_string(), port))
}

/// A `Cmd` running `source` (`EVAL`) on `keys`; the caller adds the arguments.
fn script(source: &str, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len()).arg(keys);
    cmd
}

/// The reply of `read_tokens`' script: `seq`, `born`, the tokens' values, the entry's.
type ScriptedRead = (
    Option<u64>,
    Option<i64>,
    Vec<Option<Vec<u8>>>,
    Option<Vec<u8>>,
);

/// Where an invalidation stands in the log: its number, and when the hash that
/// numbered it was created (numbers start again in a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub born: i64,
}

/// What `RedisStore::read_tokens` read: where the log stood (when the hash was born,
/// and its last number; `None`: no hash), the tokens' values, and the entry's.
pub struct TokenRead {
    pub at: Option<(i64, u64)>,
    pub values: Vec<Option<Vec<u8>>>,
    pub entry: Option<Vec<u8>>,
}

/// What a lease renewal did (`RedisStore::renew`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    Extended,
    /// Not extended: the instance has not applied an invalidation logged before its last
    /// extension. The lease still runs until it ends.
    Behind,
    /// The instance holds no lease (it ran out, or the hash was evicted or lost): writers
    /// may not have waited for it.
    Lost,
}

/// The hash writers wait on, as read at Redis time `now` (ms).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncState {
    pub now: i64,
    /// When the hash was (re)created; `None`: it does not exist.
    pub born: Option<i64>,
    pub seq: u64,
    /// Each instance: its id, when its lease ends, and the last invalidation it applied.
    pub instances: Vec<(String, i64, u64)>,
}

impl SyncState {
    fn from_fields(now: i64, fields: Vec<(String, String)>) -> Self {
        let mut state = Self {
            now,
            ..Self::default()
        };
        let mut acks: HashMap<String, u64> = HashMap::new();
        let mut leases: Vec<(String, i64)> = Vec::new();
        for (field, value) in fields {
            match field.split_once(':') {
                None if field == "born" => state.born = value.parse().ok(),
                None if field == "seq" => state.seq = value.parse().unwrap_or(0),
                Some(("lease", id)) => leases.push((id.to_string(), value.parse().unwrap_or(0))),
                Some(("ack", id)) => {
                    acks.insert(id.to_string(), value.parse().unwrap_or(0));
                }
                _ => {}
            }
        }
        leases.sort();
        state.instances = leases
            .into_iter()
            .map(|(id, ends)| {
                let ack = acks.get(&id).copied().unwrap_or(0);
                (id, ends, ack)
            })
            .collect();
        state
    }
}

/// One invalidation as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The stream entry's id (where the next read starts).
    pub id: String,
    pub seq: u64,
    /// The names of the tokens it replaced.
    pub tokens: Vec<String>,
}

impl LogEntry {
    /// The entries of an `XREAD` reply of one stream (`Nil` when the wait ran out).
    fn parse_xread(reply: Value) -> Vec<Self> {
        let text = |v: &Value| String::from_redis_value(v.clone()).ok();
        let Value::Array(streams) = reply else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for stream in streams {
            let Value::Array(parts) = stream else {
                continue;
            };
            let Some(Value::Array(items)) = parts.get(1) else {
                continue;
            };
            for item in items {
                let Value::Array(item) = item else { continue };
                let (Some(id), Some(Value::Array(fields))) =
                    (item.first().and_then(text), item.get(1))
                else {
                    continue;
                };
                let mut entry = LogEntry {
                    id,
                    seq: 0,
                    tokens: Vec::new(),
                };
                for pair in fields.chunks(2) {
                    match (
                        pair.first().and_then(text).as_deref(),
                        pair.get(1).and_then(text),
                    ) {
                        (Some("seq"), Some(v)) => entry.seq = v.parse().unwrap_or(0),
                        (Some("tokens"), Some(v)) => {
                            entry.tokens = v
                                .split(' ')
                                .filter(|t| !t.is_empty())
                                .map(String::from)
                                .collect();
                        }
                        _ => {}
                    }
                }
                entries.push(entry);
            }
        }
        entries
    }
}

/// The log reader's own connection (opened on first use, dropped after an error so the
/// next read opens a fresh one).
#[derive(Default)]
pub struct LogReader {
    conn: Option<Connection>,
}

impl LogReader {
    fn connection(
        &mut self,
        store: &RedisStore,
        block_ms: u64,
    ) -> Result<&mut Connection, CacheUnavailable> {
        if self.conn.is_none() {
            // Longer than any wait the reader asks for; `read_log` bounds each read itself.
            let patient =
                store.timeout + Duration::from_millis(block_ms).max(Duration::from_secs(60));
            let opening =
                |e: redis::RedisError| CacheUnavailable(format!("opening the log reader: {e}"));
            self.conn = Some(match &store.client {
                Client::Single(client) => Connection::Single(
                    client
                        .get_connection_manager_lazy(
                            store
                                .manager_config
                                .clone()
                                .set_response_timeout(Some(patient)),
                        )
                        .map_err(opening)?,
                ),
                Client::Cluster(cluster) => {
                    // A client of its own: the shared one's response timeout is short.
                    let client = ClusterClient::builder(cluster.3.iter().map(String::as_str))
                        .connection_timeout(store.timeout)
                        .response_timeout(patient)
                        .retries(1)
                        .build()
                        .map_err(opening)?;
                    Connection::Cluster(
                        client.get_pending_async_connection_with_config(
                            ClusterConfig::new()
                                .set_connection_timeout(store.timeout)
                                .set_response_timeout(patient),
                        ),
                    )
                }
            });
        }
        self.conn
            .as_mut()
            .ok_or_else(|| CacheUnavailable("no log reader connection".into()))
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}

/// Reads `keyspace_hits` / `keyspace_misses` out of the text of `INFO stats`.
pub fn parse_info_stats(info: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        info.lines().find_map(|line| {
            line.trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    };
    Some((field("keyspace_hits")?, field("keyspace_misses")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_stats_fields_are_read() {
        let info = "# Stats\r\nkeyspace_hits:42\r\nkeyspace_misses:8\r\nevicted_keys:0\r\n";
        assert_eq!(parse_info_stats(info), Some((42, 8)));
        assert_eq!(parse_info_stats("# Stats\r\n"), None);
    }

    #[test]
    fn cluster_nodes_are_read_with_their_role_and_failure_flag() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
e7d1 127.0.0.1:30001@40001,node-1 myself,master - 0 0 1 connected 0-5460
67ed 10.0.0.2:30002@40002 master,fail - 1426238316232 1426238315230 2 disconnected
ab12 :30009@40009 master,noaddr - 0 0 0 disconnected
";
        assert_eq!(
            parse_cluster_nodes(text),
            vec![
                ClusterNode {
                    address: "127.0.0.1:30004".into(),
                    master: false,
                    failed: false
                },
                ClusterNode {
                    address: "127.0.0.1:30001".into(),
                    master: true,
                    failed: false
                },
                ClusterNode {
                    address: "10.0.0.2:30002".into(),
                    master: true,
                    failed: true
                },
            ]
        );
    }

    #[test]
    fn a_node_address_is_read_as_host_and_port() {
        assert_eq!(
            node_addr("127.0.0.1:30001").unwrap(),
            ConnectionAddr::Tcp("127.0.0.1".into(), 30001)
        );
        assert!(node_addr("nonsense").is_err());
    }
}
