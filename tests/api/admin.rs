//! The admin area, as a listing manager (and an attacker) uses it through the forms.

use std::time::Duration;

use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, TestApp, csrf_token_in, header, listing, session_cookie_in,
    spawn_app, spawn_app_with, spawn_instance_with,
};

async fn signed_in_app() -> TestApp {
    let app = spawn_app().await;
    app.sign_in().await;
    app
}

#[tokio::test]
async fn admin_pages_redirect_anonymous_visitors_to_sign_in() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "1", "A").await;
    for path in [
        "/admin/".to_string(),
        "/admin/properties/new".into(),
        format!("/admin/properties/{}/edit", p.id),
        format!("/admin/properties/{}/delete", p.id),
    ] {
        let res = app.get_anonymous(&path).await;
        assert_eq!(res.status(), 303, "{path}");
        let location = header(&res, "location");
        assert!(
            location.starts_with("/admin/login?next="),
            "{path} → {location}"
        );
    }
}

#[tokio::test]
async fn admin_posts_without_a_session_are_forbidden_and_write_nothing() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "1", "A").await;
    let token = app.csrf_token("/admin/login").await; // a real token, but no sign-in
    let mut paths = write_routes(p.id).to_vec();
    paths.push("/admin/logout".into());
    assert_refused_and_nothing_written(&app, &paths, &token, p.id).await;
}

/// The admin routes that write a listing (`id`'s edit and delete, and "new").
fn write_routes(id: i64) -> [String; 3] {
    [
        "/admin/properties/new".to_string(),
        format!("/admin/properties/{id}/edit"),
        format!("/admin/properties/{id}/delete"),
    ]
}

/// POSTs a listing form with `token` to each of `paths`: every one must be a 403, and
/// the one listing there is (`id`, titled "Loft") must be exactly as it was.
async fn assert_refused_and_nothing_written(app: &TestApp, paths: &[String], token: &str, id: i64) {
    for path in paths {
        let res = app
            .post_form(path, &listing("Hacked", "1", "X", token))
            .await;
        assert_eq!(res.status(), 403, "{path} with {token:?}");
    }
    assert_eq!(app.count_rows(), 1);
    assert_eq!(
        app.get_json(&format!("/api/properties/{id}/")).await["title"],
        "Loft"
    );
}

#[tokio::test]
async fn signing_in_sets_a_protected_cookie_and_lands_on_the_admin_list() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let token = app.csrf_token("/admin/login").await;

    let res = app.post_login(ADMIN_USER, ADMIN_PASSWORD, &token).await;

    assert_eq!(res.status(), 303);
    assert_eq!(header(&res, "location"), "/admin/");
    let cookie = header(&res, "set-cookie").to_string();
    assert!(cookie.starts_with("pl_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );
    let admin = app.get("/admin/").await;
    assert_eq!(admin.status(), 200);
    assert_eq!(header(&admin, "cache-control"), "no-store");
    assert!(admin.text().await.unwrap().contains(ADMIN_USER));
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_generic_error() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let token = app.csrf_token("/admin/login").await;

    let mut bodies = Vec::new();
    for (user, password) in [(ADMIN_USER, "wrong password!!"), ("nobody", ADMIN_PASSWORD)] {
        let res = app.post_login(user, password, &token).await;
        assert_eq!(res.status(), 200);
        let body = res.text().await.unwrap();
        assert!(body.contains("Invalid user name or password."));
        bodies.push(body.replace(user, "USER"));
    }

    assert_eq!(bodies[0], bodies[1], "no user enumeration");
    assert_eq!(app.get("/admin/").await.status(), 303, "still signed out");
}

#[tokio::test]
async fn sign_in_without_the_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    app.get("/admin/login").await;
    for token in ["", "forged-token"] {
        let res = app.post_login(ADMIN_USER, ADMIN_PASSWORD, token).await;
        assert_eq!(res.status(), 403, "token {token:?}");
    }
    assert_eq!(app.get("/admin/").await.status(), 303);
}

#[tokio::test]
async fn sign_in_returns_to_a_local_next_page_but_never_to_another_site() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    for (next, expected) in [
        ("/admin/properties/new", "/admin/properties/new"),
        ("//evil.example/", "/admin/"),
        ("https://evil.example/", "/admin/"),
        ("/\\evil.example", "/admin/"),
    ] {
        let fresh = app.new_visitor();
        let token = fresh.csrf_token("/admin/login").await;
        let res = fresh
            .post_form(
                "/admin/login",
                &[
                    ("username", ADMIN_USER),
                    ("password", ADMIN_PASSWORD),
                    ("csrf_token", &token),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(res.status(), 303);
        assert_eq!(header(&res, "location"), expected, "next={next}");
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_refused_for_a_while() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let token = app.csrf_token("/admin/login").await;
    for _ in 0..5 {
        let res = app.post_login(ADMIN_USER, "not the password", &token).await;
        assert_eq!(res.status(), 200);
    }

    let blocked = app.post_login(ADMIN_USER, ADMIN_PASSWORD, &token).await;

    assert_eq!(blocked.status(), 429);
    let retry_after: u64 = header(&blocked, "retry-after").parse().unwrap();
    assert!(
        (1..=15 * 60).contains(&retry_after),
        "until the 15-minute window ends: {retry_after}"
    );
}

#[tokio::test]
async fn a_listing_created_through_the_form_shows_on_the_very_next_anonymous_request() {
    let app = signed_in_app().await;
    // Warm the caches an anonymous visitor would hit.
    app.get_anonymous("/properties/").await;
    app.get_anonymous("/api/properties/").await;
    let token = app.csrf_token("/admin/properties/new").await;

    let res = app
        .post_form(
            "/admin/properties/new",
            &listing("Canal House", "450000.50", "Amsterdam", &token),
        )
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(header(&res, "location"), "/admin/");
    let api = app.get_json("/api/properties/").await;
    assert_eq!(api["count"], 1);
    assert_eq!(api["results"][0]["price"], "450000.50");
    let id = api["results"][0]["id"].as_i64().unwrap();
    assert!(
        app.get_anonymous("/properties/")
            .await
            .text()
            .await
            .unwrap()
            .contains("Canal House")
    );
    let detail = app
        .get_anonymous(&format!("/properties/{id}/"))
        .await
        .text()
        .await
        .unwrap();
    assert!(detail.contains("450,000.50"));
    // The flash message is shown once.
    let admin = app.get("/admin/").await.text().await.unwrap();
    assert!(admin.contains("Canal House") && admin.contains("created"));
    let again = app.get("/admin/").await.text().await.unwrap();
    assert!(!again.contains("id=\"flash\""));
}

#[tokio::test]
async fn each_invalid_field_is_a_422_with_the_values_kept_and_nothing_written() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let long_title = "t".repeat(201);
    let long_location = "l".repeat(101);
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("", "100", "Here", "title"),
        ("   ", "100", "Here", "title"),
        (&long_title, "100", "Here", "title"),
        ("Ok", "100", "", "location"),
        ("Ok", "100", &long_location, "location"),
        ("Ok", "", "Here", "price"),
        ("Ok", "NaN", "Here", "price"),
        ("Ok", "1e5", "Here", "price"),
        ("Ok", "-1", "Here", "price"),
        ("Ok", "1.234", "Here", "price"),
        ("Ok", "abc", "Here", "price"),
        ("Ok", "100000000", "Here", "price"),
    ];
    for (title, price, location, field) in cases {
        let res = app
            .post_form(
                "/admin/properties/new",
                &listing(title, price, location, &token),
            )
            .await;
        assert_eq!(
            res.status(),
            422,
            "{field}: {title:?} {price:?} {location:?}"
        );
        let body = res.text().await.unwrap();
        assert!(
            body.contains(&format!("id=\"{field}-error\"")),
            "a message for {field}"
        );
        let kept = if field == "price" {
            price
        } else {
            "Bright rooms, quiet street."
        };
        assert!(body.contains(kept), "submitted value {kept:?} kept");
    }
    assert_eq!(app.count_rows(), 0);
}

#[tokio::test]
async fn two_bad_fields_get_one_message_each() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let res = app
        .post_form("/admin/properties/new", &listing("", "abc", "Here", &token))
        .await;
    assert_eq!(res.status(), 422);
    let body = res.text().await.unwrap();
    assert_eq!(body.matches("class=\"field-error\"").count(), 2);
}

#[tokio::test]
async fn a_missing_or_forged_csrf_token_is_forbidden_and_writes_nothing() {
    let app = signed_in_app().await;
    let p = app.insert("Loft", "1", "A").await;
    for token in ["", "0000", "forged"] {
        assert_refused_and_nothing_written(&app, &write_routes(p.id), token, p.id).await;
    }
}

#[tokio::test]
async fn every_admin_post_without_a_body_or_as_another_type_is_forbidden_and_changes_nothing() {
    let app = signed_in_app().await;
    let p = app.insert("Loft", "1", "A").await;
    app.warm(&["/properties/".into()]).await;
    let mut paths = write_routes(p.id).to_vec();
    paths.extend([
        "/admin/logout".into(),
        "/admin/cache/clear".into(),
        "/admin/login".into(),
    ]);

    for path in &paths {
        let empty = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(empty.status(), 403, "{path} without a body");
        let json = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(r#"{"title":"Hacked"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(json.status(), 403, "{path} with a JSON body");
    }

    assert_eq!(app.count_rows(), 1);
    assert_eq!(
        app.get_json(&format!("/api/properties/{}/", p.id)).await["title"],
        "Loft"
    );
    assert_eq!(app.get("/admin/").await.status(), 200, "still signed in");
    assert!(!app.page_keys().is_empty(), "the cache was not cleared");
}

#[tokio::test]
async fn an_edit_through_the_form_shows_on_the_next_anonymous_request() {
    let app = signed_in_app().await;
    let p = app.insert("Loft", "100", "A").await;
    let detail = format!("/properties/{}/", p.id);
    let api = format!("/api/properties/{}/", p.id);
    for path in [&detail, &api, &"/properties/".to_string()] {
        app.get_anonymous(path).await;
    }
    let form = app
        .get(&format!("/admin/properties/{}/edit", p.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        form.contains("value=\"100.00\""),
        "the form shows the current price"
    );
    let token = csrf_token_in(&form);

    let res = app
        .post_form(
            &format!("/admin/properties/{}/edit", p.id),
            &listing("Loft Deluxe", "199.99", "A", &token),
        )
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(app.get_json(&api).await["price"], "199.99");
    assert!(
        app.get_anonymous(&detail)
            .await
            .text()
            .await
            .unwrap()
            .contains("Loft Deluxe")
    );
    assert!(
        app.get_anonymous("/properties/")
            .await
            .text()
            .await
            .unwrap()
            .contains("199.99")
    );
}

#[tokio::test]
async fn an_invalid_edit_changes_nothing() {
    let app = signed_in_app().await;
    let p = app.insert("Loft", "100", "A").await;
    let token = app
        .csrf_token(&format!("/admin/properties/{}/edit", p.id))
        .await;
    let res = app
        .post_form(
            &format!("/admin/properties/{}/edit", p.id),
            &listing("Loft", "1.234", "A", &token),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        app.get_json(&format!("/api/properties/{}/", p.id)).await["price"],
        "100.00"
    );
}

#[tokio::test]
async fn deleting_asks_first_then_removes_the_listing_everywhere() {
    let app = signed_in_app().await;
    let p = app.insert("Doomed Shack", "1", "A").await;
    let detail = format!("/properties/{}/", p.id);
    app.get_anonymous(&detail).await;

    let confirm = app.get(&format!("/admin/properties/{}/delete", p.id)).await;
    assert_eq!(confirm.status(), 200);
    let html = confirm.text().await.unwrap();
    assert!(html.contains("Doomed Shack"));
    assert_eq!(app.count_rows(), 1, "asking writes nothing");

    let res = app
        .post_form(
            &format!("/admin/properties/{}/delete", p.id),
            &[("csrf_token", &csrf_token_in(&html))],
        )
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(app.count_rows(), 0);
    assert_eq!(app.get_anonymous(&detail).await.status(), 404);
}

#[tokio::test]
async fn editing_or_deleting_a_missing_listing_is_404() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/properties/new").await;
    assert_eq!(app.get("/admin/properties/9999/edit").await.status(), 404);
    assert_eq!(app.get("/admin/properties/abc/delete").await.status(), 404);
    let res = app
        .post_form(
            "/admin/properties/9999/edit",
            &listing("X", "1", "Y", &token),
        )
        .await;
    assert_eq!(res.status(), 404);
    let res = app
        .post_form("/admin/properties/9999/delete", &[("csrf_token", &token)])
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.count_rows(), 0);
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let huge = "x".repeat(70 * 1024);
    let res = app
        .post_form(
            "/admin/properties/new",
            &[
                ("title", "Big"),
                ("description", &huge),
                ("price", "1"),
                ("location", "A"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status(), 413);
    assert_eq!(app.count_rows(), 0);
}

/// POSTs a form to `path` the way a slow-body attacker does: the headers at once
/// (`Content-Length: 1000`), then 10 bytes of body every 2 seconds. Returns what the
/// server answered before it closed the connection, or `None` if it was still waiting
/// after 15 seconds.
async fn post_slowly(app: &TestApp, path: &str, cookie: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 1000\r\nCookie: {cookie}\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let dribble = tokio::spawn(async move {
        writer.write_all(b"title=xxxx").await?;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            writer.write_all(b"xxxxxxxxxx").await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    // A reset after the answer still leaves the answer in `answer`.
    let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer)).await;
    dribble.abort();
    read.ok()
        .map(|_| String::from_utf8_lossy(&answer).into_owned())
}

/// Signs the test admin in and returns the session cookie (`name=value`) it got.
async fn session_cookie(app: &TestApp) -> String {
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let token = app.csrf_token("/admin/login").await;
    let res = app.post_login(ADMIN_USER, ADMIN_PASSWORD, &token).await;
    assert_eq!(res.status(), 303, "sign-in succeeds");
    session_cookie_in(&res)
}

#[tokio::test]
async fn a_listing_form_sent_slowly_is_cut_off_with_408_and_writes_nothing() {
    let app = spawn_app().await;
    let cookie = session_cookie(&app).await;
    let answer = post_slowly(&app, "/admin/properties/new", &cookie)
        .await
        .expect("the server answers and closes within 15 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.count_rows(), 0);
}

#[tokio::test]
async fn a_sign_in_form_sent_slowly_is_cut_off_with_408() {
    let app = spawn_app().await;
    let answer = post_slowly(&app, "/admin/login", "")
        .await
        .expect("the server answers and closes within 15 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("text/html"), "{answer}");
}

/// Posts `body` as it is (not re-encoded) with the app's signed-in client.
async fn post_raw(app: &TestApp, path: &str, body: String) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_title_that_is_not_valid_utf8_is_a_422_and_writes_nothing() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let res = post_raw(
        &app,
        "/admin/properties/new",
        format!("title=%FF%FEabc&description=&price=100&location=Here&csrf_token={token}"),
    )
    .await;
    assert_eq!(res.status(), 422);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("id=\"title-error\""),
        "a message for the title"
    );
    assert!(body.contains("UTF-8"));
    assert_eq!(app.count_rows(), 0);
}

#[tokio::test]
async fn invisible_or_direction_changing_text_is_a_422_and_writes_nothing() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let cases = [
        ("\u{200B}\u{200B}", "Here", "title"),
        ("Loft \u{202E}gnp.exe", "Here", "title"),
        ("Loft", "\u{2066}Here\u{2069}", "location"),
    ];
    for (title, location, field) in cases {
        let res = app
            .post_form(
                "/admin/properties/new",
                &listing(title, "100", location, &token),
            )
            .await;
        assert_eq!(res.status(), 422, "{title:?} {location:?}");
        let body = res.text().await.unwrap();
        assert!(
            body.contains(&format!("id=\"{field}-error\"")),
            "a message for {field}"
        );
    }
    assert_eq!(app.count_rows(), 0);
}

#[tokio::test]
async fn a_form_that_cannot_be_read_gets_a_tidy_400_page() {
    let app = spawn_app().await;
    let res = post_raw(&app, "/admin/login", "csrf_token=a&csrf_token=b".into()).await;
    assert_eq!(res.status(), 400);
    assert!(header(&res, "content-type").starts_with("text/html"));
    let body = res.text().await.unwrap();
    assert!(
        body.contains("The submitted form could not be read: duplicate field `csrf_token`.<"),
        "{body}"
    );
    assert!(!body.contains(".."), "one full stop");
}

#[tokio::test]
async fn a_visitor_who_only_opened_the_sign_in_page_still_gets_cached_pages() {
    let app = spawn_app().await;
    app.get("/admin/login").await; // now carries a session cookie with a CSRF token
    app.get("/properties/").await;
    let res = app.get("/properties/").await;
    assert_eq!(header(&res, "x-cache"), "HIT");
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = signed_in_app().await;
    let token = app.csrf_token("/admin/").await;
    let forged = app
        .post_form("/admin/logout", &[("csrf_token", "forged")])
        .await;
    assert_eq!(forged.status(), 403);

    let res = app
        .post_form("/admin/logout", &[("csrf_token", &token)])
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(app.get("/admin/").await.status(), 303);
}

#[tokio::test]
async fn a_form_submitted_while_the_database_is_down_comes_back_with_its_values() {
    let app = spawn_app_with(|s| s.db_timeout = Duration::from_millis(500)).await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/properties/new").await;
    app.drop_database();

    let res = app
        .post_form(
            "/admin/properties/new",
            &listing("Unsaved Villa", "10", "Nowhere", &token),
        )
        .await;

    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(body.contains("Unsaved Villa") && body.contains("nothing was saved"));
}

#[tokio::test]
async fn the_configured_admin_is_created_at_start_and_never_overwritten() {
    let first = spawn_app_with(|s| {
        s.admin_username = Some("boss".into());
        s.admin_password = Some("first password 123".into());
    })
    .await;
    let second = spawn_instance_with(&first, |s| {
        s.admin_password = Some("second password 456".into());
    })
    .await;
    let login = async |password: &str| {
        let token = second.csrf_token("/admin/login").await;
        second.post_login("boss", password, &token).await.status()
    };
    assert_eq!(
        login("second password 456").await,
        200,
        "the second password was not applied"
    );
    assert_eq!(login("first password 123").await, 303);
}
