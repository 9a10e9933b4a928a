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
//! Where things are: this file holds the [`Server`] and its loop ([`Server::run`]);
//! `wait` the wait on its sockets (one `poll(2)`). Each event goes to the file of its
//! concern:
//! - `listener`: the client-facing sockets; connections arriving, half-closing, leaving;
//! - `requests`: what a parsed request becomes (an answer of the front end's own, a job
//!   resource, or a request sent into the pipeline);
//! - `answers`: loopback answers into their slots, and out in request order within the
//!   output bound; closing a connection;
//! - `upkeep`: the sweep's timeouts and the probe of the first proxy;
//! - `half_closed`: telling a half-closed client from one that has gone;
//! - `drain`: turning new connections away, the end of a drain, the stop;
//! - `connection` and `output`: one connection's decoder, answer order and unwritten
//!   bytes; `front`: the sockets toward the pipeline;
//! - `selftest`, `cors`, `async_jobs`, `streams`, `census`: the self-test, CORS, job
//!   resources, streamed answers and lost proxies, each as the front end handles them;
//! - `jsonrpc`: the JSON-RPC 2.0 path: a batch's calls sent into the pipeline at once,
//!   their answers gathered into one.
//! - `holds` and `channels`: held requests, the channels' holds and history, the bus;
//!   `websocket`: WebSocket clients (the upgrade, messages as requests, push);
//!   `control`: the control listener: `POST /publish/` served on this loop
//!   (`control::inline`), its other routes on threads of its own.
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
mod answers;
mod async_jobs;
mod census;
mod channels;
mod config;
mod connection;
mod control;
mod cors;
mod drain;
mod fan_out;
mod front;
mod half_closed;
mod holds;
mod job_reads;
mod jsonrpc;
mod listen_fd;
mod listener;
mod memory;
mod metrics;
mod output;
mod requests;
mod selftest;
mod status_page;
mod streams;
mod subscriptions;
mod upkeep;
mod wait;
mod websocket;

pub use channels::ChannelsConfig;
pub use config::{
    AccessLogFormat, ListenProtocol, ServerConfig, DEFAULT_IO_THREADS, DEFAULT_IO_THREAD_SPILL,
};
pub use control::{control_address, ControlConfig, ControlError};
pub use cors::{AllowedOrigins, CorsConfig};
pub use front::{AskError, FrontSockets, RoutedEntry};
pub use memory::tune_allocator;
pub use websocket::WebSocketConfig;

use crate::base::error::{Error, Result};
use crate::base::fast_hash::{FastMap, FastSet};
use crate::base::log_limit::LogLimit;
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::envelope::{random_u64, Protocol};
use accept_watch::AcceptWatch;
use access_log::AccessLog;
use connection::{Connection, Stall};
use listener::Listener;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};
use upkeep::UpstreamView;

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
    /// Half-closed connections whose client was taken as gone after
    /// `half_closed_timeout`, their requests unanswered (see `ServerConfig`).
    pub half_closed_gone: u64,
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

/// A bound front end, ready to [`run`](Server::run).
pub struct Server {
    listeners: Vec<Listener>,
    /// The descriptors [`poll`](Self::poll) sleeps on: one per polled socket, found
    /// at the first poll, then the control listener's.
    poll_fds: Vec<libc::pollfd>,
    /// How many of `poll_fds` are the polled sockets' (0 before the first poll).
    socket_fds: usize,
    /// Whether the next poll asks every socket, not only those its descriptor cannot
    /// speak for: at the first, and after each sweep, so that nothing can wait longer.
    ask_all: bool,
    front: FrontSockets,
    config: ServerConfig,
    nonce: u64,
    next_request: u64,
    next_connection: u64,
    /// Boxed: a map's table keeps room for up to about twice its entries, and with
    /// thousands of held connections that room, a whole `Connection` per slot, was a
    /// large part of what a hold cost (now a pointer per slot).
    connections: FastMap<u64, Box<Connection>>,
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
    /// When the sweep next walks every connection; the half-closed ones.
    walk: upkeep::ConnectionWalk,
    /// CORS header lines for the answer of the request in hand, taken by its slot.
    cors_fields: Option<Box<[u8]>>,
    /// Self-tests waiting for their parts to answer.
    selftests: selftest::SelfTests,
    /// Finds the requests a lost proxy took with it.
    census: census::Censuses,
    /// JSON-RPC calls in the pipeline and the batches waiting for them.
    rpc: jsonrpc::Batches,
    /// Emptied frame vectors, reused for the next loopback messages.
    spare: sockets::SpareFrames,
    /// Held requests, channels and their history, the bus, the control listener.
    channels: channels::Channels,
    /// What the metrics path reports.
    metrics: metrics::FrontMetrics,
    /// The rate limit of "the pipeline is not taking requests" warnings.
    refusals: LogLimit,
    /// The status page's open event streams.
    status_streams: status_page::StatusStreams,
    /// Upgrades under way and WebSockets held on channels.
    websocket: websocket::WebSockets,
    /// Whether the process's wake-ups preempt, by the requests in flight.
    batching: crate::base::sched::Batching,
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
        if let Some(cors) = &config.cors {
            cors.check().map_err(Error::Config)?;
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        for (endpoint, protocol) in &config.listen {
            let mut socket = sockets::socket(ctx, zmq::STREAM)?;
            socket
                .set_sndhwm(STREAM_SNDHWM)
                .map_err(|e| Error::zmq("setting the send high-water mark", e))?;
            sockets::set_tcp_max_retransmit(&mut socket, config.write_timeout)?;
            // An answer or a delivery to an idle connection is written by this thread,
            // without waking libzmq's I/O thread (vendor/zeromq-src's PATCHES.md).
            socket
                .set_stream_direct_write(true)
                .map_err(|e| Error::zmq("asking for direct writes", e))?;
            // A host name is bound as the address it resolves to, so that a drain can
            // stop listening on it too.
            let resolved = crate::base::endpoint::bind_address(endpoint);
            let address = resolved.as_deref().unwrap_or(endpoint);
            let listen_fd = match config.reuse_port {
                false => listen_fd::open(&mut socket, address),
                true => Some(listen_fd::open_shared(&mut socket, address)?),
            };
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
        crate::base::fd_limit::raise_and_log();
        let routed: Vec<&zmq::Socket> = front.routed.iter().map(|r| &r.socket).collect();
        let census = census::Censuses::new(ctx, &front.entry, &routed)?;
        for listener in &listeners {
            log::info!(
                "listening for {:?} on {}",
                listener.protocol,
                listener.endpoint
            );
        }
        let stages = std::iter::once(front.stages.first().cloned().unwrap_or_default())
            .chain(front.routed.iter().map(|r| r.stage.clone()))
            .map(|name| {
                if name.is_empty() {
                    "pipeline".into()
                } else {
                    name
                }
            })
            .collect();
        let access = AccessLog::new(
            config.jobs.as_ref().map(|j| j.path.as_str()),
            config.access_log_format,
            stages,
        );
        // URL subscriptions are kept in a SQLite job store's file; with PostgreSQL they
        // stay in this front end's memory.
        let jobs_db = config
            .jobs
            .as_ref()
            .filter(|j| !j.is_postgres())
            .map(|j| j.db_path.as_path());
        let admin = jobs.as_ref().and_then(|jobs| jobs.admin_link());
        let job_events = jobs.as_ref().map(|jobs| jobs.event_switch());
        let channels = channels::Channels::start(
            ctx,
            config.channels.clone(),
            nonce,
            jobs_db,
            admin,
            job_events,
        )?;
        let batching = crate::base::sched::Batching::new(config.batch_wakeups);
        Ok(Server {
            listeners,
            poll_fds: Vec::new(),
            socket_fds: 0,
            ask_all: true,
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
            access,
            trimmer: memory::Trimmer::new(),
            walk: upkeep::ConnectionWalk::default(),
            cors_fields: None,
            selftests: selftest::SelfTests::default(),
            census,
            rpc: jsonrpc::Batches::default(),
            spare: sockets::SpareFrames::default(),
            channels,
            metrics: metrics::FrontMetrics::default(),
            refusals: LogLimit::new("front end: requests the pipeline did not take"),
            status_streams: status_page::StatusStreams::default(),
            websocket: websocket::WebSockets::default(),
            batching,
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
        let mut ready = vec![false; self.listeners.len() + 5];
        self.probe(Instant::now());
        // The requests of one turn reach the first proxy together, flushed before the
        // wait below (vendor/zeromq-src's PATCHES.md, ZMQ_DEFER_FLUSH).
        self.front.defer_entry_flushes(true)?;
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
            self.front.flush_entries();
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
            if pipeline_ready[3] {
                self.drain_channels();
            }
            if pipeline_ready[4] {
                self.serve_control();
            }
            let now = Instant::now();
            self.batching
                .observe(self.requests.len(), self.stats.forwarded, now);
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
                self.ask_all = true;
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
        self.front.defer_entry_flushes(false)?;
        self.stop();
        Ok(self.stats)
    }
}

/// `wait` rounded up to whole milliseconds, the unit of `zmq_poll`: a wait rounded down
/// to 0 would spin until a retry is due.
fn whole_millis(wait: Duration) -> Duration {
    Duration::from_millis(wait.as_micros().div_ceil(1000).min(u128::from(u64::MAX)) as u64)
}
