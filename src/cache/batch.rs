//! Batched reads of tokens (the generation and dependency tokens) for hits served from
//! the in-process tier.
//!
//! Every such hit must read its tokens from Redis. A read can serve every request that
//! *arrived before it was sent* (the module docs of `cache`, "In-process tier"). So
//! each worker thread keeps at most one read in flight, and requests that arrive
//! meanwhile add the tokens they need to the *next* read (one `MGET` of all of them),
//! which is sent as soon as the current one returns. No request ever takes a read that
//! was sent before it arrived.
//!
//! Under load this turns one Redis round trip per hit into one per round-trip time per
//! worker; a lone request still costs exactly one read. State is per thread (actix runs
//! each worker on its own single-threaded runtime), so no lock is taken.
//!
//! A waiting request is woken once, when its read is done: every wake costs a poll of
//! its connection (actix parses the socket buffer again). One of them (the first to
//! poll a read on the wire) polls the read itself; when it finishes it wakes the others
//! and one waiter of the next read, which then sends it. A request that gives up while
//! polling a read hands it to another waiter; a read nobody waits for any more is
//! dropped, and the next one goes out at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::future::LocalBoxFuture;

use super::request::Values;
use super::store::CacheUnavailable;

/// A read of the keys given: their values, in order.
pub type ReadFuture = LocalBoxFuture<'static, Result<Vec<Option<Vec<u8>>>, CacheUnavailable>>;

/// One batched read.
struct Batch {
    /// The keys asked for, each once, with its position in the read.
    keys: HashMap<String, usize>,
    /// Sends the read (the function of the request that opened the batch).
    send: Option<Box<dyn FnOnce(Vec<String>) -> ReadFuture>>,
    state: State,
    /// Requests waiting for it, by number, to be woken when it is done.
    waiting: Vec<(u64, Waker)>,
}

enum State {
    /// Behind the read in flight.
    Queued,
    /// On the wire, polled by one of the waiting requests (`driver`).
    Sending {
        read: ReadFuture,
        driver: Option<u64>,
    },
    Done(Result<Values, CacheUnavailable>),
}

type Shared = Rc<RefCell<Batch>>;

#[derive(Default)]
struct Batches {
    next_waiter: u64,
    /// The read on the wire, if any.
    in_flight: Option<Shared>,
    /// The read that will be sent when the one in flight returns: requests join it and
    /// add the keys they need.
    queued: Option<Shared>,
}

thread_local! {
    /// Per cache (by its store's process-unique id) and per worker thread.
    static BATCHES: RefCell<HashMap<u64, Rc<RefCell<Batches>>>> = RefCell::default();
}

/// Reads `keys` through `read` (one Redis `MGET` of every key asked for by the requests
/// in its batch), batched as described above: the read's values and, for each of
/// `keys`, the position of its value among them. `cache_id` tells caches of one process
/// apart (tests run several).
pub async fn read_batched<F>(
    cache_id: u64,
    keys: &[String],
    read: F,
) -> Result<(Values, Vec<usize>), CacheUnavailable>
where
    F: FnOnce(Vec<String>) -> ReadFuture + 'static,
{
    let batches = BATCHES.with(|all| all.borrow_mut().entry(cache_id).or_default().clone());
    let (batch, positions, waiter) = {
        let mut b = batches.borrow_mut();
        b.next_waiter += 1;
        let waiter = b.next_waiter;
        let batch = match &b.queued {
            Some(queued) => queued.clone(),
            None => {
                let batch = Rc::new(RefCell::new(Batch {
                    keys: HashMap::new(),
                    send: Some(Box::new(read)),
                    state: State::Queued,
                    waiting: Vec::new(),
                }));
                if b.in_flight.is_some() {
                    b.queued = Some(batch.clone());
                } else {
                    b.in_flight = Some(batch.clone());
                }
                batch
            }
        };
        let positions = add(&mut batch.borrow_mut().keys, keys);
        if b.in_flight.as_ref().is_some_and(|f| Rc::ptr_eq(f, &batch)) {
            // A new read with none ahead of it: it goes out now, polled by this request.
            send(&mut batch.borrow_mut());
        }
        (batch, positions, waiter)
    };
    let values = Wait {
        batches,
        batch,
        waiter,
        done: false,
    }
    .await?;
    Ok((values, positions))
}

/// Adds `keys` to a read (each key once): their positions in it.
fn add(wanted: &mut HashMap<String, usize>, keys: &[String]) -> Vec<usize> {
    keys.iter()
        .map(|key| match wanted.get(key) {
            Some(&at) => at,
            None => {
                let at = wanted.len();
                wanted.insert(key.clone(), at);
                at
            }
        })
        .collect()
}

/// Puts a batch's read on the wire (nobody joins it any more).
fn send(batch: &mut Batch) {
    let mut keys = vec![String::new(); batch.keys.len()];
    for (key, at) in batch.keys.drain() {
        keys[at] = key;
    }
    let send = batch.send.take().expect("a batch is sent once");
    batch.state = State::Sending {
        read: send(keys),
        driver: None,
    };
}

/// The read in flight is over (`done`): send the queued one, if anybody still waits for
/// it, and wake one of its waiters to poll it.
fn next_read(batches: &RefCell<Batches>, done: &Shared) {
    let mut b = batches.borrow_mut();
    if !b.in_flight.as_ref().is_some_and(|f| Rc::ptr_eq(f, done)) {
        return;
    }
    b.in_flight = None;
    if let Some(next) = b.queued.take() {
        let mut batch = next.borrow_mut();
        if let Some((_, waker)) = batch.waiting.pop() {
            send(&mut batch);
            waker.wake();
            drop(batch);
            b.in_flight = Some(next);
        }
    }
}

/// One request's wait for its batch.
struct Wait {
    batches: Rc<RefCell<Batches>>,
    batch: Shared,
    waiter: u64,
    done: bool,
}

impl Future for Wait {
    type Output = Result<Values, CacheUnavailable>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut batch = this.batch.borrow_mut();
        let Batch { state, waiting, .. } = &mut *batch;
        match state {
            State::Done(result) => {
                this.done = true;
                Poll::Ready(result.clone())
            }
            State::Sending { read, driver } if driver.is_none_or(|d| d == this.waiter) => {
                *driver = Some(this.waiter);
                let Poll::Ready(result) = read.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                let result = result.map(Rc::new);
                *state = State::Done(result.clone());
                for (_, waker) in waiting.drain(..) {
                    waker.wake();
                }
                drop(batch);
                this.done = true;
                next_read(&this.batches, &this.batch);
                Poll::Ready(result)
            }
            _ => {
                match waiting.iter_mut().find(|(id, _)| *id == this.waiter) {
                    Some((_, waker)) => waker.clone_from(cx.waker()),
                    None => waiting.push((this.waiter, cx.waker().clone())),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Wait {
    /// A request that gives up (its client went away): a read it was polling is handed
    /// to another waiter, or dropped if nobody waits for it any more.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut batch = self.batch.borrow_mut();
        let Batch { state, waiting, .. } = &mut *batch;
        waiting.retain(|(id, _)| *id != self.waiter);
        let State::Sending { driver, .. } = state else {
            return;
        };
        if driver.is_some_and(|d| d != self.waiter) {
            return;
        }
        *driver = None;
        if let Some((_, waker)) = waiting.pop() {
            waker.wake();
            return;
        }
        *state = State::Done(Err(CacheUnavailable("nobody waits for this read".into())));
        drop(batch);
        next_read(&self.batches, &self.batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::cell::Cell;
    use std::time::Duration;

    /// A fake `MGET` that counts reads and answers each key with `key@read number`.
    fn counting_read(reads: Rc<Cell<u32>>) -> impl Fn(Vec<String>) -> ReadFuture {
        move |keys| {
            let reads = reads.clone();
            async move {
                // Counted when it is sent, not when it is created.
                reads.set(reads.get() + 1);
                let n = reads.get();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys
                    .iter()
                    .map(|k| Some(format!("{k}@{n}").into_bytes()))
                    .collect())
            }
            .boxed_local()
        }
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// What `read_batched` answered for each of `names`.
    async fn read_values(
        cache_id: u64,
        names: &[&str],
        reads: Rc<Cell<u32>>,
    ) -> Result<(usize, Vec<String>), CacheUnavailable> {
        let (values, positions) =
            read_batched(cache_id, &keys(names), counting_read(reads)).await?;
        let mine = positions
            .iter()
            .map(|&at| String::from_utf8(values[at].clone().unwrap()).unwrap())
            .collect();
        Ok((values.len(), mine))
    }

    #[tokio::test]
    async fn requests_arriving_during_a_read_share_the_next_one_never_the_current_one() {
        let reads = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let read = |names: &'static [&'static str]| {
                    let reads = reads.clone();
                    tokio::task::spawn_local(read_values(1, names, reads))
                };
                let first = read(&["g"]);
                tokio::time::sleep(Duration::from_millis(5)).await; // read 1 is on the wire
                let later: Vec<_> = (0..10)
                    .map(|i| read(if i % 2 == 0 { &["g", "a"] } else { &["b", "g"] }))
                    .collect();
                assert_eq!(first.await.unwrap().unwrap(), (1, vec!["g@1".to_string()]));
                for (i, l) in later.into_iter().enumerate() {
                    let (sent, mine) = l.await.unwrap().unwrap();
                    assert_eq!(sent, 3, "one read of every key asked for, each once");
                    let expected = if i % 2 == 0 {
                        ["g@2", "a@2"]
                    } else {
                        ["b@2", "g@2"]
                    };
                    assert_eq!(mine, expected, "each request gets its own keys' values");
                }
            })
            .await;
        assert_eq!(reads.get(), 2, "eleven requests, two reads");
    }

    /// A future that counts how often it is polled.
    struct Counted<F> {
        polls: Rc<Cell<u32>>,
        inner: Pin<Box<F>>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.set(self.polls.get() + 1);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn a_waiting_request_is_woken_once_not_when_the_read_ahead_of_it_returns() {
        let reads = Rc::new(Cell::new(0));
        let polls = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let first = tokio::task::spawn_local(read_values(3, &["g"], reads.clone()));
                tokio::time::sleep(Duration::from_millis(5)).await; // read 1 is on the wire
                let later: Vec<_> = (0..10)
                    .map(|_| {
                        tokio::task::spawn_local(Counted {
                            polls: polls.clone(),
                            inner: Box::pin(read_values(3, &["g", "a"], reads.clone())),
                        })
                    })
                    .collect();
                first.await.unwrap().unwrap();
                for l in later {
                    assert_eq!(l.await.unwrap().unwrap().1, ["g@2", "a@2"]);
                }
            })
            .await;
        assert_eq!(reads.get(), 2);
        // Each: a first poll and one when read 2 is done; one of them also polls read 2
        // onto the wire. Waking all ten when read 1 returned would make it 30.
        assert!(polls.get() <= 21, "{} polls for ten requests", polls.get());
    }

    #[tokio::test]
    async fn a_request_that_gives_up_while_polling_a_read_hands_it_on() {
        let reads = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let first = tokio::task::spawn_local(read_values(4, &["g"], reads.clone()));
                tokio::time::sleep(Duration::from_millis(5)).await;
                let later: Vec<_> = (0..3)
                    .map(|_| tokio::task::spawn_local(read_values(4, &["g"], reads.clone())))
                    .collect();
                tokio::time::sleep(Duration::from_millis(25)).await; // read 2 on the wire
                // The one polling read 2 gives up (the last to wait is woken to send it),
                // and then the one it was handed to.
                later[2].abort();
                later[1].abort();
                first.await.unwrap().unwrap();
                let last = later.into_iter().next().unwrap();
                let got = tokio::time::timeout(Duration::from_millis(100), last)
                    .await
                    .expect("another waiter took the read over")
                    .unwrap()
                    .unwrap();
                assert_eq!(got.1, ["g@2"]);
            })
            .await;
        assert_eq!(reads.get(), 2, "read 2 was not sent again");
    }

    #[tokio::test]
    async fn a_read_nobody_waits_for_makes_way_for_the_next() {
        let reads = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let first = tokio::task::spawn_local(read_values(5, &["g"], reads.clone()));
                tokio::time::sleep(Duration::from_millis(5)).await; // read 1 on the wire
                let second = tokio::task::spawn_local(read_values(5, &["g"], reads.clone()));
                tokio::time::sleep(Duration::from_millis(1)).await; // queued behind it
                first.abort();
                // Read 1 is dropped with its last waiter: read 2 goes out at once.
                let got = tokio::time::timeout(Duration::from_millis(30), second)
                    .await
                    .expect("the queued read was sent")
                    .unwrap()
                    .unwrap();
                assert_eq!(got.1, ["g@2"]);
                // And the next request after it starts a read of its own.
                assert_eq!(
                    read_values(5, &["g"], reads.clone()).await.unwrap().1,
                    ["g@3"]
                );
            })
            .await;
    }

    #[tokio::test]
    async fn a_lone_request_costs_one_read_each_time() {
        let reads = Rc::new(Cell::new(0));
        for expected in 1..=3 {
            let got = read_values(2, &["g"], reads.clone()).await.unwrap();
            assert_eq!(got, (1, vec![format!("g@{expected}")]));
        }
    }
}
