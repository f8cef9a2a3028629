//! The multi-level Redis cache, as a library the web layer calls: the page cache
//! (`page.rs`, the seed's `cache_page`), the query cache (`query.rs`, the low-level
//! cache behind the seed's `get_all_properties()`), both through one refresh machine
//! (`refresh.rs`), invalidation by tokens (`Cache::invalidate`, called by the web
//! layer's model hook: the seed's signals) and metrics (`metrics.rs`). It knows keys,
//! tokens, Redis, refresh and metrics — nothing of the app state, sessions, routes or
//! request logging: which requests may be cached, what each entry depends on, which
//! tokens a write replaces and what a query loads, the web layer decides
//! (`routes/cacheable/rules.rs`).
//!
//! # Why no reader can serve data older than an acknowledged write
//!
//! **Tokens.** Redis holds the *generation* (`PREFIX:generation`) and *dependency
//! tokens* (`PREFIX:tok:NAME`): random 128-bit values, never reused. Every entry has a
//! fixed list of dependency tokens `D(e)` (from its key alone); its *version* is the
//! values of the generation and of `D(e)`.
//!
//! **Rule 1 (read before).** An entry is stored with the version its builder read
//! *before* any read of its inputs (PostgreSQL, or another entry).
//! **Rule 2 (match all).** A lookup reads the version and the entry in one `MGET` and
//! accepts the entry only if the two versions are equal.
//! **Rule 3 (cover).** A write that may change what an entry shows replaces, after its
//! commit and before it is acknowledged, at least one token of that entry's version
//! (one `MULTI` that also deletes the app's named entries, e.g. `PREFIX:all_properties`).
//! Query-cache entries depend
//! on `rows`, which every write replaces; which pages a write may change is declared
//! beside what pages depend on (`routes/cacheable/rules.rs`).
//!
//! Take an entry `e`, a write that commits at `c`, replaces token `t ∈ D(e)` at `b > c`
//! and is acknowledged after `b`. If `e`'s builder read an input before `c`, it read its
//! version before that (rule 1), so before `b`: `e` carries the old value of `t` and no
//! lookup after `b` accepts it (rule 2) — even if it is stored long after `b`. If every
//! input was read after `c`, `e` shows the write. An input that is itself an entry was
//! accepted against its own version when read (rule 2), so it holds every write whose
//! replacement came before that read; a write whose replacement came after it also
//! comes after `e`'s version was read, and `e` dies with it. So from `b` on no lookup, in
//! any instance, accepts data that misses the write (rule 3 makes `t` exist for every
//! entry the write may change).
//!
//! **Lost tokens.** A token is random, never a counter, so a value once replaced never
//! comes back. A missing dependency token (expired, evicted, Redis restarted, `cache
//! clear`) is not recreated by a lookup: the lookup's version holds a fresh random
//! marker in its place, which no stored entry carries; the entry built under it is
//! stored only if `SET NX` can make the token that marker (a write that set it first
//! wins, and the entry is dropped). A missing generation is started with `SET NX`.
//! Tokens expire after twice the longest entry lifetime; entries never outlive them.
//!
//! **Eviction.** Redis may run with `maxmemory` and evict any key at any time (every
//! Redis the project starts does). Each kind is covered: an evicted *entry* is a miss; an
//! evicted *token* or *generation* is a lost token (above: never recreated with an old
//! value, so no entry stored under the old one is accepted again); an evicted *refresh
//! lock* lets a second build run, whose entry obeys rules 1–3 like any other; an evicted
//! `:stored` counter only makes the dashboard's count low. Nothing else the cache keeps
//! in Redis decides what a reader sees. An eviction during a write's `MULTI` cannot undo
//! it: a replaced token that is then evicted is lost, not restored.
//!
//! **Faults.** When the replacement fails (Redis unreachable), the write is still
//! committed and acknowledged, so this instance marks an invalidation *pending*: it
//! serves nothing from Redis until a retry (inline, and in the background every 250 ms)
//! has replaced the *generation*, which is in every version and so covers every token a
//! lost write would have replaced. Any Redis failure marks it pending too, so an
//! instance that saw an outage starts from a fresh generation afterwards (another
//! instance may have written during that outage); so does every process at start.
//!
//! **Redis Cluster.** Tokens carry their name as hash tag, so they spread over the
//! masters; an entry and its tokens may live in different slots. A lookup then reads
//! them with one `MGET` per slot, not atomically, and a write replaces its tokens with
//! one command each, all before it is acknowledged. A lookup that sees a token before
//! its replacement and the entry after (or the reverse) was concurrent with the write,
//! whose acknowledgment had not happened, so answering with the older data is allowed.
//! But the replacements must land *in order*, the tokens of entries that others are
//! built from (query results: `rows`) before the tokens of pages: were a page's token
//! replaced first, a build could read the page's new token, then accept a query result
//! under the old `rows` — rows from before the commit, now tagged as current. So they
//! are sent one after another, each once the one before has landed, inputs first (the
//! caller's order); then rule 1's argument holds with `b` the replacement of the
//! page's token, since every input token was replaced before it. Replication is
//! asynchronous, so a replacement could die with its master and the promoted replica would accept old entries again: after
//! replacing tokens the cache waits (`WAIT`) for a replica of each written slot's
//! master; an unconfirmed replacement is a failed one (the fault rule above).
//!
//! **In-process tier.** An entry this process holds (`local.rs`) is the entry Redis
//! holds, version included; using it is a lookup that reads only the tokens, with the
//! same rule 2. The tokens may come from a read shared by several requests
//! (`batch.rs`), but only from one *sent after the request arrived*: its values
//! include every replacement acknowledged before the request began, which is all the
//! argument above asks of a lookup. A request never takes a read already on the wire.
//!
//! **Within one request.** A read-only request reads each token at most once and uses
//! that value for all its lookups (`request.rs`); a token it found missing is read
//! again. Every value was read after the request arrived, so the request is answered as
//! of those reads. And a tag is never newer than what it is built from: a page's tokens
//! are read by its lookup, before the lookups of its inputs, and an input is accepted
//! only under the values first read, never a newer one (a page tagged with a newer
//! token than the `all_properties` it was built from would pass old rows off as
//! current).

pub mod admin;
pub mod batch;
pub mod config;
pub mod entry;
pub mod flight;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod page;
pub mod query;
pub mod refresh;
pub mod request;
pub mod store;
pub mod version;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::FutureExt;

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
    /// Builds under way in this instance, by generation and key (`refresh.rs`).
    flights: SingleFlight<Option<Arc<Entry>>>,
    /// The last key listing (when, for which limit, what): see `list_keys`.
    key_listing: tokio::sync::Mutex<Option<(std::time::Instant, usize, KeyListing)>>,
}

/// The result of a token-checked lookup.
pub enum Lookup {
    /// An entry built under exactly the tokens' current values (its `version`).
    Found(Arc<Entry>),
    /// No such entry; `version` holds the tokens' current values.
    Missing { version: Version },
}

impl Lookup {
    pub fn entry(&self) -> Option<&Arc<Entry>> {
        match self {
            Self::Found(entry) => Some(entry),
            Self::Missing { .. } => None,
        }
    }

    /// The tokens' values at lookup time (the generation, then each dependency): tag
    /// the entry built from this lookup with it.
    pub fn version(&self) -> &Version {
        match self {
            Self::Found(entry) => &entry.version,
            Self::Missing { version } => version,
        }
    }

    /// `version`, owned.
    pub fn into_version(self) -> Version {
        match self {
            Self::Found(entry) => entry.version.clone(),
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
                flights: SingleFlight::default(),
                key_listing: tokio::sync::Mutex::default(),
            }),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
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

    /// Reads the tokens `key` depends on — the generation, then the dependency tokens
    /// named in `deps` — and `key` itself in one round trip (`MGET`); when this process
    /// still holds the entry (`local.rs`), only the tokens are read (batched:
    /// `batch.rs`). The entry is accepted only if it was built under exactly the
    /// values read. A missing token is started with a fresh value (never matched).
    ///
    /// A read-only request (`request::request_scope`) reads each token once: its
    /// later lookups use the value it read first, and read only tokens it has not read
    /// yet ("Within one request" in the module docs).
    pub async fn lookup(&self, slot: &Slot<'_>) -> Result<Lookup, CacheUnavailable> {
        let (key, deps) = (slot.key, slot.deps);
        self.ensure_no_pending_invalidation().await?;
        let id = self.inner.store.id();
        let mut tokens = self.token_keys(deps);
        let mut known = request::recall(id, &tokens);
        if let Some(local) = self.inner.local.get(key) {
            let all_known = known.iter().all(Option::is_some);
            let none_known = known.iter().all(Option::is_none);
            if !all_known {
                // Read the rest (batched) and remember them for this request.
                let unknown = if none_known {
                    // Handed over, not copied (a hit's usual path); rebuilt if needed.
                    std::mem::take(&mut tokens)
                } else {
                    unknown_keys(&tokens, &known)
                };
                let cache = self.clone();
                let read = move |keys: Vec<String>| {
                    async move { cache.track(cache.store().mget(&keys).await) }.boxed_local()
                };
                let (values, positions) = batch::read_batched(id, &unknown, read).await?;
                fill(&mut known, &values, positions.iter().copied());
                request::remember(id, unknown, values, positions);
            }
            if local.version.matches(values_of(&known)) {
                return Ok(Lookup::Found(local));
            }
            if none_known {
                // Built under older tokens than the current ones: it will never be used.
                self.inner.local.remove(key);
            }
        }
        if tokens.is_empty() {
            tokens = self.token_keys(deps);
        }
        // The tokens not known yet, and the entry, in one read.
        let mut keys = unknown_keys(&tokens, &known);
        keys.push(key.to_string());
        let mut values = self.track(self.store().mget(&keys).await)?;
        let raw = values.pop().flatten();
        keys.pop();
        let values: request::Values = Rc::new(values);
        fill(&mut known, &values, 0..keys.len());
        request::remember(id, keys, values, Vec::new());
        let version = self.version(&tokens, values_of(&known)).await?;
        match raw.and_then(Entry::decode).filter(|e| e.version == version) {
            Some(entry) => {
                let entry = Arc::new(entry);
                self.keep_locally(slot, entry.clone());
                Ok(Lookup::Found(entry))
            }
            None => Ok(Lookup::Missing { version }),
        }
    }

    /// The keys of the tokens an entry depends on: the generation, then `deps`.
    fn token_keys(&self, deps: &[&str]) -> Vec<String> {
        let mut keys = Vec::with_capacity(deps.len() + 1);
        keys.push(self.keys().generation().to_string());
        keys.extend(deps.iter().map(|name| self.keys().token(name)));
        keys
    }

    /// The version of the tokens' values (in `keys`' order). A missing generation is
    /// started at once (one key; not remembered, so the request's next lookup reads it
    /// again and finds this value or a newer one). A missing dependency token is *not*
    /// created here — a lookup of a page that will not be stored (a 404 for any id one
    /// cares to type) must not add keys — but stands as a marker (`version.rs`), which
    /// `put` creates the token with when, and only if, it stores an entry built under it.
    async fn version(
        &self,
        keys: &[String],
        values: impl Iterator<Item = Option<&[u8]>>,
    ) -> Result<Version, CacheUnavailable> {
        let values: Vec<Option<&str>> = values
            .map(|v| v.and_then(|v| std::str::from_utf8(v).ok()))
            .collect();
        let started = match values.first() {
            Some(None) => Some(self.start_generation().await?),
            _ => None,
        };
        Ok(Version::of(keys.iter().zip(values).enumerate().map(
            |(i, (key, value))| match (value, &started) {
                (Some(value), _) => Ok(value),
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
        let (version, missing) = version.settle();
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

    /// The invalidation after a committed write: a new value for each dependency token
    /// named in `tokens` and none of the app's named entries, in one `MULTI` (in a cluster, one
    /// token after another in the order given: list the tokens of entries that others
    /// are built from first; see the module docs). Returns whether it
    /// reached Redis; if not, an invalidation is pending (the generation will be
    /// replaced, which covers these tokens and more) and the cache is bypassed meanwhile.
    pub async fn invalidate(&self, tokens: &[String]) -> bool {
        // Whatever happens, this request reads the generation afresh from now on.
        request::forget();
        if self.invalidation_pending() {
            return self.ensure_no_pending_invalidation().await.is_ok();
        }
        let pairs: Vec<(String, String)> = tokens
            .iter()
            .map(|name| (self.keys().token(name), new_token()))
            .collect();
        let counters: Vec<String> = tokens.iter().map(|n| self.keys().token_count(n)).collect();
        let replaced = match self
            .store()
            .replace_tokens(
                &pairs,
                self.token_lifetime_ms(),
                &self.inner.named_entries,
                &counters,
            )
            .await
        {
            Ok(counts) => self.replicated(&pairs).await.map(|()| counts),
            Err(e) => Err(e),
        };
        match self.track(replaced) {
            Ok(stored) => {
                self.inner.metrics.invalidation();
                self.inner
                    .metrics
                    .record_invalidation(tokens.iter().cloned().zip(stored).collect());
                true
            }
            Err(_) => {
                log::warn!("invalidation could not reach redis; bypassing the cache until it does");
                false
            }
        }
    }

    /// Waits for the configured replicas to have the tokens just written (`WAIT`): a
    /// replacement a failover could lose counts as failed (the invalidation stays
    /// pending: see the module docs).
    async fn replicated(&self, pairs: &[(String, String)]) -> Result<(), CacheUnavailable> {
        let keys: Vec<String> = pairs.iter().map(|(key, _)| key.clone()).collect();
        self.store()
            .wait_for_replicas(&keys, self.inner.wait_replicas)
            .await
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
        let pairs = [(self.keys().generation().to_string(), new_token())];
        // Whatever happens, this request reads the token afresh from now on.
        request::forget();
        let replaced = match self
            .store()
            .set_all_and_delete(&pairs, None, &self.inner.named_entries)
            .await
        {
            Ok(()) => self.replicated(&pairs).await,
            Err(e) => Err(e),
        };
        match replaced {
            Ok(()) => {
                self.inner
                    .invalidation_pending
                    .store(false, Ordering::SeqCst);
                true
            }
            Err(_) => false,
        }
    }

    /// A missing generation (evicted, Redis restarted, cache cleared) gets a fresh,
    /// never-used token; when several instances race, `SET NX GET` makes them agree.
    async fn start_generation(&self) -> Result<String, CacheUnavailable> {
        let token = new_token();
        let existing = self
            .store()
            .set_nx_get(self.keys().generation(), &token)
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

/// The keys of the tokens whose value is not known yet.
fn unknown_keys(tokens: &[String], known: &[request::Known]) -> Vec<String> {
    tokens
        .iter()
        .zip(known)
        .filter(|(_, k)| k.is_none())
        .map(|(t, _)| t.clone())
        .collect()
}

/// Fills in the values not known yet, in order, from a read: `values` at `positions`.
fn fill(
    known: &mut [request::Known],
    values: &request::Values,
    mut positions: impl Iterator<Item = usize>,
) {
    for k in known.iter_mut().filter(|k| k.is_none()) {
        *k = positions.next().map(|at| (values.clone(), at));
    }
}

/// The values of tokens, as `recall`ed or read.
fn values_of(known: &[request::Known]) -> impl Iterator<Item = Option<&[u8]>> {
    known
        .iter()
        .map(|k| k.as_ref().and_then(|(values, at)| values[*at].as_deref()))
}

/// A fresh, never-reused token (128 random bits, hex).
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
