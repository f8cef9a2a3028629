//! Per-request timings for the `Server-Timing` header (`cache`, `db`, `render`), so
//! browser dev tools show where a request's time went. The telemetry middleware
//! (`telemetry`, outside the page cache, so hits are timed too) runs each request inside
//! a task-local scope; Redis calls, database calls and template rendering add their
//! durations to it. Nothing of this is ever baked into a cached body.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

tokio::task_local! {
    static TIMINGS: Rc<Timings>;
}

#[derive(Default, Debug)]
pub struct Timings {
    cache: Cell<Duration>,
    db: Cell<Duration>,
    render: Cell<Duration>,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Cache,
    Db,
    Render,
}

/// Adds `elapsed` to the current request's timings (no-op outside a request).
pub fn record(kind: Kind, elapsed: Duration) {
    let _ = TIMINGS.try_with(|t| {
        let cell = match kind {
            Kind::Cache => &t.cache,
            Kind::Db => &t.db,
            Kind::Render => &t.render,
        };
        cell.set(cell.get() + elapsed);
    });
}

/// Runs `f`, recording its duration under `kind`.
pub fn timed<T>(kind: Kind, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    record(kind, started.elapsed());
    out
}

/// Runs `fut` inside a fresh timing scope and returns its output with the timings.
/// Not an `async fn`: one would hold `fut` twice (as its argument and inside the scope),
/// doubling the size of every request's future.
pub fn scope<F: Future>(fut: F) -> impl Future<Output = (F::Output, Rc<Timings>)> {
    let timings = Rc::new(Timings::default());
    TIMINGS
        .scope(timings.clone(), fut)
        .map(move |out| (out, timings))
}

impl Timings {
    /// `cache;dur=0.41, db;dur=2.10, render;dur=0.33, total;dur=3.02` (milliseconds).
    /// Written by hand into one buffer: it is built for every request, hits included.
    pub fn header(&self, total: Duration) -> String {
        let mut out = String::with_capacity(64);
        for (name, d) in [
            ("cache", self.cache.get()),
            ("db", self.db.get()),
            ("render", self.render.get()),
            ("total", total),
        ] {
            if d.is_zero() && name != "total" {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push_str(";dur=");
            push_millis(&mut out, d);
        }
        out
    }
}

/// `d` in milliseconds with two decimals, rounded half up (`1.234567 ms` → `1.23`).
fn push_millis(out: &mut String, d: Duration) {
    let hundredths = (d.as_micros() + 5) / 10;
    let mut digits = [b'0'; 40];
    let mut at = digits.len();
    let mut rest = hundredths;
    // At least three digits, so there is always a units digit before the point.
    while rest > 0 || digits.len() - at < 3 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let digits = &digits[at..];
    let (units, decimals) = digits.split_at(digits.len() - 2);
    out.extend(units.iter().map(|&b| char::from(b)));
    out.push('.');
    out.extend(decimals.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn durations_recorded_inside_a_scope_show_in_the_header() {
        let ((), t) = scope(async {
            record(Kind::Db, Duration::from_millis(2));
            record(Kind::Db, Duration::from_millis(1));
        })
        .await;
        let header = t.header(Duration::from_millis(5));
        assert_eq!(header, "db;dur=3.00, total;dur=5.00");
        assert_eq!(
            t.header(Duration::from_micros(1_234_567)),
            "db;dur=3.00, total;dur=1234.57"
        );
        assert_eq!(
            t.header(Duration::from_micros(4)),
            "db;dur=3.00, total;dur=0.00"
        );
        record(Kind::Cache, Duration::from_millis(1)); // outside a scope: ignored
    }
}
