//! Fetching a page of a list query through the query cache — from the seed's
//! `all_properties` while the table is small and the list unfiltered (one entry then
//! serves every page and sort), else from the cached result page — for the HTML list and
//! the JSON API alike. What the entries depend on is a cache rule
//! (`cacheable::rules::QUERY_ENTRY_TOKENS`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cache::query::{Served, get_or_fill};
use crate::error::AppError;
use crate::models::photo::{self, ListingPhoto, PhotosByListing};
use crate::models::property::{Property, Sort};
use crate::routes::cacheable::rules::QUERY_ENTRY_TOKENS;
use crate::routes::list_query::{ListQuery, PAGE_SIZE};
use crate::state::AppState;

/// One page of results: rows borrowed from the shared query-cache value (never copied).
pub struct ResultPage {
    rows: Rows,
    pub count: usize,
    pub page: usize,
    pub num_pages: usize,
    /// Built from a query-cache entry past its TTL because PostgreSQL is down.
    pub stale: bool,
}

/// Where a page's rows live.
enum Rows {
    /// Positions in `all_properties`, in display order.
    All(Arc<AllProperties>, Vec<usize>),
    /// A cached result page.
    Page(Arc<PageOfProperties>),
}

impl ResultPage {
    /// The rows of this page, in display order.
    pub fn rows(&self) -> Vec<&Property> {
        match &self.rows {
            Rows::All(all, picked) => match all.as_ref() {
                AllProperties::Rows(all, _) => picked.iter().map(|&i| &all[i]).collect(),
                AllProperties::TooMany => Vec::new(),
            },
            Rows::Page(page) => page.rows.iter().collect(),
        }
    }

    /// The photos of listing `id` (one of this page's), cover first.
    pub fn photos(&self, id: i64) -> &[ListingPhoto] {
        let photos = match &self.rows {
            Rows::All(all, _) => match all.as_ref() {
                AllProperties::Rows(_, photos) => photos,
                AllProperties::TooMany => return &[],
            },
            Rows::Page(page) => &page.photos,
        };
        photos.get(&id).map_or(&[], Vec::as_slice)
    }
}

/// The seed's query-cache key: `PREFIX:all_properties` (a named entry of the cache).
pub const ALL_PROPERTIES: &str = "all_properties";

/// Above this many properties, `all_properties` no longer holds the rows.
pub const ALL_PROPERTIES_MAX: usize = 200;

/// What `PREFIX:all_properties` holds: every property, newest first, while there are at
/// most `ALL_PROPERTIES_MAX` of them (one entry then serves every page and sort of the
/// unfiltered list). Past that size one blob stops paying (each miss would load, encode
/// and ship every row), so it records only that the table is large, and listing pages
/// are cached one result page at a time (`get_page`; filtered searches always are).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub enum AllProperties {
    /// Every property, newest first, and their photos (what the cards show is part of
    /// the entry, so a photo change, which replaces the entry's token, changes it).
    Rows(Vec<Property>, PhotosByListing),
    /// More than `ALL_PROPERTIES_MAX`: use `get_page`.
    TooMany,
}

/// One page of a listing query and the number of matches.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct PageOfProperties {
    pub rows: Vec<Property>,
    pub count: i64,
    /// The photos of `rows`.
    pub photos: PhotosByListing,
}

/// The seed's `get_all_properties()`: every property, newest first (or `TooMany`),
/// through the query cache.
pub async fn get_all_properties(
    state: &AppState,
) -> Result<(Arc<AllProperties>, Served), AppError> {
    let key = state.cache.keys().named(ALL_PROPERTIES);
    let ttl = state.settings.query_cache_ttl;
    get_or_fill(&state.cache, &key, QUERY_ENTRY_TOKENS, ttl, || async {
        state
            .replicas
            .read(&state.db, |conn| {
                let rows = Property::newest_first(conn, ALL_PROPERTIES_MAX as i64 + 1)?;
                if rows.len() > ALL_PROPERTIES_MAX {
                    return Ok(AllProperties::TooMany);
                }
                let ids: Vec<i64> = rows.iter().map(|p| p.id).collect();
                let photos = photo::of_listings(conn, &ids)?;
                Ok(AllProperties::Rows(rows, photos))
            })
            .await
    })
    .await
}

/// One page of matching properties (`limit` rows from `offset`) and the total, through
/// the query cache under `PREFIX:query:<canonical query>`.
async fn get_page(
    state: &AppState,
    query: &ListQuery,
    limit: i64,
    offset: i64,
) -> Result<(Arc<PageOfProperties>, Served), AppError> {
    let key = state.cache.keys().query(&query.canonical_query());
    let ttl = state.settings.query_cache_ttl;
    get_or_fill(&state.cache, &key, QUERY_ENTRY_TOKENS, ttl, || async {
        let (rows, count) = state
            .properties
            .list(query.filter.clone(), query.sort, limit, offset)
            .await?;
        let photos = state
            .properties
            .photos_of(rows.iter().map(|p| p.id).collect())
            .await?;
        Ok(PageOfProperties {
            rows,
            count,
            photos,
        })
    })
    .await
}

/// Fetches the page asked for, through the query cache: from `all_properties` while
/// the table is small and the list unfiltered, else from the cached result page.
/// Page 1 always exists; a page past the end is a 404.
pub async fn fetch_page(state: &AppState, query: &ListQuery) -> Result<ResultPage, AppError> {
    // A page this far out is past the end of any table (and of `i64` offsets).
    let Some(offset) = (query.page - 1)
        .checked_mul(PAGE_SIZE)
        .filter(|&o| i64::try_from(o).is_ok())
    else {
        return Err(AppError::NotFound);
    };
    if query.filter.is_empty() {
        let (all, served) = get_all_properties(state).await?;
        if let AllProperties::Rows(rows, _) = all.as_ref() {
            let mut order: Vec<usize> = (0..rows.len()).collect();
            if query.sort != Sort::Newest {
                query.sort.sort_positions(rows, &mut order);
            }
            let count = rows.len();
            let picked = order.into_iter().skip(offset).take(PAGE_SIZE).collect();
            return paged(query, Rows::All(all, picked), count, served);
        }
    }
    let (page, served) = get_page(state, query, PAGE_SIZE as i64, offset as i64).await?;
    let count = usize::try_from(page.count).unwrap_or(0);
    paged(query, Rows::Page(page), count, served)
}

fn paged(
    query: &ListQuery,
    rows: Rows,
    count: usize,
    served: Served,
) -> Result<ResultPage, AppError> {
    let num_pages = count.div_ceil(PAGE_SIZE).max(1);
    if query.page > num_pages {
        return Err(AppError::NotFound);
    }
    Ok(ResultPage {
        rows,
        count,
        page: query.page,
        num_pages,
        stale: served == Served::Stale,
    })
}
