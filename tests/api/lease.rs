//! The in-process tier's lease: a hit held in memory sends nothing to Redis, and a write
//! is acknowledged only once every instance holding a lease has applied it or that
//! instance's lease has run out — also when an instance is paused, cut off, joining,
//! or when Redis restarts or loses the lease hash or the log.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::consistency::{assert_everyone_agrees, race};
use crate::fault_injection::{through, upstream};
use crate::helpers::{
    PrivateRedis, TestApp, free_port, header, property_data, public_routes, redis_addr,
    spawn_app_with, spawn_instance_with,
};
use crate::proxy::FaultProxy;

/// A short lease keeps these tests quick; every instance sharing a Redis has the same.
const LEASE: Duration = Duration::from_millis(1000);

async fn spawn_leased(customise: impl FnOnce(&mut property_listings::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.cache_lease = LEASE;
        customise(s);
    })
    .await
}

/// The price (cents) `path` shows on `app`, and its `X-Cache` and `Cache-Status`.
async fn read(app: &TestApp, path: &str) -> (u64, String, String) {
    let res = app.get_anonymous(path).await;
    assert_eq!(res.status(), 200, "{path}");
    let x_cache = header(&res, "x-cache").to_string();
    let status = header(&res, "cache-status").to_string();
    let price =
        crate::helpers::price_in_response(path, &res.text().await.unwrap()).expect("a price");
    (price, x_cache, status)
}

/// Reads `path` until it is answered from memory.
async fn until_from_memory(app: &TestApp, path: &str) {
    let started = Instant::now();
    loop {
        if read(app, path).await.2.ends_with("detail=memory") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: never from memory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn set_price(app: &TestApp, id: i64, dollars: u64) -> Duration {
    let started = Instant::now();
    app.state
        .properties
        .update(
            id,
            property_data("Leased", &dollars.to_string(), "Leaseville", ""),
        )
        .await
        .expect("update")
        .expect("the listing exists");
    started.elapsed()
}

/// `INFO commandstats` calls per command.
fn command_calls(redis: &PrivateRedis) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[tokio::test]
async fn hits_held_in_memory_send_no_command_to_redis() {
    let redis = PrivateRedis::start();
    let app = spawn_leased(|s| s.redis_url = redis.url()).await;
    let p = app.insert("Leased", "100", "Leaseville").await;
    let pages = public_routes(p.id);
    for path in &pages {
        until_from_memory(&app, path).await;
    }

    let before = command_calls(&redis);
    for _ in 0..150 {
        for path in &pages {
            let (price, x_cache, status) = read(&app, path).await;
            assert_eq!((price, x_cache.as_str()), (10_000, "HIT"), "{path}");
            assert!(status.ends_with("; hit; detail=memory"), "{path}: {status}");
        }
    }
    let after = command_calls(&redis);

    // The lease's own background commands (renewals, the log reader) go on; no lookup
    // reads an entry or a token.
    for command in ["get", "mget", "set", "multi"] {
        assert_eq!(
            after.get(command),
            before.get(command),
            "{command} calls during 600 hits: {before:?} → {after:?}"
        );
    }
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    let memory_hits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cache_memory_hits_total{layer=\"page\"} "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the memory-hit counter");
    assert!(memory_hits >= 600, "{memory_hits} hits counted from memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_three_instances_racing_300_writes_never_see_old_data() {
    let a = spawn_leased(|_| {}).await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let c = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Race", "1000", "Raceville").await;

    let last = race(&a, &[&a, &b, &c], p.id, 300).await;

    assert_everyone_agrees(&[&a, &b, &c], p.id, last).await;
    // How long the writes waited for the three instances (for the record).
    let metrics = a.state.cache.metrics().render_prometheus();
    let waits: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cache_invalidation_wait_seconds_bucket"))
        .collect();
    println!("acknowledgment waits: {waits:?}");
}

/// A server of the same data in a process of its own (the binary), so that it can be
/// paused; stopped on drop.
struct ServerProcess {
    child: Child,
    address: String,
}

impl ServerProcess {
    async fn start(app: &TestApp) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_property-listings"))
            .arg("serve")
            .env("DATABASE_URL", &app.settings.database_url)
            .env("REDIS_URL", &app.settings.redis_url)
            .env("CACHE_KEY_PREFIX", &app.settings.cache_key_prefix)
            .env("CACHE_LEASE_MS", LEASE.as_millis().to_string())
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("WORKERS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let server = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while crate::helpers::client()
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the server starts"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain kill(2) of the child this test started.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} sent");
    }

    async fn read(&self, path: &str) -> (u64, String) {
        let res = crate::helpers::client()
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(res.status(), 200, "{path}");
        let status = header(&res, "cache-status").to_string();
        let price =
            crate::helpers::price_in_response(path, &res.text().await.unwrap()).expect("a price");
        (price, status)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_paused_instance_delays_a_write_by_at_most_its_lease_and_answers_it_once_resumed() {
    let app = spawn_leased(|_| {}).await;
    let p = app.insert("Leased", "100", "Leaseville").await;
    let other = ServerProcess::start(&app).await;
    let path = format!("/properties/{}/", p.id);
    let started = Instant::now();
    while !other.read(&path).await.1.ends_with("detail=memory") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never from memory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    other.signal(libc::SIGSTOP);
    let waited = set_price(&app, p.id, 200).await;
    other.signal(libc::SIGCONT);

    println!("the write waited {waited:?} for the paused instance");
    assert!(
        waited >= LEASE / 2,
        "the write waited for the paused instance's lease ({waited:?})"
    );
    assert!(
        waited < 3 * LEASE,
        "but no longer than about a lease: {waited:?}"
    );
    assert_eq!(
        other.read(&path).await.0,
        20_000,
        "resumed, it answers the write"
    );
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_never_answers_from_memory_after_a_write_it_missed() {
    let a = spawn_leased(|_| {}).await;
    let proxy = FaultProxy::start(upstream(&redis_addr()));
    let b = spawn_instance_with(&a, |s| {
        s.redis_url = through(&s.redis_url, &redis_addr(), &proxy);
    })
    .await;
    let p = a.insert("Leased", "100", "Leaseville").await;
    let path = format!("/properties/{}/", p.id);
    until_from_memory(&b, &path).await;

    // Cut off without noticing: nothing it sends arrives for a long while.
    proxy.latency(Duration::from_secs(30));
    let waited = set_price(&a, p.id, 200).await;

    assert!(
        waited < 3 * LEASE,
        "the write waited at most about a lease: {waited:?}"
    );
    let (price, x_cache, _) = read(&b, &path).await;
    assert_eq!(
        price, 20_000,
        "the cut-off instance shows the write ({x_cache})"
    );
    proxy.restore();
}

#[tokio::test]
async fn a_read_of_tokens_overtaken_by_an_invalidation_does_not_fill_the_memory() {
    let a = spawn_leased(|_| {}).await;
    let proxy = FaultProxy::start(upstream(&redis_addr()));
    let b = spawn_instance_with(&a, |s| {
        s.redis_url = through(&s.redis_url, &redis_addr(), &proxy);
        s.redis_timeout = Duration::from_secs(2);
        s.cache_lease = Duration::from_secs(5);
        // One worker, whose connection the warm-up below opens (a connection opened
        // later would send its handshake through the delay first).
        s.workers = Some(1);
    })
    .await;
    let p = a.insert("Leased", "100", "Leaseville").await;
    let path = format!("/properties/{}/", p.id);
    b.get_anonymous("/api/properties/").await; // past its start-up invalidation
    let started = Instant::now();
    while !b.state.cache.holds_lease() || b.state.cache.invalidation_pending() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "b holds a lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.until_hit(&path, Duration::from_secs(5)).await; // the entry is in Redis

    // B reads the tokens and the entry before the write lands, but hears of the write's
    // invalidation (on its log reader) before that read's answer comes back.
    proxy.delay_replies_but_the_log(Duration::from_millis(300));
    let reader = {
        let b_address = b.address.clone();
        let path = path.clone();
        tokio::spawn(async move {
            crate::helpers::client()
                .get(format!("{b_address}{path}"))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    set_price(&a, p.id, 200).await;
    let _ = reader.await;
    proxy.restore();

    // What B answers from now on must show the write: from Redis, or from memory only
    // if it learned the new tokens.
    for _ in 0..20 {
        let (price, x_cache, status) = read(&b, &path).await;
        assert_eq!(price, 20_000, "{x_cache} {status}");
    }
}

#[tokio::test]
async fn an_instance_joining_during_writes_never_shows_an_acknowledged_write_missing() {
    let a = spawn_leased(|_| {}).await;
    let p = a.insert("Leased", "1000", "Leaseville").await;
    let path = format!("/properties/{}/", p.id);
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(100_000));
    let writer = {
        let a_state = a.state.clone();
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            for dollars in 1001..=1100u64 {
                a_state
                    .properties
                    .update(
                        p.id,
                        property_data("Leased", &dollars.to_string(), "Leaseville", ""),
                    )
                    .await
                    .expect("update");
                acknowledged.store(dollars * 100, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut joined = Vec::new();
    for _ in 0..3 {
        let c = spawn_instance_with(&a, |_| {}).await;
        for _ in 0..10 {
            let floor = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
            let (seen, x_cache, _) = read(&c, &path).await;
            assert!(
                seen >= floor,
                "joined instance showed {seen} after {floor} ({x_cache})"
            );
        }
        joined.push(c);
    }
    writer.await.unwrap();
    let all: Vec<&TestApp> = std::iter::once(&a).chain(joined.iter()).collect();
    assert_everyone_agrees(&all, p.id, 110_000).await;
}

#[tokio::test]
async fn after_redis_restarts_no_instance_answers_from_what_it_knew() {
    let redis_port = free_port();
    let redis = PrivateRedis::start_on(redis_port, &[]);
    let a = spawn_leased(|s| s.redis_url = redis.url()).await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Leased", "100", "Leaseville").await;
    let path = format!("/properties/{}/", p.id);
    until_from_memory(&b, &path).await;

    drop(redis);
    let _redis = PrivateRedis::start_on(redis_port, &[]);
    let waited = set_price(&a, p.id, 200).await;

    assert!(waited < 3 * LEASE, "{waited:?}");
    assert_eq!(read(&b, &path).await.0, 20_000);
    assert_eq!(read(&a, &path).await.0, 20_000);
}

#[tokio::test]
async fn losing_the_lease_hash_or_the_log_never_lets_an_instance_answer_old_data() {
    let a = spawn_leased(|_| {}).await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Leased", "100", "Leaseville").await;
    let path = format!("/properties/{}/", p.id);
    let keys = a.state.cache.keys().clone();

    for (round, lost) in [keys.sync(), keys.log()].into_iter().enumerate() {
        until_from_memory(&b, &path).await;
        // As an eviction would.
        let _: () = redis::cmd("DEL").arg(lost).query(&mut a.redis()).unwrap();
        let dollars = 200 + round as u64;

        let waited = set_price(&a, p.id, dollars).await;

        assert!(waited < 3 * LEASE, "{lost}: {waited:?}");
        let (price, x_cache, status) = read(&b, &path).await;
        assert_eq!(price, dollars * 100, "{lost} lost: {x_cache} {status}");
    }
}
