//! The cache's `ModelHooks` implementation (the seed's signal receivers): after every
//! committed write, replace the generation and delete `PREFIX:all_properties`. One
//! atomic `MULTI` of two commands — O(1), no `KEYS`/`SCAN` — makes every cached page
//! and query result unreachable (the argument is in the `cache` module docs).

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::Cache;
use crate::models::hooks::ModelHooks;
use crate::models::property::Property;

pub struct CacheInvalidation {
    cache: Cache,
}

impl CacheInvalidation {
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }

    async fn invalidate(&self, what: &str, property: &Property) {
        if self.cache.invalidate().await {
            log::debug!("cache invalidated after {what} of property {}", property.id);
        }
    }
}

impl ModelHooks for CacheInvalidation {
    fn after_insert<'a>(&'a self, property: &'a Property) -> BoxFuture<'a, ()> {
        self.invalidate("insert", property).boxed()
    }

    /// One invalidation covers the whole batch.
    fn after_insert_many<'a>(&'a self, properties: &'a [Property]) -> BoxFuture<'a, ()> {
        async move {
            if self.cache.invalidate().await {
                log::debug!(
                    "cache invalidated after inserting {} properties",
                    properties.len()
                );
            }
        }
        .boxed()
    }

    fn after_update<'a>(&'a self, property: &'a Property) -> BoxFuture<'a, ()> {
        self.invalidate("update", property).boxed()
    }

    fn after_delete<'a>(&'a self, property: &'a Property) -> BoxFuture<'a, ()> {
        self.invalidate("delete", property).boxed()
    }
}
