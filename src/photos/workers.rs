//! `PhotoWorkers`: where uploads are decoded and re-encoded — never on an actix request
//! worker. A fixed number of threads of their own (`PHOTO_WORKERS`, default 1), at a
//! lower CPU priority (nice 10, on Linux), each taking one job at a time; a request
//! waits (asynchronously) for a free one. So however many uploads arrive at once, at
//! most that many full-size frames are in memory (a 12-megapixel JPEG decodes to 36 MB,
//! the 40-megapixel limit to 160 MB), and cached pages keep getting a core at once.

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::Semaphore;

type Job = Box<dyn FnOnce() + Send>;

pub struct PhotoWorkers {
    permits: Arc<Semaphore>,
    /// To the threads; they stop when it is dropped.
    jobs: mpsc::Sender<Job>,
}

/// Why a job did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the photo threads have stopped")]
    Stopped,
    #[error("the photo job panicked")]
    Panicked,
}

impl PhotoWorkers {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("photo-{i}"))
                .spawn(move || run_jobs(&queue))?;
        }
        Ok(Self {
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
        })
    }

    /// Runs `job` on a photo thread once one is free. A job is handed over only with a
    /// permit, so it never queues behind another inside the channel; the permit is
    /// released when the job ends, even if the request that asked has gone.
    pub async fn run<T, F>(&self, job: F) -> Result<T, WorkerError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Stopped)?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = job();
            drop(permit);
            let _ = done.send(outcome);
        });
        self.jobs.send(job).map_err(|_| WorkerError::Stopped)?;
        result.await.map_err(|_| WorkerError::Panicked)
    }
}

/// A photo thread: lowers its own priority, then runs jobs until the sender is gone. A
/// job that panics is dropped (its caller sees `Panicked`); the thread goes on.
fn run_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its arguments; `who` = 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
            log::warn!(
                "could not lower the priority of a photo thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    loop {
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn no_more_jobs_run_at_once_than_there_are_threads() {
        let workers = Arc::new(PhotoWorkers::new(2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (workers, running, peak) = (workers.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                workers
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            })
        });

        for job in futures_util::future::join_all(jobs).await {
            job.unwrap().unwrap();
        }

        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_thread_goes_on() {
        let workers = PhotoWorkers::new(1).unwrap();

        let panicked = workers.run(|| panic!("boom")).await;
        let next = workers.run(|| 7).await;

        assert!(matches!(panicked, Err(WorkerError::Panicked)));
        assert_eq!(next.unwrap(), 7);
    }
}
