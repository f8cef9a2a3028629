//! Every route, registered in one place (`config`).

pub mod admin;
pub mod api;
pub mod cache;
pub mod cacheable;
pub mod health;
pub mod listing;
pub mod properties;
pub mod views;

use std::path::PathBuf;

use actix_web::{HttpRequest, HttpResponse, guard, web};

use crate::error::{ApiError, AppError};

/// GET and HEAD.
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/", get().to(properties::index))
        .route(
            "/properties",
            get().to(|| async { properties::redirect("/properties/") }),
        )
        .route("/properties/", get().to(properties::list))
        .route("/properties/{id}/", get().to(properties::detail))
        .route("/api/properties/", get().to(api::list))
        .route(
            "/api/properties",
            get().to(|| async { properties::redirect("/api/properties/") }),
        )
        .route("/api/properties/{id}/", get().to(api::detail))
        .route("/api/cache/metrics", get().to(cache::metrics_json))
        .route("/api/cache/keys", get().to(cache::keys_json))
        .route("/cache/", get().to(cache::dashboard))
        .route(
            "/cache",
            get().to(|| async { properties::redirect("/cache/") }),
        )
        .route("/metrics", get().to(cache::prometheus))
        .route("/healthz", get().to(health::healthz))
        .service(actix_files::Files::new("/static", static_dir()).use_etag(true))
        .default_service(web::to(not_found));
}

/// Unknown routes: the 404 page, or 404 JSON under `/api/`.
async fn not_found(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    if req.path().starts_with("/api/") {
        Err(ApiError(AppError::NotFound).into())
    } else {
        Err(AppError::NotFound.into())
    }
}

/// `STATIC_DIR`, else `./static`, else the crate's own `static/` (for `cargo run` from
/// elsewhere).
fn static_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("STATIC_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("static");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static")
}
