//! `/healthz`: 200 while PostgreSQL answers (Redis may be down: the site still works
//! without it), 503 when it does not.

use actix_web::{HttpResponse, web};
use diesel::RunQueryDsl;

use crate::state::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let database_ok = crate::db::run(&state.db, |conn| {
        diesel::sql_query("SELECT 1").execute(conn)?;
        Ok(())
    })
    .await
    .is_ok();
    let cache_ok = state.cache.ping().await;
    let word = |ok| if ok { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "status": word(database_ok),
        "database": word(database_ok),
        "cache": word(cache_ok),
    });
    let mut res = if database_ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    res.insert_header(("Cache-Control", "no-store")).json(body)
}
