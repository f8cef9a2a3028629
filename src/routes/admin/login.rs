//! Sign-in and sign-out. One generic error for an unknown user, a wrong password or a
//! user name no admin can have (an unknown user costs the same Argon2 work). Each
//! attempt is counted before it is evaluated, so at most a few per window are
//! (`auth::throttle`), and its password check waits, for a bounded time, for one of a
//! few low-priority checking threads (`password::PasswordChecks`), so a burst cannot
//! crowd pages out.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{admin_page, see_other};
use crate::auth::client_ip::client_address;
use crate::auth::password::CheckError;
use crate::auth::throttle::Refused;
use crate::auth::{self, password};
use crate::error::AppError;
use crate::models::admin_user::AdminUser;
use crate::state::AppState;

const GENERIC_ERROR: &str = "Invalid user name or password.";
/// When to try again after every password check slot stayed busy: a burst is over soon.
const BUSY_RETRY_AFTER_SECS: u64 = 2;

#[derive(Template)]
#[template(path = "admin/login.html")]
pub struct LoginPage {
    pub csrf_token: String,
    pub username: String,
    pub next: String,
    pub error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    next: String,
}

pub async fn login_form(
    admin: Option<auth::Admin>,
    session: Session,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, AppError> {
    let next = auth::safe_next(query.next.as_deref());
    // Checked against revocation: a signed-out cookie must get the form, not a loop
    // of redirects between here and `next`.
    if admin.is_some() {
        return Ok(see_other(&next));
    }
    admin_page(
        StatusCode::OK,
        &LoginPage {
            csrf_token: auth::csrf_token(&session)?,
            username: String::new(),
            next,
            error: None,
        },
    )
}

pub async fn login(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    auth::check_csrf(&session, &form.csrf_token)?;
    let form = form.into_inner();
    let next = auth::safe_next(Some(&form.next));
    let username = form.username.trim().to_string();
    let client = client_address(&req, &state.settings.trusted_proxies);
    let again = |status: StatusCode, error: String| -> Result<HttpResponse, AppError> {
        admin_page(
            status,
            &LoginPage {
                csrf_token: auth::csrf_token(&session)?,
                username: username.clone(),
                next: next.clone(),
                error: Some(error),
            },
        )
    };

    // A name no admin can have (over 150 characters, a NUL byte, …) is refused before
    // anything is stored or sent to PostgreSQL: same answer as a wrong password.
    if password::check_username(&username).is_err() {
        log::warn!("failed sign-in with an impossible user name from {client}");
        return again(StatusCode::OK, GENERIC_ERROR.into());
    }

    // One trip to PostgreSQL: count the attempt (both limits, before any hashing),
    // then, only if it may be evaluated, look the admin up.
    let counted = {
        let (app, username) = (state.clone(), username.clone());
        crate::db::run(&state.db, move |conn| {
            if let Err(refused) = app.login_throttle.reserve(conn, client, &username)? {
                return Ok(Err(refused));
            }
            Ok(Ok(AdminUser::find_by_username(conn, &username)?))
        })
        .await
    };
    let user = match counted {
        Ok(Ok(user)) => user,
        Ok(Err(Refused { retry_after_secs })) => {
            let mut res = again(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many sign-in attempts. Try again in {} minute(s).",
                    retry_after_secs.div_ceil(60)
                ),
            )?;
            res.headers_mut()
                .insert(RETRY_AFTER, retry_after_secs.into());
            return Ok(res);
        }
        Err(AppError::Unavailable(_)) => {
            return again(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not reachable right now. Please try again in a moment.".into(),
            );
        }
        Err(e) => return Err(e),
    };
    let password = form.password;
    let checked = state
        .password_checks
        .run(move || match user {
            Some(user) if password::verify(&password, &user.password_hash) => Some(user),
            Some(_) => None,
            None => {
                password::verify_dummy(&password);
                None
            }
        })
        .await;
    let verified = match checked {
        Ok(verified) => verified,
        Err(CheckError::Busy) => {
            log::warn!("refused a sign-in for {username:?} from {client}: password checks busy");
            let mut res = again(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins are being checked right now. Please try again in a moment."
                    .into(),
            )?;
            res.headers_mut()
                .insert(RETRY_AFTER, BUSY_RETRY_AFTER_SECS.into());
            return Ok(res);
        }
        Err(e @ CheckError::Failed(_)) => return Err(AppError::Internal(e.into())),
    };

    match verified {
        Some(user) => {
            auth::sign_in(&session, &user)?;
            log::info!("admin {:?} signed in from {client}", user.username);
            Ok(see_other(&next))
        }
        None => {
            log::warn!("failed sign-in for {username:?} from {client}");
            again(StatusCode::OK, GENERIC_ERROR.into())
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

/// Ends every session of this admin (all devices, all instances).
pub async fn logout(
    admin: auth::Admin,
    session: Session,
    state: web::Data<AppState>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    auth::check_csrf(&session, &form.csrf_token)?;
    auth::sign_out(&state, &session, &admin).await?;
    log::info!(
        "admin {:?} signed out (every session ended)",
        admin.username
    );
    Ok(see_other("/admin/login"))
}
