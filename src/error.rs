//! The one application error type and how it becomes a response.
//!
//! Which error goes where: handlers and models return `AppError`; HTML routes let it
//! render the error page (`ResponseError for AppError`), JSON routes wrap it in
//! `ApiError`, which renders the same status as JSON. Causes of 500s and 503s are
//! logged, never shown. Cache (Redis) failures never reach this type: the cache layer
//! turns them into misses.

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    /// A query parameter with a value we cannot use: the message names it.
    #[error("invalid value for `{param}`: {message}")]
    BadRequest { param: String, message: String },
    /// A form body that cannot be read as the form's fields: the message says why.
    #[error("invalid form: {0}")]
    BadForm(String),
    #[error("forbidden")]
    Forbidden,
    /// A method other than GET or HEAD on a read-only route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request body did not arrive within `body_timeout::BODY_TIMEOUT`.
    #[error("request body timed out")]
    RequestTimeout,
    /// An admin page asked for without a signed-in admin: redirect to sign-in.
    #[error("sign-in required")]
    LoginRequired { next: String },
    #[error("too many attempts")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("request body too large")]
    PayloadTooLarge,
    /// PostgreSQL (or another dependency we cannot do without) is unreachable.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            param: param.to_string(),
            message: message.into(),
        }
    }

    fn title_and_message(&self) -> (&'static str, String) {
        match self {
            Self::NotFound => (
                "Page not found",
                "The page you asked for does not exist or has been removed.".into(),
            ),
            Self::BadRequest { param, message } => (
                "Bad request",
                sentence(format!(
                    "The value of the `{param}` parameter is not valid: {message}"
                )),
            ),
            Self::BadForm(message) => (
                "Bad request",
                sentence(format!("The submitted form could not be read: {message}")),
            ),
            Self::Forbidden => (
                "Forbidden",
                "You are not allowed to do that. Reload the form and try again.".into(),
            ),
            Self::MethodNotAllowed => (
                "Method not allowed",
                "This address can only be read (GET or HEAD).".into(),
            ),
            Self::RequestTimeout => (
                "Request timeout",
                "The request was not received in time. Please try again.".into(),
            ),
            Self::LoginRequired { .. } => ("Sign-in required", "Please sign in.".into()),
            Self::TooManyRequests { retry_after_secs } => (
                "Too many attempts",
                format!(
                    "Too many failed sign-ins. Try again in {} minutes.",
                    retry_after_secs.div_ceil(60)
                ),
            ),
            Self::PayloadTooLarge => (
                "Request too large",
                "The submitted form is larger than 64 KiB.".into(),
            ),
            Self::Unavailable(_) => (
                "Temporarily unavailable",
                "The listings database is not reachable right now. Please try again in a moment."
                    .into(),
            ),
            Self::Internal(_) => (
                "Something went wrong",
                "An unexpected error occurred. It has been logged.".into(),
            ),
        }
    }

    fn log(&self) {
        match self {
            Self::Unavailable(cause) => log::warn!("503: {cause}"),
            Self::Internal(cause) => log::error!("500: {cause:#}"),
            _ => {}
        }
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => Self::NotFound,
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_string()),
            other => Self::Internal(other.into()),
        }
    }
}

/// The `Allow` header of a 405 from a read-only route.
const READ_ONLY_METHODS: &str = "GET, HEAD";

/// `message` ending with exactly one full stop, whether or not it had one (messages of
/// other crates often do).
fn sentence(message: String) -> String {
    let mut message = message.trim_end().trim_end_matches('.').to_string();
    message.push('.');
    message
}

#[derive(Template)]
#[template(path = "errors/error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub title: String,
    pub message: String,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BadForm(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::LoginRequired { .. } => StatusCode::SEE_OTHER,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let status = self.status_code();
        if let Self::LoginRequired { next } = self {
            let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
            return HttpResponse::SeeOther()
                .insert_header((LOCATION, format!("/admin/login?{query}")))
                .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
                .finish();
        }
        let (title, message) = self.title_and_message();
        let page = ErrorPage {
            status: status.as_u16(),
            title: title.into(),
            message,
        };
        let body = page.render().unwrap_or_else(|e| {
            log::error!("rendering the error page failed: {e}");
            format!("{} {}", status.as_u16(), title)
        });
        let mut res = HttpResponse::build(status);
        res.insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
        match self {
            Self::Unavailable(_) => {
                res.insert_header(("Retry-After", "5"));
            }
            Self::TooManyRequests { retry_after_secs } => {
                res.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            Self::MethodNotAllowed => {
                res.insert_header((ALLOW, READ_ONLY_METHODS));
            }
            // The rest of the body may still be on its way: drop the connection.
            Self::RequestTimeout => {
                res.force_close();
            }
            _ => {}
        }
        res.body(body)
    }
}

/// `AppError` for JSON endpoints: same status, body `{"error": "...", "status": N}`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub AppError);

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        let status = self.status_code();
        let error = match &self.0 {
            AppError::BadRequest { param, message } => {
                format!("invalid value for `{param}`: {message}")
            }
            other => other.title_and_message().0.to_lowercase(),
        };
        let mut body = serde_json::json!({ "error": error, "status": status.as_u16() });
        if let AppError::BadRequest { param, .. } = &self.0 {
            body["parameter"] = serde_json::Value::String(param.clone());
        }
        let mut res = HttpResponse::build(status);
        res.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let AppError::MethodNotAllowed = self.0 {
            res.insert_header((ALLOW, READ_ONLY_METHODS));
        }
        res.json(body)
    }
}

/// The buffer a page is rendered into starts this large (a listing page is ~15 KB).
const RENDER_CAPACITY: usize = 24 * 1024;

/// Renders an Askama template into an HTML 200 response; a rendering failure is a 500.
pub fn render_html<T: Template>(template: &T) -> Result<HttpResponse, AppError> {
    let body = crate::timing::timed(crate::timing::Kind::Render, || {
        // Room for a whole listing page up front: growing the buffer step by step
        // copied it several times per render.
        let mut body = String::with_capacity(T::SIZE_HINT.max(RENDER_CAPACITY));
        template.render_into(&mut body).map(|()| body)
    })
    .map_err(|e| AppError::Internal(anyhow::anyhow!("rendering template: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// The query cache answers an unavailable database with an expired entry, if any.
impl crate::cache::query::LoadError for AppError {
    fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
