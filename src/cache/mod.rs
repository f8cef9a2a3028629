//! The multi-level Redis cache, as a library the web layer calls and configures
//! (`CacheConfig`): the page cache (`page.rs`, the seed's `cache_page`), the query cache
//! (`query.rs`, the low-level cache behind the seed's `get_all_properties()`), both
//! through one refresh machine (`refresh.rs`) over an in-process tier (`local.rs`,
//! `lease.rs`), invalidation by tokens (`Cache::invalidate`, called by the web layer's
//! model hook: the seed's signals), admin operations (`admin.rs`) and metrics
//! (`metrics.rs`); every Redis command is built in `store.rs`. It knows keys,
//! tokens, Redis, refresh and metrics — nothing of the app state, sessions, routes or
//! request logging: which requests may be cached, what each entry depends on, which
//! tokens a write replaces and what a query loads, the web layer decides
//! (`routes/cacheable/rules.rs`).
//!
//! # Why no reader can serve data older than an acknowledged write
//!
//! **Tokens.** Redis holds the *generation* and *dependency tokens*
//! (`PREFIX:{sync}:generation`, `PREFIX:{sync}:tok:NAME`): random 128-bit values, never
//! reused. Every entry has a fixed list of dependency tokens `D(e)` (from its key alone);
//! its *version* is the values of the generation and of `D(e)` (`version.rs`).
//!
//! **Rule 1 (read before).** An entry is stored with the version its builder read
//! *before* any read of its inputs (PostgreSQL, or another entry).
//! **Rule 2 (match all).** A lookup accepts an entry only if its version equals the
//! tokens' current values (how a lookup knows them: rules 4–6).
//! **Rule 3 (cover).** A write that may change what an entry shows replaces, after its
//! commit and before it is acknowledged, at least one token of that entry's version —
//! one script that also appends the invalidation to the log (`store::invalidate`). Which
//! tokens each write replaces is declared beside what each entry depends on
//! (`routes/cacheable/rules.rs`); every write replaces `rows`, which every query-cache
//! entry depends on.
//!
//! Take an entry `e`, a write that commits at `c`, replaces token `t ∈ D(e)` at `b > c`
//! and is acknowledged after `b`. If `e`'s builder read an input before `c`, it read its
//! version before that (rule 1), so before `b`: `e` carries the old value of `t` and no
//! lookup that knows `t`'s value after `b` accepts it (rule 2) — even if `e` is stored
//! long after `b`. If every input was read after `c`, `e` shows the write. An input that
//! is itself an entry was accepted against its own version when read, so it holds every
//! write replaced before that read; a write replaced after it also comes after `e`'s
//! version was read, and `e` dies with it.
//!
//! **Rule 4 (values current at the request).** A lookup answering a request uses, for
//! each token, a value that includes every replacement acknowledged before the request
//! arrived: read from Redis after it arrived, or known in memory under rule 5.
//!
//! **Rule 5 (the in-process tier: leases and the log).** An instance answers a hit held
//! in memory (`local.rs`) without Redis only while it holds its lease (`lease.rs`):
//! renewed in Redis every quarter lease, and used only until the time the last
//! successful renewal was *sent* plus the lease minus a margin, on its monotonic clock
//! — before Redis (on its own clock) ends it. Each write, after `b`, waits until every
//! instance whose lease has not ended in Redis has acknowledged its log entry. An
//! instance applies each entry, in order, by forgetting the tokens it replaced, then
//! acknowledges. So at any time an instance holding its lease has applied every write
//! acknowledged so far (or it would have stopped: a write waited for it), and what it
//! knows of a token is current for those writes. What it knows comes only from a read
//! of Redis *at the very point of the log it has applied*: the tokens and the log's
//! number are read by one script, and learned only if that number is the one applied,
//! no entry was applied since the read was sent, and the lease holds — so no value
//! known is from a write not yet applied, and every value known is a snapshot of one
//! point of the log. A lease extension is refused to an instance behind what was
//! logged before its previous extension, and to one a write revoked after waiting a
//! lease and a renewal for it (its renewals ran late); an instance whose lease ended in
//! Redis forgets everything and registers again. So a write waits about a lease and a
//! renewal at most for an instance that is paused, cut off or not reading (a lease more
//! when revoking), and such an instance never answers from memory afterwards without
//! having caught up.
//!
//! **Rule 6 (within one request).** A read-only request uses the first value it got of
//! each token for all its lookups (`request.rs`). Once it has read a token from Redis,
//! it takes nothing more from memory: a value read there may be newer than what the
//! instance knows, and a tag must never be newer than what it is built from (a page
//! tagged with a newer token than the `all_properties` it was built from would pass old
//! rows off as current). A page's tokens are read before its inputs' tokens, so an input
//! is never read under older values than its page's.
//!
//! **Lost keys: eviction, `cache clear`, restarts.** Any key may vanish (every Redis the
//! project starts evicts). An *entry* lost is a miss. A *token* or the *generation* is
//! never recreated with an old value: a lookup's version holds a fresh marker in its
//! place, which no stored entry carries; the entry built under it is stored only if
//! `SET NX` can make the token that marker; a missing generation is started with `SET
//! NX`. A lost *refresh lock* lets a second build run, checked like any other; a lost
//! `:stored` counter only makes the dashboard's count low. The *leases' hash* holds when
//! it was born: a writer that finds it younger than a lease waits until it is a lease
//! old (instances of the lost hash may still answer until then; they cannot renew
//! there, and forget everything when they register again); the log is numbered in the
//! hash, so a lost or trimmed *log* shows as a gap, and the reader forgets everything.
//! A broken connection to the log, or a renumbered log, does the same.
//!
//! **Faults.** When an invalidation cannot be written (Redis unreachable), the write is
//! still committed; it is acknowledged a lease and a renewal after it started, when
//! every instance that cannot reach Redis either has stopped answering from memory.
//! This instance marks an invalidation *pending*: it serves nothing from Redis until a
//! retry (inline, and in the background every 250 ms) has replaced the *generation*,
//! which is in every version and so covers every token a lost write would have replaced.
//! Any Redis failure marks it pending too, so an instance that saw an outage starts from
//! a fresh generation afterwards (another instance may have written during it); so does
//! every process at start. Instances that still reach Redis while the writer cannot are
//! the one case not covered (README, "What is not promised").
//!
//! **Redis Cluster.** The tokens, the generation, the leases' hash and the log share one
//! hash tag, so a write's replacements and its log entry are one atomic script, and so
//! is a read of tokens with the log's number. Entries spread over the other slots: a
//! lookup reads an entry beside its tokens, not atomically with them, which is
//! concurrent with any write whose acknowledgment had not happened. Replication is
//! asynchronous: after a write, and after every lease renewal, the cache waits (`WAIT`)
//! for a replica of that slot's master; an unconfirmed write is a failed one (the fault
//! rule above), an unconfirmed renewal extends nothing. A failover of that master breaks
//! the log reader's connection, and every instance forgets what it knew.
//!
//! # Read replicas: why a refill that read a replica holds every write its tokens carry
//!
//! With streaming replicas of the source (`DATABASE_REPLICA_URLS`), a build may read one
//! that lags the primary; rules 1–3 alone would then certify rows older than a write
//! whose tokens the entry carries. So tokens carry *positions* in the source's log (an
//! LSN, compared as a number; `version.rs`):
//!
//! **Rule 7 (positions).** A write, after its commit and on its connection, reads the
//! log's insert position `P` (`pg_current_wal_insert_lsn()`): its commit record ends at
//! or before `P`. Its token replacement (rule 3) gives each token a new value carrying
//! the higher of `P` and the position the replaced value carried — in the same script,
//! so a token's position is at least that of every write that ever replaced it, even
//! when two writes reach Redis in the other order than they committed.
//! **Rule 8 (the check).** A build may read a replica only if every value of its version
//! carries a position; it needs their highest, `N` (`source.rs`: the refresh machine
//! runs each build in that scope). On the connection it then reads with, in a statement
//! of its own before the read's, the replica must answer that it is in recovery and has
//! replayed (`pg_last_wal_replay_lsn()`) at least `N`; otherwise the primary is read
//! (`db::replicas`). Reads outside builds — writes, admin pages, sign-in — use the
//! primary.
//!
//! Take a write `w` acknowledged before a build's lookup read its version, that may
//! change what the entry shows (a later one is rules 1–3's: the entry dies with it). By
//! rule 3 it replaced a token `t` of the entry before its acknowledgment, so the lookup
//! read `w`'s value of `t` or a later one, which carries at least `P(w)` (rule 7): `N ≥
//! P(w)`. The replica had replayed past `N`, so past `w`'s commit record, before the
//! read's statement started; each statement outside a transaction takes its own snapshot
//! when it starts, so the read sees `w`. The traps:
//! - *The snapshot taken before the check*: a check inside the read's statement, or a
//!   transaction begun before it, could read a snapshot older than the answer. The check
//!   is a statement of its own, and a read's transaction (if it opens one) begins after.
//! - *`synchronous_commit = off`*: `COMMIT` returns before the commit record is flushed,
//!   and the flushed position (`pg_current_wal_lsn()`) may still be short of it; the
//!   insert position is not. A replica cannot replay what is not flushed, so this only
//!   delays it.
//! - *Equality*: the replay position is the end of the last record replayed, and `P` is
//!   at or past the end of the commit record, so `replayed = P` has replayed it: `≥` is
//!   right. (`P` may lie past a page header with no record after it; then a replica stays
//!   short of it until the next record — reads go to the primary meanwhile.)
//! - *A timeline switch after a promotion*: a promoted server answers that it is not in
//!   recovery and is not used: positions on its new timeline say nothing of the
//!   primary's writes. A restarted replica reports what it has replayed now; the check
//!   runs on every read and nothing remembered from before lets a read through.
//!
//! **Missing tokens.** A version with a marker (a token missing: expired, evicted, `cache
//! clear`) carries no position for it, so its build reads the primary; the token is then
//! created with its marker carrying the primary's insert position read when the entry is
//! stored — after the lookup, so past every write acknowledged before it (a write after
//! the lookup that replaced the token makes the `SET NX` fail: "Lost keys"). A new
//! generation carries the position read when it is started — for a flush ("Faults"),
//! after the write that could not be reported had committed. A write whose own position
//! could not be read uses the primary's position read afterwards; if that fails too its
//! tokens carry none (their builds read the primary) and this instance flushes, with a
//! new generation carrying a position read once the primary answers. (Not covered: a
//! concurrent write replacing such a token meanwhile gives it its own, possibly lower,
//! position, so until that generation is out a replica could be read short of the
//! unknown write — only when the primary stops answering between a commit and the next
//! statement; README, "What is not promised".) Without replicas nothing reads positions
//! but the writes.

pub mod admin;
pub mod config;
pub mod entry;
pub mod flight;
pub mod keys;
pub mod lease;
pub mod local;
pub mod metrics;
pub mod page;
pub mod query;
pub mod refresh;
pub mod request;
pub mod source;
pub mod store;
pub mod version;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::web::Bytes;

pub use admin::{KEY_LISTING_REUSE, KeyInfo, KeyListing};
pub use entry::Entry;
pub use keys::Keys;
use metrics::Metrics;
pub use store::{CacheUnavailable, RedisStore};
pub use version::Version;

pub use config::{CacheConfig, RedisTarget};
use flight::SingleFlight;
use local::LocalTier;

/// How long the refresh lock of an expired entry is held at most.
const REFRESH_LOCK_MS: u64 = 10_000;

/// The generation's name among token names (`Cache::lookup`; dependency token names are
/// the app's, and hold no parenthesis).
const GENERATION: &str = "(generation)";

/// About how many invalidations the log keeps: an instance further behind than that
/// sees a gap and drops what it knows.
const LOG_LENGTH: u64 = 1000;

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    store: RedisStore,
    keys: Keys,
    metrics: Arc<Metrics>,
    grace: Duration,
    /// How long a token lives: twice the longest an entry may (`token_lifetime_ms`).
    token_lifetime_ms: u64,
    /// `PREFIX:NAME` of the app's named entries (`CacheConfig::named_entries`).
    named_entries: Vec<String>,
    /// `Cache-Status` values, by outcome (`page::cache_status`).
    pub(crate) status: page::StatusHeaders,
    invalidation_pending: AtomicBool,
    /// Replicas that must confirm a token replacement (`Settings::redis_wait_replicas`).
    wait_replicas: u32,
    flush_lock: tokio::sync::Mutex<()>,
    local: LocalTier,
    /// This instance's lease, when it answers from memory (`CacheConfig::hold_lease`).
    lease: Option<lease::Lease>,
    /// How long a lease lasts (every instance's: writers wait at most about that long).
    lease_length: Duration,
    /// Writes of this process waiting for acknowledgments.
    acks: lease::Acks,
    /// Builds under way in this instance, by generation and key (`refresh.rs`).
    flights: SingleFlight<Option<Arc<Entry>>>,
    /// Where the source's write log stands now, when builds may read replicas
    /// (`Cache::use_source_position`).
    source_position: std::sync::OnceLock<source::PositionSource>,
    /// The last key listing (when, for which limit, what): see `list_keys`.
    key_listing: tokio::sync::Mutex<Option<(std::time::Instant, usize, KeyListing)>>,
}

/// The result of a token-checked lookup.
pub enum Lookup {
    /// An entry built under exactly the tokens' current values (its `version`); `true`
    /// when answered from memory, without a command to Redis.
    Found(Arc<Entry>, bool),
    /// No such entry; `version` holds the tokens' current values.
    Missing { version: Version },
}

impl Lookup {
    pub fn entry(&self) -> Option<&Arc<Entry>> {
        match self {
            Self::Found(entry, _) => Some(entry),
            Self::Missing { .. } => None,
        }
    }

    /// The tokens' values at lookup time (the generation, then each dependency): tag
    /// the entry built from this lookup with it.
    pub fn version(&self) -> &Version {
        match self {
            Self::Found(entry, _) => &entry.version,
            Self::Missing { version } => version,
        }
    }

    /// Whether it was answered from memory, without a command to Redis.
    pub fn from_memory(&self) -> bool {
        matches!(self, Self::Found(_, true))
    }

    /// `version`, owned.
    pub fn into_version(self) -> Version {
        match self {
            Self::Found(entry, _) => entry.version.clone(),
            Self::Missing { version } => version,
        }
    }
}

/// One entry: its key, the dependency tokens it is built under, how long it is fresh
/// (Redis keeps it `ttl` + grace), and its layer (pages are stored with pre-compressed
/// variants; query-cache values are kept decoded in memory as well).
#[derive(Clone, Copy)]
pub struct Slot<'a> {
    pub key: &'a str,
    pub deps: &'a [&'a str],
    pub ttl: Duration,
    pub layer: metrics::Layer,
}

/// How a current-generation entry may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past its TTL, inside the grace period.
    Expired,
}

impl Cache {
    /// `on_redis_time` is told how long each Redis command took (for `Server-Timing`).
    pub fn new(
        config: CacheConfig,
        metrics: Arc<Metrics>,
        on_redis_time: fn(Duration),
    ) -> anyhow::Result<Self> {
        let store = match &config.redis {
            RedisTarget::Single(url) => {
                RedisStore::new(url, config.redis_timeout, metrics.clone(), on_redis_time)?
            }
            RedisTarget::Cluster(urls) => {
                log::info!("redis cluster mode, seed nodes {}", urls.join(", "));
                RedisStore::new_cluster(urls, config.redis_timeout, metrics.clone(), on_redis_time)?
            }
        };
        let keys = Keys::new(config.key_prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                named_entries: config.named_entries.iter().map(|n| keys.named(n)).collect(),
                keys,
                metrics,
                grace: config.grace,
                token_lifetime_ms: 2 * (config.longest_ttl + config.grace).as_millis() as u64,
                status: page::StatusHeaders::new(&config.status_name),
                // Start from a fresh generation: entries written before this process
                // started may predate writes made while no instance could reach Redis.
                invalidation_pending: AtomicBool::new(true),
                wait_replicas: config.wait_replicas,
                flush_lock: tokio::sync::Mutex::new(()),
                local: LocalTier::new(config.local_bytes),
                lease: (config.hold_lease && config.local_bytes > 0)
                    .then(|| lease::Lease::new(config.lease)),
                lease_length: config.lease,
                acks: lease::Acks::default(),
                flights: SingleFlight::default(),
                source_position: std::sync::OnceLock::new(),
                key_listing: tokio::sync::Mutex::default(),
            }),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Builds may read replicas of the source: tokens created without a write (a missing
    /// token's marker, a new generation) carry the position `current` reads then (see
    /// "Read replicas" in the module docs). Set once, at start.
    pub fn use_source_position(&self, current: source::PositionSource) {
        let _ = self.inner.source_position.set(current);
    }

    /// The source's position now, if builds may read replicas and it can be read.
    async fn source_position(&self) -> Option<u64> {
        match self.inner.source_position.get() {
            Some(current) => current().await,
            None => None,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn store(&self) -> &RedisStore {
        &self.inner.store
    }

    pub(crate) fn flights(&self) -> &SingleFlight<Option<Arc<Entry>>> {
        &self.inner.flights
    }

    /// Whether this instance may answer hits from memory now (`lease.rs`).
    pub fn holds_lease(&self) -> bool {
        self.inner.lease.as_ref().is_some_and(|l| l.holds())
    }

    /// `PREFIX:NAME` of the app's named entries (`CacheConfig::named_entries`).
    pub fn named_entries(&self) -> &[String] {
        &self.inner.named_entries
    }

    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// For a short-lived command (`cache purge`), not a server: it has served nothing,
    /// so it missed no write while Redis was unreachable and need not start a new
    /// generation (which would drop every cached page). A failure afterwards still marks
    /// an invalidation pending.
    pub fn skip_start_invalidation(&self) {
        self.inner
            .invalidation_pending
            .store(false, Ordering::SeqCst);
    }

    /// Whether an invalidation still has to reach Redis (the cache is bypassed meanwhile).
    pub fn invalidation_pending(&self) -> bool {
        self.inner.invalidation_pending.load(Ordering::SeqCst)
    }

    /// The entry of `slot` if it was built under exactly the current values of its
    /// tokens — the generation, then `slot.deps` — else those values (the version to
    /// build it under). Token values come first from this request's memory (`request.rs`),
    /// then, while this instance holds its lease, from what it knows (`local.rs`), and
    /// the rest from Redis — in one `MGET` with the entry when this process does not hold
    /// it. A hit held in memory whose tokens are all known sends nothing to Redis. A
    /// missing token is started with a fresh value (never matched).
    pub async fn lookup(&self, slot: &Slot<'_>) -> Result<Lookup, CacheUnavailable> {
        self.ensure_no_pending_invalidation().await?;
        let id = self.inner.store.id();
        let mut names: Vec<&str> = Vec::with_capacity(slot.deps.len() + 1);
        names.push(GENERATION);
        names.extend_from_slice(slot.deps);
        let mut values: Vec<Option<Arc<str>>> =
            names.iter().map(|name| request::recall(id, name)).collect();
        let recalled: Vec<bool> = values.iter().map(Option::is_some).collect();
        // Known values only while the lease holds, and not once this request has read
        // Redis (a value read there may be newer than what this instance knows, and a
        // tag must never be newer than what it is built from).
        let holds =
            self.inner.lease.as_ref().is_some_and(|l| l.holds()) && !request::has_read_redis();
        let probe = self.inner.local.probe(slot.key, &names, &mut values, holds);
        let remember_known = |values: &[Option<Arc<str>>]| {
            for ((name, value), recalled) in names.iter().zip(values).zip(&recalled) {
                if let (Some(value), false) = (value, recalled) {
                    request::remember(id, name, value);
                }
            }
        };
        let unknown: Vec<usize> = (0..names.len()).filter(|&i| values[i].is_none()).collect();
        if unknown.is_empty() {
            if let Some(held) = probe.entry {
                // Compared in place: a hit from memory builds nothing.
                if held
                    .version
                    .matches(values.iter().map(|v| v.as_deref().map(str::as_bytes)))
                {
                    // A page answered from memory is the request's last lookup: nothing
                    // to remember for later ones.
                    if !matches!(slot.layer, metrics::Layer::Page) {
                        remember_known(&values);
                    }
                    self.inner.metrics.memory_hit(slot.layer);
                    return Ok(Lookup::Found(held, true));
                }
                // Built under older tokens than the current ones: never used again.
                self.inner.local.remove(slot.key);
            }
            remember_known(&values);
            let version = Version::of(values.iter().map(|v| Ok(v.as_deref().unwrap_or(""))));
            let raw = self.track(self.store().get(slot.key).await)?;
            return Ok(self.found_or_missing(slot, raw, version));
        }
        remember_known(&values);
        // The tokens not known yet, and the entry unless it is held, in one read.
        let keys: Vec<String> = unknown.iter().map(|&i| self.token_key(names[i])).collect();
        let entry_key = probe.entry.is_none().then_some(slot.key);
        let read = self
            .store()
            .read_tokens(self.keys().sync(), &keys, entry_key)
            .await;
        let read = self.track(read)?;
        request::read_redis();
        for (&i, value) in unknown.iter().zip(read.values) {
            values[i] = value.and_then(|v| String::from_utf8(v).ok()).map(Arc::from);
            if let Some(value) = &values[i] {
                request::remember(id, names[i], value);
            }
        }
        // Learned only as of the very point of the log this instance has applied: no
        // write it has not applied had replaced any of them (see "The in-process tier"
        // in the module docs).
        if let Some(lease) = &self.inner.lease
            && lease.holds()
            && read.at == Some(lease.position())
        {
            self.inner.local.learn(
                probe.epoch,
                unknown
                    .iter()
                    .filter_map(|&i| Some((names[i], values[i].clone()?))),
            );
        }
        let raw = read.entry;
        let version = self.version(&names, &values).await?;
        match probe.entry {
            Some(held) if held.version == version => Ok(Lookup::Found(held, false)),
            Some(_) => {
                self.inner.local.remove(slot.key);
                let raw = self.track(self.store().get(slot.key).await)?;
                Ok(self.found_or_missing(slot, raw, version))
            }
            None => Ok(self.found_or_missing(slot, raw, version)),
        }
    }

    /// The entry read from Redis if it was built under `version` (then kept in memory
    /// too), else `Missing`.
    fn found_or_missing(&self, slot: &Slot<'_>, raw: Option<Vec<u8>>, version: Version) -> Lookup {
        match raw.and_then(Entry::decode).filter(|e| e.version == version) {
            Some(entry) => {
                let entry = Arc::new(entry);
                self.keep_locally(slot, entry.clone());
                Lookup::Found(entry, false)
            }
            None => Lookup::Missing { version },
        }
    }

    /// The Redis key of the token named `name` (`GENERATION`: the generation).
    fn token_key(&self, name: &str) -> String {
        if name == GENERATION {
            self.keys().generation().to_string()
        } else {
            self.keys().token(name)
        }
    }

    /// The version of the tokens' values (in `names`' order). A missing generation is
    /// started at once (one key; not remembered, so the request's next lookup reads it
    /// again and finds this value or a newer one). A missing dependency token is *not*
    /// created here — a lookup of a page that will not be stored (a 404 for any id one
    /// cares to type) must not add keys — but stands as a marker (`version.rs`), which
    /// `put` creates the token with when, and only if, it stores an entry built under it.
    async fn version(
        &self,
        names: &[&str],
        values: &[Option<Arc<str>>],
    ) -> Result<Version, CacheUnavailable> {
        let started = match values.first() {
            Some(None) => Some(self.start_generation().await?),
            _ => None,
        };
        let keys: Vec<String> = names
            .iter()
            .zip(values)
            .map(|(name, value)| match value {
                Some(_) => String::new(),
                None => self.token_key(name),
            })
            .collect();
        Ok(Version::of(values.iter().zip(&keys).enumerate().map(
            |(i, (value, key))| match (value, &started) {
                (Some(value), _) => Ok(value.as_ref()),
                (None, Some(generation)) if i == 0 => Ok(generation.as_str()),
                (None, _) => Err((key.as_str(), new_token())),
            },
        )))
    }

    /// Keeps an entry in this process for as long as Redis keeps it.
    fn keep_locally(&self, slot: &Slot<'_>, entry: Arc<Entry>) {
        let keep_until = entry.stored_at_ms + (slot.ttl + self.inner.grace).as_millis() as i64;
        let decoded_too = matches!(slot.layer, metrics::Layer::Query);
        self.inner
            .local
            .insert(slot.key, entry, keep_until, decoded_too);
    }

    /// Builds an entry under `version` (with pre-compressed variants for a page) and
    /// stores it; Redis keeps it
    /// `ttl + grace`, and counts it against each of its dependency tokens (how many
    /// stored entries a replacement of that token makes unreachable: the dashboard
    /// shows it). A dependency token that was missing at lookup (`~KEY=MARKER` in the
    /// version) is created with its marker (`SET NX`, in one `MULTI` with the entry, so
    /// no lookup finds the token without the entry and starts a build of its own); if
    /// another value got there first (a write replaced it meanwhile), the entry is dead
    /// on arrival and counts as not stored. The entry is returned also when it was not
    /// stored, with the reason.
    pub async fn put(
        &self,
        slot: &Slot<'_>,
        version: &Version,
        content_type: &str,
        body: Bytes,
    ) -> (Arc<Entry>, Result<(), CacheUnavailable>) {
        let position = match version.has_markers() {
            true => self.source_position().await,
            false => None,
        };
        let (version, missing) = version.settle(position);
        let compress = matches!(slot.layer, metrics::Layer::Page);
        let entry = Arc::new(Entry::build(&version, content_type, body, compress));
        let lifetime = self.token_lifetime_ms();
        let keep = (slot.ttl + self.inner.grace).as_millis() as u64;
        let counters: Vec<String> = slot
            .deps
            .iter()
            .map(|name| self.keys().token_count(name))
            .collect();
        let stored = self
            .store()
            .store_entry(
                &missing,
                slot.key,
                &entry.encode(),
                keep,
                &counters,
                lifetime,
            )
            .await;
        match self.track(stored) {
            Ok(true) => {
                self.keep_locally(slot, entry.clone());
                (entry, Ok(()))
            }
            Ok(false) => (
                entry,
                Err(CacheUnavailable("a token changed meanwhile".into())),
            ),
            Err(e) => (entry, Err(e)),
        }
    }

    pub fn freshness(&self, entry: &Entry, ttl: Duration) -> Freshness {
        if entry.age_ms(entry::now_ms()) < ttl.as_millis() as i64 {
            Freshness::Fresh
        } else {
            Freshness::Expired
        }
    }

    /// Takes the right to refresh an expired entry (others serve it stale meanwhile).
    pub async fn try_refresh_lock(&self, key: &str) -> bool {
        let lock = self.keys().refresh_lock(key);
        let taken = self.store().set_nx_px(&lock, REFRESH_LOCK_MS).await;
        matches!(self.track(taken), Ok(true))
    }

    pub async fn release_refresh_lock(&self, key: &str) {
        let released = self.store().del(&self.keys().refresh_lock(key)).await;
        let _ = self.track(released);
    }

    /// The invalidation after a committed write (the model hook's): a new value for each
    /// token named in `tokens` (list the tokens of entries that others are built from
    /// first: in a cluster they are replaced in that order; see the module docs), the
    /// app's named entries deleted, the invalidation logged, and a wait until every
    /// instance has applied it (or its lease has ended). Returns whether it reached
    /// Redis; if not, an invalidation is pending (the generation will be replaced, which
    /// covers these tokens and more) and the cache is bypassed meanwhile. `position`:
    /// where the write committed in the source's log, when it is known (see "Read
    /// replicas" in the module docs); else the source's position now is used, if it can
    /// be read.
    pub async fn invalidate(&self, tokens: &[String], position: Option<u64>) -> bool {
        // Whatever happens, this request reads every token afresh from now on.
        request::forget();
        if self.invalidation_pending() {
            return self.ensure_no_pending_invalidation().await.is_ok();
        }
        let since = std::time::Instant::now();
        let position = match position {
            Some(position) => Some(position),
            None => self.source_position().await,
        };
        match self.replace(tokens, position).await {
            Ok(stored) => {
                if position.is_none() && self.inner.source_position.get().is_some() {
                    // Builds may read replicas, and where this write committed is not
                    // known: a new generation will carry a position read after it (see
                    // "Read replicas" in the module docs).
                    log::warn!("a write's position is unknown: starting a new generation");
                    self.inner
                        .invalidation_pending
                        .store(true, Ordering::SeqCst);
                }
                self.inner.metrics.invalidation();
                self.inner
                    .metrics
                    .record_invalidation(tokens.iter().cloned().zip(stored).collect());
                true
            }
            Err(_) => {
                log::warn!("invalidation could not reach redis; bypassing the cache until it does");
                // No instance learned of it: the write is acknowledged once every
                // instance that cannot reach Redis either has stopped answering from
                // memory (see "Faults" in the module docs).
                tokio::time::sleep_until((since + self.lease_bound()).into()).await;
                false
            }
        }
    }

    /// Replaces the tokens named (`GENERATION`: the generation) and deletes the named
    /// entries, logging it, in one `MULTI` (`RedisStore::replace_tokens`); waits for the
    /// configured replicas to have it (`WAIT`: a replacement a failover could lose counts
    /// as failed), then for every instance to have applied it. How many stored entries
    /// each replaced token made unreachable.
    async fn replace(
        &self,
        names: &[String],
        position: Option<u64>,
    ) -> Result<Vec<u64>, CacheUnavailable> {
        let pairs: Vec<(String, String)> = names
            .iter()
            .map(|name| (self.token_key(name), new_token()))
            .collect();
        let counters: Vec<String> = names.iter().map(|n| self.keys().token_count(n)).collect();
        let since = std::time::Instant::now();
        let replaced = self
            .store()
            .invalidate(
                self.keys().sync(),
                self.keys().log(),
                &pairs,
                &counters,
                &names.join(" "),
                position,
                self.token_lifetime_ms(),
                LOG_LENGTH,
                self.token_lifetime_ms(),
            )
            .await;
        let (counts, appended) = self.track(replaced)?;
        if !self.inner.named_entries.is_empty() {
            let deleted = self.store().unlink(&self.inner.named_entries).await;
            self.track(deleted)?;
        }
        let replicated = self
            .store()
            .wait_for_replicas(&[self.keys().sync().to_string()], self.inner.wait_replicas)
            .await;
        self.track(replicated)?;
        self.inner.local.forget(names);
        self.wait_for_acknowledgments(appended, since).await;
        Ok(counts)
    }

    /// The longest an instance that stopped hearing from Redis may still answer from
    /// memory, counted from the last renewal it sent before: a lease, a renewal period,
    /// and the margin (`lease.rs`).
    fn lease_bound(&self) -> Duration {
        let length = self.inner.lease_length;
        length + length / 4 + (length / 10).max(Duration::from_millis(20))
    }

    /// How long a dependency token lives: twice the longest an entry may (a token that
    /// expires is started afresh, which only retires its entries early).
    fn token_lifetime_ms(&self) -> u64 {
        self.inner.token_lifetime_ms
    }

    /// Retries a pending invalidation; called by lookups and by a background task.
    pub async fn ensure_no_pending_invalidation(&self) -> Result<(), CacheUnavailable> {
        if !self.invalidation_pending() {
            return Ok(());
        }
        // One flush at a time: requests and the background retrier that all saw the flag
        // would otherwise each replace the token, and every replacement after the first
        // throws away entries stored under the one before.
        let _flushing = self.inner.flush_lock.lock().await;
        if !self.invalidation_pending() {
            return Ok(());
        }
        if self.replace_generation().await {
            self.inner.metrics.invalidation();
            log::info!("pending cache invalidation applied");
            Ok(())
        } else {
            Err(CacheUnavailable("invalidation pending".into()))
        }
    }

    async fn replace_generation(&self) -> bool {
        // Whatever happens, this request reads every token afresh from now on.
        request::forget();
        // Read after the write that could not be reported had committed: the new
        // generation carries a position past it.
        let position = self.source_position().await;
        if position.is_none() && self.inner.source_position.get().is_some() {
            return false;
        }
        if self
            .replace(&[GENERATION.to_string()], position)
            .await
            .is_err()
        {
            return false;
        }
        self.inner
            .invalidation_pending
            .store(false, Ordering::SeqCst);
        true
    }

    /// A missing generation (evicted, Redis restarted, cache cleared) gets a fresh,
    /// never-used token; when several instances race, `SET NX GET` makes them agree.
    async fn start_generation(&self) -> Result<String, CacheUnavailable> {
        let token = version::with_position(&new_token(), self.source_position().await);
        let existing = self
            .store()
            .set_nx_get(self.keys().generation(), &token, self.token_lifetime_ms())
            .await;
        Ok(self.track(existing)?.unwrap_or(token))
    }

    /// A command's result, with any failure marking an invalidation pending (see the
    /// module docs).
    fn track<T>(&self, result: Result<T, CacheUnavailable>) -> Result<T, CacheUnavailable> {
        if result.is_err() {
            self.inner
                .invalidation_pending
                .store(true, Ordering::SeqCst);
            request::forget();
        }
        result
    }

    /// Deletes one key (an entry purged by hand); failures are counted, not returned.
    pub async fn forget(&self, key: &str) {
        let _ = self.track(self.store().del(key).await);
        self.inner.local.remove(key);
    }

    pub async fn ping(&self) -> bool {
        self.store().ping().await
    }

    /// Retries pending invalidations in the background, so an instance that wrote
    /// during an outage cleans up as soon as Redis answers, even without traffic.
    pub fn spawn_invalidation_retrier(&self) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if cache.invalidation_pending() && !cache.store().circuit_open() {
                    let _ = cache.ensure_no_pending_invalidation().await;
                }
            }
        })
    }
}

/// A fresh, never-reused token (128 random bits, hex).
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
