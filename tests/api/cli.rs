//! The command line, run as a user runs it (the real binary).

use std::process::{Command, Output};

use property_listings::cache::Keys;
use property_listings::config::Settings;

use crate::helpers::{free_port, spawn_app, test_settings};

/// The binary, with the database, Redis and key prefix of `settings` in its environment.
fn command(settings: &Settings) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_property-listings"));
    command
        .env("DATABASE_URL", &settings.database_url)
        .env("REDIS_URL", &settings.redis_url)
        .env("CACHE_KEY_PREFIX", &settings.cache_key_prefix);
    command
}

fn run(settings: &Settings, args: &[&str]) -> Output {
    command(settings)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn seed_writes_listings_through_the_hooks() {
    let app = spawn_app().await;
    app.get_anonymous("/api/properties/").await; // cache the empty list

    let out = run(&app.settings, &["seed", "--count", "7"]);

    assert_succeeded(&out);
    assert_eq!(app.count_rows(), 7);
    assert_eq!(
        app.get_json("/api/properties/").await["count"],
        7,
        "no stale cached list"
    );
}

#[tokio::test]
async fn cache_clear_empties_the_cache_layers_only() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;
    let not_cache = format!("{}:not_cache:someone", app.prefix);
    let _: () = redis::cmd("SET")
        .arg(&not_cache)
        .arg(3)
        .arg("EX")
        .arg(60)
        .query(&mut app.redis())
        .unwrap();
    let foreign = Keys::new(format!("{}_other", app.prefix)).named("keep");
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg(1)
        .arg("EX")
        .arg(60)
        .query(&mut app.redis())
        .unwrap();

    let out = run(&app.settings, &["cache", "clear"]);

    assert_succeeded(&out);
    let sync = app.state.cache.keys().sync();
    let left: Vec<String> = app
        .keys()
        .into_keys()
        .filter(|key| !key.starts_with(sync))
        .collect();
    assert_eq!(
        left,
        [not_cache],
        "only the key that is not cache (and the instances' leases and log) is left"
    );
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
    assert_succeeded(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert!(json["keyspace_hits"].is_u64());
    assert!(json["hit_ratio"].is_f64());
}

#[tokio::test]
async fn migrate_creates_a_missing_database() {
    let settings = test_settings();
    let out = run(&settings, &["migrate"]);
    assert_succeeded(&out);
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
        &["cache", "purge"],
        &["cache", "purge", "--listing", "abc"],
        &["cache", "purge", "--listing", "0"],
        &["cache", "purge", "--listing", "1", "--url", "/properties/"],
        &["cache", "purge", "--url", "/admin/"],
        &["cache", "purge", "--url", "/properties/?sort=cheapest"],
    ] {
        let out = run(&settings, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn cache_metrics_shows_the_running_servers_counters() {
    let app = spawn_app().await;
    app.get_anonymous("/properties/").await;
    app.get_anonymous("/properties/").await;
    let bind = app.address.trim_start_matches("http://").to_string();

    let out = tokio::task::spawn_blocking({
        let settings = app.settings.clone();
        move || {
            command(&settings)
                .args(["cache", "metrics"])
                .env("BIND", bind)
                .output()
                .expect("the binary runs")
        }
    })
    .await
    .unwrap();

    assert_succeeded(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(json["app"]["page"]["hits"], 1);
    assert_eq!(json["app"]["page"]["misses"], 1);
    assert!(
        json["redis_nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty()),
        "the command adds the nodes the server keeps from anonymous callers: {json}"
    );
}

#[tokio::test]
async fn create_admin_refuses_a_short_password_and_creates_a_good_one() {
    let app = spawn_app().await;
    let run_with = |password: &str| {
        command(&app.settings)
            .args(["create-admin", "carol"])
            .env("ADMIN_PASSWORD", password)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the binary runs")
    };

    let short = run_with("short");
    let good = run_with("a long enough password");
    let again = run_with("a long enough password");

    assert!(!short.status.success());
    assert_succeeded(&good);
    assert!(
        !again.status.success(),
        "an existing admin is not overwritten"
    );
}

#[test]
fn a_malformed_trusted_proxies_value_stops_the_program_with_a_clear_error() {
    // No server listens there: if the value were accepted, nothing would be created.
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/none", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_property-listings"))
        .arg("migrate")
        .env("DATABASE_URL", nowhere)
        .env("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
        .output()
        .expect("the binary runs");

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRUSTED_PROXIES") && stderr.contains("proxy.internal"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cache_purge_listing_drops_that_listings_pages() {
    let app = spawn_app().await;
    let (x, y) = crate::purge::two_cached_listings(&app).await;

    let out = run(
        &app.settings,
        &["cache", "purge", "--listing", &x.to_string()],
    );

    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("listing:{x}")), "{stdout}");
    assert_eq!(app.x_cache(&format!("/properties/{x}/")).await, "MISS");
    assert_eq!(app.x_cache(&format!("/api/properties/{x}/")).await, "MISS");
    assert_eq!(
        app.x_cache(&format!("/properties/{y}/")).await,
        "HIT",
        "another listing's page stays cached"
    );
}

#[tokio::test]
async fn cache_purge_url_drops_that_page() {
    let app = spawn_app().await;
    let (x, _) = crate::purge::two_cached_listings(&app).await;

    let out = run(
        &app.settings,
        &["cache", "purge", "--url", &format!("/properties/00{x}/")],
    );

    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("/properties/{x}/")), "{stdout}");
    assert_eq!(app.x_cache(&format!("/properties/{x}/")).await, "MISS");
}
