//! The read-replica test harness itself (`helpers/postgres.rs`): a private primary and
//! real streaming replicas whose replay a test can pause, that it can stop, restart and
//! promote, and the app started on them.

use std::path::PathBuf;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::helpers::postgres::{PgReplicaSet, spawn_app_on_replicas};
use crate::helpers::{header, listing};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn notes_on(conn: &mut PgConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<Count>(conn)
        .expect("count notes")
        .n
}

/// A set with one replica and a database `notes` holding an empty table `notes`,
/// replayed by every replica.
fn set_with_notes(replicas: usize) -> PgReplicaSet {
    let set = PgReplicaSet::start(replicas);
    set.create_database("notes");
    diesel::sql_query("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        .execute(&mut set.primary("notes"))
        .expect("create table");
    set.wait_replicas_caught_up();
    set
}

fn write_note(set: &PgReplicaSet) {
    diesel::sql_query("INSERT INTO notes (body) VALUES ('hello')")
        .execute(&mut set.primary("notes"))
        .expect("insert");
}

#[test]
fn a_row_written_on_the_primary_appears_on_the_replica() {
    let set = set_with_notes(1);

    write_note(&set);
    set.wait_replayed(0, set.primary_lsn());

    assert_eq!(notes_on(&mut set.replica(0, "notes")), 1);
}

#[test]
fn with_replay_paused_a_replica_receives_writes_but_shows_them_only_after_resuming() {
    let set = set_with_notes(1);
    set.pause_replay(0);
    let replayed_before = set.replay_lsn(0);
    let written_before = set.primary_lsn();

    write_note(&set);
    let written = set.primary_lsn();
    set.wait_received(0, written);

    assert!(written > written_before, "{written} > {written_before}");
    assert_eq!(set.replay_lsn(0), replayed_before, "replay stood still");
    assert_eq!(
        notes_on(&mut set.replica(0, "notes")),
        0,
        "not replayed yet"
    );

    set.resume_replay(0);
    set.wait_replayed(0, written);
    assert_eq!(notes_on(&mut set.replica(0, "notes")), 1);
}

#[test]
fn a_stopped_replica_refuses_connections_and_catches_up_when_started_again() {
    let set = set_with_notes(1);

    set.stop_replica(0);
    assert!(
        set.try_replica(0, "notes").is_err(),
        "a stopped replica answers"
    );
    write_note(&set);
    set.start_replica(0);

    set.wait_replayed(0, set.primary_lsn());
    assert!(set.is_in_recovery(0));
    assert_eq!(notes_on(&mut set.replica(0, "notes")), 1);
}

#[test]
fn a_promoted_replica_leaves_recovery_and_takes_writes() {
    let set = set_with_notes(2);

    set.promote_replica(1);

    assert!(!set.is_in_recovery(1));
    assert!(set.is_in_recovery(0), "the other replica is still one");
    diesel::sql_query("INSERT INTO notes (body) VALUES ('on the promoted one')")
        .execute(&mut set.replica(1, "notes"))
        .expect("a promoted replica takes writes");
    assert_eq!(notes_on(&mut set.replica(1, "notes")), 1);
    assert_eq!(
        notes_on(&mut set.primary("notes")),
        0,
        "the primary is apart"
    );
}

#[test]
fn dropping_a_set_stops_its_servers_and_removes_its_directory() {
    let set = PgReplicaSet::start(1);
    let pids = set.pids();
    let dir = set.dir().to_path_buf();
    assert_eq!(pids.len(), 2);
    assert!(dir.exists());

    drop(set);

    for pid in pids {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "postmaster {pid} still runs"
        );
    }
    assert!(!dir.exists(), "{dir:?} is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_runs_on_a_private_primary_and_its_writes_reach_the_replica() {
    let set = PgReplicaSet::start(1);
    let app = spawn_app_on_replicas(&set, |_| {}).await;
    assert_eq!(
        app.settings.database_replica_urls,
        set.replica_urls(&app.db_name)
    );
    assert_eq!(app.get("/").await.status(), 302, "to the list");
    assert_eq!(app.get("/properties/").await.status(), 200);
    assert_eq!(app.get("/healthz").await.status(), 200);

    app.sign_in().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let res = app
        .post_form(
            "/admin/properties/new",
            &listing("Canal House", "450000.50", "Amsterdam", &token),
        )
        .await;

    assert_eq!(res.status(), 303, "{}", header(&res, "location"));
    assert_eq!(app.count_rows(), 1, "written to the private primary");
    set.wait_replayed(0, set.primary_lsn());
    let on_replica: i64 = diesel::sql_query("SELECT count(*) AS n FROM properties")
        .get_result::<Count>(&mut set.replica(0, &app.db_name))
        .expect("count on the replica")
        .n;
    assert_eq!(on_replica, 1);
    assert_eq!(app.get_json("/api/properties/").await["count"], 1);

    let db_name = app.db_name.clone();
    drop(app);
    let left: i64 = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(&db_name)
        .get_result::<Count>(&mut set.primary("postgres"))
        .expect("pg_database")
        .n;
    assert_eq!(left, 0, "the app's database is dropped with it");
}
