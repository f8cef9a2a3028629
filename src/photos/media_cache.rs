//! The in-process cache of `/media/` bytes, bounded by their total size
//! (`MEDIA_CACHE_BYTES`), oldest entry out first.
//!
//! **Why it needs no invalidation.** A media URL is `/media/<hash>-<width>.jpg`, where
//! `hash` is the SHA-256 of the uploaded file and `width` one of the two sizes made from
//! it. The `photos` row for a hash is written once — `INSERT … ON CONFLICT DO NOTHING`,
//! so a second upload of the same file leaves the first row as it is — and no statement
//! in the app updates it (`models::photo` has none; listings only add and remove *links*
//! to photos). So the bytes PostgreSQL returns for a URL are the same on every read, on
//! every instance, for as long as the row exists: a copy taken once is never stale, and
//! needs neither a dependency token nor a lease. The only bound is memory, hence the
//! byte budget. (The same argument lets browsers keep the bytes for a year:
//! `Cache-Control: immutable`.)
//!
//! This is the app's own module, not part of `cache/`: the cache library knows no app
//! keys, and these entries need none of its versioning.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;

pub struct MediaCache {
    budget: usize,
    inner: RwLock<Inner>,
}

/// A body and its `ETag` header, ready to send (a hit builds nothing).
#[derive(Clone, Debug)]
pub struct Held {
    pub body: Bytes,
    pub etag: HeaderValue,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Held>,
    /// Names in insertion order, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl MediaCache {
    /// A cache holding at most `budget` bytes of bodies (0: holds nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: RwLock::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Held> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(name).cloned()
    }

    /// Keeps `body` under `name`, dropping the oldest entries to stay within the budget.
    /// A body larger than an eighth of the budget is not kept (one huge photo must not
    /// empty the cache).
    pub fn put(&self, name: &str, body: Bytes, etag: HeaderValue) {
        if body.len() > self.budget / 8 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.entries.contains_key(name) {
            return;
        }
        while inner.bytes + body.len() > self.budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.body.len();
            }
        }
        inner.bytes += body.len();
        inner.order.push_back(name.to_string());
        inner.entries.insert(name.to_string(), Held { body, etag });
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etag() -> HeaderValue {
        HeaderValue::from_static("\"x\"")
    }

    #[test]
    fn the_oldest_entries_go_when_the_budget_is_reached() {
        let cache = MediaCache::new(800);

        for name in ["a", "b", "c", "d", "e"] {
            cache.put(name, Bytes::from(vec![0u8; 100]), etag());
        }
        for name in ["f", "g", "h", "i"] {
            cache.put(name, Bytes::from(vec![0u8; 100]), etag());
        }

        assert_eq!(cache.bytes(), 800);
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some() && cache.get("i").is_some());
    }

    #[test]
    fn a_body_over_an_eighth_of_the_budget_is_not_kept() {
        let cache = MediaCache::new(800);

        cache.put("big", Bytes::from(vec![0u8; 101]), etag());

        assert!(cache.get("big").is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
