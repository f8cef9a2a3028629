//! The command line, run as a user runs it (the real binary).

use std::process::{Command, Output};

use crate::helpers::{spawn_app, test_settings};

fn run(settings: &property_listings::config::Settings, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_property-listings"))
        .args(args)
        .env("DATABASE_URL", &settings.database_url)
        .env("REDIS_URL", &settings.redis_url)
        .env("CACHE_KEY_PREFIX", &settings.cache_key_prefix)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn seed_writes_listings_through_the_hooks() {
    let app = spawn_app().await;
    app.get_anonymous("/api/properties/").await; // cache the empty list

    let out = run(&app.settings, &["seed", "--count", "7"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.count_rows(), 7);
    assert_eq!(
        app.get_json("/api/properties/").await["count"],
        7,
        "no stale cached list"
    );
}

#[tokio::test]
async fn cache_clear_deletes_this_apps_keys_only() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;
    let foreign = format!("{}_other:keep", app.prefix);
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg(1)
        .arg("EX")
        .arg(60)
        .query(&mut app.redis())
        .unwrap();

    let out = run(&app.settings, &["cache", "clear"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(app.keys().is_empty(), "{:?}", app.keys());
    let kept: Option<String> = redis::cmd("GET")
        .arg(&foreign)
        .query(&mut app.redis())
        .unwrap();
    assert_eq!(kept.as_deref(), Some("1"));
    let _: () = redis::cmd("DEL")
        .arg(&foreign)
        .query(&mut app.redis())
        .unwrap();
}

#[tokio::test]
async fn cache_metrics_prints_the_metrics_json() {
    let app = spawn_app().await;
    let out = run(&app.settings, &["cache", "metrics"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert!(json["keyspace_hits"].is_u64());
    assert!(json["hit_ratio"].is_f64());
}

#[tokio::test]
async fn migrate_creates_a_missing_database() {
    let settings = test_settings();
    let out = run(&settings, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = crate::helpers::spawn_app_with(|s| *s = settings.clone()).await;
    assert_eq!(app.count_rows(), 0);
}

#[tokio::test]
async fn a_bad_argument_prints_usage_and_fails() {
    let settings = test_settings();
    for args in [
        &["frobnicate"][..],
        &["seed", "--count", "zero"],
        &["seed", "--count", "0"],
    ] {
        let out = run(&settings, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage"),
            "{args:?}"
        );
    }
}
