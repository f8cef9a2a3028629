//! `/media/<hash>-<width>.jpg`: a listing photo's card or page size. The bytes under a
//! name never change (see `photos::media_cache`), so responses are `immutable` for a
//! year, the `ETag` is the name itself, and the bytes are kept in memory after the first
//! read from PostgreSQL. Any other name — not 64 lowercase hex digits, a width that is
//! neither stored size, another extension — is a 404.
//!
//! A name already in memory is answered by `from_memory`, the outermost middleware but
//! the HTTPS layer (`Strict-Transport-Security`, as on every response) and the security
//! headers: the page cache, the sessions, the router and the telemetry have nothing to
//! say about these bytes, and skipping them is what lets a photo be served nearly as
//! fast as the machine allows (`scripts/bench-photos`). The price: such a hit writes no
//! access-log line and is not in the latency histogram. Everything else — a first read,
//! a 404 — reaches the `media` handler through the whole stack.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, EntityTag, HeaderValue, IF_NONE_MATCH, IfNoneMatch,
};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use crate::error::AppError;
use crate::models::photo;
use crate::state::AppState;

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `(hash, width)` of a well-formed name: 64 lowercase hex digits, `-`, a width of 1–4
/// digits without a leading zero, `.jpg`.
fn parse_name(name: &str) -> Option<(&str, i32)> {
    let stem = name.strip_suffix(".jpg")?;
    let (hash, width) = stem.split_once('-')?;
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if hash.len() != 64 || !hash.bytes().all(hex) {
        return None;
    }
    if width.is_empty()
        || width.len() > 4
        || width.starts_with('0')
        || !width.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some((hash, width.parse().ok()?))
}

/// Answers a GET or HEAD of a `/media/` name held in memory; passes anything else on.
pub async fn from_memory(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Only names that were served before are held, so a held name is a valid one.
    let held = match req.path().strip_prefix("/media/") {
        Some(name) if matches!(*req.method(), Method::GET | Method::HEAD) => req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| state.photos.media.get(name)),
        _ => None,
    };
    let Some(held) = held else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    // A validator that names the held tag (quotes included), or `*`.
    let not_modified = req.headers().get(IF_NONE_MATCH).is_some_and(|v| {
        let (sent, tag) = (v.as_bytes(), held.etag.as_bytes());
        sent == b"*" || sent.windows(tag.len()).any(|w| w == tag)
    });
    let mut res = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((ETAG, held.etag))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)));
    let res = if not_modified {
        res.finish()
    } else {
        res.insert_header((CONTENT_TYPE, HeaderValue::from_static("image/jpeg")))
            .body(held.body)
    };
    Ok(req.into_response(res).map_into_right_body())
}

fn tag_of(hash: &str, width: i32) -> EntityTag {
    EntityTag::new_strong(format!("{hash}-{width}"))
}

/// 200 with the bytes, or 304 when `If-None-Match` matches; immutable either way.
fn answer(req: &HttpRequest, tag: EntityTag, body: Bytes) -> HttpResponse {
    let not_modified = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(items)) => items.iter().any(|item| item.weak_eq(&tag)),
        None => false,
    };
    let mut res = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((ETAG, tag.to_string()))
        .insert_header((CACHE_CONTROL, IMMUTABLE));
    if not_modified {
        return res.finish();
    }
    res.insert_header((CONTENT_TYPE, "image/jpeg")).body(body)
}

pub async fn media(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    let (hash, width) = parse_name(&name).ok_or(AppError::NotFound)?;
    let body = match state.photos.media.get(&name) {
        Some(held) => held.body,
        None => {
            let (h, w) = (hash.to_string(), width);
            let bytes = crate::db::run(&state.db, move |conn| Ok(photo::variant(conn, &h, w)?))
                .await?
                .ok_or(AppError::NotFound)?;
            let body = Bytes::from(bytes);
            if let Ok(etag) = HeaderValue::from_str(&tag_of(hash, width).to_string()) {
                state.photos.media.put(&name, body.clone(), etag);
            }
            body
        }
    };
    Ok(answer(&req, tag_of(hash, width), body))
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn only_well_formed_names_are_looked_up() {
        let hash = "a".repeat(64);
        assert_eq!(
            parse_name(&format!("{hash}-480.jpg")),
            Some((&hash[..], 480))
        );
        for bad in [
            format!("{hash}-480.png"),
            format!("{hash}-0480.jpg"),
            format!("{hash}-.jpg"),
            format!("{hash}-12345.jpg"),
            format!("{}-480.jpg", "A".repeat(64)),
            format!("{}-480.jpg", "a".repeat(63)),
            format!("{hash}480.jpg"),
            format!("{hash}-480.jpg.jpg"),
        ] {
            assert_eq!(parse_name(&bad), None, "{bad}");
        }
    }
}
