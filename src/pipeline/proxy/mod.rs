//! The load-balancing proxy in front of each stage: the zguide's LRU broker.
//!
//! The proxy owns one ROUTER socket bound to two endpoints: `upstream`, where the front
//! end or the previous stage's workers send jobs (DEALER), and `downstream`, where this
//! stage's workers connect (DEALER). One socket means one blocking receive per message
//! and no `zmq_poll`, whose per-socket event checks cost several system calls each time.
//! A job is told from a worker's message by its first frame: a job's is a lead frame
//! (the envelope's [`ENVELOPE_LEN`] bytes, then the job's first frame; see
//! [`crate::pipeline::envelope`]), a worker's tag is one byte.
//!
//! Jobs go to the idle worker (one with credit left) that holds the fewest jobs, least
//! recently used among equals ([`Dispatch::Spread`]), which spreads a burst over the
//! pool and keeps jobs away from a worker slowed by a long one. For batch work,
//! [`Dispatch::FillCredit`] gives a job to the worker that took the last one while that
//! worker has credit left: a worker woken for a job then finds the jobs after it already
//! queued, so a burst costs a wake-up per credit rather than one per job (a job stuck
//! behind a long one is still handed back, see `RETURN`). While no worker is idle, jobs
//! wait in a queue whose bound is configured; past it a job is answered 503 through the
//! loopback instead of being dropped or buffered without limit.
//!
//! Workers and their pools speak these messages (see [`crate::pipeline::worker`]):
//! - `[READY + completed: u64 LE + credit: u32 LE, heartbeat payload if any]` (the tag and
//!   the counts in one frame of 13 bytes) from the worker's
//!   own socket, after every few jobs (half its credit) while more wait for it, as soon
//!   as none does, and periodically while idle. The count of completed jobs tells a
//!   heartbeat from finished jobs (several at once when credit comes back in a batch); the credit is how many jobs the worker may
//!   hold at once (with more than 1 a worker finds its next job already waiting, which
//!   saves two wake-ups per job when jobs are cheap; see `RETURN` for uneven work).
//! - `[BUSY, worker id, ...]` from the worker pool's heartbeat socket, for workers
//!   running a job, so that long jobs are not taken for deaths.
//!
//! - `[GOODBYE]` from a worker that is shutting down: it gets no more jobs, and finishes
//!   (and answers) the ones it holds.
//! - `[RETURN, worker id, lead frame, frames...]` from the pool's heartbeat socket: a job
//!   that waited in that worker's queue behind a long job, handed back unstarted. It goes
//!   to the head of the waiting queue (it was admitted already, so the bound does not
//!   apply), and the worker gets no second job until its next `READY`. This is what
//!   makes a credit above 1 safe for uneven work.
//!
//! Upstream peers (the front end) may send `[PROBE]`; the proxy answers that peer with
//! `[STATUS, JSON]` (workers known, idle, jobs waiting), which the front end uses for its
//! health check and status page.
//!
//! The front end and worker pools may send `[CENSUS, census id]` when a proxy somewhere
//! has been lost; the proxy answers that peer `[CENSUS, census id, held]` with every job
//! it holds: waiting in its queue or handed to a worker (see [`crate::pipeline::census`]).
//!
//! A worker whose heartbeats stop for `heartbeat_timeout` is forgotten; the job it held,
//! if any, is answered 503 through the loopback at once.
//!
//! A stage left without any worker keeps queueing jobs for `no_worker_grace` (a worker
//! restarting is back within it, and finds its jobs waiting); past it, the waiting jobs
//! and every new one are answered 503
//! ([`FailureKind::NoWorkers`](crate::pipeline::loopback::FailureKind::NoWorkers)) at
//! once, instead of waiting for their deadline, until a worker says READY again.
//!
//! The files, by concern: `broker` (the loop and how a message is told apart),
//! `dispatch` (placing a job, the waiting queue), `registry` (workers, their credit and
//! heartbeats, a stage without workers), `answers` (failures through the loopback, census
//! answers), `figures` ([`ProxyStats`], [`ProxyStatus`], metrics), `hosted` ([`HostedProxy`]: a
//! proxy turned by its stage's one worker thread instead of a thread of its own), `config`
//! ([`ProxyConfig`], [`Dispatch`], [`Chooser`]).

mod answers;
mod broker;
mod config;
mod dispatch;
mod figures;
mod hosted;
mod registry;

pub use config::{Chooser, Dispatch, ProxyConfig};
pub use figures::{ProxyStats, ProxyStatus};
pub use hosted::HostedProxy;

use crate::base::error::Result;
use crate::base::shutdown::Shutdown;
use crate::base::sockets;
use crate::pipeline::envelope::ENVELOPE_LEN;
use crate::pipeline::front_ends::Loopbacks;
use std::collections::VecDeque;
use std::time::Instant;

/// What the proxy knows of one worker.
struct WorkerRecord {
    /// When the worker is taken for dead unless it speaks again.
    expires: Instant,
    /// The payload of its last readiness message.
    heartbeat: Vec<u8>,
    /// The worker's own count of completed jobs, as last reported.
    completed: u64,
    /// How many jobs it may hold at once.
    credit: usize,
    /// Whether it is in the idle queue.
    queued: bool,
    /// The envelopes of the jobs it holds, oldest first, so that its death can be answered.
    in_flight: VecDeque<[u8; ENVELOPE_LEN]>,
}

/// A bound proxy, ready to [`run`](Proxy::run).
pub struct Proxy {
    router: zmq::Socket,
    loopback: Loopbacks,
    bound: (String, String),
    config: ProxyConfig,
    workers: registry::Workers,
    /// The slots (in `workers`) of the workers with credit left, in dispatch order.
    idle: VecDeque<usize>,
    /// Jobs waiting for a worker; one of a single frame is kept without a vector, so
    /// that thousands waiting cost no allocation each.
    waiting: VecDeque<sockets::Parked>,
    /// Emptied frame vectors, reused for the next messages received.
    spare: sockets::SpareFrames,
    /// The routing id of the last message's sender (its first `sender_len` bytes),
    /// received beside its frames rather than as a frame.
    sender: Box<[u8; zmq::ROUTING_ID_MAX]>,
    stats: ProxyStats,
    /// Since when the stage has had no worker, while it has none.
    workerless_since: Option<Instant>,
    /// The process's stop flag, as given to [`run`](Proxy::run) (a flag of its own
    /// before that).
    shutdown: Shutdown,
    /// The worker on the thread that turns this proxy, when there is one (see
    /// [`HostedProxy`]): its jobs are handed over in memory rather than through the
    /// socket.
    local: Option<hosted::Local>,
}

impl Proxy {
    /// Binds the upstream and downstream endpoints and connects to the loopback.
    pub fn bind(ctx: &zmq::Context, config: ProxyConfig) -> Result<Proxy> {
        let router = sockets::socket(ctx, zmq::ROUTER)?;
        router
            .set_router_mandatory(true)
            .map_err(|e| crate::Error::zmq("setting ROUTER_MANDATORY", e))?;
        router
            .set_rcvhwm(sockets::STAGE_PIPE_HWM)
            .map_err(|e| crate::Error::zmq("setting the receive high-water mark", e))?;
        // What a worker holds is bounded by its credit, not by this mark; the default of
        // 1000 a side can be reached in libzmq's view with a credit in the hundreds
        // (see `dispatch`).
        router
            .set_sndhwm(sockets::STAGE_PIPE_HWM)
            .map_err(|e| crate::Error::zmq("setting the send high-water mark", e))?;
        sockets::bind(&router, &config.upstream)?;
        let upstream = sockets::last_endpoint(&router)?;
        sockets::bind(&router, &config.downstream)?;
        let downstream = sockets::last_endpoint(&router)?;
        let loopback = Loopbacks::connect(ctx, config.loopbacks.iter().map(String::as_str))?;
        Ok(Proxy {
            router,
            loopback,
            bound: (upstream, downstream),
            config,
            workers: registry::Workers::default(),
            idle: VecDeque::new(),
            waiting: VecDeque::new(),
            spare: sockets::SpareFrames::default(),
            sender: Box::new([0; zmq::ROUTING_ID_MAX]),
            stats: ProxyStats::default(),
            workerless_since: Some(Instant::now()),
            shutdown: Shutdown::new(),
            local: None,
        })
    }

    /// The endpoints actually bound (with the ports chosen for `tcp://host:*`):
    /// `(upstream, downstream)`.
    pub fn endpoints(&self) -> (String, String) {
        self.bound.clone()
    }
}

/// An id (a worker's or a peer's) as log lines show it.
fn show(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}
