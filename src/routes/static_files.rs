//! `/static/`: CSS, JavaScript and images from `STATIC_DIR`, served by actix-files, with
//! the site's error pages and validators that are the same on every instance.
//!
//! actix-files' own `ETag` is the file's inode, size and modification time: it tells
//! anyone the inode, and two instances serving the same files (or a redeploy of them)
//! give different tags, so a browser revalidating against another instance downloads
//! the file again. Ours is the size and the modification time only (what nginx sends):
//! the same files give the same tag everywhere. actix-files, told to make no `ETag`,
//! still answers `If-Modified-Since` with 304; `If-None-Match` is answered here.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{ETAG, EntityTag, HttpDate, IfNoneMatch, LAST_MODIFIED};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpMessage, HttpResponse, web};

use crate::error::AppError;

/// Registers the `/static` scope, serving the files under `dir`.
pub fn config(cfg: &mut web::ServiceConfig, dir: &Path) {
    cfg.service(
        web::scope("/static")
            .wrap(from_fn(error_pages))
            .wrap(from_fn(validators))
            .service(actix_files::Files::new("", dir).use_etag(false)),
    );
}

/// actix-files answers its errors in plain text (a missing file, a directory, a path
/// it refuses, a method other than GET/HEAD): give them the site's error page instead.
async fn error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let res = next.call(req).await?;
    let error = match res.status() {
        StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => AppError::NotFound,
        _ => return Ok(res.map_into_left_body()),
    };
    Ok(res.error_response(error).map_into_right_body())
}

/// Gives a whole file (a 200) its `ETag` (see the module docs) and answers a matching
/// `If-None-Match` with 304, dropping the file unread.
async fn validators(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let read = matches!(*res.request().method(), Method::GET | Method::HEAD);
    let Some(tag) = etag(&res).filter(|_| read && res.status() == StatusCode::OK) else {
        return Ok(res.map_into_left_body());
    };
    let not_modified = match res.request().get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(items)) => items.iter().any(|item| item.weak_eq(&tag)),
        None => false,
    };
    if !not_modified {
        res.headers_mut().insert(ETAG, tag.to_string().parse()?);
        return Ok(res.map_into_left_body());
    }
    let mut answer = HttpResponse::NotModified();
    answer.insert_header((ETAG, tag.to_string()));
    if let Some(modified) = res.headers().get(LAST_MODIFIED) {
        answer.insert_header((LAST_MODIFIED, modified.clone()));
    }
    Ok(res.into_response(answer.finish()).map_into_right_body())
}

/// `"SIZE-MTIME"` (hex; the modification time in whole seconds, as `Last-Modified`
/// states it), from what actix-files answered; `None` without either.
fn etag<B: MessageBody>(res: &ServiceResponse<B>) -> Option<EntityTag> {
    let BodySize::Sized(size) = res.response().body().size() else {
        return None;
    };
    let modified: HttpDate = res
        .headers()
        .get(LAST_MODIFIED)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let secs = SystemTime::from(modified)
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(EntityTag::new_strong(format!("{size:x}-{secs:x}")))
}
