//! Cache metrics: Redis `INFO stats` numbers, the hit ratio, the app's counters, and
//! the Prometheus exposition. Exact numbers need a Redis no other client touches.

use crate::helpers::{PrivateRedis, spawn_app, spawn_app_with};

fn info_stats(redis: &PrivateRedis) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut redis.connection())
        .unwrap();
    property_listings::cache::store::parse_info_stats(&info).unwrap()
}

#[tokio::test]
async fn the_hit_ratio_is_hits_over_hits_and_misses_of_the_same_reading() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;

    let metrics = app.get_json("/api/cache/metrics").await;

    let hits = metrics["keyspace_hits"].as_f64().unwrap();
    let misses = metrics["keyspace_misses"].as_f64().unwrap();
    let expected = if hits + misses == 0.0 {
        0.0
    } else {
        hits / (hits + misses)
    };
    assert_eq!(metrics["hit_ratio"].as_f64().unwrap(), expected);
}

#[tokio::test]
async fn keyspace_numbers_and_ratio_match_redis_info() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    app.insert("Loft", "100", "A").await;
    for _ in 0..3 {
        app.get_anonymous("/properties/").await;
        app.get_anonymous("/api/properties/").await;
    }

    let metrics = app.get_json("/api/cache/metrics").await;
    let (hits, misses) = info_stats(&redis);

    assert!(hits > 0 && misses > 0);
    assert_eq!(metrics["keyspace_hits"], hits);
    assert_eq!(metrics["keyspace_misses"], misses);
    let ratio = metrics["hit_ratio"].as_f64().unwrap();
    assert!((ratio - hits as f64 / (hits + misses) as f64).abs() < 1e-9);
}

#[tokio::test]
async fn the_app_counts_page_and_query_hits_misses_and_bypasses() {
    let app = spawn_app().await;
    app.insert("Loft", "100", "A").await;
    app.get_anonymous("/properties/").await; // page miss, query miss
    app.get_anonymous("/properties/").await; // page hit
    app.get_anonymous("/api/properties/").await; // page miss, query hit
    app.get_with("/properties/", &[("authorization", "Bearer x")])
        .await; // page bypass, query hit

    let app_counters = &app.get_json("/api/cache/metrics").await["app"];

    assert_eq!(app_counters["page"]["hits"], 1);
    assert_eq!(app_counters["page"]["misses"], 2);
    assert_eq!(app_counters["page"]["bypasses"], 1);
    assert_eq!(app_counters["query"]["hits"], 2);
    assert_eq!(app_counters["query"]["misses"], 1);
    assert!((app_counters["page"]["hit_ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!(app_counters["invalidations"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn prometheus_metrics_expose_the_counters_and_latency() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;
    app.get_anonymous("/properties/").await;

    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(crate::helpers::header(&res, "content-type").starts_with("text/plain"));
    let text = res.text().await.unwrap();

    assert!(
        text.contains(r#"cache_lookups_total{layer="page",outcome="hit"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"cache_lookups_total{layer="page",outcome="miss"} 1"#));
    assert!(text.contains("cache_invalidations_total"));
    assert!(text.contains("cache_redis_errors_total 0"));
    assert!(
        text.contains(r#"http_request_duration_seconds_count{cache="HIT",route="/properties/"} 1"#)
    );
}
