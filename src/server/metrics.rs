//! The front end's Prometheus metrics (`metrics_path`, e.g. `/metrics`).
//!
//! Per request the loop only adds to plain integers it owns ([`FrontMetrics`]): a status
//! class, a latency bucket, the entry the request took. A scrape is answered by the
//! loop itself, which builds the exposition from those integers, what the first
//! proxy last reported, the job service's figures, and (in one process with its
//! stages) the proxies' and pools' own ([`ServerConfig::metrics_source`]).
//!
//! [`ServerConfig::metrics_source`]: super::ServerConfig::metrics_source

use super::front::EntryIndex;
use super::Server;
use crate::base::metrics::{Exposition, Histogram, CONTENT_TYPE};
use crate::http::Response;
use crate::pipeline::envelope::InterruptReason;
use std::cell::Cell;
use std::collections::VecDeque;
use std::time::Instant;

/// The status classes counted: `1xx` to `5xx`, and anything else (netstring answers).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The interrupt reasons counted, in the order of their codes.
const REASONS: [(InterruptReason, &str); 6] = [
    (InterruptReason::ClientGone, "client_gone"),
    (InterruptReason::DeadlinePassed, "deadline_passed"),
    (InterruptReason::ShuttingDown, "shutting_down"),
    (InterruptReason::Cancelled, "cancelled"),
    (InterruptReason::Census, "census"),
    (InterruptReason::ProxyLost, "proxy_lost"),
];

/// What the front end counts for its metrics, as plain integers of its own thread.
#[derive(Default)]
pub(super) struct FrontMetrics {
    /// Answers written, by status class ([`CLASSES`]).
    by_class: [u64; 6],
    /// Time from a request's arrival to its answer being handed to the socket.
    duration: Histogram,
    /// Requests sent into the pipeline through the main entry.
    main_entry: u64,
    /// ... and through each routed entry.
    routed: Vec<u64>,
    /// Interrupts published, by reason ([`REASONS`]); a cell since publishing takes
    /// `&self`.
    interrupts: [Cell<u64>; 6],
    /// The most recent 5xx answers, newest last: (Unix time in seconds, status,
    /// request id).
    failures: VecDeque<(u64, u16, u64)>,
}

/// How many recent failures the status page shows.
const RECENT_FAILURES: usize = 10;

impl FrontMetrics {
    /// Counts an answer with status `status` (`"-"` for netstrings) to a request
    /// `age_us` microseconds old when it was handed out.
    pub(super) fn answered(&mut self, request_id: u64, status: &[u8], age_us: u64) {
        let class = match status.first() {
            Some(digit @ b'1'..=b'5') if status.len() == 3 => usize::from(digit - b'1'),
            _ => 5,
        };
        self.by_class[class] += 1;
        if class == 4 {
            self.failed(request_id, status);
        }
        self.duration.observe_us(age_us);
    }

    /// Keeps a 5xx answer among the recent failures.
    #[cold]
    fn failed(&mut self, request_id: u64, status: &[u8]) {
        let status = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(500);
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.failures.len() == RECENT_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back((second, status, request_id));
    }

    /// The recent failures, newest first, as JSON.
    pub(super) fn recent_failures(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .failures
            .iter()
            .rev()
            .map(|(second, status, request_id)| {
                serde_json::json!({"time": second, "status": status, "request_id": request_id})
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// Counts a request sent into the pipeline through `entry`.
    pub(super) fn forwarded(&mut self, entry: EntryIndex) {
        match entry {
            EntryIndex::Main => self.main_entry += 1,
            EntryIndex::Routed(index) => {
                if self.routed.len() <= index {
                    self.routed.resize(index + 1, 0);
                }
                self.routed[index] += 1;
            }
        }
    }

    /// Counts an interrupt published.
    pub(super) fn interrupted(&self, reason: InterruptReason) {
        let index = usize::from(reason.code()).saturating_sub(1);
        if let Some(cell) = self.interrupts.get(index) {
            cell.set(cell.get() + 1);
        }
    }

    /// The whole-request latency so far.
    pub(super) fn duration(&self) -> &Histogram {
        &self.duration
    }

    /// Answers written so far, by status class, as `(class, count)`.
    pub(super) fn by_class(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CLASSES.iter().copied().zip(self.by_class.iter().copied())
    }
}

impl Server {
    /// The answer to a scrape of the metrics path.
    pub(super) fn metrics_response(&self) -> Response {
        let mut out = Exposition::new();
        self.expose(&mut out);
        Response::new(200)
            .header("Content-Type", CONTENT_TYPE)
            .body(out.encode())
    }

    /// The front end's figures and every source it was given.
    fn expose(&self, out: &mut Exposition) {
        let m = &self.metrics;
        out.gauge(
            "prime_front_end_info",
            "The front end answering this scrape: its number among the front ends sharing the pipeline (0 for a lone one).",
            &[("front_end", &self.front.front_end.to_string())],
            1,
        );
        let help = "Answers the front end wrote, by status class (other: netstring answers).";
        for (class, count) in m.by_class() {
            out.counter("prime_http_requests", help, &[("class", class)], count);
        }
        out.histogram(
            "prime_http_request_duration_seconds",
            "Time from a request's arrival to its answer being handed to the client's socket.",
            &[],
            m.duration(),
        );
        let first = self.front.stages.first().map_or("first", String::as_str);
        let help = "Requests the front end sent into the pipeline, by the stage they entered at (the task table's route, or the first stage).";
        out.counter(
            "prime_pipeline_requests",
            help,
            &[("stage", first)],
            m.main_entry,
        );
        for (index, routed) in self.front.routed.iter().enumerate() {
            let count = m.routed.get(index).copied().unwrap_or(0);
            out.counter(
                "prime_pipeline_requests",
                help,
                &[("stage", &routed.stage)],
                count,
            );
        }
        out.gauge(
            "prime_requests_in_flight",
            "Requests in the pipeline, waiting for their answer.",
            &[],
            self.requests.len() as i64,
        );
        out.gauge(
            "prime_connections_open",
            "Client connections open.",
            &[],
            self.connections.len() as i64,
        );
        out.counter(
            "prime_connections",
            "Client connections accepted.",
            &[],
            self.stats.connections,
        );
        out.counter(
            "prime_http_requests_timed_out",
            "Requests answered 504 by the front end because their deadline passed.",
            &[],
            self.stats.timed_out,
        );
        let help = "Interrupts the front end published, by reason.";
        for ((_, reason), count) in REASONS.iter().zip(&m.interrupts) {
            out.counter("prime_interrupts", help, &[("reason", reason)], count.get());
        }
        if let Some(status) = self.upstream.fresh(Instant::now()) {
            let labels = [("stage", first)];
            out.gauge(
                "prime_first_proxy_workers",
                "Workers the first stage's proxy reported at its last probe.",
                &labels,
                status.workers as i64,
            );
            out.gauge(
                "prime_first_proxy_idle_workers",
                "Idle workers the first stage's proxy reported at its last probe.",
                &labels,
                status.idle as i64,
            );
            out.gauge(
                "prime_first_proxy_queue_depth",
                "Jobs waiting in the first stage's proxy at its last probe.",
                &labels,
                status.waiting as i64,
            );
        }
        self.expose_jobs(out);
        self.expose_channels(out);
        self.expose_websockets(out);
        if let Some(source) = &self.config.metrics_source {
            source.expose(out);
        }
    }

    /// Held connections and the channels' traffic (see `channels` and `holds`).
    fn expose_channels(&self, out: &mut Exposition) {
        let channels = &self.channels;
        out.gauge(
            "prime_held_connections",
            "Requests held on channels (long-polls and streams) waiting for messages.",
            &[],
            channels.holds.len() as i64,
        );
        out.gauge(
            "prime_channels",
            "Channels this front end knows: held on, or kept for their history.",
            &[],
            channels.map.len() as i64,
        );
        let stats = &channels.stats;
        out.counter(
            "prime_channel_messages_published",
            "Messages published on this front end (control listener and stages).",
            &[],
            stats.published,
        );
        out.counter(
            "prime_channel_messages_received",
            "Messages received from the bus (only channels held here arrive).",
            &[],
            stats.bus_received,
        );
        out.counter(
            "prime_channel_messages_delivered",
            "Messages written to held connections (one per hold).",
            &[],
            stats.delivered,
        );
        out.counter(
            "prime_channel_lost_positions",
            "Holds told that their prev-id or Last-Event-ID was no longer in the history.",
            &[],
            stats.lost,
        );
        if let Some(subscriptions) = &channels.subscriptions {
            out.gauge(
                "prime_channel_url_subscriptions",
                "URL subscriptions registered on this front end.",
                &[],
                subscriptions.registry().len() as i64,
            );
        }
    }
}
