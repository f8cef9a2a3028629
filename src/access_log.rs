//! The access log: one line per request, in env_logger's format and under its filter
//! (target `access`, level info), written to stderr in batches rather than one `write`
//! per line — at tens of thousands of requests a second a synchronous line per request
//! cost a quarter of the throughput of a cache hit.
//!
//! Lines collect in a buffer that is written out when it holds 64 KiB, and otherwise by
//! a background thread every 100 ms, so a line reaches stderr within about 100 ms.
//! `flush` writes whatever is pending (called when the server stops).

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FLUSH_BYTES: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Pending {
    text: String,
    /// The second `stamp` was formatted for, and the stamp (`2026-11-26T03:27:09Z`).
    second: u64,
    stamp: String,
}

static PENDING: OnceLock<Mutex<Pending>> = OnceLock::new();

fn lock(pending: &'static Mutex<Pending>) -> MutexGuard<'static, Pending> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

fn pending() -> MutexGuard<'static, Pending> {
    lock(PENDING.get_or_init(|| {
        // The first line starts the flusher; it lives as long as the process.
        let started = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            });
        if let Err(e) = started {
            log::warn!(
                "access log: no flusher thread ({e}); lines are written when 64 KiB collect"
            );
        }
        Mutex::default()
    }))
}

/// Whether access lines are wanted (`RUST_LOG` lets `access` through at info).
pub fn enabled() -> bool {
    log::log_enabled!(target: "access", log::Level::Info)
}

/// Adds one line: `[2026-11-26T03:27:09Z INFO  access] {line}`.
pub fn write(line: fmt::Arguments<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut pending = pending();
    if pending.stamp.is_empty() || pending.second != now {
        pending.second = now;
        pending.stamp = chrono::DateTime::from_timestamp(now as i64, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
    }
    let Pending { text, stamp, .. } = &mut *pending;
    let _ = writeln!(text, "[{stamp} INFO  access] {line}");
    if text.len() >= FLUSH_BYTES {
        write_out(pending);
    }
}

/// Writes out every pending line (if a line was ever written).
pub fn flush() {
    if let Some(pending) = PENDING.get() {
        write_out(lock(pending));
    }
}

/// Takes the pending lines and writes them. stderr is locked before the buffer is let
/// go, so batches reach it in the order they were taken.
fn write_out(mut pending: MutexGuard<'static, Pending>) {
    if pending.text.is_empty() {
        return;
    }
    let text = std::mem::take(&mut pending.text);
    let mut stderr = std::io::stderr().lock();
    drop(pending);
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}
