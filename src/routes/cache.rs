//! Cache observability: the metrics JSON, the live dashboard page and the Prometheus
//! exposition.

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::cache::metrics::get_redis_cache_metrics;
use crate::error::{AppError, render_html};
use crate::state::AppState;

pub async fn metrics_json(state: web::Data<AppState>) -> HttpResponse {
    match get_redis_cache_metrics(&state.cache).await {
        Ok(metrics) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(metrics),
        Err((e, app)) => HttpResponse::ServiceUnavailable()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "error": "redis unavailable",
                "detail": e.to_string(),
                "redis_available": false,
                "app": app,
            })),
    }
}

#[derive(Template)]
#[template(path = "cache/dashboard.html")]
pub struct DashboardPage {
    pub prefix: String,
    pub page_ttl: u64,
    pub query_ttl: u64,
    pub grace: u64,
}

pub async fn dashboard(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let s = &state.settings;
    let mut res = render_html(&DashboardPage {
        prefix: s.cache_key_prefix.clone(),
        page_ttl: s.page_cache_ttl.as_secs(),
        query_ttl: s.query_cache_ttl.as_secs(),
        grace: s.cache_grace.as_secs(),
    })?;
    res.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

pub async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.cache.metrics().render_prometheus())
}
