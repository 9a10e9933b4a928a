//! The store's log synced apart from its commits (durability `full` on SQLite).
//!
//! A commit at `synchronous=FULL` writes the batch's log frames and then waits for their
//! `fsync`, and the job thread does nothing else meanwhile: at `wrk -c32` of cheap
//! submits that wait was most of each batch's time. Here the store commits at
//! `synchronous=NORMAL` (the log's frames reach the operating system; the header's sync
//! when the log starts again and the checkpoints' syncs stay) and a thread of its own,
//! `job-log-sync`, syncs the log (`fdatasync`) while the job thread takes and applies
//! the next batch. A batch's answers, dispatches, admin answers and webhooks wait for
//! the sync that began after its commit: nothing is told of a commit before it is on
//! the disk, as before. At most one batch waits for its sync: the next commit waits for
//! it first, so every batch's events leave in the order of the commits.

use super::{admin, answers, Event, Service};
use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

/// The thread that syncs the log, and the committed batch waiting for it.
pub(super) struct LogSync {
    /// Asks the thread for a sync; closed to stop it.
    requests: Option<Sender<()>>,
    /// Each sync's outcome, one per request.
    pub(super) done: Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
    /// The committed batch whose sync is under way.
    waiting: Option<Unsynced>,
}

/// A committed batch's events, until its sync returns.
pub(super) struct Unsynced {
    early: Vec<Event>,
    outbox: Vec<Event>,
    admin: admin::Pending,
}

impl LogSync {
    /// Starts the thread that syncs `log`.
    pub(super) fn start(log: std::fs::File) -> std::io::Result<LogSync> {
        let (requests, asked) = crossbeam_channel::unbounded::<()>();
        let (told, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("job-log-sync".into())
            .spawn(move || {
                for () in asked {
                    let synced = log.sync_data().map_err(|e| e.to_string());
                    if told.send(synced).is_err() {
                        return;
                    }
                }
            })?;
        Ok(LogSync {
            requests: Some(requests),
            done,
            thread: Some(thread),
            waiting: None,
        })
    }

    /// Whether a committed batch waits for its sync.
    pub(super) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Stops the thread (no batch waits when this is called).
    fn stop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("jobs: the thread that syncs the job log panicked");
            }
        }
    }
}

impl Drop for LogSync {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Service {
    /// After a commit that wrote something: its events wait for the log's sync, which
    /// starts now. False (and nothing is kept) when the store's commits sync
    /// themselves, the commit failed or wrote nothing: the events can leave at once
    /// (no batch waits for a sync when a commit is made).
    pub(super) fn defer_to_sync(&mut self, committed: bool) -> bool {
        if !committed || !self.store.last_commit_wrote() {
            return false;
        }
        let Some(sync) = &mut self.log_sync else {
            return false;
        };
        let asked = sync.requests.as_ref().map(|r| r.send(()));
        if !matches!(asked, Some(Ok(()))) {
            log::error!("jobs: the thread that syncs the job log has stopped");
            return false;
        }
        sync.waiting = Some(Unsynced {
            early: std::mem::take(&mut self.early),
            outbox: std::mem::take(&mut self.outbox),
            admin: std::mem::take(&mut self.admin_pending),
        });
        true
    }

    /// Lets the batch that waits for its sync go once the sync has returned; `block`:
    /// waits for it. `between_batches`: no batch is under way, so the webhooks due may
    /// leave too (a batch under way may have made some due that it has not committed).
    /// Returns whether a batch was let go.
    pub(super) fn release_synced(&mut self, block: bool, between_batches: bool) -> bool {
        let Some(sync) = &mut self.log_sync else {
            return false;
        };
        if sync.waiting.is_none() {
            return false;
        }
        let outcome = match block {
            true => sync.done.recv().map_err(|e| e.to_string()),
            false => match sync.done.try_recv() {
                Ok(outcome) => Ok(outcome),
                Err(_) => return false,
            },
        };
        let synced = outcome.and_then(|synced| synced);
        let Some(mut batch) = sync.waiting.take() else {
            return false;
        };
        if let Err(e) = &synced {
            if self.warnings.commit_failed.allow() {
                log::error!(
                    "jobs: the job log's sync failed, the batch's answers are refused: {e}"
                );
            }
            self.sync_error = Some(format!("syncing the log: {e}"));
            batch.early = refused_after_sync(batch.early, e);
            batch.outbox = refused_after_sync(batch.outbox, e);
            batch.admin.refuse("the job store cannot sync its log");
        } else {
            self.sync_error = None;
        }
        self.committed(batch.early, batch.outbox, batch.admin, between_batches);
        true
    }
}

/// A committed batch's events after its sync failed: its answers become `503` (the
/// commit is kept in the store, which runs its jobs, but no one is told it is on the
/// disk); dispatches, interrupts and publishes go as they would.
fn refused_after_sync(events: Vec<Event>, why: &str) -> Vec<Event> {
    let failed = answers::store_failed();
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Reply { to, .. } | Event::Hold { to, .. } => Some(Event::Reply {
                to,
                bytes: to.render(&failed),
            }),
            Event::StreamPart {
                to, start: true, ..
            } => Some(Event::Reply {
                to,
                bytes: to.render(&failed),
            }),
            Event::StreamPart { .. } => None,
            Event::SelfTest { token, .. } => Some(Event::SelfTest {
                token,
                result: Err(format!("the job store cannot sync its log: {why}")),
            }),
            other => Some(other),
        })
        .collect()
}
