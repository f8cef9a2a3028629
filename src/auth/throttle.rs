//! Sign-in throttling: after `MAX_FAILURES` failed sign-ins for one client address and
//! user name within `WINDOW`, further attempts get 429 until the window ends. Counters
//! live in Redis (shared by all instances, under the prefix, with a TTL); while Redis is
//! unreachable each process counts on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::Cache;

pub const MAX_FAILURES: u64 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct LoginThrottle {
    local: Mutex<HashMap<String, (u64, Instant)>>,
}

impl LoginThrottle {
    /// Seconds until the client may try again, or `None` when it may try now.
    pub async fn blocked_for(&self, cache: &Cache, client: &str, username: &str) -> Option<u64> {
        let key = cache
            .keys()
            .login_failures(client, &username.to_lowercase());
        let cmd = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .to_owned();
        let (count, ttl_ms) = match cache.store().pipe::<(Option<u64>, i64)>(&cmd).await {
            Ok((count, ttl)) => (count.unwrap_or(0), ttl.max(0) as u64),
            Err(_) => self.local_count(&key),
        };
        (count >= MAX_FAILURES).then(|| ttl_ms.div_ceil(1000).max(1))
    }

    pub async fn record_failure(&self, cache: &Cache, client: &str, username: &str) {
        let key = cache
            .keys()
            .login_failures(client, &username.to_lowercase());
        let cmd = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(WINDOW.as_millis() as u64)
            .arg("NX")
            .ignore()
            .to_owned();
        if cache.store().pipe::<()>(&cmd).await.is_err() {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let entry = local.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) > WINDOW {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    pub async fn reset(&self, cache: &Cache, client: &str, username: &str) {
        let key = cache
            .keys()
            .login_failures(client, &username.to_lowercase());
        let _ = cache.store().query::<()>(redis::cmd("DEL").arg(&key)).await;
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    fn local_count(&self, key: &str) -> (u64, u64) {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        match local.get(key) {
            Some((count, since)) if since.elapsed() < WINDOW => {
                (*count, (WINDOW - since.elapsed()).as_millis() as u64)
            }
            _ => (0, 0),
        }
    }
}
