//! What the job service does with a job: a submit (with its idempotency key), reads of
//! its status and result, a cancel, an answer from the pipeline (with its retries) and
//! the dispatch of waiting jobs into the pipeline.

use super::waiters::WaitFor;
use super::{
    fingerprint, is_transient, new_job_id, retry_backoff, Event, ReplyTo, RunAnswer, Service,
};
use crate::http::Response;
use crate::jobs::answers;
use crate::jobs::caller::scoped_key;
use crate::jobs::clock::now_ms;
use crate::jobs::prefer::idempotency_key;
use crate::jobs::schedule::not_before;
use crate::jobs::store::{JobRecord, JobState, NewJob, StartedJob, StoreError};
use crate::jobs::tag::job_tag;
use crate::pipeline::loopback::{Failure, FailureKind};
use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Service {
    pub(super) fn submit(
        &mut self,
        reply: ReplyTo,
        head: &[u8],
        body: &[u8],
        wait: Option<Duration>,
        client: Option<SocketAddr>,
    ) -> Result<(), StoreError> {
        // The key is the caller's: another caller's request never finds its job.
        let key = match idempotency_key(head) {
            Ok(key) => key.map(|key| {
                let caller = self.config.caller.of(head);
                scoped_key(&self.caller_secret, &caller, &key)
            }),
            Err(why) => {
                self.reply(reply, &Response::error(400, why));
                return Ok(());
            }
        };
        let now = now_ms();
        let not_before = match not_before(head, now, self.config.ttl) {
            Ok(at) => at,
            Err(why) => {
                self.reply(reply, &Response::error(400, &why.to_string()));
                return Ok(());
            }
        };
        let fingerprint = fingerprint(head, body);
        if let Some(key) = &key {
            if let Some((record, stored)) = self.store.by_idempotency_key(key)? {
                let response = if stored == fingerprint {
                    log::debug!(
                        "jobs: job {} submitted again under its key",
                        job_tag(record.id.as_bytes())
                    );
                    answers::accepted(&record, &self.config.path)
                } else {
                    answers::key_reused()
                };
                self.reply(reply, &response);
                return Ok(());
            }
        }
        if self.counts.unfinished() >= self.config.max_queued as u64 {
            if self.warnings.submit_refused.allow() {
                log::warn!(
                    "jobs: {} unfinished jobs; a submit is refused",
                    self.counts.unfinished()
                );
            }
            self.reply(reply, &answers::store_full());
            return Ok(());
        }
        let id = match new_job_id() {
            Ok(id) => id,
            Err(e) => {
                log::error!("jobs: no random job id: {e}");
                self.reply(reply, &answers::store_failed());
                return Ok(());
            }
        };
        let record = self.store.insert(&NewJob {
            id: &id,
            head,
            body,
            idempotency_key: key.as_deref(),
            fingerprint: &fingerprint,
            now_ms: now,
            client: client.map(|c| c.to_string()).as_deref(),
            not_before_ms: not_before,
        })?;
        self.webhook_registered(&record, head)?;
        *self.counts.of(record.state) += 1;
        match not_before {
            // No timer of its own: the service's one timer is on the earliest.
            Some(at) => {
                self.next_scheduled = Some(self.next_scheduled.map_or(at, |next| next.min(at)))
            }
            None => self.queue.push_back((record.number, record.created_ms)),
        }
        log::debug!(
            "jobs: job {} ({}) {}",
            job_tag(record.id.as_bytes()),
            record.number,
            record.state.as_str()
        );
        self.publish_event(&record, "state", &answers::state_event_json(&record));
        match wait.filter(|w| !w.is_zero()) {
            Some(wait) => self.add_waiter(&record, reply, WaitFor::Answer, wait),
            None => self.reply(reply, &answers::accepted(&record, &self.config.path)),
        }
        Ok(())
    }

    pub(super) fn status(
        &mut self,
        reply: ReplyTo,
        id: &str,
        wait: Option<Duration>,
    ) -> Result<(), StoreError> {
        let record = match self.find(id)? {
            Ok(record) => record,
            Err(response) => {
                self.reply(reply, &response);
                return Ok(());
            }
        };
        match wait.filter(|w| !w.is_zero() && !record.state.is_final()) {
            Some(wait) => self.add_waiter(&record, reply, WaitFor::Change, wait),
            None => {
                let response = self.status_with_webhook(&record)?;
                self.reply(reply, &response)
            }
        }
        Ok(())
    }

    pub(super) fn result(&mut self, reply: ReplyTo, id: &str) -> Result<(), StoreError> {
        let record = match self.find(id)? {
            Ok(record) => record,
            Err(response) => {
                self.reply(reply, &response);
                return Ok(());
            }
        };
        let response = match self.store.answer(record.number)? {
            Some(answer) => answers::result(answer),
            None => answers::no_result_yet(&record, &self.config.path),
        };
        self.reply(reply, &response);
        Ok(())
    }

    pub(super) fn cancel(&mut self, reply: ReplyTo, id: &str) -> Result<(), StoreError> {
        let record = match self.find(id)? {
            Ok(record) => record,
            Err(response) => {
                self.reply(reply, &response);
                return Ok(());
            }
        };
        let response = match record.state {
            JobState::Cancelled => answers::status(&record, &self.config.path),
            state if state.is_final() => answers::already_ended(&record, &self.config.path),
            _ => match self.cancel_record(&record)? {
                Some(cancelled) => answers::status(&cancelled, &self.config.path),
                None => answers::status(&record, &self.config.path),
            },
        };
        self.reply(reply, &response);
        Ok(())
    }

    /// Cancels an unfinished job (interrupting its run, if it has one); `None` if it
    /// had already ended.
    pub(super) fn cancel_record(
        &mut self,
        record: &JobRecord,
    ) -> Result<Option<JobRecord>, StoreError> {
        let Some(cancelled) = self.store.cancel(record.number, now_ms())? else {
            return Ok(None);
        };
        *self.counts.of(record.state) -= 1;
        self.counts.cancelled += 1;
        if self.running.remove(&record.number) {
            self.outbox.push(Event::Interrupt {
                number: record.number,
            });
        }
        log::info!("jobs: job {} cancelled", job_tag(record.id.as_bytes()));
        if record.state == JobState::Scheduled {
            self.reread_schedule();
        }
        self.changed(&cancelled, None);
        self.webhook_job_ended(&cancelled, None);
        Ok(Some(cancelled))
    }

    pub(super) fn answered(&mut self, number: u64, answer: RunAnswer) -> Result<(), StoreError> {
        let Some(record) = self.store.by_number(number)? else {
            log::warn!("jobs: an answer for job number {number}, which the store does not have");
            return Ok(());
        };
        if record.state.is_final() {
            log::debug!(
                "jobs: job {} has ended already ({}); a later answer is dropped",
                job_tag(record.id.as_bytes()),
                record.state.as_str()
            );
            return Ok(());
        }
        self.running.remove(&number);
        let (stored, error) = match answer {
            RunAnswer::Failure(failure) if is_transient(&failure) => {
                if record.attempts < self.config.max_attempts {
                    return self.retry(&record, &failure);
                }
                (answers::stored_from_failure(&failure), Some(failure.detail))
            }
            RunAnswer::Failure(failure) => {
                (answers::stored_from_failure(&failure), Some(failure.detail))
            }
            RunAnswer::Response(bytes) => match answers::stored_from_http(&bytes) {
                Some(stored) => {
                    let error = answers::error_of(&stored);
                    (stored, error)
                }
                None => {
                    let failure = Failure::new(
                        FailureKind::WorkerPanicked,
                        "the stage's answer is not an HTTP response",
                    );
                    (answers::stored_from_failure(&failure), Some(failure.detail))
                }
            },
        };
        let state = if stored.status < 400 {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        if let Some(ended) =
            self.store
                .finish(number, state, &stored, error.as_deref(), now_ms())?
        {
            *self.counts.of(record.state) -= 1;
            *self.counts.of(state) += 1;
            log::info!(
                "jobs: job {} {} with {} after {} attempts",
                job_tag(ended.id.as_bytes()),
                state.as_str(),
                stored.status,
                ended.attempts
            );
            self.changed(&ended, Some(&stored));
            self.webhook_job_ended(&ended, Some(&stored));
            if let Some(channels) = self.notify.remove(&number) {
                let document = answers::status_json(&ended, &self.config.path);
                self.outbox.push(Event::Notify { channels, document });
            }
        }
        Ok(())
    }

    /// Queues a run again, later, after the pipeline could not take it.
    pub(super) fn retry(
        &mut self,
        record: &JobRecord,
        failure: &Failure,
    ) -> Result<(), StoreError> {
        let Some(queued) = self
            .store
            .requeue(record.number, &failure.detail, now_ms())?
        else {
            return Ok(());
        };
        *self.counts.of(record.state) -= 1;
        self.counts.queued += 1;
        let backoff = retry_backoff(record.attempts);
        if self.warnings.run_retried.allow() {
            log::warn!(
                "jobs: job {} not run ({}); trying again in {:.0?}",
                job_tag(record.id.as_bytes()),
                failure.detail,
                backoff
            );
        }
        self.retries.push(Reverse((
            Instant::now() + backoff,
            record.number,
            record.created_ms,
        )));
        self.changed(&queued, None);
        Ok(())
    }

    /// Moves the scheduled jobs whose time has come to the queue, and sets the timer
    /// on the next one.
    pub(super) fn release_scheduled(&mut self) {
        match self.store.release_due(now_ms()) {
            Ok(released) => {
                for record in released {
                    self.counts.scheduled = self.counts.scheduled.saturating_sub(1);
                    self.counts.queued += 1;
                    self.queue.push_back((record.number, record.created_ms));
                    log::debug!(
                        "jobs: job {} ({}) queued at its time",
                        job_tag(record.id.as_bytes()),
                        record.number
                    );
                    self.changed(&record, None);
                }
            }
            Err(e) => log::error!("jobs: scheduled jobs cannot be queued: {e}"),
        }
        self.reread_schedule();
    }

    /// Reads the earliest scheduled job's time from the store again (after a release,
    /// a cancel, a rolled-back batch). A store that cannot answer is asked again in a
    /// second.
    pub(super) fn reread_schedule(&mut self) {
        self.next_scheduled = match self.store.next_not_before() {
            Ok(next) => next,
            Err(e) => {
                log::error!("jobs: the next scheduled job cannot be read: {e}");
                Some(now_ms().saturating_add(1000))
            }
        };
    }

    /// Starts runs while fewer than `max_running` are in the pipeline.
    pub(super) fn dispatch(&mut self) {
        while !self.draining && self.running.len() < self.config.max_running {
            let Some((number, _)) = self.queue.pop_front() else {
                return;
            };
            match self.store.start(number, now_ms()) {
                Ok(Some(StartedJob {
                    record,
                    head,
                    body,
                    client,
                })) => {
                    self.counts.queued = self.counts.queued.saturating_sub(1);
                    self.counts.running += 1;
                    self.running.insert(number);
                    self.outbox.push(Event::Dispatch {
                        number,
                        head,
                        body,
                        client,
                    });
                    self.changed(&record, None);
                }
                // Cancelled while it waited.
                Ok(None) => {}
                Err(e) => {
                    log::error!("jobs: job number {number} cannot start: {e}");
                    return;
                }
            }
        }
    }
}
