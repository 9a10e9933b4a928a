//! When the store's scrub runs, and the answers that wait for it.
//!
//! A commit that ends a job (a run's end, a cancel, an expiry) leaves the job's request,
//! credentials and all, in the store's files until the store's scrub
//! ([`JobStore::scrub`](crate::jobs::JobStore::scrub): SQLite checkpoints its
//! write-ahead log into the database and truncates it, two `fsync`s and the log's
//! restart). The answers that tell of no job's end (`202`s, dispatches) leave after the
//! commit. Every other answer of a committed batch (a job's end, status and result
//! reads, long-polls, event streams, publishes, interrupts, admin answers) and every
//! webhook waits, in its order, for the first scrub after its commit: no one hears of a
//! job's end before its request has left the disk.
//!
//! The scrub does not follow every commit: it runs once [`SCRUB_EVERY`] has passed since
//! the first commit that needs one, or as soon as the thread finds no command waiting
//! while someone waits for the scrub (an answer, an admin answer, a webhook that is
//! due, an event for a watched job), whichever comes first. So under a flood of submits nobody polls, one scrub
//! (one checkpoint) serves many commits, and a long-poller on a quiet server hears of
//! its job's end as soon as it did when every commit was scrubbed.

use super::{Command, Event, Service};
use crossbeam_channel::Receiver;
use std::time::{Duration, Instant};

/// The longest a commit that needs a scrub waits for it, and so the longest an ended
/// job's request stays on disk and the longest an answer waits for the scrub under
/// load. At `wrk -c32` of cheap submits the job thread commits about every 4 ms, so
/// one scrub (two `fsync`s, a copy of the log into the database) serves about five
/// commits (`DESIGN.md`, the jobs' section, has the measurements).
pub(super) const SCRUB_EVERY: Duration = Duration::from_millis(20);

/// The committed answers that wait for the store's scrub, and since when one is owed.
#[derive(Default)]
pub(super) struct Unscrubbed {
    /// When the first commit that needs a scrub went through, if one is owed.
    since: Option<Instant>,
    /// Events of committed batches, in their order, that wait for the scrub.
    events: Vec<Event>,
    /// Whether someone waits for one of `events`: any answer, interrupt or notice does;
    /// a job's event published on its channel does only while an event stream watches a
    /// job here (otherwise it reaches no one, and need not hurry the scrub).
    waited_for: bool,
}

impl Service {
    /// After a committed batch: its events that tell of a job's end (the outbox) join
    /// those waiting for a scrub, or leave at once when no scrub is owed.
    pub(super) fn after_commit(&mut self) {
        let watched = !self.seen_events.is_empty();
        self.unscrubbed.waited_for |= self
            .outbox
            .iter()
            .any(|event| watched || !matches!(event, Event::Publish(_)));
        self.unscrubbed.events.append(&mut self.outbox);
        self.admin_committed();
        if self.store.scrub_pending() && self.unscrubbed.since.is_none() {
            self.unscrubbed.since = Some(Instant::now());
        }
        if self.unscrubbed.since.is_none() {
            self.tell_scrubbed();
        }
    }

    /// When the owed scrub is due at the latest.
    pub(super) fn scrub_due(&self) -> Option<Instant> {
        self.unscrubbed.since.map(|since| since + SCRUB_EVERY)
    }

    /// Scrubs when the owed scrub is due, or when something waits for it and no
    /// command waits for the thread.
    pub(super) fn scrub_if_due(&mut self, commands: &Receiver<Command>, now: Instant) {
        let Some(due) = self.scrub_due() else {
            return;
        };
        let waited_for = self.unscrubbed.waited_for
            || self.admin_waiting()
            || self.next_webhook_due().is_some_and(|at| at <= now);
        if now >= due || (waited_for && commands.is_empty()) {
            self.scrub_now();
        }
    }

    /// Scrubs if a scrub is owed, then sends what waited for it.
    pub(super) fn scrub_now(&mut self) {
        if self.unscrubbed.since.take().is_some() {
            self.store.scrub();
        }
        self.tell_scrubbed();
    }

    /// Sends the answers, admin answers and webhooks that waited for a scrub (none is
    /// owed when this runs).
    fn tell_scrubbed(&mut self) {
        self.admin_tell();
        self.unscrubbed.waited_for = false;
        let mut events = std::mem::take(&mut self.unscrubbed.events);
        // Events the front end can no longer take (it has stopped) stay here.
        self.send_events(&mut events);
        self.unscrubbed.events = events;
        self.webhooks_due(Instant::now());
    }
}
