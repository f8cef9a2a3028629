//! Sign-in and sign-out as an attacker tries them: simultaneous guesses, huge or
//! malformed user names, many names from one address or one IPv6 /64, several
//! instances with Redis down, bursts that would keep every core hashing, replayed
//! cookies, forged `X-Forwarded-For`.

use std::time::Duration;

use diesel::prelude::*;
use futures_util::future::join_all;
use property_listings::auth::client_ip::parse_trusted_proxies;
use property_listings::auth::throttle::MAX_PER_NETWORK;
use property_listings::config::Settings;
use property_listings::schema::sign_in_attempts;

use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, TestApp, csrf_token_in, free_port, header, random_suffix,
    session_cookie_in, spawn_app, spawn_app_with, spawn_instance_with,
};

const WRONG: &str = "not the password";

/// A cookie and its CSRF token from the sign-in page, for a client without a cookie jar.
async fn sign_in_page(app: &TestApp) -> (String, String) {
    let res = app.get_anonymous("/admin/login").await;
    let cookie = session_cookie_in(&res);
    (cookie, csrf_token_in(&res.text().await.unwrap()))
}

/// A form POST carrying exactly `cookie` (no jar) and the extra headers.
async fn post_as(
    app: &TestApp,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let headers = [&[("cookie", cookie)], headers].concat();
    app.new_visitor().post_form_with(path, form, &headers).await
}

async fn get_as(app: &TestApp, path: &str, cookie: &str) -> reqwest::Response {
    app.new_visitor()
        .get_with(path, &[("cookie", cookie)])
        .await
}

/// Fires 30 sign-ins for the admin at once (29 wrong, 1 right); returns the statuses.
async fn thirty_sign_ins_at_once(app: &TestApp) -> Vec<u16> {
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let (cookie, token) = sign_in_page(app).await;
    let attempts = (0..30).map(|i| {
        let password = if i == 15 { ADMIN_PASSWORD } else { WRONG };
        let form = [
            ("username", ADMIN_USER),
            ("password", password),
            ("csrf_token", token.as_str()),
        ];
        let cookie = cookie.clone();
        async move {
            let res = post_as(app, "/admin/login", &cookie, &form, &[]).await;
            if res.status() == 429 {
                assert!(header(&res, "retry-after").parse::<u64>().unwrap() > 0);
            }
            res.status().as_u16()
        }
    });
    join_all(attempts).await
}

fn assert_at_most_five_evaluated(statuses: &[u16]) {
    let evaluated = statuses.iter().filter(|s| **s != 429).count();
    assert!(
        (1..=5).contains(&evaluated),
        "{evaluated} attempts were evaluated: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 303 | 429)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn thirty_simultaneous_sign_ins_get_at_most_five_evaluated() {
    let app = spawn_app().await;

    let statuses = thirty_sign_ins_at_once(&app).await;

    assert_at_most_five_evaluated(&statuses);
}

#[tokio::test]
async fn thirty_simultaneous_sign_ins_get_at_most_five_evaluated_while_redis_is_down() {
    let app =
        spawn_app_with(|s| s.redis_url = format!("redis://127.0.0.1:{}/0", free_port())).await;

    let statuses = thirty_sign_ins_at_once(&app).await;

    assert_at_most_five_evaluated(&statuses);
}

#[tokio::test]
async fn a_user_name_no_admin_can_have_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let token = app.csrf_token("/admin/login").await;
    let long = format!("{}{}", "y".repeat(151), crate::helpers::random_suffix());

    for name in [long.as_str(), &"z".repeat(60_000)] {
        let res = app.post_login(name, &"p".repeat(2_000), &token).await;
        assert_eq!(res.status(), 200);
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("Invalid user name or password.")
        );
    }

    assert!(
        counters(&app).is_empty(),
        "nothing counted for impossible names"
    );
}

/// The sign-in counters in the app's database: (scope key, count).
fn counters(app: &TestApp) -> Vec<(Vec<u8>, i64)> {
    sign_in_attempts::table
        .select((sign_in_attempts::scope_key, sign_in_attempts::count))
        .load(&mut app.db())
        .expect("sign-in counters")
}

#[tokio::test]
async fn sign_in_counters_have_a_fixed_size_and_hold_neither_name_nor_address() {
    let app = spawn_app().await;
    let token = app.csrf_token("/admin/login").await;
    let longest = format!("{}{}", "w".repeat(138), random_suffix());

    for name in ["a", longest.as_str()] {
        app.post_login(name, WRONG, &token).await;
    }

    let counters = counters(&app);
    assert_eq!(counters.len(), 3, "one per name, one for the address");
    for (key, _) in &counters {
        assert_eq!(key.len(), 32);
        assert!(!key.windows(3).any(|w| w == b"www"));
        assert!(!key.windows(9).any(|w| w == b"127.0.0.1"));
    }
}

#[tokio::test]
async fn a_nul_byte_in_the_sign_in_form_gets_the_generic_failure() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let token = app.csrf_token("/admin/login").await;

    for (name, password) in [("bob\0", WRONG), (ADMIN_USER, "correct\0horse")] {
        let res = app.post_login(name, password, &token).await;

        assert_eq!(res.status(), 200, "{name:?}");
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("Invalid user name or password.")
        );
    }
}

#[tokio::test]
async fn a_cookie_saved_before_sign_out_is_signed_out() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let (cookie, token) = sign_in_page(&app).await;
    let form = [
        ("username", ADMIN_USER),
        ("password", ADMIN_PASSWORD),
        ("csrf_token", token.as_str()),
    ];
    let signed_in = post_as(&app, "/admin/login", &cookie, &form, &[]).await;
    assert_eq!(signed_in.status(), 303);
    let saved = session_cookie_in(&signed_in);
    let page = get_as(&app, "/admin/properties/new", &saved).await;
    let token = csrf_token_in(&page.text().await.unwrap());
    let out = post_as(
        &app,
        "/admin/logout",
        &saved,
        &[("csrf_token", &token)],
        &[],
    )
    .await;
    assert_eq!(out.status(), 303);

    app.get_anonymous("/properties/?q=secret+search").await;
    let keys = get_as(&app, "/api/cache/keys", &saved)
        .await
        .text()
        .await
        .unwrap();
    let dashboard = get_as(&app, "/cache/", &saved).await.text().await.unwrap();
    let replayed = get_as(&app, "/admin/", &saved).await;
    let write = [
        ("title", "Replayed"),
        ("description", ""),
        ("price", "1"),
        ("location", "X"),
        ("csrf_token", token.as_str()),
    ];
    let posted = post_as(&app, "/admin/properties/new", &saved, &write, &[]).await;
    let login_page = get_as(&app, "/admin/login", &saved).await;

    assert!(!keys.contains("secret"), "search terms stay hidden: {keys}");
    assert!(
        !dashboard.contains("clear-cache-form"),
        "no clear-cache button"
    );
    assert_eq!(replayed.status(), 303);
    assert!(header(&replayed, "location").starts_with("/admin/login"));
    assert_eq!(posted.status(), 403);
    assert_eq!(app.count_rows(), 0, "nothing written");
    assert_eq!(
        login_page.status(),
        200,
        "the sign-in form, not a redirect loop"
    );
}

#[tokio::test]
async fn signing_out_ends_the_admins_sessions_on_other_devices_too() {
    let app = spawn_app().await;
    let other_device = app.new_visitor();
    other_device.sign_in().await;
    app.sign_in().await;

    let token = app.csrf_token("/admin/").await;
    app.post_form("/admin/logout", &[("csrf_token", &token)])
        .await;

    let res = other_device.get("/admin/").await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn a_device_signed_out_elsewhere_can_sign_in_again_from_the_sign_in_page() {
    let app = spawn_app().await;
    let other_device = app.new_visitor();
    other_device.sign_in().await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/").await;
    app.post_form("/admin/logout", &[("csrf_token", &token)])
        .await;

    // Straight to the sign-in page with the revoked cookie: a usable form.
    other_device.sign_in().await;
    let res = other_device.get("/admin/").await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_admin_page_is_503_when_the_database_cannot_confirm_the_session() {
    let app = spawn_app_with(|s| s.db_timeout = Duration::from_millis(500)).await;
    app.sign_in().await;
    app.drop_database();

    let res = app.get("/admin/properties/new").await;

    assert_eq!(res.status(), 503);
}

/// Five wrong passwords from one forwarded client, then one from another: its status.
async fn next_clients_attempt_after_five_failures(app: &TestApp) -> u16 {
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let (cookie, token) = sign_in_page(app).await;
    let form = [
        ("username", ADMIN_USER),
        ("password", WRONG),
        ("csrf_token", token.as_str()),
    ];
    for _ in 0..5 {
        let xff = [("x-forwarded-for", "203.0.113.1")];
        let res = post_as(app, "/admin/login", &cookie, &form, &xff).await;
        assert_eq!(res.status(), 200);
    }
    let xff = [("x-forwarded-for", "203.0.113.1, 203.0.113.2")];
    post_as(app, "/admin/login", &cookie, &form, &xff)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app =
        spawn_app_with(|s| s.trusted_proxies = parse_trusted_proxies("127.0.0.1").unwrap()).await;

    assert_eq!(next_clients_attempt_after_five_failures(&app).await, 200);
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_for_is_ignored_and_the_peer_shares_one_limit() {
    let app = spawn_app().await;

    assert_eq!(next_clients_attempt_after_five_failures(&app).await, 429);
}

/// Behind a trusted proxy on 127.0.0.1, so each test can pick its client addresses.
fn behind_a_proxy(s: &mut Settings) {
    s.trusted_proxies = parse_trusted_proxies("127.0.0.1").unwrap();
}

/// One wrong sign-in for `username` as the forwarded client `client`: its status.
async fn attempt_from(app: &TestApp, client: &str, username: &str) -> reqwest::Response {
    let (cookie, token) = sign_in_page(app).await;
    let form = [
        ("username", username),
        ("password", WRONG),
        ("csrf_token", token.as_str()),
    ];
    post_as(
        app,
        "/admin/login",
        &cookie,
        &form,
        &[("x-forwarded-for", client)],
    )
    .await
}

#[tokio::test]
async fn one_address_trying_many_user_names_is_refused_after_the_per_address_limit() {
    let app = spawn_app().await;
    let (cookie, token) = sign_in_page(&app).await;

    let mut statuses = Vec::new();
    for _ in 0..MAX_PER_NETWORK + 3 {
        let name = format!("guess-{}", random_suffix());
        let form = [
            ("username", name.as_str()),
            ("password", WRONG),
            ("csrf_token", token.as_str()),
        ];
        let res = post_as(&app, "/admin/login", &cookie, &form, &[]).await;
        if res.status() == 429 {
            assert!(header(&res, "retry-after").parse::<u64>().unwrap() > 0);
        }
        statuses.push(res.status().as_u16());
    }

    let limit = MAX_PER_NETWORK as usize;
    assert!(statuses[..limit].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[limit..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn addresses_in_one_ipv6_64_share_the_sign_in_limit_and_another_64_does_not() {
    let app = spawn_app_with(behind_a_proxy).await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    for i in 1..=5 {
        let res = attempt_from(&app, &format!("2001:db8:1:2::{i}"), ADMIN_USER).await;
        assert_eq!(res.status(), 200);
    }

    let same_64 = attempt_from(&app, "2001:db8:1:2:ffff:ffff:ffff:fffe", ADMIN_USER).await;
    let next_64 = attempt_from(&app, "2001:db8:1:3::1", ADMIN_USER).await;

    assert_eq!(same_64.status(), 429);
    assert_eq!(next_64.status(), 200);
}

#[tokio::test]
async fn addresses_in_one_ipv6_64_share_the_per_address_limit_across_names() {
    let app = spawn_app_with(behind_a_proxy).await;
    for i in 0..MAX_PER_NETWORK {
        let client = format!("2001:db8:7:7:{i:x}::1");
        let res = attempt_from(&app, &client, &format!("guess-{i}")).await;
        assert_eq!(res.status(), 200);
    }

    let same_64 = attempt_from(&app, "2001:db8:7:7:abcd::2", "yet-another-name").await;
    let next_64 = attempt_from(&app, "2001:db8:7:8::1", "yet-another-name").await;

    assert_eq!(same_64.status(), 429);
    assert_eq!(next_64.status(), 200);
}

#[tokio::test]
async fn two_instances_with_redis_down_evaluate_five_attempts_in_all() {
    let dead_redis = format!("redis://127.0.0.1:{}/0", free_port());
    let app = spawn_app_with(|s| s.redis_url = dead_redis).await;
    let other = spawn_instance_with(&app, |_| {}).await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let (cookie, token) = sign_in_page(&app).await;
    let form = [
        ("username", ADMIN_USER),
        ("password", WRONG),
        ("csrf_token", token.as_str()),
    ];

    let mut statuses = Vec::new();
    for i in 0..12 {
        let instance = if i % 2 == 0 { &app } else { &other };
        let url = instance.url("/admin/login");
        let res = post_as(&app, &url, &cookie, &form, &[]).await;
        statuses.push(res.status().as_u16());
    }

    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn sign_ins_get_503_with_retry_after_while_every_password_check_slot_is_busy() {
    let app = spawn_app_with(|s| {
        behind_a_proxy(s);
        s.sign_in_hashes = 1;
        s.sign_in_hash_wait = Duration::from_millis(200);
    })
    .await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    // Something else holds the only slot, as a long password check would.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let checks = app.state.clone();
    let holder = tokio::spawn(async move { checks.password_checks.run(move || held.recv()).await });
    while app.state.password_checks.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let app = &app;
    let attempts = (1..=6)
        .map(|i| async move { attempt_from(app, &format!("203.0.113.{i}"), ADMIN_USER).await });
    let busy = join_all(attempts).await;
    release.send(()).unwrap();
    holder.await.unwrap().unwrap().unwrap();
    let after = attempt_from(app, "203.0.113.99", ADMIN_USER).await;

    for res in busy {
        assert_eq!(res.status(), 503);
        assert!(header(&res, "retry-after").parse::<u64>().unwrap() > 0);
        let page = res.text().await.unwrap();
        assert!(
            page.contains("name=\"csrf_token\""),
            "the sign-in form again"
        );
    }
    assert_eq!(after.status(), 200, "evaluated once a slot is free");
    assert_eq!(app.state.password_checks.peak_in_flight(), 1);
}

#[tokio::test]
async fn simultaneous_sign_ins_never_run_more_password_checks_at_once_than_allowed() {
    let app = spawn_app_with(|s| {
        behind_a_proxy(s);
        s.sign_in_hashes = 1;
    })
    .await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);

    let app = &app;
    let attempts = (1..=16).map(|i| async move {
        let name = if i % 2 == 0 { ADMIN_USER } else { "nobody" };
        attempt_from(app, &format!("198.51.100.{i}"), name).await
    });
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();

    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 503)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    assert_eq!(app.state.password_checks.peak_in_flight(), 1);
}

#[tokio::test]
async fn expired_sign_in_counters_are_deleted() {
    let app = spawn_app().await;
    diesel::sql_query(
        "INSERT INTO sign_in_attempts (scope_key, count, window_start) \
         VALUES (sha256('expired'), 3, now() - interval '16 minutes')",
    )
    .execute(&mut app.db())
    .unwrap();

    let res = attempt_from(&app, "203.0.113.1", "someone").await;

    assert_eq!(res.status(), 200);
    let left = counters(&app);
    assert!(!left.is_empty());
    assert!(
        left.iter().all(|(_, count)| *count == 1),
        "only this attempt's counters: {left:?}"
    );
}

#[tokio::test]
async fn a_sign_in_while_postgresql_is_down_gets_503_before_any_password_check() {
    let app = spawn_app_with(|s| s.db_timeout = Duration::from_millis(500)).await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let (cookie, token) = sign_in_page(&app).await;
    app.drop_database();

    let form = [
        ("username", ADMIN_USER),
        ("password", ADMIN_PASSWORD),
        ("csrf_token", token.as_str()),
    ];
    let res = post_as(&app, "/admin/login", &cookie, &form, &[]).await;

    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("name=\"password\""));
    assert_eq!(app.state.password_checks.peak_in_flight(), 0);
}
