//! The job service's side of a store shared by several front ends (PostgreSQL, see
//! [`crate::jobs::store::postgres`]): the lease on this front end's jobs, the take-over
//! of the jobs of front ends whose lease lapsed, and the changes other front ends make,
//! heard as notices: they end this front end's long-polls, feed its event streams, and
//! interrupt a run of its own that another front end cancelled.
//!
//! A store one process owns (SQLite) has no lease and sends no notices: none of this
//! runs for it.

use super::waiters::event_item;
use super::{Event, Service};
use crate::jobs::clock::now_ms;
use crate::jobs::store::postgres::Notice;
use crate::jobs::store::{JobState, StoreError};
use crate::jobs::tag::job_tag;
use std::collections::HashSet;
use std::time::{Duration, Instant};

impl Service {
    /// How often the lease is renewed and lapsed ones looked for: a third of the lease.
    pub(super) fn lease_every(&self) -> Duration {
        (self.config.lease / 3).max(Duration::from_millis(10))
    }

    /// Renews this front end's lease (now, at start: before any job is taken).
    pub(super) fn renew_lease(&mut self) -> Result<(), StoreError> {
        let lease_ms = self.config.lease.as_millis().min(i64::MAX as u128) as i64;
        self.store.renew_lease(lease_ms)
    }

    /// When the lease is due: renews it, takes over the jobs and webhooks of front
    /// ends whose lease lapsed, and reads again the counts (back-pressure counts every
    /// front end's jobs) and the earliest scheduled job (any front end may have added
    /// one).
    pub(super) fn on_lease(&mut self, now: Instant) {
        let Some(due) = self.lease_due else {
            return;
        };
        if now < due {
            return;
        }
        self.lease_due = Some(now + self.lease_every());
        if let Err(e) = self.renew_lease() {
            log::error!("jobs: the lease on this front end's jobs cannot be renewed: {e}");
        }
        match self.store.take_over(now_ms()) {
            Ok(taken) => {
                let count = taken.len();
                let mut running = 0;
                for (record, was) in taken {
                    self.queue.push_back((record.number, record.created_ms));
                    log::debug!(
                        "jobs: job {} ({}) taken over",
                        job_tag(record.id.as_bytes()),
                        was.as_str()
                    );
                    if was == JobState::Running {
                        running += 1;
                        self.changed(&record, None);
                    }
                }
                if count > 0 {
                    log::warn!(
                        "jobs: {count} jobs taken over from front ends whose lease lapsed \
                         ({running} were running: they run again)"
                    );
                }
            }
            Err(e) => log::error!("jobs: lapsed jobs cannot be taken over: {e}"),
        }
        match self.store.webhooks_take_over(now_ms()) {
            Ok(records) => self.schedule_webhooks(records),
            Err(e) => log::error!("jobs: lapsed webhooks cannot be taken over: {e}"),
        }
        match self.store.counts() {
            Ok(counts) => self.counts = counts,
            Err(e) => log::error!("jobs: {e}"),
        }
        self.reread_schedule();
    }

    /// Another front end changed a job (or notices may have been lost).
    pub(super) fn remote(&mut self, notice: Notice) -> Result<(), StoreError> {
        match notice {
            Notice::Changed(number) => self.remote_changed(number),
            Notice::Resync => {
                let numbers: HashSet<u64> = self
                    .seen_events
                    .keys()
                    .chain(self.waiters.keys())
                    .chain(self.running.keys())
                    .copied()
                    .collect();
                for number in numbers {
                    self.remote_changed(number)?;
                }
                Ok(())
            }
        }
    }

    fn remote_changed(&mut self, number: u64) -> Result<(), StoreError> {
        let watched = self.seen_events.contains_key(&number);
        if !watched && !self.waiters.contains_key(&number) && !self.running.contains_key(&number) {
            return Ok(());
        }
        let Some(record) = self.store.by_number(number)? else {
            return Ok(());
        };
        if record.state.is_final() && self.running.remove(&number).is_some() {
            // Another front end cancelled a run of ours: stop its work.
            log::info!(
                "jobs: job {} ended by another front end; its run is interrupted",
                job_tag(record.id.as_bytes())
            );
            self.outbox.push(Event::Interrupt { number });
        }
        if watched {
            // The job's event streams here are holds on its channel: another front
            // end's events of it are published on the channel here, in order.
            let after = self.seen_events.get(&number).copied().unwrap_or(0);
            for event in self.store.events_after(number, after)? {
                let last =
                    event.kind == "state" && record.state.is_final() && event.seq >= record.events;
                self.outbox
                    .push(Event::Publish(event_item(&record.id, &event, last)));
                self.watched_to(number, event.seq, last);
            }
        }
        if self.waiters.contains_key(&number) {
            let answer = match record.state.has_result() {
                true => self.store.answer(number)?,
                false => None,
            };
            self.wake_waiters(&record, answer.as_ref());
        }
        Ok(())
    }
}
