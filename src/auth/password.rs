//! Password hashing: Argon2id with a random salt per hash (PHC string format), the
//! rules for new passwords and user names, and `PasswordChecks`, the bound on how many
//! sign-in password checks run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes a password (slow on purpose: call it on a blocking thread).
pub fn hash(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Whether `password` matches `phc_hash`. Malformed hashes never match.
pub fn verify(password: &str, phc_hash: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), phc_hash)
            .is_ok()
}

/// Spends the same work as a real verification, for unknown user names, so response
/// time does not tell which user names exist.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("dummy password for timing").unwrap_or_default());
    let _ = verify(password, dummy);
}

/// At most `permits` sign-in password checks at a time (by default one per core), each on
/// one of `permits` threads of its own that run at a lower CPU priority (nice 10, on
/// Linux). A check costs tens of milliseconds of a core and some 19 MiB, on purpose:
/// without a bound, a burst of sign-ins from many addresses would keep every core
/// hashing and slow every page, cached ones included; at the lower priority, a page
/// that needs a core gets it almost at once, and hashes use what pages leave (measured:
/// `scripts/bench-signin.py`). A check that gets no permit within `wait` is not run at
/// all (`Busy`: the caller answers 503 with `Retry-After`), so a burst queues for a
/// bounded time instead of without end.
pub struct PasswordChecks {
    permits: Arc<Semaphore>,
    wait: Duration,
    gauge: Arc<InFlight>,
    /// To the checking threads; they stop when it is dropped.
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// How many checks are running, and the most that ever ran at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// One check counted in `InFlight` while it runs (also if it panics).
struct Running<'a>(&'a InFlight);

impl<'a> Running<'a> {
    fn start(gauge: &'a InFlight) -> Self {
        let running = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(running, Ordering::SeqCst);
        Self(gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a check did not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("every password check slot stayed busy")]
    Busy,
    #[error("the password check failed: {0}")]
    Failed(String),
}

impl PasswordChecks {
    /// Starts the `permits` checking threads (at least one).
    pub fn new(permits: usize, wait: Duration) -> std::io::Result<Self> {
        let permits = permits.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..permits {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || check_jobs(&queue))?;
        }
        Ok(Self {
            permits: Arc::new(Semaphore::new(permits)),
            wait,
            gauge: Arc::default(),
            jobs,
        })
    }

    /// One permit per core (`available_parallelism`, 1 if unknown).
    pub fn per_core() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// Runs `check` (a password verification) on a checking thread once a permit is
    /// free; `Busy` when none is within the wait. The permit is released when `check`
    /// returns, even if the request that asked has gone. A permit is only handed out
    /// while a thread is free for it, so a check never waits behind another.
    pub async fn run<T, F>(&self, check: F) -> Result<T, CheckError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| CheckError::Busy)?
            .map_err(|_| CheckError::Busy)?;
        let gauge = self.gauge.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let running = Running::start(&gauge);
            let outcome = check();
            drop(running);
            drop(permit);
            let _ = done.send(outcome);
        });
        self.jobs
            .send(job)
            .map_err(|_| CheckError::Failed("the checking threads have stopped".into()))?;
        result
            .await
            .map_err(|_| CheckError::Failed("the check panicked".into()))
    }

    /// Checks running right now.
    pub fn in_flight(&self) -> usize {
        self.gauge.now.load(Ordering::SeqCst)
    }

    /// The most checks that ever ran at once in this process.
    pub fn peak_in_flight(&self) -> usize {
        self.gauge.peak.load(Ordering::SeqCst)
    }
}

/// A checking thread: lowers its own priority, then runs jobs until the sender is gone.
/// A job that panics is dropped (its caller sees `Failed`), the thread goes on.
fn check_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    lower_this_threads_priority();
    loop {
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Nice 10 for the calling thread: on Linux a thread's nice value is its own. Elsewhere
/// it would be the whole process's, so it is left alone.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its arguments; `who` = 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
            log::warn!(
                "could not lower the priority of a password-check thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Rules for a new admin password.
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.trim().is_empty() {
        return Err("the password is empty".into());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Rules for an admin user name: 1–150 of letters, digits and `@ . + - _`.
pub fn check_username(username: &str) -> Result<(), String> {
    let ok_chars = username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'));
    if username.is_empty() || username.chars().count() > 150 || !ok_chars {
        return Err("the user name must be 1–150 letters, digits or @ . + - _ characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_own_password_and_is_salted() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("wrong horse battery", &a));
        assert!(!verify("anything", "not a hash"));
    }

    #[tokio::test]
    async fn no_more_checks_run_at_once_than_there_are_permits() {
        let checks = Arc::new(PasswordChecks::new(2, Duration::from_secs(60)).unwrap());
        let runs = (0..8).map(|_| {
            let checks = checks.clone();
            tokio::spawn(async move {
                checks
                    .run(|| std::thread::sleep(Duration::from_millis(20)))
                    .await
            })
        });

        for run in futures_util::future::join_all(runs).await {
            run.unwrap().unwrap();
        }

        assert_eq!(checks.peak_in_flight(), 2);
        assert_eq!(checks.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_check_that_gets_no_permit_in_time_is_not_run() {
        let checks = Arc::new(PasswordChecks::new(1, Duration::from_millis(50)).unwrap());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = {
            let checks = checks.clone();
            tokio::spawn(async move { checks.run(move || held.recv()).await })
        };
        while checks.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(AtomicUsize::new(0));

        let counted = ran.clone();
        let refused = checks
            .run(move || counted.fetch_add(1, Ordering::SeqCst))
            .await;

        assert!(matches!(refused, Err(CheckError::Busy)), "{refused:?}");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        holder.await.unwrap().unwrap().unwrap();
        assert_eq!(checks.in_flight(), 0);
    }

    #[test]
    fn short_or_empty_passwords_are_refused() {
        assert!(check_new_password("").is_err());
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough pw").is_ok());
    }

    #[test]
    fn user_names_are_restricted() {
        assert!(check_username("alice@example.com").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("has space").is_err());
    }
}
