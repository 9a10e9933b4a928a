//! Placing a job: to an idle worker (see [`Dispatch`]), in the waiting queue, or
//! answered 503 (queue full, or no worker past the grace); and the waiting jobs handed
//! out as workers become idle.

use super::registry::Known;
use super::{show, Dispatch, Proxy};
use crate::base::sockets;
use crate::pipeline::envelope::{deadline_passed, lead_deadline_us, lead_envelope, ENVELOPE_LEN};
use crate::pipeline::loopback::{Failure, FailureKind};
use std::time::Instant;

impl Proxy {
    /// A job arrived: `envelope` is its lead frame's first bytes.
    #[inline]
    pub(super) fn on_job(&mut self, frames: Vec<zmq::Message>, envelope: [u8; ENVELOPE_LEN]) {
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

    /// Hands waiting jobs to idle workers, oldest first, while both last; drops the
    /// expired ones on the way.
    #[inline]
    pub(super) fn dispatch_waiting(&mut self) {
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
        // A job has its lead frame (its envelope was read from it).
        if frames.is_empty() {
            return Err(frames);
        }
        while let Some(slot) = self.take_idle_worker(&frames) {
            let Some(worker) = self.workers.get(slot) else {
                continue;
            };
            // The worker on this proxy's own thread takes its job from memory: no
            // message through libzmq's pipe, and no signal to its own mailbox.
            if let Some(local) = self.local.as_mut().filter(|local| local.id == worker.id) {
                local.jobs.push_back(frames);
                self.sent(slot, envelope);
                return Ok(());
            }
            // The worker's id and the lead frame in one call, the rest behind them.
            let lead = frames.remove(0);
            let more = if frames.is_empty() { 0 } else { zmq::SNDMORE };
            match self.router.send_to(&worker.id, lead, more | zmq::DONTWAIT) {
                Ok(()) => {
                    if !frames.is_empty() {
                        let sent = sockets::send_all(&self.router, &mut frames, zmq::DONTWAIT);
                        if let Err(e) = sent {
                            log::error!("proxy {}: job lost mid-send: {e}", self.config.downstream);
                        }
                    }
                    self.spare.give_back(frames);
                    self.sent(slot, envelope);
                    return Ok(());
                }
                Err((zmq::Error::EAGAIN, lead)) => {
                    frames.insert(0, lead);
                    // The pipe to this worker is full as libzmq sees it: the reader
                    // reports what it has read only every so many messages, so a
                    // worker holding many jobs can look further behind than it is. It
                    // is alive and its jobs are safe: it gets no job until its next
                    // READY, and this one goes to another worker or waits.
                    log::debug!(
                        "proxy: the pipe to worker {} is full for now",
                        show(&worker.id)
                    );
                    self.stats.pipe_full += 1;
                    if let Some(Known { record, .. }) = self.workers.get_mut(slot) {
                        record.queued = false;
                    }
                }
                Err((e, lead)) => {
                    frames.insert(0, lead);
                    // The worker disconnected: forget it until it says READY again, and
                    // answer the jobs it held (with a credit above 1, a worker waiting
                    // for more may hold some), which went with it.
                    log::debug!("proxy: worker {} unreachable: {e}", show(&worker.id));
                    if let Some(Known { id, record }) = self.workers.remove(slot) {
                        self.answer_lost_jobs(&id, &record);
                    }
                    self.note_if_workerless();
                }
            }
        }
        Err(frames)
    }

    /// Counts a job (whose envelope is `envelope`) handed to the worker in `slot`, and
    /// queues that worker again while it has credit left.
    fn sent(&mut self, slot: usize, envelope: [u8; ENVELOPE_LEN]) {
        self.stats.dispatched += 1;
        // Reached by its slot: no look-up of its id.
        if let Some(Known { record, .. }) = self.workers.get_mut(slot) {
            record.queued = false;
            record.in_flight.push_back(envelope);
            if record.in_flight.len() < record.credit {
                record.queued = true;
                match self.config.dispatch {
                    Dispatch::Spread => self.idle.push_back(slot),
                    Dispatch::FillCredit => self.idle.push_front(slot),
                }
            }
        }
    }

    /// Takes the worker for a job out of the idle queue; returns its slot. Its record
    /// still says it is queued: the caller sets that once it knows whether the job
    /// went.
    fn take_idle_worker(&mut self, frames: &[zmq::Message]) -> Option<usize> {
        let index = match &self.config.choose {
            Some(choose) if self.idle.len() > 1 => {
                let heartbeats: Vec<&[u8]> = self
                    .idle
                    .iter()
                    .map(|&slot| {
                        let known = self.workers.get(slot);
                        known.map_or(&[][..], |w| &w.record.heartbeat[..])
                    })
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
        // The usual pick is the head (one worker idle, or the one that took the last
        // job): popped, not removed by index.
        match index.unwrap_or_else(|| self.least_loaded_idle()) {
            0 => self.idle.pop_front(),
            index => self.idle.remove(index),
        }
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
        let held = |slot: usize| {
            let known = self.workers.get(slot);
            known.map_or(0, |w| w.record.in_flight.len())
        };
        let mut best = (0, usize::MAX);
        for (index, &slot) in self.idle.iter().enumerate() {
            let jobs = held(slot);
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
    pub(super) fn forget_expired_jobs(&mut self) {
        let now_us = crate::pipeline::envelope::now_us();
        self.waiting.retain(|job| !is_expired(job.frames(), now_us));
    }
}

/// Whether a job's deadline has passed (the front end has answered it 504 then).
fn is_expired(frames: &[zmq::Message], now_us: u64) -> bool {
    frames
        .first()
        .and_then(|lead| lead_deadline_us(lead))
        .is_some_and(|deadline| deadline_passed(deadline, now_us))
}
