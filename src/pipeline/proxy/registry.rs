//! The workers a proxy knows: their READY (credit and completed jobs), the jobs they hand
//! back, their silence (eviction at the sweeps), and the stage left without any worker
//! (the grace, then 503s).

use super::{show, Proxy, WorkerRecord};
use crate::base::fast_hash::FastMap;
use crate::pipeline::envelope::lead_envelope;
use crate::pipeline::loopback::{Failure, FailureKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The workers a proxy knows, each in a slot of its own: the idle queue holds slots,
/// so a job's dispatch reaches its worker's id and record by index, and only a
/// worker's own message (READY, a job handed back, BUSY, GOODBYE) looks its id up.
#[derive(Default)]
pub(super) struct Workers {
    /// The workers by slot; `None` for a free slot.
    slots: Vec<Option<Known>>,
    /// Each worker's slot, by its id.
    by_id: FastMap<Vec<u8>, usize>,
    /// The free slots, taken before the vector grows.
    free: Vec<usize>,
}

/// A worker in its slot: its id (its routing id at the ROUTER) and its record.
pub(super) struct Known {
    pub(super) id: Vec<u8>,
    pub(super) record: WorkerRecord,
}

impl Workers {
    /// How many workers are known.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no worker is known.
    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The slot of the worker with this id.
    pub(super) fn slot_of(&self, id: &[u8]) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The worker in `slot`.
    pub(super) fn get(&self, slot: usize) -> Option<&Known> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The worker in `slot`, to change its record.
    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut Known> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The record of the worker with this id.
    pub(super) fn record_of(&mut self, id: &[u8]) -> Option<&mut WorkerRecord> {
        let slot = self.slot_of(id)?;
        self.get_mut(slot).map(|known| &mut known.record)
    }

    /// Adds a worker not known yet; returns its slot.
    pub(super) fn insert(&mut self, id: &[u8], record: WorkerRecord) -> usize {
        let known = Some(Known {
            id: id.to_vec(),
            record,
        });
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = known;
                slot
            }
            None => {
                self.slots.push(known);
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id.to_vec(), slot);
        slot
    }

    /// Forgets the worker in `slot` (the caller takes it out of the idle queue).
    pub(super) fn remove(&mut self, slot: usize) -> Option<Known> {
        let known = self.slots.get_mut(slot)?.take()?;
        self.by_id.remove(&known.id);
        self.free.push(slot);
        Some(known)
    }

    /// Every known worker with its slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Known)> {
        let slots = self.slots.iter().enumerate();
        slots.filter_map(|(slot, known)| known.as_ref().map(|known| (slot, known)))
    }

    /// Every known worker's record.
    pub(super) fn values(&self) -> impl Iterator<Item = &WorkerRecord> {
        self.iter().map(|(_, known)| &known.record)
    }

    /// Every known worker's record, to change.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut WorkerRecord> {
        self.slots
            .iter_mut()
            .flatten()
            .map(|known| &mut known.record)
    }
}

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
        let slot = match self.workers.slot_of(id) {
            Some(slot) => slot,
            None => {
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
                let slot = self.workers.insert(id, record);
                if self.workerless_since.take().is_some() {
                    log::info!("proxy {}: a worker is back", self.config.downstream);
                }
                slot
            }
        };
        let Some(Known { record, .. }) = self.workers.get_mut(slot) else {
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
            self.idle.push_back(slot);
        }
    }

    /// A job of `worker` came back unstarted: it goes first in line; the worker no
    /// longer holds it, and gets nothing more until it says READY.
    #[inline]
    pub(super) fn on_returned(&mut self, worker: &[u8], job: Vec<zmq::Message>) {
        self.stats.returned += 1;
        let slot = self.workers.slot_of(worker);
        if let Some(Known { record, .. }) = slot.and_then(|slot| self.workers.get_mut(slot)) {
            let envelope = lead_envelope(&job[0]);
            if let Some(held) = record.in_flight.iter().position(|e| Some(e) == envelope) {
                record.in_flight.remove(held);
            }
            record.credit = 1;
            if record.queued && record.in_flight.len() >= record.credit {
                record.queued = false;
                self.idle.retain(|&idle| Some(idle) != slot);
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
        let dead: Vec<usize> = self
            .workers
            .iter()
            .filter(|(_, known)| known.record.expires < now)
            .map(|(slot, _)| slot)
            .collect();
        for slot in dead {
            let Some(Known { id, record }) = self.workers.remove(slot) else {
                continue;
            };
            self.stats.evicted += 1;
            self.idle.retain(|&idle| idle != slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> WorkerRecord {
        WorkerRecord {
            expires: Instant::now(),
            heartbeat: Vec::new(),
            completed: 0,
            credit: 1,
            queued: false,
            in_flight: VecDeque::new(),
        }
    }

    #[test]
    fn a_worker_is_found_by_id_and_slot_until_removed_and_its_slot_is_reused() {
        let mut workers = Workers::default();
        let a = workers.insert(b"a", record());
        let b = workers.insert(b"b", record());
        assert_ne!(a, b);
        assert_eq!(workers.slot_of(b"a"), Some(a));
        assert_eq!(workers.get(b).map(|known| &known.id[..]), Some(&b"b"[..]));
        assert_eq!(workers.len(), 2);

        let gone = workers.remove(a).map(|known| known.id);
        assert_eq!(gone.as_deref(), Some(&b"a"[..]));
        assert!(workers.remove(a).is_none(), "removed once");
        assert_eq!(workers.slot_of(b"a"), None);
        assert!(workers.get(a).is_none());
        let slots: Vec<usize> = workers.iter().map(|(slot, _)| slot).collect();
        assert_eq!(slots, [b]);

        let c = workers.insert(b"c", record());
        assert_eq!(c, a, "a free slot is taken before the vector grows");
        assert_eq!(workers.slot_of(b"c"), Some(a));
        assert_eq!(workers.get(c).map(|known| &known.id[..]), Some(&b"c"[..]));
        if let Some(record) = workers.record_of(b"c") {
            record.credit = 5;
        }
        assert_eq!(workers.values().map(|r| r.credit).sum::<usize>(), 6);
        workers.values_mut().for_each(|r| r.credit = 2);
        assert_eq!(workers.values().map(|r| r.credit).sum::<usize>(), 4);
        assert!(workers.record_of(b"a").is_none());
        assert!(!workers.is_empty());
    }
}
