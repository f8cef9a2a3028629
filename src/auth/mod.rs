//! Admin authentication: the signed and encrypted cookie session, the CSRF token kept
//! in it, the `Admin` extractor that guards `/admin/` (checking that the session has not
//! been revoked), the client address, and sign-in throttling.

pub mod client_ip;
pub mod password;
pub mod throttle;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::models::admin_user::AdminUser;
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "pl_session";
/// How long a sign-in lasts, whatever the browser keeps.
pub const SESSION_MAX_AGE_SECS: i64 = 12 * 3600;

const ADMIN_ID: &str = "admin_id";
const ADMIN_NAME: &str = "admin_name";
const SIGNED_IN_AT: &str = "signed_in_at";
const SESSION_VERSION: &str = "session_version";
const CSRF: &str = "csrf";
const FLASH: &str = "flash";

/// The cookie key from `SECRET_KEY` (at least 32 bytes, stretched to a signing and an
/// encryption key), or a random one for this process only.
pub fn session_key(secret: Option<&str>) -> anyhow::Result<Key> {
    match secret {
        Some(s) if s.len() >= 32 => Ok(Key::derive_from(s.as_bytes())),
        Some(_) => anyhow::bail!(
            "SECRET_KEY must be at least 32 bytes (64 random hex characters recommended)"
        ),
        None => {
            log::warn!(
                "SECRET_KEY is not set: using a random key, so sessions end when this process \
                 stops and are not shared with other instances"
            );
            Ok(Key::generate())
        }
    }
}

/// The session middleware: an encrypted cookie (so any number of instances can serve a
/// signed-in admin), HttpOnly, SameSite=Lax; `Secure` is added per request, on the
/// responses to requests that came over HTTPS (`crate::https`).
pub fn session_middleware(key: Key) -> SessionMiddleware<CookieSessionStore> {
    SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name(SESSION_COOKIE.to_string())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_secure(false)
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(BrowserSession::default())
        .build()
}

/// A signed-in admin, as stored in the session. As an extractor, the session is also
/// checked against the admin's current session version in PostgreSQL.
#[derive(Clone, Debug)]
pub struct Admin {
    pub id: i64,
    pub username: String,
    session_version: i64,
}

/// The admin this session cookie names, if the sign-in has not expired. Not checked
/// for revocation (no database trip): public pages may use it to tailor what they
/// show; anything an admin may *do* takes the `Admin` extractor instead.
pub fn current_admin(session: &Session) -> Option<Admin> {
    let id = session.get::<i64>(ADMIN_ID).ok().flatten()?;
    let username = session.get::<String>(ADMIN_NAME).ok().flatten()?;
    let at = session.get::<i64>(SIGNED_IN_AT).ok().flatten()?;
    // Cookies from before session versions existed have none: signed out.
    let session_version = session.get::<i64>(SESSION_VERSION).ok().flatten()?;
    let age = chrono::Utc::now().timestamp() - at;
    (0..SESSION_MAX_AGE_SECS).contains(&age).then_some(Admin {
        id,
        username,
        session_version,
    })
}

/// Whether the request carries a session cookie. Scans the `Cookie` headers in place:
/// `HttpRequest::cookie` would parse every cookie and keep them in the request's
/// extensions, which the page cache's hit path (asking this of every request) can skip.
pub fn has_session_cookie(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| {
            pair.trim_start()
                .strip_prefix(SESSION_COOKIE)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
}

/// Starts a signed-in session: nothing kept from before (no fixation), a new CSRF
/// token, a renewed cookie, the admin's current session version.
pub fn sign_in(session: &Session, user: &AdminUser) -> Result<(), AppError> {
    session.clear();
    let insert = |k: &str, v: serde_json::Value| {
        session
            .insert(k, v)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("session: {e}")))
    };
    insert(ADMIN_ID, user.id.into())?;
    insert(ADMIN_NAME, user.username.as_str().into())?;
    insert(SIGNED_IN_AT, chrono::Utc::now().timestamp().into())?;
    insert(SESSION_VERSION, user.session_version.into())?;
    insert(CSRF, new_token().into())?;
    session.renew();
    Ok(())
}

/// Signs out: ends every session of this admin, on every instance and device (the
/// admin's session version is bumped), then drops this cookie.
pub async fn sign_out(state: &AppState, session: &Session, admin: &Admin) -> Result<(), AppError> {
    let id = admin.id;
    crate::db::run(&state.db, move |conn| {
        Ok(AdminUser::revoke_sessions(conn, id)?)
    })
    .await?;
    session.purge();
    Ok(())
}

/// The session's CSRF token, created on first use.
pub fn csrf_token(session: &Session) -> Result<String, AppError> {
    if let Ok(Some(token)) = session.get::<String>(CSRF) {
        return Ok(token);
    }
    let token = new_token();
    session
        .insert(CSRF, &token)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("session: {e}")))?;
    Ok(token)
}

/// Checks a submitted token against the session's, in constant time.
pub fn check_csrf(session: &Session, submitted: &str) -> Result<(), AppError> {
    let expected = session.get::<String>(CSRF).ok().flatten();
    match expected {
        Some(expected)
            if !submitted.is_empty()
                && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes())) =>
        {
            Ok(())
        }
        _ => {
            log::warn!("refused a POST with a missing or wrong CSRF token");
            Err(AppError::Forbidden)
        }
    }
}

/// A one-time message shown on the next admin page (post/redirect/get).
pub fn set_flash(session: &Session, message: &str) {
    let _ = session.insert(FLASH, message);
}

pub fn take_flash(session: &Session) -> Option<String> {
    session.remove_as::<String>(FLASH).and_then(Result::ok)
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extractor for admin-only handlers: a GET without a signed-in admin is redirected to
/// the sign-in page (and back afterwards); any other method gets 403. A session whose
/// version is no longer the admin's (signed out elsewhere) counts as signed out; when
/// PostgreSQL cannot tell, the answer is 503 (fail closed).
impl FromRequest for Admin {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let session = req.get_session();
            let Some(admin) = current_admin(&session) else {
                return Err(signed_out(&req));
            };
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| {
                AppError::Internal(anyhow::anyhow!("the admin check needs AppState"))
            })?;
            let id = admin.id;
            let current = crate::db::run(&state.db, move |conn| {
                Ok(AdminUser::session_version(conn, id)?)
            })
            .await?;
            if current == Some(admin.session_version) {
                Ok(admin)
            } else {
                // Forget the dead sign-in but keep the session usable: `purge` would
                // drop what the sign-in form stores next (its CSRF token) as well.
                session.clear();
                Err(signed_out(&req))
            }
        })
    }
}

fn signed_out(req: &HttpRequest) -> AppError {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let next = match req.query_string() {
            "" => req.path().to_string(),
            q => format!("{}?{q}", req.path()),
        };
        AppError::LoginRequired { next }
    } else {
        AppError::Forbidden
    }
}

/// `next` after sign-in: only a local path, never another site (`//evil`, `/\evil`,
/// `https://…`); anything else falls back to `/admin/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/admin/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{has_session_cookie, safe_next};
    use actix_web::test::TestRequest;

    #[test]
    fn the_session_cookie_is_found_among_others_and_only_by_its_exact_name() {
        let with = |cookie: &str| {
            has_session_cookie(
                &TestRequest::default()
                    .insert_header(("Cookie", cookie))
                    .to_http_request(),
            )
        };
        assert!(with("pl_session=abc"));
        assert!(with("theme=dark; pl_session=abc; lang=en"));
        assert!(with("theme=dark;pl_session="));
        assert!(!with("pl_session2=abc; other=pl_session"));
        assert!(!with("xpl_session=abc"));
        assert!(!has_session_cookie(
            &TestRequest::default().to_http_request()
        ));
    }

    #[test]
    fn next_is_limited_to_local_paths() {
        assert_eq!(
            safe_next(Some("/admin/properties/new")),
            "/admin/properties/new"
        );
        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "evil",
            "/\t/evil",
        ] {
            assert_eq!(safe_next(Some(evil)), "/admin/", "{evil}");
        }
        assert_eq!(safe_next(None), "/admin/");
    }
}
