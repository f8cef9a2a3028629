//! The cache dashboard's server side: the counters for everyone, the details (Redis
//! nodes, the instances and their leases, recent writes, the list of this app's cache
//! entries) for signed-in admins or
//! with `PUBLIC_DASHBOARD`, and the clear-cache button (signed-in admins only,
//! CSRF-protected).

use std::time::{Duration, Instant};

use property_listings::cache::{KEY_LISTING_REUSE, Keys};
use property_listings::routes::listing::ALL_PROPERTIES;

use crate::helpers::{
    PrivateRedis, TestApp, csrf_token_in, free_port, header, redis_addr, spawn_app, spawn_app_with,
    spawn_instance_with,
};

/// An app whose dashboard details are public (`PUBLIC_DASHBOARD=1`).
async fn public_dashboard_app() -> TestApp {
    spawn_app_with(|s| s.public_dashboard = true).await
}

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

/// Sets each key (expiring in a minute) in the app's Redis.
fn set_keys(app: &TestApp, keys: impl IntoIterator<Item = String>) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("SET").arg(key).arg("x").arg("EX").arg(60).ignore();
    }
    let _: () = pipe.query(&mut app.redis()).unwrap();
}

fn delete_key(app: &TestApp, key: &str) {
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query(&mut app.redis())
        .expect("DEL");
}

#[tokio::test]
async fn the_key_list_shows_this_apps_cache_keys_with_their_ttls() {
    let app = public_dashboard_app().await;
    warm_cache(&app).await;

    let res = app.get_anonymous("/api/cache/keys").await;

    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "cache-control"), "no-store");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["prefix"], app.prefix);
    assert_eq!(body["truncated"], false);
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(body["count"], keys.len());
    let page_key = app.state.cache.keys().page("/properties/");
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
    let query_key = app.state.cache.keys().named(ALL_PROPERTIES);
    assert!(
        keys.iter()
            .any(|k| k["key"] == query_key.as_str() && k["kind"] == "query"),
        "{body}"
    );
}

#[tokio::test]
async fn the_key_list_leaves_out_other_apps_keys() {
    let app = public_dashboard_app().await;
    warm_cache(&app).await;
    // Same leading characters, but another prefix: `SCAN MATCH PREFIX:*` must not match.
    let foreign = [
        Keys::new(format!("{}_other", app.prefix)).page("/properties/"),
        Keys::new(format!("x{}", app.prefix)).page("/properties/"),
    ];
    set_keys(&app, foreign.clone());

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
    let app = public_dashboard_app().await;
    set_keys(
        &app,
        (0..260).map(|i| app.state.cache.keys().page(&format!("/properties/{i}/"))),
    );

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
    let app = spawn_app_with(|s| {
        s.redis_url = format!("redis://127.0.0.1:{closed}/0");
        s.public_dashboard = true;
    })
    .await;

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
    let foreign = Keys::new(format!("{}_other", app.prefix)).page("/properties/");
    set_keys(&app, [foreign.clone()]);
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
            .contains_key(&app.state.cache.keys().named(ALL_PROPERTIES))
    );
    let listed: serde_json::Value = app.get("/api/cache/keys").await.json().await.unwrap();
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
    assert_eq!(app.x_cache("/properties/").await, "MISS");
    assert!(!app.page_keys().is_empty());
}

#[tokio::test]
async fn search_terms_in_key_names_are_shown_to_admins_only() {
    let app = public_dashboard_app().await;
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
    let app = spawn_app_with(|s| {
        s.redis_url = redis.url();
        s.public_dashboard = true;
    })
    .await;
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
    // One listing: one SCAN per kind of entry (pages, query results) in this small Redis.
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

#[tokio::test]
async fn sprayed_tokens_counters_and_locks_do_not_crowd_cache_entries_out_of_the_key_list() {
    let app = public_dashboard_app().await;
    warm_cache(&app).await;
    let keys = app.state.cache.keys();
    let entries: Vec<String> = (1..=30)
        .map(|i| keys.page(&format!("/properties/?page={i}")))
        .collect();
    set_keys(&app, entries.clone());
    let p = &app.prefix;
    set_keys(
        &app,
        (0..400).flat_map(|i| {
            [
                format!("{p}:login_failures:10.0.{}.{}:{i:064x}", i / 250, i % 250),
                keys.refresh_lock(&keys.page(&format!("/properties/{i}/"))),
                keys.token(&format!("listing:{i}")),
            ]
        }),
    );

    let body = app.get_json("/api/cache/keys").await;

    let listed = listed_keys(&body);
    for key in &entries {
        assert!(listed.contains(key), "{key} listed");
    }
    assert!(listed.contains(&keys.page("/properties/")), "{body}");
    assert!(listed.contains(&keys.named(ALL_PROPERTIES)), "{body}");
    for row in body["keys"].as_array().unwrap() {
        assert!(row["kind"] == "page" || row["kind"] == "query", "{row}");
    }
    assert_eq!(body["truncated"], false);
}

#[tokio::test]
async fn anonymous_visitors_get_the_counters_but_not_the_nodes_or_recent_writes() {
    let app = spawn_app().await;
    warm_cache(&app).await; // a write, then visits

    let res = app.get_anonymous("/api/cache/metrics").await;

    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains(&redis_addr()), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(json["keyspace_hits"].is_u64() && json["keyspace_misses"].is_u64());
    assert!(json["hit_ratio"].is_number());
    assert!(json["app"]["page"]["hits"].is_u64(), "{json}");
    assert!(json["app"]["query"]["hit_ratio"].is_number(), "{json}");
    assert!(json["app"]["invalidations"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["details"], false);
    assert!(json.get("redis_nodes").is_none(), "{json}");
    assert!(json["app"].get("recent_invalidations").is_none(), "{json}");
}

#[tokio::test]
async fn signed_in_admins_see_the_nodes_and_the_recent_writes() {
    let app = spawn_app().await;
    warm_cache(&app).await;
    app.insert("Flat", "900", "York").await; // a write once the cache is in use
    app.sign_in().await;

    let json: serde_json::Value = app.get("/api/cache/metrics").await.json().await.unwrap();

    assert_eq!(json["details"], true);
    assert_eq!(json["redis_nodes"][0]["address"], redis_addr(), "{json}");
    assert!(
        !json["app"]["recent_invalidations"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{json}"
    );
}

#[tokio::test]
async fn with_a_public_dashboard_everyone_sees_the_details() {
    let app = public_dashboard_app().await;
    warm_cache(&app).await;

    let json = app.get_json("/api/cache/metrics").await;
    let keys = app.get_anonymous("/api/cache/keys").await;

    assert_eq!(json["details"], true);
    assert!(
        json["redis_nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
    );
    assert!(json["app"]["recent_invalidations"].is_array(), "{json}");
    assert_eq!(keys.status(), 200);
}

#[tokio::test]
async fn while_redis_is_down_anonymous_visitors_still_get_no_recent_writes() {
    let closed = free_port();
    let app = spawn_app_with(|s| s.redis_url = format!("redis://127.0.0.1:{closed}/0")).await;
    app.insert("Loft", "1200", "Leeds").await;

    let res = app.get_anonymous("/api/cache/metrics").await;

    assert_eq!(res.status(), 503);
    let json: serde_json::Value = res.json().await.unwrap();
    assert!(json["app"]["page"].is_object(), "{json}");
    assert!(json["app"].get("recent_invalidations").is_none(), "{json}");
    assert!(json.get("detail").is_none(), "{json}");
}

#[tokio::test]
async fn the_key_list_is_for_signed_in_admins() {
    let app = spawn_app().await;
    warm_cache(&app).await;

    let anonymous = app.get_anonymous("/api/cache/keys").await;
    app.sign_in().await;
    let admin = app.get("/api/cache/keys").await;

    assert_eq!(anonymous.status(), 403);
    assert_eq!(header(&anonymous, "cache-control"), "no-store");
    let text = anonymous.text().await.unwrap();
    assert!(!text.contains(&app.prefix), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("sign in"),
        "{json}"
    );
    assert_eq!(admin.status(), 200);
    let listed = listed_keys(&admin.json().await.unwrap());
    assert!(listed.contains(&app.state.cache.keys().page("/properties/")));
}

#[tokio::test]
async fn the_dashboard_asks_anonymous_visitors_to_sign_in_for_the_details() {
    let app = spawn_app().await;

    let anonymous = app.get_anonymous("/cache/").await.text().await.unwrap();
    app.sign_in().await;
    let admin = app.get("/cache/").await.text().await.unwrap();
    let public = public_dashboard_app().await;
    let demo = public.get_anonymous("/cache/").await.text().await.unwrap();

    assert!(anonymous.contains("href=\"/admin/login?next=/cache/\""));
    for hidden in ["Redis servers", "instances", "last writes", "keys"] {
        assert!(
            anonymous.contains(&format!("to see the {hidden}")),
            "{hidden}"
        );
    }
    assert!(!anonymous.contains("data-keys-url"));
    for shown in [&admin, &demo] {
        assert!(shown.contains("data-keys-url=\"/api/cache/keys\""));
        assert!(!shown.contains("to see the Redis servers"));
    }
}

/// The metrics JSON once `count` instances hold a lease (as its `instances` show).
async fn metrics_with_leases(app: &TestApp, count: usize) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let json = app.get_json("/api/cache/metrics").await;
        let leased = json["instances"].as_array().map_or(0, |instances| {
            instances
                .iter()
                .filter(|i| i["lease_ms_left"].as_u64() > Some(0))
                .count()
        });
        if leased == count {
            return json;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never {count} leases: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_metrics_list_every_instance_with_its_lease_and_the_last_invalidation_it_applied() {
    let app = public_dashboard_app().await;
    let _other = spawn_instance_with(&app, |_| {}).await;
    metrics_with_leases(&app, 2).await;

    app.insert("Loft", "1200", "Leeds").await; // returns once every lease acknowledged it
    let json = app.get_json("/api/cache/metrics").await;

    let seq = json["invalidation_seq"].as_u64().expect("a number");
    assert!(seq > 0, "{json}");
    let instances = json["instances"].as_array().expect("a list");
    assert_eq!(instances.len(), 2, "{json}");
    for instance in instances {
        assert!(!instance["id"].as_str().unwrap().is_empty(), "{json}");
        assert!(instance["lease_ms_left"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(instance["applied"].as_u64(), Some(seq), "{json}");
    }
}

#[tokio::test]
async fn anonymous_visitors_get_the_invalidation_number_but_not_the_instances() {
    let app = spawn_app().await;
    app.insert("Loft", "1200", "Leeds").await;

    let json = app.get_json("/api/cache/metrics").await;

    assert_eq!(json["details"], false);
    assert!(json.get("instances").is_none(), "{json}");
    assert!(json["invalidation_seq"].as_u64() > Some(0), "{json}");
}
