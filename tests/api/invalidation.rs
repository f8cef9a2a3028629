//! Invalidation by model hooks: after every committed write the next read shows it.

use actix_web::web::Bytes;

use crate::helpers::{header, property_data, public_routes, spawn_app, spawn_instance_with};

#[tokio::test]
async fn an_insert_shows_on_the_next_request_to_the_list_and_the_api() {
    let app = spawn_app().await;
    app.insert("First", "100", "A").await;
    app.warm(&["/properties/".into(), "/api/properties/".into()])
        .await;

    app.insert("Second", "200", "B").await;

    let html = app
        .get_anonymous("/properties/")
        .await
        .text()
        .await
        .unwrap();
    let json = app.get_json("/api/properties/").await;
    assert!(html.contains("Second"));
    assert_eq!(json["count"], 2);
    assert!(
        app.keys()
            .contains_key(&format!("{}:all_properties", app.prefix))
    );
}

#[tokio::test]
async fn an_update_shows_on_the_next_request_to_every_page() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    let paths = public_routes(p.id);
    app.warm(&paths).await;

    app.state
        .properties
        .update(p.id, property_data("Loft", "777.77", "Austin, TX", ""))
        .await
        .unwrap()
        .expect("updated");

    for path in &paths {
        let res = app.get_anonymous(path).await;
        assert_eq!(header(&res, "x-cache"), "MISS", "{path}");
        let body = res.text().await.unwrap();
        assert!(body.contains("777.77"), "{path} shows the new price");
    }
}

#[tokio::test]
async fn a_delete_removes_the_listing_from_every_page() {
    let app = spawn_app().await;
    let p = app.insert("Doomed", "100", "A").await;
    let detail = format!("/properties/{}/", p.id);
    let api_detail = format!("/api/properties/{}/", p.id);
    app.warm(&["/properties/".into(), detail.clone(), api_detail.clone()])
        .await;

    app.state
        .properties
        .delete(p.id)
        .await
        .unwrap()
        .expect("deleted");

    assert!(
        !app.get_anonymous("/properties/")
            .await
            .text()
            .await
            .unwrap()
            .contains("Doomed")
    );
    assert_eq!(app.get_anonymous(&detail).await.status(), 404);
    assert_eq!(app.get_anonymous(&api_detail).await.status(), 404);
}

#[tokio::test]
async fn the_invalidation_deletes_all_properties_and_is_counted() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;
    let key = format!("{}:all_properties", app.prefix);
    assert!(app.keys().contains_key(&key));
    let before = app.state.cache.metrics().snapshot().invalidations;

    app.insert("New", "1", "A").await;

    assert!(!app.keys().contains_key(&key));
    assert_eq!(
        app.state.cache.metrics().snapshot().invalidations,
        before + 1
    );
}

#[tokio::test]
async fn a_reader_that_stores_old_rows_after_the_invalidation_is_never_served() {
    let app = spawn_app().await;
    let cache = &app.state.cache;
    let key = cache.keys().page("/race-test");
    // The reader: reads the generation, then (slowly) the old rows…
    let reader = cache.lookup(&key).await.unwrap();
    assert!(reader.entry.is_none());
    // …meanwhile a writer commits and invalidates…
    app.insert("Written meanwhile", "1", "A").await;
    // …and only then the reader stores what it loaded before the write.
    cache
        .put(
            &key,
            &reader.generation,
            "text/plain",
            Bytes::from_static(b"old rows"),
            cache.page_ttl(),
            true,
        )
        .await
        .1
        .unwrap();

    let after = cache.lookup(&key).await.unwrap();

    assert!(
        after.entry.is_none(),
        "an entry built before the write must not be served"
    );
    assert_ne!(after.generation, reader.generation);
}

#[tokio::test]
async fn losing_the_generation_key_does_not_revive_old_entries() {
    let app = spawn_app().await;
    let cache = &app.state.cache;
    let key = cache.keys().page("/revive-test");
    let old = cache.lookup(&key).await.unwrap();
    cache
        .put(
            &key,
            &old.generation,
            "text/plain",
            Bytes::from_static(b"old"),
            cache.page_ttl(),
            true,
        )
        .await
        .1
        .unwrap();
    app.insert("Write", "1", "A").await; // the entry above is now dead

    let _: () = redis::cmd("DEL")
        .arg(cache.keys().generation())
        .query(&mut app.redis())
        .unwrap();
    let after = cache.lookup(&key).await.unwrap();

    assert!(after.entry.is_none());
    assert_ne!(after.generation, old.generation);
}

#[tokio::test]
async fn a_write_through_one_instance_is_seen_at_once_through_another() {
    let a = spawn_app().await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Shared", "100", "A").await;
    let path = format!("/api/properties/{}/", p.id);
    b.warm(std::slice::from_ref(&path)).await;

    a.state
        .properties
        .update(p.id, property_data("Shared", "5.00", "A", ""))
        .await
        .unwrap();

    assert_eq!(b.get_json(&path).await["price"], "5.00");
}

#[tokio::test]
async fn every_key_the_app_writes_but_the_generation_has_a_ttl() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "A").await;
    for path in [
        "/properties/".to_string(),
        format!("/properties/{}/", p.id),
        "/api/properties/?q=loft".into(),
    ] {
        app.get_anonymous(&path).await;
    }
    let keys = app.keys();
    assert!(keys.len() >= 4, "{keys:?}");
    for (key, ttl) in keys {
        if key.ends_with(":generation") {
            assert_eq!(ttl, -1);
        } else {
            assert!(ttl > 0, "{key} has no TTL");
        }
    }
}
