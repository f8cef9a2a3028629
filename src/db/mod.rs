//! PostgreSQL plumbing: the r2d2 pool, the embedded migrations, creating the database
//! when it is missing, and `run`, the one way handlers reach Diesel (on the blocking
//! thread pool, never on an async worker).

use std::sync::Arc;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::AppError;

pub mod replicas;

pub use replicas::{Replicas, write_position};

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Builds the pool without connecting: the app starts (and serves cached pages) even
/// while PostgreSQL is down, and each checkout waits at most `timeout`.
pub fn build_pool(database_url: &str, size: u32, timeout: Duration) -> PgPool {
    let manager = ConnectionManager::<PgConnection>::new(database_url);
    Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .connection_timeout(timeout)
        // A ping per checkout (tens of µs on a LAN) keeps connections killed by a
        // database restart from being handed out: service resumes by itself.
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// Runs `f` with a pooled connection on the blocking pool. A pool timeout (database
/// down or saturated), or a query that failed on a connection that no longer answers,
/// is `AppError::Unavailable`; other query errors keep their cause.
pub async fn run<T, F>(pool: &PgPool, f: F) -> Result<T, AppError>
where
    F: FnOnce(&mut PgConn) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    let started = std::time::Instant::now();
    let result = actix_web::web::block(move || {
        let mut conn = pool
            .get()
            .map_err(|e| AppError::Unavailable(format!("database connection: {e}")))?;
        match f(&mut conn) {
            Err(AppError::Internal(cause)) if conn.ping().is_err() => Err(AppError::Unavailable(
                format!("database connection lost: {cause}"),
            )),
            other => other,
        }
    })
    .await;
    crate::timing::record(crate::timing::Kind::Db, started.elapsed());
    result.map_err(|e| AppError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
}

/// The cache's `PositionSource` (see `cache::source`): the primary's write position now.
pub fn position_source(pool: PgPool) -> crate::cache::source::PositionSource {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            run(&pool, |conn| Ok(write_position(conn)))
                .await
                .ok()
                .flatten()
        })
    })
}

/// Applies every pending embedded migration.
pub fn run_migrations(conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
    Ok(())
}

/// Splits `postgres://…/name?opts` into (server URL pointing at the `postgres`
/// maintenance database, database name).
pub fn split_database_url(url: &str) -> anyhow::Result<(String, String)> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let slash = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL names no database"))?;
    let name = &base[slash + 1..];
    if name.is_empty() {
        anyhow::bail!("DATABASE_URL names no database");
    }
    let mut server = format!("{}/postgres", &base[..slash]);
    if let Some(q) = query {
        server.push('?');
        server.push_str(q);
    }
    Ok((server, name.to_string()))
}

/// Quotes an identifier for PostgreSQL (`"name"`, doubling inner quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the database named in `database_url` when it does not exist yet.
pub fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    if PgConnection::establish(database_url).is_ok() {
        return Ok(());
    }
    let (server_url, name) = split_database_url(database_url)?;
    let mut conn = PgConnection::establish(&server_url)
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL to create {name:?}: {e}"))?;
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)?;
    if !found.exists {
        match diesel::sql_query(format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut conn)
        {
            Ok(_) => log::info!("created database {name:?}"),
            // Another instance may have created it between our check and our CREATE.
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Connects (creating the database if needed) and migrates: what `serve` and
/// `migrate` do before anything else.
pub fn prepare_database(database_url: &str) -> anyhow::Result<()> {
    create_database_if_missing(database_url)?;
    let mut conn = PgConnection::establish(database_url)?;
    run_migrations(&mut conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_split_from_the_url() {
        let (server, name) =
            split_database_url("postgres://u:p@db:5432/listings?sslmode=disable").unwrap();
        assert_eq!(server, "postgres://u:p@db:5432/postgres?sslmode=disable");
        assert_eq!(name, "listings");
        assert!(split_database_url("postgres://db:5432").is_err());
        assert!(split_database_url("postgres://db:5432/").is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    }
}
