//! The list query: the query string of the listing routes (`/properties/` and its API
//! twin), read once (`ListQuery::parse`) and written back in one canonical form
//! (`canonical_query`: parsed values, defaults and unknown parameters dropped, sorted by
//! name). That one form is the page key's query (`cacheable::rules`), the query-cache key
//! and the pagination links (`listing`), and the search form shows its values — so every
//! spelling of one search (`page=02`, `min_price=0005.0`, `sort=newest`) is one page with
//! one key, and a filter is added here (and in the form's template) only. A query `parse`
//! refuses is never cached: it is a 400 naming the parameter.
//!
//! This module knows nothing of caching; the cache rules and the fetching import it.

use crate::domain::Price;
use crate::error::AppError;
use crate::models::property::{PropertyFilter, Sort};

/// Listings per list page.
pub const PAGE_SIZE: usize = 20;

/// The list query's parameters, sorted by name: the only ones that form a page key
/// (in `ListQuery::canonical_query`'s order; a unit test holds the two together).
pub const LIST_PARAMS: &[&str] = &["location", "max_price", "min_price", "page", "q", "sort"];

/// The parameters whose values are what a visitor typed: key names holding them are
/// shown to signed-in admins only (`routes::cache`).
pub const FREE_TEXT_PARAMS: &[&str] = &["location", "q"];

const MAX_Q_CHARS: usize = 200;
const MAX_LOCATION_CHARS: usize = 100;

/// A parsed list query (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filter: PropertyFilter,
    pub sort: Sort,
    pub page: usize,
    /// The filters in canonical spelling: what the search form shows.
    pub form: SearchForm,
}

/// Each filter's canonical text, empty when not filtered on.
#[derive(Clone, Debug, Default)]
pub struct SearchForm {
    pub q: String,
    pub location: String,
    pub min_price: String,
    pub max_price: String,
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
            form: SearchForm {
                q: filter.q.clone().unwrap_or_default(),
                location: filter.location.clone().unwrap_or_default(),
                min_price: price_text(filter.min_price),
                max_price: price_text(filter.max_price),
            },
            filter,
            sort,
            page,
        })
    }

    /// The canonical query string of page `page` of this query: each parameter that is
    /// not at its default, in canonical spelling, sorted by name (empty for page 1 of the
    /// unfiltered newest-first list).
    fn canonical_query_for(&self, page: usize) -> String {
        let page = if page > 1 {
            page.to_string()
        } else {
            String::new()
        };
        let sort = match self.sort {
            Sort::Newest => "",
            other => other.as_str(),
        };
        let pairs: Vec<(&str, &str)> = [
            ("location", self.form.location.as_str()),
            ("max_price", &self.form.max_price),
            ("min_price", &self.form.min_price),
            ("page", &page),
            ("q", &self.form.q),
            ("sort", sort),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// This query's canonical query string (see the module docs).
    pub fn canonical_query(&self) -> String {
        self.canonical_query_for(self.page)
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

/// Whether a query string (of a page key or a query-cache key) holds a free-text
/// parameter (`FREE_TEXT_PARAMS`).
pub fn holds_free_text(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        FREE_TEXT_PARAMS.contains(&name)
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
        assert_eq!(q.canonical_query(), "");
    }

    #[test]
    fn the_canonical_form_names_every_parameter_in_list_params_order() {
        let every = "sort=price_desc&q=loft&page=3&min_price=1&max_price=2&location=Oslo";
        let canonical = ListQuery::parse(every).unwrap().canonical_query();
        let names: Vec<&str> = canonical
            .split('&')
            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
            .collect();
        assert_eq!(names, LIST_PARAMS);
        assert!(FREE_TEXT_PARAMS.iter().all(|p| LIST_PARAMS.contains(p)));
    }

    #[test]
    fn the_search_form_shows_the_canonical_values() {
        let q = ListQuery::parse("min_price=0005.0&q=%20loft%20&location=Oslo").unwrap();
        assert_eq!(q.form.min_price, "5");
        assert_eq!(q.form.q, "loft");
        assert_eq!(q.form.location, "Oslo");
        assert_eq!(q.form.max_price, "");
    }

    #[test]
    fn free_text_is_found_by_parameter_name() {
        assert!(holds_free_text("page=2&q=secret"));
        assert!(holds_free_text("location=home&page=1"));
        assert!(!holds_free_text("page=2&sort=price_asc"));
        assert!(!holds_free_text("sort=quality"));
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
