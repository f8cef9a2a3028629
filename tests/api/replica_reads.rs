//! Cache refills on real streaming replicas (`db::replicas`; "Read replicas" in the
//! module docs of `cache`): a refill reads a replica only once it has replayed every
//! write its tokens carry, else the primary; a replica that is paused, stopped,
//! promoted or far behind costs speed, never a stale page or a failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::consistency::{assert_everyone_agrees, race};
use crate::helpers::postgres::{PgReplicaSet, spawn_app_on_replicas};
use crate::helpers::{TestApp, price_in_response, property_data, public_routes};

/// Refill reads so far: (primary, replica).
fn reads(app: &TestApp) -> (u64, u64) {
    app.state.replicas.reads()
}

/// The listing's price (cents) on `path`, which must answer 200.
async fn price_at(app: &TestApp, path: &str) -> u64 {
    let res = app.get_anonymous(path).await;
    assert_eq!(res.status(), 200, "{path}");
    price_in_response(path, &res.text().await.unwrap()).expect("a price")
}

async fn set_price(app: &TestApp, id: i64, dollars: u64) {
    app.state
        .properties
        .update(
            id,
            property_data("Replica", &dollars.to_string(), "Standby", ""),
        )
        .await
        .expect("update")
        .expect("the listing exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_reads_a_caught_up_replica_and_the_primary_while_replay_is_paused() {
    let set = PgReplicaSet::start(1);
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    let p = app.insert("Replica", "1000", "Standby").await;
    let pages = public_routes(p.id);

    // Caught up: the write's refills read the replica.
    set_price(&app, p.id, 1100).await;
    set.wait_replayed(0, set.primary_lsn());
    let before = reads(&app);
    for path in &pages {
        assert_eq!(price_at(&app, path).await, 110_000, "{path}");
    }
    let after = reads(&app);
    assert!(
        after.1 > before.1,
        "a caught-up replica takes refills: {before:?} → {after:?}"
    );

    // Replay paused: the replica still shows 1100; the pages show 1200 at once.
    set.pause_replay(0);
    set_price(&app, p.id, 1200).await;
    let before = reads(&app);
    for path in &pages {
        assert_eq!(price_at(&app, path).await, 120_000, "{path}");
    }
    let after = reads(&app);
    assert_eq!(after.1, before.1, "no refill read the paused replica");
    assert!(after.0 > before.0, "the refills read the primary");
    app.state.replicas.poll(&app.state.db).await;
    assert!(
        app.state.replicas.status()[0].paused,
        "{:?}",
        app.state.replicas.status()
    );

    // The dashboard's figures: where refills read, the replica's state; its address is
    // a detail, not for anonymous visitors.
    let metrics = app.get_json("/api/cache/metrics").await;
    let database = &metrics["database"];
    assert_eq!(
        database["reads_replica"].as_u64(),
        Some(after.1),
        "{database}"
    );
    assert_eq!(database["replicas"][0]["name"], "replica 1", "{database}");
    assert_eq!(database["replicas"][0]["paused"], true, "{database}");

    // Resumed: refills go back to the replica.
    set.resume_replay(0);
    set_price(&app, p.id, 1300).await;
    set.wait_replayed(0, set.primary_lsn());
    let before = reads(&app);
    for path in &pages {
        assert_eq!(price_at(&app, path).await, 130_000, "{path}");
    }
    assert!(reads(&app).1 > before.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_300_writes_while_replay_pauses_and_resumes_never_see_old_data() {
    let set = Arc::new(PgReplicaSet::start(1));
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    let p = app.insert("Race", "1000", "Raceville").await;
    app.warm(&public_routes(p.id)).await;

    // Replay paused and resumed every 20–60 ms for as long as the race runs.
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (set, stop) = (set.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut pauses = 0;
            while !stop.load(Ordering::SeqCst) {
                set.pause_replay(0);
                pauses += 1;
                std::thread::sleep(Duration::from_millis(20 + (pauses % 3) * 20));
                set.resume_replay(0);
                std::thread::sleep(Duration::from_millis(20));
            }
            pauses
        })
    };
    let before = reads(&app);
    let last = race(&app, &[&app], p.id, 300).await;
    stop.store(true, Ordering::SeqCst);
    let pauses = toggler.join().expect("toggler");
    let after = reads(&app);
    println!("replay paused {pauses} times; refill reads {before:?} → {after:?}");

    assert!(pauses >= 5, "replay was paused during the race ({pauses})");
    assert!(after.1 > before.1, "some refills read the replica");
    assert!(after.0 > before.0, "some refills found it behind");
    assert_everyone_agrees(&[&app], p.id, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_costs_no_request_and_is_used_again_once_it_is_back() {
    let set = PgReplicaSet::start(1);
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    let p = app.insert("Replica", "1000", "Standby").await;
    let pages = public_routes(p.id);

    set.stop_replica(0);
    for dollars in [1100, 1200] {
        set_price(&app, p.id, dollars).await;
        for path in &pages {
            assert_eq!(price_at(&app, path).await, dollars * 100, "{path}");
        }
    }
    assert_eq!(app.state.replicas.status()[0].state, "down");

    set.start_replica(0);
    // Its breaker lets a read try again within a few seconds.
    let started = Instant::now();
    let mut dollars = 1300;
    loop {
        set_price(&app, p.id, dollars).await;
        set.wait_replayed(0, set.primary_lsn());
        let before = reads(&app);
        for path in &pages {
            assert_eq!(price_at(&app, path).await, dollars * 100, "{path}");
        }
        if reads(&app).1 > before.1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the restarted replica is used again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        dollars += 100;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_is_no_longer_read() {
    let set = PgReplicaSet::start(1);
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    let p = app.insert("Replica", "1000", "Standby").await;
    let pages = public_routes(p.id);
    set_price(&app, p.id, 1500).await;
    set.wait_replayed(0, set.primary_lsn());
    app.warm(&pages).await;

    // Promoted, and written to on its own: it has replayed everything the tokens carry,
    // but it is no longer a copy of the primary.
    set.promote_replica(0);
    let (_, db) =
        property_listings::db::split_database_url(&app.state.settings.database_url).unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE properties SET price = 9999 WHERE id = {}",
            p.id
        )),
        &mut set.replica(0, &db),
    )
    .expect("a write on the promoted server");
    // Refills under the same tokens: every entry dropped, no token replaced.
    for key in app.keys().into_keys().filter(|k| !k.contains("{sync}")) {
        app.state.cache.forget(&key).await;
    }
    let before = reads(&app);
    for path in &pages {
        assert_eq!(price_at(&app, path).await, 150_000, "{path}");
    }
    assert_eq!(reads(&app).1, before.1, "nothing read the promoted server");
    assert_eq!(app.state.replicas.status()[0].state, "promoted");

    // A write on the primary the promoted server will never see.
    set_price(&app, p.id, 1600).await;
    for path in &pages {
        assert_eq!(price_at(&app, path).await, 160_000, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_clear_during_lag_refills_from_the_primary() {
    let set = PgReplicaSet::start(1);
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    let p = app.insert("Replica", "1000", "Standby").await;
    let pages = public_routes(p.id);
    app.warm(&pages).await;

    set.pause_replay(0);
    set_price(&app, p.id, 1400).await;
    // Every token gone: the refills find them missing, and a missing token means the
    // primary.
    app.state.cache.clear().await.expect("cache clear");
    let before = reads(&app);
    for path in &pages {
        assert_eq!(price_at(&app, path).await, 140_000, "{path}");
    }
    assert_eq!(
        reads(&app).1,
        before.1,
        "no refill read the lagging replica"
    );
    set.resume_replay(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_far_behind_shows_its_lag_and_sends_refills_to_the_primary() {
    let set = PgReplicaSet::start(1);
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    let p = app.insert("Replica", "1000", "Standby").await;

    set.pause_replay(0);
    // About 2 MB of log the replica receives but does not replay.
    app.insert_many(2000).await;
    set_price(&app, p.id, 1600).await;
    for path in [
        format!("/properties/{}/", p.id),
        format!("/api/properties/{}/", p.id),
    ] {
        assert_eq!(price_at(&app, &path).await, 160_000, "{path}");
    }
    let list = app.get_json("/api/properties/").await;
    assert_eq!(list["count"], 2001);

    app.state.replicas.poll(&app.state.db).await;
    let status = &app.state.replicas.status()[0];
    assert!(status.lag_bytes > 500_000, "{status:?}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("db_replica_lag_bytes{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("db_reads_total{server=\"primary\"}"));
    set.resume_replay(0);
}
