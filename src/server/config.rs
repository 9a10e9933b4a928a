//! The front end's settings: where it listens and the limits it enforces.

use super::channels::ChannelsConfig;
use super::cors::CorsConfig;
use crate::base::metrics::MetricsSource;
use crate::http::Limits;
use crate::jobs::JobsConfig;
use std::time::Duration;

/// Which protocol a listening endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenProtocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http,
    /// Netstrings: `LEN:BYTES,` in both directions.
    Netstring,
}

/// How the access log writes its lines (see `server::access_log`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `TIME access CLIENT "REQUEST LINE" STATUS BYTESB DURATIONms request=ID`.
    #[default]
    Text,
    /// One JSON object per line, with the fields nginx users expect.
    Json,
}

/// The default of [`ServerConfig::io_threads`] (`--io-threads`): two. With the default
/// [`DEFAULT_IO_THREAD_SPILL`] the first keeps up to 4,096 connections, as libzmq's one
/// thread would (so a server with fewer, the usual case, writes every connection from
/// one thread and the second stays idle), and a publish to more is written on two
/// cores. Measured on 2 cores against one thread (`scripts/bench-channels`, the same
/// build with `BENCH_ARGS="--io-threads 2"`, DESIGN.md's channels): a publish to 10,000
/// held streams reached the last in 73.9 ms instead of 93.6 (quiet machine), with each
/// thread writing about 5,000 of them; a stream of publishes to them was delivered at
/// 318,000 deliveries a second instead of 379,000 (two writers that keep up batch less),
/// still above Pushpin's and Nchan's; the rows with 1,000 holds run on one thread
/// either way. On a loaded machine (load 8-16, the other build with its defaults in the
/// same rounds): 332 ms against 375 to the last of 10,000 (lower in each of 3 rounds;
/// Nchan 305), the stream 60,000 against 89,000 a second (Nchan 28,000, Pushpin
/// 17,000), and the server's CPU per publish 115-123 ms against 125-130. Earlier, at
/// load 8-11, two threads had delivered the stream about half as fast and the publish
/// no sooner.
pub const DEFAULT_IO_THREADS: usize = 2;

/// The default of [`ServerConfig::io_thread_spill`] (`--io-thread-spill`): with two or
/// more I/O threads, a front end's connections stay on its first until it holds 4,096,
/// and are then spread.
///
/// Why not libzmq's least-loaded choice from the first connection: the kernel's work of a
/// delivery is a `sendto` (some 5 µs on the loopback, the receiver's side included), and
/// one I/O thread that falls behind the front end finds several messages in a held
/// connection's pipe and writes them in one `sendto`. Spread over two threads from the
/// start, each keeps up and writes nearly every message on its own: with 1,000 SSE holds
/// and a stream of 200 publishes, 0.17-0.52 `sendto` per delivery on one thread against
/// 0.47-0.51 on two, and about half the deliveries a second (`perf stat`, DESIGN.md's
/// channels). A single publish to many holds cannot batch, and there two cores write in
/// parallel.
pub const DEFAULT_IO_THREAD_SPILL: usize = 4096;

/// How the front end listens and what it allows.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Endpoints to bind, each with its protocol (e.g. `tcp://127.0.0.1:8002`; port 0 or
    /// `*` picks a free port, see [`Server::endpoints`](super::Server::endpoints)).
    pub listen: Vec<(String, ListenProtocol)>,
    /// Share each TCP listening port with other front ends on this host
    /// (`SO_REUSEPORT`): the kernel spreads new connections over every socket bound to
    /// the port, each of whose owners set it too (and run as the same user). Off by
    /// default, so that a port already taken is an error; `prime_serverd --front-ends
    /// N` and `prime_httpd --reuse-port` turn it on. Only for endpoints whose host is an
    /// address or `*` (the front end opens those sockets itself).
    pub reuse_port: bool,
    /// libzmq's I/O threads for the front end's context: the threads where the client
    /// connections are read and written, each connection on one of them (libzmq gives a
    /// new connection to the first below [`ServerConfig::io_thread_spill`], then to the
    /// least busy). The default is [`DEFAULT_IO_THREADS`], two, which let a
    /// publish to thousands of held connections write them on two cores while the front
    /// end hands the deliveries over; with `--front-ends N` there are at least N. libzmq
    /// takes the count only before the context's first socket, so an embedder who made
    /// sockets on the context first keeps the context's own count.
    pub io_threads: usize,
    /// How many pollers (client connections, listeners, pipeline links) an I/O thread of
    /// a single front end's context holds before new connections go to the next one
    /// (libzmq's `ZMQ_IO_THREAD_SPILL`, a patch of ours; 0: always the least loaded, as
    /// libzmq does). The default is [`DEFAULT_IO_THREAD_SPILL`]. With `--front-ends N`
    /// the connections are spread from the first (each front end's share of the load).
    pub io_thread_spill: usize,
    /// Switch every thread of the process to `SCHED_BATCH` while many requests are in
    /// flight, and back once the load is gone ([`crate::base::sched`]): a woken thread
    /// then waits for a busy core's thread to block instead of preempting it, so the
    /// pipeline's hops find messages in batches rather than one at a time; while busy,
    /// each policy is tried in turn and the one that sends more requests into the
    /// pipeline is kept. Off in [`ServerConfig::http`], since it changes the scheduling
    /// of every thread of the process, an embedder's own threads included: an embedder
    /// turns it on. The binaries turn it on unless told `--no-batch-wakeups`.
    pub batch_wakeups: bool,
    /// Request size limits for HTTP.
    pub limits: Limits,
    /// The largest netstring payload accepted.
    pub max_netstring_bytes: usize,
    /// How long a request may take in the pipeline before it is answered 504.
    pub request_timeout: Duration,
    /// How long a client may take to send a request head before it is answered 408
    /// (checked every tenth of the shorter of this and `idle_timeout`, between 100 ms
    /// and 1 s).
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection stays open (checked as `header_timeout`).
    pub idle_timeout: Duration,
    /// A path answered by the front end itself, without touching a worker: 200 while
    /// the first proxy reports at least one worker and no drain is under way, else 503.
    pub health_path: Option<String>,
    /// A path answered with a JSON document of the topology as the front end sees it;
    /// with `?selftest=1` it runs the self-test instead (see `server::selftest`). With
    /// `Accept: text/html` it is the live status page, and with `Accept:
    /// text/event-stream` the page's event stream (see `server::status_page`).
    pub status_path: Option<String>,
    /// A path that runs the self-test, like `status_path?selftest=1`: a probe through
    /// every stage and a check of the job store, answered 200 when every part passes,
    /// 503 otherwise, with a JSON document naming each part.
    pub selftest_path: Option<String>,
    /// A path answering JSON-RPC 2.0 `POST`s (one request object or a batch), each
    /// call's method naming its stage through the task table, as `X-Task-Name` does
    /// (see `server::jsonrpc` and [`crate::stages::jsonrpc`]); none by default.
    pub jsonrpc_path: Option<String>,
    /// A path answered 200 only when the server can serve: every stage has a live
    /// worker and the job store (if any) can write; else 503 with a JSON document
    /// naming what is missing. It runs the self-test (see `selftest_path`), so a stage
    /// with no worker is named within `selftest_timeout`, or at once once its proxy
    /// refuses its jobs. `health_path` stays the liveness check.
    pub ready_path: Option<String>,
    /// A path answered with the front end's Prometheus metrics (text exposition).
    pub metrics_path: Option<String>,
    /// More figures for the metrics path: the proxies and pools of the same process.
    pub metrics_source: Option<MetricsSource>,
    /// How each access-log line is written (text by default).
    pub access_log_format: AccessLogFormat,
    /// How long the self-test waits for the stages and the store to answer.
    pub selftest_timeout: Duration,
    /// How long a drain may last before the front end stops anyway.
    pub drain_timeout: Duration,
    /// During a drain, answer new requests 503 with `Connection: close` (so a load
    /// balancer moves traffic away) instead of serving them.
    pub drain_rejects: bool,
    /// How often to log a one-line summary at info level (none by default).
    pub summary_every: Option<Duration>,
    /// How many requests one connection may have unanswered; past it the connection is
    /// answered 503 and closed, which bounds the memory one client can hold.
    pub max_pipelined: usize,
    /// How many response bytes may wait behind the answer being written, for a client
    /// that reads slower than its answers come, before the connection is dropped. It
    /// bounds what waits, not what is sent: a client that keeps reading gets any amount
    /// over time, and an answer of any size. A client that does not read holds at most
    /// this, the answer in progress, and the 4 MiB or so libzmq takes.
    pub max_output_bytes: usize,
    /// How long a TCP client may take none of what is sent to it (its receive window
    /// stays shut, or nothing is acknowledged) before the kernel aborts the connection.
    /// This is what finally frees a client that stopped reading, whatever it holds in
    /// the front end and in libzmq (see `sockets::set_tcp_max_retransmit`).
    pub write_timeout: Duration,
    /// How often a half-closed HTTP/1.1 connection (the client sent FIN, RFC 9293 §3.6)
    /// whose next answer is not ready is sent an interim `102 Processing` (RFC 9110
    /// §15.2: a client accepts 1xx responses it did not ask for). A client still there
    /// ignores it; a socket that is closed answers it with a reset, and the connection's
    /// unanswered requests are then interrupted. 1 s by default.
    pub half_closed_probe: Duration,
    /// How long the requests of a half-closed connection that cannot be sent an interim
    /// response (HTTP/1.0, netstrings) may run after the half-close before the client
    /// is taken as gone: its requests are interrupted and the connection closed. 30 s
    /// by default.
    pub half_closed_timeout: Duration,
    /// Keep asynchronous jobs in this store (`Prefer: respond-async`, `/jobs/{id}`);
    /// none by default, and then requests are only answered while the client waits.
    pub jobs: Option<JobsConfig>,
    /// Answer CORS preflights and add CORS fields to answers for allowed origins (see
    /// [`CorsConfig`]); none by default, and then nothing about CORS is done.
    pub cors: Option<CorsConfig>,
    /// Channels: the history kept, the bus, the control listener (see
    /// [`ChannelsConfig`]); by default a history of 100 messages or 120 s, no bus, no
    /// control listener.
    pub channels: ChannelsConfig,
    /// WebSockets: the ping of quiet sockets and the message limit (see
    /// [`WebSocketConfig`](super::WebSocketConfig)).
    pub websocket: super::WebSocketConfig,
}

impl ServerConfig {
    /// Serves HTTP on `endpoint` with the default limits and timeouts.
    pub fn http(endpoint: impl Into<String>) -> Self {
        ServerConfig {
            listen: vec![(endpoint.into(), ListenProtocol::Http)],
            reuse_port: false,
            io_threads: DEFAULT_IO_THREADS,
            io_thread_spill: DEFAULT_IO_THREAD_SPILL,
            batch_wakeups: false,
            limits: Limits::default(),
            max_netstring_bytes: 10 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            health_path: None,
            status_path: None,
            selftest_path: None,
            jsonrpc_path: None,
            ready_path: None,
            metrics_path: None,
            metrics_source: None,
            access_log_format: AccessLogFormat::Text,
            selftest_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            drain_rejects: false,
            summary_every: None,
            max_pipelined: 1024,
            max_output_bytes: 16 * 1024 * 1024,
            write_timeout: Duration::from_secs(60),
            half_closed_probe: Duration::from_secs(1),
            half_closed_timeout: Duration::from_secs(30),
            jobs: None,
            cors: None,
            channels: ChannelsConfig::default(),
            websocket: super::WebSocketConfig::default(),
        }
    }

    /// Keeps asynchronous jobs in the SQLite file `db_path`, with the default limits
    /// (see [`JobsConfig`]).
    pub fn with_jobs(mut self, db_path: impl Into<std::path::PathBuf>) -> Self {
        self.jobs = Some(JobsConfig::new(db_path));
        self
    }

    /// Also serves netstrings on `endpoint`.
    pub fn with_netstring(mut self, endpoint: impl Into<String>) -> Self {
        self.listen
            .push((endpoint.into(), ListenProtocol::Netstring));
        self
    }
}
