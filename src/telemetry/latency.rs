//! The request-latency histogram, in a file of its own: the app state holds it and the
//! middleware that fills it reads the app state, so the state imports this file, and
//! not the middleware.

use prometheus::{HistogramOpts, HistogramVec, Registry};

/// The request-latency histogram (`http_request_duration_seconds`, by route and cache
/// outcome), registered beside the cache's counters so `/metrics` shows both.
pub struct RequestLatency(HistogramVec);

impl RequestLatency {
    pub fn new(registry: &Registry) -> Self {
        let histogram = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["route", "cache"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(histogram.clone()))
            .expect("metric registered once");
        Self(histogram)
    }

    pub(super) fn observe(&self, route: &str, cache: &str, seconds: f64) {
        self.0.with_label_values(&[route, cache]).observe(seconds);
    }
}
