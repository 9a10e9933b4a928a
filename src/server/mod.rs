//! The front end: owns the client-facing ZMQ_STREAM sockets, turns bytes into requests
//! for the pipeline and loopback answers back into bytes, in request order.
//!
//! It answers by itself only what needs no worker: parse errors (4xx), the health and
//! status paths, overload (503), slow clients (408) and requests past their deadline
//! (504). When a client goes, or a request's deadline passes, it publishes an interrupt
//! so workers can drop the work.
//!
//! Requests go to the first proxy through the main entry socket; with a task table
//! ([`FrontSockets::route_tasks`]) a request whose `X-Task-Name` or path names another
//! stage goes through that stage's entry instead, straight to its proxy, and one naming
//! an unknown task is answered 400 here (async jobs are routed the same way, from their
//! stored head). Every entry is read for census answers, asked in a census, and given
//! the self-test's probe.
//!
//! It probes the first proxy a few times a second (`PROBE` on its main entry, answered
//! by `STATUS`), so the health path says 200 only while a worker is there to serve.
//! The status path with `?selftest=1` (or `selftest_path`) goes further: a probe
//! through every stage and a check of the job store (see `selftest`).
//!
//! On a drain it stops listening (new connections are refused; see `listen_fd`), keeps
//! serving the connections it has (or answers their new requests 503 with `Connection:
//! close`, if configured), and returns once nothing is in flight, or when the drain
//! timeout passes.
//!
//! ZMQ_STREAM notes, learned the hard way (libzmq 4.3):
//! - a peer's connect and disconnect each arrive as `[routing id, empty frame]`; data as
//!   `[routing id, bytes]`, split or coalesced at any byte, so every connection keeps a
//!   streaming decoder. Stock libzmq also reads a client's half-close (FIN) as a
//!   disconnect and drops the connection with the answers; our patched copy
//!   (vendor/zeromq-src) sends a first empty frame when the client has finished
//!   sending and keeps the connection for the answers, and a second when it is gone;
//! - we close a connection by sending `[routing id, empty frame]`, and get no notice back;
//!   data that still arrives for that id is dropped. What libzmq already holds for the
//!   peer is still written before the connection closes, so an answer followed by a close
//!   arrives whole;
//! - unbinding an endpoint closes every connection accepted through it, so a drain
//!   cannot simply unbind: it shuts down the listening descriptor it opened itself and
//!   handed to libzmq (`ZMQ_USE_FD`), which our patched libzmq survives;
//! - a blocking send to a peer that is going away can block for ever, so the routing-id
//!   frame is always sent with `DONTWAIT`: `EAGAIN` means the peer's queue is full (it
//!   does not read fast enough), `EHOSTUNREACH` that it is gone. Once the routing id is
//!   taken, the data frame always is too;
//! - the send high-water mark counts messages, not bytes. So output goes to libzmq in
//!   messages of at most 256 KiB (small answers joined, large ones split: see `output`)
//!   and libzmq holds at most `STREAM_SNDHWM` (16) of them per client; the rest waits in
//!   the connection's own output, and a client that lets more than `max_output_bytes`
//!   wait there behind the answer being written is dropped. Per client the front end
//!   thus holds at most the answer in progress and `max_output_bytes` behind it (plus,
//!   for a moment, the answers that took it past the bound), and libzmq
//!   `STREAM_SNDHWM + 1` messages of 256 KiB (4.25 MiB), besides the kernel's socket
//!   buffer. Answers that wait behind an unanswered request
//!   are not counted: `max_pipelined` bounds how many there are;
//! - a STREAM socket is always writable to `zmq_poll`, so nothing tells when a full queue
//!   has room again: refused output is tried again by timer, 1 ms later, then at doubling
//!   waits up to 100 ms while nothing goes, from 1 ms again once something does; the poll
//!   timeout shrinks to the next try. libzmq sees the room once it has handled the I/O
//!   thread's notice, sent each time that thread has taken half the queue: `zmq_poll`
//!   handles such notices at once, `send` only about once a millisecond;
//! - the close frame too is refused while the queue is full: the routing id is then kept
//!   and the close tried again on the same backoff, until libzmq takes it or the peer
//!   leaves;
//! - so a client that never reads again would keep its connection, and what libzmq holds
//!   for it, for ever: the listeners set `ZMQ_TCP_MAXRT` to `write_timeout`, and the
//!   kernel aborts a connection whose receive window stays shut that long.

mod accept_watch;
mod access_log;
mod async_jobs;
mod census;
mod config;
mod connection;
mod cors;
mod listen_fd;
mod memory;
mod output;
mod selftest;
mod streams;

pub use config::{ListenProtocol, ServerConfig};
pub use cors::{AllowedOrigins, CorsConfig};
pub use memory::tune_allocator;

use crate::envelope::{lead_frame, random_u64, Envelope, Interrupt, InterruptReason, Protocol};
use crate::error::{Error, Result};
use crate::fast_hash::{FastMap, FastSet};
use crate::http::{Event, Method, ParsedRequest, RequestParser, Response, CONTINUE_RESPONSE};
use crate::loopback::{self, Answer, Failure, FailureKind};
use crate::netstring::{self, NetstringDecoder};
use crate::pipeline::{EntryIndex, FrontSockets};
use crate::proxy::{ProxyStatus, PROBE, STATUS};
use crate::shutdown::{Shutdown, POLL_CAP};
use crate::sockets;
use accept_watch::AcceptWatch;
use access_log::{AccessLog, Entry, Unanswered};
use connection::{AnswerBytes, Connection, Decoder, Label, Slot, Stall};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How often timeouts are checked and hang-ups libzmq refused are tried again.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// libzmq's queue of messages per client. Messages are at most [`output::CHUNK`] bytes,
/// so libzmq holds at most this many chunks for a client, plus the one its I/O thread is
/// writing (16 × 256 KiB = 4 MiB); past it, answers wait in the connection's own output,
/// which `max_output_bytes` bounds.
const STREAM_SNDHWM: i32 = 16;
/// The first wait before output libzmq refused is tried again. It doubles while a try
/// writes nothing, up to [`RETRY_LAST`], and starts over once one writes something: a
/// client that reads slowly but steadily is served at its own speed, one that stopped
/// costs a try every [`RETRY_LAST`].
const RETRY_FIRST: Duration = Duration::from_millis(1);
/// The longest wait between tries of refused output.
const RETRY_LAST: Duration = SWEEP_EVERY;
/// How long closing a client-facing socket may wait for libzmq to write what it still
/// holds (milliseconds): bounded, so a client that does not read cannot hold up a stop.
const LINGER_AT_STOP: i32 = 1000;
/// How often the first proxy is asked for its status.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How old the first proxy's last status may be for the health check to trust it.
const STATUS_FRESH: Duration = Duration::from_secs(2);

/// A listening socket.
pub(crate) struct Listener {
    socket: zmq::Socket,
    protocol: ListenProtocol,
    endpoint: String,
    /// Routing id → connection id, for this socket's peers.
    peers: FastMap<Vec<u8>, u64>,
    /// Routing ids of peers we closed whose close frame libzmq refused (their queue was
    /// full), tried again (see `Server::retry_hang_ups`) until libzmq takes it or the
    /// peer leaves. Their
    /// connections are already forgotten; libzmq never gives a routing id twice on one
    /// socket, so no new peer is mistaken for one of these.
    hang_ups: FastSet<Vec<u8>>,
    /// Accepts that failed (out of descriptors), for a warning.
    accept_watch: AcceptWatch,
    /// The listening descriptor, when the front end opened it: a drain shuts it down.
    listen_fd: Option<listen_fd::ListenFd>,
    /// A peer of `hang_ups` whose first notice just came: its second, if libzmq sends
    /// one (see `Server::on_peer_notice`), follows at once and is not a new peer.
    gone_echo: Option<Vec<u8>>,
}

impl Listener {
    /// Closes a peer's TCP connection, now or, if libzmq refuses, at a later try.
    fn hang_up(&mut self, routing_id: &[u8]) {
        match send_close(&self.socket, routing_id) {
            // EHOSTUNREACH: it is gone already.
            Ok(()) | Err(zmq::Error::EHOSTUNREACH) => {}
            Err(zmq::Error::EAGAIN) => {
                self.hang_ups.insert(routing_id.to_vec());
            }
            Err(e) => log::debug!("a close not sent: {e}"),
        }
    }

    /// Tries again every hang-up libzmq refused.
    fn retry_hang_ups(&mut self) {
        let socket = &self.socket;
        self.hang_ups
            .retain(|id| matches!(send_close(socket, id), Err(zmq::Error::EAGAIN)));
    }
}

/// Sends `[routing id, empty frame]`, which closes the peer's connection once libzmq has
/// written what it holds for it. libzmq refuses the routing id (`EAGAIN`) while its queue
/// to the peer is full.
fn send_close(socket: &zmq::Socket, routing_id: &[u8]) -> zmq::Result<()> {
    socket.send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)?;
    socket.send(zmq::Message::new(), zmq::DONTWAIT)
}

/// A request in the pipeline.
struct InFlight {
    connection: u64,
    deadline: Instant,
    protocol: Protocol,
}

/// Counters a front end keeps, for its summary line and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests sent into the pipeline.
    pub forwarded: u64,
    /// Responses written (from workers or the front end).
    pub answered: u64,
    /// Requests answered 504.
    pub timed_out: u64,
    /// Responses with a 4xx or 5xx status.
    pub errors: u64,
    /// The most response bytes that waited in the front end for one client, behind the
    /// answer being written, while libzmq refused more: what `max_output_bytes` bounds.
    pub most_output_waiting: u64,
}

impl std::fmt::Display for ServerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} requests sent to the pipeline, {} answers written ({} errors, {} timed out)",
            self.connections, self.forwarded, self.answered, self.errors, self.timed_out
        )
    }
}

/// What the front end last heard from the first proxy.
#[derive(Default)]
struct UpstreamView {
    status: Option<ProxyStatus>,
    last_seen: Option<Instant>,
    last_probe: Option<Instant>,
}

impl UpstreamView {
    fn fresh(&self, now: Instant) -> Option<ProxyStatus> {
        let seen = self.last_seen?;
        (now.duration_since(seen) < STATUS_FRESH)
            .then_some(self.status)
            .flatten()
    }
}

/// A bound front end, ready to [`run`](Server::run).
pub struct Server {
    listeners: Vec<Listener>,
    /// The descriptors [`poll`](Self::poll) sleeps on, one per polled socket, found
    /// at the first poll.
    poll_fds: Vec<libc::pollfd>,
    front: FrontSockets,
    config: ServerConfig,
    nonce: u64,
    next_request: u64,
    next_connection: u64,
    connections: FastMap<u64, Connection>,
    requests: FastMap<u64, InFlight>,
    dirty: Vec<u64>,
    /// When to try again the output of stalled connections (see [`Stall`]), soonest
    /// first; an entry whose time no longer matches its connection's is stale.
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    /// When refused hang-ups are tried again (on the same backoff as stalled output), while
    /// any wait.
    hang_up_retry: Option<Stall>,
    stats: ServerStats,
    upstream: UpstreamView,
    draining_since: Option<Instant>,
    /// Reused receive buffers: one routing id, one data frame.
    frame_id: zmq::Message,
    frame_data: zmq::Message,
    /// The job service, when asynchronous jobs are kept.
    jobs: Option<async_jobs::JobLink>,
    /// One line per request, written once per loop turn.
    access: AccessLog,
    /// Gives the heap back after many connections close.
    trimmer: memory::Trimmer,
    /// CORS header lines for the answer of the request in hand, taken by its slot.
    cors_fields: Option<Box<[u8]>>,
    /// Self-tests waiting for their parts to answer.
    selftests: selftest::SelfTests,
    /// Finds the requests a lost proxy took with it.
    census: census::Censuses,
    /// Emptied frame vectors, reused for the next loopback messages.
    spare: sockets::SpareFrames,
}

impl Server {
    /// Binds every listening endpoint; `front` is how the server reaches its pipeline.
    /// Also raises the process's soft open-file limit to the hard limit, and logs it.
    pub fn bind(ctx: &zmq::Context, config: ServerConfig, front: FrontSockets) -> Result<Server> {
        let listeners = Self::bind_listeners(ctx, &config)?;
        Self::with_listeners(ctx, config, listeners, front)
    }

    /// Binds the client-facing sockets alone, so that an embedder (the pipeline builder)
    /// can report a taken port before it starts anything else.
    pub(crate) fn bind_listeners(
        ctx: &zmq::Context,
        config: &ServerConfig,
    ) -> Result<Vec<Listener>> {
        if config.listen.is_empty() {
            return Err(Error::Config(
                "the front end needs an endpoint to listen on".into(),
            ));
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        for (endpoint, protocol) in &config.listen {
            let mut socket = sockets::socket(ctx, zmq::STREAM)?;
            socket
                .set_sndhwm(STREAM_SNDHWM)
                .map_err(|e| Error::zmq("setting the send high-water mark", e))?;
            sockets::set_tcp_max_retransmit(&mut socket, config.write_timeout)?;
            let listen_fd = listen_fd::open(&mut socket, endpoint);
            sockets::bind(&socket, endpoint)?;
            listeners.push(Listener {
                listen_fd,
                endpoint: sockets::last_endpoint(&socket)?,
                accept_watch: AcceptWatch::new(ctx, &socket)?,
                gone_echo: None,
                socket,
                protocol: *protocol,
                peers: FastMap::default(),
                hang_ups: FastSet::default(),
            });
        }
        Ok(listeners)
    }

    /// The front end over sockets already bound. It holds a descriptor per client, so
    /// it raises the process's soft open-file limit to the hard limit (and logs it). It
    /// opens the job store, if one is configured (an unusable one is an error).
    pub(crate) fn with_listeners(
        ctx: &zmq::Context,
        config: ServerConfig,
        listeners: Vec<Listener>,
        front: FrontSockets,
    ) -> Result<Server> {
        let nonce = random_u64();
        let jobs = match &config.jobs {
            Some(jobs) => Some(async_jobs::JobLink::start(ctx, jobs.clone(), nonce)?),
            None => None,
        };
        crate::fd_limit::raise_and_log();
        let routed: Vec<&zmq::Socket> = front.routed.iter().map(|r| &r.socket).collect();
        let census = census::Censuses::new(ctx, &front.entry, &routed)?;
        for listener in &listeners {
            log::info!(
                "listening for {:?} on {}",
                listener.protocol,
                listener.endpoint
            );
        }
        Ok(Server {
            listeners,
            poll_fds: Vec::new(),
            front,
            config,
            nonce,
            next_request: 1,
            next_connection: 1,
            connections: FastMap::default(),
            requests: FastMap::default(),
            dirty: Vec::new(),
            retries: BinaryHeap::new(),
            hang_up_retry: None,
            stats: ServerStats::default(),
            upstream: UpstreamView::default(),
            draining_since: None,
            frame_id: zmq::Message::new(),
            frame_data: zmq::Message::new(),
            jobs,
            access: AccessLog::new(),
            trimmer: memory::Trimmer::new(),
            cors_fields: None,
            selftests: selftest::SelfTests::default(),
            census,
            spare: sockets::SpareFrames::default(),
        })
    }

    /// The endpoints actually bound, in the order configured (with the ports picked for
    /// port 0 or `*`).
    pub fn endpoints(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.endpoint.clone()).collect()
    }

    /// Serves until `shutdown` is triggered, or until a drain has finished; returns the
    /// counters.
    pub fn run(mut self, shutdown: &Shutdown) -> Result<ServerStats> {
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut next_summary = self
            .config
            .summary_every
            .map(|every| Instant::now() + every);
        let mut ready = vec![false; self.listeners.len() + 3];
        self.probe(Instant::now());
        while !shutdown.is_triggered() {
            if shutdown.is_draining() && self.draining_since.is_none() {
                self.begin_drain();
            }
            if self.drain_finished() {
                self.refuse_unfinished();
                break;
            }
            self.schedule_hang_ups();
            let mut wake = match self.retries.peek() {
                Some(Reverse((retry_at, _))) => next_sweep.min(*retry_at),
                None => next_sweep,
            };
            if let Some(stall) = self.hang_up_retry {
                wake = wake.min(stall.retry_at);
            }
            let wait = whole_millis(wake.saturating_duration_since(Instant::now())).min(POLL_CAP);
            self.poll(&mut ready, wait)?;
            let (listeners_ready, pipeline_ready) = ready.split_at(self.listeners.len());
            for (listener, _) in listeners_ready.iter().enumerate().filter(|(_, r)| **r) {
                self.drain_listener(listener);
            }
            if pipeline_ready[0] {
                self.drain_loopback();
            }
            if pipeline_ready[1] {
                self.drain_entry();
            }
            self.drain_jobs();
            let now = Instant::now();
            self.retry_stalled(now);
            self.retry_hang_ups(now);
            if now >= next_sweep {
                self.sweep();
                self.probe(now);
                if self.trimmer.due(now, self.connections.len()) {
                    self.shrink_maps();
                    memory::trim();
                }
                next_sweep = now + SWEEP_EVERY;
            }
            if let (Some(at), Some(every)) = (next_summary, self.config.summary_every) {
                if now >= at {
                    self.log_summary();
                    next_summary = Some(now + every);
                }
            }
            self.flush_dirty();
            self.access.flush();
        }
        self.stop();
        Ok(self.stats)
    }

    /// Waits for any socket to be readable; `ready` gets one flag per listener, then the
    /// loopback's, the entries' (set when any entry is readable) and the job service's
    /// doorbell's.
    fn poll(&mut self, ready: &mut [bool], wait: Duration) -> Result<()> {
        // The sockets' own notification descriptors, read once: they never change.
        if self.poll_fds.is_empty() {
            let mut fds = Vec::new();
            for socket in self.polled_sockets() {
                let fd = socket
                    .get_fd()
                    .map_err(|e| Error::zmq("reading a socket's descriptor", e))?;
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            self.poll_fds = fds;
        }
        // Ask each socket first (which also runs its pending commands): one with a
        // message waiting needs no sleep. Only then sleep on the descriptors, which
        // libzmq makes readable when a socket gets a command; and ask again. This is
        // zmq_poll's own sequence, without its per-call descriptor lookups, allocation
        // and first zero-timeout poll(2).
        if !self.mark_readable(ready)? && !wait.is_zero() {
            let timeout = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: poll(2) reads and writes exactly `poll_fds.len()` entries of
            // the vector, which outlives the call.
            let woken = unsafe {
                libc::poll(
                    self.poll_fds.as_mut_ptr(),
                    self.poll_fds.len() as libc::nfds_t,
                    timeout,
                )
            };
            if woken < 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if errno != libc::EINTR {
                    let e = zmq::Error::from_raw(errno);
                    return Err(Error::zmq("waiting for the sockets (poll)", e));
                }
            }
            self.mark_readable(ready)?;
        }
        Ok(())
    }

    /// The sockets the loop waits on, in the order of `ready`'s flags: the listeners,
    /// the loopback, the entry, the job service's doorbell if any, then the routed
    /// entries (whose replies are read with the main entry's).
    fn polled_sockets(&self) -> impl Iterator<Item = &zmq::Socket> {
        self.listeners
            .iter()
            .map(|l| &l.socket)
            .chain([&self.front.loopback, &self.front.entry])
            .chain(self.jobs.as_ref().map(|jobs| &jobs.doorbell))
            .chain(self.front.routed.iter().map(|routed| &routed.socket))
    }

    /// Sets each flag of `ready` (see [`poll`](Self::poll)) from the sockets' events;
    /// true if any socket is readable.
    fn mark_readable(&self, ready: &mut [bool]) -> Result<bool> {
        let entry = self.listeners.len() + 1;
        let routed_from = entry + 1 + usize::from(self.jobs.is_some());
        let mut any = false;
        ready.iter_mut().for_each(|flag| *flag = false);
        for (index, socket) in self.polled_sockets().enumerate() {
            let readable = match socket.get_events() {
                Ok(events) => events.contains(zmq::POLLIN),
                Err(zmq::Error::EINTR) => false,
                Err(e) => return Err(Error::zmq("reading a socket's events", e)),
            };
            if readable {
                any = true;
                ready[if index < routed_from { index } else { entry }] = true;
            }
        }
        Ok(any)
    }

    /// Turns new connections away from now on: connections already open are served
    /// until the drain ends.
    ///
    /// The listeners stay bound: unbinding a ZMQ_STREAM endpoint also closes every
    /// connection accepted through it (libzmq makes them children of the listener), which
    /// would drop the very requests a drain is for. Where the front end opened the
    /// listening descriptor, it stops listening, so new connections are refused (see
    /// `listen_fd`); any accepted meanwhile, and all on other endpoints, are closed as
    /// they arrive.
    fn begin_drain(&mut self) {
        self.draining_since = Some(Instant::now());
        for listener in &self.listeners {
            if let Some(fd) = &listener.listen_fd {
                fd.stop(&listener.endpoint);
            }
        }
        self.drain_job_waits();
        log::info!(
            "draining: {} requests in flight, {} connections; waiting up to {:.1}s",
            self.requests.len(),
            self.connections.len(),
            self.config.drain_timeout.as_secs_f64()
        );
    }

    fn drain_finished(&self) -> bool {
        let Some(since) = self.draining_since else {
            return false;
        };
        let settled = self.requests.is_empty()
            && self
                .connections
                .values()
                .all(|c| c.slots.is_empty() && c.output.is_empty());
        settled || since.elapsed() >= self.config.drain_timeout
    }

    /// The drain ended with requests still in the pipeline: each is answered 503 with
    /// `Connection: close` (or the netstring error) rather than cut off unanswered, and
    /// its connection closes after that answer.
    fn refuse_unfinished(&mut self) {
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

    /// Asks the first proxy for its status: every [`PROBE_EVERY`] while it answers, and
    /// only every [`STATUS_FRESH`] while it does not (so probes don't pile up in the entry
    /// queue of a proxy that is down).
    fn probe(&mut self, now: Instant) {
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
    fn drain_entry(&mut self) {
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

    fn log_summary(&self) {
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

    /// The health check: 200 while the first proxy reports a worker and no drain is under
    /// way, 503 otherwise.
    fn health(&self) -> Response {
        let (status, body) = match self.upstream.fresh(Instant::now()) {
            _ if self.draining_since.is_some() => (503, serde_json::json!({"status": "draining"})),
            Some(s) if s.workers > 0 => (
                200,
                serde_json::json!({"status": "ok", "workers": s.workers}),
            ),
            Some(_) => (503, serde_json::json!({"status": "no workers"})),
            None => (
                503,
                serde_json::json!({"status": "the first proxy does not answer"}),
            ),
        };
        Response::json(status, &body)
    }

    /// The status document: the topology as the front end sees it.
    fn status_document(&self) -> Response {
        let now = Instant::now();
        let proxy = self.upstream.fresh(now).map(|s| s.to_json());
        let mut body = serde_json::json!({
            "listening": self.listeners.iter().map(|l| &l.endpoint).collect::<Vec<_>>(),
            "draining": self.draining_since.is_some(),
            "connections": self.connections.len(),
            "in_flight": self.requests.len(),
            "forwarded": self.stats.forwarded,
            "answered": self.stats.answered,
            "errors": self.stats.errors,
            "timed_out": self.stats.timed_out,
            "loopback": self.front.loopback_endpoint,
            "interrupt": self.front.interrupt_endpoint,
            "first_proxy": {
                "endpoint": self.front.entry_endpoint,
                "reachable": proxy.is_some(),
                "last_seen_ms": self.upstream.last_seen.map(|t| now.duration_since(t).as_millis() as u64),
                "status": proxy,
            },
            "routed": self.front.routed.iter().map(|r| serde_json::json!({
                "stage": r.stage,
                "endpoint": r.endpoint,
            })).collect::<Vec<_>>(),
        });
        if let Some(jobs) = self.job_stats_json() {
            body["jobs"] = jobs;
        }
        Response::json(200, &body)
    }

    /// Tells workers to drop everything of ours and closes every connection.
    fn stop(&mut self) {
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

    fn drain_listener(&mut self, listener: usize) {
        loop {
            let socket = &self.listeners[listener].socket;
            if socket.recv(&mut self.frame_id, zmq::DONTWAIT).is_err() {
                return;
            }
            if socket.recv(&mut self.frame_data, zmq::DONTWAIT).is_err() {
                return;
            }
            let known = self.listeners[listener]
                .peers
                .get(&self.frame_id[..])
                .copied();
            match (known, self.frame_data.is_empty()) {
                (None, true) => self.new_peer(listener),
                (Some(id), true) => self.on_peer_notice(id),
                (Some(id), false) => self.on_input(id),
                // Data for a connection we already closed.
                (None, false) => {}
            }
        }
    }

    /// `[routing id, empty frame]` from an unknown peer: a new connection, or the
    /// disconnect notice of one we had hung up on while libzmq refused the close.
    fn new_peer(&mut self, listener: usize) {
        let listener_ref = &mut self.listeners[listener];
        if listener_ref.hang_ups.remove(&self.frame_id[..]) {
            listener_ref.gone_echo = Some(self.frame_id.to_vec());
            return;
        }
        if listener_ref.gone_echo.as_deref() == Some(&self.frame_id[..]) {
            listener_ref.gone_echo = None;
            return;
        }
        if self.draining_since.is_some() {
            // Turned away before it is served.
            listener_ref.hang_up(&self.frame_id[..]);
        } else {
            self.accept(listener);
        }
    }

    /// `[routing id, empty frame]` from a connected peer. With our libzmq patch
    /// (vendor/zeromq-src/PATCHES.md) the first such notice means the client has
    /// finished sending (a half-close, RFC 9293 §3.6), not that it has gone: every
    /// complete request it sent is answered, then the connection closes. A second
    /// notice means the connection is gone (libzmq sends both at once for a reset).
    fn on_peer_notice(&mut self, id: u64) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        if conn.input_ended {
            self.close(id, false);
            return;
        }
        conn.input_ended = true;
        conn.closing = true;
        match conn.slots.back_mut() {
            Some(last) => last.close_after = true,
            None => conn.close_when_written = true,
        }
        mark_dirty(&mut self.dirty, conn, id);
    }

    fn accept(&mut self, listener: usize) {
        let id = self.next_connection;
        self.next_connection += 1;
        let decoder = match self.listeners[listener].protocol {
            ListenProtocol::Http => Decoder::Http(RequestParser::new(self.config.limits)),
            ListenProtocol::Netstring => {
                Decoder::Netstring(NetstringDecoder::new(self.config.max_netstring_bytes))
            }
        };
        let routing_id = self.frame_id.to_vec();
        self.listeners[listener]
            .peers
            .insert(routing_id.clone(), id);
        let mut conn = Connection::new(routing_id, listener, decoder);
        let peer = peer_address(&mut self.frame_data);
        conn.client = client_address(&peer);
        if self.access.enabled() {
            conn.peer = peer;
        }
        self.connections.insert(id, conn);
        self.stats.connections += 1;
    }

    fn on_input(&mut self, id: u64) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        conn.last_active = now;
        if conn.closing {
            return;
        }
        match &mut conn.decoder {
            Decoder::Http(parser) => parser.feed(&self.frame_data),
            Decoder::Netstring(decoder) => decoder.feed(&self.frame_data),
        }
        self.read_requests(id);
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.track_head(now);
        }
    }

    /// Takes every complete request out of a connection's decoder.
    fn read_requests(&mut self, id: u64) {
        loop {
            let Some(conn) = self.connections.get_mut(&id) else {
                return;
            };
            if conn.closing {
                return;
            }
            match &mut conn.decoder {
                Decoder::Http(parser) => match parser.next_event() {
                    Ok(None) => return,
                    Ok(Some(Event::Continue)) => {
                        self.answer_now(id, CONTINUE_RESPONSE.to_vec(), false, None)
                    }
                    Ok(Some(Event::Request(request))) => self.on_http_request(id, request),
                    Err(e) => {
                        log::info!("connection {id}: rejected a request: {e}");
                        let head = parser.rejected_head();
                        let bytes =
                            Response::error(e.status(), &e.to_string()).to_bytes(1, false, head);
                        self.answer_now(id, bytes, true, None);
                    }
                },
                Decoder::Netstring(decoder) => match decoder.next_message() {
                    Ok(None) => return,
                    Ok(Some(payload)) => {
                        let entry = EntryIndex::Main;
                        let request = (&payload[..], None);
                        self.forward(id, Protocol::Netstring, request, entry, false, None);
                    }
                    Err(e) => {
                        log::info!("connection {id}: rejected a netstring: {e}");
                        let body = serde_json::json!({"error": e.to_string(), "status": 400});
                        let bytes = netstring::encode(body.to_string().as_bytes());
                        self.answer_now(id, bytes, true, None);
                    }
                },
            }
        }
    }

    fn on_http_request(&mut self, id: u64, request: ParsedRequest) {
        if (self.config.cors.is_some() || request.method == Method::Options)
            && self.answer_cors(id, &request)
        {
            return;
        }
        self.route_http_request(id, request);
        self.cors_fields = None;
    }

    fn route_http_request(&mut self, id: u64, request: ParsedRequest) {
        let label = self.access.enabled().then(|| request.request_line().into());
        let close_after = !request.keep_alive;
        let path = request.path_str();
        let own_path = [
            &self.config.health_path,
            &self.config.status_path,
            &self.config.selftest_path,
        ]
        .iter()
        .any(|p| p.as_deref() == Some(path));
        let local = if own_path && !matches!(request.method, Method::Get | Method::Head) {
            let response = Response::error(405, &format!("{path} answers GET and HEAD only"));
            Some((response.header("Allow", "GET, HEAD"), close_after))
        } else if own_path && self.is_selftest(path, request.target_str()) {
            self.start_selftest(id, &request, close_after, label);
            return;
        } else if self.config.health_path.as_deref() == Some(path) {
            Some((self.health(), close_after))
        } else if self.config.status_path.as_deref() == Some(path) {
            Some((self.status_document(), close_after))
        } else if self.draining_since.is_some() && self.config.drain_rejects {
            Some((Response::error(503, "the server is shutting down"), true))
        } else {
            None
        };
        if let Some((response, close_after)) = local {
            self.answer_response(id, &request, &response, close_after, label);
            return;
        }
        if self.is_job_request(path, &request) {
            self.on_job_request(id, request, close_after, label);
            return;
        }
        let entry = match self.front.entry_for(&request.head) {
            Ok(entry) => entry,
            Err(refusal) => {
                log::info!("connection {id}: refused a request by the task table: {refusal}");
                let response = Response::error(400, &refusal.to_string());
                self.answer_response(id, &request, &response, close_after, label);
                return;
            }
        };
        let protocol = http_protocol(&request);
        // No body, no body frame: a frame fewer at every socket the request crosses.
        let body = (!request.body.is_empty()).then(|| zmq::Message::from(request.body));
        self.forward(
            id,
            protocol,
            (&request.head[..], body),
            entry,
            close_after,
            label,
        );
    }

    /// Sends a request into the pipeline through `entry` (the first stage's, or a
    /// routed stage's) and keeps its place in the answer order. The request is its
    /// first frame, which travels in the lead frame behind the envelope, and its
    /// second frame if any (an HTTP request's body, when it has one).
    fn forward(
        &mut self,
        id: u64,
        protocol: Protocol,
        (first, rest): (&[u8], Option<zmq::Message>),
        entry: EntryIndex,
        close_after: bool,
        label: Option<Label>,
    ) {
        let Some(request_id) = self.hold_slot(id, protocol, close_after, label) else {
            return;
        };
        // Taken before the envelope's arrival time, so the front end's deadline is not
        // later than the one workers read from the envelope.
        let now = Instant::now();
        let client = self.connections.get(&id).and_then(|c| c.client);
        let envelope = Envelope::new(request_id, id, self.nonce, protocol)
            .with_timeout(self.config.request_timeout)
            .with_client(client);
        let message = std::iter::once(lead_frame(&envelope.encode(), first)).chain(rest);
        let socket = self.front.entry_socket(entry);
        if let Err(e) = sockets::send_frames(socket, message, zmq::DONTWAIT) {
            log::warn!("request {request_id}: the pipeline is not taking requests: {e}");
            let failure = Failure::new(FailureKind::QueueFull, "the server is overloaded");
            let bytes = render_failure(protocol, &failure, false);
            self.fill(id, request_id, AnswerBytes::Owned(bytes));
            return;
        }
        self.stats.forwarded += 1;
        self.requests.insert(
            request_id,
            InFlight {
                connection: id,
                deadline: now + self.config.request_timeout,
                protocol,
            },
        );
    }

    /// Keeps a place in the connection's answer order for a request answered later (by
    /// the pipeline or the job service); returns its request id. A connection with
    /// `max_pipelined` unanswered requests is answered 503 and closed instead.
    fn hold_slot(
        &mut self,
        id: u64,
        protocol: Protocol,
        close_after: bool,
        label: Option<Label>,
    ) -> Option<u64> {
        let conn = self.connections.get_mut(&id)?;
        if conn.slots.len() >= self.config.max_pipelined {
            let detail = "too many unanswered requests on this connection";
            let failure = Failure::new(FailureKind::QueueFull, detail);
            let bytes = render_failure(protocol, &failure, false);
            self.answer_now(id, bytes, true, label);
            return None;
        }
        let request_id = self.next_request;
        self.next_request += 1;
        conn.slots.push_back(Slot {
            request_id,
            answer: None,
            stream: None,
            close_after,
            arrived: Instant::now(),
            label,
            cors: self.cors_fields.take(),
        });
        if close_after {
            conn.closing = true;
        }
        Some(request_id)
    }

    /// Queues `response`, made by the front end itself, as the answer to `request`.
    fn answer_response(
        &mut self,
        id: u64,
        request: &ParsedRequest,
        response: &Response,
        close_after: bool,
        label: Option<Label>,
    ) {
        let bytes = response.to_bytes(request.minor_version, !close_after, request.is_head);
        self.answer_now(id, bytes, close_after, label);
    }

    /// Queues an answer the front end made itself, in request order.
    fn answer_now(&mut self, id: u64, bytes: Vec<u8>, close_after: bool, label: Option<Label>) {
        let request_id = self.next_request;
        self.next_request += 1;
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        conn.slots.push_back(Slot {
            request_id,
            answer: Some(AnswerBytes::Owned(bytes)),
            stream: None,
            close_after,
            arrived: Instant::now(),
            label,
            cors: self.cors_fields.take(),
        });
        if close_after {
            conn.closing = true;
        }
        mark_dirty(&mut self.dirty, conn, id);
    }

    fn drain_loopback(&mut self) {
        let now = Instant::now();
        while let Ok(mut frames) = self.spare.recv(&self.front.loopback, zmq::DONTWAIT) {
            if !self.on_census_message(&frames) {
                match loopback::decode(frames.drain(..)) {
                    Ok((envelope, answer)) => self.on_answer(envelope, answer, now),
                    Err(e) => log::warn!("dropped a loopback message: {e}"),
                }
            }
            self.spare.give_back(frames);
        }
    }

    fn on_answer(&mut self, envelope: Envelope, answer: Answer, now: Instant) {
        if envelope.probe {
            return self.on_probe_answer(&envelope, answer);
        }
        // Matched by job number, whichever process sent the job.
        if let Some(number) = envelope.job_number() {
            self.on_job_answer(number, answer);
            return;
        }
        if envelope.nonce != self.nonce {
            log::debug!(
                "request {}: dropped an answer meant for an earlier run",
                envelope.request_id
            );
            return;
        }
        let answer = match answer {
            // Only jobs keep their progress.
            Answer::Progress { .. } => return,
            Answer::StreamStart(part) => return self.on_stream_part(&envelope, part, true),
            Answer::StreamPiece(part) => return self.on_stream_part(&envelope, part, false),
            Answer::StreamEnd(last) => return self.on_stream_end(&envelope, Some(last)),
            Answer::StreamAbort => return self.on_stream_end(&envelope, None),
            whole => whole,
        };
        // Gone when already answered (504, or 503 when a census found it lost) or when
        // its client left.
        let Some(in_flight) = self.requests.remove(&envelope.request_id) else {
            log::debug!(
                "request {}: answered already; a later answer is dropped",
                envelope.request_id
            );
            return;
        };
        if in_flight.deadline <= now {
            // Too late, even if the timeout sweep has not run yet: the client gets the
            // same 504 whenever the answer comes after the deadline.
            log::debug!(
                "request {}: answered after its deadline",
                envelope.request_id
            );
            self.stats.timed_out += 1;
            let bytes = AnswerBytes::Owned(timed_out(in_flight.protocol));
            self.fill(in_flight.connection, envelope.request_id, bytes);
            return;
        }
        let bytes = match answer {
            Answer::Response(message) => AnswerBytes::Message(message),
            Answer::Failure(failure) => {
                log::debug!("request {}: {failure}", envelope.request_id);
                AnswerBytes::Owned(render_failure(envelope.protocol, &failure, true))
            }
            Answer::Later { head, body } => {
                match self.answer_later(in_flight.connection, &envelope, head, body) {
                    // The job service answers the slot once the job is stored.
                    None => return,
                    Some(refusal) => AnswerBytes::Owned(refusal),
                }
            }
            Answer::Progress { .. }
            | Answer::SelfTest(_)
            | Answer::StreamStart(_)
            | Answer::StreamPiece(_)
            | Answer::StreamEnd(_)
            | Answer::StreamAbort => return,
        };
        self.fill(in_flight.connection, envelope.request_id, bytes);
    }

    /// Puts an answer in its slot. The connection is flushed at the end of the loop
    /// turn, or at once when libzmq refuses its output or the answers filled since its
    /// last flush could take it past `max_output_bytes`: so the bound is checked as
    /// answers come, not after a whole batch of them has piled up.
    fn fill(&mut self, id: u64, request_id: u64, bytes: AnswerBytes) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let len = bytes.as_slice().len();
        if !conn.fill(request_id, bytes) {
            return;
        }
        conn.unflushed += len;
        let room = self
            .config
            .max_output_bytes
            .saturating_sub(conn.output.len());
        if conn.stall.is_some() || conn.unflushed > room {
            self.flush(id);
        } else {
            mark_dirty(&mut self.dirty, conn, id);
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(id) = self.dirty.pop() {
            if let Some(conn) = self.connections.get_mut(&id) {
                conn.dirty = false;
            }
            self.flush(id);
        }
    }

    /// Writes every answer at the front of the connection's order that is ready.
    ///
    /// Answers are handed over while what waits stays within `max_output_bytes`; past
    /// it, libzmq takes what it can first (and the client is dropped if the rest is
    /// still too much), so a run of answers freed at once (the one they waited behind
    /// has come) never piles up in the output beyond the bound and one answer.
    fn flush(&mut self, id: u64) {
        while self.flush_within_bound(id) {}
    }

    /// One pass of [`flush`](Self::flush): true if it stopped at the output bound with
    /// answers still ready, and the client is still there.
    fn flush_within_bound(&mut self, id: u64) -> bool {
        let Some(conn) = self.connections.get_mut(&id) else {
            return false;
        };
        conn.unflushed = 0;
        let mut over = false;
        let mut written = false;
        while let Some(front) = conn.slots.front_mut() {
            // The parts of a streamed answer go out as they come.
            if let Some(stream) = &mut front.stream {
                written |= !stream.pieces.is_empty();
                stream.bytes = 0;
                // The first piece is the head: it takes the CORS fields, once.
                let mut cors = if stream.pieces.is_empty() {
                    None
                } else {
                    front.cors.take()
                };
                for piece in stream.pieces.drain(..) {
                    conn.output
                        .push(cors::decorate(piece, cors.take().as_deref()));
                }
            }
            if front.answer.is_none() {
                break;
            }
            let Some(mut slot) = conn.slots.pop_front() else {
                break;
            };
            let Some(answer) = slot.answer.take() else {
                break;
            };
            written = true;
            // A streamed answer's last bytes are no head (its head took the fields).
            let cors_fields = slot.cors.as_deref().filter(|_| slot.stream.is_none());
            let answer = cors::decorate(answer, cors_fields);
            let bytes = answer.as_slice();
            let status = match &slot.stream {
                Some(stream) => &stream.status,
                None => status_of(bytes),
            };
            self.stats.answered += 1;
            if matches!(status.as_bytes().first(), Some(b'4' | b'5')) {
                self.stats.errors += 1;
            }
            match &slot.stream {
                Some(stream) => {
                    let entry = entry(&conn.peer, &slot);
                    self.access
                        .answered_streamed(&entry, stream.status.as_bytes(), stream.total);
                }
                None => self.access.answered(&entry(&conn.peer, &slot), bytes),
            }
            conn.output.push(answer);
            if slot.close_after {
                conn.close_when_written = true;
                break;
            }
            if conn.output.queued_behind_front() > self.config.max_output_bytes {
                over = true;
                break;
            }
        }
        if written && conn.slots.is_empty() {
            conn.last_active = Instant::now();
        }
        self.write(id);
        over && self.connections.contains_key(&id)
    }

    /// Hands a connection's output to libzmq, as much as it takes without blocking. Then
    /// closes the connection if it asked to be closed once written; or, when libzmq
    /// refused some, drops it if more than `max_output_bytes` wait, or else schedules
    /// another try.
    fn write(&mut self, id: u64) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let socket = &self.listeners[conn.listener].socket;
        let mut wrote = false;
        let mut refused = false;
        while !conn.output.is_empty() {
            match socket.send(&conn.routing_id[..], zmq::SNDMORE | zmq::DONTWAIT) {
                Ok(()) => {
                    // Once the routing id is taken, libzmq takes the data frame too.
                    if let Some(message) = conn.output.take() {
                        if let Err(e) = socket.send(message, zmq::DONTWAIT) {
                            log::warn!("connection {id}: write failed: {e}");
                        }
                    }
                    wrote = true;
                }
                Err(zmq::Error::EAGAIN) => {
                    refused = true;
                    break;
                }
                Err(e) => {
                    // EHOSTUNREACH: the peer is gone; its disconnect notice cleans up.
                    log::debug!("connection {id}: output dropped: {e}");
                    conn.output.clear();
                }
            }
        }
        if !refused {
            // Output that waited counts as written only now, for the idle timeout.
            if conn.stall.take().is_some() && conn.slots.is_empty() {
                conn.last_active = Instant::now();
            }
            if conn.close_when_written {
                self.close(id, true);
            }
            return;
        }
        // The answer being written is not counted: it is in memory whatever we do, and
        // a client that reads gets it however large it is.
        let waiting = conn.output.queued_behind_front();
        self.stats.most_output_waiting = self.stats.most_output_waiting.max(waiting as u64);
        if waiting > self.config.max_output_bytes {
            log::warn!(
                "connection {id}: the client does not read ({} bytes wait); closing",
                conn.output.len()
            );
            self.close(id, true);
            return;
        }
        let now = Instant::now();
        let backoff = match conn.stall {
            // A try between scheduled ones (a new answer) that wrote nothing.
            Some(stall) if !wrote && now < stall.retry_at => return,
            Some(stall) if !wrote => (stall.backoff * 2).min(RETRY_LAST),
            _ => RETRY_FIRST,
        };
        let retry_at = now + backoff;
        conn.stall = Some(Stall { retry_at, backoff });
        self.retries.push(Reverse((retry_at, id)));
    }

    /// Tries again the output of each stalled connection whose time has come.
    fn retry_stalled(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.retries.peek() {
            if at > now {
                return;
            }
            self.retries.pop();
            let due = self
                .connections
                .get(&id)
                .and_then(|c| c.stall)
                .is_some_and(|stall| stall.retry_at == at);
            if due {
                self.write(id);
            }
        }
    }

    /// Forgets a connection, interrupting its unanswered requests; `hang_up` also closes
    /// the TCP connection (otherwise the client already has).
    fn close(&mut self, id: u64, hang_up: bool) {
        let Some(conn) = self.connections.remove(&id) else {
            return;
        };
        self.trimmer.closed();
        let listener = &mut self.listeners[conn.listener];
        listener.peers.remove(&conn.routing_id);
        if hang_up {
            listener.hang_up(&conn.routing_id);
        }
        let mut held_by_jobs = Vec::new();
        for slot in &conn.slots {
            self.access
                .unanswered(&entry(&conn.peer, slot), Unanswered::ClientGone);
            if slot.answer.is_some() {
                continue;
            }
            if self.requests.remove(&slot.request_id).is_some() {
                self.publish(self.nonce, slot.request_id, InterruptReason::ClientGone);
            } else if self.jobs.is_some() {
                held_by_jobs.push(slot.request_id);
            }
        }
        self.forget_job_requests(id, &held_by_jobs);
    }

    fn publish(&self, nonce: u64, request_id: u64, reason: InterruptReason) {
        let interrupt = Interrupt {
            nonce,
            request_id,
            reason,
        };
        if let Err(e) = self
            .front
            .interrupt
            .send(&interrupt.encode()[..], zmq::DONTWAIT)
        {
            log::debug!("request {request_id}: interrupt not published: {e}");
        }
    }

    /// Starts the hang-up retries when a hang-up has been refused.
    fn schedule_hang_ups(&mut self) {
        if self.hang_up_retry.is_none() && self.listeners.iter().any(|l| !l.hang_ups.is_empty()) {
            self.hang_up_retry = Some(Stall {
                retry_at: Instant::now() + RETRY_FIRST,
                backoff: RETRY_FIRST,
            });
        }
    }

    /// Tries the refused hang-ups again when their time has come: soon again while some
    /// go through (a client reading the end of its last answer), backing off while none
    /// does (a client that does not read).
    fn retry_hang_ups(&mut self, now: Instant) {
        let Some(stall) = self.hang_up_retry else {
            return;
        };
        if now < stall.retry_at {
            return;
        }
        let pending = |listeners: &[Listener]| listeners.iter().map(|l| l.hang_ups.len()).sum();
        let before: usize = pending(&self.listeners);
        for listener in &mut self.listeners {
            listener.retry_hang_ups();
        }
        let after: usize = pending(&self.listeners);
        let backoff = if after < before {
            RETRY_FIRST
        } else {
            (stall.backoff * 2).min(RETRY_LAST)
        };
        self.hang_up_retry = (after > 0).then(|| Stall {
            retry_at: now + backoff,
            backoff,
        });
    }

    /// Timeouts: 504 for requests past their deadline, 408 for slow request heads, close
    /// for idle connections.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.sweep_jobs(now);
        self.sweep_selftests(now);
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
            let bytes = AnswerBytes::Owned(timed_out(in_flight.protocol));
            self.fill(in_flight.connection, request_id, bytes);
        }
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
            } else if conn.is_idle() && quiet >= self.config.idle_timeout {
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
    fn shrink_maps(&mut self) {
        self.connections.shrink_to_fit();
        self.requests.shrink_to_fit();
        self.dirty.shrink_to_fit();
        self.retries.shrink_to_fit();
        for listener in &mut self.listeners {
            listener.peers.shrink_to_fit();
            listener.hang_ups.shrink_to_fit();
        }
    }

    fn listener_protocol(&self, id: u64) -> Option<ListenProtocol> {
        let conn = self.connections.get(&id)?;
        Some(self.listeners[conn.listener].protocol)
    }
}

/// The HTTP facts of a request, as its envelope carries them.
fn http_protocol(request: &ParsedRequest) -> Protocol {
    Protocol::Http {
        minor_version: request.minor_version,
        keep_alive: request.keep_alive,
        head: request.is_head,
    }
}

/// `wait` rounded up to whole milliseconds, the unit of `zmq_poll`: a wait rounded down
/// to 0 would spin until a retry is due.
fn whole_millis(wait: Duration) -> Duration {
    Duration::from_millis(wait.as_micros().div_ceil(1000).min(u128::from(u64::MAX)) as u64)
}

fn mark_dirty(dirty: &mut Vec<u64>, conn: &mut Connection, id: u64) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(id);
    }
}

/// Writes a failure in the client's protocol. `keep` says whether the connection's own
/// keep-alive choice stands (true for pipeline failures; the front end's own refusals
/// decide for themselves).
fn render_failure(protocol: Protocol, failure: &Failure, keep: bool) -> Vec<u8> {
    match protocol {
        Protocol::Http {
            minor_version,
            keep_alive,
            head,
        } => Response::error(failure.status, &failure.detail).to_bytes(
            minor_version,
            keep_alive && keep,
            head,
        ),
        Protocol::Netstring => {
            let body = serde_json::json!({"error": failure.detail, "status": failure.status});
            netstring::encode(body.to_string().as_bytes())
        }
        Protocol::Raw => failure.detail.clone().into_bytes(),
    }
}

/// The 504 for a request past its deadline, in the client's protocol.
fn timed_out(protocol: Protocol) -> Vec<u8> {
    let failure = Failure::new(FailureKind::DeadlinePassed, "the request timed out");
    render_failure(protocol, &failure, true)
}

/// The status code of an HTTP response, for the error count ("-" for other protocols).
fn status_of(bytes: &[u8]) -> &str {
    match bytes.get(9..12) {
        Some(code) if bytes.starts_with(b"HTTP/1.") => std::str::from_utf8(code).unwrap_or("-"),
        _ => "-",
    }
}

/// What the access log needs of a request.
fn entry<'a>(peer: &'a str, slot: &'a Slot) -> Entry<'a> {
    Entry {
        request_id: slot.request_id,
        peer,
        request_line: slot.label.as_deref(),
        arrived: slot.arrived,
    }
}

/// The client's address, from the metadata libzmq attaches to a peer's first message.
/// The client's address from libzmq's `Peer-Address` (no port), for the envelope.
fn client_address(peer: &str) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = peer.parse().ok()?;
    Some(std::net::SocketAddr::new(ip.to_canonical(), 0))
}

fn peer_address(frame: &mut zmq::Message) -> Box<str> {
    frame.gets("Peer-Address").unwrap_or("-").into()
}
