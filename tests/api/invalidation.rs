//! Invalidation by model hooks: after every committed write the next read shows it, and
//! the hooks see each write once, with the rows it changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use property_listings::models::hooks::{Change, ModelHooks};
use property_listings::models::property::Property;
use property_listings::models::repository::PropertyRepository;

use property_listings::cache::Slot;
use property_listings::cache::metrics::Layer;
use property_listings::routes::cacheable::rules::token;
use property_listings::routes::listing::ALL_PROPERTIES;

use crate::helpers::{TestApp, header, property_data, public_routes, spawn_app};

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
            .contains_key(&app.state.cache.keys().named(ALL_PROPERTIES))
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
async fn the_invalidation_deletes_all_properties_and_is_counted() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;
    let key = app.state.cache.keys().named(ALL_PROPERTIES);
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
async fn seeding_a_thousand_listings_invalidates_the_cache_once() {
    let app = spawn_app().await;
    app.warm(&["/properties/".into()]).await;
    let before = app.state.cache.metrics().snapshot().invalidations;

    let written = property_listings::seed::seed(&app.state.properties, 1000)
        .await
        .expect("seeded");

    assert_eq!(written, 1000);
    assert_eq!(app.count_rows(), 1000);
    assert_eq!(
        app.state.cache.metrics().snapshot().invalidations,
        before + 1
    );
    assert_eq!(app.x_cache("/properties/").await, "MISS");
}

/// What a hook was given, owned.
#[derive(Debug, PartialEq)]
enum Seen {
    Inserted(Vec<Property>),
    Updated { before: Property, after: Property },
    Deleted(Property),
}

/// A hook that records every change it is given.
#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>, Mutex<Vec<Option<u64>>>);

impl Recorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut self.0.lock().unwrap())
    }

    /// The commit positions the hooks were given, in order.
    fn positions(&self) -> Vec<Option<u64>> {
        self.1.lock().unwrap().clone()
    }
}

impl ModelHooks for Recorder {
    fn after_commit<'a>(&'a self, change: Change<'a>, position: Option<u64>) -> BoxFuture<'a, ()> {
        self.1.lock().unwrap().push(position);
        let seen = match change {
            Change::Inserted(rows) => Seen::Inserted(rows.to_vec()),
            Change::Updated { before, after } => Seen::Updated {
                before: before.clone(),
                after: after.clone(),
            },
            Change::Deleted(row) => Seen::Deleted(row.clone()),
        };
        self.0.lock().unwrap().push(seen);
        async {}.boxed()
    }
}

/// A repository on `app`'s database whose only hook is a `Recorder`.
fn recorded_repository(app: &TestApp) -> (PropertyRepository, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let repository = PropertyRepository::new(
        app.state.db.clone(),
        app.state.replicas.clone(),
        vec![recorder.clone()],
    );
    (repository, recorder)
}

/// The position of PostgreSQL's write log now, as a number.
fn log_position(app: &TestApp) -> u64 {
    #[derive(diesel::QueryableByName)]
    struct Position {
        #[diesel(sql_type = diesel::sql_types::Text)]
        position: String,
    }
    let read: Position = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT (pg_current_wal_insert_lsn() - '0/0')::text AS position"),
        &mut app.db(),
    )
    .unwrap();
    read.position.parse().unwrap()
}

#[tokio::test]
async fn every_write_hands_its_hooks_the_position_its_commit_ends_at() {
    let app = spawn_app().await;
    let (repository, recorder) = recorded_repository(&app);
    let before = log_position(&app);
    let row = repository
        .insert(property_data("Pos", "100000.00", "Here", ""))
        .await
        .unwrap();
    repository
        .update(row.id, property_data("Pos", "110000.00", "Here", ""))
        .await
        .unwrap();
    repository.delete(row.id).await.unwrap();
    let after = log_position(&app);
    let positions: Vec<u64> = recorder
        .positions()
        .into_iter()
        .map(|p| p.expect("a write's position is read after its commit"))
        .collect();
    assert_eq!(positions.len(), 3);
    // Each commit adds to the log: every position is past the one before, and within
    // what the log held before and after the three writes.
    assert!(before < positions[0], "{before} < {positions:?}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(positions[2] <= after, "{positions:?} <= {after}");
}

#[tokio::test]
async fn a_batch_insert_runs_the_hooks_once_with_every_row() {
    let app = spawn_app().await;
    let (repository, recorder) = recorded_repository(&app);
    let data = (0..3)
        .map(|i| property_data(&format!("Batch {i}"), "100", "A", ""))
        .collect();

    let rows = repository.insert_many(data).await.unwrap();

    assert_eq!(rows.len(), 3);
    assert_eq!(recorder.take(), vec![Seen::Inserted(rows)]);
}

#[tokio::test]
async fn an_update_hook_sees_the_row_before_and_after_the_update() {
    let app = spawn_app().await;
    let (repository, recorder) = recorded_repository(&app);
    let old = repository
        .insert(property_data("Loft", "100", "Austin, TX", "Old words."))
        .await
        .unwrap();
    recorder.take();

    let new = repository
        .update(
            old.id,
            property_data("Loft Deluxe", "250.50", "Boise, ID", "New."),
        )
        .await
        .unwrap()
        .expect("updated");

    assert_eq!(new.title, "Loft Deluxe");
    assert_eq!(
        recorder.take(),
        vec![Seen::Updated {
            before: old,
            after: new
        }]
    );
}

#[tokio::test]
async fn a_delete_hook_sees_the_deleted_row_and_a_missing_row_runs_no_hook() {
    let app = spawn_app().await;
    let (repository, recorder) = recorded_repository(&app);
    let row = repository
        .insert(property_data("Doomed", "1", "A", ""))
        .await
        .unwrap();
    recorder.take();

    repository.delete(row.id).await.unwrap().expect("deleted");
    assert!(repository.delete(row.id).await.unwrap().is_none());
    let missing = property_data("Nobody", "1", "A", "");
    assert!(repository.update(row.id, missing).await.unwrap().is_none());

    assert_eq!(recorder.take(), vec![Seen::Deleted(row)]);
}

#[tokio::test]
async fn concurrent_updates_each_see_the_row_the_one_before_left() {
    let app = spawn_app().await;
    let (repository, recorder) = recorded_repository(&app);
    let row = repository
        .insert(property_data("Contended", "100", "A", ""))
        .await
        .unwrap();
    recorder.take();

    let updates = (1..=8).map(|i| {
        let repository = repository.clone();
        let data = property_data("Contended", &i.to_string(), "A", "");
        tokio::spawn(async move { repository.update(row.id, data).await })
    });
    for update in futures_util::future::join_all(updates).await {
        update.unwrap().unwrap().expect("updated");
    }

    // The updates form one chain: each `before` is the original row or exactly the
    // `after` of another update, and every row but the final one is a `before` once.
    let mut befores = Vec::new();
    let mut afters = vec![row];
    for seen in recorder.take() {
        let Seen::Updated { before, after } = seen else {
            panic!("only updates ran: {seen:?}");
        };
        befores.push(before);
        afters.push(after);
    }
    let last = app
        .state
        .properties
        .get(afters[0].id)
        .await
        .unwrap()
        .unwrap();
    afters.retain(|r| *r != last);
    let key = |r: &Property| r.price;
    befores.sort_by_key(key);
    afters.sort_by_key(key);
    assert_eq!(befores, afters);
}

/// The tokens of a list page (`routes::cacheable`), which an insert replaces.
const LIST_PAGE: &[&str] = &[token::LISTS, "newest:1"];

#[tokio::test]
async fn a_reader_that_stores_old_rows_after_the_invalidation_is_never_served() {
    let app = spawn_app().await;
    let cache = &app.state.cache;
    let key = cache.keys().page("/race-test");
    // An entry stored under the tokens as they are now is served (and the tokens exist).
    let other = cache.keys().page("/race-test-sibling");
    let first = cache.lookup(&list_page(&other)).await.unwrap();
    store(cache, &other, first.version(), "current rows")
        .await
        .unwrap();
    assert!(
        cache
            .lookup(&list_page(&other))
            .await
            .unwrap()
            .entry()
            .is_some()
    );
    // The reader: reads the tokens, then (slowly) the old rows…
    let reader = cache.lookup(&list_page(&key)).await.unwrap();
    assert!(reader.entry().is_none());
    // …meanwhile a writer commits and invalidates…
    app.insert("Written meanwhile", "1", "A").await;
    // …and only then the reader stores what it loaded before the write.
    store(cache, &key, reader.version(), "old rows")
        .await
        .unwrap();

    let after = cache.lookup(&list_page(&key)).await.unwrap();

    assert!(
        after.entry().is_none(),
        "an entry built before the write must not be served"
    );
    assert_ne!(after.version(), reader.version());
}

/// A list page's slot under `key`.
fn list_page(key: &str) -> Slot<'_> {
    page_slot(key, LIST_PAGE)
}

/// A page's slot: `key`, depending on `deps`.
fn page_slot<'a>(key: &'a str, deps: &'a [&'a str]) -> Slot<'a> {
    Slot {
        key,
        deps,
        ttl: Duration::from_secs(900),
        layer: Layer::Page,
    }
}

/// Stores `body` under `key` as a build under `version` would.
async fn store(
    cache: &property_listings::cache::Cache,
    key: &str,
    version: &property_listings::cache::Version,
    body: &'static str,
) -> Result<(), property_listings::cache::CacheUnavailable> {
    cache
        .put(
            &list_page(key),
            version,
            "text/plain",
            Bytes::from_static(body.as_bytes()),
        )
        .await
        .1
}

#[tokio::test]
async fn a_token_missing_at_lookup_and_set_by_a_write_before_the_store_refuses_the_store() {
    let app = spawn_app().await;
    let cache = &app.state.cache;
    let key = cache.keys().page("/missing-token-test");
    let reader = cache
        .lookup(&page_slot(&key, &["listing:424242"]))
        .await
        .unwrap();
    assert!(
        reader.version().as_str().contains('~'),
        "{}",
        reader.version()
    );
    assert!(
        !app.keys()
            .contains_key(&cache.keys().token("listing:424242")),
        "a lookup creates no token"
    );
    // A write replaces the token meanwhile (as an update of listing 424242 would).
    assert!(cache.invalidate(&["listing:424242".into()], None).await);

    assert!(
        store(cache, &key, reader.version(), "old rows")
            .await
            .is_err()
    );
    assert!(
        cache
            .lookup(&page_slot(&key, &["listing:424242"]))
            .await
            .unwrap()
            .entry()
            .is_none()
    );
}

#[tokio::test]
async fn losing_any_token_revives_no_old_entry() {
    let app = spawn_app().await;
    let cache = &app.state.cache;
    for (i, lost) in [
        cache.keys().generation().to_string(),
        cache.keys().token(token::LISTS),
        cache.keys().token("newest:1"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = cache.keys().page(&format!("/revive-test-{i}"));
        let old = cache.lookup(&list_page(&key)).await.unwrap();
        store(cache, &key, old.version(), "old").await.unwrap();
        assert!(
            cache
                .lookup(&list_page(&key))
                .await
                .unwrap()
                .entry()
                .is_some()
        );
        app.insert("Write", "1", "A").await; // the entry above is now dead

        let _: () = redis::cmd("DEL")
            .arg(&lost)
            .query(&mut app.redis())
            .unwrap();
        let after = cache.lookup(&list_page(&key)).await.unwrap();

        assert!(after.entry().is_none(), "{lost} lost");
        assert_ne!(after.version(), old.version(), "{lost} lost");
    }
}

#[tokio::test]
async fn a_token_carries_the_highest_position_of_the_writes_that_replaced_it() {
    let app = spawn_app().await;
    let cache = &app.state.cache;
    let key = cache.keys().token("listing:515151");
    let value = |app: &TestApp| -> String {
        redis::cmd("GET")
            .arg(&key)
            .query::<String>(&mut app.redis())
            .unwrap()
    };
    let position = |v: &str| v.rsplit_once('@').map(|(_, p)| p.to_string());
    let name = ["listing:515151".to_string()];
    // (A new process first starts a fresh generation.)
    cache.ensure_no_pending_invalidation().await.unwrap();

    assert!(cache.invalidate(&name, Some(900)).await);
    assert_eq!(position(&value(&app)).as_deref(), Some("900"));
    // Two writes can reach Redis in the other order than they committed: the value
    // keeps the higher position (compared as numbers: "1000" is past "900").
    assert!(cache.invalidate(&name, Some(120)).await);
    let first = value(&app);
    assert_eq!(position(&first).as_deref(), Some("900"));
    assert!(cache.invalidate(&name, Some(1000)).await);
    let second = value(&app);
    assert_eq!(position(&second).as_deref(), Some("1000"));
    assert_ne!(first, second, "every replacement is a new value");
    // A write whose position is unknown (and no source to ask: this app has no
    // replicas) leaves a value without one: refills of its pages read the primary.
    assert!(cache.invalidate(&name, None).await);
    assert_eq!(position(&value(&app)), None);
}
