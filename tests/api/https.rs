//! `Secure` session cookies and `Strict-Transport-Security` (`COOKIE_SECURE`): unset,
//! only for requests that came over HTTPS — which the app, listening on plain HTTP,
//! learns from a trusted proxy's `X-Forwarded-Proto` or `Forwarded` header; `1` always;
//! `0` never.

use property_listings::auth::client_ip::parse_trusted_proxies;
use property_listings::config::{CookieSecure, Settings};

use crate::helpers::{TestApp, header, spawn_app_with};

/// The tests' requests come from 127.0.0.1: here, a trusted proxy.
async fn behind_a_proxy(customise: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.trusted_proxies = parse_trusted_proxies("127.0.0.1").unwrap();
        customise(s);
    })
    .await
}

/// The session cookie the sign-in form sets (it keeps its CSRF token there), as a
/// visitor with `headers` gets it.
async fn session_cookie(app: &TestApp, headers: &[(&str, &str)]) -> String {
    let res = app.new_visitor().get_with("/admin/login", headers).await;
    let cookie = header(&res, "set-cookie").to_string();
    assert!(cookie.starts_with("pl_session="), "{cookie:?}");
    cookie
}

fn is_secure(cookie: &str) -> bool {
    cookie
        .split(';')
        .skip(1)
        .any(|attribute| attribute.trim().eq_ignore_ascii_case("secure"))
}

const HTTPS: &[(&str, &str)] = &[("x-forwarded-proto", "https")];

#[tokio::test]
async fn behind_a_trusted_proxy_saying_https_the_cookie_is_secure_and_hsts_is_sent() {
    let app = behind_a_proxy(|_| {}).await;

    let res = app.new_visitor().get_with("/admin/login", HTTPS).await;

    let cookie = header(&res, "set-cookie");
    assert!(is_secure(cookie), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    let hsts = header(&res, "strict-transport-security");
    assert!(hsts.starts_with("max-age="), "{hsts:?}");
}

#[tokio::test]
async fn the_standard_forwarded_header_counts_too() {
    let app = behind_a_proxy(|_| {}).await;

    let cookie = session_cookie(&app, &[("forwarded", "for=203.0.113.9;proto=https")]).await;

    assert!(is_secure(&cookie), "{cookie}");
}

#[tokio::test]
async fn page_cache_hits_over_https_carry_hsts_and_plain_http_ones_do_not() {
    let app = behind_a_proxy(|_| {}).await;
    app.get_anonymous("/properties/").await;

    let https = app.new_visitor().get_with("/properties/", HTTPS).await;
    let http = app.get_anonymous("/properties/").await;

    assert_eq!(header(&https, "x-cache"), "HIT");
    assert!(header(&https, "strict-transport-security").starts_with("max-age="));
    assert_eq!(header(&http, "x-cache"), "HIT");
    assert_eq!(header(&http, "strict-transport-security"), "");
}

#[tokio::test]
async fn plain_http_gets_neither_a_secure_cookie_nor_hsts() {
    let app = behind_a_proxy(|_| {}).await;

    for headers in [&[][..], &[("x-forwarded-proto", "http")]] {
        let res = app.new_visitor().get_with("/admin/login", headers).await;

        assert!(!is_secure(header(&res, "set-cookie")), "{headers:?}");
        assert_eq!(header(&res, "strict-transport-security"), "");
    }
}

#[tokio::test]
async fn a_peer_that_is_not_a_trusted_proxy_cannot_claim_https() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = parse_trusted_proxies("10.0.0.0/8").unwrap();
    })
    .await;

    let res = app.new_visitor().get_with("/admin/login", HTTPS).await;

    assert!(!is_secure(header(&res, "set-cookie")));
    assert_eq!(header(&res, "strict-transport-security"), "");
}

#[tokio::test]
async fn cookie_secure_1_always_marks_it_and_0_never_does() {
    // Always: with no proxy at all to say HTTPS. Never: despite a trusted proxy saying so.
    let always = spawn_app_with(|s| s.cookie_secure = CookieSecure::Always).await;
    let never = behind_a_proxy(|s| s.cookie_secure = CookieSecure::Never).await;

    let plain = always.new_visitor().get("/admin/login").await;
    let forwarded = never.new_visitor().get_with("/admin/login", HTTPS).await;

    assert!(is_secure(header(&plain, "set-cookie")));
    assert!(header(&plain, "strict-transport-security").starts_with("max-age="));
    assert!(!is_secure(header(&forwarded, "set-cookie")));
    assert_eq!(header(&forwarded, "strict-transport-security"), "");
}

#[tokio::test]
async fn signing_in_over_https_sets_a_secure_cookie_that_keeps_working() {
    let app = behind_a_proxy(|_| {}).await;
    app.create_admin("manager", "correct horse battery staple");
    let page = app
        .get_with("/admin/login", HTTPS)
        .await
        .text()
        .await
        .unwrap();
    let token = crate::helpers::csrf_token_in(&page);

    let res = app
        .post_form_with(
            "/admin/login",
            &[
                ("username", "manager"),
                ("password", "correct horse battery staple"),
                ("csrf_token", &token),
            ],
            HTTPS,
        )
        .await;

    assert_eq!(res.status(), 303);
    assert!(is_secure(header(&res, "set-cookie")));
    // reqwest keeps a Secure cookie for http://127.0.0.1 (a trustworthy origin), as
    // browsers do for localhost.
    assert_eq!(app.get_with("/admin/", HTTPS).await.status(), 200);
}
