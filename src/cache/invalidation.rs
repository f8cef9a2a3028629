//! The cache's `ModelHooks` implementation (the seed's signal receivers): after every
//! committed write — a whole `seed` batch counts as one — replace the generation and
//! delete `PREFIX:all_properties`. One atomic `MULTI` of two commands — O(1), no
//! `KEYS`/`SCAN` — makes every cached page and query result unreachable (the argument is
//! in the `cache` module docs).

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::Cache;
use crate::models::hooks::{Change, ModelHooks};

pub struct CacheInvalidation {
    cache: Cache,
}

impl CacheInvalidation {
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }
}

impl ModelHooks for CacheInvalidation {
    fn after_commit<'a>(&'a self, change: Change<'a>) -> BoxFuture<'a, ()> {
        async move {
            if self.cache.invalidate().await {
                match change {
                    Change::Inserted(rows) => {
                        log::debug!(
                            "cache invalidated after inserting {} properties",
                            rows.len()
                        )
                    }
                    Change::Updated { after, .. } => {
                        log::debug!("cache invalidated after update of property {}", after.id)
                    }
                    Change::Deleted(row) => {
                        log::debug!("cache invalidated after delete of property {}", row.id)
                    }
                }
            }
        }
        .boxed()
    }
}
