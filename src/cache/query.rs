//! The query cache — the seed's `get_all_properties()`, and pages of query results.
//!
//! `PREFIX:all_properties` holds every property, newest first, while there are at most
//! `ALL_PROPERTIES_MAX` of them: one entry then serves every page and sort of the
//! unfiltered list. Past that size one blob stops paying (each miss would load, encode
//! and ship every row, and each decode costs milliseconds), so the key then records only
//! that the table is large, and listing pages are cached one result page at a time under
//! `PREFIX:query:<normalised query>` (filtered searches always are). Every entry is kept
//! for `QUERY_CACHE_TTL` plus grace and tagged with the generation it was loaded under
//! (see the module docs of `cache`), so invalidation reaches all of them at once.

use std::any::Any;
use std::sync::Arc;

use actix_web::web::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Freshness;
use super::flight::Role;
use super::metrics::{Layer, Outcome};
use crate::error::AppError;
use crate::models::property::{Property, PropertyFilter, Sort};
use crate::state::AppState;

/// Above this many properties, `all_properties` no longer holds the rows.
pub const ALL_PROPERTIES_MAX: usize = 200;

/// Whether the value is fresh, or an expired entry of the current generation (served
/// while another request refreshes it, or because PostgreSQL is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Current,
    Stale,
}

/// What `PREFIX:all_properties` holds.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, Serialize)]
pub enum AllProperties {
    /// Every property, newest first.
    Rows(Vec<Property>),
    /// More than `ALL_PROPERTIES_MAX`: use `get_page`.
    TooMany,
}

/// One page of a listing query and the number of matches.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, Serialize)]
pub struct PageOfProperties {
    pub rows: Vec<Property>,
    pub count: i64,
}

/// The seed's `get_all_properties()`: every property, newest first (or `TooMany`).
pub async fn get_all_properties(
    state: &AppState,
) -> Result<(Arc<AllProperties>, Served), AppError> {
    let key = state.cache.keys().all_properties();
    cached(state, &key, || async {
        let rows = crate::db::run(&state.db, |conn| {
            Ok(Property::newest_first(conn, ALL_PROPERTIES_MAX as i64 + 1)?)
        })
        .await?;
        Ok(if rows.len() > ALL_PROPERTIES_MAX {
            AllProperties::TooMany
        } else {
            AllProperties::Rows(rows)
        })
    })
    .await
}

/// One page of matching properties (`limit` rows from `offset`) and the total.
pub async fn get_page(
    state: &AppState,
    query_id: &str,
    filter: &PropertyFilter,
    sort: Sort,
    limit: i64,
    offset: i64,
) -> Result<(Arc<PageOfProperties>, Served), AppError> {
    let key = state.cache.keys().query(query_id);
    cached(state, &key, || async {
        let (rows, count) = state
            .properties
            .list(filter.clone(), sort, limit, offset)
            .await?;
        Ok(PageOfProperties { rows, count })
    })
    .await
}

/// A value cached under `key`: from Redis when a current entry exists, otherwise from
/// `load` (and then stored). Redis trouble means a database read, never an error.
/// Concurrent misses of this instance share one load; an expired entry of the current
/// generation (within grace) is used while another request refreshes it, or when
/// PostgreSQL is down.
async fn cached<T, F, Fut>(
    state: &AppState,
    key: &str,
    load: F,
) -> Result<(Arc<T>, Served), AppError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, AppError>>,
{
    let cache = &state.cache;
    let metrics = cache.metrics();
    let counted_load = || {
        metrics.db_load(Layer::Query);
        load()
    };
    let lookup = match cache.lookup(key).await {
        Ok(lookup) => lookup,
        Err(_) => {
            metrics.lookup(Layer::Query, Outcome::Bypass);
            return Ok((Arc::new(counted_load().await?), Served::Current));
        }
    };
    let mut stale = None;
    if let Some(entry) = lookup.entry {
        match (
            cache.freshness(&entry, cache.query_ttl()),
            entry.decoded(decode::<T>),
        ) {
            (Freshness::Fresh, Some(value)) => {
                metrics.lookup(Layer::Query, Outcome::Hit);
                return Ok((value, Served::Current));
            }
            // Stale-while-revalidate: one request reloads, the others use the expired
            // value of the current generation meanwhile.
            (Freshness::Expired, Some(value)) if !cache.try_refresh_lock(key).await => {
                metrics.lookup(Layer::Query, Outcome::Stale);
                return Ok((value, Served::Stale));
            }
            (Freshness::Expired, Some(value)) => {
                // The lock may have been released a moment ago by a request that just
                // reloaded the value: look again before loading a second time.
                if let Ok(again) = cache.lookup(key).await
                    && let Some(entry) = again.entry
                    && cache.freshness(&entry, cache.query_ttl()) == Freshness::Fresh
                    && let Some(fresh) = entry.decoded(decode::<T>)
                {
                    cache.release_refresh_lock(key).await;
                    metrics.lookup(Layer::Query, Outcome::Hit);
                    return Ok((fresh, Served::Current));
                }
                stale = Some(value);
            }
            (_, None) => log::warn!("unreadable {key} entry ignored"),
        }
    }
    let load_and_store = || async {
        let value = counted_load().await?;
        store(state, key, &lookup.generation, &value).await;
        Ok::<_, AppError>(Arc::new(value))
    };

    if stale.is_none() {
        // A plain miss: concurrent misses of this instance under the same generation share
        // one load (the token is part of the flight's name, so a request that read a newer
        // token never takes a load that may predate the write behind it).
        let flight = format!("{}\n{key}", lookup.generation);
        let (shared, role) = cache
            .query_flights()
            .run(&flight, || async {
                load_and_store()
                    .await
                    .ok()
                    .map(|v| v as Arc<dyn Any + Send + Sync>)
            })
            .await;
        if let Some(value) = shared.and_then(|v| v.downcast::<T>().ok()) {
            let outcome = match role {
                Role::Leader => Outcome::Miss,
                Role::Follower => Outcome::Hit,
            };
            metrics.lookup(Layer::Query, outcome);
            return Ok((value, Served::Current));
        }
        // The shared load failed: load once more for this request, to report its error.
        metrics.lookup(Layer::Query, Outcome::Miss);
        return Ok((load_and_store().await?, Served::Current));
    }

    let result = match load_and_store().await {
        Ok(value) => {
            metrics.lookup(Layer::Query, Outcome::Miss);
            Ok((value, Served::Current))
        }
        // Stale-if-error: PostgreSQL is down; the current generation's value within
        // grace is better than an error.
        Err(AppError::Unavailable(cause)) => match stale {
            Some(value) => {
                log::warn!("database unavailable ({cause}); serving {key} within grace");
                metrics.lookup(Layer::Query, Outcome::Stale);
                Ok((value, Served::Stale))
            }
            None => Err(AppError::Unavailable(cause)),
        },
        Err(e) => Err(e),
    };
    cache.release_refresh_lock(key).await;
    result
}

async fn store<T: Serialize>(state: &AppState, key: &str, generation: &str, value: &T) {
    let cache = &state.cache;
    match serde_json::to_vec(value) {
        Ok(json) => {
            let _ = cache
                .put(
                    key,
                    generation,
                    "application/json",
                    Bytes::from(json),
                    cache.query_ttl(),
                    false,
                )
                .await;
        }
        Err(e) => log::error!("serialising {key}: {e}"),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}
