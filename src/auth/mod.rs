//! Admin authentication: sessions, CSRF, the admin guard.

/// Name of the session cookie. Its presence marks a request as not anonymous, so the
/// page cache never serves or stores it.
pub const SESSION_COOKIE: &str = "pl_session";
