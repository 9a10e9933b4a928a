//! Drain and stop: turning new connections away while the ones in hand are served,
//! answering what is still unfinished when the drain ends, and closing everything at
//! the stop.

use super::output::AnswerBytes;
use super::{InFlight, Server};
use crate::pipeline::envelope::InterruptReason;
use crate::pipeline::loopback::{render_failure, Failure};
use std::time::Instant;

/// How long closing a client-facing socket may wait for libzmq to write what it still
/// holds (milliseconds): bounded, so a client that does not read cannot hold up a stop.
const LINGER_AT_STOP: i32 = 1000;

impl Server {
    /// Turns new connections away from now on: connections already open are served
    /// until the drain ends.
    ///
    /// The listeners stay bound: unbinding a ZMQ_STREAM endpoint also closes every
    /// connection accepted through it (libzmq makes them children of the listener), which
    /// would drop the very requests a drain is for. Where the front end opened the
    /// listening descriptor, it stops listening, so new connections are refused (see
    /// `listen_fd`); any accepted meanwhile, and all on other endpoints, are closed as
    /// they arrive.
    pub(super) fn begin_drain(&mut self) {
        self.draining_since = Some(Instant::now());
        for listener in &self.listeners {
            if let Some(fd) = &listener.listen_fd {
                fd.stop(&listener.endpoint);
            }
        }
        self.drain_job_waits();
        self.end_all_holds();
        // Every WebSocket is closed with 1001 at once: a socket never ends by itself.
        self.sweep_websockets(Instant::now());
        log::info!(
            "draining: {} requests in flight, {} connections; waiting up to {:.1}s",
            self.requests.len(),
            self.connections.len(),
            self.config.drain_timeout.as_secs_f64()
        );
    }

    pub(super) fn drain_finished(&self) -> bool {
        let Some(since) = self.draining_since else {
            return false;
        };
        let settled = self.requests.is_empty()
            && self.job_runs_in_flight() == 0
            && self
                .connections
                .values()
                .all(|c| c.slots.is_empty() && c.output.is_empty());
        settled || since.elapsed() >= self.config.drain_timeout
    }

    /// The drain ended with requests still in the pipeline: each is answered 503 with
    /// `Connection: close` (or the netstring error) rather than cut off unanswered, and
    /// its connection closes after that answer.
    pub(super) fn refuse_unfinished(&mut self) {
        let runs = self.job_runs_in_flight();
        if runs > 0 {
            log::warn!(
                "drain over with {runs} job runs unfinished: they stay running in the store and run again at the next start"
            );
        }
        if self.requests.is_empty() {
            return;
        }
        log::warn!(
            "drain over with {} requests unfinished: answering them 503",
            self.requests.len()
        );
        let failure = Failure::rejected(503, "the server stopped before the request was done");
        let unfinished: Vec<(u64, InFlight)> = self.requests.drain().collect();
        for (request_id, in_flight) in unfinished {
            log::info!("request {request_id}: unfinished at the end of the drain; 503");
            let bytes = render_failure(in_flight.protocol, &failure, false);
            if let Some(conn) = self.connections.get_mut(&in_flight.connection) {
                conn.close_after(request_id);
            }
            self.fill(in_flight.connection, request_id, AnswerBytes::Owned(bytes));
        }
        self.flush_dirty();
    }

    /// Tells workers to drop everything of ours and closes every connection.
    pub(super) fn stop(&mut self) {
        // The last answers (a drain's 503s among them) may still be in libzmq's queues:
        // let closing the sockets wait a moment for them to be written.
        for listener in &self.listeners {
            if let Err(e) = listener.socket.set_linger(LINGER_AT_STOP) {
                log::debug!("{}: linger not set: {e}", listener.endpoint);
            }
        }
        self.publish(self.nonce, 0, InterruptReason::ShuttingDown);
        let ids: Vec<u64> = self.connections.keys().copied().collect();
        for id in ids {
            self.close(id, true);
        }
        self.stop_jobs();
        log::info!("front end stopped after {}", self.stats);
    }

    pub(super) fn log_summary(&self) {
        let workers = self
            .upstream
            .fresh(Instant::now())
            .map_or_else(|| "unknown".to_string(), |s| s.workers.to_string());
        log::info!(
            "front end: {} connections, {} requests in flight, {} forwarded, {} answered, {} errors, {} timed out, workers at the first proxy: {workers}{}",
            self.connections.len(),
            self.requests.len(),
            self.stats.forwarded,
            self.stats.answered,
            self.stats.errors,
            self.stats.timed_out,
            self.job_summary()
        );
    }
}
