//! The job admin API's side in the job service: listing jobs, reading the feed of
//! changes, retrying a failed job and cancelling jobs by filter, asked for by the
//! control listener's threads over an [`AdminLink`].
//!
//! An admin call is a [`Command::Admin`](super::Command) like any other: it is
//! applied in the batch's transaction, and answered only once the batch is committed
//! (a failed commit answers `503`), so what it reports is on the disk.

use super::{Command, Service};
use crate::jobs::clock::now_ms;
use crate::jobs::store::{JobChange, JobFilter, JobRecord, JobState, StoreError};
use crate::jobs::tag::job_tag;
use crossbeam_channel::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most jobs a page of a listing holds.
pub const MAX_PAGE: usize = 1000;

/// What the admin API asks the job service.
#[derive(Debug)]
pub enum AdminRequest {
    /// A page of jobs: up to `limit` numbered above `after` that pass `filter`.
    List {
        /// Which jobs.
        filter: JobFilter,
        /// The cursor: the number of the last job of the previous page (0: the first).
        after: u64,
        /// The most jobs in the page (at most [`MAX_PAGE`]).
        limit: usize,
    },
    /// Up to `limit` changes of state after sequence number `since`.
    Changes {
        /// The last sequence number the caller has.
        since: u64,
        /// The most changes answered.
        limit: usize,
    },
    /// Queue a failed job again.
    Retry {
        /// The job's public id.
        id: String,
    },
    /// Cancel every unfinished job that passes the filter.
    Cancel {
        /// Which jobs (only scheduled, queued and running ones are cancelled).
        filter: JobFilter,
    },
}

/// The service's answer to an admin request: an HTTP status and a JSON document.
pub type AdminAnswer = (u16, serde_json::Value);

/// An admin request with where to send its answer.
#[derive(Debug)]
pub struct AdminCall {
    /// The request.
    pub request: AdminRequest,
    /// Where the answer goes, once the batch is committed.
    pub answer: Sender<AdminAnswer>,
}

/// A handle on the job service for the admin API, usable from any thread. It does not
/// keep the service running: once the front end's handle stops, calls answer `503`.
#[derive(Clone, Debug)]
pub struct AdminLink {
    commands: Arc<Mutex<Option<Sender<Command>>>>,
}

impl AdminLink {
    pub(super) fn new(commands: Sender<Command>) -> AdminLink {
        AdminLink {
            commands: Arc::new(Mutex::new(Some(commands))),
        }
    }

    /// Drops the link's sender (every clone's), so that the service can stop.
    pub(super) fn close(&self) {
        if let Ok(mut commands) = self.commands.lock() {
            *commands = None;
        }
    }

    /// Asks the service, and waits at most `timeout` for its answer.
    ///
    /// Errors: `503` (as an answer) when the service has stopped or does not answer in
    /// time.
    pub fn call(&self, request: AdminRequest, timeout: Duration) -> AdminAnswer {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let call = AdminCall {
            request,
            answer: tx,
        };
        let sent = match self.commands.lock() {
            Ok(commands) => commands
                .as_ref()
                .is_some_and(|c| c.send(Command::Admin(call)).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return unavailable("the job store's thread has stopped");
        }
        rx.recv_timeout(timeout)
            .unwrap_or_else(|_| unavailable("the job store did not answer in time"))
    }
}

fn unavailable(why: &str) -> AdminAnswer {
    (503, serde_json::json!({ "error": why }))
}

fn error(status: u16, why: &str) -> AdminAnswer {
    (status, serde_json::json!({ "error": why }))
}

/// A job as the admin API shows it: never its request or its answer.
pub fn summary(record: &JobRecord, task: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "state": record.state.as_str(),
        "task": task,
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
        "not_before_ms": record.not_before_ms,
        "attempts": record.attempts,
        "status": record.status,
        "error": record.error.as_deref().map(error_summary),
    })
}

/// The first line of an error, at most 200 characters.
fn error_summary(error: &str) -> String {
    error
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// A change as the feed shows it.
pub fn change_json(change: &JobChange) -> serde_json::Value {
    serde_json::json!({
        "seq": change.seq,
        "id": change.id,
        "state": change.state.as_str(),
        "at_ms": change.at_ms,
    })
}

/// Admin answers waiting for the batch's commit, or for the scrub after it.
#[derive(Default)]
pub(super) struct Pending(Vec<(Sender<AdminAnswer>, AdminAnswer)>);

impl Pending {
    /// Whether no answer waits.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Answers each `503` instead (`why`: what the store could not do).
    pub(super) fn refuse(&mut self, why: &str) {
        for (to, _) in self.0.drain(..) {
            let _ = to.send(unavailable(why));
        }
    }
}

impl Service {
    /// Applies an admin call; its answer waits for the commit.
    pub(super) fn admin(&mut self, call: AdminCall) {
        let answer = match self.admin_answer(call.request) {
            Ok(answer) => answer,
            Err(e) => {
                log::error!("jobs: an admin request failed: {e}");
                unavailable("the job store failed")
            }
        };
        self.admin_pending.0.push((call.answer, answer));
    }

    /// The batch's commit went through: its admin answers wait with the batch's other
    /// answers for the store's scrub (see `scrub`).
    pub(super) fn admin_committed(&mut self) {
        self.admin_held.0.append(&mut self.admin_pending.0);
    }

    /// Whether committed admin answers wait for the store's scrub.
    pub(super) fn admin_waiting(&self) -> bool {
        !self.admin_held.0.is_empty()
    }

    /// Sends the committed admin answers (after the scrub that followed their commit).
    pub(super) fn admin_tell(&mut self) {
        for (to, answer) in self.admin_held.0.drain(..) {
            let _ = to.send(answer);
        }
    }

    /// The batch's commit failed: its admin answers are `503`.
    pub(super) fn admin_refuse(&mut self) {
        self.admin_pending.refuse("the job store cannot commit");
    }

    fn admin_answer(&mut self, request: AdminRequest) -> Result<AdminAnswer, StoreError> {
        Ok(match request {
            AdminRequest::List {
                filter,
                after,
                limit,
            } => {
                let limit = limit.clamp(1, MAX_PAGE);
                let jobs = self.store.list(&filter, after, limit)?;
                let next = match jobs.len() == limit {
                    true => jobs.last().map(|(record, _)| record.number.to_string()),
                    false => None,
                };
                let jobs: Vec<_> = jobs
                    .iter()
                    .map(|(record, task)| summary(record, task.as_deref()))
                    .collect();
                (200, serde_json::json!({ "jobs": jobs, "next": next }))
            }
            AdminRequest::Changes { since, limit } => {
                let changes = self.store.changes(since, limit.clamp(1, MAX_PAGE))?;
                let last_seq = match changes.last() {
                    Some(change) => change.seq,
                    None => since.min(self.store.last_seq()?),
                };
                let changes: Vec<_> = changes.iter().map(change_json).collect();
                (
                    200,
                    serde_json::json!({ "changes": changes, "last_seq": last_seq }),
                )
            }
            AdminRequest::Retry { id } => self.admin_retry(&id)?,
            AdminRequest::Cancel { filter } => {
                let mut cancelled = 0u64;
                let mut after = 0;
                loop {
                    let page = self.store.list(&filter, after, MAX_PAGE)?;
                    let Some((last, _)) = page.last() else { break };
                    after = last.number;
                    for (record, _) in &page {
                        if !record.state.is_final() && self.cancel_record(record)?.is_some() {
                            cancelled += 1;
                        }
                    }
                }
                log::info!("jobs: {cancelled} jobs cancelled by the admin API");
                (200, serde_json::json!({ "cancelled": cancelled }))
            }
        })
    }

    fn admin_retry(&mut self, id: &str) -> Result<AdminAnswer, StoreError> {
        let Some(record) = self.store.by_id(id)? else {
            return Ok(error(404, "no such job"));
        };
        if record.state != JobState::Failed {
            return Ok(error(
                409,
                &format!(
                    "the job is {}; only a failed job is retried",
                    record.state.as_str()
                ),
            ));
        }
        let Some(queued) = self.store.retry(record.number, now_ms())? else {
            return Ok(error(409, "the job's request is no longer stored"));
        };
        self.counts.failed = self.counts.failed.saturating_sub(1);
        self.counts.queued += 1;
        self.queue.push_back((queued.number, queued.created_ms));
        log::info!("jobs: job {} queued again", job_tag(queued.id.as_bytes()));
        self.changed(&queued, None);
        let task = self
            .store
            .list(&JobFilter::default(), queued.number - 1, 1)?;
        let task = task.first().and_then(|(_, task)| task.as_deref());
        Ok((200, summary(&queued, task)))
    }
}
