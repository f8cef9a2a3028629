//! Every route, registered in one place (`config`).

pub mod admin;
pub mod api;
pub mod cache;
pub mod cacheable;
pub mod health;
pub mod list_query;
pub mod listing;
pub mod media;
pub mod properties;
pub mod static_files;
pub mod views;

use std::path::Path;

use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, guard, web};

use crate::error::{ApiError, AppError};

/// GET and HEAD.
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A read-only route: `handler` answers GET and HEAD; any other method gets 405 with
/// `Allow: GET, HEAD` (rather than falling through to the 404 of unknown routes).
fn read_only<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(get().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// The routes; static files come from `static_dir` (`Settings::static_dir`).
pub fn config(cfg: &mut web::ServiceConfig, static_dir: &Path) {
    cfg.service(read_only("/", properties::index))
        .service(read_only("/properties", |req: HttpRequest| async move {
            with_slash(&req, "/properties/")
        }))
        .service(read_only("/properties/", properties::list))
        .service(read_only("/properties/{id}/", properties::detail))
        .service(read_only("/api/properties/", api::list))
        .service(read_only(
            "/api/properties",
            |req: HttpRequest| async move { with_slash(&req, "/api/properties/") },
        ))
        .service(read_only("/api/properties/{id}/", api::detail))
        .service(read_only("/api/cache/metrics", cache::metrics_json))
        .service(read_only("/api/cache/keys", cache::keys_json))
        .service(read_only("/cache/", cache::dashboard))
        .service(read_only("/cache", |req: HttpRequest| async move {
            with_slash(&req, "/cache/")
        }))
        .service(read_only("/metrics", cache::prometheus))
        .service(read_only("/healthz", health::healthz))
        .service(read_only("/media/{name}", media::media))
        .configure(|cfg| static_files::config(cfg, static_dir))
        .default_service(web::to(not_found));
}

/// A path without its trailing slash: redirected to `to`, the query string kept (a
/// search typed against `/properties` must not lose its terms on the way).
fn with_slash(req: &HttpRequest, to: &str) -> HttpResponse {
    match req.query_string() {
        "" => properties::redirect(to),
        query => properties::redirect(&format!("{to}?{query}")),
    }
}

/// Unknown routes: the 404 page, or 404 JSON under `/api/`.
async fn not_found(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    if req.path().starts_with("/api/") {
        Err(ApiError(AppError::NotFound).into())
    } else {
        Err(AppError::NotFound.into())
    }
}

/// Other methods on a read-only route: the 405 page, or 405 JSON under `/api/`.
async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    if req.path().starts_with("/api/") {
        Err(ApiError(AppError::MethodNotAllowed).into())
    } else {
        Err(AppError::MethodNotAllowed.into())
    }
}
