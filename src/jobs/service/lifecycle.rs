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
use crate::jobs::store::{
    Ending, JobRecord, JobState, NewJob, StartedJob, StoreError, StoredAnswer,
};
use crate::jobs::tag::job_tag;
use crate::pipeline::loopback::{Failure, FailureKind};
use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A submit taken in the batch under way, stored with the batch's others (see
/// [`Service::store_submits`]).
pub(super) struct Submitted {
    reply: ReplyTo,
    id: String,
    head: Vec<u8>,
    body: Vec<u8>,
    wait: Option<Duration>,
    /// The client's address, as the pipeline gets it and as the store keeps it.
    client: Option<(SocketAddr, String)>,
    /// The idempotency key, scoped to its caller.
    key: Option<String>,
    fingerprint: Vec<u8>,
    now_ms: i64,
    not_before_ms: Option<i64>,
}

impl Service {
    /// Takes a submit: checks it (its idempotency key, `Job-Delay`, the limit of
    /// unfinished jobs) and keeps it to be stored with the batch's other submits.
    pub(super) fn submit(
        &mut self,
        reply: ReplyTo,
        head: Vec<u8>,
        body: Vec<u8>,
        wait: Option<Duration>,
        client: Option<SocketAddr>,
    ) -> Result<(), StoreError> {
        // The key is the caller's: another caller's request never finds its job.
        let key = match idempotency_key(&head) {
            Ok(key) => key.map(|key| {
                let caller = self.config.caller.of(&head);
                scoped_key(&self.caller_secret, &caller, &key)
            }),
            Err(why) => {
                self.reply(reply, &Response::error(400, why));
                return Ok(());
            }
        };
        let now = now_ms();
        let not_before = match not_before(&head, now, self.config.ttl) {
            Ok(at) => at,
            Err(why) => {
                self.reply(reply, &Response::error(400, &why.to_string()));
                return Ok(());
            }
        };
        // Only a submit under a key is ever compared with another (see
        // `by_idempotency_key`): the digest of one without is not worth its hash.
        let fingerprint = match &key {
            Some(_) => fingerprint(&head, &body),
            None => Vec::new(),
        };
        if let Some(key) = &key {
            if self.submitted.iter().any(|s| s.key.as_ref() == Some(key)) {
                // The same key earlier in this batch: that job is stored first, so
                // this submit finds it.
                self.store_submits();
            }
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
        let unfinished = self.counts.unfinished() + self.submitted.len() as u64;
        if unfinished >= self.config.max_queued as u64 {
            if self.warnings.submit_refused.allow() {
                log::warn!("jobs: {unfinished} unfinished jobs; a submit is refused");
            }
            self.reply(reply, &answers::store_full());
            return Ok(());
        }
        let id = match new_job_id(&mut self.id_prefix) {
            Ok(id) => id,
            Err(e) => {
                log::error!("jobs: no random job id: {e}");
                self.reply(reply, &answers::store_failed());
                return Ok(());
            }
        };
        self.submitted.push(Submitted {
            reply,
            id,
            head,
            body,
            wait,
            client: client.map(|c| (c, client_text(c))),
            key,
            fingerprint,
            now_ms: now,
            not_before_ms: not_before,
        });
        Ok(())
    }

    /// Stores the batch's submits, with one call of the store (one statement on
    /// PostgreSQL), and answers them (once the batch commits).
    pub(super) fn store_submits(&mut self) {
        if self.submitted.is_empty() {
            return;
        }
        let submitted = std::mem::take(&mut self.submitted);
        let jobs: Vec<NewJob<'_>> = submitted
            .iter()
            .map(|s| NewJob {
                id: &s.id,
                head: &s.head,
                body: &s.body,
                idempotency_key: s.key.as_deref(),
                fingerprint: &s.fingerprint,
                now_ms: s.now_ms,
                client: s.client.as_ref().map(|(_, text)| text.as_str()),
                not_before_ms: s.not_before_ms,
            })
            .collect();
        // New jobs start at their insert while no older one waits (queued, or due
        // again or released by this batch's timers) and places are free: one write
        // each instead of an insert and a start (see `insert_and_start`).
        let now = Instant::now();
        let older_due = !self.queue.is_empty()
            || self
                .retries
                .peek()
                .is_some_and(|Reverse((at, _, _))| *at <= now)
            || self.next_scheduled.is_some_and(|ms| ms <= now_ms());
        let free = if self.draining || older_due {
            0
        } else {
            self.config.max_running.saturating_sub(self.running.len())
        };
        let start = jobs
            .iter()
            .take_while(|job| job.not_before_ms.is_none())
            .count()
            .min(free);
        let stored = self.store.insert_and_start(&jobs, start, now_ms());
        drop(jobs);
        let (records, started) = match stored {
            Ok(stored) => stored,
            Err(e) => {
                log::error!("jobs: {} submits cannot be stored: {e}", submitted.len());
                for s in &submitted {
                    self.reply(s.reply, &answers::store_failed());
                }
                // Some of them may be stored: the batch is rolled back, not committed.
                self.failed_write = Some(e);
                return;
            }
        };
        let mut started = started.into_iter();
        for (i, (s, record)) in submitted.into_iter().zip(records).enumerate() {
            let running = if i < start { started.next() } else { None };
            if let Err(e) = self.submitted_stored(&s, &record, running.is_some()) {
                log::error!("jobs: {e}");
                self.reply(s.reply, &answers::store_failed());
            }
            // Stored running, it runs even if its answer failed (as a job stored queued
            // would, at the latest after a restart).
            if let Some(running) = running {
                self.started_at_once(s, running);
            }
        }
    }

    /// A new job stored already running: dispatched with the request the submit
    /// brought (no read of the store), as `start_some` dispatches a queued one.
    fn started_at_once(&mut self, s: Submitted, record: JobRecord) {
        let client = s.client.map(|(address, _)| address);
        self.dispatch_started(&record, s.head, s.body, client);
    }

    /// A job just started (its record running): counted as running, its run sent
    /// into the pipeline with `head`, `body` and `client`, its change told.
    fn dispatch_started(
        &mut self,
        record: &JobRecord,
        head: Vec<u8>,
        body: Vec<u8>,
        client: Option<std::net::SocketAddr>,
    ) {
        let number = record.number;
        self.counts.queued = self.counts.queued.saturating_sub(1);
        self.counts.running += 1;
        let quiet = record.attempts <= 1 && record.error.is_none() && record.progress.is_none();
        self.running.insert(number, quiet);
        self.early.push(Event::Dispatch {
            number,
            head,
            body,
            client,
        });
        self.changed(record, None);
    }

    /// What follows a job's storing: its webhook, its place in the queue (or the
    /// schedule), its first event, and the answer. `started`: it was stored running (see `started_at_once`), so it waits in no
    /// queue.
    fn submitted_stored(
        &mut self,
        s: &Submitted,
        record: &JobRecord,
        started: bool,
    ) -> Result<(), StoreError> {
        self.webhook_registered(record, &s.head)?;
        *self.counts.of(record.state) += 1;
        match s.not_before_ms {
            // No timer of its own: the service's one timer is on the earliest.
            Some(at) => {
                self.next_scheduled = Some(self.next_scheduled.map_or(at, |next| next.min(at)))
            }
            None if started => {}
            None => self.queue.push_back((record.number, record.created_ms)),
        }
        log::debug!(
            "jobs: job {} ({}) {}",
            job_tag(record.id.as_bytes()),
            record.number,
            record.state.as_str()
        );
        self.publish_state(record);
        match s.wait.filter(|w| !w.is_zero()) {
            Some(wait) => self.add_waiter(record, s.reply, WaitFor::Answer, wait),
            // A 202 tells of no job's end: it need not wait for the scrub.
            None => self.early.push(Event::Reply {
                to: s.reply,
                bytes: s
                    .reply
                    .render(&answers::accepted(record, &self.config.path)),
            }),
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
        if self.running.remove(&record.number).is_some() {
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
        if let RunAnswer::Response(bytes) = &answer {
            if let Some(quiet) = self.running.remove(&number) {
                // A run of this service's that answered: its job is running, and the
                // end is stored with the batch's others (see `ends`).
                let (stored, error) = stored_of(bytes);
                self.end_later(number, stored, error, quiet);
                return Ok(());
            }
        }
        // Any end gathered so far is stored first: this answer's job may be among them.
        self.store_ends();
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
            RunAnswer::Response(bytes) => return self.end_run(number, record.state, &bytes),
        };
        self.end(number, record.state, stored, error)
    }

    /// Ends a job with the answer its run gave (`was`: the state it is in).
    fn end_run(&mut self, number: u64, was: JobState, bytes: &[u8]) -> Result<(), StoreError> {
        let (stored, error) = stored_of(bytes);
        self.end(number, was, stored, error)
    }

    /// Stores a job's end (`was`: the state it is in), and tells its waiters, event
    /// streams, webhook and channels.
    fn end(
        &mut self,
        number: u64,
        was: JobState,
        stored: StoredAnswer,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let state = end_state(&stored);
        let ended = self.store.finish(
            Ending {
                number,
                state,
                answer: &stored,
                error: error.as_deref(),
            },
            now_ms(),
        )?;
        self.ended(number, was, stored, ended);
        Ok(())
    }

    /// What follows a job's end in the store (`ended`: its record, `None` when it had
    /// ended already): the counts, the log, its waiters, event streams, webhook and
    /// channels.
    pub(super) fn ended(
        &mut self,
        number: u64,
        was: JobState,
        stored: StoredAnswer,
        ended: Option<JobRecord>,
    ) {
        if let Some(ended) = ended {
            let state = ended.state;
            let count = self.counts.of(was);
            *count = count.saturating_sub(1);
            *self.counts.of(state) += 1;
            // A job that succeeded at its first run is routine, one line per job at
            // the rate of submits (the submit's access-log line names the request); a
            // failure or a run that needed more than one attempt is news.
            let level = match state == JobState::Succeeded && ended.attempts <= 1 {
                true => log::Level::Debug,
                false => log::Level::Info,
            };
            log::log!(
                level,
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
        } else {
            log::debug!("jobs: job number {number} has ended already; a later answer is dropped");
        }
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

    /// Starts runs while fewer than `max_running` are in the pipeline: every job that
    /// can start now, with one call of the store (one statement on PostgreSQL).
    pub(super) fn dispatch(&mut self) {
        // Jobs cancelled while they waited take no place: the next ones are taken
        // until the places are filled or the queue is empty.
        while !self.draining {
            let free = self.config.max_running.saturating_sub(self.running.len());
            let take = free.min(self.queue.len());
            if take == 0 || !self.start_some(take) {
                return;
            }
        }
    }

    /// Starts the first `take` jobs of the queue; false if the store failed.
    fn start_some(&mut self, take: usize) -> bool {
        let taken: Vec<(u64, i64)> = self.queue.drain(..take).collect();
        let numbers: Vec<u64> = taken.iter().map(|(number, _)| *number).collect();
        let started = match self.store.start_many(&numbers, now_ms()) {
            Ok(started) => started,
            Err(e) => {
                log::error!("jobs: {} jobs cannot start: {e}", numbers.len());
                // They wait for the next batch, in their order.
                for job in taken.into_iter().rev() {
                    self.queue.push_front(job);
                }
                return false;
            }
        };
        // The jobs left out were cancelled while they waited.
        for StartedJob {
            record,
            head,
            body,
            client,
        } in started
        {
            self.dispatch_started(&record, head, body, client);
        }
        true
    }
}

/// The state a run's answer ends its job in.
pub(super) fn end_state(stored: &StoredAnswer) -> JobState {
    if stored.status < 400 {
        JobState::Succeeded
    } else {
        JobState::Failed
    }
}

/// What is stored of a run's HTTP answer, and its error (a stage's answer that is not
/// HTTP is stored as the failure it is).
fn stored_of(bytes: &[u8]) -> (StoredAnswer, Option<String>) {
    match answers::stored_from_http(bytes) {
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
    }
}

/// A client's address as text, as its `Display` writes it (`192.0.2.1:8080`), an IPv4
/// one without the formatter (about 1,700 instructions a submit through it).
fn client_text(address: SocketAddr) -> String {
    let SocketAddr::V4(v4) = address else {
        return address.to_string();
    };
    let mut text = String::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, u32::from(octet));
    }
    text.push(':');
    push_decimal(&mut text, u32::from(v4.port()));
    text
}

/// Appends `value` in decimal.
fn push_decimal(text: &mut String, value: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod client_tests {
    use super::client_text;

    #[test]
    fn a_client_address_reads_as_its_display() {
        for text in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.20.3.40:9",
            "[::1]:443",
            "[2001:db8::7]:1",
        ] {
            let address: std::net::SocketAddr = text.parse().expect("an address");
            assert_eq!(client_text(address), address.to_string());
            assert_eq!(client_text(address), text);
        }
    }
}
