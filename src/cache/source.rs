//! Where a build may read its source (see "Read replicas" in the module docs of
//! `cache`). The refresh machine runs each build inside `scope`, with the least position
//! of the source its version requires (`Version::position`); the web layer's database
//! reads ask `required` and pick a server that has replayed that far, or the primary.
//! Outside a build (writes, admin pages, sign-in) there is no requirement: the primary.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

/// The position of the source's write log now (PostgreSQL: `pg_current_wal_insert_lsn()`
/// on the primary), or `None` if it cannot be read. Configured by the web layer
/// (`CacheConfig::source_position`).
pub type PositionSource = Arc<dyn Fn() -> BoxFuture<'static, Option<u64>> + Send + Sync>;

/// What a build's reads need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Required {
    /// Only the primary will do (a token carried no position, or was missing).
    Primary,
    /// Any server that has replayed at least this position (or the primary).
    AtLeast(u64),
}

tokio::task_local! {
    static REQUIRED: Required;
}

/// Runs a build whose version requires `position` (`None`: the primary).
pub fn scope<F: Future>(position: Option<u64>, fut: F) -> impl Future<Output = F::Output> {
    let required = position.map_or(Required::Primary, Required::AtLeast);
    REQUIRED.scope(required, fut)
}

/// What the build running on this task requires; `None` outside a build.
pub fn required() -> Option<Required> {
    REQUIRED.try_with(|r| *r).ok()
}
