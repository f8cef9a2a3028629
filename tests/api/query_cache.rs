//! The query cache (`PREFIX:all_properties`), the seed's `get_all_properties()`.

use std::time::Duration;

use property_listings::cache::query::{Served, get_all_properties};

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn the_unfiltered_list_fills_all_properties_for_its_ttl_plus_grace() {
    let app = spawn_app_with(|s| {
        s.query_cache_ttl = Duration::from_secs(3600);
        s.cache_grace = Duration::from_secs(60);
    })
    .await;
    app.insert("Loft", "100", "Austin, TX").await;

    app.get_anonymous("/properties/").await;

    let ttl = app.keys()[&format!("{}:all_properties", app.prefix)];
    assert!((3_650_000..=3_660_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn a_second_read_is_a_query_cache_hit_that_needs_no_database() {
    let app = spawn_app().await;
    app.insert("Loft", "100", "Austin, TX").await;
    let (first, _) = get_all_properties(&app.state).await.unwrap();
    let loads = app.state.cache.metrics().snapshot().db_loads;

    app.drop_database();
    let (second, served) = get_all_properties(&app.state).await.unwrap();

    assert_eq!(first, second);
    assert_eq!(served, Served::Current);
    assert_eq!(app.state.cache.metrics().snapshot().db_loads, loads);
    assert_eq!(app.state.cache.metrics().snapshot().query.hits, 1);
}

#[tokio::test]
async fn every_sort_of_the_unfiltered_list_is_served_from_the_query_cache() {
    let app = spawn_app().await;
    app.insert("Cheap", "10", "A").await;
    app.insert("Dear", "1000", "B").await;
    app.get_anonymous("/api/properties/").await;

    app.drop_database();
    let asc = app.get_json("/api/properties/?sort=price_asc").await;
    let desc = app.get_json("/api/properties/?sort=price_desc").await;

    assert_eq!(asc["results"][0]["title"], "Cheap");
    assert_eq!(desc["results"][0]["title"], "Dear");
}

#[tokio::test]
async fn filtered_searches_go_to_the_database() {
    let app = spawn_app().await;
    app.insert("Loft", "100", "Austin, TX").await;
    app.get_anonymous("/api/properties/").await;

    app.drop_database();
    let res = app.get_anonymous("/api/properties/?q=loft").await;

    assert_eq!(res.status(), 503);
}
