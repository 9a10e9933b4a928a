//! One worker thread's loop: it takes jobs from its proxy, runs the stage's [`Work`] on
//! each, and sends the outcome on (to the next stage or back to the front end), saying
//! READY as its credit comes back.

use super::interrupts::InterruptWatch;
use super::shared::{Counters, Doze, Member};
use super::{Job, Outcome, Work, WorkerConfig};
use crate::base::clock::monotonic_us;
use crate::base::error::{Error, Result};
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::envelope::{lead_frame, Envelope, ENVELOPE_LEN};
use crate::pipeline::front_ends::Loopbacks;
use crate::pipeline::loopback::{
    failure_frames, is_response_frame, later_frames, render, response_frames, selftest_frames,
    Failure, FailureKind,
};
use crate::pipeline::selftest::{ProbePath, StageReport, MAX_HOPS};
use crate::pipeline::wire::GOODBYE;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a leaving worker waits for jobs the proxy sent before it read the goodbye
/// (with a credit above 1 there may be several on their way).
const LEAVE_QUIET: Duration = Duration::from_millis(100);

/// How long (ms) a worker whose queue has run dry waits for another job before it says
/// READY for the jobs it finished. Under load the next job nearly always comes sooner,
/// and the READY waits for the next batch of credit: a READY sent at once woke the
/// sleeping proxy for nothing but a count (60% of a proxy's wake-ups at `wrk -c32`).
/// The proxy's picture of this worker lags by at most this long and by fewer jobs than
/// half the credit, so it never runs out of the credit this worker has free.
const READY_DELAY_MS: i32 = 1;

/// One worker thread's sockets and state.
pub(super) struct WorkerLoop<W> {
    pub(super) member: Arc<Member>,
    pub(super) work: W,
    /// The stage's name, for self-test reports.
    pub(super) stage: String,
    pub(super) next_stage: Option<zmq::Socket>,
    /// The route name of the next stage, when a route has its endpoint.
    pub(super) next_name: Option<String>,
    pub(super) routes: Vec<(String, zmq::Socket)>,
    pub(super) loopback: Loopbacks,
    pub(super) watch: InterruptWatch,
    pub(super) completed: u64,
    pub(super) heartbeat_interval: Duration,
    pub(super) prefetch: u32,
    pub(super) counters: Arc<Counters>,
    pub(super) doze: Arc<Doze>,
    /// Emptied frame vectors, reused for the next jobs received.
    pub(super) spare: sockets::SpareFrames,
    /// When the last job's stage function returned ([`monotonic_us`]), read once for
    /// its latency and again by the loop's heartbeat check.
    pub(super) ended: Option<u64>,
}

impl<W: Work> WorkerLoop<W> {
    pub(super) fn connect(
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
        let loopback = Loopbacks::connect(ctx, config.loopbacks())?;
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
                held: Mutex::new(Vec::new()),
                jobs: Mutex::new(jobs),
            }),
            work,
            next_stage,
            loopback,
            watch: InterruptWatch::connect(ctx, config.interrupts(), shutdown)?,
            completed: 0,
            heartbeat_interval: config.heartbeat_interval,
            prefetch: config.prefetch.max(1),
            counters: Arc::default(),
            doze: Arc::default(),
            spare: sockets::SpareFrames::default(),
            ended: None,
        })
    }

    pub(super) fn run(mut self) {
        // Blocking on the one job socket (with a timeout for heartbeats) costs one system
        // call per wait; zmq_poll over two sockets costs several.
        let wait = self.heartbeat_interval.min(POLL_CAP).as_millis().max(1) as i32;
        if let Err(e) = self.member.jobs().set_rcvtimeo(wait) {
            log::error!("worker {}: {e}; stopping", self.name());
            return;
        }
        self.send_ready();
        // Heartbeats are timed on the clock jobs are timed with (`monotonic_us`), so
        // that the reading at a job's end serves both.
        let beat_us = u64::try_from(self.heartbeat_interval.as_micros()).unwrap_or(u64::MAX);
        let mut next_beat = monotonic_us().saturating_add(beat_us);
        // Jobs finished since the last READY. Credit comes back in batches: while jobs
        // are queued here, READY goes after every `batch` jobs (half the credit, so the
        // proxy refills the queue before it runs dry), and once the queue has stayed
        // empty for READY_DELAY_MS, so the proxy never waits long on credit this worker
        // has free.
        let batch = u64::from(self.prefetch.div_ceil(2));
        let mut unreported = 0u64;
        // Whether the socket's receive timeout is READY_DELAY_MS (a dry queue with
        // jobs unreported), not the heartbeat's wait.
        let mut delaying = false;
        // Whether the last delay ended with a job (or none has been tried): after one
        // that ended empty, a queue that ran dry after a single job says READY at once,
        // so a lightly loaded worker does not wake again only to say it.
        let mut delay_paid = true;
        while !self.watch.shutdown.is_draining() {
            let flags = if unreported > 0 && !delaying {
                zmq::DONTWAIT
            } else {
                0
            };
            let received = self.spare.recv(&self.member.jobs(), flags);
            if delaying && !matches!(received, Err(zmq::Error::EINTR)) {
                delaying = false;
                delay_paid = received.is_ok();
                self.set_wait(wait);
            }
            match received {
                Ok(frames) => {
                    self.run_job(frames);
                    self.completed += 1;
                    unreported += 1;
                    if unreported >= batch {
                        unreported = 0;
                        self.send_ready();
                        next_beat = monotonic_us().saturating_add(beat_us);
                    }
                }
                Err(zmq::Error::EAGAIN) if unreported > 0 && flags == zmq::DONTWAIT => {
                    // Dry: wait a little for the next job before saying READY.
                    delaying = (delay_paid || unreported > 1) && self.set_wait(READY_DELAY_MS);
                    if !delaying {
                        unreported = 0;
                        self.send_ready();
                        next_beat = monotonic_us().saturating_add(beat_us);
                    }
                }
                Err(zmq::Error::EAGAIN) if unreported > 0 => {
                    unreported = 0;
                    self.send_ready();
                    next_beat = monotonic_us().saturating_add(beat_us);
                }
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => self.watch.drain(),
                Err(e) => {
                    log::error!("worker {}: {e}; stopping", self.name());
                    return;
                }
            }
            // The clock read when the last job ended, if one just did.
            let now = self.ended.take().unwrap_or_else(monotonic_us);
            if now >= next_beat {
                self.send_ready();
                next_beat = monotonic_us().saturating_add(beat_us);
            }
        }
        self.leave();
    }

    /// Sets how long (ms) a blocking receive of a job waits; false if libzmq refused.
    fn set_wait(&self, ms: i32) -> bool {
        match self.member.jobs().set_rcvtimeo(ms) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("worker {}: receive timeout not set: {e}", self.name());
                false
            }
        }
    }

    /// Handles one job, flagged busy for the pool's heartbeat thread meanwhile.
    pub(super) fn run_job(&mut self, frames: Vec<zmq::Message>) {
        self.member.started.fetch_add(1, Ordering::Release);
        self.member.busy.store(true, Ordering::SeqCst);
        self.doze.job_started();
        self.handle(frames);
        self.member.busy.store(false, Ordering::Release);
    }

    /// Says goodbye to the proxy and finishes the jobs already sent to this worker,
    /// including those the proxy sent before it read the goodbye: the worker stops once
    /// none has come for [`LEAVE_QUIET`].
    pub(super) fn leave(&mut self) {
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

    pub(super) fn name(&self) -> String {
        String::from_utf8_lossy(&self.member.id).into_owned()
    }

    pub(super) fn send_ready(&self) {
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

    pub(super) fn handle(&mut self, frames: Vec<zmq::Message>) {
        self.counters.completed.fetch_add(1, Ordering::Relaxed);
        let Some(lead) = frames.first() else {
            return;
        };
        // The frame's bytes, looked up once (each index of a message asks libzmq).
        let lead: &[u8] = lead;
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
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
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
        let started = monotonic_us();
        let outcome = catch_unwind(AssertUnwindSafe(|| work.work(&mut job)));
        let ended = monotonic_us();
        self.ended = Some(ended);
        self.counters.work.observe_us(ended.saturating_sub(started));
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
    pub(super) fn answer_probe(&mut self, encoded: &[u8; ENVELOPE_LEN], path: &[u8]) {
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
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::warn!("worker {}: self-test report not sent: {e}", self.name());
        }
    }

    /// Sends a job's outcome on: a forwarded job's frames already start with their lead
    /// frame (see [`Job::lead_frames`]).
    pub(super) fn deliver(
        &mut self,
        encoded: &[u8; ENVELOPE_LEN],
        envelope: &Envelope,
        outcome: Outcome,
    ) {
        let request = envelope.request_id;
        let failure = match outcome {
            Outcome::Forward(mut frames) => match &self.next_stage {
                Some(next) => {
                    let sent = forward(next, &mut frames);
                    // The vector is kept for a later job's frames (see `Job::forward`).
                    self.spare.give_back(frames);
                    match sent {
                        Ok(()) => return,
                        Err(failure) => failure,
                    }
                }
                None => {
                    log::error!("request {request}: forwarded from the last stage");
                    let detail = "the pipeline has no next stage";
                    Failure::new(FailureKind::WorkerPanicked, detail)
                }
            },
            Outcome::ForwardTo(stage, mut frames) => {
                match self.routes.iter().find(|(name, _)| *name == stage) {
                    Some((_, socket)) => {
                        let sent = forward(socket, &mut frames);
                        self.spare.give_back(frames);
                        match sent {
                            Ok(()) => return,
                            Err(failure) => failure,
                        }
                    }
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
                if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
                    log::warn!("request {request}: answer not sent to the loopback: {e}");
                }
                return;
            }
            Outcome::Fail(failure) => failure,
            Outcome::Abandon => return,
            Outcome::Hold(hold) => {
                let sent = match super::hold_message(encoded, envelope, &hold) {
                    Ok(frames) => self.loopback.send(frames, zmq::DONTWAIT),
                    Err(answer) => {
                        let bytes = render(envelope.protocol, &answer);
                        let frames = response_frames(encoded, &bytes);
                        self.loopback.send(frames, zmq::DONTWAIT)
                    }
                };
                if let Err(e) = sent {
                    log::warn!("request {request}: the hold was not sent to the loopback: {e}");
                }
                return;
            }
            Outcome::Later(head, body) => {
                let frames = later_frames(encoded, head, body);
                if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
                    log::warn!("request {request}: answer-later not sent to the loopback: {e}");
                }
                return;
            }
        };
        let frames = failure_frames(encoded, &failure);
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::warn!("request {request}: failure not sent to the loopback: {e}");
        }
    }
}

/// Sends a job (its lead frame first) on to a stage's proxy without blocking; `frames`
/// is left empty (after an error, holding the frames not sent), its allocation kept.
pub(super) fn forward(
    socket: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
) -> std::result::Result<(), Failure> {
    sockets::send_all(socket, frames, zmq::DONTWAIT).map_err(|e| {
        log::warn!("a stage is unavailable: {e}");
        Failure::new(
            FailureKind::NextStageUnavailable,
            "the next stage is unavailable",
        )
    })
}

pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Counts a worker thread out of its pool's running ones when the thread ends, however
/// it ends.
pub(super) struct WorkerEnded(pub(super) Arc<AtomicUsize>);

impl Drop for WorkerEnded {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
