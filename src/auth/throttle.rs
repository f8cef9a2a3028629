//! Sign-in throttling: at most `MAX_ATTEMPTS` sign-in attempts for one client address
//! and user name are evaluated within `WINDOW`; the rest get 429 until the window ends.
//! An attempt is reserved (counted) atomically *before* the password is checked, so
//! simultaneous attempts cannot slip past the limit, and successful ones count too.
//! Counters live in Redis (shared by all instances, under the prefix, with a TTL);
//! while Redis is unreachable each process counts on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::Cache;

pub const MAX_ATTEMPTS: u64 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Past this many per-process counters, expired ones are dropped on the next attempt.
const LOCAL_PRUNE_AT: usize = 10_000;

#[derive(Default)]
pub struct LoginThrottle {
    local: Mutex<HashMap<String, (u64, Instant)>>,
}

impl LoginThrottle {
    /// Counts one attempt for `client` and `username`: `Ok` when it may be evaluated,
    /// `Err(seconds)` until the client may try again when the limit is reached.
    pub async fn reserve(&self, cache: &Cache, client: IpAddr, username: &str) -> Result<(), u64> {
        let key = cache.keys().login_failures(client, username);
        // One MULTI: the count returned is this attempt's place in the window.
        let reserved = cache
            .store()
            .incr_expiring(&key, WINDOW.as_millis() as u64)
            .await;
        let (count, ttl_ms) = match reserved {
            Ok((count, ttl)) => (count, ttl.max(0) as u64),
            Err(_) => self.reserve_locally(key),
        };
        if count <= MAX_ATTEMPTS {
            Ok(())
        } else {
            Err(ttl_ms.div_ceil(1000).max(1))
        }
    }

    /// The same count in this process, checked and incremented under one lock.
    fn reserve_locally(&self, key: String) -> (u64, u64) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if local.len() >= LOCAL_PRUNE_AT {
            local.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let entry = local.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        let left = WINDOW.saturating_sub(now.duration_since(entry.1));
        (entry.0, left.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_process_count_refuses_the_attempt_after_the_limit_from_any_thread() {
        let throttle = std::sync::Arc::new(LoginThrottle::default());
        let allowed: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    let throttle = throttle.clone();
                    s.spawn(move || throttle.reserve_locally("k".into()).0 <= MAX_ATTEMPTS)
                })
                .collect();
            handles
                .into_iter()
                .map(|h| u64::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(allowed, MAX_ATTEMPTS);
        let (count, left_ms) = throttle.reserve_locally("k".into());
        assert_eq!(count, 21);
        assert!(left_ms > 0 && left_ms <= WINDOW.as_millis() as u64);
        assert_eq!(throttle.reserve_locally("other".into()).0, 1);
    }
}
