//! The page cache: HIT/MISS/BYPASS, TTLs, ETags, bounded keys, grace.

use std::time::Duration;

use crate::helpers::{ADMIN_USER, header, public_routes, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_first_visit_misses_and_the_next_one_hits_with_the_same_body() {
    let app = spawn_app().await;
    app.insert("Loft", "100", "Austin, TX").await;

    let first = app.get_anonymous("/properties/").await;
    let first_cache = header(&first, "x-cache").to_string();
    let first_body = first.text().await.unwrap();
    let second = app.get_anonymous("/properties/").await;

    assert_eq!(first_cache, "MISS");
    assert_eq!(header(&second, "x-cache"), "HIT");
    assert_eq!(header(&second, "cache-control"), "no-cache");
    assert!(header(&second, "content-type").starts_with("text/html"));
    assert_eq!(second.text().await.unwrap(), first_body);
}

#[tokio::test]
async fn every_public_page_and_api_route_is_cached() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    for path in public_routes(p.id) {
        assert_eq!(app.x_cache(&path).await, "MISS", "{path}");
        let hit = app.get_anonymous(&path).await;
        assert_eq!(header(&hit, "x-cache"), "HIT", "{path}");
        if path.starts_with("/api/") {
            assert!(header(&hit, "content-type").starts_with("application/json"));
        }
    }
}

#[tokio::test]
async fn a_cached_page_lives_for_its_ttl_plus_grace_in_redis() {
    let app = spawn_app_with(|s| {
        s.page_cache_ttl = Duration::from_secs(900);
        s.cache_grace = Duration::from_secs(100);
    })
    .await;
    app.get_anonymous("/properties/").await;

    let keys = app.keys();
    let ttl = keys[&app.state.cache.keys().page("/properties/")];
    assert!((990_000..=1_000_000).contains(&ttl), "page key PTTL {ttl}");
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_without_a_body() {
    let app = spawn_app().await;
    let miss = app.get_anonymous("/properties/").await;
    let etag = header(&miss, "etag").to_string();
    assert!(etag.starts_with('"'), "strong etag: {etag}");

    let res = app
        .get_with("/properties/", &[("if-none-match", &etag)])
        .await;
    let other = app
        .get_with("/properties/", &[("if-none-match", "\"something-else\"")])
        .await;

    assert_eq!(res.status(), 304);
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(header(&res, "x-cache"), "HIT");
    assert!(res.bytes().await.unwrap().is_empty());
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn unknown_query_parameters_add_no_keys() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/?sort=price_asc").await;
    let before = app.page_keys();

    for i in 0..50 {
        let res = app
            .get_anonymous(&format!(
                "/properties/?utm_{i}=x{i}&sort=price_asc&fbclid={i}"
            ))
            .await;
        assert_eq!(header(&res, "x-cache"), "HIT");
    }

    assert_eq!(app.page_keys(), before);
}

#[tokio::test]
async fn errors_are_never_stored() {
    let app = spawn_app().await;
    for path in [
        "/properties/?page=2",
        "/properties/?sort=bogus",
        "/properties/77/",
        "/api/properties/77/",
    ] {
        let first = app.get_anonymous(path).await;
        assert!(first.status().is_client_error(), "{path}");
        let again = app.get_anonymous(path).await;
        assert_ne!(header(&again, "x-cache"), "HIT", "{path}");
    }
    assert!(app.page_keys().is_empty(), "{:?}", app.page_keys());
}

#[tokio::test]
async fn a_request_with_credentials_bypasses_the_cache() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;

    let res = app
        .get_with("/properties/", &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;

    assert_eq!(header(&res, "x-cache"), "BYPASS");
    assert_eq!(header(&res, "cache-control"), "private, no-store");
}

#[tokio::test]
async fn a_signed_in_admins_view_of_a_public_page_is_private_and_never_stored() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    app.sign_in().await;

    for path in public_routes(p.id) {
        let res = app.get(&path).await;

        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "x-cache"), "BYPASS", "{path}");
        assert_eq!(header(&res, "cache-control"), "private, no-store", "{path}");
    }
    assert!(
        app.page_keys().is_empty(),
        "an admin's request is not stored"
    );
    let visitor = app.get_anonymous("/properties/").await;
    assert_eq!(header(&visitor, "x-cache"), "MISS");
    let body = visitor.text().await.unwrap();
    assert!(
        !body.contains(ADMIN_USER) && !body.contains("Sign out") && !body.contains("csrf_token")
    );
}

#[tokio::test]
async fn a_forged_session_cookie_is_just_an_anonymous_visitor() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;

    let res = app
        .get_with("/properties/", &[("cookie", "pl_session=forged")])
        .await;

    assert_eq!(header(&res, "x-cache"), "HIT");
    assert!(res.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn non_cacheable_routes_say_bypass_and_are_not_stored() {
    let app = spawn_app().await;
    for path in ["/healthz", "/api/cache/metrics", "/cache/", "/metrics"] {
        let res = app.get_anonymous(path).await;
        assert_eq!(header(&res, "x-cache"), "BYPASS", "{path}");
    }
    assert!(app.page_keys().is_empty());
}

#[tokio::test]
async fn an_expired_page_is_served_stale_while_another_request_refreshes_it() {
    let app = spawn_app_with(|s| {
        s.page_cache_ttl = Duration::from_millis(300);
        s.cache_grace = Duration::from_secs(60);
    })
    .await;
    app.get_anonymous("/properties/").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Another request is refreshing it right now: it holds the refresh lock.
    let keys = app.state.cache.keys();
    let _: () = redis::cmd("SET")
        .arg(keys.refresh_lock(&keys.page("/properties/")))
        .arg(1)
        .arg("PX")
        .arg(5000)
        .query(&mut app.redis())
        .unwrap();

    let res = app.get_anonymous("/properties/").await;

    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache"), "STALE");
    assert!(header(&res, "age").parse::<u64>().is_ok());
}

#[tokio::test]
async fn an_expired_page_is_refreshed_by_the_request_that_gets_the_lock() {
    let app = spawn_app_with(|s| {
        s.page_cache_ttl = Duration::from_millis(300);
        s.cache_grace = Duration::from_secs(60);
    })
    .await;
    app.get_anonymous("/properties/").await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let refresh = app.get_anonymous("/properties/").await;
    let after = app.get_anonymous("/properties/").await;

    assert_eq!(header(&refresh, "x-cache"), "MISS");
    assert_eq!(header(&after, "x-cache"), "HIT");
}

#[tokio::test]
async fn a_hit_needs_no_database_and_other_pages_get_503_when_it_is_gone() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    app.get_anonymous("/properties/").await;

    app.drop_database();
    let hit = app.get_anonymous("/properties/").await;
    let uncached = app.get_anonymous(&format!("/properties/{}/", p.id)).await;
    let health = app.get_anonymous("/healthz").await;

    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-cache"), "HIT");
    assert!(hit.text().await.unwrap().contains("Loft"));
    assert_eq!(uncached.status(), 503);
    assert!(
        !uncached
            .text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("diesel")
    );
    assert_eq!(health.status(), 503);
}

#[tokio::test]
async fn an_expired_page_is_served_stale_while_the_database_is_down() {
    let app = spawn_app_with(|s| {
        s.page_cache_ttl = Duration::from_millis(300);
        s.query_cache_ttl = Duration::from_millis(300);
        s.cache_grace = Duration::from_secs(60);
        s.db_timeout = Duration::from_millis(500);
    })
    .await;
    app.insert("Loft", "100", "Austin, TX").await;
    app.get_anonymous("/properties/").await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    app.drop_database();
    let res = app.get_anonymous("/properties/").await;

    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache"), "STALE");
    assert!(res.text().await.unwrap().contains("Loft"));
}

#[tokio::test]
async fn cached_pages_are_served_pre_compressed_in_the_coding_the_client_accepts() {
    use std::io::Read;
    let app = spawn_app().await;
    app.insert_many(20).await;
    let plain = app.get_anonymous("/properties/").await;
    assert_eq!(header(&plain, "vary"), "Accept-Encoding");
    assert_eq!(header(&plain, "content-encoding"), "");
    let identity_tag = header(&plain, "etag").to_string();
    let identity = plain.text().await.unwrap();

    let br = app
        .get_with("/properties/", &[("accept-encoding", "gzip, deflate, br")])
        .await;
    let gz = app
        .get_with("/properties/", &[("accept-encoding", "gzip")])
        .await;

    assert_eq!(header(&br, "x-cache"), "HIT");
    assert_eq!(header(&br, "content-encoding"), "br");
    assert_eq!(header(&gz, "content-encoding"), "gzip");
    let br_tag = header(&br, "etag").to_string();
    assert_ne!(
        br_tag, identity_tag,
        "each representation has its own strong tag"
    );
    let mut unbrotli = Vec::new();
    brotli::BrotliDecompress(&mut &br.bytes().await.unwrap()[..], &mut unbrotli).unwrap();
    assert_eq!(String::from_utf8(unbrotli).unwrap(), identity);
    let mut ungzip = String::new();
    flate2::read::GzDecoder::new(&gz.bytes().await.unwrap()[..])
        .read_to_string(&mut ungzip)
        .unwrap();
    assert_eq!(ungzip, identity);

    let revalidated = app
        .get_with(
            "/properties/",
            &[("accept-encoding", "br"), ("if-none-match", &br_tag)],
        )
        .await;
    assert_eq!(revalidated.status(), 304);
}

#[tokio::test]
async fn every_spelling_of_a_page_is_served_from_its_one_key() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    let id = p.id;
    let spellings = [
        (
            "/api/properties/".to_string(),
            "/api/%70roperties/".to_string(),
        ),
        (
            format!("/properties/{id}/"),
            format!("/properties/{id:04}/"),
        ),
        (format!("/properties/{id}/"), format!("/properties/%3{id}/")),
        (
            format!("/api/properties/{id}/"),
            format!("/api/properties/00{id}/"),
        ),
        (
            format!("/api/properties/{id}/"),
            format!("/api/%70roperties/%3{id}/"),
        ),
        (
            "/properties/".to_string(),
            "/properties/?page=01".to_string(),
        ),
        (
            "/properties/?min_price=5".to_string(),
            "/properties/?min_price=0005.0".to_string(),
        ),
        (
            "/api/properties/?max_price=200&sort=price_asc".to_string(),
            "/api/properties/?sort=price_asc&max_price=0200.00".to_string(),
        ),
    ];
    assert!(id < 10, "the %3N spelling needs a one-digit id");
    for (canonical, _) in &spellings {
        app.get_anonymous(canonical).await;
    }
    let keys_before = app.page_keys();

    for (canonical, other) in &spellings {
        let res = app.get_anonymous(other).await;
        assert_eq!(res.status(), 200, "{other}");
        assert_eq!(
            header(&res, "x-cache"),
            "HIT",
            "{other} is served from {canonical}"
        );
        let canonical_body = app.get_anonymous(canonical).await.text().await.unwrap();
        assert_eq!(res.text().await.unwrap(), canonical_body, "{other}");
    }

    assert_eq!(app.page_keys(), keys_before, "no spelling adds a key");
}

#[tokio::test]
async fn a_signed_or_spaced_id_is_not_found_rather_than_an_uncached_page() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    for path in [
        format!("/properties/+{}/", p.id),
        format!("/properties/%2B{}/", p.id),
        format!("/api/properties/+{}/", p.id),
        format!("/properties/%20{}/", p.id),
    ] {
        let res = app.get_anonymous(&path).await;
        assert_eq!(res.status(), 404, "{path}");
    }
    assert!(app.page_keys().is_empty());
}

#[tokio::test]
async fn a_coding_refused_with_q_0_is_not_sent_even_when_a_wildcard_allows_the_rest() {
    let app = spawn_app().await;
    app.insert_many(5).await;
    for (accept, expected) in [
        ("br;q=0, *", Some("gzip")),
        ("gzip;q=0, br;q=0, *", None),
        ("*", Some("br")),
    ] {
        for _ in 0..2 {
            let res = app
                .get_with("/properties/", &[("accept-encoding", accept)])
                .await;
            assert_eq!(res.status(), 200);
            let coding = res
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(coding.as_deref(), expected, "Accept-Encoding: {accept}");
        }
    }
}
