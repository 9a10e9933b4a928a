//! The workers a proxy knows: their READY (credit and completed jobs), the jobs they hand
//! back, their silence (eviction at the sweeps), and the stage left without any worker
//! (the grace, then 503s).

use super::{show, Proxy, WorkerRecord};
use crate::pipeline::envelope::lead_envelope;
use crate::pipeline::loopback::{Failure, FailureKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

impl Proxy {
    #[inline]
    pub(super) fn on_ready(
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
    #[inline]
    pub(super) fn on_returned(&mut self, worker: &[u8], job: Vec<zmq::Message>) {
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

    /// Gives every worker `pause` more time to be heard from.
    pub(super) fn excuse(&mut self, pause: Duration) {
        for record in self.workers.values_mut() {
            record.expires += pause;
        }
    }

    /// Forgets the workers whose heartbeats stopped, and answers the jobs they held 503.
    pub(super) fn evict_silent_workers(&mut self) {
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

    /// Starts the clock of [`ProxyConfig::no_worker_grace`] when the last worker is gone,
    /// with a warning unless the process is stopping (draining or stopped).
    pub(super) fn note_if_workerless(&mut self) {
        if self.workers.is_empty() && self.workerless_since.is_none() {
            // Workers leaving while the process stops are the stop's doing (they may
            // hear of it before this loop does): no warning then.
            let level = if self.shutdown.is_draining() {
                log::Level::Debug
            } else {
                log::Level::Warn
            };
            log::log!(
                level,
                "proxy {}: no worker left; jobs wait {:.1}s for one, then are answered 503",
                self.config.downstream,
                self.config.no_worker_grace.as_secs_f64()
            );
            self.workerless_since = Some(Instant::now());
        }
    }

    /// Whether the stage has had no worker for longer than the grace.
    pub(super) fn workerless_too_long(&self, now: Instant) -> bool {
        self.workerless_since
            .is_some_and(|since| now.duration_since(since) >= self.config.no_worker_grace)
    }

    /// The failure a job gets when the stage has been without a worker past the grace.
    pub(super) fn no_workers_failure(&self) -> Failure {
        let detail = format!(
            "the stage whose proxy takes jobs at {} has had no worker for more than {} s",
            self.bound.0,
            self.config.no_worker_grace.as_secs_f64()
        );
        Failure::new(FailureKind::NoWorkers, detail)
    }

    /// Past the grace without a worker, answers every waiting job 503.
    pub(super) fn refuse_while_workerless(&mut self, now: Instant) {
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

    /// Answers 503 every job a worker that is gone held.
    pub(super) fn answer_lost_jobs(&self, id: &[u8], record: &WorkerRecord) {
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
}
