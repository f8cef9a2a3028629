//! The site's cache rules, side by side: what each cached entry depends on and what
//! each write replaces (two halves of one rule: a write must replace a token of every
//! entry that could show it — else a stale page is served — and no other, so an edit
//! of one listing leaves the other listings' pages cached; see the module docs of
//! `cache` for why a replaced token drops its entries), then which requests are cached
//! pages, in their one canonical spelling (one page, one key).

use std::borrow::Cow;

use crate::db::PgPool;
use crate::models::hooks::Change;
use crate::models::property::{Property, Sort};
use crate::routes::list_query::{ListQuery, PAGE_SIZE};

/// The dependency tokens: each names what depends on it and which writes replace it.
pub mod token {
    /// Every list page (HTML and API). Replaced by an insert or a delete: they shift
    /// every page and its count.
    pub const LISTS: &str = "lists";
    /// The unfiltered price-sorted list pages. Replaced by an update: the listing's card
    /// shows there, and its price may move it across them.
    pub const SORTED: &str = "sorted";
    /// Every filtered list page (any filter of `ListQuery`). Replaced by an update: the
    /// listing may enter or leave any.
    pub const SEARCH: &str = "search";
    /// Every query-cache entry (`all_properties`, result pages). Replaced by every write.
    pub const ROWS: &str = "rows";

    /// A listing's detail page and its API twin. Replaced by an update or a delete of it.
    pub fn listing(id: i64) -> String {
        format!("listing:{id}")
    }

    /// Page `n` of the unfiltered newest-first list. Replaced by an update of a listing
    /// it shows (`created_at` never changes, so an edit never moves a listing in it).
    pub fn newest(n: usize) -> String {
        format!("newest:{n}")
    }
}

/// What a detail page and its API twin depend on.
pub fn detail_page_tokens(id: i64) -> Vec<String> {
    vec![token::listing(id)]
}

/// What a list page depends on: `lists`, then its narrowest token — `search` when
/// filtered, `sorted` when price-sorted, else its own newest-first page.
pub fn list_page_tokens(query: &ListQuery) -> Vec<String> {
    let narrow = if !query.filter.is_empty() {
        token::SEARCH.to_string()
    } else if query.sort != Sort::Newest {
        token::SORTED.to_string()
    } else {
        token::newest(query.page)
    };
    vec![token::LISTS.to_string(), narrow]
}

/// What every query-cache entry depends on.
pub const QUERY_ENTRY_TOKENS: &[&str] = &[token::ROWS];

/// What a write replaces: every token of every entry that could show it (each token's
/// docs say which writes, and why). `rows` comes first: pages are built from query
/// results, and in a cluster the tokens are replaced in this order ("Redis Cluster" in
/// the module docs of `cache`). An updated listing's newest-first page is found from its
/// position, read after the commit (only an insert or a delete, which replace `lists`,
/// can move it); if that read fails, `lists` is replaced instead.
pub async fn tokens_replaced_by(db: &PgPool, change: Change<'_>) -> Vec<String> {
    let mut tokens = vec![token::ROWS.to_string()];
    match change {
        Change::Inserted(_) => tokens.push(token::LISTS.into()),
        Change::Deleted(row) => tokens.extend([token::LISTS.into(), token::listing(row.id)]),
        Change::Updated { after, .. } => {
            let row = after.clone();
            let position =
                crate::db::run(db, move |conn| Ok(Property::newest_position(conn, &row)?)).await;
            let newest = match position {
                Ok(n) => token::newest(usize::try_from(n).unwrap_or(0) / PAGE_SIZE + 1),
                // Where it shows is unknown: every list page.
                Err(_) => token::LISTS.into(),
            };
            tokens.extend([
                token::listing(after.id),
                newest,
                token::SORTED.into(),
                token::SEARCH.into(),
            ]);
        }
    }
    tokens
}

/// What a cacheable path is, in its one canonical spelling.
enum Route<'a> {
    /// `/properties/` or `/api/properties/`.
    List(Cow<'a, str>),
    /// A detail page or its API twin: the canonical path and the id.
    Detail(Cow<'a, str>, i64),
}

/// A cacheable path in its one canonical spelling; `None` when the path is not
/// page-cached at all (admin, health, static files…). Percent-encoded bytes are decoded
/// as the router decodes them (an encoded `/` never joins segments) and a listing id is
/// written without leading zeros, so `/api/%70roperties/0004/` is `/api/properties/4/`.
/// An id the handler would not accept (`+1`) is no cacheable path: the handler answers
/// 404 without a database read.
fn cacheable_path(path: &str) -> Option<Route<'_>> {
    let path = if path.contains('%') {
        let mut decoded = String::with_capacity(path.len());
        for (i, segment) in path.split('/').enumerate() {
            let segment = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()?;
            if segment.contains('/') {
                return None;
            }
            if i > 0 {
                decoded.push('/');
            }
            decoded.push_str(&segment);
        }
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(path)
    };
    match path.as_ref() {
        "/properties/" | "/api/properties/" => Some(Route::List(path)),
        p => {
            let (base, rest) = match p.strip_prefix("/api/properties/") {
                Some(rest) => ("/api/properties/", rest),
                None => ("/properties/", p.strip_prefix("/properties/")?),
            };
            let raw = rest.strip_suffix('/')?;
            let id = crate::domain::parse_id(raw)?;
            if raw.starts_with('0') || matches!(path, Cow::Owned(_)) {
                return Some(Route::Detail(Cow::Owned(format!("{base}{id}/")), id));
            }
            Some(Route::Detail(path, id))
        }
    }
}

/// The page-cache identity of a request — its canonical path plus, for a list, the
/// list query's canonical form (`ListQuery::canonical_query`: unknown parameters are
/// dropped, so junk in a URL cannot grow the keyspace) — and the tokens the page depends
/// on. A query the handler refuses makes the request uncacheable: it gets a 400
/// (`BYPASS`) that reads nothing from the database.
pub fn canonical_page(path: &str, query: &str) -> Option<(String, Vec<String>)> {
    let path = match cacheable_path(path)? {
        Route::Detail(path, id) => return Some((path.into_owned(), detail_page_tokens(id))),
        Route::List(path) => path,
    };
    let list = ListQuery::parse(query).ok()?;
    let deps = list_page_tokens(&list);
    Some((list.url_for_page(&path, list.page), deps))
}

/// The canonical URL of a cacheable page (`canonical_page` without the tokens).
pub fn normalised_url(path: &str, query: &str) -> Option<String> {
    canonical_page(path, query).map(|(url, _)| url)
}

/// The route pattern of a cacheable path (for the latency histogram's label), without
/// asking the router (hits are answered before routing).
pub fn route_of(path: &str) -> Option<&'static str> {
    Some(match cacheable_path(path)? {
        Route::List(p) if p.starts_with("/api/") => "/api/properties/",
        Route::List(_) => "/properties/",
        Route::Detail(p, _) if p.starts_with("/api/") => "/api/properties/{id}/",
        Route::Detail(..) => "/properties/{id}/",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_do_not_change_the_key() {
        assert_eq!(
            normalised_url("/properties/", "utm=1&sort=price_asc&page=2&zz=3").as_deref(),
            Some("/properties/?page=2&sort=price_asc")
        );
        assert_eq!(
            normalised_url("/properties/", "junk=1").as_deref(),
            Some("/properties/")
        );
    }

    #[test]
    fn spelled_out_defaults_are_the_same_as_absent_ones() {
        assert_eq!(
            normalised_url("/properties/", "sort=newest&page=1").as_deref(),
            Some("/properties/")
        );
    }

    #[test]
    fn empty_values_are_the_same_as_absent_ones() {
        assert_eq!(
            normalised_url("/properties/", "q=&location=&sort=price_asc").as_deref(),
            Some("/properties/?sort=price_asc")
        );
    }

    #[test]
    fn every_spelling_of_a_page_has_the_canonical_key() {
        for (spelling, canonical) in [
            ("/properties/007/", "/properties/7/"),
            ("/properties/%37/", "/properties/7/"),
            ("/api/%70roperties/%30%37/", "/api/properties/7/"),
            ("/api/%70roperties/", "/api/properties/"),
        ] {
            assert_eq!(normalised_url(spelling, "").as_deref(), Some(canonical));
        }
        assert_eq!(
            normalised_url("/properties/", "page=02&min_price=0005.0&max_price=9.50").as_deref(),
            Some("/properties/?max_price=9.5&min_price=5&page=2")
        );
        assert_eq!(
            normalised_url("/properties/", "page=01&sort=newest").as_deref(),
            Some("/properties/")
        );
    }

    #[test]
    fn a_value_the_handler_refuses_or_a_joined_segment_is_not_cached() {
        for (path, query) in [
            ("/properties/+7/", ""),
            ("/properties%2F7/", ""),
            ("/properties/%2F7/", ""),
            ("/properties/%FF/", ""),
            ("/properties/", "page=abc"),
            ("/properties/", "page=0"),
            ("/properties/", "q=%07"),
            ("/properties/", "sort=cheapest"),
            ("/properties/", "min_price=-1"),
        ] {
            assert_eq!(normalised_url(path, query), None, "{path}?{query}");
        }
    }

    #[test]
    fn detail_pages_ignore_every_parameter_and_other_paths_are_not_cached() {
        assert_eq!(
            normalised_url("/api/properties/42/", "x=1").as_deref(),
            Some("/api/properties/42/")
        );
        assert_eq!(normalised_url("/admin/", ""), None);
        assert_eq!(normalised_url("/properties/abc/", ""), None);
        assert_eq!(normalised_url("/cache/", ""), None);
    }

    #[test]
    fn a_list_page_depends_on_lists_and_its_narrowest_token() {
        for (query, narrowest) in [
            ("", "newest:1"),
            ("page=3", "newest:3"),
            ("sort=price_desc&page=2", "sorted"),
            ("q=loft&sort=price_asc", "search"),
            ("min_price=5", "search"),
        ] {
            let (_, deps) = canonical_page("/api/properties/", query).unwrap();
            assert_eq!(deps, [token::LISTS, narrowest], "{query}");
        }
        let (_, deps) = canonical_page("/properties/007/", "page=2").unwrap();
        assert_eq!(deps, ["listing:7"]);
    }
}
