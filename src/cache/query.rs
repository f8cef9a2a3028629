//! The query cache — the seed's `get_all_properties()`: every property, newest first,
//! kept under `PREFIX:all_properties` for `QUERY_CACHE_TTL` (plus grace), tagged with the
//! generation it was loaded under (see the module docs of `cache`).

use std::sync::Arc;

use actix_web::web::Bytes;

use super::Freshness;
use super::flight::Role;
use super::metrics::{Layer, Outcome};
use crate::db::PgPool;
use crate::error::AppError;
use crate::models::property::Property;
use crate::state::AppState;

/// Whether the rows are fresh, or an expired entry of the current generation (served
/// while another request refreshes it, or because PostgreSQL is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Current,
    Stale,
}

/// Every property, newest first: from Redis when a current entry exists, otherwise from
/// PostgreSQL (and then stored). Redis trouble means a database read, never an error.
/// An expired entry of the current generation (within grace) is used while another
/// request refreshes it, or when PostgreSQL is down.
pub async fn get_all_properties(
    state: &AppState,
) -> Result<(Arc<Vec<Property>>, Served), AppError> {
    let cache = &state.cache;
    let metrics = cache.metrics();
    let key = cache.keys().all_properties();
    let lookup = match cache.lookup(&key).await {
        Ok(lookup) => lookup,
        Err(_) => {
            metrics.lookup(Layer::Query, Outcome::Bypass);
            return Ok((load(&state.db, state).await?, Served::Current));
        }
    };
    let mut stale = None;
    let mut refreshing = false;
    if let Some(entry) = lookup.entry {
        match (
            cache.freshness(&entry, cache.query_ttl()),
            decode(&entry.body),
        ) {
            (Freshness::Fresh, Some(rows)) => {
                metrics.lookup(Layer::Query, Outcome::Hit);
                return Ok((Arc::new(rows), Served::Current));
            }
            (Freshness::Expired, Some(rows)) => {
                // Stale-while-revalidate: one request reloads, the others use the
                // expired rows of the current generation meanwhile.
                if !cache.try_refresh_lock(&key).await {
                    metrics.lookup(Layer::Query, Outcome::Stale);
                    return Ok((Arc::new(rows), Served::Stale));
                }
                refreshing = true;
                stale = Some(rows);
            }
            (_, None) => log::warn!("unreadable {key} entry ignored"),
        }
    }
    if !refreshing {
        // A plain miss: concurrent misses of this instance share one load.
        let (shared, role) = cache
            .query_flights()
            .run(&key, || async {
                load_and_store(state, &key, &lookup.generation).await.ok()
            })
            .await;
        match (shared, role) {
            (Some(rows), Role::Leader) => {
                metrics.lookup(Layer::Query, Outcome::Miss);
                return Ok((rows, Served::Current));
            }
            (Some(rows), Role::Follower) => {
                metrics.lookup(Layer::Query, Outcome::Hit);
                return Ok((rows, Served::Current));
            }
            // The shared load failed: try once more for this request, to get its error.
            (None, _) => {}
        }
    }
    let result = match load_and_store(state, &key, &lookup.generation).await {
        Ok(rows) => {
            metrics.lookup(Layer::Query, Outcome::Miss);
            Ok((rows, Served::Current))
        }
        // Stale-if-error: PostgreSQL is down; the current generation's rows within
        // grace are better than an error.
        Err(AppError::Unavailable(cause)) if stale.is_some() => {
            log::warn!("database unavailable ({cause}); serving all_properties within grace");
            metrics.lookup(Layer::Query, Outcome::Stale);
            Ok((Arc::new(stale.unwrap_or_default()), Served::Stale))
        }
        Err(e) => Err(e),
    };
    if refreshing {
        cache.release_refresh_lock(&key).await;
    }
    result
}

/// Loads every property from PostgreSQL and stores it under `generation`.
async fn load_and_store(
    state: &AppState,
    key: &str,
    generation: &str,
) -> Result<Arc<Vec<Property>>, AppError> {
    let cache = &state.cache;
    let rows = load(&state.db, state).await?;
    match serde_json::to_vec(rows.as_ref()) {
        Ok(json) => {
            let _ = cache
                .put(
                    key,
                    generation,
                    "application/json",
                    Bytes::from(json),
                    cache.query_ttl(),
                )
                .await;
        }
        Err(e) => log::error!("serialising all_properties: {e}"),
    }
    Ok(rows)
}

async fn load(pool: &PgPool, state: &AppState) -> Result<Arc<Vec<Property>>, AppError> {
    state.cache.metrics().db_load(Layer::Query);
    let rows = crate::db::run(pool, |conn| Ok(Property::all_newest_first(conn)?)).await?;
    Ok(Arc::new(rows))
}

fn decode(body: &[u8]) -> Option<Vec<Property>> {
    serde_json::from_slice(body).ok()
}
