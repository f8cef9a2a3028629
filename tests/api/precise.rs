//! Precise invalidation: a write drops exactly the cached pages that could show it, and
//! every page that could is dropped. The race tests in `consistency.rs` check the same
//! rule under concurrency.

use property_listings::models::property::Property;

use crate::helpers::{TestApp, header, property_data, spawn_app, spawn_app_with};

/// The listing ids a list page (HTML or JSON) shows, in order.
async fn ids_on(app: &TestApp, api_path: &str) -> Vec<i64> {
    app.get_json(api_path).await["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect()
}

async fn set_price(app: &TestApp, p: &Property, price: &str) {
    app.state
        .properties
        .update(p.id, property_data(&p.title, price, &p.location, ""))
        .await
        .expect("update")
        .expect("the listing exists");
}

/// 45 listings: three newest-first pages (20, 20, 5), prices 1000…1044 in id order.
async fn three_pages(app: &TestApp) -> Vec<Property> {
    app.insert_many(45).await
}

#[tokio::test]
async fn an_edit_of_one_listing_leaves_other_listings_detail_pages_cached() {
    let app = spawn_app().await;
    let rows = three_pages(&app).await;
    let (edited, others) = (&rows[10], [&rows[0], &rows[30], &rows[44]]);
    let mut pages = Vec::new();
    for p in [edited].into_iter().chain(others) {
        pages.push(format!("/properties/{}/", p.id));
        pages.push(format!("/api/properties/{}/", p.id));
    }
    app.warm(&pages).await;

    set_price(&app, edited, "7.00").await;

    for p in others {
        for path in [
            format!("/properties/{}/", p.id),
            format!("/api/properties/{}/", p.id),
        ] {
            assert_eq!(app.x_cache(&path).await, "HIT", "{path}");
        }
    }
    let path = format!("/api/properties/{}/", edited.id);
    let res = app.get_anonymous(&path).await;
    assert_eq!(header(&res, "x-cache"), "MISS");
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["price"],
        "7.00"
    );
}

#[tokio::test]
async fn an_edit_drops_only_the_newest_first_page_that_shows_the_listing() {
    let app = spawn_app().await;
    let rows = three_pages(&app).await;
    // Newest first is highest id first: rows[44..25] on page 1, rows[24..5] on page 2.
    let on_page_two = &rows[20];
    let pages = ["/properties/", "/properties/?page=2", "/properties/?page=3"];
    let api_pages = [
        "/api/properties/",
        "/api/properties/?page=2",
        "/api/properties/?page=3",
    ];
    app.warm(
        &pages
            .iter()
            .chain(&api_pages)
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(ids_on(&app, api_pages[1]).await.contains(&on_page_two.id));

    set_price(&app, on_page_two, "5.00").await;

    for (html, api, expected) in [
        (pages[0], api_pages[0], "HIT"),
        (pages[1], api_pages[1], "MISS"),
        (pages[2], api_pages[2], "HIT"),
    ] {
        assert_eq!(app.x_cache(html).await, expected, "{html}");
        assert_eq!(app.x_cache(api).await, expected, "{api}");
    }
    let page_two = app.get_json(api_pages[1]).await;
    let shown = page_two["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == on_page_two.id)
        .expect("still on page 2")
        .clone();
    assert_eq!(shown["price"], "5.00");
}

#[tokio::test]
async fn a_price_edit_that_moves_a_listing_across_price_sorted_pages_leaves_no_old_order() {
    let app = spawn_app().await;
    let rows = three_pages(&app).await;
    let cheapest = &rows[0]; // 1000.00: first of price_asc page 1, last of price_desc page 3
    let paths = [
        "/api/properties/?sort=price_asc",
        "/api/properties/?sort=price_asc&page=3",
        "/api/properties/?sort=price_desc",
        "/api/properties/?sort=price_desc&page=3",
        "/properties/?sort=price_asc",
        "/properties/?sort=price_desc",
    ];
    app.warm(&paths.map(String::from)).await;
    assert_eq!(ids_on(&app, paths[0]).await[0], cheapest.id);

    set_price(&app, cheapest, "99999.00").await;

    for path in paths {
        assert_eq!(app.x_cache(path).await, "MISS", "{path}");
    }
    assert!(!ids_on(&app, paths[0]).await.contains(&cheapest.id));
    assert_eq!(ids_on(&app, paths[1]).await.last(), Some(&cheapest.id));
    assert_eq!(ids_on(&app, paths[2]).await[0], cheapest.id);
    assert!(!ids_on(&app, paths[3]).await.contains(&cheapest.id));
}

#[tokio::test]
async fn an_edit_moves_a_listing_into_and_out_of_filtered_searches() {
    let app = spawn_app().await;
    let rows = three_pages(&app).await;
    let moved = &rows[3];
    let into = "/api/properties/?q=harbour";
    let out_of = "/api/properties/?max_price=1010";
    app.warm(&[into.to_string(), out_of.to_string()]).await;
    assert!(ids_on(&app, into).await.is_empty());
    assert!(ids_on(&app, out_of).await.contains(&moved.id));

    app.state
        .properties
        .update(
            moved.id,
            property_data("Harbour view", "5000", &moved.location, ""),
        )
        .await
        .unwrap();

    assert_eq!(ids_on(&app, into).await, [moved.id]);
    assert!(!ids_on(&app, out_of).await.contains(&moved.id));
}

#[tokio::test]
async fn an_insert_shifts_every_newest_first_page() {
    let app = spawn_app().await;
    let rows = three_pages(&app).await;
    let pages = [
        "/api/properties/",
        "/api/properties/?page=2",
        "/api/properties/?page=3",
    ];
    app.warm(&pages.map(String::from)).await;
    let last_before = ids_on(&app, pages[2]).await;
    assert_eq!(last_before.len(), 5);

    let new = app.insert("Brand new", "1", "Here").await;

    for path in pages {
        assert_eq!(app.x_cache(path).await, "MISS", "{path}");
    }
    assert_eq!(ids_on(&app, pages[0]).await[0], new.id);
    assert_eq!(
        ids_on(&app, pages[1]).await[0],
        rows[25].id,
        "shifted by one"
    );
    assert_eq!(ids_on(&app, pages[2]).await.len(), 6);
}

#[tokio::test]
async fn a_delete_removes_the_listing_from_every_page() {
    let app = spawn_app().await;
    let rows = three_pages(&app).await;
    let gone = &rows[44]; // newest: page 1, and the most expensive
    let detail = format!("/properties/{}/", gone.id);
    let api_detail = format!("/api/properties/{}/", gone.id);
    let lists = [
        "/api/properties/",
        "/api/properties/?sort=price_desc",
        "/api/properties/?location=Testville",
    ];
    let mut warm: Vec<String> = lists.map(String::from).into();
    warm.extend(["/properties/".into(), detail.clone(), api_detail.clone()]);
    app.warm(&warm).await;

    app.state
        .properties
        .delete(gone.id)
        .await
        .unwrap()
        .expect("deleted");

    assert_eq!(app.get_anonymous(&detail).await.status(), 404);
    assert_eq!(app.get_anonymous(&api_detail).await.status(), 404);
    for path in lists {
        assert!(!ids_on(&app, path).await.contains(&gone.id), "{path}");
    }
    let html = app
        .get_anonymous("/properties/")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains(&gone.title), "the HTML list");
}

/// What a racing reader checks on one page, given the last acknowledged price of the
/// edited listing (cents): `Err` describes a stale read.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// The edited listing's own page (JSON): its price.
    Detail,
    /// A list page that shows the edited listing: its price there.
    Shows,
    /// Price-descending page 1: once the acknowledged price beats every other listing,
    /// the edited listing must be first.
    TopOfPriceDesc,
    /// `min_price` above every other listing: once the acknowledged price reaches it,
    /// the edited listing must be listed.
    EntersFilter(u64),
    /// A page the writes do not touch: nothing can be stale, but it should stay cached.
    Untouched,
}

fn price_cents(v: &serde_json::Value) -> u64 {
    crate::helpers::cents(v.as_str().expect("a price string")).expect("cents")
}

fn check(
    check: Check,
    body: &serde_json::Value,
    id: i64,
    floor: u64,
    top_other: u64,
) -> Result<(), String> {
    let listed = |body: &serde_json::Value| {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .position(|r| r["id"] == id)
            .map(|i| (i, price_cents(&body["results"][i]["price"])))
    };
    let (at, seen) = match check {
        Check::Untouched => return Ok(()),
        Check::Detail => (Some(0), price_cents(&body["price"])),
        Check::Shows => match listed(body) {
            Some((i, p)) => (Some(i), p),
            None => return Err("the edited listing is missing".into()),
        },
        Check::TopOfPriceDesc => match listed(body) {
            Some((i, p)) => (Some(i), p),
            None if floor > top_other => return Err("not on page 1 of price_desc".into()),
            None => return Ok(()),
        },
        Check::EntersFilter(min) => match listed(body) {
            Some((i, p)) => (Some(i), p),
            None if floor >= min => return Err(format!("missing from min_price {min}")),
            None => return Ok(()),
        },
    };
    if seen < floor {
        return Err(format!("price {seen} after {floor} was acknowledged"));
    }
    if matches!(check, Check::TopOfPriceDesc) && floor > top_other && at != Some(0) {
        return Err(format!("at position {at:?} of price_desc"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_300_edits_on_two_instances_see_no_stale_page_and_other_pages_stay_cached() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let a = spawn_app().await;
    let b = crate::helpers::spawn_instance_with(&a, |_| {}).await;
    let rows = three_pages(&a).await; // prices 1000.00 … 1044.00
    let edited = rows[20].clone(); // newest-first page 2, price 1020.00
    let other = rows[40].clone(); // page 1
    let top_other = 104_400;
    let min = 110_000;
    let pages: Vec<(String, Check)> = vec![
        (format!("/api/properties/{}/", edited.id), Check::Detail),
        ("/api/properties/?page=2".into(), Check::Shows),
        (
            "/api/properties/?sort=price_desc".into(),
            Check::TopOfPriceDesc,
        ),
        (
            format!("/api/properties/?min_price={}", min / 100),
            Check::EntersFilter(min),
        ),
        (format!("/api/properties/{}/", other.id), Check::Untouched),
        ("/api/properties/".into(), Check::Untouched),
        ("/api/properties/?page=3".into(), Check::Untouched),
    ];
    let acknowledged = Arc::new(AtomicU64::new(102_000));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|n| {
            let base = [&a.address, &b.address][n % 2].clone();
            let (pages, acknowledged, stop) = (pages.clone(), acknowledged.clone(), stop.clone());
            let id = edited.id;
            tokio::spawn(async move {
                let client = crate::helpers::client();
                let (mut reads, mut stale, mut untouched) = (0u64, Vec::new(), (0u64, 0u64));
                let mut turn = n;
                while !stop.load(Ordering::SeqCst) {
                    let (path, kind) = &pages[turn % pages.len()];
                    turn += 1;
                    let floor = acknowledged.load(Ordering::SeqCst);
                    let res = client
                        .get(format!("{base}{path}"))
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(res.status(), 200, "{path}");
                    let x_cache = header(&res, "x-cache").to_string();
                    let body: serde_json::Value = res.json().await.expect("json");
                    reads += 1;
                    if let Check::Untouched = kind {
                        untouched.0 += 1;
                        untouched.1 += u64::from(x_cache == "HIT");
                    }
                    if let Err(e) = check(*kind, &body, id, floor, top_other) {
                        stale.push(format!("{base}{path} ({x_cache}): {e}"));
                    }
                }
                (reads, stale, untouched)
            })
        })
        .collect();

    for i in 1..=300u64 {
        let dollars = 1020 + i;
        a.state
            .properties
            .update(
                edited.id,
                property_data(&edited.title, &dollars.to_string(), &edited.location, ""),
            )
            .await
            .expect("update")
            .expect("the listing exists");
        acknowledged.store(dollars * 100, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);

    let (mut reads, mut stale, mut untouched) = (0, Vec::new(), (0, 0));
    for reader in readers {
        let (r, s, u) = reader.await.expect("reader");
        reads += r;
        stale.extend(s);
        untouched = (untouched.0 + u.0, untouched.1 + u.1);
    }
    println!(
        "{reads} reads; untouched pages: {} of {} HIT",
        untouched.1, untouched.0
    );
    assert!(
        stale.is_empty(),
        "{} stale reads, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    assert!(reads >= 150, "the readers raced the writer ({reads} reads)");
    // Each untouched page misses once per instance (its first read), and once more
    // after a Redis hiccup under this load (a pending invalidation replaces the
    // generation); no edit replaces any of their tokens, so edits alone never make them
    // miss.
    assert!(
        (untouched.0 - untouched.1) * 20 <= untouched.0,
        "pages no edit touches stay cached: {} of {} were not HITs",
        untouched.0 - untouched.1,
        untouched.0
    );
}

#[tokio::test]
async fn the_metrics_list_each_writes_tokens_and_how_many_stored_pages_it_made_unreachable() {
    let app = spawn_app_with(|s| s.public_dashboard = true).await;
    let rows = three_pages(&app).await;
    let edited = &rows[10];
    app.warm(&[
        format!("/properties/{}/", edited.id),
        format!("/api/properties/{}/", edited.id),
    ])
    .await;

    set_price(&app, edited, "7.00").await;

    let metrics = app.get_json("/api/cache/metrics").await;
    let last = &metrics["app"]["recent_invalidations"][0];
    let tokens = last["tokens"].as_array().expect("tokens");
    let own = tokens
        .iter()
        .find(|t| t["token"] == format!("listing:{}", edited.id))
        .unwrap_or_else(|| panic!("the listing's token in {last}"));
    assert_eq!(own["entries"], 2, "its detail page and its API twin");
    assert!(tokens.iter().any(|t| t["token"] == "rows"), "{last}");
    assert!(last["at"].as_str().is_some_and(|at| at.ends_with('Z')));
}
