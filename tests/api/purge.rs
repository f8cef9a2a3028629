//! Purging by hand from the dashboard (`POST /admin/cache/purge`): one listing's pages
//! or one URL, signed-in admins only, CSRF-checked; a bad value purges nothing.

use crate::helpers::{TestApp, header, spawn_app};

/// Two listings, each with its detail page, its API twin and the price-sorted list
/// cached (asserted HITs).
pub(crate) async fn two_cached_listings(app: &TestApp) -> (i64, i64) {
    let x = app.insert("Loft", "1200", "Leeds").await.id;
    let y = app.insert("Cottage", "900", "York").await.id;
    app.warm(&[
        format!("/properties/{x}/"),
        format!("/api/properties/{x}/"),
        format!("/properties/{y}/"),
        "/properties/?sort=price_asc".into(),
    ])
    .await;
    (x, y)
}

/// How many invalidations this app has recorded (a purge counts as one).
fn invalidations(app: &TestApp) -> u64 {
    app.state.cache.metrics().snapshot().invalidations
}

#[tokio::test]
async fn purging_without_a_signed_in_admin_is_forbidden() {
    let app = spawn_app().await;
    let (x, _) = two_cached_listings(&app).await;
    let token = app.csrf_token("/admin/login").await; // a real token, but no sign-in

    let res = app
        .post_form(
            "/admin/cache/purge",
            &[("listing", &x.to_string()), ("csrf_token", &token)],
        )
        .await;

    assert_eq!(res.status(), 403);
    assert_eq!(app.x_cache(&format!("/properties/{x}/")).await, "HIT");
}

#[tokio::test]
async fn purging_with_a_missing_or_wrong_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    let (x, _) = two_cached_listings(&app).await;
    app.sign_in().await;

    for token in ["", "forged-token"] {
        let res = app
            .post_form(
                "/admin/cache/purge",
                &[("url", &format!("/properties/{x}/")), ("csrf_token", token)],
            )
            .await;
        assert_eq!(res.status(), 403, "token {token:?}");
    }
    assert_eq!(app.x_cache(&format!("/properties/{x}/")).await, "HIT");
}

#[tokio::test]
async fn purging_a_listing_drops_its_pages_and_leaves_another_listings_cached() {
    let app = spawn_app().await;
    let (x, y) = two_cached_listings(&app).await;
    app.sign_in().await;
    let token = app.csrf_token("/cache/").await;

    let res = app
        .post_form(
            "/admin/cache/purge",
            &[("listing", &x.to_string()), ("csrf_token", &token)],
        )
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(header(&res, "location"), "/cache/");
    assert_eq!(app.x_cache(&format!("/properties/{x}/")).await, "MISS");
    assert_eq!(app.x_cache(&format!("/api/properties/{x}/")).await, "MISS");
    assert_eq!(app.x_cache(&format!("/properties/{y}/")).await, "HIT");
    let dashboard = app.get("/cache/").await.text().await.unwrap();
    assert!(
        dashboard.contains(&format!("Purged listing #{x}: replaced "))
            && dashboard.contains(&format!("listing:{x}, ")),
        "the message names the tokens: {dashboard}"
    );
}

#[tokio::test]
async fn purging_a_url_drops_that_page_in_any_spelling() {
    let app = spawn_app().await;
    let (x, _) = two_cached_listings(&app).await;
    app.sign_in().await;
    let token = app.csrf_token("/cache/").await;

    let res = app
        .post_form(
            "/admin/cache/purge",
            &[
                ("url", "/properties/?utm=1&sort=price_asc"),
                ("csrf_token", &token),
            ],
        )
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(app.x_cache("/properties/?sort=price_asc").await, "MISS");
    assert_eq!(app.x_cache(&format!("/properties/{x}/")).await, "HIT");
    let dashboard = app.get("/cache/").await.text().await.unwrap();
    assert!(
        dashboard
            .contains("Purged /properties/?sort=price_asc: deleted its entry and replaced sorted"),
        "the message names the canonical URL and the token: {dashboard}"
    );
}

#[tokio::test]
async fn a_bad_value_gets_the_form_again_and_purges_nothing() {
    let app = spawn_app().await;
    let (x, y) = two_cached_listings(&app).await;
    app.sign_in().await;
    let token = app.csrf_token("/cache/").await;
    let before = invalidations(&app);
    let x_path = format!("/properties/{x}/");

    for (fields, kept) in [
        (vec![("listing", "abc")], "value=\"abc\""),
        (vec![("listing", "-3")], "value=\"-3\""),
        (vec![("url", "/admin/")], "value=\"/admin/\""),
        (vec![("url", "/properties/?page=abc")], "page=abc"),
        (vec![("listing", "1"), ("url", x_path.as_str())], "not both"),
        (vec![], "Give a listing id or a page URL"),
        (
            vec![("listing", " "), ("url", "")],
            "Give a listing id or a page URL",
        ),
    ] {
        let mut form = fields.clone();
        form.push(("csrf_token", &token));

        let res = app.post_form("/admin/cache/purge", &form).await;

        assert_eq!(res.status(), 422, "{fields:?}");
        assert_eq!(header(&res, "cache-control"), "no-store");
        let html = res.text().await.unwrap();
        assert!(html.contains("id=\"purge-error\""), "{fields:?}: {html}");
        assert!(html.contains(kept), "{fields:?} shows {kept:?}");
    }

    assert_eq!(invalidations(&app), before, "no token was replaced");
    for path in [
        x_path.clone(),
        format!("/api/properties/{x}/"),
        format!("/properties/{y}/"),
        "/properties/?sort=price_asc".into(),
    ] {
        assert_eq!(app.x_cache(&path).await, "HIT", "{path}");
    }
}

#[tokio::test]
async fn the_dashboard_shows_the_last_writes_to_everyone_and_the_purge_forms_to_admins() {
    let app = spawn_app().await;

    let anonymous = app.get_anonymous("/cache/").await.text().await.unwrap();
    app.sign_in().await;
    let admin = app.get("/cache/").await.text().await.unwrap();

    for html in [&anonymous, &admin] {
        assert!(html.contains("id=\"writes-table\""));
        assert!(html.contains("id=\"writes-body\""));
    }
    assert!(!anonymous.contains("/admin/cache/purge"));
    assert!(!anonymous.contains("id=\"edit-demo-table\""));
    assert!(admin.contains("id=\"purge-listing-form\""));
    assert!(admin.contains("id=\"purge-url-form\""));
    assert_eq!(admin.matches("action=\"/admin/cache/purge\"").count(), 2);
    assert!(admin.contains("id=\"edit-demo-table\""));
}
