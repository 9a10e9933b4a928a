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
//! and every new one are answered 503 ([`FailureKind::NoWorkers`]) at once, instead of
//! waiting for their deadline, until a worker says READY again.

use crate::base::error::Result;
use crate::base::fast_hash::FastMap;
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::envelope::{deadline_passed, lead_deadline_us, lead_envelope, ENVELOPE_LEN};
use crate::pipeline::front_ends::Loopbacks;
use crate::pipeline::loopback::{failure_frames, Failure, FailureKind};
use crate::pipeline::metrics::ProxyMetrics;
use crate::pipeline::wire::{read_ready, BUSY, CENSUS, GOODBYE, PROBE, RETURN, STATUS};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many waiting messages a proxy reads in a row, before a sweep, to hear from every
/// worker whose heartbeat is already queued.
const DRAIN_BATCH: usize = 10_000;
/// How many messages a busy proxy handles between two reads of the clock for its
/// sweeps (a read after each message cost more than the message's own bookkeeping).
const CLOCK_EVERY: u32 = 16;

/// Picks a worker for a job: given the job's frames (after the envelope, as
/// [`crate::Job::frame`] numbers them) and the heartbeat payloads of the idle workers in
/// the order the proxy would use them (see [`Dispatch`]), it returns the index of the
/// worker to use, or `None` for the first one. Used for cache affinity.
///
/// ```
/// use prime_server::pipeline::proxy::Chooser;
/// use std::sync::Arc;
/// // The worker whose heartbeat names the job's first frame, if one does.
/// let by_name: Chooser = Arc::new(|frames: &[&[u8]], heartbeats: &[&[u8]]| {
///     heartbeats.iter().position(|payload| Some(payload) == frames.first())
/// });
/// assert_eq!(by_name(&[b"b"], &[b"a", b"b"]), Some(1));
/// ```
pub type Chooser = Arc<dyn Fn(&[&[u8]], &[&[u8]]) -> Option<usize> + Send + Sync>;

/// Which idle worker a proxy hands a job to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dispatch {
    /// The one holding the fewest jobs, least recently used among equals: a burst of
    /// jobs is spread over the pool, and a worker slowed by a long job gets no more
    /// than its pace allows, for the lowest latency when jobs take long enough to be
    /// worth running side by side. A worker's count of jobs held falls when its READY
    /// reports them completed (every half credit, and whenever its queue runs dry).
    #[default]
    Spread,
    /// The one that took the last job, while it has credit left: fewer wake-ups per
    /// job, for throughput when jobs are cheap and many are in flight (a batch).
    FillCredit,
}

/// How a proxy is wired and tuned.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Where jobs arrive (bound; senders connect DEALER sockets).
    pub upstream: String,
    /// Where workers connect (bound; workers connect DEALER sockets).
    pub downstream: String,
    /// The front ends' loopbacks, for answering jobs the proxy cannot place (connected,
    /// PUSH), in the deployment's order (a job's answer goes to the front end its
    /// envelope names, see [`crate::pipeline::front_ends`]). Without any, such jobs are
    /// dropped with a warning, and the front end answers them 504 when their deadline
    /// passes.
    pub loopbacks: Vec<String>,
    /// How many jobs may wait for an idle worker before new ones are answered 503. Jobs
    /// the workers hold (up to their credit each) are not counted; jobs handed back by a
    /// stuck worker are queued whatever the bound, since they were admitted already.
    pub queue_bound: usize,
    /// How long a worker may stay silent before it is taken for dead.
    pub heartbeat_timeout: Duration,
    /// Optional worker preference (cache affinity).
    pub choose: Option<Chooser>,
    /// Which idle worker gets a job.
    pub dispatch: Dispatch,
    /// How often to log a one-line summary at info level (none by default).
    pub summary_every: Option<Duration>,
    /// How long the stage may have no worker before jobs are answered 503 at once
    /// instead of queued (5 s by default; from the proxy's start, too).
    pub no_worker_grace: Duration,
    /// Where the proxy publishes its figures for a metrics scrape, at each sweep.
    pub metrics: Option<Arc<ProxyMetrics>>,
}

impl ProxyConfig {
    /// A configuration with the default queue bound (10,000) and heartbeat timeout (1.5 s),
    /// answering through `loopback`, the one front end's (set
    /// [`loopbacks`](Self::loopbacks) for several).
    pub fn new(
        upstream: impl Into<String>,
        downstream: impl Into<String>,
        loopback: Option<String>,
    ) -> Self {
        ProxyConfig {
            upstream: upstream.into(),
            downstream: downstream.into(),
            loopbacks: loopback.into_iter().collect(),
            queue_bound: 10_000,
            heartbeat_timeout: Duration::from_millis(1500),
            choose: None,
            dispatch: Dispatch::Spread,
            summary_every: None,
            no_worker_grace: Duration::from_secs(5),
            metrics: None,
        }
    }
}

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

/// A bound proxy, ready to [`run`](Proxy::run).
pub struct Proxy {
    router: zmq::Socket,
    loopback: Loopbacks,
    bound: (String, String),
    config: ProxyConfig,
    workers: FastMap<Vec<u8>, WorkerRecord>,
    idle: VecDeque<Vec<u8>>,
    /// Jobs waiting for a worker; one of a single frame is kept without a vector, so
    /// that thousands waiting cost no allocation each.
    waiting: VecDeque<sockets::Parked>,
    /// Emptied frame vectors, reused for the next messages received.
    spare: sockets::SpareFrames,
    stats: ProxyStats,
    /// Since when the stage has had no worker, while it has none.
    workerless_since: Option<Instant>,
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
            workers: FastMap::default(),
            idle: VecDeque::new(),
            waiting: VecDeque::new(),
            spare: sockets::SpareFrames::default(),
            stats: ProxyStats::default(),
            workerless_since: Some(Instant::now()),
        })
    }

    /// The endpoints actually bound (with the ports chosen for `tcp://host:*`):
    /// `(upstream, downstream)`.
    pub fn endpoints(&self) -> (String, String) {
        self.bound.clone()
    }

    /// Balances jobs until `shutdown` is triggered, or, once a drain is asked for, until
    /// no job waits and no worker holds one; returns the counters.
    pub fn run(mut self, shutdown: &Shutdown) -> Result<ProxyStats> {
        log::info!(
            "proxy: jobs arrive on {}, workers connect to {}, failures go to {}",
            self.bound.0,
            self.bound.1,
            match &self.config.loopbacks[..] {
                [] => "nowhere (no loopback)".to_string(),
                loopbacks => loopbacks.join(", "),
            }
        );
        let sweep_every = (self.config.heartbeat_timeout / 4).max(Duration::from_millis(10));
        let wait = sweep_every.min(POLL_CAP).as_millis() as i32;
        self.router
            .set_rcvtimeo(wait)
            .map_err(|e| crate::Error::zmq("setting the receive timeout", e))?;
        let mut next_sweep = Instant::now() + sweep_every;
        let mut next_summary = self
            .config
            .summary_every
            .map(|every| Instant::now() + every);
        let mut unclocked = 0;
        while !self.should_stop(shutdown) {
            // A blocking receive returns at once while messages wait, so a busy proxy
            // makes no system call per message; asking without waiting would cost one
            // each time the queue runs dry.
            match self.spare.recv(&self.router, 0) {
                Ok(frames) => {
                    self.on_message(frames);
                    unclocked += 1;
                    if unclocked < CLOCK_EVERY {
                        continue;
                    }
                }
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(crate::Error::zmq("receiving at a proxy", e)),
            }
            unclocked = 0;
            let now = Instant::now();
            if now >= next_sweep {
                // Read what is already waiting before judging any worker silent: after
                // this thread was descheduled, the heartbeats that came meanwhile are
                // queued here, not lost.
                for _ in 0..DRAIN_BATCH {
                    match self.spare.recv(&self.router, zmq::DONTWAIT) {
                        Ok(frames) => self.on_message(frames),
                        Err(_) => break,
                    }
                }
                // Late by more than a sweep: the proxy itself did not run (SIGSTOP, a
                // stalled machine). Its workers' heartbeats wait unread in its queue, so
                // the pause does not count against them.
                let paused = now - next_sweep;
                if paused > sweep_every {
                    if paused >= self.config.heartbeat_timeout {
                        log::warn!(
                            "proxy {}: did not run for {:.1}s; not counting that against the workers",
                            self.bound.0,
                            paused.as_secs_f64()
                        );
                    }
                    self.excuse(paused);
                }
                self.evict_silent_workers();
                self.forget_expired_jobs();
                self.refuse_while_workerless(now);
                self.publish_metrics();
                next_sweep = now + sweep_every;
            }
            if let (Some(at), Some(every)) = (next_summary, self.config.summary_every) {
                if now >= at {
                    self.log_summary();
                    next_summary = Some(now + every);
                }
            }
        }
        for job in std::mem::take(&mut self.waiting) {
            let detail = "the proxy is shutting down";
            self.answer_job(
                job.frames(),
                Failure::new(FailureKind::ShuttingDown, detail),
            );
        }
        log::debug!("proxy {} stopping: {}", self.config.upstream, self.stats);
        Ok(self.stats)
    }

    fn should_stop(&self, shutdown: &Shutdown) -> bool {
        shutdown.is_triggered() || (shutdown.is_draining() && self.is_empty())
    }

    /// Whether no job waits here and no worker holds one.
    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.workers.values().all(|w| w.in_flight.is_empty())
    }

    fn log_summary(&self) {
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

    fn on_message(&mut self, mut frames: Vec<zmq::Message>) {
        // The second frame's bytes are looked up once (each look-up asks libzmq): a
        // job's envelope, read here for its dispatch too, or a worker's READY.
        let (envelope, ready) = match frames.get(1) {
            Some(second) => {
                let second: &[u8] = second;
                (lead_envelope(second).copied(), read_ready(second))
            }
            None => (None, None),
        };
        if let Some(envelope) = envelope {
            // The sender's id goes: a swap with the usual one frame behind it.
            if frames.len() == 2 {
                frames.swap_remove(0);
            } else {
                frames.remove(0);
            }
            self.on_job(frames, envelope);
        } else {
            if frames.len() > 3 && &frames[1][..] == RETURN && lead_envelope(&frames[3]).is_some() {
                // [peer, RETURN, worker id, lead frame, frames...]
                let job = frames.split_off(3);
                self.on_returned(&frames[2], job);
            } else {
                self.on_worker_message(&frames, ready);
            }
            self.spare.give_back(frames);
            self.dispatch_waiting();
        }
    }

    /// A message from a worker or a peer: `ready` is its second frame read as a READY.
    fn on_worker_message(&mut self, frames: &[zmq::Message], ready: Option<(u64, u32)>) {
        let expires = Instant::now() + self.config.heartbeat_timeout;
        match frames {
            [id, _, rest @ ..] if ready.is_some() => {
                let (completed, credit) = ready.unwrap_or_default();
                let payload = rest.first().map(|m| &m[..]).unwrap_or(&[]);
                self.on_ready(id, completed, credit.max(1) as usize, payload, expires);
            }
            [id, tag] if &tag[..] == GOODBYE => {
                log::info!("proxy {}: worker {} left", self.config.downstream, show(id));
                self.workers.remove(&id[..]);
                self.idle.retain(|idle| idle[..] != id[..]);
                self.note_if_workerless();
            }
            [peer, tag] if &tag[..] == PROBE => {
                let status = self.status().to_json().to_string();
                let frames = [
                    zmq::Message::from(&peer[..]),
                    zmq::Message::from(STATUS),
                    zmq::Message::from(status.into_bytes()),
                ];
                if let Err(e) = sockets::send_frames(&self.router, frames, zmq::DONTWAIT) {
                    log::debug!("proxy: status not sent: {e}");
                }
            }
            [peer, tag, census] if &tag[..] == CENSUS => self.answer_census(peer, census),
            [_, tag, ids @ ..] if &tag[..] == BUSY => {
                for id in ids {
                    if let Some(record) = self.workers.get_mut(&id[..]) {
                        record.expires = expires;
                    }
                }
            }
            _ => log::warn!(
                "proxy {}: malformed worker message of {} frames",
                self.config.downstream,
                frames.len()
            ),
        }
    }

    /// Answers a census call: every job waiting here or held by a worker, to the peer
    /// that asked (the front end, or a pool that relays it).
    fn answer_census(&self, peer: &[u8], census: &[u8]) {
        let waiting = self.waiting.iter().map(|job| &job.frames()[0][..]);
        let held = self
            .workers
            .values()
            .flat_map(|w| w.in_flight.iter().map(|e| &e[..]));
        let list = crate::pipeline::census::held_list(
            waiting
                .chain(held)
                .filter_map(crate::pipeline::census::held_by),
        );
        log::info!(
            "proxy {}: census: {} jobs waiting, {} held by workers",
            self.bound.0,
            self.waiting.len(),
            self.workers
                .values()
                .map(|w| w.in_flight.len())
                .sum::<usize>()
        );
        let frames = [
            zmq::Message::from(peer),
            zmq::Message::from(CENSUS),
            zmq::Message::from(census),
            zmq::Message::from(list),
        ];
        if let Err(e) = sockets::send_frames(&self.router, frames, zmq::DONTWAIT) {
            log::debug!("proxy: census answer not sent: {e}");
        }
    }

    /// The proxy's state as a probe reports it.
    pub fn status(&self) -> ProxyStatus {
        ProxyStatus {
            workers: self.workers.len(),
            idle: self.idle.len(),
            waiting: self.waiting.len(),
            dispatched: self.stats.dispatched,
        }
    }

    fn on_ready(
        &mut self,
        id: &[u8],
        completed: u64,
        credit: usize,
        payload: &[u8],
        expires: Instant,
    ) {
        // Look up before inserting: READY comes every few jobs, and `entry` would copy
        // the id each time.
        if !self.workers.contains_key(id) {
            log::debug!(
                "proxy {}: worker {} joined",
                self.config.downstream,
                show(id)
            );
            let record = WorkerRecord {
                expires,
                heartbeat: Vec::new(),
                completed,
                credit,
                queued: false,
                in_flight: VecDeque::new(),
            };
            self.workers.insert(id.to_vec(), record);
            if self.workerless_since.take().is_some() {
                log::info!("proxy {}: a worker is back", self.config.downstream);
            }
        }
        let Some(record) = self.workers.get_mut(id) else {
            return;
        };
        record.expires = expires;
        record.credit = credit;
        if record.heartbeat != payload {
            record.heartbeat = payload.to_vec();
        }
        let finished = completed.saturating_sub(record.completed) as usize;
        record.completed = completed;
        record
            .in_flight
            .drain(..finished.min(record.in_flight.len()));
        if record.in_flight.len() < record.credit && !record.queued {
            record.queued = true;
            self.idle.push_back(id.to_vec());
        }
    }

    /// A job of `worker` came back unstarted: it goes first in line; the worker no
    /// longer holds it, and gets nothing more until it says READY.
    fn on_returned(&mut self, worker: &[u8], job: Vec<zmq::Message>) {
        self.stats.returned += 1;
        if let Some(record) = self.workers.get_mut(worker) {
            let envelope = lead_envelope(&job[0]);
            if let Some(held) = record.in_flight.iter().position(|e| Some(e) == envelope) {
                record.in_flight.remove(held);
            }
            record.credit = 1;
            if record.queued && record.in_flight.len() >= record.credit {
                record.queued = false;
                self.idle.retain(|idle| idle[..] != worker[..]);
            }
        }
        let job = self.spare.park(job);
        self.waiting.push_front(job);
    }

    /// A job arrived: `envelope` is its lead frame's first bytes.
    fn on_job(&mut self, frames: Vec<zmq::Message>, envelope: [u8; ENVELOPE_LEN]) {
        if self.workers.is_empty() && self.workerless_too_long(Instant::now()) {
            self.stats.rejected_no_workers += 1;
            self.answer_job(&frames, self.no_workers_failure());
        } else if self.waiting.is_empty() && !self.idle.is_empty() {
            if let Err(frames) = self.dispatch(frames, envelope) {
                let job = self.spare.park(frames);
                self.waiting.push_front(job);
            }
        } else if self.waiting.len() < self.config.queue_bound {
            let job = self.spare.park(frames);
            self.waiting.push_back(job);
        } else {
            self.stats.rejected_full += 1;
            let detail = format!("all workers busy and {} jobs waiting", self.waiting.len());
            self.answer_job(&frames, Failure::new(FailureKind::QueueFull, detail));
        }
    }

    fn dispatch_waiting(&mut self) {
        if self.waiting.is_empty() || self.idle.is_empty() {
            return;
        }
        let now_us = crate::pipeline::envelope::now_us();
        while !self.idle.is_empty() {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let frames = self.spare.unpark(job);
            let envelope = frames.first().and_then(|lead| lead_envelope(lead).copied());
            // The front end has already answered 504 for an expired job.
            let Some(envelope) = envelope.filter(|envelope| {
                !lead_deadline_us(envelope).is_some_and(|at| deadline_passed(at, now_us))
            }) else {
                self.spare.give_back(frames);
                continue;
            };
            if let Err(frames) = self.dispatch(frames, envelope) {
                let job = self.spare.park(frames);
                self.waiting.push_front(job);
                return;
            }
        }
    }

    /// Sends a job (whose lead frame starts with `envelope`) to an idle worker; gives
    /// the job back if no idle worker can take it.
    fn dispatch(
        &mut self,
        mut frames: Vec<zmq::Message>,
        envelope: [u8; ENVELOPE_LEN],
    ) -> std::result::Result<(), Vec<zmq::Message>> {
        while let Some(id) = self.take_idle_worker(&frames) {
            match self.router.send(&id[..], zmq::SNDMORE | zmq::DONTWAIT) {
                Ok(()) => {
                    let sent = sockets::send_all(&self.router, &mut frames, zmq::DONTWAIT);
                    if let Err(e) = sent {
                        log::error!("proxy {}: job lost mid-send: {e}", self.config.downstream);
                    }
                    self.spare.give_back(frames);
                    self.stats.dispatched += 1;
                    // Looked up once the job is sent (see `take_idle_worker`).
                    if let Some(record) = self.workers.get_mut(&id) {
                        record.queued = false;
                        record.in_flight.push_back(envelope);
                        if record.in_flight.len() < record.credit {
                            record.queued = true;
                            match self.config.dispatch {
                                Dispatch::Spread => self.idle.push_back(id),
                                Dispatch::FillCredit => self.idle.push_front(id),
                            }
                        }
                    }
                    return Ok(());
                }
                Err(zmq::Error::EAGAIN) => {
                    // The pipe to this worker is full as libzmq sees it: the reader
                    // reports what it has read only every so many messages, so a
                    // worker holding many jobs can look further behind than it is. It
                    // is alive and its jobs are safe: it gets no job until its next
                    // READY, and this one goes to another worker or waits.
                    log::debug!("proxy: the pipe to worker {} is full for now", show(&id));
                    self.stats.pipe_full += 1;
                    if let Some(record) = self.workers.get_mut(&id) {
                        record.queued = false;
                    }
                }
                Err(e) => {
                    // The worker disconnected: forget it until it says READY again, and
                    // answer the jobs it held (with a credit above 1, a worker waiting
                    // for more may hold some), which went with it.
                    log::debug!("proxy: worker {} unreachable: {e}", show(&id));
                    if let Some(record) = self.workers.remove(&id) {
                        self.answer_lost_jobs(&id, &record);
                    }
                    self.note_if_workerless();
                }
            }
        }
        Err(frames)
    }

    /// Takes the worker for a job out of the idle queue. Its record still says it is
    /// queued: the caller sets that once it knows whether the job went (one lookup of
    /// the record per job).
    fn take_idle_worker(&mut self, frames: &[zmq::Message]) -> Option<Vec<u8>> {
        let index = match &self.config.choose {
            Some(choose) if self.idle.len() > 1 => {
                let heartbeats: Vec<&[u8]> = self
                    .idle
                    .iter()
                    .map(|id| self.workers.get(id).map_or(&[][..], |w| &w.heartbeat[..]))
                    .collect();
                let frames: Vec<&[u8]> = frames
                    .iter()
                    .enumerate()
                    .map(|(i, f)| if i == 0 { &f[ENVELOPE_LEN..] } else { &f[..] })
                    .collect();
                choose(&frames, &heartbeats).filter(|&i| i < self.idle.len())
            }
            _ => None,
        };
        let index = index.unwrap_or_else(|| self.least_loaded_idle());
        self.idle.remove(index)
    }

    /// The position in the idle queue of the worker to take when no chooser picks:
    /// with [`Dispatch::Spread`], the one holding the fewest jobs, least recently used
    /// among equals, so that a worker slowed by a long job gets no more of the queue
    /// than its pace allows however large its credit; with [`Dispatch::FillCredit`], the
    /// head (the worker that took the last job).
    fn least_loaded_idle(&self) -> usize {
        if self.config.dispatch == Dispatch::FillCredit || self.idle.len() < 2 {
            return 0;
        }
        let held = |id: &Vec<u8>| self.workers.get(id).map_or(0, |w| w.in_flight.len());
        let mut best = (0, usize::MAX);
        for (index, id) in self.idle.iter().enumerate() {
            let jobs = held(id);
            if jobs < best.1 {
                best = (index, jobs);
                if jobs == 0 {
                    break;
                }
            }
        }
        best.0
    }

    /// Drops waiting jobs whose deadline has passed: the front end has answered them 504,
    /// so with workers slower than every deadline the queue still empties.
    fn forget_expired_jobs(&mut self) {
        let now_us = crate::pipeline::envelope::now_us();
        self.waiting.retain(|job| !is_expired(job.frames(), now_us));
    }

    /// Gives every worker `pause` more time to be heard from.
    fn excuse(&mut self, pause: Duration) {
        for record in self.workers.values_mut() {
            record.expires += pause;
        }
    }

    fn evict_silent_workers(&mut self) {
        let now = Instant::now();
        let dead: Vec<Vec<u8>> = self
            .workers
            .iter()
            .filter(|(_, w)| w.expires < now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            let Some(record) = self.workers.remove(&id) else {
                continue;
            };
            self.stats.evicted += 1;
            self.idle.retain(|idle| idle != &id);
            log::warn!(
                "proxy {}: worker {} missed its heartbeats",
                self.config.downstream,
                show(&id),
            );
            self.answer_lost_jobs(&id, &record);
        }
        self.note_if_workerless();
    }

    /// Starts the clock of [`ProxyConfig::no_worker_grace`] when the last worker is gone.
    fn note_if_workerless(&mut self) {
        if self.workers.is_empty() && self.workerless_since.is_none() {
            log::warn!(
                "proxy {}: no worker left; jobs wait {:.1}s for one, then are answered 503",
                self.config.downstream,
                self.config.no_worker_grace.as_secs_f64()
            );
            self.workerless_since = Some(Instant::now());
        }
    }

    /// Whether the stage has had no worker for longer than the grace.
    fn workerless_too_long(&self, now: Instant) -> bool {
        self.workerless_since
            .is_some_and(|since| now.duration_since(since) >= self.config.no_worker_grace)
    }

    fn no_workers_failure(&self) -> Failure {
        let detail = format!(
            "the stage whose proxy takes jobs at {} has had no worker for more than {} s",
            self.bound.0,
            self.config.no_worker_grace.as_secs_f64()
        );
        Failure::new(FailureKind::NoWorkers, detail)
    }

    /// Past the grace without a worker, answers every waiting job 503.
    fn refuse_while_workerless(&mut self, now: Instant) {
        if self.waiting.is_empty() || !self.workers.is_empty() || !self.workerless_too_long(now) {
            return;
        }
        let failure = self.no_workers_failure();
        log::warn!(
            "proxy {}: answering the {} waiting jobs 503: {}",
            self.config.downstream,
            self.waiting.len(),
            failure.detail
        );
        for job in std::mem::take(&mut self.waiting) {
            self.stats.rejected_no_workers += 1;
            self.answer_job(job.frames(), failure.clone());
        }
    }

    /// Copies the state and counters where a metrics scrape reads them.
    fn publish_metrics(&self) {
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

    /// Answers 503 every job a worker that is gone held.
    fn answer_lost_jobs(&self, id: &[u8], record: &WorkerRecord) {
        if record.in_flight.is_empty() {
            return;
        }
        log::warn!(
            "proxy {}: answering the {} jobs worker {} held 503",
            self.config.downstream,
            record.in_flight.len(),
            show(id)
        );
        for envelope in &record.in_flight {
            let detail = "the worker handling this request stopped responding";
            self.answer(envelope, Failure::new(FailureKind::WorkerDied, detail));
        }
    }

    /// Answers a job (its frames, lead frame first) with `failure`.
    fn answer_job(&self, frames: &[zmq::Message], failure: Failure) {
        match frames.first().and_then(|lead| lead_envelope(lead)) {
            Some(envelope) => self.answer(envelope, failure),
            None => log::warn!("proxy: a job without an envelope was dropped: {failure}"),
        }
    }

    fn answer(&self, envelope: &[u8; ENVELOPE_LEN], failure: Failure) {
        if self.loopback.is_empty() {
            log::warn!("proxy: no loopback to answer with: {failure}");
            return;
        }
        let frames = failure_frames(envelope, &failure);
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::warn!("proxy: could not answer through the loopback: {e}");
        }
    }
}

/// Whether a job's deadline has passed (the front end has answered it 504 then).
fn is_expired(frames: &[zmq::Message], now_us: u64) -> bool {
    frames
        .first()
        .and_then(|lead| lead_deadline_us(lead))
        .is_some_and(|deadline| deadline_passed(deadline, now_us))
}

fn show(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}
