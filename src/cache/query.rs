//! The query cache — the seed's low-level cache (`get_all_properties()`), generic: any
//! serialisable value under a key, loaded by the caller's `load` on a miss. Entries are
//! JSON, kept for `QUERY_CACHE_TTL` plus grace and tagged with the version (its tokens' values) read before
//! the load (see the module docs of `cache`), through the same refresh machine as pages
//! (`refresh.rs`). What is cached, and how it is loaded, is the caller's business.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::metrics::{Layer, Outcome};
use super::refresh::{self, Built, Fetched, Spec};
use super::{Cache, Slot};

/// Whether the value is fresh, or an expired entry of the current version (served
/// while another request refreshes it, or because the source is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Current,
    Stale,
}

/// An error of a query-cache load: `unavailable` ones (the database is down) are
/// answered with an expired entry when there is one (stale-if-error).
pub trait LoadError {
    fn is_unavailable(&self) -> bool;
}

/// The value under `key`, depending on the tokens `deps` (and the generation), fresh for
/// `ttl`: from Redis
/// when a current entry exists, otherwise from `load` (and then stored). Redis trouble means a load, never an error; concurrent misses of
/// this instance share one load; an expired entry is used while another request reloads
/// it, or when `load` finds its source unavailable.
pub async fn get_or_fill<T, E, F, Fut>(
    cache: &Cache,
    key: &str,
    deps: &[&str],
    ttl: Duration,
    load: F,
) -> Result<(Arc<T>, Served), E>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: LoadError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let slot = Slot {
        key,
        deps,
        ttl,
        layer: Layer::Query,
    };
    let spec = Spec {
        slot,
        read: |e: &Arc<super::Entry>| {
            let value = e.decoded(decode::<T>);
            if value.is_none() {
                log::warn!("unreadable {key} entry ignored");
            }
            value
        },
    };
    let fetched = refresh::fetch(cache, spec, |version| async move {
        cache.metrics().db_load(Layer::Query);
        let value = match load().await {
            Ok(value) => value,
            Err(e) if e.is_unavailable() => return Built::Unavailable(Err(e)),
            Err(e) => return Built::NotStored(Err(e)),
        };
        let Some(version) = version else {
            return Built::NotStored(Ok(Arc::new(value)));
        };
        match serde_json::to_vec(&value) {
            Ok(json) => {
                let (entry, _) = cache
                    .put(&slot, &version, "application/json", Bytes::from(json))
                    .await;
                let value = Arc::new(value);
                entry.remember_decoded(value.clone());
                Built::Stored(Ok(value), entry)
            }
            Err(e) => {
                log::error!("serialising {key}: {e}");
                Built::NotStored(Ok(Arc::new(value)))
            }
        }
    })
    .await;
    match fetched {
        Fetched::Cached(value, Outcome::Stale) => Ok((value, Served::Stale)),
        Fetched::Cached(value, _) | Fetched::Memory(value) => Ok((value, Served::Current)),
        Fetched::Built(value, Outcome::Stale) => value.map(|v| (v, Served::Stale)),
        Fetched::Built(value, _) => value.map(|v| (v, Served::Current)),
        Fetched::StaleInstead(value, _) => Ok((value, Served::Stale)),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}
