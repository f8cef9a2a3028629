//! The cache's own counters (lookups per layer and outcome, invalidations, Redis errors,
//! database loads, the circuit breaker, the last writes), kept in a Prometheus registry
//! (one per application, so tests never share counters) that the app may add its own
//! metrics to (`registry`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use serde::Serialize;

/// Outcome of one cache lookup, as reported in `X-Cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl Outcome {
    pub fn as_header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Layer {
    Page,
    Query,
}

impl Layer {
    fn label(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Query => "query",
        }
    }
}

const LAYERS: [Layer; 2] = [Layer::Page, Layer::Query];
const OUTCOMES: [Outcome; 4] = [Outcome::Hit, Outcome::Miss, Outcome::Stale, Outcome::Bypass];

/// Where the series of (`layer`, `outcome`) sits in `Metrics::lookup_series`.
fn lookup_index(layer: Layer, outcome: Outcome) -> usize {
    let layer = match layer {
        Layer::Page => 0,
        Layer::Query => 1,
    };
    let outcome = match outcome {
        Outcome::Hit => 0,
        Outcome::Miss => 1,
        Outcome::Stale => 2,
        Outcome::Bypass => 3,
    };
    layer * OUTCOMES.len() + outcome
}

pub struct Metrics {
    registry: Registry,
    /// The series of `cache_lookups_total`, resolved once (by `lookup_index`): every
    /// request counts one.
    lookup_series: Vec<IntCounter>,
    invalidations: IntCounter,
    redis_errors: IntCounter,
    db_loads: IntCounterVec,
    circuit_open: IntGauge,
    memory_hits: IntCounterVec,
    lease_renewals: IntCounterVec,
    acknowledgment_wait: Histogram,
    recent: std::sync::Mutex<std::collections::VecDeque<RecentInvalidation>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let lookups = IntCounterVec::new(
            Opts::new("cache_lookups_total", "Cache lookups by layer and outcome"),
            &["layer", "outcome"],
        )
        .expect("valid metric");
        let invalidations = IntCounter::new(
            "cache_invalidations_total",
            "Cache invalidations (token replacements) after committed writes",
        )
        .expect("valid metric");
        let redis_errors = IntCounter::new(
            "cache_redis_errors_total",
            "Redis commands that failed or timed out (each one served as a bypass)",
        )
        .expect("valid metric");
        let db_loads = IntCounterVec::new(
            Opts::new(
                "cache_db_loads_total",
                "Database loads made to fill (or bypass) a cache layer",
            ),
            &["layer"],
        )
        .expect("valid metric");
        let circuit_open = IntGauge::new(
            "cache_circuit_open",
            "1 while the Redis circuit breaker skips Redis after repeated failures",
        )
        .expect("valid metric");
        let memory_hits = IntCounterVec::new(
            Opts::new(
                "cache_memory_hits_total",
                "Hits answered from this process's memory, with no command to Redis",
            ),
            &["layer"],
        )
        .expect("valid metric");
        let lease_renewals = IntCounterVec::new(
            Opts::new(
                "cache_lease_renewals_total",
                "Lease registrations and renewals of this instance, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let acknowledgment_wait = Histogram::with_opts(
            HistogramOpts::new(
                "cache_invalidation_wait_seconds",
                "How long a write waited for every instance to acknowledge its invalidation",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        for c in [
            Box::new(memory_hits.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lease_renewals.clone()),
            Box::new(acknowledgment_wait.clone()),
            Box::new(lookups.clone()),
            Box::new(invalidations.clone()),
            Box::new(redis_errors.clone()),
            Box::new(db_loads.clone()),
            Box::new(circuit_open.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        // Make every series visible (at 0) from the start.
        let mut lookup_series = Vec::with_capacity(LAYERS.len() * OUTCOMES.len());
        for layer in LAYERS {
            for outcome in OUTCOMES {
                debug_assert_eq!(lookup_series.len(), lookup_index(layer, outcome));
                lookup_series.push(lookups.with_label_values(&[layer.label(), outcome.label()]));
            }
            db_loads.with_label_values(&[layer.label()]);
            memory_hits.with_label_values(&[layer.label()]);
        }
        Self {
            registry,
            lookup_series,
            invalidations,
            redis_errors,
            db_loads,
            circuit_open,
            memory_hits,
            lease_renewals,
            acknowledgment_wait,
            recent: Default::default(),
        }
    }

    pub fn lookup(&self, layer: Layer, outcome: Outcome) {
        self.lookup_series[lookup_index(layer, outcome)].inc();
    }

    /// A hit answered from memory (counted as a hit by `lookup` too).
    pub fn memory_hit(&self, layer: Layer) {
        self.memory_hits.with_label_values(&[layer.label()]).inc();
    }

    pub fn lease_renewal(&self, result: &str) {
        self.lease_renewals.with_label_values(&[result]).inc();
    }

    pub fn acknowledged_after(&self, waited: std::time::Duration) {
        self.acknowledgment_wait.observe(waited.as_secs_f64());
    }

    pub fn invalidation(&self) {
        self.invalidations.inc();
    }

    pub fn redis_error(&self) {
        self.redis_errors.inc();
    }

    pub fn db_load(&self, layer: Layer) {
        self.db_loads.with_label_values(&[layer.label()]).inc();
    }

    pub fn set_circuit_open(&self, open: bool) {
        self.circuit_open.set(i64::from(open));
    }

    fn count(&self, layer: Layer, outcome: Outcome) -> u64 {
        self.lookup_series[lookup_index(layer, outcome)].get()
    }

    fn layer(&self, layer: Layer) -> LayerCounters {
        let count = |o| self.count(layer, o);
        LayerCounters {
            hits: count(Outcome::Hit),
            misses: count(Outcome::Miss),
            stale: count(Outcome::Stale),
            bypasses: count(Outcome::Bypass),
            hit_ratio: ratio(
                count(Outcome::Hit) + count(Outcome::Stale),
                count(Outcome::Miss),
            ),
        }
    }

    /// The app's own counters, as the JSON endpoint and the dashboard show them.
    pub fn snapshot(&self) -> AppCounters {
        AppCounters {
            page: self.layer(Layer::Page),
            query: self.layer(Layer::Query),
            invalidations: self.invalidations.get(),
            memory_hits: self.memory_hits.with_label_values(&["page"]).get()
                + self.memory_hits.with_label_values(&["query"]).get(),
            db_loads: self.db_loads.with_label_values(&["page"]).get()
                + self.db_loads.with_label_values(&["query"]).get(),
            redis_errors: self.redis_errors.get(),
            circuit_open: self.circuit_open.get() != 0,
            recent_invalidations: Some(self.recent_lock().iter().cloned().collect()),
        }
    }

    /// Records a write's invalidation of `tokens` (counted by `invalidation`).
    pub fn record_invalidation(&self, tokens: Vec<(String, u64)>) {
        let mut recent = self.recent_lock();
        if recent.len() == RECENT_INVALIDATIONS {
            recent.pop_back();
        }
        recent.push_front(RecentInvalidation {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tokens: tokens
                .into_iter()
                .map(|(token, entries)| ReplacedToken { token, entries })
                .collect(),
        });
    }

    fn recent_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<RecentInvalidation>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry these counters are kept in: the app registers its own metrics there,
    /// so that one exposition (`render_prometheus`) holds them all.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// hits / (hits + misses), and 0 when there were no lookups at all.
pub fn ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// Lookups of one cache layer by outcome; `hit_ratio` counts stale answers as hits.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerCounters {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub bypasses: u64,
    pub hit_ratio: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AppCounters {
    pub page: LayerCounters,
    pub query: LayerCounters,
    pub invalidations: u64,
    /// Hits of both layers answered from this process's memory (also counted in `hits`).
    pub memory_hits: u64,
    pub db_loads: u64,
    pub redis_errors: u64,
    pub circuit_open: bool,
    /// The last writes' invalidations, newest first: which dependency tokens each
    /// replaced (for the dashboard); `None` once `without_details` left them out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_invalidations: Option<Vec<RecentInvalidation>>,
}

impl AppCounters {
    /// The counters alone: which listing was written when is left out (see
    /// `CacheMetrics::without_details`).
    pub fn without_details(self) -> Self {
        Self {
            recent_invalidations: None,
            ..self
        }
    }
}

/// One write's invalidation, as the dashboard lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecentInvalidation {
    /// RFC 3339.
    pub at: String,
    pub tokens: Vec<ReplacedToken>,
}

/// A token a write replaced, and how many entries had been stored under its old value
/// (each made unreachable; an entry depending on two replaced tokens counts for both).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplacedToken {
    pub token: String,
    pub entries: u64,
}

/// How many invalidations `recent_invalidations` keeps.
const RECENT_INVALIDATIONS: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_ratio_is_zero_without_lookups() {
        assert_eq!(ratio(0, 0), 0.0);
        assert_eq!(ratio(3, 1), 0.75);
    }

    #[test]
    fn counters_show_in_the_prometheus_text() {
        let m = Metrics::new();
        m.lookup(Layer::Page, Outcome::Hit);
        m.memory_hit(Layer::Page);
        m.invalidation();
        let text = m.render_prometheus();
        assert!(text.contains(r#"cache_lookups_total{layer="page",outcome="hit"} 1"#));
        assert!(text.contains("cache_invalidations_total 1"));
        assert_eq!(m.snapshot().page.hits, 1);
        assert_eq!(m.snapshot().memory_hits, 1);
    }
}
