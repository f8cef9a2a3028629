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

/// A parsed listing query. `raw` holds the values, in canonical form, for re-filling the
/// search form and building page links: every spelling of one query renders the same
/// page, as the page cache keys them to one entry (`cache::keys::normalised_url`).
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
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => n,
                _ => return Err(AppError::bad_param("page", "a page number from 1 up")),
            },
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

    /// The canonical identity of this query (parsed values, so `sort=newest`, `page=1`,
    /// `1250` and `1250.00` name the same result page) for the query cache key.
    pub fn cache_id(&self) -> String {
        let pairs = [
            ("sort", self.sort.as_str().to_string()),
            ("page", self.page.to_string()),
            ("q", self.filter.q.clone().unwrap_or_default()),
            ("location", self.filter.location.clone().unwrap_or_default()),
            ("min_price", price_text(self.filter.min_price)),
            ("max_price", price_text(self.filter.max_price)),
        ];
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// The query string for another page of the same search (for pagination links).
    pub fn url_for_page(&self, path: &str, page: usize) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (name, value) in [
            ("q", &self.raw.q),
            ("location", &self.raw.location),
            ("min_price", &self.raw.min_price),
            ("max_price", &self.raw.max_price),
            ("sort", &self.raw.sort),
        ] {
            if !value.is_empty() {
                pairs.push((name, value.clone()));
            }
        }
        if page > 1 {
            pairs.push(("page", page.to_string()));
        }
        if pairs.is_empty() {
            return path.to_string();
        }
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
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
    let key = state.cache.keys().all_properties();
    get_or_fill(&state.cache, &key, &[token::ROWS], || async {
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
    let key = state.cache.keys().query(&query.cache_id());
    get_or_fill(&state.cache, &key, &[token::ROWS], || async {
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
    let offset = (query.page - 1) * PAGE_SIZE;
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
        assert_eq!(param_of("sort=cheapest"), "sort");
        assert_eq!(param_of("min_price=abc"), "min_price");
        assert_eq!(param_of("max_price=1e5"), "max_price");
        assert_eq!(param_of("min_price=10&max_price=5"), "max_price");
        assert_eq!(param_of(&format!("q={}", "x".repeat(201))), "q");
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
            "/properties/?q=loft&sort=price_asc&page=3"
        );
        assert_eq!(
            q.url_for_page("/properties/", 1),
            "/properties/?q=loft&sort=price_asc"
        );
    }
}
