//! Test support: `spawn_app` starts the real application (the same `Application::build`
//! that `serve` uses) on a random port, against its own freshly created PostgreSQL
//! database and its own Redis key prefix; dropping the `TestApp` removes both.
//! `spawn_instance_with` starts another instance on the same data; `new_visitor` is the
//! same instance with a fresh cookie jar. Requests go through `get`/`get_with` and
//! `post_form`/`post_form_with` (a path, or another instance's `url`), made by the one
//! `client()`. `PrivateRedis` is a Redis server of a test's own; `cluster`, a Redis
//! Cluster; `postgres`, a PostgreSQL primary with streaming replicas.

pub mod cluster;
pub mod postgres;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use actix_web::web::Data;
use diesel::prelude::*;
use property_listings::config::Settings;
use property_listings::domain::{Description, Location, Price, Title};
use property_listings::models::property::{Property, PropertyData};
use property_listings::startup::Application;
use property_listings::state::AppState;

/// Where the tests' PostgreSQL (user `postgres`, trust auth) and Redis listen, as
/// `host:port`: `TEST_POSTGRES_ADDR` and `TEST_REDIS_ADDR`, by default the contract's
/// 127.0.0.1:5432 and 127.0.0.1:6379 (`scripts/test` sets them when it starts private
/// servers).
pub fn postgres_addr() -> String {
    std::env::var("TEST_POSTGRES_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".into())
}

pub fn redis_addr() -> String {
    std::env::var("TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

pub fn redis_url() -> String {
    format!("redis://{}/0", redis_addr())
}

fn server_url() -> String {
    direct_database_url("postgres")
}
const TEST_DB_PREFIX: &str = "pl_test_";

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub state: Data<AppState>,
    /// Keeps cookies, never follows redirects (tests look at the 303s themselves).
    pub client: reqwest::Client,
    pub db_name: String,
    /// `host:port` of the PostgreSQL server that holds `db_name` (the shared one, or a
    /// private primary: `postgres::spawn_app_on_replicas`).
    db_addr: String,
    pub prefix: String,
    /// Whether this app owns (and must drop) its database and keys.
    owner: bool,
}

pub fn random_suffix() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes databases left behind by an earlier, killed run (once per test process):
/// only unused ones created over 10 minutes ago, so a test database of another test
/// process running at the same time is never taken.
fn sweep_leftover_databases() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let Ok(mut conn) = PgConnection::establish(&server_url()) else {
            return;
        };
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            datname: String,
        }
        let names: Vec<Name> = diesel::sql_query(format!(
            "SELECT datname FROM pg_database WHERE datname LIKE '{TEST_DB_PREFIX}%' \
             AND (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = pg_database.datname) = 0 \
             AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification \
                 < now() - interval '10 minutes'"
        ))
        .load(&mut conn)
        .unwrap_or_default();
        for n in names {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", n.datname))
                .execute(&mut conn);
        }
    });
}

/// Settings for a fresh test: own database name, own prefix, defaults otherwise.
pub fn test_settings() -> Settings {
    let suffix = random_suffix();
    let mut s = Settings::local_defaults();
    s.database_url = direct_database_url(&format!("{TEST_DB_PREFIX}{suffix}"));
    s.redis_url = redis_url();
    s.cache_key_prefix = format!("pl_test_{suffix}");
    s.bind = "127.0.0.1:0".into();
    s.workers = Some(2);
    s.db_pool_size = 4;
    s.secret_key = Some(format!(
        "test-secret-key-{suffix}-0123456789abcdef0123456789abcdef"
    ));
    // Simultaneous sign-ins wait their turn to be checked rather than get 503 on a busy
    // test machine; tests of that 503 set a short wait themselves.
    s.sign_in_hash_wait = Duration::from_secs(10);
    s
}

pub const ADMIN_USER: &str = "manager";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The value of the hidden `csrf_token` field in a page.
pub fn csrf_token_in(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("page has a csrf_token field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_string()
}

/// The `name=value` part of the session cookie a response sets.
pub fn session_cookie_in(res: &reqwest::Response) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("pl_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie is set")
        .to_string()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app with `customise` applied to fresh test settings.
pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut settings = test_settings();
    customise(&mut settings);
    start(settings, true, postgres_addr()).await
}

/// Another instance like `other` (same database, Redis, prefix and secret key), with
/// `customise` applied, e.g. to reach Redis or PostgreSQL another way. It owns nothing.
pub async fn spawn_instance_with(
    other: &TestApp,
    customise: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = other.settings.clone();
    settings.bind = "127.0.0.1:0".into();
    customise(&mut settings);
    start(settings, false, other.db_addr.clone()).await
}

/// Builds and runs the app; `db_addr` is where its database is (see `TestApp::db_addr`).
async fn start(settings: Settings, owner: bool, db_addr: String) -> TestApp {
    sweep_leftover_databases();
    let app = Application::build(settings.clone())
        .await
        .expect("the application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    let (_, db_name) = property_listings::db::split_database_url(&settings.database_url)
        .expect("test database url names a database");
    TestApp {
        address,
        client: client(),
        db_name,
        db_addr,
        prefix: settings.cache_key_prefix.clone(),
        settings,
        state,
        owner,
    }
}

/// The one test client, like a browser that never follows redirects (tests look at
/// the 303s themselves): it keeps cookies; a fresh one is an anonymous visitor.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

impl TestApp {
    /// The URL of `target`: a path on this app, or already a full URL (another
    /// instance: the request helpers then reach it with this app's cookie jar).
    pub fn url(&self, target: &str) -> String {
        if target.starts_with("http://") {
            target.to_string()
        } else {
            format!("{}{target}", self.address)
        }
    }

    /// A GET of `target` (see `url`) with this app's client.
    pub async fn get(&self, target: &str) -> reqwest::Response {
        self.get_with(target, &[]).await
    }

    /// A GET with this app's client and extra request headers.
    pub async fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.url(target));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.expect("request sent")
    }

    /// A GET from a fresh client (an anonymous visitor).
    pub async fn get_anonymous(&self, path: &str) -> reqwest::Response {
        self.new_visitor().get(path).await
    }

    /// This app as another visitor (or device) sees it: a fresh cookie jar. It owns
    /// nothing.
    pub fn new_visitor(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            settings: self.settings.clone(),
            state: self.state.clone(),
            client: client(),
            db_name: self.db_name.clone(),
            db_addr: self.db_addr.clone(),
            prefix: self.prefix.clone(),
            owner: false,
        }
    }

    /// A form POST to `target` (see `url`) with this app's client.
    pub async fn post_form(&self, target: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_form_with(target, form, &[]).await
    }

    /// A form POST with this app's client and extra request headers.
    pub async fn post_form_with(
        &self,
        target: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let body = serde_urlencoded::to_string(form).expect("form encodes");
        let mut req = self
            .client
            .post(self.url(target))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.expect("request sent")
    }

    /// The CSRF token of this client's session, read from a form page.
    pub async fn csrf_token(&self, form_path: &str) -> String {
        let html = self.get(form_path).await.text().await.expect("body");
        csrf_token_in(&html)
    }

    /// Makes every path a page-cache hit for anonymous visitors (asserted).
    pub async fn warm(&self, paths: &[String]) {
        for path in paths {
            self.get_anonymous(path).await;
            assert_eq!(self.x_cache(path).await, "HIT", "{path}");
        }
    }

    /// The `X-Cache` header of an anonymous GET of `path`.
    pub async fn x_cache(&self, path: &str) -> String {
        header(&self.get_anonymous(path).await, "x-cache").to_string()
    }

    /// GETs `path` as an anonymous visitor, every answer a 200, until it is a page-cache
    /// HIT; returns how long that took, or panics after `limit` with what it saw.
    pub async fn until_hit(&self, path: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        let mut seen = Vec::new();
        while started.elapsed() < limit {
            let res = self.get_anonymous(path).await;
            assert_eq!(res.status(), 200, "{path}");
            let outcome = header(&res, "x-cache").to_string();
            if outcome == "HIT" {
                return started.elapsed();
            }
            seen.push(outcome);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last = &seen[seen.len().saturating_sub(10)..];
        panic!("{path}: no HIT within {limit:?}; last answers: {last:?}");
    }

    /// Submits the sign-in form with this app's client.
    pub async fn post_login(
        &self,
        username: &str,
        password: &str,
        token: &str,
    ) -> reqwest::Response {
        self.post_form(
            "/admin/login",
            &[
                ("username", username),
                ("password", password),
                ("csrf_token", token),
            ],
        )
        .await
    }

    /// Creates the test admin (if needed) and signs this app's client in.
    pub async fn sign_in(&self) {
        self.create_admin(ADMIN_USER, ADMIN_PASSWORD);
        let token = self.csrf_token("/admin/login").await;
        let res = self.post_login(ADMIN_USER, ADMIN_PASSWORD, &token).await;
        assert_eq!(res.status(), 303, "sign-in succeeds");
    }

    pub fn create_admin(&self, username: &str, password: &str) {
        property_listings::startup::create_admin(&self.state.db, username, password)
            .expect("admin created");
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let res = self.get_anonymous(path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.expect("json body")
    }

    /// Inserts a property through the repository (so the hooks run).
    pub async fn insert(&self, title: &str, price: &str, location: &str) -> Property {
        self.state
            .properties
            .insert(property_data(title, price, location, "A test listing."))
            .await
            .expect("insert")
    }

    pub async fn insert_many(&self, n: usize) -> Vec<Property> {
        let data = (0..n)
            .map(|i| {
                property_data(
                    &format!("Listing {i}"),
                    &format!("{}", 1000 + i),
                    "Testville",
                    "",
                )
            })
            .collect();
        self.state
            .properties
            .insert_many(data)
            .await
            .expect("insert many")
    }

    /// A connection to the shared Redis.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(redis_url())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }

    /// Every key under this app's prefix, with its remaining TTL in ms (-1: none).
    pub fn keys(&self) -> BTreeMap<String, i64> {
        let mut conn = self.redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .expect("KEYS");
        keys.into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut conn).expect("PTTL");
                (k, ttl)
            })
            .collect()
    }

    /// The page-cache entries among `keys`.
    pub fn page_keys(&self) -> Vec<String> {
        let keys = self.state.cache.keys();
        self.keys()
            .into_keys()
            .filter(|k| keys.is_page(k))
            .collect()
    }

    /// A connection to this app's database that bypasses any proxy in its settings.
    pub fn db(&self) -> PgConnection {
        PgConnection::establish(&database_url_at(&self.db_addr, &self.db_name))
            .expect("test database")
    }

    /// Rows in the listings table, read without any cache or proxy.
    pub fn count_rows(&self) -> i64 {
        Property::count(&mut self.db()).expect("count")
    }

    /// The listing's price in the database, in cents, read without any cache or proxy.
    pub fn price_in_database(&self, id: i64) -> u64 {
        let property = Property::find(&mut self.db(), id)
            .expect("query")
            .expect("the listing exists");
        cents(&property.price().to_string()).expect("a price")
    }

    /// Cuts PostgreSQL off for this app for good: drops its database (killing the
    /// pool's connections), so every later query fails as if the server were down.
    pub fn drop_database(&self) {
        drop_database(&self.db_addr, &self.db_name);
    }
}

/// The fields of the admin's listing form, with a fixed description.
pub fn listing<'a>(
    title: &'a str,
    price: &'a str,
    location: &'a str,
    token: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("title", title),
        ("description", "Bright rooms, quiet street."),
        ("price", price),
        ("location", location),
        ("csrf_token", token),
    ]
}

pub fn property_data(title: &str, price: &str, location: &str, description: &str) -> PropertyData {
    PropertyData::new(
        Title::parse(title).expect("title"),
        Description::parse(description).expect("description"),
        Price::parse(price).expect("price"),
        Location::parse(location).expect("location"),
    )
}

fn drop_database(db_addr: &str, name: &str) {
    if let Ok(mut conn) = PgConnection::establish(&database_url_at(db_addr, "postgres")) {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        remove_database_and_keys(&self.db_addr, &self.db_name, &self.prefix);
    }
}

/// The four public routes that show a listing: the HTML list and detail pages and
/// their JSON twins.
pub fn public_routes(id: i64) -> [String; 4] {
    [
        "/properties/".to_string(),
        format!("/properties/{id}/"),
        "/api/properties/".to_string(),
        format!("/api/properties/{id}/"),
    ]
}

pub fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory in the temp dir, named `{prefix}` and a random suffix; removed on
/// drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private Redis server on a free port, for tests that need exact server-wide
/// numbers or that stop/restart Redis. Killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Child,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Starts (again) on a given port, e.g. after the previous server was dropped, with
    /// extra `redis-server` arguments.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // Bounded, as every Redis the project starts; `extra` may override it.
                "--maxmemory",
                "64mb",
                "--maxmemory-policy",
                "allkeys-lfu",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = Self { port, child };
        redis.wait_until_up();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("private redis")
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis on port {} did not start", self.port);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A money string (`"1250.00"`, `"1,250.00"`, `"$1,250.00"`) in cents.
pub fn cents(money: &str) -> Option<u64> {
    let plain: String = money
        .trim()
        .trim_start_matches('$')
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let (whole, frac) = plain.split_once('.')?;
    if frac.len() != 2 {
        return None;
    }
    Some(whole.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

/// The first price shown in an HTML listing or detail page (`<p class="price…">$1,250.00</p>`),
/// in cents.
pub fn first_price_in_html(html: &str) -> Option<u64> {
    let start = html.find("class=\"price")?;
    let rest = &html[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')? + open;
    cents(&rest[open..close])
}

/// The (first) listing's price, in cents, in a response body of `path`: the JSON
/// `price` of a detail or the first result of a list under `/api/`, else the HTML.
pub fn price_in_response(path: &str, body: &str) -> Option<u64> {
    if path.starts_with("/api/") {
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        let price = if json["results"].is_array() {
            &json["results"][0]["price"]
        } else {
            &json["price"]
        };
        price.as_str().and_then(cents)
    } else {
        first_price_in_html(body)
    }
}

/// The PostgreSQL URL of `db_name` on the shared server, bypassing any proxy.
/// Loopback connections without TLS: libpq would otherwise negotiate SSL, and OpenSSL's
/// exit handlers can crash a test process whose pool threads still hold connections.
pub fn direct_database_url(db_name: &str) -> String {
    database_url_at(&postgres_addr(), db_name)
}

/// The same on the server at `db_addr` (`host:port`).
pub fn database_url_at(db_addr: &str, db_name: &str) -> String {
    format!("postgres://postgres@{db_addr}/{db_name}?sslmode=disable")
}

/// Removes a test database and every key under `prefix` in the shared Redis (a
/// `TestApp` on drop, and the soak test's separate process).
pub fn remove_test_database_and_keys(db_name: &str, prefix: &str) {
    remove_database_and_keys(&postgres_addr(), db_name, prefix);
}

fn remove_database_and_keys(db_addr: &str, db_name: &str, prefix: &str) {
    drop_database(db_addr, db_name);
    if let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Removes, under each of `bases`, the directories `PREFIX<pid>-…` of earlier test runs
/// whose process is gone (the servers they held died with it: `PR_SET_PDEATHSIG`).
pub fn remove_directories_of_dead_runs(bases: &[&Path], prefix: &str) {
    for base in bases {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
