//! The store's log synced by the service, only for the commits someone hears of
//! (durability `full` on SQLite).
//!
//! At `synchronous=FULL` every commit waits for the `fsync` of the log, and the `fsync`s
//! per second bound the jobs per second: at `wrk -c32` of cheap submits a batch is
//! started by whatever came first, a submit or a run's answer, and about half the
//! commits held nothing but runs' ends and starts, which no one waits for. Here the
//! store commits at `synchronous=NORMAL` once the service has taken its log
//! ([`JobStore::log_to_sync`]), and the service syncs the log (`fdatasync`) after a
//! commit whose batch tells anyone anything: an answer (a `202` included), an event
//! stream's part, a self-test, an admin answer, a notice on a channel, a job's event
//! while an event stream watches a job here. The sync also makes every commit before
//! it durable, so nothing is told of any commit before it is on the disk. A batch that
//! only stores runs' ends, starts runs or publishes is not synced by itself: its events
//! that tell of an end wait for the store's scrub, whose checkpoint syncs the log first
//! (see `scrub`), and a power cut before any sync loses only changes no one heard of (a
//! run's end or start: the job runs again after the restart, as a run under way
//! does). A `kill -9` loses nothing: the commit is in the operating system's cache.
//!
//! [`JobStore::log_to_sync`]: crate::jobs::JobStore::log_to_sync

use super::{answers, Event, Service};

/// The log the service syncs, and whether commits since its last sync wait for one.
pub(super) struct LogSync {
    log: std::fs::File,
    /// A commit wrote to the log since its last sync.
    unsynced: bool,
}

impl LogSync {
    pub(super) fn new(log: std::fs::File) -> LogSync {
        LogSync {
            log,
            unsynced: false,
        }
    }
}

impl Service {
    /// After the batch's commit went through: syncs the log if the batch tells anyone
    /// anything and a commit since the last sync wrote to it. A
    /// failed sync refuses the batch's answers (`503`; the commit stays in the store,
    /// which runs its jobs, but no one is told it is on the disk) and the self-test
    /// reports it until a sync succeeds.
    pub(super) fn sync_log(&mut self) {
        if self.log_sync.is_none() {
            return;
        }
        let watched = !self.seen_events.is_empty();
        let told = self
            .outbox
            .iter()
            .chain(&self.early)
            .any(|event| is_told(event, watched))
            || !self.admin_pending.is_empty();
        let Some(sync) = &mut self.log_sync else {
            return;
        };
        sync.unsynced |= self.store.last_commit_wrote();
        if !(told && sync.unsynced) {
            return;
        }
        match sync.log.sync_data() {
            Ok(()) => {
                sync.unsynced = false;
                self.sync_error = None;
            }
            Err(e) => {
                if self.warnings.commit_failed.allow() {
                    log::error!(
                        "jobs: the job log's sync failed, the batch's answers are refused: {e}"
                    );
                }
                let why = e.to_string();
                self.early = refused(std::mem::take(&mut self.early), &why);
                self.outbox = refused(std::mem::take(&mut self.outbox), &why);
                self.admin_pending
                    .refuse("the job store cannot sync its log");
                self.sync_error = Some(format!("syncing the log: {why}"));
            }
        }
    }
}

/// Whether an event tells a client (or the front end's self-test, or a channel's
/// subscribers) something; a job's event on its channel does only while an event
/// stream watches a job here (`watched`), else it reaches no one.
fn is_told(event: &Event, watched: bool) -> bool {
    match event {
        Event::Dispatch { .. } | Event::Interrupt { .. } => false,
        Event::Publish(_) => watched,
        _ => true,
    }
}

/// A committed batch's events after its sync failed: its answers become `503`;
/// dispatches, interrupts and publishes go as they would.
fn refused(events: Vec<Event>, why: &str) -> Vec<Event> {
    let failed = answers::store_failed();
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Reply { to, .. }
            | Event::Hold { to, .. }
            | Event::StreamPart {
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
