//! The model-hook seam (the seed's `post_save` / `post_delete` signals): code that must
//! react to committed writes implements `ModelHooks` and is registered on the
//! `PropertyRepository`. Hooks run after the transaction commits, never before, and the
//! repository returns to its caller only after every hook has finished — so a write is
//! acknowledged only once its invalidation has happened (or been made pending).

use futures_util::future::BoxFuture;

use super::property::Property;

/// One committed write, as the hooks see it.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// Rows inserted in one transaction: one from a form, a whole batch from `seed`.
    Inserted(&'a [Property]),
    /// The row as it was just before the update (read in the same transaction, under
    /// its row lock) and as the update left it.
    Updated {
        before: &'a Property,
        after: &'a Property,
    },
    Deleted(&'a Property),
}

pub trait ModelHooks: Send + Sync {
    /// Called once per committed write (a batch insert is one write). `position`: where
    /// the write's commit ends in PostgreSQL's log (`pg_current_wal_insert_lsn()` read on
    /// its connection after `COMMIT`, as a number), if that could be read.
    fn after_commit<'a>(&'a self, change: Change<'a>, position: Option<u64>) -> BoxFuture<'a, ()>;
}
