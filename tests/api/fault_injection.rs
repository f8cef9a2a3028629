//! Faults injected between the app and Redis or PostgreSQL: a `FaultProxy` in front of
//! the shared servers (cut links, refused connections, latency), or a private Redis that
//! is unreachable, paused, or stopped and restarted. Redis trouble never becomes a 5xx
//! nor a stale read; PostgreSQL trouble leaves cached pages served and writes nothing;
//! both recover without a restart. Also: stampedes load once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::helpers::{
    PrivateRedis, TempDir, TestApp, client, free_port, header, listing, postgres_addr,
    price_in_response, property_data, public_routes, redis_addr, redis_url, spawn_app,
    spawn_app_with, spawn_instance_with,
};
use crate::proxy::FaultProxy;

pub(crate) fn upstream(addr: &str) -> SocketAddr {
    addr.parse().expect("socket address")
}

/// `url` with the host and port of `upstream` replaced by the proxy's.
pub(crate) fn through(url: &str, upstream: &str, proxy: &FaultProxy) -> String {
    assert!(url.contains(upstream), "{url} does not name {upstream}");
    url.replacen(upstream, &proxy.addr().to_string(), 1)
}

/// A proxy in front of the shared Redis, and an app that reaches Redis through it.
async fn app_behind_a_redis_proxy() -> (FaultProxy, TestApp) {
    let proxy = FaultProxy::start(upstream(&redis_addr()));
    let app = spawn_app_with(|s| s.redis_url = through(&s.redis_url, &redis_addr(), &proxy)).await;
    (proxy, app)
}

/// Status and JSON body of `/api/cache/metrics`.
async fn cache_metrics(app: &TestApp) -> (u16, serde_json::Value) {
    let res = app.get_anonymous("/api/cache/metrics").await;
    let status = res.status().as_u16();
    (status, res.json().await.expect("metrics are JSON"))
}

/// The listing's price (cents) as `path` shows it.
async fn price_at(app: &TestApp, path: &str) -> u64 {
    let res = app.get_anonymous(path).await;
    assert_eq!(res.status(), 200, "{path}");
    price_in(path, &res.text().await.unwrap())
}

/// The listing's price (cents) in the body of `path`.
fn price_in(path: &str, body: &str) -> u64 {
    price_in_response(path, body).expect("a price")
}

/// Every page answers 200 from the database (`BYPASS`, showing "Loft") within `limit`,
/// and `/healthz` says the cache is unavailable and the database fine.
/// Reads `path` (always a 200) until this instance no longer answers it from memory:
/// cut off from Redis, it may for at most its lease (`CACHE_LEASE_MS`, 2 s here).
async fn no_longer_from_memory(app: &TestApp, path: &str) {
    let started = Instant::now();
    loop {
        let res = app.get_anonymous(path).await;
        assert_eq!(res.status(), 200, "{path}");
        if header(&res, "x-cache") != "HIT" {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{path} still answered from memory after the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_served_without_the_cache(app: &TestApp, pages: &[String], limit: Duration) {
    for path in pages {
        let started = Instant::now();
        let res = app.get_anonymous(path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "x-cache"), "BYPASS", "{path}");
        assert!(res.text().await.unwrap().contains("Loft"), "{path}");
        assert!(started.elapsed() < limit, "{path}: {:?}", started.elapsed());
    }
    let health = app.get_anonymous("/healthz").await;
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["cache"], "unavailable");
    assert_eq!(health["database"], "ok");
}

#[tokio::test]
async fn with_redis_unreachable_every_page_is_served_from_the_database() {
    let closed = free_port();
    let app = spawn_app_with(|s| s.redis_url = format!("redis://127.0.0.1:{closed}/0")).await;
    let p = app.insert("Loft", "100", "Austin, TX").await;

    assert_served_without_the_cache(&app, &public_routes(p.id), Duration::from_secs(2)).await;
    let (status, metrics) = cache_metrics(&app).await;
    assert_eq!(status, 503);
    assert!(metrics["app"]["redis_errors"].as_u64().unwrap() > 0);
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
    app.until_hit("/properties/", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn with_the_redis_link_cut_every_page_is_served_and_caching_resumes_after_restore() {
    let (redis, app) = app_behind_a_redis_proxy().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    let pages = public_routes(p.id);
    app.warm(&pages).await;

    redis.cut();
    no_longer_from_memory(&app, &pages[0]).await;

    assert_served_without_the_cache(&app, &pages, Duration::from_secs(1)).await;
    let (status, metrics) = cache_metrics(&app).await;
    assert_eq!(status, 503);
    assert_eq!(metrics["redis_available"], false);

    redis.restore();
    let restored = Instant::now();
    for path in &pages {
        app.until_hit(
            path,
            Duration::from_secs(5).saturating_sub(restored.elapsed()),
        )
        .await;
    }
    println!(
        "caching resumed {:?} after the link came back",
        restored.elapsed()
    );
    assert_eq!(cache_metrics(&app).await.0, 200);
}

#[tokio::test]
async fn with_500_ms_of_redis_latency_requests_answer_well_under_a_second_and_count_as_errors() {
    let (redis, app) = app_behind_a_redis_proxy().await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    let pages = public_routes(p.id);
    app.warm(&pages).await;

    redis.latency(Duration::from_millis(500));
    no_longer_from_memory(&app, &pages[0]).await;
    let mut timings = Vec::new();
    let started = Instant::now();
    for _ in 0..5 {
        for path in &pages {
            let t = Instant::now();
            let res = app.get_anonymous(path).await;
            assert_eq!(res.status(), 200, "{path}");
            assert_eq!(header(&res, "x-cache"), "BYPASS", "{path}");
            timings.push(t.elapsed());
        }
    }
    let total = started.elapsed();
    let (status, during) = cache_metrics(&app).await;

    println!("20 requests in {total:?}: {timings:?}");
    let slowest = timings.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_millis(800),
        "slowest request took {slowest:?}"
    );
    // Without the circuit breaker each request would wait out at least one timeout.
    assert!(
        total < Duration::from_millis(20 * 250 / 2),
        "the breaker skips Redis: {total:?}"
    );
    assert_eq!(status, 503, "metrics need Redis INFO");
    assert!(
        during["app"]["redis_errors"].as_u64().unwrap() >= 3,
        "{during}"
    );
    assert_eq!(during["app"]["circuit_open"], true, "{during}");

    redis.restore();
    app.until_hit(&pages[0], Duration::from_secs(5)).await;
    let (status, after) = cache_metrics(&app).await;
    assert_eq!(status, 200);
    assert_eq!(after["app"]["circuit_open"], false);
}

#[tokio::test]
async fn a_write_while_redis_is_unreachable_leaves_no_stale_entry_for_any_instance_once_it_is_back()
{
    let (redis, a) = app_behind_a_redis_proxy().await;
    let b = spawn_instance_with(&a, |_| {}).await; // same proxy: Redis is down for both
    let p = a.insert("Loft", "100", "Austin, TX").await;
    let pages = public_routes(p.id);
    a.warm(&pages).await;
    b.warm(&pages).await;

    redis.cut();
    a.state
        .properties
        .update(p.id, property_data("Loft", "222", "Austin, TX", ""))
        .await
        .unwrap()
        .expect("the write is committed and acknowledged although Redis is down");
    for path in &pages {
        assert_eq!(
            price_at(&a, path).await,
            22_200,
            "the writer during the outage: {path}"
        );
    }
    redis.restore();

    // The writer never serves the old price, before or after its retry lands.
    let restored = Instant::now();
    while a.state.cache.invalidation_pending() {
        assert!(
            restored.elapsed() < Duration::from_secs(3),
            "the retry never landed"
        );
        for path in &pages {
            assert_eq!(price_at(&a, path).await, 22_200, "the writer: {path}");
        }
    }
    println!(
        "the pending invalidation landed {:?} after restore",
        restored.elapsed()
    );
    for app in [&a, &b] {
        for path in &pages {
            assert_new_price_until_hit(app, path, 22_200).await;
        }
    }
}

#[tokio::test]
async fn a_write_while_redis_is_paused_leaves_no_stale_page_once_it_is_back() {
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
        .update(p.id, property_data("After", "100", "A", ""))
        .await
        .unwrap();
    let during = app.get_json(&path).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after = app.get_json(&path).await;

    assert_eq!(during["title"], "After");
    assert_eq!(after["title"], "After");
}

/// Reads `path` until it is served from the cache again; every read shows `expected`.
async fn assert_new_price_until_hit(app: &TestApp, path: &str, expected: u64) {
    let started = Instant::now();
    loop {
        let res = app.get_anonymous(path).await;
        assert_eq!(res.status(), 200, "{path}");
        let x_cache = header(&res, "x-cache").to_string();
        let seen = price_in(path, &res.text().await.unwrap());
        assert_eq!(seen, expected, "{}{path} ({x_cache})", app.address);
        if x_cache == "HIT" {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: caching did not resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_write_from_an_instance_cut_off_from_redis_reaches_the_others_once_its_link_is_back() {
    let (link, writer) = app_behind_a_redis_proxy().await;
    let reader = spawn_instance_with(&writer, |s| s.redis_url = redis_url()).await;
    let p = writer.insert("Loft", "100", "Austin, TX").await;
    let pages = public_routes(p.id);
    reader.warm(&pages).await;

    link.cut();
    writer
        .state
        .properties
        .update(p.id, property_data("Loft", "333", "Austin, TX", ""))
        .await
        .unwrap()
        .expect("updated");
    // Meanwhile the reader, which never lost Redis, may still serve the old generation:
    // the documented limit (README, "Consistency guarantees").
    let mut old_during_outage = 0;
    for path in &pages {
        if price_at(&reader, path).await != 33_300 {
            old_during_outage += 1;
        }
    }
    link.restore();

    let restored = Instant::now();
    while writer.state.cache.invalidation_pending() {
        assert!(
            restored.elapsed() < Duration::from_secs(3),
            "the retry never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let landed = restored.elapsed();
    println!(
        "{old_during_outage}/4 reads of the other instance were old during the outage; \
         the retry landed {landed:?} after the link came back"
    );
    // The breaker's 1 s cool-down plus the 250 ms retry tick, with some slack.
    assert!(landed < Duration::from_millis(2000), "{landed:?}");
    for path in &pages {
        assert_new_price_until_hit(&reader, path, 33_300).await;
    }
}

#[tokio::test]
async fn with_postgres_cut_cached_pages_are_served_the_rest_is_503_and_forms_write_nothing() {
    let postgres = FaultProxy::start(upstream(&postgres_addr()));
    let app = spawn_app_with(|s| {
        s.database_url = through(&s.database_url, &postgres_addr(), &postgres);
        s.db_timeout = Duration::from_millis(500);
    })
    .await;
    // While the app has no connection left, another test process's sweep of leftover
    // test databases would take this one for abandoned: keep a direct connection open.
    let _in_use = app.db();
    let p = app.insert("Loft", "100", "Austin, TX").await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let cached = [
        "/properties/".to_string(),
        format!("/api/properties/{}/", p.id),
    ];
    app.warm(&cached).await;

    postgres.cut();

    for path in &cached {
        let res = app.get_anonymous(path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "x-cache"), "HIT", "{path}");
    }
    let uncached = app.get_anonymous(&format!("/properties/{}/", p.id)).await;
    assert_eq!(uncached.status(), 503);
    assert!(uncached.text().await.unwrap().contains("not reachable"));
    assert_eq!(app.get_anonymous("/healthz").await.status(), 503);
    // Requests do not pile up: each one gives up after about DB_TIMEOUT_MS.
    let client = client();
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..16).map(|i| {
        let (client, url) = (
            client.clone(),
            app.url(&format!("/properties/?q=nothing{i}")),
        );
        async move {
            let t = Instant::now();
            let status = client.get(url).send().await.expect("answered").status();
            (status, t.elapsed())
        }
    }))
    .await;
    let all = started.elapsed();
    for (status, took) in &answers {
        assert_eq!(status.as_u16(), 503);
        assert!(
            *took < Duration::from_millis(2500),
            "one request took {took:?}"
        );
    }
    // Had they queued for the pool one after another: 16 × 500 ms = 8 s.
    assert!(
        all < Duration::from_secs(3),
        "16 concurrent requests took {all:?}"
    );
    // Forms come back with their values and a message, and write nothing.
    let create = app
        .post_form(
            "/admin/properties/new",
            &listing("Unsaved Villa", "10", "Nowhere", &token),
        )
        .await;
    assert_eq!(create.status(), 503);
    let body = create.text().await.unwrap();
    assert!(body.contains("Unsaved Villa") && body.contains("nothing was saved"));
    let edit = app
        .post_form(
            &format!("/admin/properties/{}/edit", p.id),
            &listing("Unsaved Edit", "99", "Nowhere", &token),
        )
        .await;
    assert_eq!(edit.status(), 503);
    let body = edit.text().await.unwrap();
    assert!(body.contains("Unsaved Edit") && body.contains("nothing was saved"));
    let delete = app
        .post_form(
            &format!("/admin/properties/{}/delete", p.id),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(delete.status(), 503);

    postgres.restore();

    let restored = Instant::now();
    while app.get_anonymous("/healthz").await.status() != 200 {
        assert!(restored.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "service resumed {:?} after PostgreSQL came back",
        restored.elapsed()
    );
    assert_eq!(app.count_rows(), 1, "nothing was written during the outage");
    let json = app.get_json(&format!("/api/properties/{}/", p.id)).await;
    assert_eq!(
        (json["title"].as_str(), json["price"].as_str()),
        (Some("Loft"), Some("100.00"))
    );
    assert_eq!(
        app.get_anonymous(&format!("/properties/{}/", p.id))
            .await
            .status(),
        200
    );
    let create = app
        .post_form(
            "/admin/properties/new",
            &listing("Saved Villa", "10", "Nowhere", &token),
        )
        .await;
    assert_eq!(create.status(), 303);
    assert_eq!(app.count_rows(), 2);
}

/// `app.db_loads` from `/api/cache/metrics`.
async fn db_loads(app: &TestApp) -> u64 {
    let (status, metrics) = cache_metrics(app).await;
    assert_eq!(status, 200);
    metrics["app"]["db_loads"].as_u64().expect("db_loads")
}

/// 64 simultaneous anonymous GETs of `path`; returns their `X-Cache` values.
async fn stampede(app: &TestApp, path: &str) -> Vec<String> {
    let client = client();
    let responses =
        futures_util::future::join_all((0..64).map(|_| client.get(app.url(path)).send())).await;
    responses
        .into_iter()
        .map(|r| {
            let r = r.expect("answered");
            assert_eq!(r.status(), 200, "{path}");
            header(&r, "x-cache").to_string()
        })
        .collect()
}

#[tokio::test]
async fn sixty_four_simultaneous_misses_of_a_page_build_it_once_with_at_most_one_database_load() {
    let app = spawn_app().await;
    let p = app.insert("Hot", "1", "A").await;
    // A first lookup applies the invalidation every instance starts with.
    app.get_anonymous("/properties/0/").await;

    for (path, expected_loads) in [
        ("/api/properties/".to_string(), 1),
        (format!("/api/properties/{}/", p.id), 1),
        // Built from the query-cache entry the JSON list loaded.
        ("/properties/".to_string(), 0),
        (format!("/properties/{}/", p.id), 1),
    ] {
        let before = db_loads(&app).await;
        let outcomes = stampede(&app, &path).await;
        let loads = db_loads(&app).await - before;
        assert_eq!(loads, expected_loads, "{path}: {outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| *o == "MISS").count(),
            1,
            "{path}: {outcomes:?}"
        );
    }
}

/// Lets the list, a detail page and an API detail page expire, then sends 64
/// simultaneous requests for each; returns (path, database loads, `X-Cache` values).
async fn stampede_on_expired_pages() -> Vec<(String, u64, Vec<String>)> {
    let app = spawn_app_with(|s| {
        s.page_cache_ttl = Duration::from_secs(2);
        s.query_cache_ttl = Duration::from_secs(2);
    })
    .await;
    let p = app.insert("Hot", "1", "A").await;
    let pages = [
        "/properties/".to_string(),
        format!("/properties/{}/", p.id),
        format!("/api/properties/{}/", p.id),
    ];
    for path in &pages {
        app.get_anonymous(path).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await; // every entry has expired

    let mut results = Vec::new();
    for path in pages {
        let before = db_loads(&app).await;
        let outcomes = stampede(&app, &path).await;
        let loads = db_loads(&app).await - before;
        assert!(
            outcomes
                .iter()
                .all(|o| ["MISS", "STALE", "HIT"].contains(&o.as_str())),
            "{path}: {outcomes:?}"
        );
        results.push((path, loads, outcomes));
    }
    results
}

#[tokio::test]
async fn sixty_four_simultaneous_requests_for_an_expired_page_load_the_database_once() {
    for (path, loads, outcomes) in stampede_on_expired_pages().await {
        assert_eq!(loads, 1, "{path}: {outcomes:?}");
        let misses = outcomes.iter().filter(|o| *o == "MISS").count();
        assert_eq!(misses, 1, "{path}: {outcomes:?}");
    }
}

#[tokio::test]
async fn a_redis_restarted_from_a_snapshot_taken_before_a_write_does_not_serve_that_snapshot() {
    let dir = TempDir::new("pl-redis-"); // dropped after the servers below
    let dir_arg = dir.path().to_string_lossy().to_string();
    let persisted = ["--dir", dir_arg.as_str(), "--dbfilename", "dump.rdb"];
    let redis = PrivateRedis::start_with(&persisted);
    let port = redis.port;
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    let pages = public_routes(p.id);
    app.warm(&pages).await;
    // The snapshot holds the generation of that moment and pages showing 100.00.
    let generation = app.state.cache.keys().generation();
    let snapshot_token: String = redis::cmd("GET")
        .arg(generation)
        .query(&mut redis.connection())
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut redis.connection()).unwrap();
    app.state
        .properties
        .update(p.id, property_data("Loft", "444", "Austin, TX", ""))
        .await
        .unwrap()
        .expect("updated");

    drop(redis);
    let restarted = PrivateRedis::start_on(port, &persisted);
    let restored: Option<String> = redis::cmd("GET")
        .arg(generation)
        .query(&mut restarted.connection())
        .unwrap();
    assert_eq!(
        restored,
        Some(snapshot_token),
        "the old generation is back in Redis"
    );

    for path in &pages {
        assert_new_price_until_hit(&app, path, 44_400).await;
    }
}
