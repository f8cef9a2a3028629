//! Single-flight: when many requests of one instance miss the same key at once, one
//! (the leader) does the expensive work and the others wait for its result, so a hot
//! entry that expires under load costs one database load, not one per request. Across
//! instances the refresh lock in Redis plays the same part for expired entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether this caller did the work or waited for another caller's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl<T: Clone> SingleFlight<T> {
    /// Runs `work` unless a call for `key` is already under way, in which case it waits
    /// for that call's result. If the leader is cancelled, a waiting caller takes over
    /// with its own `work`.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> (T, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(key.to_string()).or_default().clone()
        };
        let mut role = Role::Follower;
        let value = cell
            .get_or_init(|| {
                role = Role::Leader;
                work()
            })
            .await
            .clone();
        if role == Role::Leader {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                flights.remove(key);
            }
        }
        (value, role)
    }

    /// Calls under way (for tests and the dashboard).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flight = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (flight, runs) = (flight.clone(), runs.clone());
                tokio::spawn(async move {
                    flight
                        .run("hot", || async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            runs.fetch_add(1, Ordering::SeqCst) + 1
                        })
                        .await
                })
            })
            .collect();
        let mut leaders = 0;
        for t in tasks {
            let (value, role) = t.await.unwrap();
            assert_eq!(value, 1);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flight.in_flight(), 0, "finished flights are forgotten");
    }

    #[tokio::test]
    async fn a_later_call_runs_again() {
        let flight = SingleFlight::<u32>::default();
        assert_eq!(flight.run("k", || async { 1 }).await, (1, Role::Leader));
        assert_eq!(flight.run("k", || async { 2 }).await, (2, Role::Leader));
    }
}
