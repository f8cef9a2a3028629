//! `Secure` cookies and `Strict-Transport-Security`, decided per request
//! (`COOKIE_SECURE`): by default, when the request came over HTTPS — on a TLS listener,
//! or through a trusted reverse proxy (`TRUSTED_PROXIES`) that says so; `1` always; `0`
//! never. A cookie marked `Secure` on a plain-HTTP site would be refused by browsers
//! (nobody could sign in), and one left unmarked behind HTTPS could leak over a
//! downgraded connection: the session middleware's own flag is fixed at start-up, so
//! this middleware adds the attribute to each `Set-Cookie` of a secure response.
//!
//! Only the TCP peer's word counts, and only when it is a trusted proxy: anyone else's
//! `X-Forwarded-Proto` is ignored. Of a trusted proxy's headers, the last
//! `X-Forwarded-Proto` value (the one the proxy nearest the app wrote), else the `proto`
//! of the last `Forwarded` element. A client that fools a proxy which passes its headers
//! through unchanged can only mark its own cookie (its browser then drops it over HTTP)
//! or its own response (browsers ignore HSTS sent over HTTP).
//!
//! Outermost but for the security headers (see `startup.rs`), so page-cache hits, which
//! are answered before the session middleware and routing, get HSTS as well.

use actix_web::HttpRequest;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    FORWARDED, HeaderMap, HeaderName, HeaderValue, SET_COOKIE, STRICT_TRANSPORT_SECURITY,
};
use actix_web::middleware::Next;
use actix_web::web::Data;

use crate::auth::client_ip::Cidr;
use crate::config::CookieSecure;
use crate::state::AppState;

/// One year; no `includeSubDomains`: the app cannot know what else runs under its domain.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The middleware: marks the cookies of a secure response `Secure` and adds HSTS.
pub async fn secure_transport(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let secure = req
        .app_data::<Data<AppState>>()
        .is_some_and(|state| is_secure(req.request(), &state.settings));
    let mut res = next.call(req).await?;
    if secure {
        mark_secure(res.headers_mut());
    }
    Ok(res)
}

/// Whether this request's response gets `Secure` cookies and HSTS (see the module docs).
fn is_secure(req: &HttpRequest, settings: &crate::config::Settings) -> bool {
    match settings.cookie_secure {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::IfHttps => came_over_https(req, &settings.trusted_proxies),
    }
}

/// On a TLS listener, or from a trusted proxy that reports `https`.
fn came_over_https(req: &HttpRequest, trusted: &[Cidr]) -> bool {
    if req.app_config().secure() {
        return true;
    }
    let Some(peer) = req.peer_addr() else {
        return false;
    };
    trusted.iter().any(|proxy| proxy.contains(peer.ip()))
        && forwarded_proto(req.headers()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The scheme a proxy reports: the last `X-Forwarded-Proto` value, else the `proto` of
/// the last `Forwarded` element (RFC 7239).
fn forwarded_proto(headers: &HeaderMap) -> Option<&str> {
    let last = |name: &HeaderName| {
        headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .map(str::trim)
    };
    if let Some(proto) = last(&X_FORWARDED_PROTO) {
        return Some(proto);
    }
    last(&FORWARDED)?.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("proto")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// Adds `Secure` to every cookie set that lacks it, and HSTS unless already there.
fn mark_secure(headers: &mut HeaderMap) {
    let cookies: Vec<HeaderValue> = headers.get_all(SET_COOKIE).cloned().collect();
    if !cookies.is_empty() {
        headers.remove(SET_COOKIE);
        for cookie in cookies {
            headers.append(SET_COOKIE, with_secure(cookie));
        }
    }
    if !headers.contains_key(STRICT_TRANSPORT_SECURITY) {
        headers.insert(STRICT_TRANSPORT_SECURITY, HSTS);
    }
}

/// `cookie` with a `Secure` attribute (unchanged when it has one or is not text).
fn with_secure(cookie: HeaderValue) -> HeaderValue {
    let Ok(text) = cookie.to_str() else {
        return cookie;
    };
    let has_it = text
        .split(';')
        .skip(1)
        .any(|attribute| attribute.trim().eq_ignore_ascii_case("secure"));
    if has_it {
        return cookie;
    }
    HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_proxy_nearest_the_app_has_the_last_word() {
        let proto = |pairs| forwarded_proto(&headers(pairs)).map(str::to_string);
        assert_eq!(
            proto(&[("x-forwarded-proto", "https")]).as_deref(),
            Some("https")
        );
        assert_eq!(
            proto(&[("x-forwarded-proto", "https, http")]).as_deref(),
            Some("http")
        );
        assert_eq!(
            proto(&[(
                "forwarded",
                "for=1.2.3.4;proto=http, for=10.0.0.1;Proto=\"https\""
            )])
            .as_deref(),
            Some("https")
        );
        assert_eq!(proto(&[("forwarded", "proto=https, for=10.0.0.1")]), None);
        assert_eq!(
            proto(&[("forwarded", "proto=https"), ("x-forwarded-proto", "http")]).as_deref(),
            Some("http")
        );
        assert_eq!(proto(&[]), None);
    }

    #[test]
    fn every_cookie_gets_one_secure_attribute() {
        let mut map = headers(&[
            ("set-cookie", "a=1; HttpOnly; SameSite=Lax"),
            ("set-cookie", "b=2; secure"),
            ("set-cookie", "c=secure"),
        ]);
        mark_secure(&mut map);
        let cookies: Vec<&str> = map
            .get_all(SET_COOKIE)
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            [
                "a=1; HttpOnly; SameSite=Lax; Secure",
                "b=2; secure",
                "c=secure; Secure"
            ]
        );
        assert_eq!(map.get(STRICT_TRANSPORT_SECURITY).unwrap(), HSTS);
    }
}
