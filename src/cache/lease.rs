//! The instance's lease and the invalidation log: what lets a hit held in memory be
//! answered with no command to Redis, still strictly (the rule and its argument: "The
//! in-process tier" in the module docs of `cache`).
//!
//! - `run` keeps this instance's lease (registered, then renewed every quarter lease)
//!   and reads the log (a blocking read between renewals). Each logged invalidation is
//!   applied — its tokens forgotten by the in-process tier — in order, then
//!   acknowledged. A gap in the numbers, a broken connection, a lost lease: everything
//!   known is forgotten.
//! - `Cache::wait_for_acknowledgments` is a write's wait: until every instance holding a
//!   lease has acknowledged the write's invalidation, or its lease has ended. One poll of
//!   the hash at a time per process serves every write waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Cache;
use super::store::{Appended, LogReader, Renewal, SyncState};

/// This instance's lease: its id, how long a lease lasts, and until when (on this
/// process's monotonic clock) it may answer from memory.
pub struct Lease {
    pub id: String,
    length: Duration,
    /// Taken off every deadline: the clocks of this process and of Redis may drift
    /// apart within a lease, and a renewal's reply may come late.
    margin: Duration,
    base: Instant,
    /// Nanoseconds after `base` when this instance must stop answering from memory
    /// (0: it must not).
    deadline_ns: AtomicU64,
    /// The last invalidation applied, and when the hash that numbered it was born.
    applied: AtomicU64,
    born: std::sync::atomic::AtomicI64,
}

impl Lease {
    pub fn new(length: Duration) -> Self {
        let random: u16 = rand::random();
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        Self {
            id: format!("{host}-{}-{random:04x}", std::process::id()),
            length,
            margin: (length / 10).max(Duration::from_millis(20)),
            base: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            born: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Whether this instance may answer from memory now.
    pub fn holds(&self) -> bool {
        let deadline = self.deadline_ns.load(Ordering::Acquire);
        deadline != 0 && (self.base.elapsed().as_nanos() as u64) < deadline
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The point of the log this instance has applied: (born, number).
    pub fn position(&self) -> (i64, u64) {
        (self.born.load(Ordering::Acquire), self.applied())
    }

    /// A renewal sent at `sent` extended the lease: Redis ends it `length` after it
    /// received it, so this instance stops `margin` before `sent + length`.
    fn extend(&self, sent: Instant) {
        let until = (sent + self.length).saturating_duration_since(self.base);
        let until = until.saturating_sub(self.margin).as_nanos() as u64;
        self.deadline_ns.fetch_max(until.max(1), Ordering::AcqRel);
    }

    fn lapse(&self) {
        self.deadline_ns.store(0, Ordering::Release);
    }

    fn renew_every(&self) -> Duration {
        self.length / 4
    }
}

/// Writes waiting for acknowledgments in this process, and the latest state of the hash
/// (published by whichever of them polls).
pub struct Acks {
    state: watch::Sender<Option<Arc<SyncState>>>,
    waiting: AtomicUsize,
    polling: tokio::sync::Mutex<()>,
}

impl Default for Acks {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(None),
            waiting: AtomicUsize::new(0),
            polling: tokio::sync::Mutex::new(()),
        }
    }
}

/// Whether, as `state` shows, no instance can answer from memory with data older than
/// the invalidation `appended`: each instance whose lease has not ended acknowledged it,
/// and any instance of an older hash (lost with its leases) is past its lease.
fn acknowledged(state: &SyncState, appended: Appended, lease: Duration) -> bool {
    let Some(born) = state.born else {
        return false;
    };
    if state.now < born + lease.as_millis() as i64 {
        return false;
    }
    born != appended.born
        || state
            .instances
            .iter()
            .all(|(_, ends, ack)| *ends <= state.now || *ack >= appended.seq)
}

impl Cache {
    /// A write's wait: returns once every instance holding a lease has applied the
    /// invalidation `appended` or its lease has ended — at the latest a lease and a
    /// renewal (plus the margin) after `since`, when the append was sent: by then any
    /// instance that has not applied it has stopped answering from memory (a paused
    /// instance, or one cut off from Redis, is not extended).
    pub(super) async fn wait_for_acknowledgments(&self, appended: Appended, since: Instant) {
        let started = Instant::now();
        let length = self.inner.lease_length;
        // By then every instance has acknowledged or stopped renewing — unless its
        // renewals ran late (a starved process): those lagging are revoked, and the wait
        // goes on until their leases have ended in Redis.
        let revoke_at = since + self.lease_bound();
        // Redis cannot be read at all: the most any lease can run after a revocation.
        let give_up_at = revoke_at + self.lease_bound() + length;
        let acks = &self.inner.acks;
        let mut state = acks.state.subscribe();
        let mut revoked = false;
        acks.waiting.fetch_add(1, Ordering::AcqRel);
        let done = loop {
            let latest = state.borrow_and_update().clone();
            if latest
                .as_ref()
                .is_some_and(|s| acknowledged(s, appended, length))
            {
                break true;
            }
            let now = Instant::now();
            if now >= give_up_at {
                break false;
            }
            if !revoked
                && now >= revoke_at
                && let Some(latest) = latest
            {
                let lagging: Vec<String> = latest
                    .instances
                    .iter()
                    .filter(|(_, ends, ack)| *ends > latest.now && *ack < appended.seq)
                    .map(|(id, _, _)| id.clone())
                    .collect();
                let revoking = self.store().revoke(self.keys().sync(), &lagging).await;
                revoked = revoking.is_ok();
                if revoked {
                    log::warn!(
                        "invalidation {} not acknowledged in time by {}: their leases are revoked",
                        appended.seq,
                        lagging.join(", ")
                    );
                }
            }
            // One poller at a time; the others wait for what it publishes.
            match acks.polling.try_lock() {
                Ok(_polling) => self.poll_acknowledgments().await,
                Err(_) => {
                    let _ = tokio::time::timeout(Duration::from_millis(10), state.changed()).await;
                }
            }
        };
        acks.waiting.fetch_sub(1, Ordering::AcqRel);
        if !done {
            log::warn!(
                "invalidation {} not acknowledged by every instance: waited out their leases",
                appended.seq
            );
        }
        self.inner.metrics.acknowledged_after(started.elapsed());
    }

    /// Reads the hash once and publishes it; on failure, pauses a little (the waiters
    /// fall back to their bound).
    async fn poll_acknowledgments(&self) {
        match self.store().sync_state(self.keys().sync()).await {
            Ok(state) => {
                self.inner.acks.state.send_replace(Some(Arc::new(state)));
                if self.inner.acks.waiting.load(Ordering::Acquire) > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }

    /// This instance's lease and log reader (see the module docs); runs until the
    /// process ends. Without a lease (`CacheConfig::hold_lease` off), returns at once.
    pub fn spawn_lease(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.lease.as_ref()?;
        let cache = self.clone();
        Some(tokio::spawn(async move { cache.keep_lease().await }))
    }

    /// Extends the lease from a renewal (or registration) sent at `sent`, only once a
    /// replica has it: a failover must not lose it (see "Redis Cluster" in the module
    /// docs of `cache`). Whether it did.
    async fn extend_once_replicated(&self, lease: &Lease, sent: Instant) -> bool {
        let replicated = self
            .store()
            .wait_for_replicas(&[self.keys().sync().to_string()], self.inner.wait_replicas)
            .await;
        let extended = self.track(replicated).is_ok();
        if extended {
            lease.extend(sent);
        }
        extended
    }

    async fn keep_lease(&self) {
        let Some(lease) = self.inner.lease.as_ref() else {
            return;
        };
        let (sync, log) = (self.keys().sync(), self.keys().log());
        let lease_ms = lease.length.as_millis() as u64;
        let keep_ms = self.token_lifetime_ms();
        let mut reader = LogReader::default();
        // Where the next read starts; `None`: not registered.
        let mut cursor: Option<String> = None;
        let mut next_renewal = Instant::now();
        loop {
            let Some(at) = cursor.as_deref() else {
                let sent = Instant::now();
                let registered = self
                    .store()
                    .register(sync, log, &lease.id, lease_ms, keep_ms)
                    .await;
                match self.track(registered) {
                    Ok((position, at)) => {
                        // Nothing learned before this point counts: reads from now on
                        // see every invalidation up to it.
                        self.inner.local.forget_all();
                        lease.born.store(position.born, Ordering::Release);
                        lease.applied.store(position.seq, Ordering::Release);
                        self.extend_once_replicated(lease, sent).await;
                        self.inner.metrics.lease_renewal("registered");
                        cursor = Some(at);
                        next_renewal = sent + lease.renew_every();
                    }
                    Err(e) => {
                        log::debug!("cache lease registration failed: {e}");
                        tokio::time::sleep(lease.renew_every().min(Duration::from_millis(250)))
                            .await;
                    }
                }
                continue;
            };
            if Instant::now() >= next_renewal {
                let sent = Instant::now();
                let renewed = self
                    .store()
                    .renew(sync, &lease.id, lease_ms, lease.applied(), keep_ms)
                    .await;
                next_renewal = sent + lease.renew_every();
                match self.track(renewed) {
                    Ok(Renewal::Extended) => {
                        let result = match self.extend_once_replicated(lease, sent).await {
                            true => "extended",
                            false => "unreplicated",
                        };
                        self.inner.metrics.lease_renewal(result);
                    }
                    Ok(Renewal::Behind) => self.inner.metrics.lease_renewal("behind"),
                    Ok(Renewal::Lost) => {
                        // Writers may have stopped waiting for this instance.
                        lease.lapse();
                        self.inner.local.forget_all();
                        self.inner.metrics.lease_renewal("lost");
                        log::warn!("cache lease lost; registering again");
                        cursor = None;
                        continue;
                    }
                    Err(e) => {
                        log::debug!("cache lease renewal failed: {e}");
                        self.inner.metrics.lease_renewal("failed");
                    }
                }
            }
            let block = next_renewal
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let read = self
                .store()
                .read_log(&mut reader, log, at, block.as_millis() as u64)
                .await;
            match self.track(read) {
                Ok(entries) if entries.is_empty() => {}
                Ok(entries) => {
                    let mut applied = lease.applied();
                    for entry in &entries {
                        if entry.seq == applied + 1 {
                            self.inner.local.forget(&entry.tokens);
                        } else {
                            // Missed (trimmed, evicted) or renumbered (a new hash).
                            self.inner.local.forget_all();
                        }
                        applied = entry.seq;
                    }
                    lease.applied.store(applied, Ordering::Release);
                    if let Some(last) = entries.last() {
                        cursor = Some(last.id.clone());
                    }
                    let acked = self
                        .store()
                        .acknowledge(sync, &lease.id, applied, keep_ms)
                        .await;
                    let _ = self.track(acked);
                }
                Err(e) => {
                    log::debug!("reading the invalidation log failed: {e}");
                    // The connection broke: what was missed is unknown.
                    self.inner.local.forget_all();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(now: i64, born: i64, instances: &[(i64, u64)]) -> SyncState {
        SyncState {
            now,
            born: Some(born),
            seq: 9,
            instances: instances
                .iter()
                .enumerate()
                .map(|(i, &(ends, ack))| (format!("i{i}"), ends, ack))
                .collect(),
        }
    }

    const LEASE: Duration = Duration::from_secs(2);

    #[test]
    fn a_write_waits_for_every_live_lease_to_acknowledge_it() {
        let mine = Appended { seq: 5, born: 0 };
        let now = 10_000;
        assert!(acknowledged(
            &state(now, 0, &[(now + 500, 5), (now + 900, 7)]),
            mine,
            LEASE
        ));
        assert!(!acknowledged(
            &state(now, 0, &[(now + 500, 5), (now + 900, 4)]),
            mine,
            LEASE
        ));
        assert!(
            acknowledged(&state(now, 0, &[(now + 500, 5), (now - 1, 0)]), mine, LEASE),
            "an ended lease is not waited for"
        );
        assert!(acknowledged(&state(now, 0, &[]), mine, LEASE));
    }

    #[test]
    fn a_new_hash_is_trusted_only_a_lease_after_it_was_born() {
        let now = 10_000;
        let mine = Appended { seq: 5, born: 100 };
        let young = state(now, now - 1_000, &[(now + 500, 0)]);
        assert!(
            !acknowledged(&young, mine, LEASE),
            "old leases may still run"
        );
        let grown = state(now, now - 2_000, &[(now + 500, 0)]);
        assert!(
            acknowledged(&grown, mine, LEASE),
            "numbered by a hash since lost: everyone then has dropped or registered after"
        );
        let missing = SyncState {
            born: None,
            ..grown
        };
        assert!(!acknowledged(&missing, mine, LEASE));
    }

    #[test]
    fn the_local_deadline_ends_a_margin_before_the_lease() {
        let lease = Lease::new(Duration::from_millis(400));
        assert!(!lease.holds(), "no lease before the first renewal");
        lease.extend(Instant::now());
        assert!(lease.holds());
        let deadline = Duration::from_nanos(lease.deadline_ns.load(Ordering::Acquire));
        assert!(deadline <= lease.base.elapsed() + Duration::from_millis(400) - lease.margin);
        lease.lapse();
        assert!(!lease.holds());
    }
}
