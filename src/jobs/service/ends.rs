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
//! [`JobStore::finish_many`]: crate::jobs::JobStore::finish_many

use super::lifecycle::end_state;
use super::Service;
use crate::jobs::clock::now_ms;
use crate::jobs::store::{Ending, JobState, StoredAnswer};

/// A run's end gathered in the batch under way.
pub(super) struct PendingEnd {
    number: u64,
    stored: StoredAnswer,
    error: Option<String>,
}

impl Service {
    /// Keeps the end of a running job (a run of this service's that answered) to be
    /// stored with the batch's others.
    pub(super) fn end_later(&mut self, number: u64, stored: StoredAnswer, error: Option<String>) {
        self.ending.push(PendingEnd {
            number,
            stored,
            error,
        });
    }

    /// Stores the ends gathered so far, and does what follows each.
    pub(super) fn store_ends(&mut self) {
        if self.ending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.ending);
        let ends: Vec<Ending<'_>> = pending
            .iter()
            .map(|end| Ending {
                number: end.number,
                state: end_state(&end.stored),
                answer: &end.stored,
                error: end.error.as_deref(),
            })
            .collect();
        let ended = self.store.finish_many(&ends, now_ms());
        drop(ends);
        match ended {
            Ok(records) => {
                for (end, record) in pending.into_iter().zip(records) {
                    self.ended(end.number, JobState::Running, end.stored, record);
                }
            }
            // As a failed `finish` of one answer: the batch goes on, and if its commit
            // fails too the runs are settled later (see `settle`).
            Err(e) => log::error!("jobs: {} runs' ends were not stored: {e}", pending.len()),
        }
    }
}
