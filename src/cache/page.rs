//! The page cache — the seed's `cache_page(60 * 15)` as actix middleware, in the two
//! halves of Django's cache middleware: before the handler, look the normalised URL up
//! (one `MGET` of generation + entry) and answer a hit without running the handler;
//! after it, store an anonymous 200 response that sets no cookie. Requests of signed-in
//! admins (and any with an `Authorization` header) bypass the cache entirely; a visitor
//! whose cookie holds only a CSRF token is still anonymous.
//!
//! Every response gets `X-Cache` (`HIT`, `MISS`, `STALE` or `BYPASS`); cacheable ones
//! also get a strong `ETag` (a matching `If-None-Match` gets 304) and
//! `Cache-Control: no-cache`, so browsers revalidate instead of keeping stale copies.

use std::sync::Arc;
use std::time::Instant;

use actix_session::{SessionExt, SessionStatus};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderName,
    HeaderValue, IF_NONE_MATCH, SET_COOKIE, VARY,
};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};

use super::entry::{Coding, Entry, now_ms};
use super::generation;
use super::keys::normalised_url;
use super::metrics::{Layer, Outcome};
use super::{Cache, Freshness};
use crate::access_log;
use crate::auth;
use crate::state::AppState;
use crate::timing;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Marks a response built from stale data (the query cache served an expired entry
/// because PostgreSQL is down): it is sent with `X-Cache: STALE` and never stored.
#[derive(Clone, Copy, Debug)]
pub struct BuiltFromStaleData;

/// The middleware, in two places around the session middleware (see `startup.rs`): the
/// outer one takes every request without a session cookie, so a hit costs neither the
/// session middleware nor routing; the inner one takes requests with a session cookie,
/// where the session tells a signed-in admin (bypass) from a visitor whose cookie only
/// holds a CSRF token (cached as usual). Each request is handled exactly once.
pub async fn page_cache_outer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if auth::has_session_cookie(req.request()) {
        return pass_through(req, next).await;
    }
    page_cache(req, next, false).await
}

/// See `page_cache_outer`.
pub async fn page_cache_inner(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !auth::has_session_cookie(req.request()) {
        return pass_through(req, next).await;
    }
    page_cache(req, next, true).await
}

/// The page cache for one request: non-cacheable requests are marked `BYPASS`.
/// `session_cookie`: whether the request has one (the caller has just looked).
async fn page_cache(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    session_cookie: bool,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let access = access_log::enabled().then(|| {
        let peer = req.peer_addr().map(|a| a.ip().to_string());
        (
            peer.unwrap_or_else(|| "-".into()),
            req.method().clone(),
            req.uri().clone(),
        )
    });
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let cache_key = if read_only {
        cache_key_for(&req, &state.cache, session_cookie)
    } else {
        None
    };
    let (result, timings) = timing::scope(generation::request_scope(read_only, async {
        match cache_key {
            None => pass_through(req, next).await.map(|r| (r, Outcome::Bypass)),
            Some(key) => cached(req, next, &state.cache, &key).await,
        }
    }))
    .await;
    let (mut res, outcome) = result?;
    // Hits were answered before routing: name their route from the path (asking the
    // router would run its pattern matching for nothing); routed requests know theirs.
    let route = match outcome {
        Outcome::Hit | Outcome::Stale => route_of_cacheable_path(res.request().path()).into(),
        _ => res
            .request()
            .match_pattern()
            .unwrap_or_else(|| route_of_cacheable_path(res.request().path()).into()),
    };
    if matches!(outcome, Outcome::Bypass) && cache_key_for_counting(&res) {
        state.cache.metrics().lookup(Layer::Page, Outcome::Bypass);
    }
    let elapsed = started.elapsed();
    let headers = res.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(outcome.as_header()));
    if let Ok(v) = HeaderValue::try_from(timings.header(elapsed)) {
        headers.insert(SERVER_TIMING, v);
    }
    state
        .cache
        .metrics()
        .observe_request(&route, outcome.as_header(), elapsed.as_secs_f64());
    // The access log: one line per request, with the cache outcome. Written here rather
    // than by actix's Logger, which wraps every body in a byte-counting stream; batched
    // (see `access_log`).
    if let Some((peer, method, uri)) = access {
        let size = match res.response().body().size() {
            actix_web::body::BodySize::Sized(n) => n.to_string(),
            _ => "-".into(),
        };
        access_log::write(format_args!(
            "{peer} \"{method} {uri}\" {} {size} {} {:.3}ms",
            res.status().as_u16(),
            outcome.as_header(),
            elapsed.as_secs_f64() * 1e3
        ));
    }
    Ok(res)
}

/// The route pattern of a cacheable path (for the latency histogram's label).
fn route_of_cacheable_path(path: &str) -> &'static str {
    match path {
        "/properties/" => "/properties/",
        "/api/properties/" => "/api/properties/",
        p if p.starts_with("/api/properties/") => "/api/properties/{id}/",
        p if p.starts_with("/properties/") => "/properties/{id}/",
        _ => "unmatched",
    }
}

/// Bypasses are counted only for requests to cacheable pages (not static files, admin…).
fn cache_key_for_counting(res: &ServiceResponse<BoxBody>) -> bool {
    let req = res.request();
    normalised_url(req.path(), req.query_string()).is_some()
}

/// The page key of a GET or HEAD, or `None` when it must not be served from or stored
/// in the cache: not a cacheable route, or not anonymous (credentials, or a session
/// cookie whose session is a signed-in admin's).
fn cache_key_for(req: &ServiceRequest, cache: &Cache, session_cookie: bool) -> Option<String> {
    if req.headers().contains_key("authorization")
        || (session_cookie && auth::current_admin(&req.get_session()).is_some())
    {
        return None;
    }
    let url = normalised_url(req.path(), req.query_string())?;
    Some(cache.keys().page(&url))
}

/// Calls the rest of the chain (session middleware, router, handler); `Next::call`
/// returns a boxed future, so this adds little to the size of ours.
async fn pass_through(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A cacheable request: a fresh entry is answered here; an expired entry and a miss are
/// handled by `expired` and `miss`, whose futures are boxed so that the future of a hit
/// stays small (it is moved into place for every request).
async fn cached<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    cache: &Cache,
    key: &str,
) -> Result<(ServiceResponse<BoxBody>, Outcome), actix_web::Error> {
    let lookup = match cache.lookup(key).await {
        Ok(lookup) => lookup,
        Err(_) => return Ok((pass_through(req, next).await?, Outcome::Bypass)),
    };
    match lookup.entry {
        Some(entry) if cache.freshness(&entry, cache.page_ttl()) == Freshness::Fresh => {
            Ok(answer(req, &entry, Outcome::Hit, cache))
        }
        Some(entry) => Box::pin(expired(req, next, cache, key, &lookup.generation, entry)).await,
        None => Box::pin(miss(req, next, cache, key, &lookup.generation)).await,
    }
}

/// Stale-while-revalidate: one request (of any instance) refreshes an expired entry, the
/// others get it meanwhile.
async fn expired<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    cache: &Cache,
    key: &str,
    generation: &str,
    entry: Arc<Entry>,
) -> Result<(ServiceResponse<BoxBody>, Outcome), actix_web::Error> {
    if !cache.try_refresh_lock(key).await {
        return Ok(answer(req, &entry, Outcome::Stale, cache));
    }
    // The lock may have been released a moment ago by a request that just refreshed
    // the entry: look again before rendering a second time.
    if let Ok((Some(fresh), _)) = look_again(cache, key).await {
        cache.release_refresh_lock(key).await;
        return Ok(answer(req, &fresh, Outcome::Hit, cache));
    }
    let result = fill(req, next, cache, key, generation, Some(entry)).await;
    cache.release_refresh_lock(key).await;
    result.map(|(res, outcome, _)| (res, outcome))
}

/// A plain miss: requests of this instance that miss the same key *under the same
/// generation* share one render (single-flight). The generation is part of the flight's
/// name: a request that read a newer token (a write was acknowledged meanwhile) must
/// not take a render whose database read may predate that write. The leader checks
/// Redis once more first, since a flight that ended a moment ago may have stored it.
async fn miss<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    cache: &Cache,
    key: &str,
    looked_up_under: &str,
) -> Result<(ServiceResponse<BoxBody>, Outcome), actix_web::Error> {
    let mut mine = Some((req, next));
    let mut leader_result = None;
    let flight = format!("{looked_up_under}\n{key}");
    let (shared, _role) = cache
        .page_flights()
        .run(&flight, || async {
            // Our own closure runs at most once, so the request is still ours here.
            let (req, next) = mine.take()?;
            let mut generation = looked_up_under.to_string();
            match look_again(cache, key).await {
                Ok((Some(entry), _)) => {
                    leader_result = Some(Ok(answer(req, &entry, Outcome::Hit, cache)));
                    return Some(entry);
                }
                // Read before the render's database read: a valid tag for what it loads.
                Ok((None, newer)) => generation = newer,
                Err(_) => {}
            }
            let result = fill(req, next, cache, key, &generation, None).await;
            let (result, stored) = match result {
                Ok((res, outcome, stored)) => (Ok((res, outcome)), stored),
                Err(e) => (Err(e), None),
            };
            leader_result = Some(result);
            stored
        })
        .await;
    if let Some(result) = leader_result {
        return result;
    }
    match (shared, mine) {
        // Another request rendered and stored it while this one waited.
        (Some(entry), Some((req, _))) => Ok(answer(req, &entry, Outcome::Hit, cache)),
        // Its result was not storable (an error page, say): render this one ourselves.
        (None, Some((req, next))) => fill(req, next, cache, key, looked_up_under, None)
            .await
            .map(|(res, outcome, _)| (res, outcome)),
        (_, None) => Err(actix_web::error::ErrorInternalServerError(
            "single-flight lost its request",
        )),
    }
}

/// Answers from a cached entry (a hit, or stale within grace) and counts it.
fn answer(
    req: ServiceRequest,
    entry: &Entry,
    outcome: Outcome,
    cache: &Cache,
) -> (ServiceResponse<BoxBody>, Outcome) {
    cache.metrics().lookup(Layer::Page, outcome);
    let res = from_entry(req.request(), entry, outcome);
    (req.into_response(res), outcome)
}

/// Looks `key` up once more: its fresh entry if another request has just stored one,
/// and the generation current now.
async fn look_again(
    cache: &Cache,
    key: &str,
) -> Result<(Option<Arc<Entry>>, String), super::CacheUnavailable> {
    let again = cache.lookup(key).await?;
    let fresh = again
        .entry
        .filter(|e| cache.freshness(e, cache.page_ttl()) == Freshness::Fresh);
    Ok((fresh, again.generation))
}

/// Runs the handler and stores a storable 200 under `generation`; with `stale` (an
/// expired entry being refreshed), a 503 from the handler is answered with it instead.
async fn fill<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    cache: &Cache,
    key: &str,
    generation: &str,
    stale: Option<Arc<Entry>>,
) -> Result<(ServiceResponse<BoxBody>, Outcome, Option<Arc<Entry>>), actix_web::Error> {
    let metrics = cache.metrics();
    let res = next.call(req).await?;
    match (res.status(), stale) {
        // Stale-if-error: the database is down; a current-generation copy within grace
        // is better than an error page.
        (StatusCode::SERVICE_UNAVAILABLE, Some(entry)) => {
            metrics.lookup(Layer::Page, Outcome::Stale);
            let response = from_entry(res.request(), &entry, Outcome::Stale);
            Ok((res.into_response(response), Outcome::Stale, None))
        }
        (StatusCode::OK, _) if res.response().extensions().contains::<BuiltFromStaleData>() => {
            metrics.lookup(Layer::Page, Outcome::Stale);
            Ok((res.map_into_boxed_body(), Outcome::Stale, None))
        }
        (StatusCode::OK, _) if storable(&res) => {
            metrics.lookup(Layer::Page, Outcome::Miss);
            let (res, entry) = store_and_respond(res, cache, key, generation).await?;
            Ok((res, Outcome::Miss, entry))
        }
        _ => {
            metrics.lookup(Layer::Page, Outcome::Miss);
            Ok((res.map_into_boxed_body(), Outcome::Miss, None))
        }
    }
}

/// Only a plain 200 that sets no cookie (nor will: the session is untouched) and does
/// not opt out of caching is stored.
fn storable<B>(res: &ServiceResponse<B>) -> bool {
    let headers = res.headers();
    res.request().get_session().status() == SessionStatus::Unchanged
        && !headers.contains_key(SET_COOKIE)
        && !headers
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-store") || v.contains("private"))
}

/// Stores the body and answers from the stored entry; the entry is returned when it
/// reached Redis (for requests waiting on this one).
async fn store_and_respond(
    res: ServiceResponse<impl MessageBody + 'static>,
    cache: &Cache,
    key: &str,
    generation: &str,
) -> Result<(ServiceResponse<BoxBody>, Option<Arc<Entry>>), actix_web::Error> {
    let (req, response) = res.into_parts();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .map_err(|e| actix_web::error::ErrorInternalServerError(e.into().to_string()))?;
    let (entry, stored) = match cache
        .put(
            key,
            generation,
            &content_type,
            body.clone(),
            cache.page_ttl(),
            true,
        )
        .await
    {
        Ok(entry) => (entry, true),
        Err(_) => (
            Arc::new(Entry::build(generation, &content_type, body, true)),
            false,
        ),
    };
    let response = from_entry(&req, &entry, Outcome::Miss);
    Ok((ServiceResponse::new(req, response), stored.then_some(entry)))
}

/// Builds the response for an entry in the best coding the client accepts (stored
/// pre-compressed: nothing is compressed per hit), or a 304 when it has it already.
fn from_entry(req: &HttpRequest, entry: &Entry, outcome: Outcome) -> HttpResponse {
    let accept = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let (coding, body, etag) = entry.variant(Coding::negotiate(accept));
    let not_modified = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &etag));
    // Headers go straight into the map (static values where they are constant): this
    // runs for every hit.
    let mut res = if not_modified {
        HttpResponse::new(StatusCode::NOT_MODIFIED)
    } else {
        HttpResponse::with_body(StatusCode::OK, BoxBody::new(Bytes::clone(body)))
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if outcome != Outcome::Miss {
        headers.insert(AGE, HeaderValue::from(entry.age_ms(now_ms()) / 1000));
    }
    if not_modified {
        return res;
    }
    if let Some(name) = coding.header() {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(name));
    }
    if let Ok(v) = HeaderValue::from_str(&entry.content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    res
}

/// `If-None-Match` against our strong tag: `*`, or a list of (possibly weak) tags.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::etag_matches;

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("\"x\", W/\"a\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }
}
