//! Request telemetry, outside the page cache: the access log (one line per request, with
//! the cache outcome), `Server-Timing` and the request-latency histogram. It reads the
//! cache's outcome from the `X-Cache` header the page cache set; hits are timed too.

pub mod latency;

use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;

use crate::access_log;
use crate::cache::page::X_CACHE;
use crate::routes::cacheable::rules::route_of;
use crate::state::AppState;
use crate::timing;

pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

pub async fn telemetry(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<Data<AppState>>().cloned();
    // Written here rather than by actix's Logger, which wraps every body in a
    // byte-counting stream; batched (see `access_log`).
    let access = access_log::enabled().then(|| {
        let peer = req.peer_addr().map(|a| a.ip().to_string());
        (
            peer.unwrap_or_else(|| "-".into()),
            req.method().clone(),
            req.uri().clone(),
        )
    });
    let (result, timings) = timing::scope(next.call(req)).await;
    let mut res = result?.map_into_boxed_body();
    let elapsed = started.elapsed();
    let outcome = match res.headers().get(X_CACHE).map(HeaderValue::as_bytes) {
        Some(b"HIT") => "HIT",
        Some(b"MISS") => "MISS",
        Some(b"STALE") => "STALE",
        _ => "BYPASS",
    };
    if let Ok(v) = HeaderValue::try_from(timings.header(elapsed)) {
        res.headers_mut().insert(SERVER_TIMING, v);
    }
    if let Some(state) = state {
        // Hits were answered before routing: name their route from the path (asking the
        // router would run its pattern matching for nothing); routed requests know theirs.
        let route = match outcome {
            "HIT" | "STALE" => route_of(res.request().path()).map(Into::into),
            _ => res.request().match_pattern(),
        };
        state.request_latency.observe(
            route.as_deref().unwrap_or("unmatched"),
            outcome,
            elapsed.as_secs_f64(),
        );
    }
    if let Some((peer, method, uri)) = access {
        let size = match res.response().body().size() {
            BodySize::Sized(n) => n.to_string(),
            _ => "-".into(),
        };
        access_log::write(format_args!(
            "{peer} \"{method} {uri}\" {} {size} {outcome} {:.3}ms",
            res.status().as_u16(),
            elapsed.as_secs_f64() * 1e3
        ));
    }
    Ok(res)
}
