//! The one write path for listings and their photos. CLI `seed` and the admin forms both go through
//! `PropertyRepository`, so every committed insert, update and delete runs the hooks —
//! once per write, through `committed`.

use std::sync::Arc;

use super::hooks::{Change, ModelHooks};
use super::photo::{self, PhotoChanges, PhotoRuleError, PhotosByListing, TxError};
use super::property::{Property, PropertyData, PropertyFilter, Sort};
use crate::db::{self, PgConn, PgPool, Replicas, write_position};
use crate::error::AppError;

/// The outcome of a write with photos.
#[derive(Debug)]
pub enum Saved {
    Written(Property),
    /// No listing has that id: nothing written.
    NotFound,
    /// A photo rule refused the change: nothing written.
    Refused(PhotoRuleError),
}

#[derive(Clone)]
pub struct PropertyRepository {
    pool: PgPool,
    /// Where cache refills may read (`db::replicas`); everything else reads `pool`.
    replicas: Arc<Replicas>,
    hooks: Arc<Vec<Arc<dyn ModelHooks>>>,
}

impl PropertyRepository {
    pub fn new(pool: PgPool, replicas: Arc<Replicas>, hooks: Vec<Arc<dyn ModelHooks>>) -> Self {
        Self {
            pool,
            replicas,
            hooks: Arc::new(hooks),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn get(&self, id: i64) -> Result<Option<Property>, AppError> {
        self.replicas
            .read(&self.pool, move |conn| Ok(Property::find(conn, id)?))
            .await
    }

    pub async fn list(
        &self,
        filter: PropertyFilter,
        sort: Sort,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Property>, i64), AppError> {
        self.replicas
            .read(&self.pool, move |conn| {
                Ok(Property::search(conn, &filter, sort, limit, offset)?)
            })
            .await
    }

    pub async fn insert(&self, data: PropertyData) -> Result<Property, AppError> {
        let (property, position) = self
            .write(move |conn| Ok(Property::insert(conn, &data)?))
            .await?;
        self.committed(Change::Inserted(std::slice::from_ref(&property)), position)
            .await;
        Ok(property)
    }

    /// Inserts all rows in one statement, then runs the hooks once for the whole batch.
    pub async fn insert_many(&self, data: Vec<PropertyData>) -> Result<Vec<Property>, AppError> {
        let (rows, position) = self
            .write(move |conn| Ok(Property::insert_many(conn, &data)?))
            .await?;
        self.committed(Change::Inserted(&rows), position).await;
        Ok(rows)
    }

    /// The updated row; `Ok(None)` when no property has that id (nothing written, no
    /// hook run).
    pub async fn update(&self, id: i64, data: PropertyData) -> Result<Option<Property>, AppError> {
        let (updated, position) = self
            .write(move |conn| Ok(Property::update(conn, id, &data)?))
            .await?;
        let Some((before, after)) = updated else {
            return Ok(None);
        };
        self.committed(
            Change::Updated {
                before: &before,
                after: &after,
            },
            position,
        )
        .await;
        Ok(Some(after))
    }

    /// Inserts a listing with its photos (one transaction), then runs the hooks once.
    /// `Refused` when a photo rule says no: nothing written, no hook run.
    pub async fn insert_with_photos(
        &self,
        data: PropertyData,
        photos: PhotoChanges,
    ) -> Result<Saved, AppError> {
        let (written, position) = self
            .write(move |conn| refusable(Property::insert_with_photos(conn, &data, &photos)))
            .await?;
        match written {
            Ok(property) => {
                self.committed(Change::Inserted(std::slice::from_ref(&property)), position)
                    .await;
                Ok(Saved::Written(property))
            }
            Err(why) => Ok(Saved::Refused(why)),
        }
    }

    /// Updates a listing and its photos (one transaction), then runs the hooks as for
    /// any update: a photo change is a write to its listing, so its pages change at once.
    pub async fn update_with_photos(
        &self,
        id: i64,
        data: PropertyData,
        photos: PhotoChanges,
    ) -> Result<Saved, AppError> {
        let (written, position) = self
            .write(move |conn| refusable(Property::update_with_photos(conn, id, &data, &photos)))
            .await?;
        match written {
            Ok(Some((before, after))) => {
                self.committed(
                    Change::Updated {
                        before: &before,
                        after: &after,
                    },
                    position,
                )
                .await;
                Ok(Saved::Written(after))
            }
            Ok(None) => Ok(Saved::NotFound),
            Err(why) => Ok(Saved::Refused(why)),
        }
    }

    /// `insert_many`, each listing linked to photos already stored (`seed`).
    pub async fn insert_many_with_photos(
        &self,
        data: Vec<PropertyData>,
        photos: Vec<Vec<String>>,
    ) -> Result<Vec<Property>, AppError> {
        let (rows, position) = self
            .write(move |conn| Ok(Property::insert_many_with_photos(conn, &data, &photos)?))
            .await?;
        self.committed(Change::Inserted(&rows), position).await;
        Ok(rows)
    }

    /// The photos of listings `ids`, cover first (in a cache build, from a replica that
    /// has replayed what the build needs, like the rows).
    pub async fn photos_of(&self, ids: Vec<i64>) -> Result<PhotosByListing, AppError> {
        self.replicas
            .read(&self.pool, move |conn| Ok(photo::of_listings(conn, &ids)?))
            .await
    }

    /// The deleted row; `Ok(None)` when no property has that id.
    pub async fn delete(&self, id: i64) -> Result<Option<Property>, AppError> {
        let (deleted, position) = self
            .write(move |conn| Ok(Property::delete(conn, id)?))
            .await?;
        if let Some(property) = &deleted {
            self.committed(Change::Deleted(property), position).await;
        }
        Ok(deleted)
    }

    /// Runs `f` on the primary and then, on its connection after its commit, reads where
    /// the commit ended (`db::write_position`): the position the hooks are given.
    async fn write<T, F>(&self, f: F) -> Result<(T, Option<u64>), AppError>
    where
        F: FnOnce(&mut PgConn) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        db::run(&self.pool, move |conn| {
            let written = f(conn)?;
            Ok((written, write_position(conn)))
        })
        .await
    }

    /// Runs every hook, in order, for a write that has committed at `position` (its
    /// commit LSN, read on its connection after the commit; `None` if that failed).
    async fn committed(&self, change: Change<'_>, position: Option<u64>) {
        for hook in self.hooks.iter() {
            hook.after_commit(change, position).await;
        }
    }
}

/// A photo write's outcome: the row, or the photo rule that refused it (nothing was
/// written), or a database error.
fn refusable<T>(written: Result<T, TxError>) -> Result<Result<T, PhotoRuleError>, AppError> {
    match written {
        Ok(row) => Ok(Ok(row)),
        Err(TxError::Refused(why)) => Ok(Err(why)),
        Err(TxError::Db(e)) => Err(e.into()),
    }
}
