//! Prometheus metrics: latency histograms cheap enough for the hot path, and the
//! exposition built from plain counters when a scraper asks.
//!
//! Every part keeps its own figures as plain integers (the front end, which is one
//! thread) or atomics (proxies, pools, the job service), and pays nothing more per
//! request than an increment. Only a scrape builds an [`Exposition`]: a fresh
//! `prometheus-client` registry filled from those figures and encoded in the text
//! exposition format (OpenMetrics 1.0, which Prometheus reads; the answer's
//! `Content-Type` is [`CONTENT_TYPE`]).
//!
//! Names follow Prometheus' conventions: the `prime_` prefix, base units (`_seconds`,
//! `_bytes`), and `_total` on counters, which the encoder adds itself: pass counter
//! names without it.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The `Content-Type` of an exposition (the OpenMetrics text format).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The upper bounds of the latency buckets, in microseconds: from 100 µs to 30 s, about
/// ×2.5 apart (the last bucket, `+Inf`, is implied).
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000, 30_000_000,
];

/// Buckets: one per bound, and `+Inf`.
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The bucket a duration of `us` microseconds falls in.
fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US
        .iter()
        .position(|&bound| us <= bound)
        .unwrap_or(LATENCY_BOUNDS_US.len())
}

/// A latency histogram owned by one thread: an increment per observation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative).
    counts: [u64; BUCKETS],
    /// The sum of the observations, in microseconds.
    sum_us: u64,
}

impl Histogram {
    /// Counts one duration of `us` microseconds.
    pub fn observe_us(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The duration under which a share `q` (0 to 1) of the observations fall, in
    /// microseconds, interpolated inside its bucket as Prometheus' `histogram_quantile`
    /// does; `None` with no observations.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let low = if index == 0 {
                    0
                } else {
                    LATENCY_BOUNDS_US[index - 1]
                };
                let Some(&high) = LATENCY_BOUNDS_US.get(index) else {
                    return Some(low);
                };
                let share = (rank - below as f64) / count as f64;
                return Some(low + ((high - low) as f64 * share) as u64);
            }
            below += count;
        }
        LATENCY_BOUNDS_US.last().copied()
    }

    /// What was counted since `earlier` (a copy of this histogram taken before).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut counts = [0; BUCKETS];
        for (index, count) in counts.iter_mut().enumerate() {
            *count = self.counts[index].saturating_sub(earlier.counts[index]);
        }
        Histogram {
            counts,
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }
}

/// A latency histogram shared by threads (a pool's workers, a proxy and its scraper):
/// two relaxed atomic additions per observation.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl SharedHistogram {
    /// Counts one duration of `us` microseconds.
    pub fn observe_us(&self, us: u64) {
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Histogram {
        let mut counts = [0; BUCKETS];
        for (index, count) in counts.iter_mut().enumerate() {
            *count = self.counts[index].load(Ordering::Relaxed);
        }
        Histogram {
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A metric's labels: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// A histogram as the encoder sees it: set once, encoded once.
#[derive(Debug, Default)]
struct HistogramCell(Mutex<Histogram>);

impl TypedMetric for HistogramCell {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramCell {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let histogram = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        let buckets: Vec<(f64, u64)> = histogram
            .counts
            .iter()
            .enumerate()
            .map(|(index, &count)| {
                let bound = LATENCY_BOUNDS_US
                    .get(index)
                    .map_or(f64::MAX, |&us| us as f64 / 1e6);
                (bound, count)
            })
            .collect();
        let sum = histogram.sum_us as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, histogram.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One scrape's metrics, filled from the parts' figures and then [encoded](Self::encode).
/// A name keeps the kind and help it was first given; labels tell its series apart.
#[derive(Default)]
pub struct Exposition {
    registry: Registry,
    counters: HashMap<String, Family<Labels, Counter>>,
    gauges: HashMap<String, Family<Labels, Gauge>>,
    histograms: HashMap<String, Family<Labels, HistogramCell>>,
    /// Every gauge set, to be read back ([`Exposition::gauge_values`]).
    gauge_log: Vec<(String, Labels, i64)>,
}

/// A help text without its full stop, which the encoder adds.
fn trim(help: &str) -> &str {
    help.trim_end_matches('.')
}

/// Owned labels from borrowed pairs.
fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter `NAME_total` (give `name` without `_total`) with these labels at
    /// `value`. `help` is a sentence; the encoder adds its full stop.
    pub fn counter(&mut self, name: &str, help: &str, pairs: &[(&str, &str)], value: u64) {
        if pairs.is_empty() {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            self.registry.register(name, trim(help), counter);
            return;
        }
        let family = self.counters.entry(name.to_string()).or_insert_with(|| {
            let family = Family::default();
            self.registry.register(name, trim(help), family.clone());
            family
        });
        family.get_or_create(&labels(pairs)).inc_by(value);
    }

    /// The gauges named `name` set so far, with their labels (for the status page).
    pub fn gauge_values<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a [(String, String)], i64)> + 'a {
        self.gauge_log
            .iter()
            .filter(move |(gauge, _, _)| gauge == name)
            .map(|(_, labels, value)| (&labels[..], *value))
    }

    /// A gauge with these labels at `value`.
    pub fn gauge(&mut self, name: &str, help: &str, pairs: &[(&str, &str)], value: i64) {
        self.gauge_log
            .push((name.to_string(), labels(pairs), value));
        if pairs.is_empty() {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            self.registry.register(name, trim(help), gauge);
            return;
        }
        let family = self.gauges.entry(name.to_string()).or_insert_with(|| {
            let family = Family::default();
            self.registry.register(name, trim(help), family.clone());
            family
        });
        family.get_or_create(&labels(pairs)).set(value);
    }

    /// A latency histogram in seconds (`name` should end in `_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, pairs: &[(&str, &str)], value: &Histogram) {
        if pairs.is_empty() {
            let cell = HistogramCell(Mutex::new(*value));
            self.registry.register(name, trim(help), cell);
            return;
        }
        let family = self.histograms.entry(name.to_string()).or_insert_with(|| {
            let family = Family::default();
            self.registry.register(name, trim(help), family.clone());
            family
        });
        let cell = family.get_or_create(&labels(pairs));
        *cell.0.lock().unwrap_or_else(|e| e.into_inner()) = *value;
    }

    /// The text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Figures another part adds to a scrape, e.g. the proxies and pools that run in the
/// front end's process (see the pipeline builder).
#[derive(Clone)]
pub struct MetricsSource(Arc<dyn Fn(&mut Exposition) + Send + Sync>);

impl MetricsSource {
    /// A source that adds its figures with `expose`.
    pub fn new(expose: impl Fn(&mut Exposition) + Send + Sync + 'static) -> Self {
        MetricsSource(Arc::new(expose))
    }

    /// Adds the figures to `out`.
    pub fn expose(&self, out: &mut Exposition) {
        (self.0)(out)
    }
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets_and_sum() {
        let mut histogram = Histogram::default();
        histogram.observe_us(50);
        histogram.observe_us(100);
        histogram.observe_us(101);
        histogram.observe_us(60_000_000);
        assert_eq!(histogram.counts[0], 2);
        assert_eq!(histogram.counts[1], 1);
        assert_eq!(histogram.counts[BUCKETS - 1], 1);
        assert_eq!(histogram.count(), 4);
        assert_eq!(histogram.sum_us, 60_000_251);
    }

    #[test]
    fn a_quantile_is_interpolated_inside_its_bucket() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile_us(0.5), None);
        for _ in 0..10 {
            histogram.observe_us(700);
        }
        // All ten in (500, 1000]: the median is halfway.
        assert_eq!(histogram.quantile_us(0.5), Some(750));
        assert_eq!(histogram.quantile_us(1.0), Some(1_000));
    }

    #[test]
    fn the_exposition_names_counters_total_and_histograms_in_seconds() {
        let mut histogram = Histogram::default();
        histogram.observe_us(300);
        let mut exposition = Exposition::new();
        exposition.counter("prime_things", "Things.", &[("kind", "a")], 3);
        exposition.counter("prime_things", "Things.", &[("kind", "b")], 4);
        exposition.gauge("prime_level", "Level.", &[], -2);
        exposition.gauge("prime_depth", "Depth.", &[("stage", "a")], 5);
        exposition.histogram("prime_wait_seconds", "Waits.", &[], &histogram);
        let text = exposition.encode();
        assert!(
            text.contains("prime_things_total{kind=\"a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("prime_things_total{kind=\"b\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("prime_level -2\n"), "{text}");
        assert!(text.contains("# HELP prime_level Level.\n"), "{text}");
        assert!(text.contains("prime_depth{stage=\"a\"} 5\n"), "{text}");
        assert!(
            text.contains("prime_wait_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("prime_wait_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
