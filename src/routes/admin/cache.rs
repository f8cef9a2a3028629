//! The dashboard's admin actions, CSRF-checked POSTs from a signed-in admin that go back
//! to the dashboard with a message: "Clear this app's cache" (this app's cache layers,
//! never anything else in Redis) and "Purge" (one listing's pages or one URL).

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::see_other;
use crate::auth::{self, Admin};
use crate::error::AppError;
use crate::routes::cache::{PurgeFields, render_dashboard};
use crate::routes::cacheable::hook::CacheInvalidation;
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

/// The purge forms: one sends `listing`, the other `url`.
#[derive(Deserialize)]
pub struct PurgeForm {
    #[serde(default)]
    listing: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    csrf_token: String,
}

enum PurgeTarget<'a> {
    Listing(i64),
    Url(&'a str),
}

impl PurgeForm {
    /// Exactly one field, filled in; a listing id is a whole number (whether a URL is a
    /// cached page is for the purge itself to say).
    fn target(&self) -> Result<PurgeTarget<'_>, &'static str> {
        match (self.listing.trim(), self.url.trim()) {
            ("", "") => Err("Give a listing id or a page URL to purge."),
            (id, "") => crate::domain::parse_id(id)
                .map(PurgeTarget::Listing)
                .ok_or("A listing id is a whole number, such as 12."),
            ("", url) => Ok(PurgeTarget::Url(url)),
            _ => Err("Give a listing id or a page URL, not both."),
        }
    }
}

const NOT_A_PAGE: &str =
    "That URL is not a cached page: give a path such as /properties/12/ or /properties/?page=2.";

/// `POST /admin/cache/purge`: 403 without a signed-in admin or the session's CSRF
/// token; a bad value → the dashboard again, 422, the values kept, nothing purged;
/// otherwise the purge, and 303 to `/cache/` with a message naming what was dropped.
pub async fn purge(
    admin: Admin,
    session: Session,
    state: web::Data<AppState>,
    form: web::Form<PurgeForm>,
) -> Result<HttpResponse, AppError> {
    auth::check_csrf(&session, &form.csrf_token)?;
    let refuse = |error: &str| {
        let fields = PurgeFields {
            listing: form.listing.clone(),
            url: form.url.clone(),
            error: Some(error.to_string()),
        };
        render_dashboard(
            &state,
            &session,
            Some(admin.clone()),
            fields,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let target = match form.target() {
        Ok(target) => target,
        Err(error) => return refuse(error),
    };
    let purge = CacheInvalidation::new(state.cache.clone(), state.db.clone());
    let message = match target {
        PurgeTarget::Listing(id) => match purge.purge_listing(id).await? {
            Some(tokens) => format!(
                "Purged listing #{id}: replaced {}. Pages of other listings stay cached.",
                tokens.join(", ")
            ),
            None => format!(
                "There is no listing #{id}; replaced listing:{id} in case pages of it were \
                 still cached."
            ),
        },
        PurgeTarget::Url(url) => match purge.purge_url(url).await {
            Some((canonical, token)) => format!(
                "Purged {canonical}: deleted its entry and replaced {token} (pages sharing \
                 that token are dropped too)."
            ),
            None => return refuse(NOT_A_PAGE),
        },
    };
    let message = if state.cache.invalidation_pending() {
        log::warn!(
            "admin {:?} purged while redis was unreachable",
            admin.username
        );
        "Redis is not reachable right now, so nothing could be purged; the whole cache is \
         invalidated as soon as it is back."
            .to_string()
    } else {
        log::info!("admin {:?}: {message}", admin.username);
        message
    };
    auth::set_flash(&session, &message);
    Ok(see_other("/cache/"))
}
