//! What the app tells the cache when it builds one (`Cache::new`): where Redis is, the
//! key prefix, time limits, the in-process tier's size, and the few names that are the
//! app's own — its named entries and the cache's name in `Cache-Status`. How long each
//! entry stays fresh is not here: every caller passes its own TTL.

use std::time::Duration;

/// Where Redis is.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// One server (`redis://host:port/db`).
    Single(String),
    /// Seed nodes of a Redis Cluster (`redis://host:port` each).
    Cluster(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub redis: RedisTarget,
    /// The first segment of every key (`PREFIX:…`).
    pub key_prefix: String,
    /// Upper bound for connecting to Redis and for any single command.
    pub redis_timeout: Duration,
    /// Replicas that must confirm a write's token replacement (`WAIT`) before it counts.
    pub wait_replicas: u32,
    /// How long an expired entry is kept to be served while it is refreshed or while its
    /// source is down (zero: not at all).
    pub grace: Duration,
    /// The longest TTL any caller stores an entry with: tokens outlive every entry.
    pub longest_ttl: Duration,
    /// Bytes of entries each process keeps in memory in front of Redis (0: none).
    pub local_bytes: usize,
    /// Entries the app keeps under names of its own (`PREFIX:NAME`, e.g. the seed's
    /// `all_properties`), read and written like query-cache entries: every invalidation
    /// and `clear` delete them, and the key listing shows them first.
    pub named_entries: Vec<String>,
    /// The cache's name in `Cache-Status` (RFC 9211), e.g. the app's.
    pub status_name: String,
    /// How long an instance's lease lasts (`lease.rs`): the longest it may answer from
    /// memory without hearing from Redis, and about the longest a write waits for it.
    /// The same for every instance sharing the Redis.
    pub lease: Duration,
    /// Whether this instance holds a lease and answers hits from memory without Redis
    /// (a server does, with `Cache::spawn_lease`; a command-line tool does not).
    pub hold_lease: bool,
}
