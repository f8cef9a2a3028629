//! The page cache's middlewares. Per request, they decide whether the page cache may
//! answer (`decide`: a cacheable page by `rules::canonical_page`, and only for an
//! anonymous request — a page made for a signed-in admin must never reach a visitor) and
//! hand the request to `cache::page`; innermost, `private_if_session_written` keeps a
//! response that writes a session out of every shared cache.
//!
//! The page cache sits twice around the session middleware (see `startup.rs`): the outer
//! one takes every request without a session cookie, so a hit costs neither the session
//! middleware nor routing; the inner one takes requests with a session cookie, where the
//! session tells a signed-in admin (bypass) from a visitor whose cookie only holds a CSRF
//! token (cached as usual). Each request is handled exactly once.

use actix_session::{SessionExt, SessionStatus};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;

use super::rules::canonical_page;
use crate::auth;
use crate::cache::page::{self, Cacheable};
use crate::state::AppState;

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
