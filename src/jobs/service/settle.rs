//! Runs whose end a failed commit lost: the pipeline answered them, the front end
//! forgot them, but the batch that recorded their ends was rolled back (the disk was
//! full, say), so the store still calls them `running` and nothing would ever end them,
//! not even the job timeout. They are settled once the store can write again: queued
//! for another run (at least once, as after a crash: `attempts` counts the runs), or
//! failed with the reason when they have had their runs.

use super::{RunAnswer, Service};
use crate::jobs::store::{JobState, StoreError};
use crate::jobs::tag::job_tag;
use crate::pipeline::loopback::{Failure, FailureKind};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often settling is tried again while the store cannot commit, when nothing else
/// wakes the job service.
pub(super) const SETTLE_AGAIN: Duration = Duration::from_secs(1);

/// Why a settled run is run again, or failed.
const LOST: &str = "the end of its run was lost with a commit that failed; run again";

/// The runs a failed commit left uncertain, and those being settled in this batch.
#[derive(Default)]
pub(super) struct Unsettled {
    /// Jobs whose answers this batch applied (known only once its commit is done).
    answered: Vec<u64>,
    /// Jobs whose ends were rolled back, to settle at the next batch.
    uncertain: Vec<u64>,
    /// Jobs settled in this batch (uncertain again if its commit fails too).
    settling: Vec<u64>,
    /// When to try again while some are uncertain.
    pub(super) retry_at: Option<Instant>,
}

impl Unsettled {
    /// A run's answer is applied in this batch.
    pub(super) fn answered(&mut self, number: u64) {
        self.answered.push(number);
    }
}

impl Service {
    /// At the start of a batch whose transaction began: settles the runs a failed
    /// commit left uncertain.
    pub(super) fn settle_uncertain(&mut self) {
        let uncertain = std::mem::take(&mut self.unsettled.uncertain);
        for number in &uncertain {
            if let Err(e) = self.settle(*number) {
                log::error!("jobs: a run left uncertain by a failed commit not settled: {e}");
            }
        }
        self.unsettled.settling = uncertain;
        self.unsettled.retry_at = None;
    }

    fn settle(&mut self, number: u64) -> Result<(), StoreError> {
        let Some(record) = self.store.by_number(number)? else {
            return Ok(());
        };
        if record.state != JobState::Running || self.running.contains_key(&number) {
            return Ok(());
        }
        log::warn!(
            "jobs: job {} was left running by a failed commit; settling it",
            job_tag(record.id.as_bytes())
        );
        let failure = Failure::new(FailureKind::QueueFull, LOST);
        if record.attempts < self.config.max_attempts {
            self.retry(&record, &failure)
        } else {
            self.answered(number, RunAnswer::Failure(failure))
        }
    }

    /// The batch's commit went through: what it applied is settled.
    pub(super) fn batch_settled(&mut self) {
        // The admin answers leave with the batch's other answers, after the scrub (see
        // `scrub`).
        self.unsettled.answered.clear();
        self.unsettled.settling.clear();
    }

    /// The batch's commit failed: the ends it applied, and the settling it did, were
    /// rolled back; they are settled at a later batch.
    pub(super) fn batch_unsettled(&mut self) {
        self.admin_refuse();
        // An end gathered but not yet written was not lost: a later batch stores it.
        if !self.ending.is_empty() {
            let gathered: HashSet<u64> = self.ends_gathered().collect();
            self.unsettled.answered.retain(|n| !gathered.contains(n));
        }
        let unsettled = &mut self.unsettled;
        unsettled.uncertain.append(&mut unsettled.answered);
        unsettled.uncertain.append(&mut unsettled.settling);
        unsettled.uncertain.sort_unstable();
        unsettled.uncertain.dedup();
        if !unsettled.uncertain.is_empty() {
            unsettled.retry_at = Some(Instant::now() + SETTLE_AGAIN);
        }
    }
}
