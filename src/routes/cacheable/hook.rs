//! The cache's model hook (the seed's signal receivers) and the admin's purges. After
//! each committed write — a whole `seed` batch counts as one — the hook replaces that
//! write's tokens (`rules::tokens_replaced_by`) and deletes `PREFIX:all_properties`, in
//! one `MULTI`, before the write is acknowledged: so once a write is acknowledged no page
//! shows the old data (see the module docs of `cache`). A purge replaces tokens the same
//! way, for a listing or a URL an admin names.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::rules::{canonical_page, token, tokens_replaced_by};
use crate::cache::Cache;
use crate::db::PgPool;
use crate::error::AppError;
use crate::models::hooks::{Change, ModelHooks};
use crate::models::property::Property;

pub struct CacheInvalidation {
    cache: Cache,
    db: PgPool,
}

impl CacheInvalidation {
    pub fn new(cache: Cache, db: PgPool) -> Self {
        Self { cache, db }
    }

    /// Drops every cached page that shows listing `id` (what an edit of it would drop):
    /// the tokens replaced, or `None` when no such listing exists (then only its own
    /// token is replaced, in case pages of it were cached before it was deleted).
    pub async fn purge_listing(&self, id: i64) -> Result<Option<Vec<String>>, AppError> {
        let row = crate::db::run(&self.db, move |conn| Ok(Property::find(conn, id)?)).await?;
        let (tokens, found) = match &row {
            Some(row) => (
                tokens_replaced_by(
                    &self.db,
                    Change::Updated {
                        before: row,
                        after: row,
                    },
                )
                .await,
                true,
            ),
            None => (vec![token::listing(id)], false),
        };
        self.cache.invalidate(&tokens, None).await;
        Ok(found.then_some(tokens))
    }

    /// Drops the cached page of one URL (any spelling): its entry, and — so that no
    /// instance's in-process copy outlives it — its narrowest token, which the pages
    /// sharing it lose too (a detail page's API twin; every price-sorted or every
    /// filtered page). `None` when the URL is not a cacheable page.
    pub async fn purge_url(&self, url: &str) -> Option<(String, String)> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let (canonical, deps) = canonical_page(path, query)?;
        let narrowest = deps.last()?.clone();
        self.cache.forget(&self.cache.keys().page(&canonical)).await;
        self.cache
            .invalidate(std::slice::from_ref(&narrowest), None)
            .await;
        Some((canonical, narrowest))
    }
}

impl ModelHooks for CacheInvalidation {
    fn after_commit<'a>(&'a self, change: Change<'a>, position: Option<u64>) -> BoxFuture<'a, ()> {
        async move {
            let tokens = tokens_replaced_by(&self.db, change).await;
            if self.cache.invalidate(&tokens, position).await {
                log::debug!("cache invalidated: {}", tokens.join(", "));
            }
        }
        .boxed()
    }
}
