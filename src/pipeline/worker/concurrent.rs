//! A worker thread that holds many jobs at once: for stages whose jobs mostly wait on
//! the network (a gateway's backend calls), where one blocked thread per job would cost
//! a thread, its stack and two context switches per call.
//!
//! The thread runs at most N jobs at once (its share of the stage's calls in flight):
//! it takes every job that arrives while it holds fewer than N, and starts each with
//! [`ConcurrentWork::start`], which may answer at once or hold the job. Its credit at
//! the proxy (READY, as any worker's) is [`PREFETCH_PER_CALL`] times N: the jobs beyond
//! the N it runs wait in its socket, and the next one starts in the turn of the loop
//! that ends a call, instead of after a READY to the proxy and the job's trip back.
//! While it runs N it neither reads nor watches its socket (a job it could not start
//! would only wake it), and READY goes every quarter of the credit, or at once when it
//! holds nothing. Held jobs make progress only inside [`ConcurrentWork::wait`], which
//! the loop calls with the job socket's file descriptor, so that the thread sleeps
//! until a job arrives, a held job finishes, or the next tick. Each finished job's
//! outcome goes on as any worker's would (loopback or next stage); a READY gives its
//! credit back.
//!
//! What the pipeline guarantees stays: the thread never runs more than N jobs at once
//! (the bound on calls in flight) and the proxy never hands it more than its credit; a
//! job that waited in the socket gets the loop's usual checks when it starts (one whose
//! client has gone or whose deadline has passed is skipped then, as any worker skips
//! it). Every tick ([`INTERRUPT_TICK`]) the loop asks the interrupts about every held
//! job and aborts those whose client has gone, whose deadline has passed, or whose
//! front end stops ([`ConcurrentWork::abort`]); the thread sends READY each heartbeat
//! interval even while it holds jobs, and is listed busy by its pool's heartbeat
//! thread; a census lists every job it holds (not those waiting in its socket, as with
//! any worker's jobs taken ahead: a lost proxy's census answers them 503). Its pool
//! hands nothing back: a job waits in the socket only behind N running ones, and with
//! several threads one that waits at a thread does not move to another with room (the
//! price of the credit ahead; one thread, the default, loses nothing by it).
//!
//! A pool of one such thread in one process may run its stage's proxy too
//! ([`HostedProxy`], given by [`ConcurrentLoop::hosting`]): each turn of the loop
//! starts with the proxy's turn (the READY sent last turn, the jobs it hands out), and
//! the loop watches the proxy's socket rather than its own, which only that turn
//! feeds; a job from the front end then wakes this thread alone. The proxy hands this
//! thread's jobs over in memory and takes its READY in memory too
//! ([`HostedProxy::hand_to`]): no message between two sockets of one thread, and no
//! signal it would send to itself.

use super::shared::Member;
use super::worker_loop::WorkerLoop;
use super::{Job, Outcome, Work};
use crate::base::shutdown::POLL_CAP;
use crate::pipeline::envelope::{lead_frame, Envelope, ENVELOPE_LEN};
use crate::pipeline::loopback::{
    lead_response_in_place, response_frames, Failure, FailureKind, RESPONSE_START,
};
use crate::pipeline::proxy::HostedProxy;
use crate::pipeline::wire::GOODBYE;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the loop asks the interrupts about the jobs it holds: the most an aborted
/// job runs on after its client has gone.
pub const INTERRUPT_TICK: Duration = Duration::from_millis(20);

/// The room an [`Outcome::Respond`] from [`ConcurrentWork::wait`] leaves before the
/// client's bytes: the loop writes the job's envelope and the answer's tag there, so an
/// answer is copied once, into the frame that travels, rather than made and then copied
/// again behind its lead (see [`answer_frame`]).
pub const ANSWER_ROOM: usize = RESPONSE_START;

/// An answer for [`ConcurrentWork::wait`]: the client's `bytes`, copied once into a
/// frame behind [`ANSWER_ROOM`] bytes of room.
pub fn answer_frame(bytes: &[u8]) -> zmq::Message {
    zmq::Message::concat(&[0; ANSWER_ROOM], &[bytes])
}

/// How many jobs a concurrent thread's credit at its proxy holds per job it may run at
/// once: those beyond the running ones wait in its socket, so that one starts as soon
/// as a running one ends (see the module docs). 4: with `prime_gatewayd 8`, as many
/// jobs as 32 clients send at once.
pub(super) const PREFETCH_PER_CALL: u32 = 4;

/// How long a leaving worker waits for jobs the proxy sent before it read the goodbye.
const LEAVE_QUIET: Duration = Duration::from_millis(100);

/// A stage's work that holds many jobs at once on one thread (see the module docs and
/// [`crate::Pipeline::concurrent_stage`]). Each worker thread gets its own clone.
pub trait ConcurrentWork: Send + 'static {
    /// Starts `job`. `Some(outcome)` answers it at once (a malformed request, say);
    /// `None` holds it: its outcome comes back later from [`wait`](Self::wait) under
    /// `ticket`, or never once [`abort`](Self::abort)ed. Only the job's frames and
    /// envelope outlive this call (as copies the work keeps).
    fn start(&mut self, job: &mut Job<'_>, ticket: u64) -> Option<Outcome>;

    /// Lets the held jobs progress until a job may be waiting on the socket whose file
    /// descriptor is `jobs` (libzmq's `ZMQ_FD`, which signals a change, not a level:
    /// the loop reads the socket until it is empty before each wait; the job socket's,
    /// or the proxy's when the thread runs it, see [`HostedProxy`]), a held job
    /// finishes, or `timeout` passes; then puts each finished job's ticket and outcome
    /// on `finished`. With `jobs` `None` (no credit left) only the other two end it.
    /// An [`Outcome::Respond`] given here starts with [`ANSWER_ROOM`] bytes of room
    /// for the job's lead, then the client's bytes (as [`answer_frame`] makes it, or
    /// written so in place); the other outcomes are as [`Work::work`] gives them.
    fn wait(&mut self, jobs: Option<RawFd>, timeout: Duration, finished: &mut Vec<(u64, Outcome)>);

    /// Drops the held job `ticket` (its client has gone, its deadline has passed, or
    /// the worker stops): its work stops, and its outcome is never asked for.
    fn abort(&mut self, ticket: u64);

    /// Checks what the stage depends on, for the front end's self-test (see
    /// [`Work::selftest`]). Passes by default.
    fn selftest(&mut self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// A job held by the work: what its outcome needs to go on.
struct Held {
    envelope: Envelope,
    encoded: [u8; ENVELOPE_LEN],
}

/// Lets the worker loop's own code take a [`ConcurrentWork`]'s jobs: checks before a
/// job starts, panics, probes and delivery of answers given at once. A held job's
/// [`Work::work`] returns [`Outcome::Abandon`] (nothing to send yet) and leaves the job
/// in `started` for the concurrent loop.
pub(super) struct Holder<C> {
    pub(super) work: C,
    /// The next ticket to give.
    next_ticket: u64,
    /// The job the last [`Work::work`] held, with its ticket.
    started: Option<(u64, Held)>,
}

impl<C: Clone> Clone for Holder<C> {
    fn clone(&self) -> Self {
        Holder::new(self.work.clone())
    }
}

impl<C> Holder<C> {
    pub(super) fn new(work: C) -> Self {
        Holder {
            work,
            next_ticket: 0,
            started: None,
        }
    }
}

impl<C: ConcurrentWork> Work for Holder<C> {
    fn work(&mut self, job: &mut Job<'_>) -> Outcome {
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        match self.work.start(job, ticket) {
            Some(outcome) => outcome,
            None => {
                let held = Held {
                    envelope: *job.envelope(),
                    encoded: job.encoded,
                };
                self.started = Some((ticket, held));
                Outcome::Abandon
            }
        }
    }

    fn selftest(&mut self) -> std::result::Result<(), String> {
        self.work.selftest()
    }
}

/// One concurrent worker thread: the worker loop's sockets and state, and the jobs it
/// holds.
pub(super) struct ConcurrentLoop<C> {
    pub(super) inner: WorkerLoop<Holder<C>>,
    held: crate::base::fast_hash::FastMap<u64, Held>,
    /// The most jobs it runs (holds) at once.
    calls: usize,
    finished: Vec<(u64, Outcome)>,
    /// The stage's proxy, when this thread runs it (see [`HostedProxy`]).
    proxy: Option<HostedProxy>,
    /// Jobs the hosted proxy handed over in memory and this thread has not started,
    /// kept once the proxy no longer runs here (the thread is leaving).
    handed: std::collections::VecDeque<Vec<zmq::Message>>,
}

impl<C: ConcurrentWork> ConcurrentLoop<C> {
    pub(super) fn new(inner: WorkerLoop<Holder<C>>) -> Self {
        let calls = (inner.prefetch / PREFETCH_PER_CALL).max(1) as usize;
        ConcurrentLoop {
            inner,
            held: Default::default(),
            calls,
            finished: Vec::new(),
            proxy: None,
            handed: Default::default(),
        }
    }

    /// Makes this thread run the stage's proxy too (its pool's only thread).
    pub(super) fn hosting(mut self, mut proxy: Option<HostedProxy>) -> Self {
        if let Some(proxy) = &mut proxy {
            proxy.hand_to(self.inner.member.id.clone());
        }
        self.proxy = proxy;
        self
    }

    /// Sends READY: to the hosted proxy in memory, or on the job socket.
    fn send_ready(&mut self) {
        if let Some(proxy) = &mut self.proxy {
            let payload = self.inner.work.heartbeat();
            if proxy.ready_local(self.inner.completed, self.inner.prefetch, &payload) {
                return;
            }
        }
        self.inner.send_ready();
    }

    fn member(&self) -> &Member {
        &self.inner.member
    }

    /// The jobs the proxy may hand this thread before a READY (its credit): those it
    /// runs and those waiting in its socket.
    fn credit(&self) -> usize {
        (self.inner.prefetch.max(1) as usize).max(self.calls)
    }

    pub(super) fn run(mut self) {
        // The answers of a turn go to the front end together: those that ended in the
        // wait once all are sent, those given at once before the next wait.
        if let Err(e) = self.inner.loopback.defer_flushes(true) {
            log::debug!(
                "worker {}: answers flushed one by one: {e}",
                self.inner.name()
            );
        }
        self.send_ready();
        let mut next_beat = Instant::now() + self.inner.heartbeat_interval;
        let mut next_tick = Instant::now() + INTERRUPT_TICK;
        // Jobs ended since the last READY (see `should_report`).
        let mut unreported = 0;
        while !self.inner.watch.shutdown.is_draining() {
            // The proxy first: the READY sent last turn, and the jobs it hands out.
            let more = self.turn_proxy();
            match self.take_jobs() {
                Some(ended) => unreported += ended,
                None => return,
            }
            let now = Instant::now();
            let mut until = if self.held.is_empty() {
                next_beat.min(now + POLL_CAP)
            } else {
                next_beat.min(next_tick)
            };
            if let Some(proxy) = &self.proxy {
                until = if more { now } else { until.min(proxy.due()) };
            }
            let fd = self.jobs_fd();
            self.flush_answers();
            self.wait(fd, until.saturating_duration_since(now));
            unreported += self.finish();
            self.flush_answers();
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + INTERRUPT_TICK;
                unreported += self.abort_interrupted();
            }
            if self.should_report(unreported) || now >= next_beat {
                self.send_ready();
                unreported = 0;
                next_beat = now + self.inner.heartbeat_interval;
            }
        }
        // The proxy rests while the worker leaves: it hands out nothing more, and
        // reads the goodbye afterwards, as its own thread would. The jobs it handed
        // over and not started yet are this thread's, as those in its socket.
        let mut proxy = self.proxy.take();
        if let Some(proxy) = &mut proxy {
            self.handed = proxy.stop_local();
        }
        self.leave();
        if let Some(proxy) = proxy {
            proxy.finish(&self.inner.watch.shutdown);
        }
    }

    /// Turns the proxy this thread runs, if any; says whether more may wait there. A
    /// proxy whose socket failed stops, as its own thread would.
    fn turn_proxy(&mut self) -> bool {
        let Some(proxy) = &mut self.proxy else {
            return false;
        };
        match proxy.turn() {
            Ok(more) => more,
            Err(e) => {
                log::error!("proxy stopped: {e}");
                // The jobs it handed over and this thread has not started stay this
                // thread's.
                self.handed = proxy.stop_local();
                self.proxy = None;
                false
            }
        }
    }

    /// Whether READY should give back the credit of `unreported` ended jobs now. The
    /// proxy counts this thread's jobs as the ones it sent less those READY reported
    /// ended, and sends more only below the credit: so READY goes at once when that
    /// count may have reached the credit (jobs may be waiting at the proxy), when the
    /// thread holds nothing (it is idle, its socket empty), and otherwise after a
    /// quarter of the credit: the jobs waiting in its socket keep it busy meanwhile,
    /// and the proxy is spared a wake-up per job.
    fn should_report(&self, unreported: usize) -> bool {
        unreported > 0
            && (self.held.len() + unreported >= self.credit()
                || self.held.is_empty()
                || unreported >= (self.credit() / 4).max(1))
    }

    /// The job socket's `ZMQ_FD` while this thread runs fewer jobs than it may: it
    /// does not wake for a job it could not start. With the proxy on this thread, the
    /// proxy's socket's instead: jobs reach the job socket only from the proxy's turn,
    /// after which the loop reads it until it is empty.
    fn jobs_fd(&self) -> Option<RawFd> {
        if self.held.len() >= self.calls {
            return None;
        }
        if let Some(proxy) = &self.proxy {
            return proxy.fd();
        }
        match self.member().jobs().get_fd() {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::error!(
                    "worker {}: no descriptor for its socket: {e}",
                    self.inner.name()
                );
                None
            }
        }
    }

    /// Takes and starts the jobs waiting in the socket while it runs fewer than it may
    /// (so it reads the socket until it is empty, or until it runs as many as it may,
    /// and then does not watch it); says how many of them ended at once (answered,
    /// skipped), or `None` when the socket failed (the thread then stops).
    fn take_jobs(&mut self) -> Option<usize> {
        let mut ended = 0;
        while self.held.len() < self.calls {
            // Those the hosted proxy handed over in memory first, then the socket
            // (what came before the hand-over, or once the proxy no longer runs here).
            if let Some(frames) = self.next_handed() {
                ended += usize::from(!self.start(frames));
                continue;
            }
            let received = self
                .inner
                .spare
                .recv(&self.inner.member.jobs(), zmq::DONTWAIT);
            match received {
                Ok(frames) => ended += usize::from(!self.start(frames)),
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => break,
                Err(e) => {
                    log::error!("worker {}: {e}; stopping", self.inner.name());
                    return None;
                }
            }
        }
        Some(ended)
    }

    /// The oldest job handed over in memory and not started, if any.
    fn next_handed(&mut self) -> Option<Vec<zmq::Message>> {
        match &mut self.proxy {
            Some(proxy) => proxy.take_local(),
            None => self.handed.pop_front(),
        }
    }

    /// Runs the loop's usual checks and the work's start on one job; keeps it if held
    /// (then true; a job that ended at once counts as completed now).
    fn start(&mut self, frames: Vec<zmq::Message>) -> bool {
        self.inner.run_job(frames);
        let started = self.inner.work.started.take();
        let held_now = started.is_some();
        match started {
            Some((ticket, held)) => {
                // Counted complete when it ends: READY reports it then.
                self.member()
                    .held_jobs()
                    .push((held.envelope.nonce, held.envelope.request_id));
                self.held.insert(ticket, held);
            }
            None => self.inner.completed += 1,
        }
        self.mark_busy();
        held_now
    }

    fn mark_busy(&self) {
        self.member()
            .busy
            .store(!self.held.is_empty(), Ordering::Release);
    }

    /// Lets the held jobs progress; a panic in the work fails every job it held.
    fn wait(&mut self, fd: Option<RawFd>, timeout: Duration) {
        let work = &mut self.inner.work.work;
        let finished = &mut self.finished;
        if catch_unwind(AssertUnwindSafe(|| work.wait(fd, timeout, finished))).is_err() {
            log::error!(
                "worker {}: the stage's wait panicked; failing the {} jobs it held",
                self.inner.name(),
                self.held.len()
            );
            self.inner.counters.panicked.fetch_add(1, Ordering::Relaxed);
            let tickets: Vec<u64> = self.held.keys().copied().collect();
            for ticket in tickets {
                let failure = Failure::new(
                    FailureKind::WorkerPanicked,
                    "the worker failed on this request",
                );
                self.finished.push((ticket, Outcome::Fail(failure)));
            }
        }
    }

    /// Sends on the outcome of every finished job; says how many finished.
    fn finish(&mut self) -> usize {
        let mut ended = 0;
        let finished = std::mem::take(&mut self.finished);
        for (ticket, outcome) in finished {
            let Some(held) = self.forget(ticket) else {
                continue;
            };
            ended += 1;
            let outcome = with_lead(&held.encoded, outcome);
            self.inner.deliver(&held.encoded, &held.envelope, outcome);
        }
        ended
    }

    /// Drops a held job from the records; it counts as completed.
    fn forget(&mut self, ticket: u64) -> Option<Held> {
        let held = self.held.remove(&ticket)?;
        let key = (held.envelope.nonce, held.envelope.request_id);
        self.member().held_jobs().retain(|&job| job != key);
        self.inner.completed += 1;
        self.mark_busy();
        Some(held)
    }

    /// Aborts every held job whose client has gone, whose deadline has passed or whose
    /// front end stops; says how many were.
    fn abort_interrupted(&mut self) -> usize {
        if self.held.is_empty() {
            // Keeps the subscription's queue short while idle.
            self.inner.watch.drain();
            return 0;
        }
        let interrupted: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, held)| self.inner.watch.is_interrupted(&held.envelope))
            .map(|(&ticket, _)| ticket)
            .collect();
        for &ticket in &interrupted {
            self.inner.work.work.abort(ticket);
            if let Some(held) = self.forget(ticket) {
                log::info!(
                    "request {}: interrupted, its work is aborted",
                    held.envelope.request_id
                );
            }
        }
        interrupted.len()
    }

    /// Makes the answers sent since the last wait visible to the front ends (the
    /// loopback holds back each flush while the loop runs: one wake-up of a front end
    /// per turn, not per answer).
    fn flush_answers(&self) {
        if let Err(e) = self.inner.loopback.flush() {
            log::debug!("worker {}: flushing answers: {e}", self.inner.name());
        }
    }

    /// Says goodbye, then finishes the jobs held and those the proxy sent before it
    /// read the goodbye; at a stop, aborts what is left.
    fn leave(&mut self) {
        // From here on each answer goes at once (turning deferral off flushes what
        // waits).
        if let Err(e) = self.inner.loopback.defer_flushes(false) {
            log::debug!("worker {}: {e}", self.inner.name());
        }
        if let Err(e) = self.member().jobs().send(GOODBYE, zmq::DONTWAIT) {
            log::debug!("worker {}: goodbye not sent: {e}", self.inner.name());
        }
        let mut quiet_until = Instant::now() + LEAVE_QUIET;
        while !self.inner.watch.shutdown.is_triggered() {
            let before = self.held.len();
            let Some(ended) = self.take_jobs() else {
                break;
            };
            if self.held.len() > before || ended > 0 {
                quiet_until = Instant::now() + LEAVE_QUIET;
            }
            let now = Instant::now();
            if self.held.is_empty() && now >= quiet_until {
                break;
            }
            let fd = self.jobs_fd();
            let until = if self.held.is_empty() {
                quiet_until
            } else {
                now + INTERRUPT_TICK
            };
            self.wait(fd, until.saturating_duration_since(now));
            self.finish();
            self.abort_interrupted();
        }
        let tickets: Vec<u64> = self.held.keys().copied().collect();
        for ticket in tickets {
            self.inner.work.work.abort(ticket);
            self.forget(ticket);
        }
    }
}

/// A finished job's outcome as the loop sends it: an answer or forwarded frames led by
/// the job's envelope (see `WorkerLoop::handle`, which does this for answers given at
/// once). An answer's lead goes into the room the work left for it (see
/// [`ANSWER_ROOM`]).
fn with_lead(encoded: &[u8; ENVELOPE_LEN], outcome: Outcome) -> Outcome {
    let lead = |mut frames: Vec<zmq::Message>| {
        match frames.first_mut() {
            Some(first) => *first = lead_frame(encoded, first),
            None => frames.push(lead_frame(encoded, b"")),
        }
        frames
    };
    match outcome {
        Outcome::Respond(mut frame) => {
            if lead_response_in_place(encoded, &mut frame) {
                return Outcome::Respond(frame);
            }
            // Shorter than the room: not made as `wait` promises; taken as the
            // client's bytes whole rather than losing them.
            let [frame] = response_frames(encoded, &frame);
            Outcome::Respond(frame)
        }
        Outcome::Forward(frames) => Outcome::Forward(lead(frames)),
        Outcome::ForwardTo(stage, frames) => Outcome::ForwardTo(stage, lead(frames)),
        other => other,
    }
}
