//! Per-request token memory. Within one read-only request (GET or HEAD, run inside
//! `request_scope`), the first value used of each token is used by all of the request's
//! later lookups (a list page rendered from the query cache looks up several keys under
//! the same tokens); they read only tokens not seen yet. Every value was current after
//! the request arrived, so the request is answered as of those values; and an entry is
//! never tagged newer than what it was built from (see "Within one request" in the
//! module docs of `cache`). A request that invalidates, or sees Redis fail, forgets them
//! (`forget`) and reads afresh.

use std::cell::RefCell;
use std::sync::Arc;

tokio::task_local! {
    /// The token values this request used, if it is a read-only request.
    static REQUEST: RefCell<Remembered>;
}

struct Remembered {
    enabled: bool,
    /// Whether a lookup of this request read tokens from Redis.
    read_redis: bool,
    /// Each value used: the cache's store id (tests run several caches in one process),
    /// the token's name and its value.
    values: Vec<(u64, String, Arc<str>)>,
}

/// Runs one request; with `read_only`, the first value it uses of each token is reused
/// by its later lookups. Not an `async fn`, which would hold `fut` twice.
pub fn request_scope<F: Future>(read_only: bool, fut: F) -> impl Future<Output = F::Output> {
    let remembered = Remembered {
        enabled: read_only,
        read_redis: false,
        values: Vec::new(),
    };
    REQUEST.scope(RefCell::new(remembered), fut)
}

/// The value of token `name` of cache `cache_id` this request used before, if any.
pub fn recall(cache_id: u64, name: &str) -> Option<Arc<str>> {
    REQUEST
        .try_with(|r| {
            r.borrow()
                .values
                .iter()
                .find(|(id, n, _)| *id == cache_id && n == name)
                .map(|(_, _, value)| value.clone())
        })
        .ok()
        .flatten()
}

/// Remembers the value of token `name` for the rest of this request (the first one
/// wins: callers remember only values they did not recall).
pub fn remember(cache_id: u64, name: &str, value: &Arc<str>) {
    let _ = REQUEST.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.enabled
            && !r
                .values
                .iter()
                .any(|(id, n, _)| *id == cache_id && n == name)
        {
            r.values.push((cache_id, name.to_string(), value.clone()));
        }
    });
}

/// This request has read tokens from Redis: its later lookups take no value from what
/// the instance knows (`local.rs`), which may be older.
pub fn read_redis() {
    let _ = REQUEST.try_with(|r| r.borrow_mut().read_redis = true);
}

/// Whether this request has read tokens from Redis.
pub fn has_read_redis() -> bool {
    REQUEST.try_with(|r| r.borrow().read_redis).unwrap_or(false)
}

/// Forgets every value used: the request invalidated, or saw Redis fail.
pub fn forget() {
    let _ = REQUEST.try_with(|r| r.borrow_mut().values.clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_only_request_reuses_the_first_value_of_each_token_until_it_forgets() {
        request_scope(true, async {
            assert_eq!(recall(1, "rows"), None);
            remember(1, "rows", &Arc::from("a"));
            remember(1, "rows", &Arc::from("b"));
            assert_eq!(
                recall(1, "rows").as_deref(),
                Some("a"),
                "the first value wins"
            );
            assert_eq!(
                recall(2, "rows"),
                None,
                "another cache's tokens are its own"
            );
            forget();
            assert_eq!(recall(1, "rows"), None);
        })
        .await;
        request_scope(false, async {
            remember(1, "rows", &Arc::from("a"));
            assert_eq!(
                recall(1, "rows"),
                None,
                "a request that writes reads afresh"
            );
        })
        .await;
        remember(1, "rows", &Arc::from("a"));
        assert_eq!(recall(1, "rows"), None, "outside a request nothing is kept");
    }
}
