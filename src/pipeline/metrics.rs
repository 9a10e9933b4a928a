//! What a proxy shows a metrics scrape: its state and counters, copied into atomics at
//! each of its sweeps (a few times a second), so that the proxy's loop pays nothing per
//! message and a scrape, on another thread, never waits on it.

use crate::base::metrics::Exposition;
use std::sync::atomic::{AtomicU64, Ordering};

/// A proxy's figures as last published (see [`crate::pipeline::proxy::ProxyConfig::metrics`]).
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Workers that heartbeat.
    pub(crate) workers: AtomicU64,
    /// Of those, how many can take a job now.
    pub(crate) idle: AtomicU64,
    /// Jobs waiting for a worker.
    pub(crate) waiting: AtomicU64,
    /// Jobs handed to workers.
    pub(crate) dispatched: AtomicU64,
    /// Jobs answered 503 because the queue was full.
    pub(crate) rejected_full: AtomicU64,
    /// Jobs answered 503 because the stage had had no worker for too long.
    pub(crate) rejected_no_workers: AtomicU64,
    /// Workers forgotten for missing heartbeats.
    pub(crate) evicted: AtomicU64,
    /// Jobs handed back unstarted and placed again.
    pub(crate) returned: AtomicU64,
}

impl ProxyMetrics {
    /// Adds the proxy's figures, labelled `stage`, to `out`: `prime_proxy_workers`,
    /// `prime_proxy_idle_workers`, `prime_proxy_queue_depth`, and
    /// `prime_proxy_jobs_total` by outcome.
    pub fn expose(&self, stage: &str, out: &mut Exposition) {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let labels = [("stage", stage)];
        out.gauge(
            "prime_proxy_workers",
            "Workers the stage's proxy hears heartbeats from.",
            &labels,
            load(&self.workers) as i64,
        );
        out.gauge(
            "prime_proxy_idle_workers",
            "Workers of the stage that can take a job now.",
            &labels,
            load(&self.idle) as i64,
        );
        out.gauge(
            "prime_proxy_queue_depth",
            "Jobs waiting in the stage's proxy for an idle worker.",
            &labels,
            load(&self.waiting) as i64,
        );
        let help = "Jobs the stage's proxy handled, by outcome: dispatched to a worker, \
refused (queue full, or no worker), or returned (handed back by a worker stuck in a long job).";
        for (outcome, value) in [
            ("dispatched", &self.dispatched),
            ("queue_full", &self.rejected_full),
            ("no_workers", &self.rejected_no_workers),
            ("returned", &self.returned),
        ] {
            let labels = [("stage", stage), ("outcome", outcome)];
            out.counter("prime_proxy_jobs", help, &labels, load(value));
        }
        out.counter(
            "prime_proxy_workers_evicted",
            "Workers the stage's proxy forgot because their heartbeats stopped.",
            &labels,
            load(&self.evicted),
        );
    }
}
