//! Workers: a loop around a user function, run by a pool of threads per stage.
//!
//! Each worker thread owns a DEALER socket connected to its stage's proxy. It announces
//! itself with `READY` and a credit (how many jobs it may hold, [`DEFAULT_PREFETCH`]
//! unless configured), takes its jobs one at a time, runs the user's [`Work`] on each and
//! either forwards frames to the next stage's proxy (DEALER) or answers the front end through the
//! loopback (PUSH). A panic in user code costs that one request a 500; the worker lives on.
//!
//! Workers subscribe to the front end's interrupts: a job whose client has gone or whose
//! deadline has passed is skipped, and long work can poll [`Job::interrupted`].
//!
//! While a worker is busy its own socket is silent, so each pool runs one small heartbeat
//! thread that tells the proxy which of its workers are busy and alive (see
//! [`crate::pipeline::proxy`]). If the process dies, both stop, and the proxy answers the job.
//! The same thread watches for long jobs: when one has run for
//! [`WorkerConfig::rescue_after`], it takes the jobs queued behind it out of that
//! worker's socket and hands them back to the proxy, which gives them to other workers.
//!
//! A third thread per pool watches the connection to the proxy and answers the front
//! end's censuses with the jobs the pool's workers run (see [`crate::pipeline::census`]), so that
//! when a proxy dies the requests it held are answered 503 at once and those still
//! running are not.

use crate::base::error::{Error, Result};
use crate::base::fast_hash::FastSet;
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::http::Response;
use crate::pipeline::census::{Holdings, ProxyWatch};
use crate::pipeline::envelope::{lead_frame, Envelope, Interrupt, InterruptReason, ENVELOPE_LEN};
use crate::pipeline::loopback::{
    failure_frames, is_response_frame, later_frames, progress_frames, render, response_frames,
    selftest_frames, Failure, FailureKind,
};
use crate::pipeline::selftest::{ProbePath, StageReport, MAX_HOPS};
use crate::pipeline::stream::{ResponseStream, StreamError};
use crate::pipeline::wire::{BUSY, GOODBYE, RETURN};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Jobs a worker may hold at once unless configured otherwise (see
/// [`WorkerConfig::prefetch`]).
///
/// 32: with cheap jobs, a proxy that never runs out of credit never holds a job back,
/// so it wakes only for jobs and every 16th completion, not for each READY (on 2 cores,
/// `wrk -c64` on the demo: 1.0 context switches per request instead of 1.7 with 4).
/// What bounds how long a job can wait behind others in one worker's queue is not the
/// credit but the proxy's choice of the least loaded worker and the hand-back of jobs
/// stuck behind a long one ([`WorkerConfig::rescue_after`]).
pub const DEFAULT_PREFETCH: u32 = 32;

/// How long a leaving worker waits for jobs the proxy sent before it read the goodbye
/// (with a credit above 1 there may be several on their way).
const LEAVE_QUIET: Duration = Duration::from_millis(100);

/// How many interrupts a worker remembers; the oldest are forgotten first.
const REMEMBERED_INTERRUPTS: usize = 65_536;

/// One request as a stage sees it.
///
/// On the wire a job's first frame shares its ZeroMQ frame with the envelope (the lead
/// frame, see [`crate::pipeline::envelope`]); [`Job::frame`] hides that, so frame 0 is the
/// request's first frame as the previous stage or the front end sent it.
pub struct Job<'a> {
    envelope: Envelope,
    /// The envelope as it arrived, for the messages this job sends.
    encoded: [u8; ENVELOPE_LEN],
    /// The lead frame (envelope, then frame 0), then the other frames; empty once taken.
    frames: Vec<zmq::Message>,
    /// Whether [`Job::forward_frames`] handed out the lead frame.
    lead_given: bool,
    /// Whether [`Job::reply`] made a response's whole lead frame.
    reply_made: Cell<bool>,
    watch: &'a InterruptWatch,
    /// The front end's loopback, for streamed answers and progress reports.
    loopback: &'a zmq::Socket,
}

impl Job<'_> {
    /// The request's routing and protocol facts.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// How many frames the job has: the request itself and whatever earlier stages added
    /// (at least 1 until they are taken: a job forwarded with no frames arrives with one
    /// empty frame).
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The frames after the envelope, in order: the request itself and whatever earlier
    /// stages added.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.frames.len()).map(|index| self.frame(index).unwrap_or_default())
    }

    /// Frame `index` (after the envelope), if there is one.
    pub fn frame(&self, index: usize) -> Option<&[u8]> {
        let frame = self.frames.get(index)?;
        Some(if index == 0 {
            frame.get(ENVELOPE_LEN..).unwrap_or_default()
        } else {
            &frame[..]
        })
    }

    /// Takes the frames, e.g. to forward some of them, changed or not. Frame 0 is copied
    /// out of the lead frame it shares with the envelope; the others move without
    /// copying. To forward frames unchanged without any copy, use
    /// [`forward_frames`](Self::forward_frames).
    pub fn take_frames(&mut self) -> Vec<zmq::Message> {
        let mut frames = std::mem::take(&mut self.frames);
        if let Some(lead) = frames.first_mut() {
            *lead = zmq::Message::from(lead.get(ENVELOPE_LEN..).unwrap_or_default());
        }
        frames
    }

    /// Takes the first `keep` frames (all of them if there are fewer) to send them on
    /// unchanged with [`Outcome::Forward`] or [`Outcome::ForwardTo`], followed by any
    /// frames you push after them. Nothing is copied: the first of them is the lead
    /// frame, which still holds the envelope before frame 0, and the worker sends it as it
    /// is. Do not change that frame; read frames with [`frame`](Self::frame) before
    /// taking them.
    ///
    /// With `keep` 0 nothing is taken, and the first frame you forward is copied behind
    /// the envelope as usual.
    pub fn forward_frames(&mut self, keep: usize) -> Vec<zmq::Message> {
        if keep == 0 {
            return Vec::new();
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.truncate(keep);
        self.lead_given = !frames.is_empty();
        frames
    }

    /// The frames to send for a forwarded job: the lead frame given out by
    /// [`forward_frames`](Self::forward_frames) goes as it is; otherwise the envelope is
    /// put before the first frame (an empty one if there is none).
    fn lead_frames(&self, mut frames: Vec<zmq::Message>) -> Vec<zmq::Message> {
        let given = self.lead_given
            && frames
                .first()
                .is_some_and(|lead| lead.get(..ENVELOPE_LEN) == Some(&self.encoded[..]));
        if !given {
            match frames.first_mut() {
                Some(first) => *first = lead_frame(&self.encoded, first),
                None => frames.push(lead_frame(&self.encoded, b"")),
            }
        }
        frames
    }

    /// Answers the client with `response`, written in the protocol the request came in:
    /// HTTP with the request's version, keep-alive and HEAD facts; a netstring holding
    /// the body; or the bare body for the raw protocol.
    pub fn reply(&self, response: &Response) -> Outcome {
        // The response goes whole in the loopback message's one frame, made here at
        // once rather than copied there later.
        let bytes = render(self.envelope.protocol, response);
        let [frame] = response_frames(&self.encoded, &bytes);
        self.reply_made.set(true);
        Outcome::Respond(frame)
    }

    /// Whether the work should stop: the client has gone, the deadline has passed, or the
    /// worker is shutting down. Cheap enough to call every few microseconds.
    pub fn interrupted(&self) -> bool {
        self.watch.is_interrupted(&self.envelope)
    }

    /// Starts answering in pieces: sends `response`'s head now (its body, if any, as the
    /// first piece); see [`crate::pipeline::stream`]. Once the stream is finished (or dropped,
    /// which cuts the answer short), return [`Outcome::Abandon`]: the answer is sent.
    pub fn stream(
        &self,
        response: &Response,
    ) -> std::result::Result<ResponseStream<'_>, StreamError> {
        ResponseStream::start(self.loopback, self.envelope, response)
    }

    /// Reports how far the work is: `fraction` from 0 to 1 and a short message. For an
    /// asynchronous job it is stored with the job, shown in its status and sent to the
    /// job's event streams; for a request a client waits on, it is dropped.
    pub fn progress(&self, fraction: f32, message: &str) {
        if !self.envelope.job {
            return;
        }
        let frames = progress_frames(&self.encoded, fraction, message);
        if let Err(e) = sockets::send_frames(self.loopback, frames, zmq::DONTWAIT) {
            log::debug!(
                "request {}: progress not sent: {e}",
                self.envelope.request_id
            );
        }
    }
}

/// What a stage function decides for a job.
#[derive(Debug)]
pub enum Outcome {
    /// Send these frames (after the envelope) to the next stage.
    Forward(Vec<zmq::Message>),
    /// Send these frames to the stage with this name: any stage of the pipeline, an
    /// earlier one included, so actions can take different paths and work can cycle.
    ForwardTo(String, Vec<zmq::Message>),
    /// Answer the client with these bytes, already in the client's protocol.
    Respond(zmq::Message),
    /// Answer the client with a failure the front end renders.
    Fail(Failure),
    /// Send nothing: the job was interrupted and nobody waits for it.
    Abandon,
    /// Answer later: the front end stores the request (these two frames: its HTTP head
    /// and body) as an asynchronous job and answers the client `202 Accepted`; the job
    /// then runs through the pipeline again, with [`Envelope::job`] set.
    Later(zmq::Message, zmq::Message),
}

impl Outcome {
    /// Forwards frames to the next stage.
    ///
    /// ```
    /// let outcome = prime_server::Outcome::forward([7u64.to_le_bytes().to_vec()]);
    /// assert!(matches!(outcome, prime_server::Outcome::Forward(frames) if frames.len() == 1));
    /// ```
    pub fn forward<I, T>(frames: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<zmq::Message>,
    {
        Outcome::Forward(frames.into_iter().map(Into::into).collect())
    }

    /// Answers the client with `bytes`.
    pub fn respond(bytes: impl Into<zmq::Message>) -> Self {
        Outcome::Respond(bytes.into())
    }
}

/// A stage's work. Any `FnMut(&mut Job) -> Outcome` closure or function is one; implement
/// the trait on a struct to keep per-worker state, to clean up after each job, or to
/// advertise a heartbeat payload that a proxy's choose function can read.
///
/// Each worker thread gets its own clone, so state needs no locking.
pub trait Work: Send + 'static {
    /// Handles one job.
    fn work(&mut self, job: &mut Job<'_>) -> Outcome;

    /// Runs after every job, whatever its outcome (e.g. to trim a cache).
    fn cleanup(&mut self) {}

    /// The payload sent with each readiness message.
    fn heartbeat(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Checks what the stage depends on, for the front end's self-test (see
    /// [`crate::pipeline::selftest`]): `Err` with a sentence a person can act on (e.g. "the
    /// backend http://127.0.0.1:9 refused the connection"). Runs on the worker's
    /// thread instead of a job, so it should take well under the self-test's deadline
    /// (2 s by default). Passes by default.
    fn selftest(&mut self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<F> Work for F
where
    F: FnMut(&mut Job<'_>) -> Outcome + Send + 'static,
{
    fn work(&mut self, job: &mut Job<'_>) -> Outcome {
        self(job)
    }
}

/// Where a worker pool connects.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The stage proxy's downstream endpoint.
    pub upstream: String,
    /// The next stage proxy's upstream endpoint, if there is a next stage.
    pub downstream: Option<String>,
    /// The front end's loopback.
    pub loopback: String,
    /// The front end's interrupt publisher.
    pub interrupt: String,
    /// How often idle workers (and the pool, for busy ones) tell the proxy they live.
    pub heartbeat_interval: Duration,
    /// How many jobs each worker may hold at once (its credit at the proxy). With more
    /// than one, a worker finds its next job already waiting and saves two wake-ups per
    /// job, which matters when jobs are cheap; jobs that wait behind a long one are
    /// handed back to the proxy after [`rescue_after`](WorkerConfig::rescue_after), so
    /// uneven work still spreads over the pool, and the proxy gives each job to the idle
    /// worker holding the fewest. The default is [`DEFAULT_PREFETCH`] (32); 1 never
    /// holds a job that another worker could start.
    pub prefetch: u32,
    /// How long a worker may run one job before the jobs waiting behind it are handed
    /// back to the proxy for other workers (only with `prefetch` above 1). The pool's
    /// heartbeat thread checks this often, so it wakes every `rescue_after`.
    pub rescue_after: Duration,
    /// Stages reachable by name with [`Outcome::ForwardTo`]: (name, that stage proxy's
    /// upstream endpoint).
    pub routes: Vec<(String, String)>,
}

impl WorkerConfig {
    /// A configuration with the default heartbeat interval (250 ms).
    pub fn new(
        upstream: impl Into<String>,
        downstream: Option<String>,
        loopback: impl Into<String>,
        interrupt: impl Into<String>,
    ) -> Self {
        WorkerConfig {
            upstream: upstream.into(),
            downstream,
            loopback: loopback.into(),
            interrupt: interrupt.into(),
            heartbeat_interval: Duration::from_millis(250),
            prefetch: DEFAULT_PREFETCH,
            rescue_after: Duration::from_millis(2),
            routes: Vec::new(),
        }
    }
}

/// The threads of one running pool. Stop them with the [`Shutdown`] given at spawn, then
/// [`join`](WorkerPool::join).
pub struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// What a pool's workers have done, counted as they go.
#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    panicked: AtomicU64,
    skipped: AtomicU64,
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Jobs received and handled (including failed and skipped ones).
    pub completed: u64,
    /// Jobs whose stage function panicked.
    pub panicked: u64,
    /// Jobs skipped because they were interrupted before they started.
    pub skipped: u64,
}

impl WorkerPool {
    /// Starts `count` workers, each with its own clone of `work`, plus the pool's
    /// heartbeat thread. `name` is the stage's name: it labels threads and log lines
    /// and the workers' self-test reports, so it should be the name routes and the
    /// front end know the stage by.
    pub fn spawn<W: Work + Clone>(
        ctx: &zmq::Context,
        name: &str,
        config: &WorkerConfig,
        count: usize,
        work: W,
        shutdown: &Shutdown,
    ) -> Result<WorkerPool> {
        if count == 0 {
            return Err(Error::Config(format!(
                "stage {name:?} needs at least one worker"
            )));
        }
        let pool_id = crate::pipeline::envelope::random_u64();
        let counters = Arc::new(Counters::default());
        let mut members = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count + 1);
        let running = Arc::new(AtomicUsize::new(count));
        let doze = Arc::new(Doze::default());
        for index in 0..count {
            let id = format!("{name}-{pool_id:016x}-{index}").into_bytes();
            let mut worker = WorkerLoop::connect(ctx, id, config, work.clone(), shutdown)?;
            worker.stage = name.to_string();
            worker.counters = counters.clone();
            worker.doze = doze.clone();
            members.push(worker.member.clone());
            let ended = WorkerEnded(running.clone());
            threads.push(spawn_thread(format!("{name}-{index}"), move || {
                worker.run();
                drop(ended);
            })?);
        }
        let watch = ProxyWatch::connect(
            ctx,
            &format!("{name}-{pool_id:016x}"),
            &config.upstream,
            &config.interrupt,
            &config.loopback,
            holdings(members.clone()),
        )?;
        let (watch_shutdown, watch_running) = (shutdown.clone(), running.clone());
        let beat = PoolHeartbeat::connect(ctx, config, members, running, doze, shutdown)?;
        threads.push(spawn_thread(format!("{name}-heartbeat"), move || {
            beat.run()
        })?);
        threads.push(spawn_thread(format!("{name}-watch"), move || {
            let shutdown = watch_shutdown.clone();
            watch.run(&watch_shutdown, || {
                shutdown.is_draining() && watch_running.load(Ordering::SeqCst) == 0
            })
        })?);
        Ok(WorkerPool { threads, counters })
    }

    /// What the pool's workers have done so far.
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            completed: self.counters.completed.load(Ordering::Relaxed),
            panicked: self.counters.panicked.load(Ordering::Relaxed),
            skipped: self.counters.skipped.load(Ordering::Relaxed),
        }
    }

    /// Whether every thread of the pool has ended (after a drain or a stop).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every thread of the pool to end.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// What a pool's workers run, for a census: (nonce, request id) of each busy one's job.
fn holdings(members: Vec<Arc<Member>>) -> Holdings {
    Arc::new(move || {
        members
            .iter()
            .filter(|m| m.busy.load(Ordering::Acquire))
            .map(|m| {
                let request = m.running_request.load(Ordering::Acquire);
                (m.running_nonce.load(Ordering::Relaxed), request)
            })
            .collect()
    })
}

fn spawn_thread(name: String, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .map_err(Error::Thread)
}

/// The interrupts a worker has heard of, and the socket it hears them on.
pub(crate) struct InterruptWatch {
    subscriber: zmq::Socket,
    heard: RefCell<InterruptSet>,
    /// When the socket was last read: reading an empty socket costs a system call, so it
    /// is read at most every [`INTERRUPT_READ_INTERVAL`] (microseconds since the Unix
    /// epoch).
    last_read: Cell<u64>,
    shutdown: Shutdown,
}

/// How stale a worker's knowledge of interrupts may be.
const INTERRUPT_READ_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Default)]
struct InterruptSet {
    requests: FastSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    nonces_shut: FastSet<u64>,
}

impl InterruptSet {
    fn record(&mut self, interrupt: Interrupt) {
        match interrupt.reason {
            InterruptReason::ShuttingDown => {
                self.nonces_shut.insert(interrupt.nonce);
                return;
            }
            // A census call names a census, not a request.
            InterruptReason::Census => return,
            _ => {}
        }
        let key = (interrupt.nonce, interrupt.request_id);
        if self.requests.insert(key) {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED_INTERRUPTS {
            if let Some(old) = self.order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    fn covers(&self, envelope: &Envelope) -> bool {
        self.requests
            .contains(&(envelope.nonce, envelope.request_id))
            || self.nonces_shut.contains(&envelope.nonce)
    }
}

impl InterruptWatch {
    fn connect(ctx: &zmq::Context, endpoint: &str, shutdown: &Shutdown) -> Result<Self> {
        let subscriber = sockets::socket(ctx, zmq::SUB)?;
        subscriber
            .set_subscribe(b"")
            .map_err(|e| Error::zmq("subscribing to interrupts", e))?;
        sockets::connect(&subscriber, endpoint)?;
        Ok(InterruptWatch {
            subscriber,
            heard: RefCell::default(),
            last_read: Cell::new(crate::pipeline::envelope::now_us()),
            shutdown: shutdown.clone(),
        })
    }

    /// Reads every interrupt waiting on the socket.
    fn drain(&self) {
        let mut heard = self.heard.borrow_mut();
        while let Ok(frame) = self.subscriber.recv_msg(zmq::DONTWAIT) {
            match Interrupt::decode(&frame) {
                Ok(interrupt) => heard.record(interrupt),
                Err(e) => log::warn!("ignoring a malformed interrupt: {e}"),
            }
        }
    }

    fn is_interrupted(&self, envelope: &Envelope) -> bool {
        // One clock read serves both checks (the wall clock, which deadlines use). A
        // clock that stepped back reads at once rather than waiting for it to catch up.
        let now_us = crate::pipeline::envelope::now_us();
        let last = self.last_read.get();
        if now_us < last || now_us - last >= INTERRUPT_READ_INTERVAL.as_micros() as u64 {
            self.last_read.set(now_us);
            self.drain();
        }
        self.shutdown.is_triggered()
            || envelope.is_expired(now_us)
            || self.heard.borrow().covers(envelope)
    }
}

/// Lets the pool's heartbeat thread sleep through idle periods: it checks for long jobs
/// every [`WorkerConfig::rescue_after`] only while the pool works, and a worker starting
/// a job wakes it when it dozes.
#[derive(Default)]
struct Doze {
    /// Whether the heartbeat thread is asleep until its next beat.
    dozing: AtomicBool,
    /// The heartbeat thread, once it runs.
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Doze {
    /// Called by a worker that has just marked itself busy.
    fn job_started(&self) {
        // SeqCst pairs with the heartbeat thread's store of `dozing` and its load of the
        // busy flags: either it sees this worker busy, or this sees it dozing.
        if self.dozing.load(Ordering::SeqCst) && self.dozing.swap(false, Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }
}

/// What one worker thread shares with its pool's heartbeat thread.
struct Member {
    /// The worker's id at the proxy.
    id: Vec<u8>,
    /// Whether the worker is running a job.
    busy: AtomicBool,
    /// How many jobs the worker has started: the same count seen twice while busy means
    /// one job has run for a whole check interval.
    started: AtomicU64,
    /// The nonce and request id of the job it runs (meaningful while `busy`), for a
    /// census. Two words, not read together: a census that reads them torn misses the
    /// job once, and the census's second round counts it.
    running_nonce: AtomicU64,
    running_request: AtomicU64,
    /// The worker's job socket. The worker locks it to wait for a job and to say READY;
    /// while the worker runs a long job, the heartbeat thread locks it to take the jobs
    /// queued behind that one and hand them back to the proxy.
    jobs: Mutex<zmq::Socket>,
}

impl Member {
    fn jobs(&self) -> std::sync::MutexGuard<'_, zmq::Socket> {
        // Nothing panics while holding the lock (user code runs outside it), and a
        // socket has no invariant a panic could break anyway.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The job socket, unless the worker holds it.
    fn try_jobs(&self) -> Option<std::sync::MutexGuard<'_, zmq::Socket>> {
        match self.jobs.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// One worker thread's sockets and state.
struct WorkerLoop<W> {
    member: Arc<Member>,
    work: W,
    /// The stage's name, for self-test reports.
    stage: String,
    next_stage: Option<zmq::Socket>,
    /// The route name of the next stage, when a route has its endpoint.
    next_name: Option<String>,
    routes: Vec<(String, zmq::Socket)>,
    loopback: zmq::Socket,
    watch: InterruptWatch,
    completed: u64,
    heartbeat_interval: Duration,
    prefetch: u32,
    counters: Arc<Counters>,
    doze: Arc<Doze>,
    /// Emptied frame vectors, reused for the next jobs received.
    spare: sockets::SpareFrames,
}

impl<W: Work> WorkerLoop<W> {
    fn connect(
        ctx: &zmq::Context,
        id: Vec<u8>,
        config: &WorkerConfig,
        work: W,
        shutdown: &Shutdown,
    ) -> Result<Self> {
        let jobs = sockets::socket(ctx, zmq::DEALER)?;
        jobs.set_identity(&id)
            .map_err(|e| Error::zmq("setting the worker id", e))?;
        sockets::connect(&jobs, &config.upstream)?;
        let next_stage = match &config.downstream {
            Some(endpoint) => {
                let dealer = sockets::stage_sender(ctx)?;
                sockets::connect(&dealer, endpoint)?;
                Some(dealer)
            }
            None => None,
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for (name, endpoint) in &config.routes {
            let dealer = sockets::stage_sender(ctx)?;
            sockets::connect(&dealer, endpoint)?;
            routes.push((name.clone(), dealer));
        }
        let loopback = sockets::socket(ctx, zmq::PUSH)?;
        // Answers are sent DONTWAIT, so a full pipe would drop them silently; their number
        // is bounded by the requests in flight, so the pipe need not be.
        loopback
            .set_sndhwm(0)
            .map_err(|e| Error::zmq("lifting the loopback's high-water mark", e))?;
        sockets::connect(&loopback, &config.loopback)?;
        let next_name = config.downstream.as_ref().and_then(|down| {
            let named = config.routes.iter().find(|(_, endpoint)| endpoint == down);
            named.map(|(name, _)| name.clone())
        });
        Ok(WorkerLoop {
            stage: String::new(),
            next_name,
            routes,
            member: Arc::new(Member {
                id,
                busy: AtomicBool::new(false),
                started: AtomicU64::new(0),
                running_nonce: AtomicU64::new(0),
                running_request: AtomicU64::new(0),
                jobs: Mutex::new(jobs),
            }),
            work,
            next_stage,
            loopback,
            watch: InterruptWatch::connect(ctx, &config.interrupt, shutdown)?,
            completed: 0,
            heartbeat_interval: config.heartbeat_interval,
            prefetch: config.prefetch.max(1),
            counters: Arc::default(),
            doze: Arc::default(),
            spare: sockets::SpareFrames::default(),
        })
    }

    fn run(mut self) {
        // Blocking on the one job socket (with a timeout for heartbeats) costs one system
        // call per wait; zmq_poll over two sockets costs several.
        let wait = self.heartbeat_interval.min(POLL_CAP).as_millis().max(1) as i32;
        if let Err(e) = self.member.jobs().set_rcvtimeo(wait) {
            log::error!("worker {}: {e}; stopping", self.name());
            return;
        }
        self.send_ready();
        let mut next_beat = Instant::now() + self.heartbeat_interval;
        // Jobs finished since the last READY. Credit comes back in batches: while jobs
        // are queued here, READY goes after every `batch` jobs (half the credit, so the
        // proxy refills the queue before it runs dry), and at once when the queue is
        // empty, so the proxy never waits on credit this worker has free.
        let batch = u64::from(self.prefetch.div_ceil(2));
        let mut unreported = 0u64;
        while !self.watch.shutdown.is_draining() {
            let flags = if unreported > 0 { zmq::DONTWAIT } else { 0 };
            let received = self.spare.recv(&self.member.jobs(), flags);
            match received {
                Ok(frames) => {
                    self.run_job(frames);
                    self.completed += 1;
                    unreported += 1;
                    if unreported >= batch {
                        unreported = 0;
                        self.send_ready();
                        next_beat = Instant::now() + self.heartbeat_interval;
                    }
                }
                Err(zmq::Error::EAGAIN) if unreported > 0 => {
                    unreported = 0;
                    self.send_ready();
                    next_beat = Instant::now() + self.heartbeat_interval;
                }
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => self.watch.drain(),
                Err(e) => {
                    log::error!("worker {}: {e}; stopping", self.name());
                    return;
                }
            }
            if Instant::now() >= next_beat {
                self.send_ready();
                next_beat = Instant::now() + self.heartbeat_interval;
            }
        }
        self.leave();
    }

    /// Handles one job, flagged busy for the pool's heartbeat thread meanwhile.
    fn run_job(&mut self, frames: Vec<zmq::Message>) {
        self.member.started.fetch_add(1, Ordering::Release);
        self.member.busy.store(true, Ordering::SeqCst);
        self.doze.job_started();
        self.handle(frames);
        self.member.busy.store(false, Ordering::Release);
    }

    /// Says goodbye to the proxy and finishes the jobs already sent to this worker,
    /// including those the proxy sent before it read the goodbye: the worker stops once
    /// none has come for [`LEAVE_QUIET`].
    fn leave(&mut self) {
        if let Err(e) = self.member.jobs().send(GOODBYE, zmq::DONTWAIT) {
            log::debug!("worker {}: goodbye not sent: {e}", self.name());
        }
        let quiet = LEAVE_QUIET.as_millis() as i32;
        if let Err(e) = self.member.jobs().set_rcvtimeo(quiet) {
            log::debug!("worker {}: {e}", self.name());
        }
        while !self.watch.shutdown.is_triggered() {
            let received = sockets::recv_frames(&self.member.jobs(), 0);
            match received {
                Ok(frames) => self.run_job(frames),
                Err(_) => break,
            }
        }
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(&self.member.id).into_owned()
    }

    fn send_ready(&self) {
        let ready = crate::pipeline::wire::ready_frame(self.completed, self.prefetch);
        // The payload frame is left out when empty (the usual case): a frame fewer to
        // send and to read for every job.
        let payload = self.work.heartbeat();
        let frames = std::iter::once(zmq::Message::from(&ready[..]))
            .chain((!payload.is_empty()).then(|| zmq::Message::from(payload)));
        if let Err(e) = sockets::send_frames(&self.member.jobs(), frames, zmq::DONTWAIT) {
            log::debug!("worker {}: READY not sent: {e}", self.name());
        }
    }

    fn handle(&mut self, frames: Vec<zmq::Message>) {
        self.counters.completed.fetch_add(1, Ordering::Relaxed);
        let Some(lead) = frames.first() else {
            return;
        };
        let decoded = Envelope::decode_lead(lead).map(|(envelope, first)| {
            let mut encoded = [0u8; ENVELOPE_LEN];
            encoded.copy_from_slice(&lead[..ENVELOPE_LEN]);
            (envelope, encoded, first)
        });
        let (envelope, encoded) = match decoded {
            Ok((envelope, encoded, first)) if envelope.probe => {
                if !self.watch.is_interrupted(&envelope) {
                    self.answer_probe(&encoded, first);
                }
                return;
            }
            Ok((envelope, encoded, _)) => (envelope, encoded),
            Err(e) => {
                log::warn!(
                    "worker {}: dropped a job with a bad envelope: {e}",
                    self.name()
                );
                return;
            }
        };
        if self.watch.is_interrupted(&envelope) {
            log::debug!(
                "request {}: interrupted before it started",
                envelope.request_id
            );
            return;
        }
        self.member
            .running_nonce
            .store(envelope.nonce, Ordering::Relaxed);
        self.member
            .running_request
            .store(envelope.request_id, Ordering::Release);
        let mut job = Job {
            envelope,
            encoded,
            frames,
            lead_given: false,
            reply_made: Cell::new(false),
            watch: &self.watch,
            loopback: &self.loopback,
        };
        let work = &mut self.work;
        let outcome = catch_unwind(AssertUnwindSafe(|| work.work(&mut job)));
        let outcome = outcome.unwrap_or_else(|panic| {
            self.counters.panicked.fetch_add(1, Ordering::Relaxed);
            let why = panic_message(&panic);
            log::error!(
                "request {}: the stage function panicked: {why}",
                envelope.request_id
            );
            Outcome::Fail(Failure::new(
                FailureKind::WorkerPanicked,
                "the worker failed on this request",
            ))
        });
        let outcome = match outcome {
            Outcome::Respond(frame)
                if !(job.reply_made.get() && is_response_frame(&frame, &encoded)) =>
            {
                let [frame] = response_frames(&encoded, &frame);
                Outcome::Respond(frame)
            }
            Outcome::Forward(frames) => Outcome::Forward(job.lead_frames(frames)),
            Outcome::ForwardTo(stage, frames) => Outcome::ForwardTo(stage, job.lead_frames(frames)),
            other => other,
        };
        let frames = std::mem::take(&mut job.frames);
        drop(job);
        self.spare.give_back(frames);
        self.deliver(&encoded, &envelope, outcome);
        if catch_unwind(AssertUnwindSafe(|| self.work.cleanup())).is_err() {
            log::error!("worker {}: the cleanup function panicked", self.name());
        }
    }

    /// A self-test probe: runs the stage's self-test, sends the probe on to every
    /// stage this worker reaches that nobody has claimed, and reports on the loopback.
    fn answer_probe(&mut self, encoded: &[u8; ENVELOPE_LEN], path: &[u8]) {
        let path = ProbePath::decode(path).unwrap_or_default();
        let work = &mut self.work;
        let tested = catch_unwind(AssertUnwindSafe(|| work.selftest())).unwrap_or_else(|panic| {
            Err(format!("the self-test panicked: {}", panic_message(&panic)))
        });
        let mut report = StageReport {
            stage: self.stage.clone(),
            worker: self.name(),
            ok: tested.is_ok(),
            error: tested.err(),
            from: path.from.clone(),
            via_next: path.via_next,
            forwarded: Vec::new(),
            next: false,
        };
        if path.hops < MAX_HOPS {
            let mut claimed = path.claimed.clone();
            if !claimed.contains(&self.stage) {
                claimed.push(self.stage.clone());
            }
            let targets: Vec<usize> = (0..self.routes.len())
                .filter(|&i| !claimed.contains(&self.routes[i].0))
                .collect();
            claimed.extend(targets.iter().map(|&i| self.routes[i].0.clone()));
            let onward = |via_next: bool| {
                let path = ProbePath {
                    claimed: claimed.clone(),
                    from: Some(self.stage.clone()),
                    via_next,
                    hops: path.hops + 1,
                };
                [lead_frame(encoded, &path.encode())]
            };
            for &i in &targets {
                let (name, socket) = &self.routes[i];
                match sockets::send_frames(socket, onward(false), zmq::DONTWAIT) {
                    Ok(()) => report.forwarded.push(name.clone()),
                    Err(e) => log::debug!("self-test: the probe not sent to {name:?}: {e}"),
                }
            }
            if let (Some(next), None) = (&self.next_stage, &self.next_name) {
                match sockets::send_frames(next, onward(true), zmq::DONTWAIT) {
                    Ok(()) => report.next = true,
                    Err(e) => log::debug!("self-test: the probe not sent to the next stage: {e}"),
                }
            }
        }
        let frames = selftest_frames(encoded, &report);
        if let Err(e) = sockets::send_frames(&self.loopback, frames, zmq::DONTWAIT) {
            log::warn!("worker {}: self-test report not sent: {e}", self.name());
        }
    }

    /// Sends a job's outcome on: a forwarded job's frames already start with their lead
    /// frame (see [`Job::lead_frames`]).
    fn deliver(&self, encoded: &[u8; ENVELOPE_LEN], envelope: &Envelope, outcome: Outcome) {
        let request = envelope.request_id;
        let failure = match outcome {
            Outcome::Forward(frames) => match &self.next_stage {
                Some(next) => match forward(next, frames) {
                    Ok(()) => return,
                    Err(failure) => failure,
                },
                None => {
                    log::error!("request {request}: forwarded from the last stage");
                    let detail = "the pipeline has no next stage";
                    Failure::new(FailureKind::WorkerPanicked, detail)
                }
            },
            Outcome::ForwardTo(stage, frames) => {
                match self.routes.iter().find(|(name, _)| *name == stage) {
                    Some((_, socket)) => match forward(socket, frames) {
                        Ok(()) => return,
                        Err(failure) => failure,
                    },
                    None => {
                        log::error!("request {request}: forwarded to unknown stage {stage:?}");
                        let detail = format!("the pipeline has no stage named {stage:?}");
                        Failure::new(FailureKind::WorkerPanicked, detail)
                    }
                }
            }
            Outcome::Respond(frame) => {
                // Already the whole lead frame (see `handle`).
                let frames = [frame];
                if let Err(e) = sockets::send_frames(&self.loopback, frames, zmq::DONTWAIT) {
                    log::warn!("request {request}: answer not sent to the loopback: {e}");
                }
                return;
            }
            Outcome::Fail(failure) => failure,
            Outcome::Abandon => return,
            Outcome::Later(head, body) => {
                let frames = later_frames(encoded, head, body);
                if let Err(e) = sockets::send_frames(&self.loopback, frames, zmq::DONTWAIT) {
                    log::warn!("request {request}: answer-later not sent to the loopback: {e}");
                }
                return;
            }
        };
        let frames = failure_frames(encoded, &failure);
        if let Err(e) = sockets::send_frames(&self.loopback, frames, zmq::DONTWAIT) {
            log::warn!("request {request}: failure not sent to the loopback: {e}");
        }
    }
}

/// Sends a job (its lead frame first) on to a stage's proxy without blocking.
fn forward(socket: &zmq::Socket, frames: Vec<zmq::Message>) -> std::result::Result<(), Failure> {
    sockets::send_frames(socket, frames, zmq::DONTWAIT).map_err(|e| {
        log::warn!("a stage is unavailable: {e}");
        Failure::new(
            FailureKind::NextStageUnavailable,
            "the next stage is unavailable",
        )
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Counts a worker thread out of its pool's running ones when the thread ends, however
/// it ends.
struct WorkerEnded(Arc<AtomicUsize>);

impl Drop for WorkerEnded {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The pool's heartbeat thread: lists its busy workers to the proxy every interval, and
/// hands back to the proxy the jobs waiting behind a long one (see
/// [`WorkerConfig::rescue_after`]).
struct PoolHeartbeat {
    socket: zmq::Socket,
    members: Vec<Arc<Member>>,
    /// How many of the pool's worker threads have not ended yet.
    running: Arc<AtomicUsize>,
    interval: Duration,
    /// How often to look for long jobs; `None` when workers hold one job at a time.
    rescue_every: Option<Duration>,
    doze: Arc<Doze>,
    shutdown: Shutdown,
}

/// How many checks in a row must find every worker idle before the heartbeat thread
/// sleeps until its next beat (so a steady light load does not wake it per job).
const IDLE_CHECKS_BEFORE_DOZING: u32 = 50;

impl PoolHeartbeat {
    fn connect(
        ctx: &zmq::Context,
        config: &WorkerConfig,
        members: Vec<Arc<Member>>,
        running: Arc<AtomicUsize>,
        doze: Arc<Doze>,
        shutdown: &Shutdown,
    ) -> Result<Self> {
        // Handed-back jobs go through this socket too, so its pipe holds as many as a
        // stage sender's.
        let socket = sockets::stage_sender(ctx)?;
        sockets::connect(&socket, &config.upstream)?;
        let rescue_every = (config.prefetch > 1).then(|| {
            config
                .rescue_after
                .clamp(Duration::from_micros(100), config.heartbeat_interval)
        });
        Ok(PoolHeartbeat {
            socket,
            members,
            running,
            interval: config.heartbeat_interval,
            rescue_every,
            doze,
            shutdown: shutdown.clone(),
        })
    }

    /// Whether the beat should end: at a stop, or in a drain once every worker has ended.
    fn is_over(&self) -> bool {
        self.shutdown.is_triggered()
            || (self.shutdown.is_draining() && self.running.load(Ordering::SeqCst) == 0)
    }

    fn run(self) {
        let _ = self.doze.thread.set(std::thread::current());
        let mut next_beat = Instant::now();
        let mut next_check = self.rescue_every.map(|every| Instant::now() + every);
        // Per worker: the started count of the job it was running at the last check.
        let mut running_at_check: Vec<Option<u64>> = vec![None; self.members.len()];
        let mut idle_checks = 0u32;
        // A drain does not stop the beat: a worker finishing its last job says goodbye
        // only after it, and until then the proxy would take its silence for a death and
        // answer the job 503. The beat ends with the last worker, or at a stop.
        while !self.is_over() {
            let now = Instant::now();
            let next = next_check.map_or(next_beat, |check| check.min(next_beat));
            if now < next {
                std::thread::park_timeout((next - now).min(POLL_CAP));
                continue;
            }
            if let (Some(check), Some(every)) = (next_check, self.rescue_every) {
                if now >= check {
                    let any_busy = self.rescue(&mut running_at_check);
                    idle_checks = if any_busy {
                        0
                    } else {
                        idle_checks.saturating_add(1)
                    };
                    next_check = Some(now + every);
                    // Once idle long enough, doze between beats until a job starts.
                    if idle_checks >= IDLE_CHECKS_BEFORE_DOZING && self.doze_until(next_beat) {
                        next_check = Some(Instant::now() + every);
                    }
                }
            }
            if now >= next_beat {
                next_beat = now + self.interval;
                self.beat();
            }
        }
    }

    /// Sleeps until `until` unless a worker starts a job first; false if one already
    /// runs (then it does not sleep).
    fn doze_until(&self, until: Instant) -> bool {
        self.doze.dozing.store(true, Ordering::SeqCst);
        if self.members.iter().any(|m| m.busy.load(Ordering::SeqCst)) {
            self.doze.dozing.store(false, Ordering::SeqCst);
            return false;
        }
        while self.doze.dozing.load(Ordering::SeqCst) && !self.is_over() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left.min(POLL_CAP));
        }
        self.doze.dozing.store(false, Ordering::SeqCst);
        true
    }

    /// Tells the proxy which workers are running a job, so it does not take their
    /// silence for death.
    fn beat(&self) {
        let busy = self
            .members
            .iter()
            .filter(|member| member.busy.load(Ordering::Acquire))
            .map(|member| zmq::Message::from(&member.id[..]));
        let frames: Vec<zmq::Message> = std::iter::once(BUSY.into()).chain(busy).collect();
        if frames.len() > 1 {
            let _ = sockets::send_frames(&self.socket, frames, zmq::DONTWAIT);
        }
    }

    /// Hands back the jobs queued behind any job that has run since the last check;
    /// says whether any worker is busy.
    fn rescue(&self, running_at_check: &mut [Option<u64>]) -> bool {
        let mut any_busy = false;
        for (member, seen) in self.members.iter().zip(running_at_check.iter_mut()) {
            let running = member
                .busy
                .load(Ordering::Acquire)
                .then(|| member.started.load(Ordering::Acquire));
            any_busy |= running.is_some();
            if running.is_some() && running == *seen && !self.shutdown.is_draining() {
                self.hand_back(member);
            }
            *seen = running;
        }
        any_busy
    }

    /// Takes the jobs waiting in a busy worker's socket and returns them to the proxy,
    /// which gives them to other workers (or queues them, first in line).
    fn hand_back(&self, member: &Member) {
        let Some(jobs) = member.try_jobs() else {
            return;
        };
        let mut taken = Vec::new();
        while let Ok(frames) = sockets::recv_frames(&jobs, zmq::DONTWAIT) {
            taken.push(frames);
        }
        drop(jobs);
        if taken.is_empty() {
            return;
        }
        log::debug!(
            "worker {}: handing {} queued jobs back to the proxy",
            String::from_utf8_lossy(&member.id),
            taken.len()
        );
        // Newest first: the proxy puts each at the head of its queue, so the oldest ends
        // up first in line.
        for frames in taken.into_iter().rev() {
            let message = [
                zmq::Message::from(RETURN),
                zmq::Message::from(&member.id[..]),
            ]
            .into_iter()
            .chain(frames);
            if let Err(e) = sockets::send_frames(&self.socket, message, zmq::DONTWAIT) {
                log::warn!("a job handed back to the proxy was lost: {e}");
            }
        }
    }
}
