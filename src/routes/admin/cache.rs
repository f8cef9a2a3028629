//! The dashboard's "Clear this app's cache" button: a CSRF-checked POST from a signed-in
//! admin that empties this app's cache layers (never anything else in Redis) and goes
//! back to the dashboard with a message.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::see_other;
use crate::auth::{self, Admin};
use crate::error::AppError;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ClearForm {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /admin/cache/clear`: 403 without a signed-in admin or the session's CSRF
/// token; otherwise 303 to `/cache/`, whether Redis answered or not (the message says).
pub async fn clear(
    admin: Admin,
    session: Session,
    state: web::Data<AppState>,
    form: web::Form<ClearForm>,
) -> Result<HttpResponse, AppError> {
    auth::check_csrf(&session, &form.csrf_token)?;
    let message = match state.cache.clear().await {
        Ok(n) => {
            log::info!("admin {:?} cleared the cache ({n} keys)", admin.username);
            format!(
                "Cache cleared: {n} {} removed. The next requests rebuild it.",
                if n == 1 { "key" } else { "keys" }
            )
        }
        Err(e) => {
            log::warn!("admin {:?} could not clear the cache: {e}", admin.username);
            "Redis is not reachable right now, so nothing was cleared. Please try again in a \
             moment."
                .to_string()
        }
    };
    auth::set_flash(&session, &message);
    Ok(see_other("/cache/"))
}
