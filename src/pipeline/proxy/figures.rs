//! What a proxy counts and reports: its counters ([`ProxyStats`]), its state as a probe
//! sees it ([`ProxyStatus`]), the summary line, and the copy a metrics scrape reads.

use super::Proxy;

/// Counters a proxy keeps, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Jobs handed to workers.
    pub dispatched: u64,
    /// Jobs answered 503 because the queue was full.
    pub rejected_full: u64,
    /// Workers forgotten for missing heartbeats.
    pub evicted: u64,
    /// Jobs handed back unstarted by workers stuck in long jobs, and placed again.
    pub returned: u64,
    /// Times a job could not be sent to a live worker because libzmq took the pipe to
    /// it for full; the job went to another worker or waited for this one's READY.
    pub pipe_full: u64,
    /// Jobs answered 503 because the stage had had no worker for `no_worker_grace`.
    pub rejected_no_workers: u64,
}

impl std::fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} jobs handed to workers, {} refused (queue full), {} handed back and placed again, {} workers evicted (silent), {} sends deferred (pipe to a worker full)",
            self.dispatched, self.rejected_full, self.returned, self.evicted, self.pipe_full
        )
    }
}

/// What a proxy reports about itself in answer to a probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStatus {
    /// Workers that heartbeat.
    pub workers: usize,
    /// Of those, how many can take a job now.
    pub idle: usize,
    /// Jobs waiting for a worker.
    pub waiting: usize,
    /// Jobs handed to workers since start.
    pub dispatched: u64,
}

impl ProxyStatus {
    /// The JSON form sent in a `STATUS` message.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workers": self.workers,
            "idle": self.idle,
            "waiting": self.waiting,
            "dispatched": self.dispatched,
        })
    }

    /// Reads the JSON form; `None` if it is not one.
    pub fn from_json(bytes: &[u8]) -> Option<ProxyStatus> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let field = |name: &str| value.get(name).and_then(serde_json::Value::as_u64);
        Some(ProxyStatus {
            workers: field("workers")? as usize,
            idle: field("idle")? as usize,
            waiting: field("waiting")? as usize,
            dispatched: field("dispatched")?,
        })
    }
}

impl Proxy {
    /// The proxy's state as a probe reports it.
    pub fn status(&self) -> ProxyStatus {
        ProxyStatus {
            workers: self.workers.len(),
            idle: self.idle.len(),
            waiting: self.waiting.len(),
            dispatched: self.stats.dispatched,
        }
    }

    /// Logs the one-line summary of [`ProxyConfig::summary_every`](super::ProxyConfig::summary_every).
    pub(super) fn log_summary(&self) {
        let status = self.status();
        log::info!(
            "proxy {}: {} workers ({} idle), {} waiting, {} dispatched, {} handed back, {} rejected (queue full), {} evicted",
            self.bound.0,
            status.workers,
            status.idle,
            status.waiting,
            self.stats.dispatched,
            self.stats.returned,
            self.stats.rejected_full,
            self.stats.evicted
        );
    }

    /// Copies the state and counters where a metrics scrape reads them.
    pub(super) fn publish_metrics(&self) {
        let Some(metrics) = &self.config.metrics else {
            return;
        };
        let set = |cell: &std::sync::atomic::AtomicU64, value: u64| {
            cell.store(value, std::sync::atomic::Ordering::Relaxed)
        };
        set(&metrics.workers, self.workers.len() as u64);
        set(&metrics.idle, self.idle.len() as u64);
        set(&metrics.waiting, self.waiting.len() as u64);
        set(&metrics.dispatched, self.stats.dispatched);
        set(&metrics.rejected_full, self.stats.rejected_full);
        set(&metrics.rejected_no_workers, self.stats.rejected_no_workers);
        set(&metrics.evicted, self.stats.evicted);
        set(&metrics.returned, self.stats.returned);
    }
}
