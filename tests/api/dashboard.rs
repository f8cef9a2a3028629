//! The cache dashboard's server side: the list of this app's Redis keys and the
//! clear-cache button (signed-in admins only, CSRF-protected).

use property_listings::cache::KEY_LISTING_REUSE;

use crate::helpers::{
    PrivateRedis, TestApp, csrf_token_in, free_port, header, spawn_app, spawn_app_with,
};

/// Fills the page and query caches with a few anonymous visits.
async fn warm_cache(app: &TestApp) {
    let p = app.insert("Loft", "1200", "Leeds").await;
    for path in [
        "/properties/".to_string(),
        format!("/properties/{}/", p.id),
        "/api/properties/".into(),
    ] {
        assert_eq!(app.get_anonymous(&path).await.status(), 200, "{path}");
    }
}

fn listed_keys(body: &serde_json::Value) -> Vec<String> {
    body["keys"]
        .as_array()
        .expect("a keys array")
        .iter()
        .map(|k| k["key"].as_str().expect("a key name").to_string())
        .collect()
}

fn set_foreign_key(app: &TestApp, key: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("not ours")
        .arg("EX")
        .arg(60)
        .query(&mut app.redis())
        .expect("SET");
}

fn delete_key(app: &TestApp, key: &str) {
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query(&mut app.redis())
        .expect("DEL");
}

#[tokio::test]
async fn the_key_list_shows_this_apps_cache_keys_with_their_ttls() {
    let app = spawn_app().await;
    warm_cache(&app).await;

    let res = app.get_anonymous("/api/cache/keys").await;

    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "cache-control"), "no-store");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["prefix"], app.prefix);
    assert_eq!(body["truncated"], false);
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(body["count"], keys.len());
    let page_key = format!("{}:page:/properties/", app.prefix);
    let page = keys
        .iter()
        .find(|k| k["key"] == page_key.as_str())
        .unwrap_or_else(|| panic!("{page_key} listed in {body}"));
    assert_eq!(page["kind"], "page");
    let max_ttl_ms = (app.settings.page_cache_ttl + app.settings.cache_grace).as_millis() as i64;
    let ttl = page["ttl_ms"].as_i64().expect("a page entry expires");
    assert!(
        ttl > 0 && ttl <= max_ttl_ms,
        "ttl {ttl} of at most {max_ttl_ms}"
    );
    assert!(page["bytes"].as_u64().unwrap_or(0) > 0, "{page}");
    let query_key = format!("{}:all_properties", app.prefix);
    assert!(
        keys.iter()
            .any(|k| k["key"] == query_key.as_str() && k["kind"] == "query"),
        "{body}"
    );
}

#[tokio::test]
async fn the_key_list_leaves_out_other_apps_keys() {
    let app = spawn_app().await;
    warm_cache(&app).await;
    // Same leading characters, but another prefix: `SCAN MATCH PREFIX:*` must not match.
    let foreign = [
        format!("{}_other:page:/properties/", app.prefix),
        format!("x{}:page:/properties/", app.prefix),
    ];
    for key in &foreign {
        set_foreign_key(&app, key);
    }

    let body = app.get_json("/api/cache/keys").await;

    for key in &foreign {
        delete_key(&app, key);
    }
    let keys = listed_keys(&body);
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(key.starts_with(&format!("{}:", app.prefix)), "{key}");
    }
}

#[tokio::test]
async fn the_key_list_is_bounded() {
    let app = spawn_app().await;
    let mut pipe = redis::pipe();
    for i in 0..260 {
        pipe.cmd("SET")
            .arg(format!("{}:page:/properties/{i}/", app.prefix))
            .arg("x")
            .arg("EX")
            .arg(60)
            .ignore();
    }
    let _: () = pipe.query(&mut app.redis()).unwrap();

    let body = app.get_json("/api/cache/keys").await;

    let limit = property_listings::routes::cache::KEY_LIST_LIMIT;
    assert_eq!(body["limit"], limit);
    assert_eq!(listed_keys(&body).len(), limit);
    assert_eq!(body["count"], limit);
    assert_eq!(body["truncated"], true);
}

#[tokio::test]
async fn the_key_list_answers_503_json_when_redis_is_down() {
    let closed = free_port();
    let app = spawn_app_with(|s| s.redis_url = format!("redis://127.0.0.1:{closed}/0")).await;

    let res = app.get_anonymous("/api/cache/keys").await;

    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "redis unavailable");
}

#[tokio::test]
async fn anonymous_visitors_see_no_clear_cache_button() {
    let app = spawn_app().await;

    let html = app.get_anonymous("/cache/").await.text().await.unwrap();

    assert!(html.contains("id=\"keys-table\""));
    assert!(!html.contains("/admin/cache/clear"));
    assert!(!html.contains("csrf_token"));
}

#[tokio::test]
async fn signed_in_admins_see_the_clear_cache_button_with_their_csrf_token() {
    let app = spawn_app().await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/").await;

    let html = app.get("/cache/").await.text().await.unwrap();

    assert!(html.contains("action=\"/admin/cache/clear\""));
    assert_eq!(csrf_token_in(&html), token);
}

#[tokio::test]
async fn clearing_the_cache_without_a_session_is_forbidden() {
    let app = spawn_app().await;
    warm_cache(&app).await;
    let token = app.csrf_token("/admin/login").await; // a real token, but no sign-in

    let res = app
        .post_form("/admin/cache/clear", &[("csrf_token", &token)])
        .await;

    assert_eq!(res.status(), 403);
    assert!(!app.page_keys().is_empty(), "nothing was cleared");
}

#[tokio::test]
async fn clearing_the_cache_with_a_wrong_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    warm_cache(&app).await;
    app.sign_in().await;

    for token in ["", "forged-token"] {
        let res = app
            .post_form("/admin/cache/clear", &[("csrf_token", token)])
            .await;
        assert_eq!(res.status(), 403, "token {token:?}");
    }
    assert!(!app.page_keys().is_empty(), "nothing was cleared");
}

#[tokio::test]
async fn a_signed_in_admin_clears_this_apps_cache_and_only_it() {
    let app = spawn_app().await;
    warm_cache(&app).await;
    let foreign = format!("{}_other:page:/properties/", app.prefix);
    set_foreign_key(&app, &foreign);
    app.sign_in().await;
    let token = app.csrf_token("/admin/").await;

    let res = app
        .post_form("/admin/cache/clear", &[("csrf_token", &token)])
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(header(&res, "location"), "/cache/");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&foreign)
        .query(&mut app.redis())
        .unwrap();
    delete_key(&app, &foreign);
    assert!(exists, "another prefix's key is left alone");
    assert!(app.page_keys().is_empty(), "{:?}", app.keys());
    assert!(
        !app.keys()
            .contains_key(&format!("{}:all_properties", app.prefix))
    );
    let listed = app.get_json("/api/cache/keys").await;
    assert!(
        listed_keys(&listed).iter().all(|k| !k.contains(":page:")),
        "{listed}"
    );
    let dashboard = app.get("/cache/").await.text().await.unwrap();
    assert!(
        dashboard.contains("Cache cleared"),
        "the flash message shows"
    );
    // The cache fills again on the next visit.
    assert_eq!(
        header(&app.get_anonymous("/properties/").await, "x-cache"),
        "MISS"
    );
    assert!(!app.page_keys().is_empty());
}

#[tokio::test]
async fn search_terms_in_key_names_are_shown_to_admins_only() {
    let app = spawn_app().await;
    app.insert("Loft", "1", "A").await;
    app.get_anonymous("/properties/?q=my+secret+search").await;

    let anonymous = app.get_json("/api/cache/keys").await;
    app.sign_in().await;
    let admin: serde_json::Value = app.get("/api/cache/keys").await.json().await.unwrap();

    let anonymous_keys = listed_keys(&anonymous).join(" ");
    let admin_keys = listed_keys(&admin).join(" ");
    assert!(!anonymous_keys.contains("secret"), "{anonymous_keys}");
    assert!(
        anonymous_keys.contains(":page:/properties/?…"),
        "{anonymous_keys}"
    );
    assert!(admin_keys.contains("secret"), "{admin_keys}");
}

/// How many `SCAN` commands a Redis server has run since its stats were reset.
fn scan_calls(redis: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(redis).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_scan:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_burst_of_key_list_requests_costs_redis_one_listing() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    warm_cache(&app).await;
    let mut conn = redis.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();

    let burst = (0..40).map(|_| app.get_anonymous("/api/cache/keys"));
    let responses = futures_util::future::join_all(burst).await;

    assert!(responses.iter().all(|r| r.status() == 200));
    let scans = scan_calls(&mut conn);
    assert!(scans <= 2, "40 listings at once ran {scans} SCANs");

    // The shared copy is short-lived: a key stored now is listed a moment later.
    app.get_anonymous("/properties/?sort=price_asc").await;
    tokio::time::sleep(KEY_LISTING_REUSE).await;
    let listed = app.get_json("/api/cache/keys").await;
    assert!(
        listed_keys(&listed)
            .iter()
            .any(|k| k.ends_with(":page:/properties/?sort=price_asc")),
        "{listed}"
    );
}
