//! `/media/<hash>-<width>.jpg`: a listing photo's card or page size. The bytes under a
//! name never change (see `photos::media_cache`), so responses are `immutable` for a
//! year, the `ETag` is the name itself, and the bytes are kept in memory after the first
//! read from PostgreSQL. Any other name — not 64 lowercase hex digits, a width that is
//! neither stored size, another extension — is a 404.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, EntityTag, IfNoneMatch};
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

pub async fn media(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    let (hash, width) = parse_name(&name).ok_or(AppError::NotFound)?;
    let tag = EntityTag::new_strong(format!("{hash}-{width}"));
    let not_modified = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(items)) => items.iter().any(|item| item.weak_eq(&tag)),
        None => false,
    };
    let body = match state.photos.media.get(&name) {
        Some(body) => body,
        None => {
            let (h, w) = (hash.to_string(), width);
            let bytes = crate::db::run(&state.db, move |conn| Ok(photo::variant(conn, &h, w)?))
                .await?
                .ok_or(AppError::NotFound)?;
            let body = Bytes::from(bytes);
            state.photos.media.put(&name, body.clone());
            body
        }
    };
    let mut res = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((ETAG, tag.to_string()))
        .insert_header((CACHE_CONTROL, IMMUTABLE));
    if not_modified {
        return Ok(res.finish());
    }
    Ok(res.insert_header((CONTENT_TYPE, "image/jpeg")).body(body))
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
