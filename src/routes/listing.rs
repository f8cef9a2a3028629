//! The listing query shared by the HTML list and the JSON API: parsing the query string
//! (a bad value is a 400 naming the parameter) and fetching one page of results —
//! through the query cache when unfiltered, from PostgreSQL when filtered.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cache::query::{Served, get_or_fill};
use crate::domain::Price;
use crate::error::AppError;
use crate::models::property::{Property, PropertyFilter, Sort};
use crate::routes::cacheable::token;
use crate::state::AppState;

pub const PAGE_SIZE: usize = 20;
const MAX_Q_CHARS: usize = 200;
const MAX_LOCATION_CHARS: usize = 100;

/// A parsed listing query: the one reading of the listing routes' query string, shared
/// by the page cache (`routes::cacheable`), the handlers and the query cache. Its
/// canonical form (`canonical_query`) is the page key's query, the query-cache key and
/// every pagination link, so every spelling of one query (`page=02`, `min_price=0005.0`,
/// `sort=newest`) is one page with one key; `raw` holds the same canonical values for the
/// search form. A query `parse` refuses is never cached: it is a 400 naming the
/// parameter.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filter: PropertyFilter,
    pub sort: Sort,
    pub page: usize,
    pub raw: RawListQuery,
}

#[derive(Clone, Debug, Default)]
pub struct RawListQuery {
    pub q: String,
    pub location: String,
    pub min_price: String,
    pub max_price: String,
    pub sort: String,
}

fn price_text(price: Option<Price>) -> String {
    price.map(Price::query_value).unwrap_or_default()
}

/// A page number: ASCII digits, at least 1. A number too large for `usize` is still a
/// page (past the end, like any other that far out: a 404), never a bad value.
fn parse_page(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match v.parse::<usize>() {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(_) => Some(usize::MAX),
    }
}

impl ListQuery {
    /// Parses the known parameters (first occurrence wins; empty means absent);
    /// unknown parameters are ignored.
    pub fn parse(query_string: &str) -> Result<Self, AppError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query_string)
            .map_err(|_| AppError::bad_param("query", "the query string is malformed"))?;
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let text = |name: &str, max: usize| -> Result<Option<String>, AppError> {
            match get(name) {
                Some(v) if v.chars().count() > max => Err(AppError::bad_param(
                    name,
                    format!("at most {max} characters"),
                )),
                Some(v) if v.chars().any(char::is_control) => Err(AppError::bad_param(
                    name,
                    "control characters are not allowed",
                )),
                other => Ok(other),
            }
        };
        let price = |name: &str| -> Result<Option<Price>, AppError> {
            get(name)
                .map(|v| Price::parse(&v).map_err(|m| AppError::bad_param(name, m)))
                .transpose()
        };
        let page = match get("page") {
            None => 1,
            Some(v) => parse_page(&v)
                .ok_or_else(|| AppError::bad_param("page", "a page number from 1 up"))?,
        };
        let sort = match get("sort") {
            None => Sort::default(),
            Some(v) => Sort::parse(&v).ok_or_else(|| {
                AppError::bad_param("sort", "one of newest, price_asc, price_desc")
            })?,
        };
        let filter = PropertyFilter {
            q: text("q", MAX_Q_CHARS)?,
            location: text("location", MAX_LOCATION_CHARS)?,
            min_price: price("min_price")?,
            max_price: price("max_price")?,
        };
        if let (Some(min), Some(max)) = (filter.min_price, filter.max_price)
            && min > max
        {
            return Err(AppError::bad_param(
                "max_price",
                "must not be lower than min_price",
            ));
        }
        Ok(Self {
            raw: RawListQuery {
                q: filter.q.clone().unwrap_or_default(),
                location: filter.location.clone().unwrap_or_default(),
                min_price: price_text(filter.min_price),
                max_price: price_text(filter.max_price),
                sort: match sort {
                    Sort::Newest => String::new(),
                    other => other.as_str().to_string(),
                },
            },
            filter,
            sort,
            page,
        })
    }

    /// The canonical query string of page `page` of this query: each known parameter
    /// that is not at its default, in canonical spelling, sorted by name (empty for
    /// page 1 of the unfiltered newest-first list).
    fn canonical_query_for(&self, page: usize) -> String {
        let page = if page > 1 {
            page.to_string()
        } else {
            String::new()
        };
        let pairs: Vec<(&str, &str)> = [
            ("location", self.raw.location.as_str()),
            ("max_price", &self.raw.max_price),
            ("min_price", &self.raw.min_price),
            ("page", &page),
            ("q", &self.raw.q),
            ("sort", &self.raw.sort),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// This query's canonical query string (see the type's docs).
    pub fn canonical_query(&self) -> String {
        self.canonical_query_for(self.page)
    }

    /// The dependency tokens of this query's list page (see `routes::cacheable::token`):
    /// every list page depends on `lists`; a filtered one on `search`, an unfiltered
    /// price-sorted one on `sorted`, an unfiltered newest-first one on its own page.
    pub fn page_tokens(&self) -> Vec<String> {
        let narrow = if !self.filter.is_empty() {
            token::SEARCH.to_string()
        } else if self.sort != Sort::Newest {
            token::SORTED.to_string()
        } else {
            token::newest(self.page)
        };
        vec![token::LISTS.to_string(), narrow]
    }

    /// The link to another page of the same search (for pagination links): its
    /// canonical URL, so a link is the very key the page is cached under.
    pub fn url_for_page(&self, path: &str, page: usize) -> String {
        match self.canonical_query_for(page) {
            q if q.is_empty() => path.to_string(),
            q => format!("{path}?{q}"),
        }
    }
}

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
                AllProperties::Rows(all) => picked.iter().map(|&i| &all[i]).collect(),
                AllProperties::TooMany => Vec::new(),
            },
            Rows::Page(page) => page.rows.iter().collect(),
        }
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
    /// Every property, newest first.
    Rows(Vec<Property>),
    /// More than `ALL_PROPERTIES_MAX`: use `get_page`.
    TooMany,
}

/// One page of a listing query and the number of matches.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct PageOfProperties {
    pub rows: Vec<Property>,
    pub count: i64,
}

/// The seed's `get_all_properties()`: every property, newest first (or `TooMany`),
/// through the query cache.
pub async fn get_all_properties(
    state: &AppState,
) -> Result<(Arc<AllProperties>, Served), AppError> {
    let key = state.cache.keys().named(ALL_PROPERTIES);
    let ttl = state.settings.query_cache_ttl;
    get_or_fill(&state.cache, &key, &[token::ROWS], ttl, || async {
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
    get_or_fill(&state.cache, &key, &[token::ROWS], ttl, || async {
        let (rows, count) = state
            .properties
            .list(query.filter.clone(), query.sort, limit, offset)
            .await?;
        Ok(PageOfProperties { rows, count })
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
        if let AllProperties::Rows(rows) = all.as_ref() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(qs: &str) -> String {
        match ListQuery::parse(qs) {
            Err(AppError::BadRequest { param, .. }) => param,
            other => panic!("{qs}: expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_value_names_its_parameter() {
        assert_eq!(param_of("page=0"), "page");
        assert_eq!(param_of("page=abc"), "page");
        assert_eq!(param_of("page=-1"), "page");
        assert_eq!(param_of("page=1.5"), "page");
        assert_eq!(param_of("page=%2B3"), "page");
        assert_eq!(param_of("sort=cheapest"), "sort");
        assert_eq!(param_of("min_price=abc"), "min_price");
        assert_eq!(param_of("max_price=1e5"), "max_price");
        assert_eq!(param_of("min_price=10&max_price=5"), "max_price");
        assert_eq!(param_of(&format!("q={}", "x".repeat(201))), "q");
    }

    #[test]
    fn any_page_number_from_1_up_is_a_page_however_far_out() {
        for (qs, page) in [
            ("page=10000000", 10_000_000),
            ("page=99999999999999999999999", usize::MAX),
        ] {
            assert_eq!(ListQuery::parse(qs).unwrap().page, page, "{qs}");
        }
    }

    #[test]
    fn empty_and_unknown_parameters_are_ignored() {
        let q = ListQuery::parse("q=&location=&sort=&page=&utm_source=x").unwrap();
        assert!(q.filter.is_empty());
        assert_eq!(q.page, 1);
        assert_eq!(q.sort, Sort::Newest);
    }

    #[test]
    fn pagination_links_keep_the_filters() {
        let q = ListQuery::parse("q=loft&sort=price_asc&page=2").unwrap();
        assert_eq!(
            q.url_for_page("/properties/", 3),
            "/properties/?page=3&q=loft&sort=price_asc"
        );
        assert_eq!(
            q.url_for_page("/properties/", 1),
            "/properties/?q=loft&sort=price_asc"
        );
    }
}
