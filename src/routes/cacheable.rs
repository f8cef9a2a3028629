//! Which requests the page cache may answer — the one declaration of the cacheable
//! routes (`/properties/`, `/properties/{id}/` and their `/api/` twins) and of their
//! canonical URLs — and the two middlewares that hand them to `cache::page`.
//!
//! The page cache sits twice around the session middleware (see `startup.rs`): the outer
//! one takes every request without a session cookie, so a hit costs neither the session
//! middleware nor routing; the inner one takes requests with a session cookie, where the
//! session tells a signed-in admin (bypass) from a visitor whose cookie only holds a CSRF
//! token (cached as usual). Each request is handled exactly once.

use std::borrow::Cow;

use actix_session::{SessionExt, SessionStatus};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::auth;
use crate::cache::Cache;
use crate::cache::page::{self, Cacheable};
use crate::db::PgPool;
use crate::models::hooks::{Change, ModelHooks};
use crate::models::property::{Property, Sort};
use crate::routes::list_query::{ListQuery, PAGE_SIZE};
use crate::state::AppState;

/// The dependency tokens (see the module docs of `cache`): what each cached entry
/// depends on, and which tokens each write replaces (`tokens_replaced_by`), declared
/// here together so that the two stay one rule.
pub mod token {
    /// Every list page: an insert or a delete shifts them all (and their counts).
    pub const LISTS: &str = "lists";
    /// The unfiltered price-sorted list pages (both directions).
    pub const SORTED: &str = "sorted";
    /// Every filtered list page (`q`, `location`, `min_price`, `max_price`).
    pub const SEARCH: &str = "search";
    /// Every query-cache entry (`all_properties`, result pages).
    pub const ROWS: &str = "rows";

    /// A listing's detail page and its API twin.
    pub fn listing(id: i64) -> String {
        format!("listing:{id}")
    }

    /// Page `n` of the unfiltered newest-first list (HTML and API).
    pub fn newest(n: usize) -> String {
        format!("newest:{n}")
    }
}

/// The dependency tokens of a list page (HTML or API): every list page depends on
/// `lists`; a filtered one on `search`, an unfiltered price-sorted one on `sorted`, an
/// unfiltered newest-first one on its own page.
fn list_page_tokens(query: &ListQuery) -> Vec<String> {
    let narrow = if !query.filter.is_empty() {
        token::SEARCH.to_string()
    } else if query.sort != Sort::Newest {
        token::SORTED.to_string()
    } else {
        token::newest(query.page)
    };
    vec![token::LISTS.to_string(), narrow]
}

/// The cache's model hook (the seed's signal receivers): after each committed write —
/// a whole `seed` batch counts as one — replace the tokens of every entry that could
/// show it and delete `PREFIX:all_properties`, in one `MULTI`, before the write is
/// acknowledged (see the module docs of `cache`).
pub struct CacheInvalidation {
    cache: Cache,
    db: PgPool,
}

impl CacheInvalidation {
    pub fn new(cache: Cache, db: PgPool) -> Self {
        Self { cache, db }
    }

    /// The tokens a write replaces — every token of every page that could show it:
    /// - an insert or a delete shifts every list page (`lists`); a delete also ends the
    ///   listing's own pages;
    /// - an update changes the listing's own pages, the one newest-first page that shows
    ///   it (`created_at` never changes, so it never moves in that order; its position is
    ///   read after the commit, and only an insert or a delete — which replace `lists` —
    ///   can move it), every price-sorted page (its card may show there and its price may
    ///   move it across them) and every filtered page (it may enter or leave any);
    /// - every write changes the rows the query cache holds (`rows`), listed first: pages
    ///   are built from query results, and in a cluster the tokens are replaced in this
    ///   order (see "Redis Cluster" in the module docs of `cache`).
    async fn tokens_replaced_by(&self, change: Change<'_>) -> Vec<String> {
        let mut tokens = vec![token::ROWS.to_string()];
        match change {
            Change::Inserted(_) => tokens.push(token::LISTS.into()),
            Change::Deleted(row) => tokens.extend([token::LISTS.into(), token::listing(row.id)]),
            Change::Updated { after, .. } => {
                let row = after.clone();
                let position = crate::db::run(&self.db, move |conn| {
                    Ok(Property::newest_position(conn, &row)?)
                })
                .await;
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
}

impl CacheInvalidation {
    /// Drops every cached page that shows listing `id` (what an edit of it would drop):
    /// the tokens replaced, or `None` when no such listing exists (then only its own
    /// token is replaced, in case pages of it were cached before it was deleted).
    pub async fn purge_listing(
        &self,
        id: i64,
    ) -> Result<Option<Vec<String>>, crate::error::AppError> {
        let row = crate::db::run(&self.db, move |conn| Ok(Property::find(conn, id)?)).await?;
        let (tokens, found) = match &row {
            Some(row) => (
                self.tokens_replaced_by(Change::Updated {
                    before: row,
                    after: row,
                })
                .await,
                true,
            ),
            None => (vec![token::listing(id)], false),
        };
        self.cache.invalidate(&tokens).await;
        Ok(found.then_some(tokens))
    }

    /// Drops the cached page of one URL (any spelling): its entry, and — so that no
    /// instance's in-process copy outlives it — its narrowest token, which the pages
    /// sharing it lose too (a detail page's API twin; every price-sorted or every
    /// filtered page). `None` when the URL is not a cacheable page.
    pub async fn purge_url(&self, url: &str) -> Option<(String, String)> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let (canonical, deps) = canonical_page(path, query)?;
        let narrowest = deps.last()?.clone();
        self.cache.forget(&self.cache.keys().page(&canonical)).await;
        self.cache
            .invalidate(std::slice::from_ref(&narrowest))
            .await;
        Some((canonical, narrowest))
    }
}

impl ModelHooks for CacheInvalidation {
    fn after_commit<'a>(&'a self, change: Change<'a>) -> BoxFuture<'a, ()> {
        async move {
            let tokens = self.tokens_replaced_by(change).await;
            if self.cache.invalidate(&tokens).await {
                log::debug!("cache invalidated: {}", tokens.join(", "));
            }
        }
        .boxed()
    }
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
/// canonical form of its query (`ListQuery::canonical_query`: parsed values, defaults
/// dropped, sorted by name; unknown parameters are dropped, so junk in a URL cannot grow
/// the keyspace) — and the tokens the page depends on. A query the handler refuses
/// makes the request uncacheable: it gets a 400 (`BYPASS`) that reads nothing from the
/// database.
pub fn canonical_page(path: &str, query: &str) -> Option<(String, Vec<String>)> {
    let path = match cacheable_path(path)? {
        Route::Detail(path, id) => return Some((path.into_owned(), vec![token::listing(id)])),
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

/// The page cache for requests without a session cookie (outside the session middleware).
pub async fn page_cache_outer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if auth::has_session_cookie(req.request()) {
        return page::pass_through(req, next).await;
    }
    serve(req, next, false).await
}

/// The page cache for requests with a session cookie (inside the session middleware).
pub async fn page_cache_inner(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !auth::has_session_cookie(req.request()) {
        return page::pass_through(req, next).await;
    }
    serve(req, next, true).await
}

async fn serve(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    session_cookie: bool,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
        return page::pass_through(req, next).await;
    };
    let cacheable = decide(&req, session_cookie, state.settings.page_cache_ttl);
    let personal = matches!(cacheable, Cacheable::NotForThisRequest);
    let mut res = page::serve(&state.cache, cacheable, req, next).await?;
    // A page made for one signed-in admin (or one set of credentials): not for any shared
    // cache, and not to outlive the sign-in in the browser's cache (as the admin pages).
    if personal && !res.headers().contains_key(CACHE_CONTROL) {
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    }
    Ok(res)
}

/// A cacheable page unless the request is not anonymous (credentials, or a session
/// cookie whose session is a signed-in admin's). `session_cookie`: whether the request
/// has one (the caller has just looked); `ttl`: how long a page is fresh.
fn decide(req: &ServiceRequest, session_cookie: bool, ttl: std::time::Duration) -> Cacheable {
    let Some((url, deps)) = canonical_page(req.path(), req.query_string()) else {
        return Cacheable::No;
    };
    if req.headers().contains_key("authorization")
        || (session_cookie && auth::current_admin(&req.get_session()).is_some())
    {
        return Cacheable::NotForThisRequest;
    }
    Cacheable::Page { url, deps, ttl }
}

/// Innermost: a response whose session changed (the session middleware will set a
/// cookie on it) is marked `Cache-Control: private`, for the page cache and any other
/// shared cache, unless the handler chose its own `Cache-Control`.
pub async fn private_if_session_written(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    if res.request().get_session().status() != SessionStatus::Unchanged
        && !res.headers().contains_key(CACHE_CONTROL)
    {
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    }
    Ok(res)
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
}
