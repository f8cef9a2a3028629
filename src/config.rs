//! Settings read from the environment (and `.env`, loaded by `main`), with the
//! defaults of the product contract. Tests build `Settings` directly.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::auth::client_ip::{Cidr, parse_trusted_proxies};
use crate::auth::password::PasswordChecks;

/// Everything the application needs to start. One value, passed down; no globals.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    /// Streaming replicas of `database_url` that cache refills may read
    /// (`DATABASE_REPLICA_URLS`, comma separated; empty: every read goes to the primary).
    pub database_replica_urls: Vec<String>,
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster (`REDIS_CLUSTER_URLS`, `redis://host:port`, comma
    /// separated). Non-empty: cluster mode, and `redis_url` is not used.
    pub redis_cluster_urls: Vec<String>,
    /// How many replicas must confirm a write's token replacement before it is
    /// acknowledged (`REDIS_WAIT_REPLICAS`; default 1 in cluster mode, else 0): a master
    /// that dies before replicating it cannot hand old tokens to its successor.
    pub redis_wait_replicas: Option<u32>,
    pub bind: String,
    pub cache_key_prefix: String,
    /// How long a cached page is fresh (`PAGE_CACHE_TTL`).
    pub page_cache_ttl: Duration,
    /// How long the `all_properties` query cache is fresh (`QUERY_CACHE_TTL`).
    pub query_cache_ttl: Duration,
    /// How long an expired entry is kept to be served while it is refreshed or while
    /// PostgreSQL is down (`CACHE_GRACE`; zero turns grace off).
    pub cache_grace: Duration,
    /// Upper bound for any single Redis command, so a hung Redis cannot hang requests.
    pub redis_timeout: Duration,
    /// How long a request waits for a PostgreSQL connection from the pool.
    pub db_timeout: Duration,
    pub db_pool_size: u32,
    /// Key for signing and encrypting session cookies (`SECRET_KEY`, at least 64 bytes).
    pub secret_key: Option<String>,
    /// When session cookies are `Secure` and `Strict-Transport-Security` is sent
    /// (`COOKIE_SECURE`; see `crate::https`).
    pub cookie_secure: CookieSecure,
    pub admin_username: Option<String>,
    pub admin_password: Option<String>,
    /// Number of HTTP worker threads (`WORKERS`, default: one per core).
    pub workers: Option<usize>,
    /// Bytes of cached entries each process keeps in memory in front of Redis
    /// (`LOCAL_CACHE_BYTES`; 0 turns the in-process tier off).
    pub local_cache_bytes: usize,
    /// How long an instance may answer from memory without hearing from Redis, and about
    /// the longest a write waits for an instance that stopped answering
    /// (`CACHE_LEASE_MS`).
    pub cache_lease: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`; empty:
    /// the TCP peer is the client).
    pub trusted_proxies: Vec<Cidr>,
    /// Where `/static/` is served from (`STATIC_DIR`; see `default_static_dir`).
    pub static_dir: PathBuf,
    /// Show the dashboard's details — Redis node addresses, the key list, recent writes —
    /// to everyone, not only to signed-in admins (`PUBLIC_DASHBOARD`; for demos).
    pub public_dashboard: bool,
    /// Sign-in password checks (Argon2) that may run at once (`SIGN_IN_HASHES`;
    /// default: one per core).
    pub sign_in_hashes: usize,
    /// How long a sign-in waits for a free password check before it gets 503
    /// (`SIGN_IN_HASH_WAIT_MS`).
    pub sign_in_hash_wait: Duration,
    /// Uploaded photos decoded and re-encoded at once, each on a thread of its own
    /// (`PHOTO_WORKERS`, default 1; see `photos::workers`).
    pub photo_workers: usize,
    /// Bytes of `/media/` bodies each process keeps in memory (`MEDIA_CACHE_BYTES`,
    /// default 64 MiB; 0 keeps none).
    pub media_cache_bytes: usize,
}

impl Settings {
    pub const DEFAULT_DATABASE_URL: &'static str =
        "postgres://postgres@127.0.0.1:5432/property_listings";
    pub const DEFAULT_REDIS_URL: &'static str = "redis://127.0.0.1:6379/0";

    /// Reads the environment. A value that is present but malformed is an error, never
    /// silently replaced by the default.
    pub fn from_env() -> anyhow::Result<Self> {
        let prefix = env_or("CACHE_KEY_PREFIX", "property_listings");
        validate_prefix(&prefix)?;
        Ok(Self {
            database_url: env_or("DATABASE_URL", Self::DEFAULT_DATABASE_URL),
            database_replica_urls: parse_replica_urls(&env_or("DATABASE_REPLICA_URLS", ""))?,
            redis_url: env_or("REDIS_URL", Self::DEFAULT_REDIS_URL),
            redis_cluster_urls: parse_cluster_urls(&env_or("REDIS_CLUSTER_URLS", ""))?,
            redis_wait_replicas: match std::env::var("REDIS_WAIT_REPLICAS") {
                Ok(v) if !v.trim().is_empty() => Some(
                    v.trim()
                        .parse()
                        .context("REDIS_WAIT_REPLICAS must be a whole number")?,
                ),
                _ => None,
            },
            bind: env_or("BIND", "127.0.0.1:8000"),
            cache_key_prefix: prefix,
            page_cache_ttl: Duration::from_secs(env_u64("PAGE_CACHE_TTL", 900)?),
            query_cache_ttl: Duration::from_secs(env_u64("QUERY_CACHE_TTL", 3600)?),
            cache_grace: Duration::from_secs(env_u64("CACHE_GRACE", 3600)?),
            redis_timeout: Duration::from_millis(env_u64("REDIS_TIMEOUT_MS", 250)?),
            db_timeout: Duration::from_millis(env_u64("DB_TIMEOUT_MS", 2000)?),
            db_pool_size: u32::try_from(env_u64("DB_POOL_SIZE", 10)?)
                .context("DB_POOL_SIZE is too large")?,
            secret_key: non_empty(std::env::var("SECRET_KEY").ok()),
            cookie_secure: CookieSecure::parse(non_empty(std::env::var("COOKIE_SECURE").ok()))?,
            admin_username: non_empty(std::env::var("ADMIN_USERNAME").ok()),
            admin_password: non_empty(std::env::var("ADMIN_PASSWORD").ok()),
            workers: match std::env::var("WORKERS") {
                Ok(v) => Some(v.parse().context("WORKERS must be a whole number")?),
                Err(_) => None,
            },
            local_cache_bytes: usize::try_from(env_u64("LOCAL_CACHE_BYTES", 8 << 20)?)
                .context("LOCAL_CACHE_BYTES is too large")?,
            cache_lease: match env_u64("CACHE_LEASE_MS", 2000)? {
                ms if ms >= 100 => Duration::from_millis(ms),
                ms => bail!("CACHE_LEASE_MS must be at least 100, got {ms}"),
            },
            trusted_proxies: parse_trusted_proxies(&env_or("TRUSTED_PROXIES", ""))
                .map_err(|e| anyhow::anyhow!("TRUSTED_PROXIES: {e}"))?,
            static_dir: non_empty(std::env::var("STATIC_DIR").ok())
                .map_or_else(default_static_dir, PathBuf::from),
            public_dashboard: env_bool("PUBLIC_DASHBOARD")?,
            sign_in_hashes: match env_u64("SIGN_IN_HASHES", 0)? {
                0 => PasswordChecks::per_core(),
                n => usize::try_from(n).context("SIGN_IN_HASHES is too large")?,
            },
            sign_in_hash_wait: Duration::from_millis(env_u64("SIGN_IN_HASH_WAIT_MS", 1000)?),
            photo_workers: match env_u64("PHOTO_WORKERS", 1)? {
                0 => bail!("PHOTO_WORKERS must be at least 1"),
                n => usize::try_from(n).context("PHOTO_WORKERS is too large")?,
            },
            media_cache_bytes: usize::try_from(env_u64("MEDIA_CACHE_BYTES", 64 << 20)?)
                .context("MEDIA_CACHE_BYTES is too large")?,
        })
    }

    /// Settings for a local run against the default services (used by tests as a base).
    pub fn local_defaults() -> Self {
        Self {
            database_url: Self::DEFAULT_DATABASE_URL.into(),
            database_replica_urls: Vec::new(),
            redis_url: Self::DEFAULT_REDIS_URL.into(),
            redis_cluster_urls: Vec::new(),
            redis_wait_replicas: None,
            bind: "127.0.0.1:0".into(),
            cache_key_prefix: "property_listings".into(),
            page_cache_ttl: Duration::from_secs(900),
            query_cache_ttl: Duration::from_secs(3600),
            cache_grace: Duration::from_secs(3600),
            redis_timeout: Duration::from_millis(250),
            db_timeout: Duration::from_millis(2000),
            db_pool_size: 4,
            secret_key: None,
            cookie_secure: CookieSecure::IfHttps,
            admin_username: None,
            admin_password: None,
            workers: Some(2),
            local_cache_bytes: 8 << 20,
            cache_lease: Duration::from_millis(2000),
            trusted_proxies: Vec::new(),
            static_dir: default_static_dir(),
            public_dashboard: false,
            sign_in_hashes: PasswordChecks::per_core(),
            sign_in_hash_wait: Duration::from_millis(1000),
            photo_workers: 1,
            media_cache_bytes: 64 << 20,
        }
    }
}

/// `./static` when it exists, else the crate's own `static/` (for `cargo run` from
/// elsewhere).
fn default_static_dir() -> PathBuf {
    let local = PathBuf::from("static");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static")
}

/// `COOKIE_SECURE`: whether session cookies are `Secure`, and `Strict-Transport-Security`
/// is sent, on a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieSecure {
    /// Unset: when the request came over HTTPS, directly or as a trusted proxy says.
    IfHttps,
    /// `1`: always (the site is only ever reached over HTTPS).
    Always,
    /// `0`: never.
    Never,
}

impl CookieSecure {
    /// Unset or empty: `IfHttps`; `1`/`true`/`yes`/`on`: `Always`; `0`/`false`/`no`/`off`:
    /// `Never`; anything else is an error.
    pub fn parse(value: Option<String>) -> anyhow::Result<Self> {
        match value.as_deref().map(str::trim) {
            None | Some("") => Ok(Self::IfHttps),
            Some("1" | "true" | "yes" | "on") => Ok(Self::Always),
            Some("0" | "false" | "no" | "off") => Ok(Self::Never),
            Some(other) => bail!(
                "COOKIE_SECURE must be 1 (always), 0 (never) or unset (when the request came over HTTPS), got {other:?}"
            ),
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn env_or(name: &str, default: &str) -> String {
    non_empty(std::env::var(name).ok()).unwrap_or_else(|| default.to_string())
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match non_empty(std::env::var(name).ok()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name} must be a whole number of seconds/ms, got {v:?}")),
    }
}

fn env_bool(name: &str) -> anyhow::Result<bool> {
    match non_empty(std::env::var(name).ok())
        .as_deref()
        .map(str::trim)
    {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => bail!("{name} must be 1 or 0, got {other:?}"),
    }
}

/// `REDIS_CLUSTER_URLS`: comma-separated `redis://host:port` seed nodes (an empty value:
/// no cluster). Each must name a host and may not pick a database: a cluster has only 0.
pub fn parse_cluster_urls(value: &str) -> anyhow::Result<Vec<String>> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|url| {
            let url = url.trim();
            let bad = |why: &str| {
                anyhow::anyhow!(
                    "REDIS_CLUSTER_URLS: {url:?} {why}; expected comma-separated redis://host:port seed nodes"
                )
            };
            let rest = url
                .strip_prefix("redis://")
                .ok_or_else(|| bad("is not a redis:// URL"))?;
            let info = redis::IntoConnectionInfo::into_connection_info(url)
                .map_err(|e| bad(&format!("is not usable ({e})")))?;
            let host_port = rest.rsplit('@').next().unwrap_or(rest);
            if host_port.starts_with([':', '/']) || host_port.is_empty() {
                return Err(bad("names no host"));
            }
            if info.redis_settings().db() != 0 {
                return Err(bad("selects a database (a Redis Cluster has only database 0)"));
            }
            Ok(url.to_string())
        })
        .collect()
}

/// `DATABASE_REPLICA_URLS`: comma-separated `postgres://` URLs of streaming replicas of
/// `DATABASE_URL` (an empty value: none).
pub fn parse_replica_urls(value: &str) -> anyhow::Result<Vec<String>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("DATABASE_REPLICA_URLS: {url:?} is not a postgres:// URL");
            }
            Ok(url.to_string())
        })
        .collect()
}

/// A prefix becomes the first segment of every Redis key: keep it to characters that
/// cannot collide with our `:` separator or with glob patterns used by `cache clear`.
pub fn validate_prefix(prefix: &str) -> anyhow::Result<()> {
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        bail!("CACHE_KEY_PREFIX must be non-empty and use only letters, digits, '_', '-' or '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{CookieSecure, parse_cluster_urls, parse_replica_urls, validate_prefix};

    #[test]
    fn cookie_secure_is_if_https_unless_set_to_always_or_never() {
        let parse = |v: Option<&str>| CookieSecure::parse(v.map(String::from));
        assert_eq!(parse(None).unwrap(), CookieSecure::IfHttps);
        assert_eq!(parse(Some(" ")).unwrap(), CookieSecure::IfHttps);
        for on in ["1", "true", "yes", "on"] {
            assert_eq!(parse(Some(on)).unwrap(), CookieSecure::Always, "{on}");
        }
        for off in ["0", "false", "no", "off"] {
            assert_eq!(parse(Some(off)).unwrap(), CookieSecure::Never, "{off}");
        }
        assert!(parse(Some("auto")).is_err());
    }

    #[test]
    fn replica_urls_are_split_and_must_be_postgres_urls() {
        assert_eq!(
            parse_replica_urls(" postgres://a:5433/db , postgresql://b/db").unwrap(),
            ["postgres://a:5433/db", "postgresql://b/db"]
        );
        assert!(parse_replica_urls("").unwrap().is_empty());
        assert!(parse_replica_urls("redis://a:6379").is_err());
        assert!(parse_replica_urls("127.0.0.1:5433").is_err());
    }

    #[test]
    fn cluster_seed_urls_are_split_and_checked() {
        assert_eq!(
            parse_cluster_urls(" redis://10.0.0.1:7000, redis://redis-2:7001 ").unwrap(),
            ["redis://10.0.0.1:7000", "redis://redis-2:7001"]
        );
        assert!(parse_cluster_urls("").unwrap().is_empty());
        for bad in [
            "10.0.0.1:7000",
            "redis://a:7000,,redis://b:7000",
            "redis://a:notaport",
            "redis://a:7000/1",
            "http://a:7000",
            "redis://:7000",
        ] {
            let e = parse_cluster_urls(bad).expect_err(bad).to_string();
            assert!(e.starts_with("REDIS_CLUSTER_URLS"), "{e}");
        }
    }

    #[test]
    fn a_prefix_with_glob_characters_is_refused() {
        assert!(validate_prefix("property_listings").is_ok());
        assert!(validate_prefix("a*b").is_err());
        assert!(validate_prefix("a:b").is_err());
        assert!(validate_prefix("").is_err());
    }
}
