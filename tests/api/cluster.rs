//! Cluster mode (`REDIS_CLUSTER_URLS`) against a real Redis Cluster on loopback
//! (`helpers::cluster`). The tests that leave the cluster whole share one
//! (`shared_cluster`); a test that kills, pauses or freezes a node starts its own. Each
//! test keeps its own database and key prefix, so tests sharing the cluster only count
//! keys of their own prefix.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use property_listings::cache::Keys;
use property_listings::routes::listing::ALL_PROPERTIES;

use crate::helpers::cluster::{PortReservation, PrivateCluster, shared_cluster, spawn_app_on};
use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, PrivateRedis, client, csrf_token_in, header, session_cookie_in,
    spawn_app_with, spawn_instance_with,
};

/// How long a page may take to become a HIT: the first lookups after start may bypass
/// while the client learns the cluster's slots.
const FIRST_HIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn pages_and_queries_are_cached_in_cluster_mode() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listing = app
        .insert("Cluster cottage", "1250.00", "Cluster City")
        .await;

    for path in crate::helpers::public_routes(listing.id) {
        app.until_hit(&path, FIRST_HIT).await;
    }

    let keys: Vec<String> = cluster
        .keys_per_master(&app.prefix)
        .into_values()
        .flatten()
        .collect();
    let names = app.state.cache.keys();
    assert!(keys.iter().any(|k| names.is_page(k)), "{keys:?}");
    assert!(keys.contains(&names.named(ALL_PROPERTIES)), "{keys:?}");
}

#[tokio::test]
async fn after_a_write_in_cluster_mode_the_new_data_is_served_and_cached_again() {
    // The invalidation replaces the insert's tokens and deletes all_properties: keys in
    // different slots, which one MULTI cannot do in a cluster.
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    app.insert("Before", "100.00", "Old Town").await;
    app.until_hit("/api/properties/", FIRST_HIT).await;

    app.insert("After", "200.00", "New Town").await;

    let res = app.get_anonymous("/api/properties/").await;
    assert_ne!(header(&res, "x-cache"), "HIT");
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["count"], 2, "the write is visible at once");
    app.until_hit("/api/properties/", FIRST_HIT).await;
    assert!(
        !app.state.cache.invalidation_pending(),
        "the invalidation reached the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_two_instances_on_a_cluster_never_see_a_price_older_than_the_last_acknowledged_one()
 {
    let cluster = shared_cluster();
    let a = spawn_app_on(cluster).await;
    let b = spawn_instance_with(&a, |_| {}).await;
    let p = a.insert("Race", "1000", "Raceville").await;

    let last = crate::consistency::race(&a, &[&a, &b], p.id, 300).await;

    crate::consistency::assert_everyone_agrees(&[&a, &b], p.id, last).await;
}

#[tokio::test]
async fn two_hundred_detail_pages_spread_over_every_master() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listings = app.insert_many(200).await;
    app.until_hit(&format!("/properties/{}/", listings[0].id), FIRST_HIT)
        .await;

    let client = client();
    for chunk in listings.chunks(20) {
        let statuses = join_all(chunk.iter().map(|l| {
            let url = app.url(&format!("/properties/{}/", l.id));
            let client = client.clone();
            async move { client.get(url).send().await.unwrap().status() }
        }))
        .await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }

    let names = app.state.cache.keys();
    let per_master = cluster.keys_per_master(&app.prefix);
    assert_eq!(per_master.len(), 3, "three masters");
    for (port, keys) in &per_master {
        let pages = keys.iter().filter(|k| names.is_page(k)).count();
        assert!(pages > 0, "master {port} holds no page: {per_master:?}");
    }
    let under_properties = names.page("/properties/");
    let pages: usize = per_master
        .values()
        .flatten()
        .filter(|k| k.starts_with(&under_properties))
        .count();
    assert!(pages >= 200, "{pages} detail pages cached");
}

#[tokio::test]
async fn cache_clear_empties_every_master_of_this_prefix_and_nothing_else() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listings = app.insert_many(30).await;
    for l in &listings {
        app.until_hit(&format!("/properties/{}/", l.id), FIRST_HIT)
            .await;
    }
    assert!(
        cluster
            .keys_per_master(&app.prefix)
            .values()
            .all(|keys| !keys.is_empty()),
        "every master holds some keys before"
    );
    let mut conn = cluster.client();
    let other_app = Keys::new(format!("{}_other", app.prefix));
    let foreign: Vec<String> = (0..30)
        .map(|i| other_app.named(&format!("keep:{i}")))
        .collect();
    for key in &foreign {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("EX")
            .arg(120)
            .query(&mut conn)
            .unwrap();
    }

    // What `cache clear` runs, in a process of its own: a fresh `Cache` from the settings.
    // (Not the binary itself: the shared target directory may hold another branch's.)
    let cache = property_listings::cache::Cache::new(
        property_listings::startup::cache_config(&app.settings, false),
        std::sync::Arc::new(property_listings::cache::metrics::Metrics::new()),
        |_| {},
    )
    .unwrap();

    let cleared = cache.clear().await;

    assert!(cleared.is_ok(), "{cleared:?}");
    let sync = app.state.cache.keys().sync();
    let left: Vec<String> = cluster
        .keys_per_master(&app.prefix)
        .into_values()
        .flatten()
        .filter(|key| !key.starts_with(sync))
        .collect();
    assert!(left.is_empty(), "left behind (leases aside): {left:?}");
    let kept: usize = redis::cmd("EXISTS").arg(&foreign).query(&mut conn).unwrap();
    assert_eq!(kept, foreign.len(), "other prefixes are kept");
    let _: () = redis::cmd("DEL").arg(&foreign).query(&mut conn).unwrap();
}

#[tokio::test]
async fn the_key_listing_shows_keys_from_every_master() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let listings = app.insert_many(30).await;
    for l in &listings {
        app.until_hit(&format!("/properties/{}/", l.id), FIRST_HIT)
            .await;
    }

    let json = app.get_json("/api/cache/keys").await;

    let listed: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    for (port, keys) in cluster.keys_per_master(&app.prefix) {
        let page = keys
            .iter()
            .find(|k| app.state.cache.keys().is_page(k))
            .unwrap();
        assert!(listed.contains(&page.as_str()), "{page} of {port} listed");
    }
    assert!(
        json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kind"] == "page")
            .all(|k| k["ttl_ms"].as_i64().is_some_and(|t| t > 0)
                && k["bytes"].as_u64().is_some_and(|b| b > 0)),
        "every page has its TTL and size (read per slot): {json}"
    );
}

#[tokio::test]
async fn metrics_sum_keyspace_hits_over_the_masters_and_list_every_node() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    app.until_hit("/properties/", FIRST_HIT).await;

    let before = cluster.keyspace_hits_of_masters();
    let json = app.get_json("/api/cache/metrics").await;
    let after = cluster.keyspace_hits_of_masters();

    assert_eq!(json["redis_mode"], "cluster");
    let hits = json["keyspace_hits"].as_u64().unwrap();
    assert!(
        before <= hits && hits <= after,
        "{before} <= {hits} <= {after}"
    );
    let nodes = json["redis_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{json}");
    let masters: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["role"] == "master").collect();
    assert_eq!(masters.len(), 3, "{json}");
    assert!(nodes.iter().all(|n| n["reachable"] == true), "{json}");
    let summed: u64 = masters
        .iter()
        .map(|n| n["keyspace_hits"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, hits);
    let mut listed: Vec<String> = nodes
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    let dashboard = app.get_anonymous("/cache/").await.text().await.unwrap();
    assert!(
        dashboard.contains("id=\"nodes-body\""),
        "the dashboard lists the nodes"
    );
}

#[tokio::test]
async fn with_one_redis_the_metrics_list_that_one_server() {
    let redis = PrivateRedis::start();
    let app = spawn_app_with(|s| {
        s.redis_url = redis.url();
        s.public_dashboard = true;
    })
    .await;
    app.until_hit("/properties/", FIRST_HIT).await;

    let json = app.get_json("/api/cache/metrics").await;

    assert_eq!(json["redis_mode"], "single");
    let nodes = json["redis_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{json}");
    assert_eq!(nodes[0]["address"], format!("127.0.0.1:{}", redis.port));
    assert_eq!(nodes[0]["role"], "master");
    assert_eq!(nodes[0]["reachable"], true);
    assert_eq!(nodes[0]["keyspace_hits"], json["keyspace_hits"]);
    assert!(json["keyspace_hits"].as_u64().unwrap() > 0, "{json}");
}

#[tokio::test]
async fn the_sign_in_throttle_is_shared_by_instances_in_cluster_mode() {
    let cluster = shared_cluster();
    let app = spawn_app_on(cluster).await;
    let other = spawn_instance_with(&app, |_| {}).await;
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    let page = client().get(app.url("/admin/login")).send().await.unwrap();
    let cookie = session_cookie_in(&page);
    let token = csrf_token_in(&page.text().await.unwrap());

    // 20 wrong guesses at once, half to each instance: with counters of their own each
    // would evaluate 5; sharing one counter, 5 are evaluated in all.
    let attempts = (0..20).map(|i| {
        let base = if i % 2 == 0 { &app } else { &other };
        let form = serde_urlencoded::to_string([
            ("username", ADMIN_USER),
            ("password", "not the password"),
            ("csrf_token", token.as_str()),
        ])
        .unwrap();
        let req = client()
            .post(base.url("/admin/login"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = join_all(attempts).await;

    let evaluated = statuses.iter().filter(|s| **s != 429).count();
    assert!(
        (1..=5).contains(&evaluated),
        "{evaluated} evaluated: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 429)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_cluster_that_does_not_answer_at_start_is_bypassed_and_used_once_it_is_up() {
    // Ports that accept connections and never answer: the slowest kind of down.
    let ports = PortReservation::new(6);
    let urls = ports.urls();
    let app = spawn_app_with(move |s| s.redis_cluster_urls = urls).await;

    let started = Instant::now();
    for _ in 0..5 {
        let res = app.get_anonymous("/properties/").await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "x-cache"), "BYPASS");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "no long waits");
    let health: serde_json::Value = app.get_anonymous("/healthz").await.json().await.unwrap();
    assert_eq!(health["cache"], "unavailable");
    assert_eq!(app.get_anonymous("/api/cache/metrics").await.status(), 503);

    let _cluster = PrivateCluster::start_on(ports);

    app.until_hit("/properties/", FIRST_HIT).await;
}

#[tokio::test]
async fn a_killed_master_gives_no_errors_and_caching_resumes_after_the_failover() {
    // A cluster of its own: the shared one must stay whole for the other tests.
    let cluster = PrivateCluster::start();
    let app = spawn_app_on(&cluster).await;
    let listings = app.insert_many(30).await;
    let paths: Vec<String> = listings
        .iter()
        .map(|l| format!("/properties/{}/", l.id))
        .collect();
    for path in &paths {
        app.until_hit(path, FIRST_HIT).await;
    }
    // The master of the generation token: every lookup needs it.
    let generation = app.state.cache.keys().generation().to_string();
    let victim = *cluster
        .keys_per_master(&app.prefix)
        .iter()
        .find(|(_, keys)| keys.contains(&generation))
        .expect("a master holds the generation")
        .0;
    // A listing whose token lives on that master too: its edit is acknowledged just
    // before the kill, so only a replica that had the new token (WAIT) keeps its old
    // page dead after the failover.
    let on_victim = cluster.keys_per_master(&app.prefix)[&victim].clone();
    let edited = listings
        .iter()
        .find(|l| {
            let token = app.state.cache.keys().token(&format!("listing:{}", l.id));
            on_victim.contains(&token)
        })
        .expect("a listing token on the generation's master")
        .clone();
    let edited_api = format!("/api/properties/{}/", edited.id);
    app.until_hit(&edited_api, FIRST_HIT).await;
    // Another instance holds the page in memory: the log and the leases live on the
    // victim too (one slot with the tokens).
    let other = spawn_instance_with(&app, |_| {}).await;
    other.until_hit(&edited_api, FIRST_HIT).await;
    other.until_hit(&edited_api, FIRST_HIT).await;
    app.state
        .properties
        .update(
            edited.id,
            crate::helpers::property_data(&edited.title, "4321", &edited.location, ""),
        )
        .await
        .unwrap();

    cluster.kill_node(victim);

    // Until a replica has taken over (node timeout 1 s, then the election), requests for
    // the lost slots bypass the cache; none fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all_hit = false;
    let mut seen = Vec::new();
    while !all_hit {
        assert!(
            Instant::now() < deadline,
            "caching did not resume: {:?}",
            &seen[seen.len().saturating_sub(3)..]
        );
        let app = &app;
        let statuses = join_all(paths.iter().map(|p| async move {
            let res = app.get_anonymous(p).await;
            (res.status().as_u16(), header(&res, "x-cache").to_string())
        }))
        .await;
        assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
        all_hit = statuses.iter().all(|(_, cache)| cache == "HIT");
        seen.push(statuses);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alive: Vec<u16> = cluster
        .ports()
        .iter()
        .copied()
        .filter(|p| *p != victim)
        .collect();
    cluster.wait_until_ok(&alive);
    let json = app.get_json("/api/cache/metrics").await;
    let down: Vec<&serde_json::Value> = json["redis_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reachable"] == false)
        .collect();
    assert_eq!(down.len(), 1, "{json}");
    assert_eq!(down[0]["address"], format!("127.0.0.1:{victim}"));
    assert!(
        json["app"]["redis_errors"].as_u64().unwrap() > 0,
        "the app noticed the loss: {json}"
    );
    app.until_hit(&edited_api, FIRST_HIT).await;
    assert_eq!(app.get_json(&edited_api).await["price"], "4321.00");
    assert_eq!(other.get_json(&edited_api).await["price"], "4321.00");
    let html = app
        .get_anonymous(&format!("/properties/{}/", edited.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("4,321.00"),
        "the edit acknowledged before the kill"
    );
    // A write after the failover goes through the new master's log to every instance.
    app.state
        .properties
        .update(
            edited.id,
            crate::helpers::property_data(&edited.title, "4322", &edited.location, ""),
        )
        .await
        .unwrap();
    assert_eq!(other.get_json(&edited_api).await["price"], "4322.00");
    assert_eq!(app.get_json(&edited_api).await["price"], "4322.00");
}

#[tokio::test]
async fn a_write_whose_tokens_no_replica_confirms_is_not_trusted_to_have_invalidated() {
    // A cluster of its own: one of its replicas is put to sleep.
    let cluster = PrivateCluster::start();
    let app = spawn_app_on(&cluster).await;
    let p = app.insert("Quiet", "100", "A").await;
    let page = format!("/api/properties/{}/", p.id);
    app.until_hit(&page, FIRST_HIT).await;
    let token = app.state.cache.keys().token(&format!("listing:{}", p.id));
    let replica = cluster.replica_of_master_of(&token);

    // The replica of the token's master stops answering for longer than a command may
    // take (REDIS_TIMEOUT_MS): it cannot confirm the new token.
    let thaw = cluster.freeze_node(replica, Duration::from_millis(1500));
    let errors = app.state.cache.metrics().snapshot().redis_errors;
    app.state
        .properties
        .update(p.id, crate::helpers::property_data("Quiet", "250", "A", ""))
        .await
        .unwrap();

    // The replacement counts as failed (a Redis error), so the invalidation is pending
    // and the next lookup replaces the generation (confirmed by another master's
    // replica) before using Redis again: the page shows the write.
    assert!(
        app.state.cache.metrics().snapshot().redis_errors > errors,
        "an unconfirmed replacement is a failure"
    );
    let res = app.get_anonymous(&page).await;
    assert_ne!(header(&res, "x-cache"), "HIT");
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["price"],
        "250.00"
    );
    thaw.join().unwrap();
    app.until_hit(&page, FIRST_HIT).await;
    assert_eq!(app.get_json(&page).await["price"], "250.00");
}
