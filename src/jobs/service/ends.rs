//! The runs' ends a batch gathers and stores together.
//!
//! An answer to a run of this service's ends a running job: the service keeps it and
//! stores the ends it has gathered with one [`JobStore::finish_many`] (one statement,
//! one round trip for PostgreSQL, not one per job) before it handles any command that
//! could read those jobs (a status read, a cancel, another answer, an admin call...)
//! and at the end of the batch's commands. Submits do not wait for them: a submit
//! reads a job only for its idempotency key, and until the commit no one can have
//! heard of an end gathered in the batch. Nothing is told of an end before its batch
//! commits, so the order of the stores within the batch is the one the answers came in.
//!
//! A batch that stores submits leaves the ends it gathered to the next batch, which
//! starts at once, without waiting for a command, and stores them whatever it holds
//! (unless someone hears of one of them: a long-poll, an event stream, a webhook or a
//! channel, whose answer would then need a sync of its own, after the submits'):
//! the submits' `202`s leave after their commit and its sync without waiting for the
//! ends' writes (about a third of the thread's work per cheap job), which the thread
//! does while the `202`s travel to their clients and the clients' next requests come
//! back. An end is never left twice, and no one has heard of it before it is stored.
//! The runs a carried end belongs to stay uncertain (see `settle`) from the batch that
//! stores them, not the one that took their answers.
//!
//! An end is stored quietly, without reading the job's row back, when nothing would
//! read that record: the run was the job's first and the job has neither error nor
//! progress (so its `state` event is the feed's change, which the store writes itself:
//! [`JobStore::state_events_from_changes`]), no long-poll, event stream, webhook or
//! channel waits for it, and the log does not name it (`debug`). What follows such an
//! end is then only the counts' change (the read was about 8,000 instructions of the
//! 103,000 a cheap job costs the thread).
//!
//! [`JobStore::state_events_from_changes`]: crate::jobs::JobStore::state_events_from_changes
//!
//! [`JobStore::finish_many`]: crate::jobs::JobStore::finish_many

use super::lifecycle::end_state;
use super::Service;
use crate::jobs::clock::now_ms;
use crate::jobs::store::{Ending, JobState, StoreError, StoredAnswer};

/// A run's end gathered in the batch under way.
pub(super) struct PendingEnd {
    number: u64,
    stored: StoredAnswer,
    error: Option<String>,
    /// Its run was the job's first, without error or progress (see `running`).
    quiet: bool,
}

impl Service {
    /// Keeps the end of a running job (a run of this service's that answered) to be
    /// stored with the batch's others.
    pub(super) fn end_later(
        &mut self,
        number: u64,
        stored: StoredAnswer,
        error: Option<String>,
        quiet: bool,
    ) {
        self.ending.push(PendingEnd {
            number,
            stored,
            error,
            quiet,
        });
    }

    /// Stores the ends gathered so far, and does what follows each.
    pub(super) fn store_ends(&mut self) {
        if self.ending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.ending);
        let quiet: Vec<bool> = pending.iter().map(|end| self.ends_quietly(end)).collect();
        let ends: Vec<Ending<'_>> = pending
            .iter()
            .map(|end| Ending {
                number: end.number,
                state: end_state(&end.stored),
                answer: &end.stored,
                error: end.error.as_deref(),
            })
            .collect();
        let now = now_ms();
        let ended = match quiet.contains(&true) {
            false => self
                .store
                .finish_many(&ends, now)
                .map(|records| records.into_iter().map(Ended::Read).collect()),
            // In the answers' order, as `finish_many` would.
            true => ends
                .iter()
                .zip(&quiet)
                .map(|(end, &quiet)| self.finish_one(end, quiet, now))
                .collect::<Result<Vec<Ended>, StoreError>>(),
        };
        drop(ends);
        // Lost with this batch's commit if it fails, whichever batch took the answers.
        for end in &pending {
            self.unsettled.answered(end.number);
        }
        match ended {
            Ok(records) => {
                for (end, record) in pending.into_iter().zip(records) {
                    match record {
                        Ended::Read(record) => {
                            self.ended(end.number, JobState::Running, end.stored, record)
                        }
                        Ended::Quietly(state) => self.ended_quietly(state),
                        Ended::Already => {}
                    }
                }
            }
            // As a failed `finish` of one answer: the batch goes on, and if its commit
            // fails too the runs are settled later (see `settle`).
            Err(e) => log::error!("jobs: {} runs' ends were not stored: {e}", pending.len()),
        }
    }

    /// The jobs whose ends wait, gathered, to be stored (by this batch or, if this one
    /// stores submits, the next).
    pub(super) fn ends_gathered(&self) -> impl Iterator<Item = u64> + '_ {
        self.ending.iter().map(|end| end.number)
    }

    /// Whether someone hears of one of the gathered ends once it is stored (see the
    /// module's notes): then they are stored in this batch, not carried to the next.
    pub(super) fn ends_heard(&self) -> bool {
        let heard = |end: &PendingEnd| {
            self.waiters.contains_key(&end.number)
                || self.seen_events.contains_key(&end.number)
                || self.notify.contains_key(&end.number)
        };
        self.deliveries.is_some() || self.every_event.is_on() || self.ending.iter().any(heard)
    }

    /// Whether `end` may be stored without reading its job's record back: nothing that
    /// follows it here would read the record (see the module's notes).
    fn ends_quietly(&self, end: &PendingEnd) -> bool {
        end.quiet
            && end.error.is_none()
            && self.store.state_events_from_changes()
            && self.deliveries.is_none()
            && !self.every_event.is_on()
            && !self.waiters.contains_key(&end.number)
            && !self.seen_events.contains_key(&end.number)
            && !self.notify.contains_key(&end.number)
            && !log::log_enabled!(log::Level::Debug)
    }

    /// One end of a batch that stores some quietly.
    fn finish_one(&mut self, end: &Ending<'_>, quiet: bool, now: i64) -> Result<Ended, StoreError> {
        let store = &mut self.store;
        if !quiet {
            return store.finish(*end, now).map(Ended::Read);
        }
        let ended = store.finish_quietly(*end, now)?;
        Ok(match ended {
            true => Ended::Quietly(end.state),
            false => Ended::Already,
        })
    }

    /// What follows a run's end stored quietly: the counts (the log line is `debug`'s,
    /// which is off, and nothing else listens).
    fn ended_quietly(&mut self, state: JobState) {
        self.counts.running = self.counts.running.saturating_sub(1);
        *self.counts.of(state) += 1;
    }
}

/// A run's end as stored.
enum Ended {
    /// With the job's record read back; `None` if it had ended already.
    Read(Option<crate::jobs::store::JobRecord>),
    /// Quietly, in this state.
    Quietly(JobState),
    /// Quietly, but it had ended already.
    Already,
}
