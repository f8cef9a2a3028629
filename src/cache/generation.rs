//! Batched reads of tokens (the generation and dependency tokens) for hits served from
//! the in-process tier.
//!
//! Every such hit must read its tokens from Redis. A read can serve every request that
//! *arrived before it was sent*: for such a request the values are at least as new as
//! anything acknowledged before the request began, which is all the consistency argument
//! of `cache` needs (the request is then linearized at the moment of the read). So each
//! worker thread keeps at most one read in flight, and requests that arrive meanwhile
//! add the tokens they need to the *next* read (one `MGET` of all of them), which is sent
//! as soon as the current one returns. No request ever takes a read that was sent before
//! it arrived.
//!
//! Under load this turns one Redis round trip per hit into one per round-trip time per
//! worker; a lone request still costs exactly one read. State is per thread (actix runs
//! each worker on its own single-threaded runtime), so no lock is taken.
//!
//! Within one read-only request (GET or HEAD, run inside `request_scope`), the first
//! *generation* read is remembered and used by the request's later lookups (a page miss
//! renders from `all_properties` and a result page: three lookups). That is the same
//! argument once more: the token was read after the request arrived, so every write
//! acknowledged before that is behind it. Dependency tokens are read afresh by every
//! lookup. A request that invalidates, or sees Redis fail, forgets the generation
//! (`forget`), and reads afresh.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};

use super::store::CacheUnavailable;

/// The values of the keys read, by key.
pub type Values = Rc<HashMap<String, Option<String>>>;
type Read = Shared<LocalBoxFuture<'static, Result<Values, CacheUnavailable>>>;
type Wanted = Rc<RefCell<BTreeSet<String>>>;

#[derive(Default)]
struct Batches {
    next_id: u64,
    /// The read on the wire, if any.
    in_flight: Option<(u64, Read)>,
    /// The read that will be sent when the one in flight returns: requests join it and
    /// add the keys they need.
    queued: Option<(u64, Wanted, Read)>,
}

tokio::task_local! {
    /// The token this request has read, if it is a read-only request (`request_scope`).
    static REQUEST: RefCell<Remembered>;
}

struct Remembered {
    enabled: bool,
    /// By cache (its store's id): tests run several caches in one process.
    token: Option<(u64, String)>,
}

/// Runs one request; with `read_only`, the first generation token it reads is reused by
/// its later lookups (see the module docs). Not an `async fn`, which would hold `fut`
/// twice.
pub fn request_scope<F: Future>(read_only: bool, fut: F) -> impl Future<Output = F::Output> {
    let remembered = Remembered {
        enabled: read_only,
        token: None,
    };
    REQUEST.scope(RefCell::new(remembered), fut)
}

/// The token this request read from `cache_id` before, if any.
pub fn remembered(cache_id: u64) -> Option<String> {
    REQUEST
        .try_with(|r| match &r.borrow().token {
            Some((id, token)) if *id == cache_id => Some(token.clone()),
            _ => None,
        })
        .ok()
        .flatten()
}

/// Remembers `token` for the rest of this request (the first one read wins).
pub fn remember(cache_id: u64, token: &str) {
    let _ = REQUEST.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.enabled && r.token.is_none() {
            r.token = Some((cache_id, token.to_string()));
        }
    });
}

/// Forgets the token: the request invalidated, or saw Redis fail.
pub fn forget() {
    let _ = REQUEST.try_with(|r| r.borrow_mut().token = None);
}

thread_local! {
    /// Per cache (by its store's process-unique id) and per worker thread.
    static BATCHES: RefCell<HashMap<u64, Rc<RefCell<Batches>>>> = RefCell::default();
}

/// Reads `keys` through `read` (one Redis `MGET` of every key asked for by the requests
/// in its batch), batched as described above. `cache_id` tells caches of one process
/// apart (tests run several).
pub async fn read_batched<F>(
    cache_id: u64,
    keys: &[String],
    read: F,
) -> Result<Values, CacheUnavailable>
where
    F: Fn(Vec<String>) -> LocalBoxFuture<'static, Result<Vec<Option<String>>, CacheUnavailable>>
        + 'static,
{
    let batches = BATCHES.with(|all| all.borrow_mut().entry(cache_id).or_default().clone());
    let joined = {
        let mut b = batches.borrow_mut();
        if let Some((_, wanted, queued)) = &b.queued {
            wanted.borrow_mut().extend(keys.iter().cloned());
            queued.clone()
        } else {
            b.next_id += 1;
            let id = b.next_id;
            let ahead = b.in_flight.as_ref().map(|(_, r)| r.clone());
            let state = batches.clone();
            let wanted: Wanted = Rc::new(RefCell::new(keys.iter().cloned().collect()));
            let to_send = wanted.clone();
            let fut: LocalBoxFuture<'static, _> = async move {
                if let Some(ahead) = ahead {
                    let _ = ahead.await;
                    // This read goes on the wire now: later arrivals must queue behind it.
                    let mut b = state.borrow_mut();
                    if b.queued.as_ref().is_some_and(|(q, _, _)| *q == id) {
                        b.in_flight = b.queued.take().map(|(id, _, read)| (id, read));
                    }
                }
                let keys: Vec<String> = to_send.borrow().iter().cloned().collect();
                let result = read(keys.clone()).await;
                let mut b = state.borrow_mut();
                if b.in_flight.as_ref().is_some_and(|(f, _)| *f == id) {
                    b.in_flight = None;
                }
                result.map(|values| Rc::new(keys.into_iter().zip(values).collect()))
            }
            .boxed_local();
            let shared = fut.shared();
            if b.in_flight.is_some() {
                b.queued = Some((id, wanted, shared.clone()));
            } else {
                b.in_flight = Some((id, shared.clone()));
            }
            shared
        }
    };
    joined.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    /// A fake `MGET` that counts reads and answers each key with `key@read number`.
    fn counting_read(
        reads: Rc<Cell<u32>>,
    ) -> impl Fn(Vec<String>) -> LocalBoxFuture<'static, Result<Vec<Option<String>>, CacheUnavailable>>
    {
        move |keys| {
            let reads = reads.clone();
            async move {
                // Counted when it is sent, not when it is created.
                reads.set(reads.get() + 1);
                let n = reads.get();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys.iter().map(|k| Some(format!("{k}@{n}"))).collect())
            }
            .boxed_local()
        }
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn a_read_only_request_reuses_its_first_token_until_it_forgets_it() {
        request_scope(true, async {
            assert_eq!(remembered(1), None);
            remember(1, "g1");
            remember(1, "g2");
            assert_eq!(remembered(1).as_deref(), Some("g1"), "the first read wins");
            assert_eq!(remembered(2), None, "another cache's token is its own");
            forget();
            assert_eq!(remembered(1), None);
        })
        .await;
        request_scope(false, async {
            remember(1, "g1");
            assert_eq!(remembered(1), None, "requests that may write never reuse");
        })
        .await;
        remember(1, "g1");
        assert_eq!(remembered(1), None, "outside a request nothing is kept");
    }

    #[tokio::test]
    async fn requests_arriving_during_a_read_share_the_next_one_never_the_current_one() {
        let reads = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let read = |names: &'static [&'static str]| {
                    let reads = reads.clone();
                    tokio::task::spawn_local(async move {
                        read_batched(1, &keys(names), counting_read(reads)).await
                    })
                };
                let first = read(&["g"]);
                tokio::time::sleep(Duration::from_millis(5)).await; // read 1 is on the wire
                let later: Vec<_> = (0..10)
                    .map(|i| read(if i % 2 == 0 { &["g", "a"] } else { &["b"] }))
                    .collect();
                assert_eq!(first.await.unwrap().unwrap()["g"].as_deref(), Some("g@1"));
                for l in later {
                    let values = l.await.unwrap().unwrap();
                    assert_eq!(values.len(), 3, "one read of every key asked for");
                    assert!(
                        values
                            .values()
                            .all(|v| v.as_deref().unwrap().ends_with("@2"))
                    );
                }
            })
            .await;
        assert_eq!(reads.get(), 2, "eleven requests, two reads");
    }

    #[tokio::test]
    async fn a_lone_request_costs_one_read_each_time() {
        let reads = Rc::new(Cell::new(0));
        for expected in 1..=3 {
            let got = read_batched(2, &keys(&["g"]), counting_read(reads.clone()))
                .await
                .unwrap();
            assert_eq!(got["g"], Some(format!("g@{expected}")));
        }
    }
}
