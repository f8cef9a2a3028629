//! Consistency under races and across instances: once a write is acknowledged, no
//! response from any instance sharing the Redis shows older data; the generation cannot
//! be resurrected (key deleted, keys evicted); the keyspace is bounded (every key but the
//! generation expires, junk in URLs adds none).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use property_listings::routes::list_query::LIST_PARAMS;

use crate::helpers::{
    PrivateRedis, TestApp, client, csrf_token_in, header, listing, price_in_response,
    property_data, public_routes, redis_addr, redis_url, spawn_app, spawn_app_with,
    spawn_instance_with,
};
use crate::proxy::FaultProxy;

/// The price (in cents) of the only listing, as `path` shows it, and the `X-Cache` header.
async fn observe_price(
    client: &reqwest::Client,
    base: &str,
    path: &str,
) -> Result<(u64, String), String> {
    let res = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = res.status();
    let x_cache = header(&res, "x-cache").to_string();
    let body = res.text().await.map_err(|e| format!("{path}: {e}"))?;
    if status != 200 {
        return Err(format!("{path}: status {status}"));
    }
    price_in_response(path, &body)
        .map(|p| (p, x_cache))
        .ok_or_else(|| format!("{path}: no price in the response"))
}

#[derive(Default, Debug)]
struct ReaderReport {
    reads: u64,
    stale: Vec<String>,
    errors: Vec<String>,
}

/// Reads the routes in turn until `stop`; each read first notes the last acknowledged
/// price, and a response showing less than that is a stale read.
async fn read_until_stopped(
    base: String,
    id: i64,
    path_of: PathOf,
    offset: usize,
    acknowledged: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> ReaderReport {
    let client = client();
    let mut report = ReaderReport::default();
    let mut turn = offset;
    while !stop.load(Ordering::SeqCst) {
        let path = &path_of(id, turn);
        turn += 1;
        let floor = acknowledged.load(Ordering::SeqCst);
        match observe_price(&client, &base, path).await {
            Ok((seen, x_cache)) => {
                report.reads += 1;
                if seen < floor {
                    report.stale.push(format!(
                        "{base}{path} showed {seen} after {floor} was acknowledged (X-Cache: {x_cache})"
                    ));
                }
            }
            Err(e) => report.errors.push(e),
        }
    }
    report
}

/// Which page a reader reads on its `turn`-th read of listing `id`: it must show that
/// listing (and no other) first.
type PathOf = fn(i64, usize) -> String;

/// The four public routes in turn.
fn public_route(id: i64, turn: usize) -> String {
    public_routes(id)[turn % 4].clone()
}

/// `writes` strictly increasing prices through `writer`'s repository while 8 anonymous
/// readers (spread over `readers_at`) hammer the four routes. Returns the last price.
pub(crate) async fn race(writer: &TestApp, readers_at: &[&TestApp], id: i64, writes: u64) -> u64 {
    race_over(writer, readers_at, id, writes, public_route).await
}

/// `race`, with the readers reading `path_of`'s pages.
async fn race_over(
    writer: &TestApp,
    readers_at: &[&TestApp],
    id: i64,
    writes: u64,
    path_of: PathOf,
) -> u64 {
    const READERS: usize = 8;
    let first = writer.price_in_database(id);
    let acknowledged = Arc::new(AtomicU64::new(first));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|n| {
            tokio::spawn(read_until_stopped(
                readers_at[n % readers_at.len()].address.clone(),
                id,
                path_of,
                n,
                acknowledged.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let mut last = first;
    for i in 1..=writes {
        let dollars = first / 100 + i;
        writer
            .state
            .properties
            .update(
                id,
                property_data("Race", &dollars.to_string(), "Raceville", ""),
            )
            .await
            .expect("update")
            .expect("the listing exists");
        last = dollars * 100;
        acknowledged.store(last, Ordering::SeqCst);
    }
    let writing = started.elapsed();
    stop.store(true, Ordering::SeqCst);

    let mut total = ReaderReport::default();
    for reader in readers {
        let report = tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("readers stop")
            .expect("reader task");
        total.reads += report.reads;
        total.stale.extend(report.stale);
        total.errors.extend(report.errors);
    }
    println!(
        "{writes} writes in {writing:?}; {} reads, {} stale, {} errors",
        total.reads,
        total.stale.len(),
        total.errors.len()
    );
    assert!(total.errors.is_empty(), "failed reads: {:?}", total.errors);
    assert!(
        total.stale.is_empty(),
        "{} stale reads, e.g. {:?}",
        total.stale.len(),
        &total.stale[..total.stale.len().min(10)]
    );
    assert!(
        total.reads >= writes / 2,
        "the readers raced the writer ({} reads)",
        total.reads
    );
    last
}

/// Every instance's pages (fetched twice: the second is served from the cache) and the
/// API agree with the database.
pub(crate) async fn assert_everyone_agrees(apps: &[&TestApp], id: i64, expected: u64) {
    assert_eq!(apps[0].price_in_database(id), expected, "the database");
    let client = client();
    for app in apps {
        for path in public_routes(id) {
            for attempt in ["first", "cached"] {
                let (seen, x_cache) = observe_price(&client, &app.address, &path).await.unwrap();
                assert_eq!(seen, expected, "{attempt} read of {path} ({x_cache})");
                if attempt == "cached" {
                    assert_eq!(x_cache, "HIT", "{path}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_300_writes_never_see_a_price_older_than_the_last_acknowledged_one() {
    let app = spawn_app().await;
    let p = app.insert("Race", "1000", "Raceville").await;

    let last = race(&app, &[&app], p.id, 300).await;

    assert_everyone_agrees(&[&app], p.id, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_second_instance_never_see_a_price_older_than_the_last_acknowledged_one() {
    let a = spawn_app().await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Race", "1000", "Raceville").await;
    b.warm(&public_routes(p.id)).await; // the first write finds them cached on B

    let last = race(&a, &[&a, &b], p.id, 300).await;

    assert_everyone_agrees(&[&a, &b], p.id, last).await;
}

#[tokio::test]
async fn listings_created_edited_and_deleted_through_b_s_forms_show_at_once_on_a() {
    let a = spawn_app().await;
    let b = spawn_instance_with(&a, |_| {}).await;
    a.sign_in().await; // on A; the same cookie jar is then used on B
    a.warm(&["/properties/".into(), "/api/properties/".into()])
        .await;
    let form = a.get(&b.url("/admin/properties/new")).await;
    assert_eq!(form.status(), 200, "the session signed on A is valid on B");
    let token = csrf_token_in(&form.text().await.unwrap());

    let created = a
        .post_form(
            &b.url("/admin/properties/new"),
            &listing("Made on B", "250000", "Twin Peaks", &token),
        )
        .await;

    assert_eq!(
        created.status(),
        303,
        "the session signed on A is valid on B"
    );
    let list = a.get_json("/api/properties/").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["results"][0]["price"], "250000.00");
    let id = list["results"][0]["id"].as_i64().unwrap();
    let html = a.get_anonymous("/properties/").await.text().await.unwrap();
    assert!(html.contains("Made on B") && html.contains("$250,000.00"));

    // Edit through B while A has every page of the listing cached.
    let detail = format!("/properties/{id}/");
    let api_detail = format!("/api/properties/{id}/");
    a.warm(&[
        "/properties/".into(),
        "/api/properties/".into(),
        detail.clone(),
        api_detail.clone(),
    ])
    .await;
    let edited = a
        .post_form(
            &b.url(&format!("/admin/properties/{id}/edit")),
            &listing("Made on B, renovated", "275000.50", "Twin Peaks", &token),
        )
        .await;

    assert_eq!(edited.status(), 303);
    let json = a.get_json(&api_detail).await;
    assert_eq!(json["title"], "Made on B, renovated");
    assert_eq!(json["price"], "275000.50");
    let html = a.get_anonymous(&detail).await.text().await.unwrap();
    assert!(html.contains("Made on B, renovated") && html.contains("$275,000.50"));
    assert_eq!(
        a.get_json("/api/properties/").await["results"][0]["price"],
        "275000.50"
    );

    // Delete through B.
    a.warm(&[detail.clone(), api_detail.clone()]).await;
    let deleted = a
        .post_form(
            &b.url(&format!("/admin/properties/{id}/delete")),
            &[("csrf_token", &token)],
        )
        .await;

    assert_eq!(deleted.status(), 303);
    assert_eq!(a.get_anonymous(&detail).await.status(), 404);
    assert_eq!(a.get_anonymous(&api_detail).await.status(), 404);
    assert_eq!(a.get_json("/api/properties/").await["count"], 0);
}

fn generation_token(app: &TestApp) -> Option<String> {
    redis::cmd("GET")
        .arg(app.state.cache.keys().generation())
        .query(&mut app.redis())
        .unwrap()
}

#[tokio::test]
async fn deleting_the_generation_key_never_brings_back_pages_of_an_older_generation() {
    // Entries in Redis only: every read looks the generation up there.
    let app = spawn_app_with(|s| s.local_cache_bytes = 0).await;
    let p = app.insert("Loft", "100", "Austin, TX").await;
    let routes = public_routes(p.id);
    let client = client();
    let mut tokens_seen = HashSet::new();

    for round in 1..=5u64 {
        // Arrange: every route cached, then a write makes those entries dead (they are
        // still in Redis, tagged with the old token).
        app.warm(&routes).await;
        tokens_seen.insert(generation_token(&app).expect("a generation"));
        let price = 100 + round;
        app.state
            .properties
            .update(
                p.id,
                property_data("Loft", &price.to_string(), "Austin, TX", ""),
            )
            .await
            .unwrap()
            .expect("updated");
        tokens_seen.insert(generation_token(&app).expect("a generation"));
        assert_eq!(
            app.page_keys().len(),
            4,
            "the dead entries are still stored"
        );

        // Act: Redis loses the generation key.
        let _: () = redis::cmd("DEL")
            .arg(app.state.cache.keys().generation())
            .query(&mut app.redis())
            .unwrap();

        // Assert: no old entry comes back to life.
        for path in &routes {
            let (seen, x_cache) = observe_price(&client, &app.address, path).await.unwrap();
            assert_eq!(seen, price * 100, "round {round}: {path} ({x_cache})");
            assert_eq!(x_cache, "MISS", "round {round}: {path}");
        }
        let token = generation_token(&app).expect("a fresh generation");
        assert!(
            !tokens_seen.contains(&token),
            "round {round}: a token was reused"
        );
    }
}

fn evicted_keys(redis: &PrivateRedis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut redis.connection())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("evicted_keys in INFO stats")
}

/// GETs every path (16 at a time) and returns (path, price in cents or error).
async fn read_all(app: &TestApp, paths: &[String]) -> Vec<(String, Result<u64, String>)> {
    let client = client();
    futures_util::stream::iter(paths.iter().cloned())
        .map(|path| {
            let client = client.clone();
            let base = app.address.clone();
            async move {
                let seen = observe_price(&client, &base, &path).await.map(|(p, _)| p);
                (path, seen)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test]
async fn with_a_tiny_maxmemory_and_lru_eviction_no_read_after_a_write_shows_old_data() {
    let redis =
        PrivateRedis::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
    let app = spawn_app_with(|s| s.redis_url = redis.url()).await;
    let p = app.insert("Pressure", "5000", "Evictville").await;
    let mut paths: Vec<String> = public_routes(p.id).into();
    for min_price in 1..=200 {
        paths.push(format!("/properties/?min_price={min_price}"));
        paths.push(format!("/api/properties/?min_price={min_price}"));
    }
    // Arrange: hundreds of cached pages showing the old price, plus another app's keys,
    // so that Redis has to evict.
    for (path, seen) in read_all(&app, &paths).await {
        assert_eq!(seen, Ok(500_000), "{path}");
    }
    let mut conn = redis.connection();
    let filler = "f".repeat(4096);
    for chunk in 0..10 {
        let mut pipe = redis::pipe();
        for i in 0..50 {
            pipe.cmd("SET")
                .arg(format!("other_app:filler:{chunk}:{i}"))
                .arg(&filler)
                .ignore();
        }
        let _: () = pipe.query(&mut conn).unwrap();
    }
    for (path, seen) in read_all(&app, &paths).await {
        assert_eq!(seen, Ok(500_000), "{path}");
    }
    assert!(
        evicted_keys(&redis) > 0,
        "the arrangement must make Redis evict"
    );

    // Act
    app.state
        .properties
        .update(p.id, property_data("Pressure", "6000", "Evictville", ""))
        .await
        .unwrap()
        .expect("updated");

    // Assert: twice over (misses, then whatever survived eviction), never the old price.
    for _ in 0..2 {
        let old: Vec<_> = read_all(&app, &paths)
            .await
            .into_iter()
            .filter(|(_, seen)| *seen != Ok(600_000))
            .collect();
        assert!(
            old.is_empty(),
            "{} responses not showing the write: {old:?}",
            old.len()
        );
    }
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.prefix))
        .query(&mut conn)
        .unwrap();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
        if key != app.state.cache.keys().generation() {
            assert!(ttl > 0 || ttl == -2, "{key} has no TTL ({ttl})");
        }
    }
}

/// Every other read a page no one has asked for yet: a filtered list (HTML or JSON,
/// with or without free text) under a price floor never used before, which still shows
/// the listing (it costs over 1000).
fn fresh_filter_or_public_route(id: i64, turn: usize) -> String {
    if turn.is_multiple_of(2) {
        return public_route(id, turn / 2);
    }
    let n = turn / 2;
    let floor = format!("{}.{:02}", n / 100 % 1000, n % 100);
    match n % 3 {
        0 => format!("/properties/?min_price={floor}"),
        1 => format!("/api/properties/?min_price={floor}"),
        _ => format!("/api/properties/?min_price={floor}&q=race"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_redis_flooded_with_new_filter_urls_during_300_writes_evicts_but_never_serves_old_data()
 {
    let redis =
        PrivateRedis::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lfu"]);
    let a = spawn_app_with(|s| s.redis_url = redis.url()).await;
    let b = spawn_instance_with(&a, |_| {}).await;
    // A full first page behind the raced listing (the newest), so that pages are large.
    a.insert_many(19).await;
    let p = a.insert("Race", "1000", "Raceville").await;
    // Redis full before the race: distinct filter URLs, each stored once.
    let fill: Vec<String> = (100_000..100_300)
        .map(|turn| fresh_filter_or_public_route(p.id, 2 * turn + 1))
        .collect();
    for (path, seen) in read_all(&a, &fill).await {
        assert_eq!(seen, Ok(100_000), "{path}");
    }
    assert!(
        evicted_keys(&redis) > 0,
        "the arrangement makes Redis evict"
    );

    // Readers fetch a never-seen filter URL on every other read, on both instances, while
    // the writer edits: every entry, token, lock and counter may be evicted at any time.
    let last = race_over(&a, &[&a, &b], p.id, 300, fresh_filter_or_public_route).await;

    assert_everyone_agrees(&[&a, &b], p.id, last).await;
    let mut conn = redis.connection();
    let keys: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory");
    println!(
        "{keys} keys, {used} bytes used, {} evicted",
        evicted_keys(&redis)
    );
    assert!(
        used <= 3 << 20,
        "Redis stays near its 2 MB cap ({used} bytes)"
    );
}

/// One command as `MONITOR` prints it: `1700000000.000000 [0 127.0.0.1:1234] "SET" "k" …`.
fn parse_monitor_line(line: &str) -> Option<Vec<String>> {
    let rest = &line[line.find("] ")? + 2..];
    let mut args = Vec::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => arg.push(chars.next()?),
                other => arg.push(other),
            }
        }
        args.push(arg);
    }
    Some(args)
}

/// Records every command the Redis server runs until `stop_marker` is echoed.
fn monitor(redis: &PrivateRedis) -> std::thread::JoinHandle<Vec<Vec<String>>> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    stream.write_all(b"MONITOR\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert_eq!(ok.trim_end(), "+OK");
    std::thread::spawn(move || {
        let mut commands = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(args) = parse_monitor_line(line.trim_end()) {
                if args.first().map(String::as_str) == Some("ECHO")
                    && args.get(1).map(String::as_str) == Some("stop-monitor")
                {
                    break;
                }
                commands.push(args);
            }
            line.clear();
        }
        commands
    })
}

#[tokio::test]
async fn every_key_the_app_writes_is_written_with_an_expiry() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| {
        s.redis_url = redis.url();
        s.page_cache_ttl = Duration::from_millis(300);
        s.query_cache_ttl = Duration::from_millis(300);
    })
    .await;
    let p = app.insert("Loft", "100", "A").await;
    let recorder = monitor(&redis);

    // Act: every kind of Redis write the app makes.
    let mut paths: Vec<String> = public_routes(p.id).into();
    paths.extend([
        "/properties/?q=loft".into(),
        "/api/properties/?sort=price_asc".into(),
    ]);
    for path in &paths {
        app.get_anonymous(path).await; // page and query entries
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for path in &paths {
        app.get_anonymous(path).await; // refresh locks of expired entries
    }
    app.insert("Another", "5", "B").await; // invalidation
    app.state.cache.clear().await.unwrap(); // a new generation, then none
    app.get_anonymous("/properties/").await; // a fresh generation
    let _: String = redis::cmd("ECHO")
        .arg("stop-monitor")
        .query(&mut redis.connection())
        .unwrap();
    let commands = tokio::task::spawn_blocking(move || recorder.join().unwrap())
        .await
        .unwrap();

    // Assert
    let mut written = BTreeSet::new();
    let mut without_expiry = Vec::new();
    const READS_AND_EXPIRY: &[&str] = &[
        "GET",
        "MGET",
        "PTTL",
        "TTL",
        "DEL",
        "UNLINK",
        "PEXPIRE",
        "EXPIRE",
        "PING",
        "INFO",
        "SCAN",
        "MULTI",
        "EXEC",
        "CLIENT",
        "HELLO",
        "SELECT",
        "EXISTS",
        "ECHO",
        "KEYS",
        "GETDEL",
        "HGET",
        "HGETALL",
        "HEXISTS",
        "XREAD",
        "XREVRANGE",
        "EVAL",
        "TIME",
        "ROLE",
        "WAIT",
    ];
    for (i, args) in commands.iter().enumerate() {
        let name = args[0].to_uppercase();
        let Some(key) = args.get(1).filter(|k| k.starts_with(&app.prefix)) else {
            continue;
        };
        let kind = app.state.cache.key_kind(key).to_string();
        match name.as_str() {
            "SET" => {
                written.insert(kind);
                let expires = args[3..]
                    .iter()
                    .any(|a| ["PX", "EX", "PXAT", "EXAT"].contains(&a.to_uppercase().as_str()));
                if !expires {
                    without_expiry.push(args[..2].join(" "));
                }
            }
            // The leases' hash and the log are written by scripts that expire them too.
            "INCR" | "INCRBY" | "HSET" | "HINCRBY" | "XADD" => {
                written.insert(kind);
                let expired_later = commands[i..].iter().any(|later| {
                    ["PEXPIRE", "EXPIRE"].contains(&later[0].to_uppercase().as_str())
                        && later.get(1) == Some(key)
                });
                if !expired_later {
                    without_expiry.push(args[..2].join(" "));
                }
            }
            other if READS_AND_EXPIRY.contains(&other) => {}
            other => without_expiry.push(format!("{other} {key} (unexpected command)")),
        }
    }
    assert!(
        without_expiry.is_empty(),
        "written without an expiry: {without_expiry:?}"
    );
    let generation_ttl: i64 = redis::cmd("PTTL")
        .arg(app.state.cache.keys().generation())
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        generation_ttl > 0 || generation_ttl == -2,
        "the generation, if there is one, expires too ({generation_ttl})"
    );
    let expected: BTreeSet<String> = ["lease", "lock", "page", "query", "token"]
        .into_iter()
        .map(String::from)
        .collect();
    assert!(
        expected.is_subset(&written),
        "the run exercised every kind of key: {written:?}"
    );
}

/// A pseudo-random parameter name of 2–10 characters that is not a listing parameter.
fn junk_name(seed: u64) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.[]";
    let len = 2 + (seed % 9) as usize;
    let name: String = (0..len)
        .map(|i| CHARS[(seed.rotate_right(i as u32 * 6) % CHARS.len() as u64) as usize] as char)
        .collect();
    if LIST_PARAMS.contains(&name.as_str()) {
        format!("x{name}")
    } else {
        name
    }
}

fn junk_value(seed: u64) -> String {
    let values = [
        "",
        " ",
        "1",
        "💥",
        "%",
        "&&",
        "'; DROP TABLE properties; --",
        "<script>",
    ];
    format!(
        "{}{}",
        values[(seed % values.len() as u64) as usize],
        seed % 1000
    )
}

/// One to three unknown parameters, URL-encoded.
fn junk_params(seed: u64) -> String {
    let pairs: Vec<(String, String)> = (0..1 + seed % 3)
        .map(|i| {
            let s = seed.rotate_left(i as u32 * 17) ^ i;
            (junk_name(s), junk_value(s >> 7))
        })
        .collect();
    serde_urlencoded::to_string(pairs).expect("encodes")
}

/// A known parameter with a value the listing query refuses (400).
fn bad_known_param(seed: u64) -> String {
    let n = seed % 1000;
    let pairs: Vec<(&str, String)> = match seed % 9 {
        0 => vec![("page", "0".into())],
        1 => vec![("page", format!("-{n}"))],
        2 => vec![("page", format!("abc{n}"))],
        3 => vec![("sort", format!("cheapest{n}"))],
        4 => vec![("min_price", format!("{n}.123"))],
        5 => vec![("max_price", format!("1e{}", n % 9))],
        6 => vec![
            ("min_price", format!("{}", 10 + n)),
            ("max_price", "1".into()),
        ],
        7 => vec![("q", "x".repeat(201 + (n % 50) as usize))],
        _ => vec![("location", format!("{n}\u{7}"))],
    };
    serde_urlencoded::to_string(pairs).expect("encodes")
}

/// One junk request: unknown parameters (200, served from the route's one key), bad
/// values of known parameters (400), or pages and listings that do not exist (404).
fn junk_path(seed: u64, id: i64) -> String {
    let base = if seed.is_multiple_of(2) {
        "/properties/"
    } else {
        "/api/properties/"
    };
    let r = seed / 20;
    match (seed / 2) % 10 {
        0..=4 => format!("{base}?{}", junk_params(r)),
        5 | 6 => format!("{base}?{}&{}", bad_known_param(r), junk_params(r >> 3)),
        7 => format!("{base}?page={}&{}", 2 + r % 1000, junk_params(r >> 3)),
        8 => format!(
            "{base}{}/?{}",
            id + 1 + (r % 1_000_000) as i64,
            junk_params(r >> 3)
        ),
        _ => format!("{base}x{r}/"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_with_junk_parameters_and_paths_add_no_page_keys() {
    let app = spawn_app().await;
    let p = app.insert("Loft", "100", "A").await;
    app.warm(&["/properties/".into(), "/api/properties/".into()])
        .await;
    let keys_before: BTreeSet<String> = app.keys().into_keys().collect();
    let start: u64 = rand::random();
    let client = client();
    println!("junk seed {start}");

    let started = Instant::now();
    let statuses: Vec<(String, u16, String)> = futures_util::stream::iter(0..10_000u64)
        .map(|i| {
            let client = client.clone();
            let path = junk_path(
                start.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                p.id,
            );
            let url = app.url(&path);
            async move {
                let res = client.get(url).send().await.expect("request sent");
                let x_cache = header(&res, "x-cache").to_string();
                (path, res.status().as_u16(), x_cache)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    println!("10,000 junk requests in {:?}", started.elapsed());

    let count = |code: u16| statuses.iter().filter(|(_, s, _)| *s == code).count();
    let unexpected: Vec<_> = statuses
        .iter()
        .filter(|(_, s, _)| ![200, 400, 404].contains(s))
        .take(10)
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(
        count(200) > 3_000 && count(400) > 1_000 && count(404) > 1_000,
        "a mix of outcomes: {} × 200, {} × 400, {} × 404",
        count(200),
        count(400),
        count(404)
    );
    let not_hits: Vec<_> = statuses
        .iter()
        .filter(|(_, s, x)| *s == 200 && x != "HIT")
        .take(10)
        .collect();
    assert!(
        not_hits.is_empty(),
        "junk parameters must map to the cached key: {not_hits:?}"
    );
    let keys_after: BTreeSet<String> = app.keys().into_keys().collect();
    let added: Vec<_> = keys_after.difference(&keys_before).take(10).collect();
    assert!(added.is_empty(), "keys added: {added:?}");
    assert_eq!(keys_after, keys_before);
}

#[tokio::test]
async fn a_request_that_starts_after_a_write_never_gets_a_render_that_read_the_database_before_it()
{
    // A reaches Redis through 100 ms of latency each way, which stretches the time
    // between a render's database read and the end of its (single-flight) render to
    // two round trips (storing the query result, then the page); B writes over a direct
    // link, so its write is acknowledged well within that time, and a request that
    // starts then needs only one round trip to find nothing cached and join the render.
    let link = FaultProxy::start(redis_addr().parse().unwrap());
    let a = spawn_app_with(|s| {
        s.redis_url = s.redis_url.replace(&redis_addr(), &link.addr().to_string());
        s.redis_timeout = Duration::from_secs(2);
    })
    .await;
    let b = spawn_instance_with(&a, |s| s.redis_url = redis_url()).await;
    let p = a.insert("Flight", "1000", "Raceville").await;
    a.get_anonymous("/properties/0/").await; // applies the start-up invalidation
    link.latency(Duration::from_millis(100));
    let write = |dollars: u64| {
        let b = &b;
        async move {
            b.state
                .properties
                .update(
                    p.id,
                    property_data("Flight", &dollars.to_string(), "Raceville", ""),
                )
                .await
                .unwrap()
                .expect("updated");
            dollars * 100
        }
    };
    // Each trial reads its own key, so that no copy of it is kept in A's memory.
    let paths = [
        "/api/properties/?sort=price_asc",
        "/properties/?sort=price_desc",
    ];
    let mut stale = Vec::new();
    for (trial, path) in paths.into_iter().enumerate() {
        // Arrange: nothing cached; a first request starts rendering the list and loads
        // all properties from PostgreSQL.
        write(2000 + 10 * trial as u64).await;
        let loads = a.state.cache.metrics().snapshot().db_loads;
        let first = tokio::spawn(client().get(a.url(path)).send());
        let started = Instant::now();
        while a.state.cache.metrics().snapshot().db_loads == loads {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path}: no load"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // its query has run
        // Act: a write is acknowledged, then a second request starts.
        let acknowledged = write(2005 + 10 * trial as u64).await;
        let (seen, x_cache) = observe_price(&client(), &a.address, path).await.unwrap();
        // Assert
        if seen < acknowledged {
            stale.push(format!(
                "{path}: saw {seen} after {acknowledged} was acknowledged ({x_cache})"
            ));
        }
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
    }
    assert!(stale.is_empty(), "stale reads: {stale:?}");
}
