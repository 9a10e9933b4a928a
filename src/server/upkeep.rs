//! The front end's timers: the sweep (504 past a request's deadline, 408 for slow
//! request heads, idle connections closed, maps shrunk after a burst) and the probe of
//! the first proxy whose answers the health path reports.

use super::answers::timed_out;
use super::config::ListenProtocol;
use super::connection::Decoder;
use super::cors;
use super::output::AnswerBytes;
use super::Server;
use crate::base::sockets;
use crate::pipeline::envelope::{InterruptReason, Protocol};
use crate::pipeline::loopback::{render_failure, Failure};
use crate::pipeline::proxy::ProxyStatus;
use crate::pipeline::wire::{PROBE, STATUS};
use std::time::{Duration, Instant};

/// How often the first proxy is asked for its status.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How old the first proxy's last status may be for the health check to trust it.
const STATUS_FRESH: Duration = Duration::from_secs(2);

/// The longest time between two walks of every connection (see [`ConnectionWalk`]).
const WALK_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// When the sweep next walks every connection for slow request heads and idle
/// connections, and the connections that half-closed (probed at every sweep).
///
/// The walk touches every connection's record, so with thousands of held streams it was
/// most of an idle front end's work (10,000 holds: about 5.7 % of a core at a sweep every
/// 100 ms): it now runs every tenth of the shorter of `header_timeout` and
/// `idle_timeout` (1 s with the defaults, never more often than the sweep), so either
/// fires at most a tenth of it late. Half-closed connections are few and their probes
/// are timed by `half_closed_probe`: they are listed here when they half-close, and
/// checked at every sweep without a walk.
#[derive(Default)]
pub(super) struct ConnectionWalk {
    next: Option<Instant>,
    pub(super) half_closed: Vec<u64>,
}

/// What the front end last heard from the first proxy.
#[derive(Default)]
pub(super) struct UpstreamView {
    pub(super) status: Option<ProxyStatus>,
    pub(super) last_seen: Option<Instant>,
    pub(super) last_probe: Option<Instant>,
}

impl UpstreamView {
    pub(super) fn fresh(&self, now: Instant) -> Option<ProxyStatus> {
        let seen = self.last_seen?;
        (now.duration_since(seen) < STATUS_FRESH)
            .then_some(self.status)
            .flatten()
    }
}

impl Server {
    /// Timeouts: 504 for requests past their deadline, 408 for slow request heads, close
    /// for idle connections.
    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
        self.refusals.flush(now);
        self.tick_status_streams(now);
        self.sweep_jobs(now);
        self.sweep_job_reads(now);
        self.sweep_selftests(now);
        self.sweep_holds(now);
        self.sweep_control(now);
        self.sweep_websockets(now);
        self.census_sweep(now);
        for listener in &mut self.listeners {
            listener.accept_watch.check(&listener.endpoint, now);
        }
        let expired: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for request_id in expired {
            let Some(in_flight) = self.requests.remove(&request_id) else {
                continue;
            };
            self.stats.timed_out += 1;
            self.publish(self.nonce, request_id, InterruptReason::DeadlinePassed);
            let timeout = self.config.request_timeout;
            let bytes = AnswerBytes::Owned(timed_out(in_flight.protocol, timeout));
            self.fill(in_flight.connection, request_id, bytes);
        }
        if !self.walk.half_closed.is_empty() {
            let half_closed = std::mem::take(&mut self.walk.half_closed);
            self.check_half_closed(&half_closed, now);
            let connections = &self.connections;
            self.walk.half_closed = half_closed;
            self.walk.half_closed.retain(|id| {
                connections
                    .get(id)
                    .is_some_and(|conn| conn.half_closed.is_some())
            });
        }
        // Only streams fed by a worker are reminded, and those are in flight.
        if !self.requests.is_empty() {
            self.remind_streams();
        }
        if self.walk.next.is_some_and(|at| at > now) {
            return;
        }
        let every = self.config.header_timeout.min(self.config.idle_timeout) / 10;
        self.walk.next = Some(now + every.clamp(super::SWEEP_EVERY, WALK_AT_MOST_EVERY));
        let mut slow = Vec::new();
        let mut idle = Vec::new();
        for (id, conn) in &self.connections {
            let quiet = now.duration_since(conn.last_active);
            if conn.closing {
                continue;
            }
            let head_late = conn
                .head_started
                .is_some_and(|t| now.duration_since(t) >= self.config.header_timeout);
            let body_stalled = conn.decoder.head_complete() && quiet >= self.config.idle_timeout;
            if head_late || body_stalled {
                slow.push(*id);
            } else if conn.is_idle()
                && quiet >= self.config.idle_timeout
                && !matches!(conn.decoder, Decoder::WebSocket(_))
            {
                idle.push(*id);
            }
        }
        for id in slow {
            log::info!("connection {id}: request not received in time; 408");
            let failure = Failure::rejected(408, "the request was not received in time");
            let protocol = match self.listener_protocol(id) {
                Some(ListenProtocol::Netstring) => Protocol::Netstring,
                _ => Protocol::Http {
                    minor_version: 1,
                    keep_alive: false,
                    head: false,
                },
            };
            let origin = match self.connections.get(&id).map(|c| &c.decoder) {
                Some(Decoder::Http(parser)) => parser.origin(),
                _ => None,
            };
            if matches!(protocol, Protocol::Http { .. }) {
                self.cors_fields = cors::refusal_fields(self.config.cors.as_ref(), origin);
            }
            let bytes = render_failure(protocol, &failure, false);
            self.answer_now(id, bytes, true, None);
        }
        for id in idle {
            log::debug!("connection {id}: idle; closing");
            self.close(id, true);
        }
    }

    /// Lets the per-connection maps and queues give back what a burst of connections
    /// made them grow to.
    pub(super) fn shrink_maps(&mut self) {
        self.connections.shrink_to_fit();
        self.requests.shrink_to_fit();
        self.dirty.shrink_to_fit();
        self.retries.shrink_to_fit();
        for listener in &mut self.listeners {
            listener.peers.shrink_to_fit();
            listener.hang_ups.shrink_to_fit();
        }
    }

    pub(super) fn listener_protocol(&self, id: u64) -> Option<ListenProtocol> {
        let conn = self.connections.get(&id)?;
        Some(self.listeners[conn.listener].protocol)
    }

    /// Asks the first proxy for its status: every [`PROBE_EVERY`] while it answers, and
    /// only every [`STATUS_FRESH`] while it does not (so probes don't pile up in the entry
    /// queue of a proxy that is down).
    pub(super) fn probe(&mut self, now: Instant) {
        let due = match self.upstream.last_probe {
            None => true,
            Some(probe) => {
                let answered = self.upstream.last_seen.is_some_and(|seen| seen >= probe);
                let waited = now.duration_since(probe);
                (answered && waited >= PROBE_EVERY) || waited >= STATUS_FRESH
            }
        };
        if due && self.front.entry.send(PROBE, zmq::DONTWAIT).is_ok() {
            self.upstream.last_probe = Some(now);
        }
    }

    /// Reads the first proxy's status answers and every proxy's census answers.
    pub(super) fn drain_entry(&mut self) {
        for index in 0..self.front.routed.len() {
            while let Ok(frames) =
                sockets::recv_frames(&self.front.routed[index].socket, zmq::DONTWAIT)
            {
                if !self.on_proxy_census(Some(index), &frames) {
                    log::debug!(
                        "unexpected message of {} frames from the proxy of stage {:?}",
                        frames.len(),
                        self.front.routed[index].stage
                    );
                }
            }
        }
        while let Ok(frames) = sockets::recv_frames(&self.front.entry, zmq::DONTWAIT) {
            match &frames[..] {
                [tag, body] if &tag[..] == STATUS => {
                    self.upstream.status = ProxyStatus::from_json(body);
                    self.upstream.last_seen = Some(Instant::now());
                }
                _ if self.on_proxy_census(None, &frames) => {}
                _ => log::debug!(
                    "unexpected message of {} frames from the first proxy",
                    frames.len()
                ),
            }
        }
    }
}
