//! The model-hook seam (the seed's `post_save` / `post_delete` signals): code that must
//! react to committed writes implements `ModelHooks` and is registered on the
//! `PropertyRepository`. Hooks run after the transaction commits, never before, and the
//! repository returns to its caller only after every hook has finished — so a write is
//! acknowledged only once its invalidation has happened (or been made pending).

use futures_util::future::BoxFuture;

use super::property::Property;

pub trait ModelHooks: Send + Sync {
    fn after_insert<'a>(&'a self, property: &'a Property) -> BoxFuture<'a, ()>;

    /// After a batch committed in one transaction (`seed`). By default, once per row;
    /// a hook whose work does not depend on the row may do it once.
    fn after_insert_many<'a>(&'a self, properties: &'a [Property]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for property in properties {
                self.after_insert(property).await;
            }
        })
    }

    fn after_update<'a>(&'a self, property: &'a Property) -> BoxFuture<'a, ()>;
    fn after_delete<'a>(&'a self, property: &'a Property) -> BoxFuture<'a, ()>;
}
