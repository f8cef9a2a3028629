//! The one write path for listings. CLI `seed` and the admin forms both go through
//! `PropertyRepository`, so every committed insert, update and delete runs the hooks —
//! once per write, through `committed`.

use std::sync::Arc;

use super::hooks::{Change, ModelHooks};
use super::property::{Property, PropertyData, PropertyFilter, Sort};
use crate::db::{self, PgPool};
use crate::error::AppError;

#[derive(Clone)]
pub struct PropertyRepository {
    pool: PgPool,
    hooks: Arc<Vec<Arc<dyn ModelHooks>>>,
}

impl PropertyRepository {
    pub fn new(pool: PgPool, hooks: Vec<Arc<dyn ModelHooks>>) -> Self {
        Self {
            pool,
            hooks: Arc::new(hooks),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn get(&self, id: i64) -> Result<Option<Property>, AppError> {
        db::run(&self.pool, move |conn| Ok(Property::find(conn, id)?)).await
    }

    pub async fn list(
        &self,
        filter: PropertyFilter,
        sort: Sort,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Property>, i64), AppError> {
        db::run(&self.pool, move |conn| {
            Ok(Property::search(conn, &filter, sort, limit, offset)?)
        })
        .await
    }

    pub async fn insert(&self, data: PropertyData) -> Result<Property, AppError> {
        let property = db::run(&self.pool, move |conn| Ok(Property::insert(conn, &data)?)).await?;
        self.committed(Change::Inserted(std::slice::from_ref(&property)))
            .await;
        Ok(property)
    }

    /// Inserts all rows in one statement, then runs the hooks once for the whole batch.
    pub async fn insert_many(&self, data: Vec<PropertyData>) -> Result<Vec<Property>, AppError> {
        let rows = db::run(&self.pool, move |conn| {
            Ok(Property::insert_many(conn, &data)?)
        })
        .await?;
        self.committed(Change::Inserted(&rows)).await;
        Ok(rows)
    }

    /// The updated row; `Ok(None)` when no property has that id (nothing written, no
    /// hook run).
    pub async fn update(&self, id: i64, data: PropertyData) -> Result<Option<Property>, AppError> {
        let updated = db::run(&self.pool, move |conn| {
            Ok(Property::update(conn, id, &data)?)
        })
        .await?;
        let Some((before, after)) = updated else {
            return Ok(None);
        };
        self.committed(Change::Updated {
            before: &before,
            after: &after,
        })
        .await;
        Ok(Some(after))
    }

    /// The deleted row; `Ok(None)` when no property has that id.
    pub async fn delete(&self, id: i64) -> Result<Option<Property>, AppError> {
        let deleted = db::run(&self.pool, move |conn| Ok(Property::delete(conn, id)?)).await?;
        if let Some(property) = &deleted {
            self.committed(Change::Deleted(property)).await;
        }
        Ok(deleted)
    }

    /// Runs every hook, in order, for a write that has committed.
    async fn committed(&self, change: Change<'_>) {
        for hook in self.hooks.iter() {
            hook.after_commit(change).await;
        }
    }
}
