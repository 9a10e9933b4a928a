//! The live status page: `GET <status_path>` with `Accept: text/html` is a small page
//! with everything inline (no external assets), and with `Accept: text/event-stream` a
//! stream of Server-Sent Events the page listens to: one snapshot as soon as it opens,
//! then one a second. A snapshot holds the stages with their workers and queue depths,
//! requests per second and latency percentiles over the last interval, jobs by state,
//! and the most recent failures (5xx answers).
//!
//! The figures are the metrics' own (`server::metrics`, and the proxies' and pools'
//! when they run in this process), so the page costs nothing while nobody watches.
//! Event streams end with the drain.

use super::answers::mark_dirty;
use super::output::AnswerBytes;
use super::Server;
use crate::base::metrics::{Exposition, Histogram};
use crate::http::{ParsedRequest, Response, SseEvent};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a snapshot goes to every open stream.
const EVERY: Duration = Duration::from_secs(1);

/// The page.
const PAGE: &str = include_str!("status_page.html");

/// The open event streams and what the last snapshot counted.
#[derive(Default)]
pub(super) struct StatusStreams {
    /// `(connection, request id, HTTP minor version)` of each stream.
    watchers: Vec<(u64, u64, u8)>,
    /// When the next snapshot is due, while any stream is open.
    next: Option<Instant>,
    /// When the last snapshot was taken, its answers count and latency histogram.
    last: Option<(Instant, u64, Histogram)>,
}

impl Server {
    /// Whether a request for the status path asks for the page or its events.
    pub(super) fn wants_status_page(request: &ParsedRequest) -> Option<bool> {
        let accept = crate::http::field_text(&request.head, "accept")?;
        if accept.contains("text/event-stream") {
            Some(false)
        } else if accept.contains("text/html") {
            Some(true)
        } else {
            None
        }
    }

    /// The page itself.
    pub(super) fn status_page() -> Response {
        Response::new(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("Cache-Control", "no-cache")
            .body(PAGE)
    }

    /// Opens an event stream for `request` on connection `id`: the head and a first
    /// snapshot at once, then one every [`EVERY`].
    pub(super) fn open_status_stream(
        &mut self,
        id: u64,
        request: &ParsedRequest,
        label: Option<super::connection::Label>,
    ) {
        let protocol = super::requests::http_protocol(request);
        let Some(request_id) = self.hold_slot(id, protocol, !request.keep_alive, label) else {
            return;
        };
        let head = Response::new(200)
            .header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .stream_head(request.minor_version, request.keep_alive);
        let snapshot = self.status_snapshot(Instant::now());
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let close_delimited = request.minor_version == 0;
        conn.stream_part(request_id, AnswerBytes::Owned(head), close_delimited);
        let event = Response::chunk(request.minor_version, &snapshot);
        conn.stream_part(request_id, AnswerBytes::Owned(event), false);
        mark_dirty(&mut self.dirty, conn, id);
        let minor = request.minor_version;
        self.status_streams.watchers.push((id, request_id, minor));
        self.status_streams
            .next
            .get_or_insert_with(|| Instant::now() + EVERY);
    }

    /// Sends a snapshot to every open stream when one is due; forgets streams whose
    /// connection is gone; ends them all during a drain.
    pub(super) fn tick_status_streams(&mut self, now: Instant) {
        let Some(next) = self.status_streams.next else {
            return;
        };
        let draining = self.draining_since.is_some();
        if now < next && !draining {
            return;
        }
        let snapshot = self.status_snapshot(now);
        let watchers = std::mem::take(&mut self.status_streams.watchers);
        for (id, request_id, minor) in watchers {
            let Some(conn) = self.connections.get_mut(&id) else {
                continue;
            };
            if draining {
                let last = AnswerBytes::Owned(Response::last_chunk(minor).to_vec());
                if !conn.end_stream(request_id, Some(last)) {
                    continue;
                }
            } else {
                let event = AnswerBytes::Owned(Response::chunk(minor, &snapshot));
                if conn.stream_part(request_id, event, false).is_none() {
                    continue;
                }
                self.status_streams.watchers.push((id, request_id, minor));
            }
            mark_dirty(&mut self.dirty, conn, id);
        }
        self.status_streams.next = (!self.status_streams.watchers.is_empty()).then(|| now + EVERY);
    }

    /// One snapshot as an SSE event (its data one line of JSON).
    fn status_snapshot(&mut self, now: Instant) -> Vec<u8> {
        let mut figures = Exposition::new();
        if let Some(source) = &self.config.metrics_source {
            source.expose(&mut figures);
        }
        let mut stages: BTreeMap<String, Value> = BTreeMap::new();
        let mut put = |name: &str, key: &str| {
            for (labels, value) in figures.gauge_values(name) {
                if let Some((_, stage)) = labels.iter().find(|(k, _)| k == "stage") {
                    let entry = stages.entry(stage.clone()).or_insert_with(|| json!({}));
                    entry[key] = json!(value);
                }
            }
        };
        put("prime_proxy_workers", "workers");
        put("prime_proxy_idle_workers", "idle");
        put("prime_proxy_queue_depth", "queue");
        put("prime_stage_workers", "threads");
        let mut order: Vec<String> = self.front.stages.clone();
        order.extend(
            stages
                .keys()
                .filter(|k| !order.contains(k))
                .cloned()
                .collect::<Vec<_>>(),
        );
        if stages.is_empty() {
            // A front end alone knows the first stage from its probes.
            if let Some(status) = self.upstream.fresh(now) {
                let name = self.front.stages.first().cloned().unwrap_or("first".into());
                stages.insert(
                    name.clone(),
                    json!({"workers": status.workers, "idle": status.idle, "queue": status.waiting}),
                );
                if order.is_empty() {
                    order.push(name);
                }
            }
        }
        let stages: Vec<Value> = order
            .iter()
            .map(|name| {
                let mut stage = stages.get(name).cloned().unwrap_or_else(|| json!({}));
                stage["stage"] = json!(name);
                stage
            })
            .collect();
        let answered = self.stats.answered;
        let duration = *self.metrics.duration();
        let (rate, recent) = match self.status_streams.last {
            Some((at, count, earlier)) if now > at => {
                let seconds = now.duration_since(at).as_secs_f64();
                let rate = answered.saturating_sub(count) as f64 / seconds;
                (Some(rate), duration.since(&earlier))
            }
            _ => (None, duration),
        };
        self.status_streams.last = Some((now, answered, duration));
        let percentile = |q: f64| recent.quantile_us(q).map(|us| us as f64 / 1000.0);
        let mut body = json!({
            "stages": stages,
            "requests_per_second": rate,
            "latency_ms": {"p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99)},
            "answered": answered,
            "errors": self.stats.errors,
            "in_flight": self.requests.len(),
            "connections": self.connections.len(),
            "draining": self.draining_since.is_some(),
            "failures": self.metrics.recent_failures(),
        });
        if let Some(jobs) = self.job_stats_json() {
            body["jobs"] = jobs;
        }
        SseEvent::new(body.to_string()).event("status").to_bytes()
    }
}
