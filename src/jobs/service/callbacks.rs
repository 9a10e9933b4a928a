//! The job service's side of webhooks (see [`crate::jobs::webhooks`]): it sends a
//! submit's `Callback-URL` to a delivery thread to be checked before the job is stored,
//! registers the callback with the job, stores the message when the job ends, schedules
//! the attempts, and records what each attempt came back with. Every store access stays
//! on the service's thread; the network calls happen on the delivery threads.

use super::{Command, Service};
use crate::http::field_values;
use crate::http::Response;
use crate::jobs::clock::now_ms;
use crate::jobs::store::{JobRecord, StoreError, StoredAnswer};
use crate::jobs::tag::job_tag;
use crate::jobs::webhooks::{
    self, DeliveryState, Outcome, Pool, Task, WebhookConfig, WebhookRecord, CALLBACK_HEADER,
};
use crate::jobs::{answers, ssrf};
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

/// The webhooks' state on the service's thread.
pub(super) struct Deliveries {
    /// The delivery threads.
    pool: Pool<Command>,
    /// The schedule and limits.
    config: WebhookConfig,
    /// When each pending message is due: (when, job number).
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Job numbers whose attempt is with the delivery threads (in progress, or waiting
    /// for its destination there: the per-destination limit is theirs).
    in_flight: HashSet<u64>,
}

/// An instant for a time in milliseconds since the Unix epoch (now, if it has passed).
pub(super) fn instant_of(ms: i64) -> Instant {
    let ahead = ms.saturating_sub(now_ms()).max(0) as u64;
    Instant::now() + Duration::from_millis(ahead)
}

impl Service {
    /// Starts the delivery threads (if webhooks are configured) and schedules the
    /// messages a previous process left pending.
    pub(super) fn start_webhooks(&mut self) -> Result<(), StoreError> {
        let Some(config) = self.config.webhooks.clone() else {
            return Ok(());
        };
        let pool = Pool::start(&config).map_err(|e| StoreError::Open {
            path: self.config.store_name(),
            reason: format!("the webhook delivery threads could not start: {e}"),
        })?;
        let mut deliveries = Deliveries {
            pool,
            config,
            due: BinaryHeap::new(),
            in_flight: HashSet::new(),
        };
        let pending = self.store.webhooks_pending()?;
        if !pending.is_empty() {
            log::info!("webhooks: {} deliveries pending", pending.len());
        }
        for record in pending {
            let at = instant_of(record.next_ms.unwrap_or(0));
            deliveries.due.push(Reverse((at, record.number)));
        }
        self.deliveries = Some(deliveries);
        Ok(())
    }

    /// Waits up to `wait` for a command, or for a delivery thread's outcome (then
    /// `Ok(None)`, and [`on_webhook_outcomes`](Self::on_webhook_outcomes) takes it).
    pub(super) fn receive(
        &self,
        commands: &Receiver<Command>,
        wait: Duration,
    ) -> Result<Option<Command>, RecvTimeoutError> {
        let Some(deliveries) = &self.deliveries else {
            return match commands.recv_timeout(wait) {
                Ok(command) => Ok(Some(command)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(e) => Err(e),
            };
        };
        let mut select = crossbeam_channel::Select::new();
        let command_index = select.recv(commands);
        select.recv(&deliveries.pool.outcomes);
        match select.ready_timeout(wait) {
            Ok(index) if index == command_index => match commands.try_recv() {
                Ok(command) => Ok(Some(command)),
                Err(TryRecvError::Empty) => Ok(None),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            },
            Ok(_) | Err(_) => Ok(None),
        }
    }

    /// Takes a submit that asks for a callback: its URL goes to a delivery thread to
    /// be checked, and the submit goes on when the verdict comes back. Without
    /// webhooks configured it is answered `400`. Any other command is given back.
    pub(super) fn intercept_callback(&mut self, command: Command) -> Option<Command> {
        let Command::Submit { reply, head, .. } = &command else {
            return Some(command);
        };
        let Some(url) = callback_url(head) else {
            return Some(command);
        };
        let reply = *reply;
        match &self.deliveries {
            Some(deliveries) => {
                deliveries.pool.send(Task::Check {
                    url,
                    carry: command,
                });
            }
            None => self.reply(
                reply,
                &Response::error(
                    400,
                    "this server delivers no callbacks (it has no --webhook-secret)",
                ),
            ),
        }
        None
    }

    /// Applies what the delivery threads have reported.
    pub(super) fn on_webhook_outcomes(&mut self) {
        let Some(deliveries) = &self.deliveries else {
            return;
        };
        let outcomes: Vec<Outcome<Command>> = deliveries.pool.outcomes.try_iter().collect();
        for outcome in outcomes {
            match outcome {
                Outcome::Checked { carry, verdict } => self.checked(carry, verdict),
                Outcome::Attempted {
                    number,
                    attempt,
                    retry_after,
                } => {
                    if let Err(e) = self.attempted(number, attempt, retry_after) {
                        log::error!(
                            "jobs: job number {number}: a webhook attempt is not recorded: {e}"
                        );
                    }
                }
            }
        }
    }

    fn checked(&mut self, submit: Command, verdict: Result<(), ssrf::CallbackError>) {
        let Command::Submit {
            reply,
            head,
            body,
            wait,
            client,
        } = submit
        else {
            return;
        };
        if let Err(refused) = verdict {
            log::info!("jobs: a submit is refused: {refused}");
            self.reply(reply, &Response::error(400, &refused.to_string()));
            return;
        }
        if let Err(e) = self.submit(reply, head, body, wait, client) {
            log::error!("jobs: {e}");
            self.reply(reply, &answers::store_failed());
        }
    }

    /// Called once a job is stored: registers its callback, if its request has one
    /// (already checked: see [`intercept_callback`](Self::intercept_callback)).
    pub(super) fn webhook_registered(
        &mut self,
        record: &JobRecord,
        head: &[u8],
    ) -> Result<(), StoreError> {
        if self.deliveries.is_none() {
            return Ok(());
        }
        let Some(url) = callback_url(head) else {
            return Ok(());
        };
        log::debug!(
            "jobs: job {} will be delivered to {}",
            job_tag(record.id.as_bytes()),
            ssrf::origin(&url)
        );
        self.store.webhook_add(record.number, &record.id, &url)
    }

    /// Called when a job ends (with its answer; none when cancelled): stores its
    /// message and schedules the first attempt.
    pub(super) fn webhook_job_ended(&mut self, record: &JobRecord, answer: Option<&StoredAnswer>) {
        if self.deliveries.is_none() {
            return;
        }
        let stored = match self.store.webhook(record.number) {
            Ok(Some(stored)) if stored.state == DeliveryState::Waiting => stored,
            Ok(_) => return,
            Err(e) => {
                log::error!(
                    "jobs: job {}: its webhook cannot be read: {e}",
                    job_tag(record.id.as_bytes())
                );
                return;
            }
        };
        let now = now_ms();
        let pending = WebhookRecord {
            state: DeliveryState::Pending,
            payload: Some(webhooks::message(&record.id, record.state, answer)),
            next_ms: Some(now),
            ..stored
        };
        if let Err(e) = self.store.webhook_save(&pending) {
            log::error!(
                "jobs: job {}: its webhook cannot be stored: {e}",
                job_tag(record.id.as_bytes())
            );
            return;
        }
        if let Some(deliveries) = &mut self.deliveries {
            deliveries
                .due
                .push(Reverse((Instant::now(), record.number)));
        }
    }

    /// Schedules messages taken over from another front end (see `remote`).
    pub(super) fn schedule_webhooks(&mut self, records: Vec<WebhookRecord>) {
        let Some(deliveries) = &mut self.deliveries else {
            return;
        };
        for record in records {
            let at = instant_of(record.next_ms.unwrap_or(0));
            deliveries.due.push(Reverse((at, record.number)));
        }
    }

    /// When the next message is due.
    pub(super) fn next_webhook_due(&self) -> Option<Instant> {
        let deliveries = self.deliveries.as_ref()?;
        deliveries.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Sends the messages that are due to the delivery threads (which keep the
    /// per-destination limit: see [`WebhookConfig::per_host`]).
    pub(super) fn webhooks_due(&mut self, now: Instant) {
        loop {
            let Some(deliveries) = &mut self.deliveries else {
                return;
            };
            let Some(Reverse((at, number))) = deliveries.due.peek().copied() else {
                return;
            };
            if at > now {
                return;
            }
            deliveries.due.pop();
            if deliveries.in_flight.contains(&number) {
                continue;
            }
            let record = match self.store.webhook(number) {
                Ok(Some(record)) if record.state == DeliveryState::Pending => record,
                Ok(_) => continue,
                Err(e) => {
                    log::error!("jobs: job number {number}: its webhook cannot be read: {e}");
                    continue;
                }
            };
            let Some(deliveries) = &mut self.deliveries else {
                return;
            };
            deliveries.in_flight.insert(number);
            log::debug!(
                "jobs: job {}: webhook attempt {} to {}",
                job_tag(record.job_id.as_bytes()),
                record.attempts.len() + 1,
                ssrf::origin(&record.url)
            );
            deliveries.pool.send(Task::Deliver {
                number,
                job_id: record.job_id,
                url: record.url,
                payload: record.payload.unwrap_or_default(),
            });
        }
    }

    /// Records an attempt and decides what follows: delivered, gone, given up, or
    /// another attempt later.
    fn attempted(
        &mut self,
        number: u64,
        attempt: webhooks::Attempt,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let Some(deliveries) = &mut self.deliveries else {
            return Ok(());
        };
        deliveries.in_flight.remove(&number);
        let config = deliveries.config.clone();
        let Some(mut record) = self.store.webhook(number)? else {
            return Ok(());
        };
        let status = attempt.status;
        let at_ms = attempt.at_ms;
        record.push_attempt(attempt);
        let failures = record
            .attempts
            .iter()
            .filter(|a| !a.status.is_some_and(|s| (200..300).contains(&s)))
            .count() as u32;
        record.next_ms = None;
        record.state = match status {
            Some(200..=299) => DeliveryState::Delivered,
            Some(410) => DeliveryState::Gone,
            _ => {
                let first = *record.first_failure_ms.get_or_insert(at_ms);
                let give_up_at = first.saturating_add(config.give_up.as_millis() as i64);
                let now = now_ms();
                if now >= give_up_at {
                    DeliveryState::GivenUp
                } else {
                    let wait = config
                        .backoff(failures, webhooks::jitter())
                        .max(retry_after.unwrap_or_default());
                    let next = now.saturating_add(wait.as_millis() as i64).min(give_up_at);
                    record.next_ms = Some(next);
                    DeliveryState::Pending
                }
            }
        };
        let counts = &mut self.commit_stats.webhooks;
        match record.state {
            DeliveryState::Delivered => counts.delivered += 1,
            DeliveryState::Gone => counts.gone += 1,
            DeliveryState::GivenUp => counts.given_up += 1,
            _ => counts.retrying += 1,
        }
        match record.state {
            DeliveryState::Pending => {
                let next = record.next_ms.unwrap_or(0);
                log::info!(
                    "jobs: job {}: webhook attempt {} failed; next in {} ms",
                    job_tag(record.job_id.as_bytes()),
                    record.attempts.len(),
                    next.saturating_sub(now_ms()).max(0)
                );
                if let Some(deliveries) = &mut self.deliveries {
                    deliveries.due.push(Reverse((instant_of(next), number)));
                }
            }
            state => log::info!(
                "jobs: job {}: webhook {} after {} attempts",
                job_tag(record.job_id.as_bytes()),
                state.as_str(),
                record.attempts.len()
            ),
        }
        self.store.webhook_save(&record)
    }

    /// The status answer for `GET /jobs/{id}`, with the job's webhook if it has one.
    pub(super) fn status_with_webhook(
        &mut self,
        record: &JobRecord,
    ) -> Result<Response, StoreError> {
        let mut response = answers::status(record, &self.config.path);
        if self.deliveries.is_none() {
            return Ok(response);
        }
        let Some(webhook) = self.store.webhook(record.number)? else {
            return Ok(response);
        };
        if let Ok(mut document) = serde_json::from_slice::<serde_json::Value>(&response.body) {
            document["webhook"] = webhook.to_json();
            response.body = document.to_string().into_bytes();
        }
        Ok(response)
    }
}

/// A request head's `Callback-URL`, if it has one.
fn callback_url(head: &[u8]) -> Option<String> {
    field_values(head, CALLBACK_HEADER)
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
