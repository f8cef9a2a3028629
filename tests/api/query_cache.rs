//! The query cache: `PREFIX:all_properties` (the seed's `get_all_properties()`), and one
//! entry per result page for filtered lists and for a table too large to keep whole.

use std::time::Duration;

use property_listings::cache::query::Served;
use property_listings::routes::listing::{
    ALL_PROPERTIES, ALL_PROPERTIES_MAX, AllProperties, get_all_properties,
};

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

    let ttl = app.keys()[&app.state.cache.keys().named(ALL_PROPERTIES)];
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
    assert!(matches!(first.as_ref(), AllProperties::Rows(rows, _) if rows.len() == 1));
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
async fn a_filtered_search_not_cached_yet_needs_the_database() {
    let app = spawn_app_with(|s| s.db_timeout = Duration::from_millis(500)).await;
    app.insert("Loft", "100", "Austin, TX").await;
    app.get_anonymous("/api/properties/").await;

    app.drop_database();
    let res = app.get_anonymous("/api/properties/?q=loft").await;

    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn a_large_table_is_cached_one_result_page_at_a_time() {
    let app = spawn_app().await;
    app.insert_many(ALL_PROPERTIES_MAX + 5).await;

    let first = app.get_json("/api/properties/?page=2").await;
    let (all, _) = get_all_properties(&app.state).await.unwrap();
    app.drop_database();
    let html = app.get_anonymous("/properties/?page=2&sort=newest").await;

    assert_eq!(first["count"], ALL_PROPERTIES_MAX + 5);
    assert_eq!(*all, AllProperties::TooMany);
    assert_eq!(
        html.status(),
        200,
        "built from the cached result page, no database"
    );
    assert!(html.text().await.unwrap().contains("Listing"));
    // Every result page's key starts like this (`Keys::query` of its query id).
    let result_page = app.state.cache.keys().query("");
    let query_keys = app
        .keys()
        .into_keys()
        .filter(|k| k.starts_with(&result_page))
        .count();
    assert_eq!(
        query_keys, 1,
        "one entry for page 2, shared by the API and the HTML page"
    );
}

#[tokio::test]
async fn filtered_results_are_cached_too() {
    let app = spawn_app().await;
    app.insert("Loft", "100", "Austin, TX").await;
    app.get_anonymous("/api/properties/?q=loft").await;

    app.drop_database();
    let html = app.get_anonymous("/properties/?q=LOFT&min_price=0").await;

    assert_ne!(
        html.status(),
        200,
        "a different query (min_price) is not cached yet"
    );
    let same = app.get_anonymous("/properties/?q=loft").await;
    assert_eq!(same.status(), 200);
    assert!(same.text().await.unwrap().contains("Loft"));
}
