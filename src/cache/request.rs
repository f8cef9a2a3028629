//! Per-request token memory.
//!
//! Within one read-only request (GET or HEAD, run inside `request_scope`), the first
//! value read of each token is remembered and used by the request's later lookups (a
//! page rendered from the query cache looks up three keys, two of them under the same
//! tokens), which read only the tokens not read yet. That is the same argument once
//! more: every value was read after the request arrived, so every write acknowledged
//! before that is behind it. A request that invalidates, or sees Redis fail, forgets
//! them (`forget`), and reads afresh.

use std::cell::RefCell;
use std::rc::Rc;

/// The values one batched read returned, in the order of the keys it sent.
pub type Values = Rc<Vec<Option<Vec<u8>>>>;

tokio::task_local! {
    /// The tokens this request has read, if it is a read-only request (`request_scope`).
    static REQUEST: RefCell<Remembered>;
}

struct Remembered {
    enabled: bool,
    /// Every token read so far: each read's cache (its store's id: tests run several
    /// caches in one process), keys, values and the position of each key's value.
    reads: Vec<(u64, Vec<String>, Values, Vec<usize>)>,
}

/// A token value this request read: the read's values and its position among them.
pub type Known = Option<(Values, usize)>;

/// Runs one request; with `read_only`, the first value it reads of each token is reused
/// by its later lookups (see the module docs). Not an `async fn`, which would hold `fut`
/// twice.
pub fn request_scope<F: Future>(read_only: bool, fut: F) -> impl Future<Output = F::Output> {
    let remembered = Remembered {
        enabled: read_only,
        reads: Vec::new(),
    };
    REQUEST.scope(RefCell::new(remembered), fut)
}

/// For each of `keys`, the value this request read from `cache_id` before, if any (a
/// token found missing is not remembered).
pub fn recall(cache_id: u64, keys: &[String]) -> Vec<Known> {
    REQUEST
        .try_with(|r| {
            let r = r.borrow();
            keys.iter()
                .map(|key| {
                    r.reads
                        .iter()
                        .find_map(|(id, read_keys, values, positions)| {
                            let i = read_keys.iter().position(|k| k == key)?;
                            let at = positions.get(i).copied().unwrap_or(i);
                            (*id == cache_id && values[at].is_some()).then(|| (values.clone(), at))
                        })
                })
                .collect()
        })
        .unwrap_or_else(|_| vec![None; keys.len()])
}

/// Remembers a read of `keys` for the rest of this request: `values`, and the position
/// of each key's value among them (empty: in order).
pub fn remember(cache_id: u64, keys: Vec<String>, values: Values, positions: Vec<usize>) {
    let _ = REQUEST.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.enabled {
            r.reads.push((cache_id, keys, values, positions));
        }
    });
}

/// Forgets every token read: the request invalidated, or saw Redis fail.
pub fn forget() {
    let _ = REQUEST.try_with(|r| r.borrow_mut().reads.clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn a_read_only_request_reuses_the_first_value_of_each_token_until_it_forgets() {
        let read = |values: &[Option<&str>]| -> Values {
            Rc::new(
                values
                    .iter()
                    .map(|v| v.map(|v| v.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let recalled = |cache_id, names: &[&str]| -> Vec<Option<String>> {
            recall(cache_id, &keys(names))
                .into_iter()
                .map(|known| {
                    known
                        .map(|(values, at)| String::from_utf8(values[at].clone().unwrap()).unwrap())
                })
                .collect()
        };
        request_scope(true, async {
            assert_eq!(recalled(1, &["g"]), [None]);
            remember(
                1,
                keys(&["g", "a", "b"]),
                read(&[Some("g1"), Some("a1"), None]),
                vec![],
            );
            remember(
                1,
                keys(&["a", "g"]),
                read(&[Some("x"), Some("a2"), Some("g2")]),
                vec![1, 2],
            );
            assert_eq!(
                recalled(1, &["a", "g", "b", "c"]),
                [Some("a1".into()), Some("g1".into()), None, None],
                "the first read wins; a missing token is not remembered"
            );
            assert_eq!(
                recalled(2, &["g"]),
                [None],
                "another cache's tokens are its own"
            );
            forget();
            assert_eq!(recalled(1, &["g", "a"]), [None, None]);
        })
        .await;
        request_scope(false, async {
            remember(1, keys(&["g"]), read(&[Some("g1")]), vec![]);
            assert_eq!(
                recalled(1, &["g"]),
                [None],
                "requests that may write never reuse"
            );
        })
        .await;
        remember(1, keys(&["g"]), read(&[Some("g1")]), vec![]);
        assert_eq!(
            recalled(1, &["g"]),
            [None],
            "outside a request nothing is kept"
        );
    }
}
