//! The in-process tier: recently used entries kept in this process's memory, and the
//! token values this process knows to be current (`known`), so a hit needs nothing from
//! Redis. An entry is used only if it was built under exactly the current values of its
//! tokens — the rule for entries in Redis too (see the module docs of `cache`). Those
//! values come from `known` while the instance holds its lease (`lease.rs`), else from
//! Redis.
//!
//! `known` holds a token's value from a read of Redis that no invalidation overtook:
//! `learn` takes the `epoch` read before the read was sent, and learns nothing if an
//! invalidation was applied (`forget`) since. An entry itself may be kept whatever it
//! holds: it is never used unless its version is current. Bounded in bytes; when full
//! the entries are dropped and refill.

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
    /// Token values known to be current, by token name.
    known: HashMap<String, Arc<str>>,
    /// Moved on by every `forget`: a read sent before it learns nothing.
    epoch: u64,
}

/// What `probe` found: the entry held for the key, if any, and the epoch when it looked.
pub struct Probe {
    pub entry: Option<Arc<Entry>>,
    pub epoch: u64,
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

    /// The entry kept for `key` (unless it outlived its Redis lifetime) and the current
    /// epoch; with `use_known`, each of `values` still `None` takes the known value of
    /// the token named at its place in `names`, if any. One lock for all of it.
    pub fn probe(
        &self,
        key: &str,
        names: &[&str],
        values: &mut [Option<Arc<str>>],
        use_known: bool,
    ) -> Probe {
        let mut inner = self.lock();
        if use_known {
            for (value, name) in values.iter_mut().zip(names) {
                if value.is_none() {
                    *value = inner.known.get(*name).cloned();
                }
            }
        }
        let entry = if self.capacity_bytes == 0 {
            None
        } else {
            match inner.entries.get(key) {
                Some((entry, keep_until, _)) if *keep_until > now_ms() => Some(entry.clone()),
                Some(_) => {
                    inner.remove(key);
                    None
                }
                None => None,
            }
        };
        Probe {
            entry,
            epoch: inner.epoch,
        }
    }

    /// Learns token values read from Redis, unless an invalidation was applied since
    /// `epoch` (the read may then predate it). Whether it learned them.
    pub fn learn<'a>(&self, epoch: u64, values: impl Iterator<Item = (&'a str, Arc<str>)>) -> bool {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return false;
        }
        for (name, value) in values {
            inner.known.insert(name.to_string(), value);
        }
        true
    }

    /// An invalidation of these tokens was applied: their values are no longer known.
    pub fn forget<S: AsRef<str>>(&self, names: &[S]) {
        let mut inner = self.lock();
        inner.epoch += 1;
        for name in names {
            inner.known.remove(name.as_ref());
        }
    }

    /// No token value is known any more (the lease was lost, an invalidation missed, the
    /// connection broken).
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.known.clear();
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

    fn known(tier: &LocalTier, name: &str) -> Option<Arc<str>> {
        let mut values = [None];
        tier.probe("any", &[name], &mut values, true);
        values[0].take()
    }

    #[test]
    fn entries_are_kept_until_their_redis_lifetime_ends() {
        let tier = LocalTier::new(1 << 20);
        tier.insert("a", entry(10), now_ms() + 60_000, false);
        tier.insert("b", entry(10), now_ms() - 1, false);
        assert!(tier.probe("a", &[], &mut [], false).entry.is_some());
        assert!(tier.probe("b", &[], &mut [], false).entry.is_none());
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_learns_nothing() {
        let tier = LocalTier::new(1 << 20);
        let before = tier.probe("k", &[], &mut [], true).epoch;
        tier.forget(&["rows"]);
        assert!(!tier.learn(before, [("rows", Arc::from("old"))].into_iter()));
        assert_eq!(known(&tier, "rows"), None);

        let now = tier.probe("k", &[], &mut [], true).epoch;
        assert!(tier.learn(now, [("rows", Arc::from("new"))].into_iter()));
        assert_eq!(known(&tier, "rows").as_deref(), Some("new"));
        tier.forget(&["rows"]);
        assert_eq!(known(&tier, "rows"), None, "forgotten by the invalidation");
        tier.learn(
            tier.probe("k", &[], &mut [], true).epoch,
            [("a", Arc::from("1"))].into_iter(),
        );
        tier.forget_all();
        assert_eq!(known(&tier, "a"), None);
    }

    #[test]
    fn known_values_are_used_only_when_asked() {
        let tier = LocalTier::new(1 << 20);
        let epoch = tier.probe("k", &[], &mut [], true).epoch;
        tier.learn(epoch, [("rows", Arc::from("v"))].into_iter());
        let mut values = [None];
        tier.probe("k", &["rows"], &mut values, false);
        assert_eq!(values[0], None, "no lease: nothing known is used");
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
            tier.probe("big", &[], &mut [], false).entry.is_none(),
            "an entry over a quarter of the tier is not kept"
        );
    }
}
