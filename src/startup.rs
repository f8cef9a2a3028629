//! Building the application: one `Application::build(settings)` used by `serve` and by
//! the tests (with `BIND=127.0.0.1:0`), and `build_state`, which the CLI commands that
//! write (seed) share, so their writes run the same hooks.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};

use crate::auth::password::PasswordChecks;
use crate::auth::throttle::LoginThrottle;
use crate::auth::{self, password};
use crate::body_timeout::body_timeout;
use crate::cache::metrics::Metrics;
use crate::cache::{Cache, CacheConfig, RedisTarget};
use crate::config::Settings;
use crate::db;
use crate::models::admin_user::AdminUser;
use crate::models::repository::PropertyRepository;
use crate::routes;
use crate::routes::cacheable::hook::CacheInvalidation;
use crate::routes::cacheable::middleware::{
    page_cache_inner, page_cache_outer, private_if_session_written,
};
use crate::state::AppState;

/// Creates the database if needed, migrates, and wires pool, cache and hooks; a server
/// (`serving`) also holds a cache lease (see `cache_config`).
pub fn build_state(settings: Settings, serving: bool) -> anyhow::Result<AppState> {
    db::prepare_database(&settings.database_url)?;
    let pool = db::build_pool(
        &settings.database_url,
        settings.db_pool_size,
        settings.db_timeout,
    );
    let metrics = Arc::new(Metrics::new());
    let cache = Cache::new(cache_config(&settings, serving), metrics, |spent| {
        crate::timing::record(crate::timing::Kind::Cache, spent)
    })?;
    let replicas = Arc::new(db::Replicas::new(
        &settings.database_replica_urls,
        settings.db_pool_size,
        cache.metrics().registry(),
    ));
    if !replicas.is_empty() {
        // Tokens created without a write then carry the primary's position too.
        cache.use_source_position(db::position_source(pool.clone()));
    }
    let properties = PropertyRepository::new(
        pool.clone(),
        replicas.clone(),
        vec![Arc::new(CacheInvalidation::new(
            cache.clone(),
            pool.clone(),
        ))],
    );
    let request_latency =
        crate::telemetry::latency::RequestLatency::new(cache.metrics().registry());
    let password_checks = PasswordChecks::new(settings.sign_in_hashes, settings.sign_in_hash_wait)
        .map_err(|e| anyhow::anyhow!("starting the password-check threads: {e}"))?;
    let photos = crate::photos::Photos::new(settings.photo_workers, settings.media_cache_bytes)
        .map_err(|e| anyhow::anyhow!("starting the photo threads: {e}"))?;
    Ok(AppState {
        settings,
        db: pool,
        replicas,
        cache,
        properties,
        login_throttle: LoginThrottle::default(),
        request_latency,
        password_checks,
        photos,
    })
}

/// The cache's name in `Cache-Status` (RFC 9211).
pub const CACHE_STATUS_NAME: &str = "property-listings";

/// What the cache library is told (`cache::CacheConfig`), from the settings: Redis, the
/// prefix, time limits, and the app's own names (its one named entry, `all_properties`).
/// A server (`serving`) holds a lease and answers hits from memory; a command does not.
pub fn cache_config(settings: &Settings, serving: bool) -> CacheConfig {
    let cluster = !settings.redis_cluster_urls.is_empty();
    if cluster {
        log::info!("REDIS_CLUSTER_URLS is set: REDIS_URL is ignored");
    }
    CacheConfig {
        redis: if cluster {
            RedisTarget::Cluster(settings.redis_cluster_urls.clone())
        } else {
            RedisTarget::Single(settings.redis_url.clone())
        },
        key_prefix: settings.cache_key_prefix.clone(),
        redis_timeout: settings.redis_timeout,
        wait_replicas: settings.redis_wait_replicas.unwrap_or(u32::from(cluster)),
        grace: settings.cache_grace,
        longest_ttl: settings.page_cache_ttl.max(settings.query_cache_ttl),
        local_bytes: settings.local_cache_bytes,
        named_entries: vec![crate::routes::listing::ALL_PROPERTIES.to_string()],
        status_name: CACHE_STATUS_NAME.to_string(),
        lease: settings.cache_lease,
        hold_lease: serving,
    }
}

/// Creates the admin named by `ADMIN_USERNAME`/`ADMIN_PASSWORD` if it does not exist yet
/// (an existing admin, and its password, are never changed).
pub fn ensure_configured_admin(state: &AppState) -> anyhow::Result<()> {
    let (Some(username), Some(password)) = (
        state.settings.admin_username.as_deref(),
        state.settings.admin_password.as_deref(),
    ) else {
        return Ok(());
    };
    match create_admin(&state.db, username, password)? {
        true => log::info!("created admin {username:?} from ADMIN_USERNAME"),
        false => log::info!("admin {username:?} already exists; left unchanged"),
    }
    Ok(())
}

/// Validates and creates an admin; `Ok(false)` when the user name is taken.
pub fn create_admin(pool: &db::PgPool, username: &str, password: &str) -> anyhow::Result<bool> {
    password::check_username(username).map_err(anyhow::Error::msg)?;
    password::check_new_password(password).map_err(anyhow::Error::msg)?;
    let mut conn = pool.get()?;
    if AdminUser::find_by_username(&mut conn, username)?.is_some() {
        return Ok(false);
    }
    let hash = password::hash(password)?;
    Ok(AdminUser::create_if_missing(&mut conn, username, &hash)?)
}

/// Logs the metrics summary once a minute (as the seed's metrics function does when
/// it is called), so a plain log shows how the cache is doing.
fn spawn_metrics_logger(cache: crate::cache::Cache) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = crate::cache::admin::get_redis_cache_metrics(&cache).await;
        }
    });
}

/// The site's own pages load scripts, styles, images and data from the site only, with
/// no inline script or style (the Chromium test checks that no page breaks this rule).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every response, page-cache hits included (outermost, so they are
/// added to whatever the inner layers answered): no MIME sniffing, no referrer sent to
/// other sites, the policy above, and no framing by any site (admin pages included).
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.bind)
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let workers = settings.workers;
        let key = auth::session_key(settings.secret_key.as_deref())?;
        let pool_size = settings.db_pool_size as usize;
        let static_dir = settings.static_dir.clone();
        let state = web::Data::new(build_state(settings, true)?);
        ensure_configured_admin(&state)?;
        state.cache.spawn_invalidation_retrier();
        state.cache.spawn_lease();
        state.replicas.spawn_poller(state.db.clone());
        spawn_metrics_logger(state.cache.clone());
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                // The page cache around the session middleware: outside it for requests
                // without a session cookie (a hit needs neither sessions nor routing),
                // inside it for the others, so it can tell signed-in admins apart.
                .wrap(from_fn(private_if_session_written))
                .wrap(from_fn(page_cache_inner))
                .wrap(auth::session_middleware(key.clone()))
                .wrap(from_fn(page_cache_outer))
                .wrap(from_fn(body_timeout))
                .wrap(from_fn(crate::telemetry::telemetry))
                // Photos already in memory: answered before everything but HTTPS and the
                // security headers (no access-log line: see routes::media).
                .wrap(from_fn(routes::media::from_memory))
                // Outside the page cache and the photos in memory, so their hits get HSTS
                // too.
                .wrap(from_fn(crate::https::secure_transport))
                .wrap(security_headers())
                .app_data(app_state.clone())
                .configure(routes::admin::config)
                .configure(|cfg| routes::config(cfg, &static_dir))
        })
        .shutdown_timeout(10)
        // Blocking threads wait for a pooled connection (or hash a password). Far fewer
        // than actix's default 512 per worker, but enough that, while PostgreSQL is down,
        // requests time out side by side instead of queueing behind each other.
        .worker_max_blocking_threads((pool_size * 4).max(16))
        .listen(listener)?;
        if let Some(n) = workers {
            server = server.workers(n.max(1));
        }
        Ok(Self {
            port,
            server: server.run(),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
