//! The admin area: sign-in/out and the listing forms. Every page but the sign-in page
//! takes the `Admin` extractor (GET → 303 to sign-in, POST → 403); every POST checks
//! the session's CSRF token first (a POST that is not a web form has none: 403). Admin
//! responses are `Cache-Control: no-store` and are never page-cached.

pub mod cache;
pub mod login;
pub mod properties;
pub mod upload;

use actix_web::error::UrlencodedError;
use actix_web::{HttpResponse, web};

use crate::error::AppError;

/// Form bodies larger than this are refused with 413.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::FormConfig::default()
            .limit(MAX_FORM_BYTES)
            .error_handler(|err, _req| match err {
                UrlencodedError::Overflow { .. } => AppError::PayloadTooLarge.into(),
                // serde's own words ("duplicate field `csrf_token`"), without actix's
                // "Parse error: …" wrapping.
                UrlencodedError::Parse(e) => AppError::BadForm(e.to_string()).into(),
                // No body, or one that is not a web form (JSON, …): it carries no
                // `csrf_token`, so it gets the CSRF answer, as an empty token does.
                UrlencodedError::ContentType => {
                    log::warn!("refused a POST that was not a web form (no CSRF token)");
                    AppError::Forbidden.into()
                }
                other => AppError::BadForm(other.to_string()).into(),
            }),
    )
    .route("/admin/login", web::get().to(login::login_form))
    .route("/admin/login", web::post().to(login::login))
    .route("/admin/logout", web::post().to(login::logout))
    .route("/admin/cache/clear", web::post().to(cache::clear))
    .route("/admin/cache/purge", web::post().to(cache::purge))
    .route("/admin/", web::get().to(properties::index))
    .route(
        "/admin",
        web::get().to(|| async { super::properties::redirect("/admin/") }),
    )
    .route("/admin/properties/new", web::get().to(properties::new_form))
    .route("/admin/properties/new", web::post().to(properties::create))
    .route(
        "/admin/properties/{id}/edit",
        web::get().to(properties::edit_form),
    )
    .route(
        "/admin/properties/{id}/edit",
        web::post().to(properties::update),
    )
    .route(
        "/admin/properties/{id}/delete",
        web::get().to(properties::delete_form),
    )
    .route(
        "/admin/properties/{id}/delete",
        web::post().to(properties::delete),
    );
}

/// Renders an admin page: never stored by any cache.
pub fn admin_page<T: askama::Template>(
    status: actix_web::http::StatusCode,
    template: &T,
) -> Result<HttpResponse, AppError> {
    let body = crate::timing::timed(crate::timing::Kind::Render, || template.render())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("rendering template: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

/// 303 See Other: the post/redirect/get answer to a successful form.
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", to.to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}
