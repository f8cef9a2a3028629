//! The multi-level Redis cache, as a library the web layer calls: the page cache
//! (`page.rs`, the seed's `cache_page`), the query cache (`query.rs`, the low-level
//! cache behind the seed's `get_all_properties()`), both through one refresh machine
//! (`refresh.rs`); invalidation after committed writes (`invalidation.rs`, the seed's
//! signals) and metrics (`metrics.rs`). It knows keys, tokens, Redis, refresh and
//! metrics — nothing of the app state, sessions, routes or request logging: which
//! requests may be cached, and what a query loads, the web layer decides.
//!
//! # Why no reader can serve data older than an acknowledged write
//!
//! Redis holds one *generation* token (`PREFIX:generation`, a random 128-bit value). Every
//! cached entry records the token that was current when its builder started, *before* it
//! read PostgreSQL. A lookup reads the token and the entry in one `MGET` and uses the entry
//! only if the two tokens are equal. After every committed write the hook replaces the token
//! (and deletes `PREFIX:all_properties`), and only then is the write acknowledged.
//!
//! Take a reader that read token `G` and then PostgreSQL, and a writer that commits at `c`
//! and replaces `G` by `G'` at `b > c`. If the reader's database read came before `c` it may
//! hold old rows, but it read its token before `b`, so its entry is tagged `G` and is dead
//! from `b` on — even if it is stored long after `b`. If the reader read the token after `b`
//! it read `G'` and its database read came after `c`: it holds the new rows. Either way, after
//! `b` no lookup accepts old rows. A token is never reused (random, not a counter), so losing
//! the generation key (eviction, restart, `cache clear`) cannot revive old entries: a missing
//! token is replaced by a fresh one with `SET NX`.
//!
//! When the replacement fails (Redis unreachable), the write is still committed and
//! acknowledged, so this instance marks an invalidation *pending*: it serves nothing from
//! Redis until a retry (inline, and in the background every 250 ms) has replaced the token.
//! Any Redis failure marks it pending too, so an instance that saw an outage starts from a
//! fresh generation afterwards (another instance may have written during that outage).

pub mod entry;
pub mod flight;
pub mod generation;
pub mod invalidation;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod page;
pub mod query;
pub mod refresh;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::FutureExt;

pub use entry::Entry;
pub use keys::Keys;
use metrics::Metrics;
pub use store::{CacheUnavailable, RedisStore};

use crate::config::Settings;
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
    page_ttl: Duration,
    query_ttl: Duration,
    grace: Duration,
    invalidation_pending: AtomicBool,
    flush_lock: tokio::sync::Mutex<()>,
    local: LocalTier,
    /// Builds under way in this instance, by generation and key (`refresh.rs`).
    flights: SingleFlight<Option<Arc<Entry>>>,
    /// The last key listing (when, for which limit, what): see `list_keys`.
    key_listing: tokio::sync::Mutex<Option<(std::time::Instant, usize, KeyListing)>>,
}

/// The result of a generation-checked lookup.
pub struct Lookup {
    /// The token current at lookup time: tag the entry built from this lookup with it.
    pub generation: String,
    /// The entry, only if it belongs to the current generation.
    pub entry: Option<Arc<Entry>>,
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
        settings: &Settings,
        metrics: Arc<Metrics>,
        on_redis_time: fn(Duration),
    ) -> anyhow::Result<Self> {
        let store = if settings.redis_cluster_urls.is_empty() {
            RedisStore::new(
                &settings.redis_url,
                settings.redis_timeout,
                metrics.clone(),
                on_redis_time,
            )?
        } else {
            log::info!(
                "redis cluster mode, seed nodes {}; REDIS_URL is ignored",
                settings.redis_cluster_urls.join(", ")
            );
            RedisStore::new_cluster(
                &settings.redis_cluster_urls,
                settings.redis_timeout,
                metrics.clone(),
                on_redis_time,
            )?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                keys: Keys::new(settings.cache_key_prefix.clone()),
                metrics,
                page_ttl: settings.page_cache_ttl,
                query_ttl: settings.query_cache_ttl,
                grace: settings.cache_grace,
                // Start from a fresh generation: entries written before this process
                // started may predate writes made while no instance could reach Redis.
                invalidation_pending: AtomicBool::new(true),
                flush_lock: tokio::sync::Mutex::new(()),
                local: LocalTier::new(settings.local_cache_bytes),
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

    pub fn page_ttl(&self) -> Duration {
        self.inner.page_ttl
    }

    pub fn query_ttl(&self) -> Duration {
        self.inner.query_ttl
    }

    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// Whether an invalidation still has to reach Redis (the cache is bypassed meanwhile).
    pub fn invalidation_pending(&self) -> bool {
        self.inner.invalidation_pending.load(Ordering::SeqCst)
    }

    /// Reads the generation and `key` in one round trip (`MGET`); when this process
    /// still holds the entry (`local.rs`), only the generation is read.
    ///
    /// A read-only request that has read the token already (`generation::request_scope`)
    /// uses that token for every lookup: entries of exactly that generation are accepted
    /// and what it builds is tagged with it. Never a fresher token: a render tagged with
    /// a newer token than the inputs it was built from (say, `all_properties` accepted
    /// under the older one) would pass old rows off as current — the race tests caught
    /// exactly that.
    pub async fn lookup(&self, key: &str) -> Result<Lookup, CacheUnavailable> {
        self.ensure_no_pending_invalidation().await?;
        let id = self.inner.store.id();
        if let Some(local) = self.inner.local.get(key) {
            let read_now = generation::remembered(id).is_none();
            let generation = self.current_generation().await?;
            if local.generation == generation {
                return Ok(Lookup {
                    generation,
                    entry: Some(local),
                });
            }
            if read_now {
                // Of an older generation than the current one: it will never be used.
                self.inner.local.remove(key);
            }
        }
        // Asked again here: the read just above may have been this request's first, and
        // then it is the one to use (the race tests caught a fresher one taken here).
        let (generation, raw) = match generation::remembered(id) {
            Some(token) => {
                let raw = self.track(self.store().get_bytes(key).await)?;
                (token, raw)
            }
            None => {
                let read = self
                    .store()
                    .get_token_and_bytes(self.keys().generation(), key)
                    .await;
                let (generation, raw) = self.track(read)?;
                let generation = match generation {
                    Some(g) => g,
                    None => self.start_generation().await?,
                };
                generation::remember(id, &generation);
                (generation, raw)
            }
        };
        let entry = raw
            .and_then(Entry::decode)
            .filter(|e| e.generation == generation)
            .map(Arc::new);
        if let Some(entry) = &entry {
            self.keep_locally(key, entry.clone());
        }
        Ok(Lookup { generation, entry })
    }

    /// The current token, read from Redis by a read sent after this call began
    /// (batched with other requests of this worker: `generation.rs`).
    async fn current_generation(&self) -> Result<String, CacheUnavailable> {
        let id = self.inner.store.id();
        if let Some(token) = generation::remembered(id) {
            return Ok(token);
        }
        let cache = self.clone();
        let read = move || {
            let cache = cache.clone();
            async move {
                let read = cache.store().get_string(cache.keys().generation()).await;
                cache.track(read)
            }
            .boxed_local()
        };
        let token = match generation::read_batched(id, read).await? {
            Some(g) => g,
            None => self.start_generation().await?,
        };
        generation::remember(id, &token);
        Ok(token)
    }

    /// Keeps an entry in this process for as long as Redis keeps it.
    fn keep_locally(&self, key: &str, entry: Arc<Entry>) {
        let is_page = self.keys().is_page(key);
        let ttl = if is_page {
            self.inner.page_ttl
        } else {
            self.inner.query_ttl
        };
        let keep_until = entry.stored_at_ms + (ttl + self.inner.grace).as_millis() as i64;
        self.inner.local.insert(key, entry, keep_until, !is_page);
    }

    /// Builds an entry under `generation` (with pre-compressed variants when `compress`:
    /// pages are, query results are not) and stores it; Redis keeps it `ttl + grace`.
    /// The entry is returned also when Redis failed to store it, with the failure.
    pub async fn put(
        &self,
        key: &str,
        generation: &str,
        content_type: &str,
        body: Bytes,
        ttl: Duration,
        compress: bool,
    ) -> (Arc<Entry>, Result<(), CacheUnavailable>) {
        let entry = Arc::new(Entry::build(generation, content_type, body, compress));
        let keep = (ttl + self.inner.grace).as_millis() as u64;
        let stored = self.track(self.store().set_px(key, &entry.encode(), keep).await);
        if stored.is_ok() {
            self.keep_locally(key, entry.clone());
        }
        (entry, stored)
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

    /// The invalidation: a new generation token and no `all_properties`, atomically.
    /// Returns whether it reached Redis; if not, it stays pending and is retried.
    pub async fn invalidate(&self) -> bool {
        self.inner
            .invalidation_pending
            .store(true, Ordering::SeqCst);
        let ok = self.replace_generation().await;
        if ok {
            self.inner.metrics.invalidation();
        } else {
            log::warn!("invalidation could not reach redis; bypassing the cache until it does");
        }
        ok
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
        let (token, all_properties) = (new_token(), self.keys().all_properties());
        // Whatever happens, this request reads the token afresh from now on.
        generation::forget();
        let replaced =
            self.store()
                .set_and_delete(self.keys().generation(), &token, &all_properties);
        match replaced.await {
            Ok(()) => {
                self.inner
                    .invalidation_pending
                    .store(false, Ordering::SeqCst);
                true
            }
            Err(_) => false,
        }
    }

    /// A missing generation key (evicted, Redis restarted, cache cleared) gets a fresh,
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
            generation::forget();
        }
        result
    }

    pub async fn ping(&self) -> bool {
        self.store().ping().await
    }

    /// Empties this app's cache layers, and nothing else: a new generation (which makes
    /// every entry unreachable at once), then `SCAN` (of every master, in a cluster) +
    /// `UNLINK` of the page entries and refresh locks under this prefix. Never
    /// `FLUSHALL`/`FLUSHDB`.
    pub async fn clear(&self) -> Result<u64, CacheUnavailable> {
        generation::forget();
        let mut deleted = self
            .store()
            .unlink(&[
                self.keys().generation().to_string(),
                self.keys().all_properties(),
            ])
            .await?;
        for pattern in self.keys().cache_patterns() {
            let (keys, _) = self.store().scan_all(&pattern, 500, None).await?;
            let keys: Vec<String> = keys.into_iter().collect();
            for batch in keys.chunks(500) {
                deleted += self.store().unlink(batch).await?;
            }
        }
        self.inner.metrics.invalidation();
        *self.inner.key_listing.lock().await = None;
        Ok(deleted)
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

    /// Up to `limit` of this app's keys, for the dashboard (see `scan_keys`). Anyone may
    /// ask, as often as they like, so what it costs Redis is bounded here: one listing
    /// per `KEY_LISTING_REUSE` per instance, shared by every caller. Callers that arrive
    /// while a listing runs wait for it (the lock is held across it: single-flight);
    /// later ones get its copy until it is that old. `clear` drops the copy.
    pub async fn list_keys(&self, limit: usize) -> Result<KeyListing, CacheUnavailable> {
        let mut last = self.inner.key_listing.lock().await;
        if let Some((at, for_limit, listing)) = last.as_ref()
            && *for_limit == limit
            && at.elapsed() < KEY_LISTING_REUSE
        {
            return Ok(listing.clone());
        }
        let listing = self.scan_keys(limit).await?;
        *last = Some((std::time::Instant::now(), limit, listing.clone()));
        Ok(listing)
    }

    /// Up to `limit` of this app's keys (`SCAN MATCH PREFIX:*` of every master, never
    /// `KEYS`), sorted, each with its remaining TTL and size. Bounded twice: it stops once
    /// `limit` keys are found or after a fixed number of `SCAN` rounds per master (a Redis
    /// shared with a large keyspace is never walked in full); `complete` says whether the
    /// whole keyspace was seen. TTLs and sizes come from one pipeline (per slot).
    async fn scan_keys(&self, limit: usize) -> Result<KeyListing, CacheUnavailable> {
        const SCAN_COUNT: u64 = 500;
        const MAX_SCAN_ROUNDS: usize = 40;
        let bound = store::ScanLimit {
            keys: limit,
            rounds_per_node: MAX_SCAN_ROUNDS,
        };
        let (found, complete) = self
            .store()
            .scan_all(&self.keys().all_pattern(), SCAN_COUNT, Some(bound))
            .await?;
        let names: Vec<String> = found.into_iter().take(limit).collect();
        if names.is_empty() {
            return Ok(KeyListing {
                keys: Vec::new(),
                complete,
            });
        }
        let replies = self.store().ttls_and_sizes(&names).await?;
        let keys = names
            .into_iter()
            .zip(replies)
            .filter_map(|(key, (pttl, bytes))| {
                let pttl = pttl?;
                // -2: the key expired or was deleted between SCAN and PTTL.
                (pttl != -2).then(|| KeyInfo {
                    key,
                    ttl_ms: (pttl >= 0).then_some(pttl),
                    bytes: bytes.and_then(|n| u64::try_from(n).ok()),
                })
            })
            .collect();
        Ok(KeyListing { keys, complete })
    }
}

/// How long one key listing is reused (`Cache::list_keys`).
pub const KEY_LISTING_REUSE: Duration = Duration::from_secs(1);

/// One key of this app, as `Cache::list_keys` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    pub key: String,
    /// Remaining time to live in milliseconds; `None` for a key without expiry.
    pub ttl_ms: Option<i64>,
    /// Memory used by the key, when Redis reports it.
    pub bytes: Option<u64>,
}

/// The result of `Cache::list_keys`: the keys, and whether every key of this app is
/// among them (`false` when the limit or the scan bound cut the listing short).
#[derive(Clone, Debug)]
pub struct KeyListing {
    pub keys: Vec<KeyInfo>,
    pub complete: bool,
}

/// A fresh, never-reused generation token (128 random bits, hex).
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
