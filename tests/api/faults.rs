//! Redis trouble never becomes a 5xx: the site bypasses the cache and recovers by itself.

use std::time::{Duration, Instant};

use crate::helpers::{PrivateRedis, free_port, header, public_routes, spawn_app_with};

#[tokio::test]
async fn with_redis_unreachable_every_page_is_served_from_the_database() {
    let closed = free_port();
    let app = spawn_app_with(|s| s.redis_url = format!("redis://127.0.0.1:{closed}/0")).await;
    let p = app.insert("Loft", "100", "Austin, TX").await;

    for path in public_routes(p.id) {
        let started = Instant::now();
        let res = app.get_anonymous(&path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "x-cache"), "BYPASS", "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
        assert!(res.text().await.unwrap().contains("Loft"));
    }
    let health = app.get_anonymous("/healthz").await;
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["cache"], "unavailable");
    assert_eq!(body["database"], "ok");

    let metrics = app.get_anonymous("/api/cache/metrics").await;
    assert_eq!(metrics.status(), 503);
    let body: serde_json::Value = metrics.json().await.unwrap();
    assert!(body["app"]["redis_errors"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn caching_resumes_by_itself_when_redis_comes_back() {
    let redis = PrivateRedis::start();
    let port = redis.port;
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    app.insert("Loft", "100", "A").await;
    app.get_anonymous("/properties/").await;
    drop(redis);

    let down = app.get_anonymous("/properties/").await;
    assert_eq!(down.status(), 200);
    assert_eq!(header(&down, "x-cache"), "BYPASS");

    let _redis = PrivateRedis::start_on(port, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let res = app.get_anonymous("/properties/").await;
        assert_eq!(res.status(), 200);
        let outcome = header(&res, "x-cache").to_string();
        if outcome == "HIT" {
            return;
        }
        seen.push(outcome);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no HIT within 5 s of Redis coming back: {seen:?}");
}

#[tokio::test]
async fn a_write_while_redis_is_down_leaves_no_stale_page_once_it_is_back() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    let p = app.insert("Before", "100", "A").await;
    let path = format!("/api/properties/{}/", p.id);
    app.get_anonymous(&path).await;
    // Redis goes away without losing its data: pause it.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query(&mut redis.connection())
        .unwrap();

    app.state
        .properties
        .update(p.id, crate::helpers::property_data("After", "100", "A", ""))
        .await
        .unwrap();
    let during = app.get_json(&path).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after = app.get_json(&path).await;

    assert_eq!(during["title"], "After");
    assert_eq!(after["title"], "After");
}
