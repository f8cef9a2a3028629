//! Cache observability: the metrics JSON, the list of this app's cache entries, the live
//! dashboard page and the Prometheus exposition.
//!
//! The counters are for everyone; the details — Redis node addresses, key names (which
//! pages and searches are cached), the recent writes (which listing an admin changed,
//! and when) — only for signed-in admins, or for everyone with `PUBLIC_DASHBOARD=1` (a
//! demo). They tell an outsider where the Redis servers are and what the admins do.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Serialize;

use crate::auth;
use crate::cache::KeyInfo;
use crate::cache::admin::{CacheMetrics, get_redis_cache_metrics};
use crate::error::{AppError, render_html};
use crate::routes::list_query;
use crate::state::AppState;

/// At most this many keys are listed (the dashboard polls the list every few seconds).
pub const KEY_LIST_LIMIT: usize = 200;

/// Whether the dashboard's details are shown to this request (see the module docs).
fn details_shown(state: &AppState, admin: Option<&auth::Admin>) -> bool {
    admin.is_some() || state.settings.public_dashboard
}

/// The metrics JSON, and whether it holds the details (`details`: the dashboard says
/// "sign in to see…" rather than "none").
#[derive(Serialize)]
struct MetricsJson {
    #[serde(flatten)]
    metrics: CacheMetrics,
    database: DatabaseJson,
    details: bool,
}

/// Where cache refills read (`db_reads_total`), and each replica's state and lag; a
/// replica's address is a detail (else it is "replica N").
#[derive(Serialize)]
struct DatabaseJson {
    reads_primary: u64,
    reads_replica: u64,
    replicas: Vec<crate::db::replicas::ReplicaStatus>,
}

impl DatabaseJson {
    fn of(state: &AppState, details: bool) -> Self {
        let (reads_primary, reads_replica) = state.replicas.reads();
        let mut replicas = state.replicas.status();
        if !details {
            for (i, replica) in replicas.iter_mut().enumerate() {
                replica.name = format!("replica {}", i + 1);
            }
        }
        Self {
            reads_primary,
            reads_replica,
            replicas,
        }
    }
}

/// `GET /api/cache/metrics`: the metrics (the details only for those who may see them);
/// 503 JSON with the app's own counters when Redis is down.
pub async fn metrics_json(state: web::Data<AppState>, admin: Option<auth::Admin>) -> HttpResponse {
    let details = details_shown(&state, admin.as_ref());
    let database = DatabaseJson::of(&state, details);
    match get_redis_cache_metrics(&state.cache).await {
        Ok(metrics) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(MetricsJson {
                metrics: if details {
                    metrics
                } else {
                    metrics.without_details()
                },
                database,
                details,
            }),
        Err((e, app)) => {
            let app = if details { app } else { app.without_details() };
            let mut body = serde_json::json!({
                "error": "redis unavailable",
                "redis_available": false,
                "app": app,
                "database": database,
                "details": details,
            });
            // The error text may name a server.
            if details {
                body["detail"] = e.to_string().into();
            }
            HttpResponse::ServiceUnavailable()
                .insert_header(("Cache-Control", "no-store"))
                .json(body)
        }
    }
}

/// One listed key: `kind` names the cache layer it belongs to (see `cache/keys.rs`).
#[derive(Serialize)]
pub struct KeyRow {
    #[serde(flatten)]
    pub info: KeyInfo,
    pub kind: &'static str,
}

#[derive(Serialize)]
pub struct KeyList {
    pub prefix: String,
    pub limit: usize,
    pub count: usize,
    /// `true` when there may be more keys than listed.
    pub truncated: bool,
    pub keys: Vec<KeyRow>,
}

/// Hides what visitors typed (the list query's free-text parameters) in key names
/// shown to anyone but an admin: the key stays recognisable, the search terms do not leak.
fn redact(key: &str) -> String {
    match key.split_once('?').or_else(|| key.split_once(":query:")) {
        Some((head, query)) if list_query::holds_free_text(query) => {
            let sep = if key.contains('?') { "?" } else { ":query:" };
            format!("{head}{sep}…")
        }
        _ => key.to_string(),
    }
}

/// `GET /api/cache/keys`: this app's cache entries (bounded, see `Cache::list_keys`) with
/// their remaining TTLs, for those who may see the details (else 403 JSON, and no
/// `SCAN`); search terms in key names are shown to signed-in admins only. 503 JSON when
/// Redis is down.
pub async fn keys_json(state: web::Data<AppState>, admin: Option<auth::Admin>) -> HttpResponse {
    if !details_shown(&state, admin.as_ref()) {
        return HttpResponse::Forbidden()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "error": "sign in as an admin to see the key list",
                "status": 403,
                "details": false,
            }));
    }
    let admin = admin.is_some();
    let prefix = state.cache.keys().prefix().to_string();
    match state.cache.list_keys(KEY_LIST_LIMIT).await {
        Ok(listing) => {
            let keys: Vec<KeyRow> = listing
                .keys
                .into_iter()
                .map(|mut info| {
                    let kind = state.cache.key_kind(&info.key);
                    if !admin {
                        info.key = redact(&info.key);
                    }
                    KeyRow { kind, info }
                })
                .collect();
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .json(KeyList {
                    prefix,
                    limit: KEY_LIST_LIMIT,
                    count: keys.len(),
                    truncated: !listing.complete,
                    keys,
                })
        }
        Err(e) => {
            log::warn!("listing cache keys: redis unavailable ({e})");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Cache-Control", "no-store"))
                .json(serde_json::json!({
                    "error": "redis unavailable",
                    "redis_available": false,
                }))
        }
    }
}

#[derive(Template)]
#[template(path = "cache/dashboard.html")]
pub struct DashboardPage {
    pub prefix: String,
    pub page_ttl: u64,
    pub query_ttl: u64,
    pub grace: u64,
    pub key_limit: usize,
    /// Whether the details (Redis nodes, recent writes, key list) are shown; else the
    /// page asks to sign in for them.
    pub details: bool,
    /// The signed-in admin's name: they get the clear-cache button and the purge forms.
    pub admin_name: Option<String>,
    /// Only rendered (and only created) for a signed-in admin.
    pub csrf_token: String,
    pub flash: Option<String>,
    pub purge: PurgeFields,
}

/// The purge forms' values and their one error message, kept when a purge is refused.
#[derive(Default)]
pub struct PurgeFields {
    pub listing: String,
    pub url: String,
    pub error: Option<String>,
}

/// `GET /cache/`. Never page-cached (not a cacheable route), so it may show the
/// clear-cache button and the purge forms to signed-in admins only (a revoked sign-in
/// counts as none, as everywhere: the `Admin` extractor checks it).
pub async fn dashboard(
    state: web::Data<AppState>,
    session: Session,
    admin: Option<auth::Admin>,
) -> Result<HttpResponse, AppError> {
    render_dashboard(
        &state,
        &session,
        admin,
        PurgeFields::default(),
        StatusCode::OK,
    )
}

/// The dashboard page with `status` (422 when a purge was refused: the forms again,
/// their values kept, the message shown).
pub fn render_dashboard(
    state: &AppState,
    session: &Session,
    admin: Option<auth::Admin>,
    purge: PurgeFields,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let s = &state.settings;
    let details = details_shown(state, admin.as_ref());
    let (csrf_token, flash) = match admin {
        Some(_) => (auth::csrf_token(session)?, auth::take_flash(session)),
        None => (String::new(), None),
    };
    let mut res = render_html(&DashboardPage {
        prefix: s.cache_key_prefix.clone(),
        page_ttl: s.page_cache_ttl.as_secs(),
        query_ttl: s.query_cache_ttl.as_secs(),
        grace: s.cache_grace.as_secs(),
        key_limit: KEY_LIST_LIMIT,
        details,
        admin_name: admin.map(|a| a.username),
        csrf_token,
        flash,
        purge,
    })?;
    *res.status_mut() = status;
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn search_terms_are_hidden_but_the_rest_of_the_key_is_kept() {
        assert_eq!(
            redact("p:page:/properties/?page=2&q=secret"),
            "p:page:/properties/?…"
        );
        assert_eq!(
            redact("p:query:location=home&page=1&sort=newest"),
            "p:query:…"
        );
        assert_eq!(
            redact("p:page:/properties/?page=2&sort=price_asc"),
            "p:page:/properties/?page=2&sort=price_asc"
        );
        assert_eq!(redact("p:generation"), "p:generation");
    }
}
