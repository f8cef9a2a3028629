//! The browser end-to-end test: headless Chromium (Debian's `chromium`), driven through
//! `chromedriver` with fantoccini, walks the site as a visitor and a listing manager
//! would — browse, paginate, filter, open a listing, sign in, create a listing, watch
//! the cache dashboard move, clear the cache, add two photos to a listing through its
//! form and see them on its card and page — and saves a screenshot of every step in
//! `target/e2e/`. One browser session for the whole flow (starting Chromium is slow).
//!
//! Any failing step fails the test. Without chromedriver the test fails when `CI` is set
//! and only prints a notice otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, TempDir, TestApp, client, free_port, spawn_app};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);
/// Longest wait for anything the page does by itself (the dashboard polls every 2–3 s).
const WAIT: Duration = Duration::from_secs(8);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&dir).expect("target/e2e can be created");
    dir
}

/// `chromedriver` on a free port, in its own process group so that dropping it also
/// ends the Chromium it started; the browser profile is a fresh directory, removed (as a
/// field, after `drop` has ended the browser).
struct ChromeDriver {
    child: Child,
    port: u16,
    profile: TempDir,
}

impl ChromeDriver {
    async fn start(binary: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let log = std::fs::File::create(screenshot_dir().join("chromedriver.log"))
            .expect("chromedriver log file");
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let profile = TempDir::new("pl-e2e-");
        let driver = Self {
            child,
            port,
            profile,
        };
        driver.wait_until_ready().await;
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = format!("{}/status", self.url());
        loop {
            if let Ok(res) = client().get(&status).send().await
                && let Ok(body) = res.json::<serde_json::Value>().await
                && body["value"]["ready"] == true
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready on port {} (see target/e2e/chromedriver.log)",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn browser(&self, chromium: &Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--lang=en-US",
            &format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            &format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            // The console, for Content-Security-Policy violations (`assert_no_csp_violations`).
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "starting headless {} through chromedriver: {e} (see target/e2e/chromedriver.log)",
                    chromium.display()
                )
            })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole process group (its id is chromedriver's pid, see `process_group(0)`):
        // chromedriver and the browser processes it started. Called directly, not through
        // kill(1), where a mis-parsed process-group argument can end up as `kill(-1, …)`:
        // every process of the user. `pgid > 1` rules that out here.
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id())
            && pgid > 1
        {
            // SAFETY: kill(2) with a negative pid signals exactly that process group,
            // which this test created; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_visitor_and_a_listing_manager_use_the_site_in_a_real_browser() {
    let chromedriver = binary("CHROMEDRIVER", CHROMEDRIVER);
    let chromium = binary("CHROMIUM", CHROMIUM);
    for (what, path, package) in [
        ("chromedriver", &chromedriver, "chromium-driver"),
        ("chromium", &chromium, "chromium"),
    ] {
        if !path.exists() {
            let message = format!(
                "{what} not found at {} (install the Debian package `{package}`, as .ci/run does, \
                 or set {})",
                path.display(),
                what.to_uppercase()
            );
            assert!(
                !in_ci(),
                "browser end-to-end test cannot run in CI: {message}"
            );
            eprintln!("SKIPPED the browser end-to-end test: {message}");
            return;
        }
    }

    let app = Arc::new(spawn_app().await);
    let driver = ChromeDriver::start(&chromedriver).await;
    let browser = driver.browser(&chromium).await;

    // The flow runs in its own task so that a failed step still closes the browser
    // (and leaves a screenshot of where it failed) before the test fails.
    let flow = tokio::spawn(flow(app.clone(), browser.clone()));
    let outcome = flow.await;
    if outcome.is_err() {
        let _ = save_screenshot(&browser, "failure").await;
    }
    let _ = browser.close().await;
    drop(driver);
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the browser flow did not finish: {e}"),
        }
    }
}

/// The walk, one step after another, in one browser session.
async fn flow(app: Arc<TestApp>, c: Client) {
    let (app, c) = (&*app, &c);
    remove_old_screenshots();
    add_listings(app).await;
    c.set_window_size(DESKTOP.0, DESKTOP.1)
        .await
        .expect("window size");

    browse_the_list(app, c).await;
    go_to_the_next_page(c).await;
    filter_with_the_search_form(app, c).await;
    open_a_listing_from_its_card(app, c).await;
    see_the_dashboard_ask_a_visitor_to_sign_in(app, c).await;
    sign_in_through_the_form(app, c).await;
    create_a_listing(c).await;
    open_its_delete_confirmation_and_go_back(c).await;
    see_it_first_on_the_list(app, c).await;
    watch_the_dashboard_numbers_move(app, c).await;
    clear_the_cache_from_the_dashboard(app, c).await;
    see_it_work(c).await;
    edit_a_listing_and_watch_which_pages_miss(c).await;
    add_two_photos_through_the_edit_form(app, c).await;
    see_every_page_fit_a_phone(app, c).await;
    // No page of the walk broke the site's own Content-Security-Policy.
    assert_no_csp_violations(c).await;
}

fn remove_old_screenshots() {
    let dir = screenshot_dir();
    for old in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if old.path().extension().is_some_and(|e| e == "png") {
            let _ = std::fs::remove_file(old.path());
        }
    }
}

/// Three listings the filter step can find, then realistic demo listings.
async fn add_listings(app: &TestApp) {
    for (title, price, location) in [
        ("Garden cottage near the river", "285000", "Asheville, NC"),
        ("Garden-level flat with a patio", "195000", "Asheville, NC"),
        ("Garden estate with a pool", "950000", "Asheville, NC"),
    ] {
        app.insert(title, price, location).await;
    }
    app.state
        .properties
        .insert_many(property_listings::seed::demo_listings(25))
        .await
        .expect("demo listings");
}

/// The list: 20 cards on page 1 of 2, dated by the browser; Tab from the search form
/// reaches the first card.
async fn browse_the_list(app: &TestApp, c: &Client) {
    c.goto(&app.url("/properties/"))
        .await
        .expect("open the list");
    assert_eq!(text(c, ".results-heading").await, "28 listings");
    assert_eq!(count(c, ".property-card").await, 20);
    // The page gives dates; the browser writes how long ago, with the date as its title.
    let listed = wait_for_text(c, ".property-card time[data-ago]", |t| {
        t == "just now" || t.ends_with(" ago")
    })
    .await;
    let date = find(c, ".property-card time[data-ago]")
        .await
        .attr("title")
        .await
        .expect("a title attribute");
    assert!(date.is_some_and(|d| !d.is_empty()), "{listed}");
    shot(c, "01-list").await;

    // Keyboard: Tab from the search form's last control lands on the first card.
    find(c, ".search-form .form-actions a")
        .await
        .send_keys(&Key::Tab)
        .await
        .expect("press Tab");
    let focused = c
        .execute("return document.activeElement.className;", vec![])
        .await
        .expect("the focused element");
    assert_eq!(focused, "card-link", "Tab reaches the first card");
    shot(c, "02-list-keyboard-focus").await;
}

/// Page 2 of the list, marked as the current page.
async fn go_to_the_next_page(c: &Client) {
    click(c, ".pagination a[rel=next]").await;
    wait_for_url(c, |u| u.contains("page=2")).await;
    assert_eq!(count(c, ".property-card").await, 8);
    assert!(
        text(c, ".pagination [aria-current=page]")
            .await
            .ends_with('2'),
        "the current page is marked"
    );
    shot(c, "03-list-page-2").await;
}

/// Filtering with the form; every value is still in the form afterwards.
async fn filter_with_the_search_form(app: &TestApp, c: &Client) {
    c.goto(&app.url("/properties/"))
        .await
        .expect("open the list");
    fill(c, "#f-q", "garden").await;
    fill(c, "#f-location", "Asheville").await;
    fill(c, "#f-min-price", "150000").await;
    fill(c, "#f-max-price", "400000").await;
    find(c, "#f-sort")
        .await
        .select_by_value("price_asc")
        .await
        .expect("choose a sort order");
    click(c, ".search-form button[type=submit]").await;
    wait_for_url(c, |u| u.contains("q=garden")).await;
    assert_eq!(text(c, ".results-heading").await, "2 listings");
    assert_eq!(
        texts(c, ".property-card .card-title").await,
        [
            "Garden-level flat with a patio",
            "Garden cottage near the river"
        ],
        "cheapest first"
    );
    for (field, expected) in [
        ("#f-q", "garden"),
        ("#f-location", "Asheville"),
        ("#f-min-price", "150000"),
        ("#f-max-price", "400000"),
        ("#f-sort", "price_asc"),
    ] {
        assert_eq!(value(c, field).await, expected, "{field} keeps its value");
    }
    shot(c, "04-list-filtered").await;
}

/// A detail page, opened from its card; and the page of a listing that does not exist.
async fn open_a_listing_from_its_card(app: &TestApp, c: &Client) {
    click(c, ".property-card .card-link").await;
    wait_for_url(c, |u| u.ends_with('/') && !u.contains("?")).await;
    assert_eq!(
        text(c, "#property-title").await,
        "Garden-level flat with a patio"
    );
    assert_eq!(text(c, ".price-large").await, "$195,000.00");
    wait_for_text(c, ".facts [data-ago]", |t| {
        (t.starts_with('(') && t.ends_with(" ago)")) || t == "(just now)"
    })
    .await;
    shot(c, "05-detail").await;
    c.goto(&app.url("/properties/999999/"))
        .await
        .expect("open a missing listing");
    assert_eq!(text(c, "#error-title").await, "Page not found");
    shot(c, "06-not-found").await;
}

/// The dashboard before signing in: the counters, and a request to sign in for the
/// details (Redis servers, instances, last writes, keys).
async fn see_the_dashboard_ask_a_visitor_to_sign_in(app: &TestApp, c: &Client) {
    c.goto(&app.url("/cache/"))
        .await
        .expect("open the dashboard");
    wait_for_number(c, "#page-hits", |_| true).await;
    for details in [
        "#nodes-body",
        "#instances-body",
        "#writes-body",
        "#keys-body",
    ] {
        assert!(
            text(c, details)
                .await
                .starts_with("Sign in as an admin to see"),
            "{details}"
        );
    }
    shot(c, "06b-dashboard-signed-out").await;
}

/// Signing in through the form, sent to it from the admin area.
async fn sign_in_through_the_form(app: &TestApp, c: &Client) {
    app.create_admin(ADMIN_USER, ADMIN_PASSWORD);
    c.goto(&app.url("/admin/"))
        .await
        .expect("open the admin area");
    wait_for_url(c, |u| u.contains("/admin/login")).await;
    fill(c, "#username", ADMIN_USER).await;
    fill(c, "#password", ADMIN_PASSWORD).await;
    shot(c, "07-sign-in").await;
    click(c, ".auth-card button[type=submit]").await;
    wait_for_url(c, |u| u.ends_with("/admin/")).await;
    assert!(text(c, ".admin-bar-user").await.contains(ADMIN_USER));
    shot(c, "08-admin-list").await;
}

/// Creating a listing: first with mistakes (422, values kept), then properly.
async fn create_a_listing(c: &Client) {
    click(c, ".results-header a.button").await;
    wait_for_url(c, |u| u.ends_with("/admin/properties/new")).await;
    fill(c, "#title", "Sunlit loft above the market").await;
    fill(c, "#price", "12.345").await;
    click(c, ".form-card button[type=submit]").await;
    wait_for(c, "#price-error").await;
    assert_eq!(value(c, "#title").await, "Sunlit loft above the market");
    assert!(!text(c, "#location-error").await.is_empty());
    shot(c, "09-new-listing-errors").await;
    fill(c, "#price", "415000").await;
    fill(c, "#location", "Asheville, NC").await;
    fill(
        c,
        "#description",
        "Two bedrooms under exposed beams, big windows over the square and a roof terrace.",
    )
    .await;
    shot(c, "10-new-listing-form").await;
    click(c, ".form-card button[type=submit]").await;
    wait_for_url(c, |u| u.ends_with("/admin/")).await;
    assert!(
        text(c, "#flash")
            .await
            .contains("Sunlit loft above the market")
    );
    shot(c, "11-listing-created").await;
}

/// The new listing's delete confirmation, left without deleting.
async fn open_its_delete_confirmation_and_go_back(c: &Client) {
    click(c, "a[aria-label='Delete Sunlit loft above the market']").await;
    wait_for_url(c, |u| u.ends_with("/delete")).await;
    assert_eq!(text(c, "#delete-heading").await, "Delete this listing?");
    shot(c, "12-delete-confirmation").await;
    click(c, ".form-card a.button-secondary").await;
    wait_for_url(c, |u| u.ends_with("/admin/")).await;
}

/// The new listing is first on the public list, for the browser and for an anonymous
/// visitor served by the page cache.
async fn see_it_first_on_the_list(app: &TestApp, c: &Client) {
    c.goto(&app.url("/properties/"))
        .await
        .expect("open the list");
    assert_eq!(
        texts(c, ".property-card .card-title").await[0],
        "Sunlit loft above the market"
    );
    shot(c, "13-list-with-new-listing").await;
    let public = app
        .get_anonymous("/properties/")
        .await
        .text()
        .await
        .unwrap();
    assert!(public.contains("Sunlit loft above the market"));
}

/// The dashboard's numbers move while another client loads pages, the instances show
/// this one's lease, and the key list shows the list page's entry with its TTL.
async fn watch_the_dashboard_numbers_move(app: &TestApp, c: &Client) {
    c.goto(&app.url("/cache/"))
        .await
        .expect("open the dashboard");
    let before = wait_for_number(c, "#page-hits", |_| true).await;
    let visitor = app.new_visitor();
    for _ in 0..5 {
        let res = visitor.get("/properties/").await;
        assert_eq!(res.status(), 200);
    }
    let after = wait_for_number(c, "#page-hits", |n| n >= before + 4).await;
    assert!(
        after >= before + 4,
        "page hits went from {before} to {after}"
    );
    assert_ne!(text(c, "#ratio-page").await, "—");
    assert_ne!(text(c, "#db-loads").await, "—");
    wait_for(c, "#instances-body tr[data-instance]").await;
    let page_row = list_page_row(app);
    wait_for(c, &page_row).await;
    let ttl_ms: i64 = find(c, &format!("{page_row} td[data-ttl-ms]"))
        .await
        .attr("data-ttl-ms")
        .await
        .expect("a TTL attribute")
        .and_then(|v| v.parse().ok())
        .expect("the page entry has a TTL");
    assert!(ttl_ms > 0);
    shot(c, "14-dashboard").await;
}

/// Clearing the cache from the dashboard empties it and its key list.
async fn clear_the_cache_from_the_dashboard(app: &TestApp, c: &Client) {
    let page_row = list_page_row(app);
    assert!(!app.page_keys().is_empty());
    click(c, "#clear-cache").await;
    wait_for(c, "#flash").await;
    assert!(text(c, "#flash").await.starts_with("Cache cleared"));
    assert!(app.page_keys().is_empty(), "{:?}", app.keys());
    wait_for_keys_table(c).await;
    assert_eq!(count(c, &page_row).await, 0, "the key list is empty again");
    shot(c, "15-cache-cleared").await;
}

/// "See it work": a MISS, then HITs, each with its Server-Timing.
async fn see_it_work(c: &Client) {
    click(c, "#demo-run").await;
    let rows = wait_for_rows(c, "#demo-results tr", 5).await;
    assert_eq!(rows[0][2], "MISS", "{rows:?}");
    for row in &rows[1..] {
        assert_eq!(row[2], "HIT", "{rows:?}");
    }
    for row in &rows {
        assert!(
            row[4].contains("total;dur="),
            "Server-Timing shown: {rows:?}"
        );
    }
    shot(c, "16-see-it-work").await;
}

/// "Edit a listing, watch which pages miss": after the edit, the pages that show the
/// listing miss and the others are still cached; "Last writes" lists that edit with the
/// listing's own token.
async fn edit_a_listing_and_watch_which_pages_miss(c: &Client) {
    click(c, "#demo-edit").await;
    let status = wait_for_text(c, "#demo-status", |t| {
        t.starts_with("Saved listing") && t.contains("Done")
    })
    .await;
    let rows = wait_for_rows(c, "#edit-demo-results tr", 5).await;
    for row in &rows {
        assert_eq!(row[2], "HIT", "cached before the edit: {rows:?}");
        let expected = if row[1] == "yes" { "MISS" } else { "HIT" };
        assert_eq!(row[3], expected, "after the edit: {rows:?}");
    }
    assert!(rows.iter().any(|r| r[1] == "no"), "{rows:?}");
    shot(c, "17-edit-and-watch-which-pages-miss").await;

    // …and "Last writes" lists that edit with the listing's own token.
    let id: String = status
        .trim_start_matches("Saved listing #")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    wait_for_text(c, "#writes-body tr:first-child", |t| {
        t.contains(&format!("listing:{id} "))
    })
    .await;
    shot(c, "17b-last-writes").await;
}

/// Two photos (a PNG and a JPEG, drawn by `seed`) chosen in the edit form's file field
/// and saved: the listing's card on the list shows the cover's card size, and its
/// detail page shows both, each loaded by the browser from `/media/`.
async fn add_two_photos_through_the_edit_form(app: &TestApp, c: &Client) {
    let dir = crate::helpers::TempDir::new("pl_e2e_photos_");
    let png = dir.path().join("front.png");
    std::fs::write(&png, property_listings::seed::demo_photo(2)).expect("png written");
    let jpeg = dir.path().join("garden.jpg");
    image::load_from_memory(&property_listings::seed::demo_photo(5))
        .expect("demo photo")
        .into_rgb8()
        .save_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("jpeg written");
    c.goto(&app.url("/admin/"))
        .await
        .expect("open the admin list");
    click(c, "a[aria-label='Edit Sunlit loft above the market']").await;
    wait_for_url(c, |u| u.ends_with("/edit")).await;
    find(c, "#photos")
        .await
        .send_keys(&format!("{}\n{}", png.display(), jpeg.display()))
        .await
        .expect("files chosen");
    shot(c, "17c-edit-form-with-two-photos").await;
    click(c, ".form-card button[type=submit]").await;
    wait_for_url(c, |u| u.ends_with("/admin/")).await;

    c.goto(&app.url("/properties/"))
        .await
        .expect("open the list");
    let card = "li.property-card:first-child";
    assert_eq!(
        text(c, &format!("{card} .card-title")).await,
        "Sunlit loft above the market"
    );
    let cover = find(c, &format!("{card} img.card-photo")).await;
    let src = cover.attr("src").await.expect("src").expect("a src");
    assert!(
        src.starts_with("/media/") && src.ends_with("-480.jpg"),
        "{src}"
    );
    wait_for_images_loaded(c, &format!("{card} img.card-photo"), 1).await;
    shot(c, "17d-list-with-photos").await;

    click(c, &format!("{card} .card-link")).await;
    wait_for(c, "#property-title").await;
    assert_eq!(count(c, ".gallery img").await, 2);
    wait_for_images_loaded(c, ".gallery img", 2).await;
    shot(c, "17e-detail-with-photos").await;
}

/// Waits until `n` images match `css` and the browser has decoded each (a
/// `naturalWidth` above 0: the bytes arrived and are a picture). Lazy ones are scrolled
/// into view first.
async fn wait_for_images_loaded(c: &Client, css: &str, n: usize) {
    let script = "const imgs = [...document.querySelectorAll(arguments[0])]; \
        imgs.forEach(i => i.scrollIntoView()); \
        return imgs.filter(i => i.complete && i.naturalWidth > 0).length;";
    let started = Instant::now();
    loop {
        let loaded = c
            .execute(script, vec![json!(css)])
            .await
            .expect("script runs")
            .as_u64()
            .unwrap_or(0);
        if loaded as usize >= n {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{css}: {loaded} of {n} images loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same pages at a phone's width: nothing may need sideways scrolling.
async fn see_every_page_fit_a_phone(app: &TestApp, c: &Client) {
    c.set_window_size(PHONE.0, PHONE.1)
        .await
        .expect("window size");
    c.goto(&app.url("/properties/"))
        .await
        .expect("open the list");
    assert_fits_width(c, "the list").await;
    shot(c, "18-phone-list").await;
    c.goto(&app.url("/properties/?q=garden&sort=price_asc"))
        .await
        .expect("open a search");
    assert_fits_width(c, "a search").await;
    shot(c, "19-phone-list-filtered").await;
    click(c, ".property-card .card-link").await;
    wait_for(c, "#property-title").await;
    assert_fits_width(c, "a detail page").await;
    shot(c, "20-phone-detail").await;
    c.goto(&app.url("/admin/properties/new"))
        .await
        .expect("open the admin form");
    assert_fits_width(c, "the admin form").await;
    shot(c, "21-phone-admin-form").await;
    c.goto(&app.url("/cache/"))
        .await
        .expect("open the dashboard");
    wait_for_number(c, "#page-hits", |_| true).await;
    wait_for_keys_table(c).await;
    assert_fits_width(c, "the dashboard").await;
    shot(c, "22-phone-dashboard").await;
}

/// The dashboard key list's row of the list page's cache entry.
fn list_page_row(app: &TestApp) -> String {
    format!(
        "#keys-body tr[data-key=\"{}\"]",
        app.state.cache.keys().page("/properties/")
    )
}

/// ChromeDriver's browser console log since the last call (a WebDriver extension that
/// fantoccini has no method for).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// Chromium reports each refused inline script or style, `eval` or foreign load on the
/// console as "… violates the following Content Security Policy directive …".
async fn assert_no_csp_violations(c: &Client) {
    let log = c.issue_cmd(BrowserLog).await.expect("the browser log");
    let entries = log.as_array().expect("log entries");
    let violations: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");
}

// ---------- helpers: each panics with what it was looking for ----------

async fn find(c: &Client, css: &str) -> Element {
    match c.find(Locator::Css(css)).await {
        Ok(el) => el,
        Err(e) => panic!("no element {css} on {}: {e}", url(c).await),
    }
}

async fn url(c: &Client) -> String {
    c.current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default()
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("text of {css}: {e}"))
        .trim()
        .to_string()
}

async fn texts(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for el in c.find_all(Locator::Css(css)).await.expect("find_all") {
        out.push(el.text().await.expect("text").trim().to_string());
    }
    out
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.expect("find_all").len()
}

async fn value(c: &Client, css: &str) -> String {
    find(c, css)
        .await
        .prop("value")
        .await
        .unwrap_or_else(|e| panic!("value of {css}: {e}"))
        .unwrap_or_default()
}

async fn fill(c: &Client, css: &str, text: &str) {
    let el = find(c, css).await;
    el.clear()
        .await
        .unwrap_or_else(|e| panic!("clear {css}: {e}"));
    el.send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn click(c: &Client, css: &str) {
    find(c, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn wait_for(c: &Client, css: &str) -> Element {
    match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(el) => el,
        Err(e) => panic!("waiting for {css} on {}: {e}", url(c).await),
    }
}

/// Waits until the dashboard has shown the key list it fetched.
async fn wait_for_keys_table(c: &Client) {
    wait_for_text(c, "#keys-summary", |t| t.contains("key")).await;
}

async fn wait_for_url(c: &Client, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = url(c).await;
        if ok(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "still at {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = text(c, css).await;
        if ok(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{css} still says {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `css` shows a number (`1,234` counts) for which `ok` holds.
async fn wait_for_number(c: &Client, css: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let digits = |t: &str| -> Option<u64> {
        let d: String = t.chars().filter(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let shown = wait_for_text(c, css, |t| digits(t).is_some_and(&ok)).await;
    digits(&shown).expect("a number")
}

/// The cells' text of at least `n` rows (the cache column by its `data-x-cache`).
async fn wait_for_rows(c: &Client, css: &str, n: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = c.find_all(Locator::Css(css)).await.expect("rows");
        if rows.len() >= n {
            let mut out = Vec::new();
            for row in rows {
                let mut cells = Vec::new();
                for cell in row.find_all(Locator::Css("td")).await.expect("cells") {
                    cells.push(cell.text().await.expect("cell text").trim().to_string());
                }
                out.push(cells);
            }
            return out;
        }
        assert!(Instant::now() < deadline, "fewer than {n} rows of {css}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nothing wider than the window (no sideways scrolling on a phone).
async fn assert_fits_width(c: &Client, what: &str) {
    let widths = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("page widths");
    let (scroll, inner) = (widths[0].as_u64(), widths[1].as_u64());
    assert!(
        scroll <= inner,
        "{what} is wider ({scroll:?} px) than the window ({inner:?} px)"
    );
}

/// A screenshot of the whole page (up to 10000 px): the window is made tall enough for
/// the document, from the top, then put back.
async fn save_screenshot(c: &Client, name: &str) -> std::io::Result<PathBuf> {
    let (width, height) = c.get_window_size().await.map_err(std::io::Error::other)?;
    let sizes = c
        .execute(
            "window.scrollTo(0, 0); \
             return [Math.ceil(document.documentElement.scrollHeight), window.innerHeight];",
            vec![],
        )
        .await
        .map_err(std::io::Error::other)?;
    let (doc, inner) = (
        sizes[0].as_u64().unwrap_or(height),
        sizes[1].as_u64().unwrap_or(height),
    );
    // The window is taller than its viewport by the (headless) browser's frame.
    let wanted = (doc + height.saturating_sub(inner)).min(10_000);
    let resized = wanted > height;
    if resized {
        let _ = c.set_window_size(width as u32, wanted as u32).await;
    }
    let png = c.screenshot().await.map_err(std::io::Error::other);
    if resized {
        let _ = c.set_window_size(width as u32, height as u32).await;
    }
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png?)?;
    Ok(path)
}

async fn shot(c: &Client, name: &str) {
    save_screenshot(c, name)
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
}
