//! The in-process first tier: recently used entries kept in this process's memory, so a
//! hit does not ship the body from Redis again. It never decides validity on its own:
//! every use reads the entry's tokens from Redis (a few bytes, one batched round trip:
//! `batch.rs`) and an entry is used only if it was built under exactly those
//! values — the same rule as for entries in Redis (see the module docs of `cache`), so
//! every instance still sees every invalidation at once. Bounded in bytes; when full it
//! is emptied and refills.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::entry::{Entry, now_ms};

pub struct LocalTier {
    capacity_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Entry, kept until (ms), and the bytes it was counted as.
    entries: HashMap<String, (Arc<Entry>, i64, usize)>,
    bytes: usize,
}

impl LocalTier {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry kept for `key`, unless it outlived `keep_until_ms` (its Redis lifetime).
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        if self.capacity_bytes == 0 {
            return None;
        }
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some((entry, keep_until, _)) if *keep_until > now_ms() => Some(entry.clone()),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `entry` until `keep_until_ms` at the latest. With `decoded_too` (a
    /// query-cache entry, kept decoded as well: `Entry::decoded`), its body is counted
    /// twice: decoded rows take about as much room as their JSON.
    pub fn insert(&self, key: &str, entry: Arc<Entry>, keep_until_ms: i64, decoded_too: bool) {
        let size = entry_size(&entry) + if decoded_too { entry.body.len() } else { 0 };
        if self.capacity_bytes == 0 || size > self.capacity_bytes / 4 {
            return;
        }
        let mut inner = self.lock();
        inner.remove(key);
        if inner.bytes + size > self.capacity_bytes {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        inner
            .entries
            .insert(key.to_string(), (entry, keep_until_ms, size));
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some((_, _, size)) = self.entries.remove(key) {
            self.bytes -= size;
        }
    }
}

fn entry_size(entry: &Entry) -> usize {
    entry.body.len()
        + entry.gzip.as_ref().map_or(0, |b| b.len())
        + entry.brotli.as_ref().map_or(0, |b| b.len())
        + entry.version.as_str().len()
        + entry.etag.len()
        + entry.content_type.len()
        + 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::version::Version;
    use actix_web::web::Bytes;

    fn entry(len: usize) -> Arc<Entry> {
        Arc::new(Entry::build(
            &Version::parse("g"),
            "text/plain",
            Bytes::from(vec![b'x'; len]),
            false,
        ))
    }

    #[test]
    fn entries_are_kept_until_their_redis_lifetime_ends() {
        let tier = LocalTier::new(1 << 20);
        tier.insert("a", entry(10), now_ms() + 60_000, false);
        tier.insert("b", entry(10), now_ms() - 1, false);
        assert!(tier.get("a").is_some());
        assert!(tier.get("b").is_none());
    }

    #[test]
    fn an_entry_kept_decoded_too_counts_its_body_twice() {
        let tier = LocalTier::new(1 << 20);
        let until = now_ms() + 60_000;
        tier.insert("page", entry(1000), until, false);
        let page = tier.bytes();
        tier.insert("query", entry(1000), until, true);
        assert_eq!(tier.bytes(), page + page + 1000);
        tier.remove("query");
        assert_eq!(tier.bytes(), page, "removed as counted");
    }

    #[test]
    fn the_tier_never_holds_more_than_its_capacity() {
        let tier = LocalTier::new(10_000);
        for i in 0..100 {
            tier.insert(&format!("k{i}"), entry(1000), now_ms() + 60_000, i % 2 == 0);
            assert!(tier.bytes() <= 10_000);
        }
        tier.insert("big", entry(5000), now_ms() + 60_000, false);
        assert!(
            tier.get("big").is_none(),
            "an entry over a quarter of the tier is not kept"
        );
    }
}
