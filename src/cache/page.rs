//! The page cache — the seed's `cache_page(60 * 15)` as actix middleware, in the two
//! halves of Django's cache middleware: before the handler, look the page's canonical URL
//! up (its tokens and the entry, `Cache::lookup`) and answer a hit without running the handler;
//! after it, store a 200 response that sets no cookie and is not `private`/`no-store`.
//! Which requests may be cached (anonymous GETs of the listing routes) is the web
//! layer's decision, passed in as `Cacheable`; this module knows nothing of routes or
//! sessions. The fresh / stale / lock / single-flight logic is `refresh.rs`'s.
//!
//! Every response gets `X-Cache` (`HIT`, `MISS`, `STALE` or `BYPASS`) and the standard
//! `Cache-Status` (RFC 9211: `NAME; hit`, `; fwd=miss; stored`, `; hit; fwd=stale`,
//! `; fwd=bypass`, under the name the app gave the cache); cacheable ones
//! also get a strong `ETag` (a matching `If-None-Match` gets 304) and
//! `Cache-Control: no-cache`, so browsers revalidate instead of keeping stale copies.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderName,
    HeaderValue, IF_NONE_MATCH, SET_COOKIE, VARY,
};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use super::entry::{Coding, Entry, now_ms};
use super::metrics::{Layer, Outcome};
use super::refresh::{self, Built, Fetched, Spec};
use super::request;
use super::{Cache, Slot, Version};

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Marks a response built from stale data (the query cache served an expired entry
/// because PostgreSQL is down): it is sent with `X-Cache: STALE` and never stored.
#[derive(Clone, Copy, Debug)]
pub struct BuiltFromStaleData;

/// What the web layer decided about a request (where its routes are declared).
pub enum Cacheable {
    /// A cacheable page, by its canonical URL (path and known query parameters), the
    /// dependency tokens a write that may change it replaces (see the module docs of
    /// `cache`), and how long it is fresh.
    Page {
        url: String,
        deps: Vec<String>,
        ttl: Duration,
    },
    /// A cacheable page, but not for this request (a signed-in admin's, say): `BYPASS`,
    /// and counted as such.
    NotForThisRequest,
    /// Not a page the cache keeps (admin, health, static files…): `BYPASS`, not counted.
    No,
}

/// The page cache for one request. Every response gets `X-Cache`. A read-only request
/// runs in a request scope: all its lookups, the query cache's included, use the first
/// value they read of each token (see `request`).
pub async fn serve<B: MessageBody + 'static>(
    cache: &Cache,
    cacheable: Cacheable,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let (mut res, outcome) = request::request_scope(read_only, async {
        match cacheable {
            Cacheable::Page { url, deps, ttl } if read_only => {
                cached(req, next, cache, &url, &deps, ttl).await
            }
            Cacheable::Page { .. } | Cacheable::NotForThisRequest => {
                cache.metrics().lookup(Layer::Page, Outcome::Bypass);
                Ok((pass_through(req, next).await?, Outcome::Bypass))
            }
            Cacheable::No => Ok((pass_through(req, next).await?, Outcome::Bypass)),
        }
    })
    .await?;
    let headers = res.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(outcome.as_header()));
    if !headers.contains_key(CACHE_STATUS) {
        headers.insert(CACHE_STATUS, cache.inner.status.of(outcome));
    }
    Ok(res)
}

/// The standard `Cache-Status` header (RFC 9211) for each outcome, under the name the
/// app gave the cache (`CacheConfig::status_name`); built once, cloned per response.
pub(crate) struct StatusHeaders {
    hit: HeaderValue,
    memory: HeaderValue,
    stale: HeaderValue,
    miss: HeaderValue,
    stored: HeaderValue,
    bypass: HeaderValue,
}

impl StatusHeaders {
    pub(crate) fn new(name: &str) -> Self {
        let value = |params: &str| {
            HeaderValue::from_str(&format!("{name}; {params}"))
                .unwrap_or_else(|_| HeaderValue::from_static("cache; fwd=miss"))
        };
        Self {
            hit: value("hit"),
            memory: value("hit; detail=memory"),
            stale: value("hit; fwd=stale"),
            miss: value("fwd=miss"),
            stored: value("fwd=miss; stored"),
            bypass: value("fwd=bypass"),
        }
    }

    fn of(&self, outcome: Outcome) -> HeaderValue {
        match outcome {
            Outcome::Hit => self.hit.clone(),
            Outcome::Stale => self.stale.clone(),
            Outcome::Miss => self.miss.clone(),
            Outcome::Bypass => self.bypass.clone(),
        }
    }
}

/// Calls the rest of the chain (session middleware, router, handler); `Next::call`
/// returns a boxed future, so this adds little to the size of ours.
pub async fn pass_through(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A cacheable GET or HEAD, through the refresh machine: the handler is the build.
async fn cached<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    cache: &Cache,
    url: &str,
    deps: &[String],
    ttl: Duration,
) -> Result<(ServiceResponse<BoxBody>, Outcome), actix_web::Error> {
    let key = &cache.keys().page(url);
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    // The request stays here until a build takes it: a hit answers it without routing.
    let mut mine = Some((req, next));
    let slot = &Slot {
        key,
        deps: &deps,
        ttl,
        layer: Layer::Page,
    };
    let spec = Spec {
        slot: *slot,
        read: |e: &Arc<Entry>| Some(e.clone()),
    };
    let fetched = refresh::fetch(cache, spec, |version| {
        let taken = mine.take();
        async move {
            let Some((req, next)) = taken else {
                return Built::NotStored(Err(actix_web::error::ErrorInternalServerError(
                    "page cache: the request was taken twice",
                )));
            };
            build(req, next, cache, slot, version).await
        }
    })
    .await;
    match fetched {
        Fetched::Cached(entry, outcome) => match mine {
            Some((req, _)) => Ok(answer(req, &entry, outcome)),
            None => Err(actix_web::error::ErrorInternalServerError(
                "page cache: a cached answer without its request",
            )),
        },
        Fetched::Memory(entry) => match mine {
            Some((req, _)) => {
                let (mut res, outcome) = answer(req, &entry, Outcome::Hit);
                res.headers_mut()
                    .insert(CACHE_STATUS, cache.inner.status.memory.clone());
                Ok((res, outcome))
            }
            None => Err(actix_web::error::ErrorInternalServerError(
                "page cache: a cached answer without its request",
            )),
        },
        Fetched::Built(res, outcome) => Ok((res?, outcome)),
        Fetched::StaleInstead(entry, res) => {
            let res = res?;
            let response = from_entry(res.request(), &entry, Outcome::Stale);
            Ok((res.into_response(response), Outcome::Stale))
        }
    }
}

/// Runs the handler; stores a storable 200 under `version` (none: Redis is not usable,
/// store nothing).
async fn build<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    cache: &Cache,
    slot: &Slot<'_>,
    version: Option<Version>,
) -> Built<Result<ServiceResponse<BoxBody>, actix_web::Error>> {
    let res = match next.call(req).await {
        Ok(res) => res,
        Err(e) => return Built::NotStored(Err(e)),
    };
    match (res.status(), version) {
        (_, None) => Built::NotStored(Ok(res.map_into_boxed_body())),
        (StatusCode::SERVICE_UNAVAILABLE, _) => Built::Unavailable(Ok(res.map_into_boxed_body())),
        (StatusCode::OK, _) if res.response().extensions().contains::<BuiltFromStaleData>() => {
            Built::FromStaleData(Ok(res.map_into_boxed_body()))
        }
        (StatusCode::OK, Some(version)) if storable(&res) => {
            match store_and_respond(res, cache, slot, &version).await {
                Ok((res, entry)) => Built::Stored(Ok(res), entry),
                Err(e) => Built::NotStored(Err(e)),
            }
        }
        _ => Built::NotStored(Ok(res.map_into_boxed_body())),
    }
}

/// Answers from a cached entry (a hit, or stale within grace).
fn answer(
    req: ServiceRequest,
    entry: &Entry,
    outcome: Outcome,
) -> (ServiceResponse<BoxBody>, Outcome) {
    let res = from_entry(req.request(), entry, outcome);
    (req.into_response(res), outcome)
}

/// Only a plain 200 that sets no cookie and does not opt out of caching is stored (the
/// web layer marks a response whose session will set a cookie `private`).
fn storable<B>(res: &ServiceResponse<B>) -> bool {
    let headers = res.headers();
    !headers.contains_key(SET_COOKIE)
        && !headers
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-store") || v.contains("private"))
}

/// Stores the body and answers from the entry (shared with requests waiting on this
/// one, also when Redis failed to store it: it was built under their version).
async fn store_and_respond(
    res: ServiceResponse<impl MessageBody + 'static>,
    cache: &Cache,
    slot: &Slot<'_>,
    version: &Version,
) -> Result<(ServiceResponse<BoxBody>, Arc<Entry>), actix_web::Error> {
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
    let (entry, stored) = cache.put(slot, version, &content_type, body).await;
    let mut response = from_entry(&req, &entry, Outcome::Miss);
    if stored.is_ok() {
        response
            .headers_mut()
            .insert(CACHE_STATUS, cache.inner.status.stored.clone());
    }
    Ok((ServiceResponse::new(req, response), entry))
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
    let etag = match etag {
        Cow::Borrowed(_) => entry.etag_header.clone(),
        Cow::Owned(tagged) => HeaderValue::from_str(&tagged).ok(),
    };
    if let Some(v) = etag {
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
    if let Some(v) = &entry.content_type_header {
        headers.insert(CONTENT_TYPE, v.clone());
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
