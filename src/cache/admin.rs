//! The cache's admin operations, for the dashboard and the command line: the seed's
//! `get_redis_cache_metrics()` (Redis' own keyspace numbers with the app's counters),
//! the instances holding a lease, the bounded key listing, and `clear`.

use std::time::Duration;

use serde::Serialize;

use super::metrics::{AppCounters, ratio};
use super::store::{self, NodeStats, SyncState};
use super::{Cache, CacheUnavailable, request};

/// What `get_redis_cache_metrics()` returns and `/api/cache/metrics` shows.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CacheMetrics {
    /// Summed over the masters that answered (a replica's counters only move with reads
    /// sent to it, and the app sends none).
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub hit_ratio: f64,
    pub redis_available: bool,
    /// `single` or `cluster`.
    pub redis_mode: &'static str,
    /// Every Redis server: the one Redis, or every node of the cluster (masters first);
    /// `None` once `without_details` left them out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_nodes: Option<Vec<NodeStats>>,
    /// The last number of the invalidation log; `None` when the lease hash could not be
    /// read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidation_seq: Option<u64>,
    /// Every instance in the lease hash (their ids name their hosts); `None` when it
    /// could not be read, or once `without_details` left them out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceInfo>>,
    pub app: AppCounters,
}

/// One instance of the lease hash, as the dashboard lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InstanceInfo {
    pub id: String,
    /// Until its lease ends, by Redis' clock; 0 once it has ended.
    pub lease_ms_left: u64,
    /// The last invalidation it applied.
    pub applied: u64,
}

/// The instances of the lease hash as read at Redis time `state.now`.
fn instances_of(state: &SyncState) -> Vec<InstanceInfo> {
    state
        .instances
        .iter()
        .map(|(id, ends, applied)| InstanceInfo {
            id: id.clone(),
            lease_ms_left: u64::try_from(ends - state.now).unwrap_or(0),
            applied: *applied,
        })
        .collect()
}

impl CacheMetrics {
    /// The numbers alone, for callers who may not see the details: Redis node addresses,
    /// the instances and the recent writes are left out (the web layer decides who may).
    pub fn without_details(self) -> Self {
        Self {
            redis_nodes: None,
            instances: None,
            app: self.app.without_details(),
            ..self
        }
    }
}

/// The seed's `get_redis_cache_metrics()`: Redis' own `keyspace_hits`/`keyspace_misses`
/// (server-wide: every client of that Redis moves them; in a cluster, summed over the
/// masters), their ratio, the per-node list, the instances of the lease hash (left out
/// when that read fails: the rest still stands), and this app's per-layer counters.
/// Logged at info level each time it is read.
pub async fn get_redis_cache_metrics(
    cache: &Cache,
) -> Result<CacheMetrics, (CacheUnavailable, AppCounters)> {
    let app = cache.metrics().snapshot();
    // Read before the node stats, not beside them: its reads move Redis' keyspace
    // counters, which the node stats then include.
    let sync = cache.store().sync_state(cache.keys().sync()).await;
    match cache.store().node_stats().await {
        Ok(nodes) => {
            let sync = sync
                .inspect_err(|e| log::warn!("cache metrics: lease hash unreadable ({e})"))
                .ok();
            let (hits, misses) = sum_over_masters(&nodes);
            let metrics = CacheMetrics {
                keyspace_hits: hits,
                keyspace_misses: misses,
                hit_ratio: ratio(hits, misses),
                redis_available: true,
                redis_mode: if cache.store().is_cluster() {
                    "cluster"
                } else {
                    "single"
                },
                redis_nodes: Some(nodes),
                invalidation_seq: sync.as_ref().map(|s| s.seq),
                instances: sync.as_ref().map(instances_of),
                app,
            };
            log::info!(
                "cache metrics: {}",
                serde_json::to_string(&metrics).unwrap_or_default()
            );
            Ok(metrics)
        }
        Err(e) => {
            log::warn!("cache metrics: redis unavailable ({e})");
            Err((e, app))
        }
    }
}

/// Keyspace hits and misses of the masters that answered.
fn sum_over_masters(nodes: &[NodeStats]) -> (u64, u64) {
    nodes
        .iter()
        .filter(|n| n.role == "master")
        .fold((0, 0), |(hits, misses), n| {
            (
                hits + n.keyspace_hits.unwrap_or(0),
                misses + n.keyspace_misses.unwrap_or(0),
            )
        })
}

impl Cache {
    /// What one of this app's keys is (`Keys::kind`); the app's named entries are
    /// query-cache entries.
    pub fn key_kind(&self, key: &str) -> &'static str {
        if self.named_entries().iter().any(|named| named == key) {
            "query"
        } else {
            self.keys().kind(key)
        }
    }

    /// Empties this app's cache layers, and nothing else: a new generation, logged and
    /// applied by every instance (which makes every entry unreachable at once, in Redis
    /// and in memory), then `SCAN` (of every master, in a cluster) + `UNLINK` of the
    /// generation, the entries, tokens and refresh locks under this prefix. The leases'
    /// hash and the log stay: they are not cache. Never `FLUSHALL`/`FLUSHDB`.
    pub async fn clear(&self) -> Result<u64, CacheUnavailable> {
        request::forget();
        self.replace(&[super::GENERATION.to_string()], None).await?;
        let mut names = vec![self.keys().generation().to_string()];
        names.extend(self.named_entries().iter().cloned());
        let mut deleted = self.store().unlink(&names).await?;
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

    /// Up to `limit` of this app's cache entries, for the dashboard (see `scan_keys`).
    /// Anyone allowed may ask, as often as they like, so what it costs Redis is bounded
    /// here: one listing per `KEY_LISTING_REUSE` per instance, shared by every caller.
    /// Callers that arrive while a listing runs wait for it (the lock is held across it:
    /// single-flight); later ones get its copy until it is that old. `clear` drops the
    /// copy.
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

    /// Up to `limit` cache entries — the app's named ones, then pages and query result pages
    /// (one `SCAN MATCH` walk per kind, `Keys::entry_patterns`, on every master; never
    /// `KEYS`), sorted — each with its remaining TTL and size. Only entries are listed:
    /// tokens, locks and sign-in counters, however many, neither show nor take a place.
    /// Bounded twice: a walk stops once `limit` entries are found or after a fixed number
    /// of `SCAN` rounds per master (a Redis shared with a large keyspace is never walked
    /// in full); `complete` says whether every entry was seen. TTLs and sizes come from
    /// one pipeline (per slot).
    async fn scan_keys(&self, limit: usize) -> Result<KeyListing, CacheUnavailable> {
        const SCAN_COUNT: u64 = 500;
        const MAX_SCAN_ROUNDS: usize = 40;
        let mut found = std::collections::BTreeSet::new();
        let mut complete = true;
        for pattern in self.keys().entry_patterns() {
            // A walk stops once it has more than this: so the listing knows it is cut.
            let bound = store::ScanLimit {
                keys: limit.saturating_sub(found.len()),
                rounds_per_node: MAX_SCAN_ROUNDS,
            };
            let (keys, whole) = self
                .store()
                .scan_all(&pattern, SCAN_COUNT, Some(bound))
                .await?;
            found.extend(keys);
            complete &= whole;
        }
        // Read first, and kept only if it exists (`PTTL` -2 below).
        let mut names = self.named_entries().to_vec();
        names.extend(found);
        let replies = self.store().ttls_and_sizes(&names).await?;
        let mut keys: Vec<KeyInfo> = names
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
        if keys.len() > limit {
            keys.truncate(limit);
            complete = false;
        }
        Ok(KeyListing { keys, complete })
    }
}

/// How long one key listing is reused (`Cache::list_keys`).
pub const KEY_LISTING_REUSE: Duration = Duration::from_secs(1);

/// One key of this app, as `Cache::list_keys` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    pub key: String,
    /// Remaining time to live in milliseconds; `None` for a key without expiry.
    pub ttl_ms: Option<i64>,
    /// Memory used by the key, when Redis reports it.
    pub bytes: Option<u64>,
}

/// The result of `Cache::list_keys`: the entries, and whether every cache entry is
/// among them (`false` when the limit or the scan bound cut the listing short).
#[derive(Clone, Debug)]
pub struct KeyListing {
    pub keys: Vec<KeyInfo>,
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_numbers_are_summed_over_masters_only() {
        let node = |role, reachable, hits: Option<u64>| NodeStats {
            address: "127.0.0.1:1".into(),
            role,
            reachable,
            keyspace_hits: hits,
            keyspace_misses: hits.map(|h| h / 2),
        };
        let nodes = [
            node("master", true, Some(10)),
            node("master", true, Some(4)),
            node("master", false, None),
            node("replica", true, Some(100)),
        ];
        assert_eq!(sum_over_masters(&nodes), (14, 7));
    }

    #[test]
    fn an_ended_lease_has_no_time_left() {
        let state = SyncState {
            now: 10_000,
            born: Some(0),
            seq: 7,
            instances: vec![("a".into(), 10_400, 7), ("b".into(), 9_000, 5)],
        };

        let instances = instances_of(&state);

        assert_eq!(instances[0].lease_ms_left, 400);
        assert_eq!(instances[1].lease_ms_left, 0);
        assert_eq!(instances[1].applied, 5);
    }
}
