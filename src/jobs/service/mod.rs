//! The job service: the thread that owns the job store, and the front end's handle on
//! it.
//!
//! The front end sends [`Command`]s (a submit, a status read, an answer from the
//! loopback...) and never waits. The thread takes every command waiting, applies them in
//! one transaction, commits once, and only then sends back its [`Event`]s: answers for
//! the connections that asked, jobs to dispatch into the pipeline, interrupts for
//! cancelled runs. After each batch it rings a doorbell (a ZeroMQ PAIR socket) so the
//! front end, which sleeps in `zmq_poll`, wakes to read them.
//!
//! It also keeps the queue of jobs waiting for a run (at most
//! [`JobsConfig::max_running`] run at once), the long-polls waiting for a change of
//! state, the retries of runs the pipeline could not take, and the expiry of old jobs.

pub mod admin;
mod callbacks;
mod ends;
mod lifecycle;
mod log_sync;
mod messages;
mod random;
mod remote;
mod scrub;
mod settle;
mod waiters;

use super::answers;
use super::clock::now_ms;
use super::store::{JobRecord, JobState, JobStore, StateCounts, StoreError};
use super::JobsConfig;
use crate::base::log_limit::LogLimit;
use crate::http::Response;
use crate::pipeline::loopback::{Failure, FailureKind};
use base64::Engine;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use sha2::Digest;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use waiters::Waiter;

pub use messages::{Command, Event, ReplyTo, RunAnswer};
pub use waiters::EventSwitch;

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 4096;
/// The first wait before a run the pipeline could not take is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between runs.
const RETRY_LAST: Duration = Duration::from_secs(30);

/// Figures about the jobs, for the status document and the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobStats {
    /// How many jobs are in each state.
    pub counts: StateCounts,
    /// How long the oldest queued job has waited, in milliseconds.
    pub oldest_queued_ms: Option<u64>,
    /// Commits so far.
    pub commits: u64,
    /// The last commit's duration, in microseconds.
    pub commit_last_us: u64,
    /// A moving average of commit durations (weight 1/16), in microseconds.
    pub commit_average_us: u64,
    /// The longest commit so far, in microseconds.
    pub commit_max_us: u64,
    /// Every commit's duration.
    pub commit_seconds: crate::base::metrics::Histogram,
    /// SQL statements the store has sent to its database (see
    /// [`JobStore::statements`]).
    pub statements: u64,
    /// Webhook attempts so far, by what followed them.
    pub webhooks: WebhookCounts,
}

/// Webhook attempts, by what followed each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// The receiver took the message (`2xx`).
    pub delivered: u64,
    /// The receiver answered `410 Gone`: no more attempts.
    pub gone: u64,
    /// The attempt failed and another follows later.
    pub retrying: u64,
    /// The attempt failed and the message was given up.
    pub given_up: u64,
}

impl JobStats {
    /// The figures as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.counts;
        serde_json::json!({
            "scheduled": c.scheduled,
            "queued": c.queued,
            "running": c.running,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "cancelled": c.cancelled,
            "expired": c.expired,
            "oldest_queued_ms": self.oldest_queued_ms,
            "commits": self.commits,
            "commit_last_us": self.commit_last_us,
            "commit_average_us": self.commit_average_us,
            "commit_max_us": self.commit_max_us,
            "statements": self.statements,
        })
    }
}

/// The front end's handle on the job service thread.
pub struct JobsHandle {
    commands: Option<Sender<Command>>,
    admin: admin::AdminLink,
    events: Receiver<Event>,
    stats: Arc<Mutex<JobStats>>,
    thread: Option<JoinHandle<()>>,
    config: JobsConfig,
    /// With a shared store: the thread that hears other front ends' changes.
    notices: Option<Notices>,
    /// Shared with the service: see [`EventSwitch`].
    every_event: EventSwitch,
}

/// The thread that hears other front ends' changes to a shared store, and hands them
/// to the service as [`Command::Remote`].
struct Notices {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Notices {
    fn start(
        config: &JobsConfig,
        own: &str,
        commands: Sender<Command>,
    ) -> Result<Notices, StoreError> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = config.db_path.to_string_lossy();
        let thread = super::store::postgres::listen(&url, own, Arc::clone(&stop), move |notice| {
            commands.send(Command::Remote(notice)).is_ok()
        })
        .map_err(|e| StoreError::Open {
            path: config.store_name(),
            reason: format!("the thread of change notices could not start: {e}"),
        })?;
        Ok(Notices {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("jobs: the thread of change notices panicked");
            }
        }
    }
}

impl JobsHandle {
    /// Opens the store (on the calling thread, so a bad database is an error here),
    /// queues again the jobs a previous process left unfinished, and starts the service
    /// thread. `doorbell` is a connected PAIR socket whose peer the front end polls.
    ///
    /// Errors: the store's, for a database that cannot be opened or used.
    pub fn start(config: JobsConfig, doorbell: zmq::Socket) -> Result<JobsHandle, StoreError> {
        if config.is_postgres() {
            let url = config.db_path.to_string_lossy();
            let store = super::PostgresStore::open(&url, config.durability)?;
            return Self::start_with(Box::new(store), config, doorbell);
        }
        let store = super::SqliteStore::open_with(&config.db_path, config.durability)?;
        Self::start_with(Box::new(store), config, doorbell)
    }

    /// [`start`](Self::start) with any store.
    pub fn start_with(
        mut store: Box<dyn JobStore>,
        config: JobsConfig,
        doorbell: zmq::Socket,
    ) -> Result<JobsHandle, StoreError> {
        let now = now_ms();
        store.begin()?;
        let lease_ms = config.lease.as_millis().min(i64::MAX as u128) as i64;
        store.renew_lease(lease_ms)?;
        let requeued = store.requeue_running(now)?;
        store.expire(now, ttl_ms(&config))?;
        store.commit()?;
        store.scrub();
        let caller_secret = store.caller_secret()?;
        let queue: VecDeque<(u64, i64)> = store.queued()?.into();
        let next_scheduled = store.next_not_before()?;
        let counts = store.counts()?;
        log::info!(
            "jobs: store {} open; {} scheduled, {} queued ({requeued} were running at the last stop), {} succeeded, {} failed, {} cancelled",
            config.store_name(),
            counts.scheduled,
            counts.queued,
            counts.succeeded,
            counts.failed,
            counts.cancelled
        );
        let store_shared = store.shared().is_some();
        let log_sync = store.log_to_sync().map(log_sync::LogSync::new);
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        let notices = match store.shared() {
            Some(own) => Some(Notices::start(&config, own, command_tx.clone())?),
            None => None,
        };
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let every_event = EventSwitch::new();
        let stats = Arc::new(Mutex::new(JobStats {
            counts,
            ..JobStats::default()
        }));
        let mut service = Service {
            began: Ok(()),
            store,
            caller_secret,
            config: config.clone(),
            events: event_tx,
            doorbell,
            stats: Arc::clone(&stats),
            counts,
            queue,
            next_scheduled,
            retries: BinaryHeap::new(),
            running: HashMap::new(),
            waiters: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_waiter: 0,
            outbox: Vec::new(),
            early: Vec::new(),
            submitted: Vec::new(),
            ending: Vec::new(),
            failed_write: None,
            notify: HashMap::new(),
            next_expiry: Instant::now() + expire_every(&config),
            commit_stats: JobStats::default(),
            warnings: Warnings::new(),
            unsettled: settle::Unsettled::default(),
            draining: false,
            deliveries: None,
            admin_pending: admin::Pending::default(),
            admin_held: admin::Pending::default(),
            unscrubbed: scrub::Unscrubbed::default(),
            lease_due: store_shared.then(|| Instant::now() + config.lease / 3),
            seen_events: HashMap::new(),
            every_event: every_event.clone(),
            log_sync,
            sync_error: None,
            id_prefix: None,
        };
        service.start_webhooks()?;
        let thread = std::thread::Builder::new()
            .name("job-store".into())
            .spawn(move || service.run(command_rx))
            .map_err(|e| StoreError::Open {
                path: config.store_name(),
                reason: format!("the job store's thread could not start: {e}"),
            })?;
        Ok(JobsHandle {
            admin: admin::AdminLink::new(command_tx.clone()),
            commands: Some(command_tx),
            events: event_rx,
            stats,
            thread: Some(thread),
            config,
            notices,
            every_event,
        })
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// A handle for the admin API's calls, from any thread; `None` once stopped.
    pub fn admin_link(&self) -> Option<admin::AdminLink> {
        self.commands.as_ref().map(|_| self.admin.clone())
    }

    /// Hands a command to the service; never blocks.
    pub fn send(&self, command: Command) {
        let sent = self.commands.as_ref().map(|c| c.send(command));
        if !matches!(sent, Some(Ok(()))) {
            log::error!("jobs: the job store's thread has stopped; a command was dropped");
        }
    }

    /// The next event from the service, if one waits.
    pub fn try_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The latest figures.
    pub fn stats(&self) -> JobStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Lets the service finish the commands it has, and waits for its thread.
    pub fn stop(&mut self) {
        // The notices' thread holds a sender of commands: it stops first, so that the
        // service sees its commands end.
        if let Some(notices) = &mut self.notices {
            notices.stop();
        }
        self.commands = None;
        self.admin.close();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("jobs: the job store's thread panicked");
            }
        }
    }
}

impl Drop for JobsHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long to wait before a run the pipeline could not take is tried again, after
/// `attempts` runs.
fn retry_backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_LAST)
}

fn ttl_ms(config: &JobsConfig) -> i64 {
    config.ttl.as_millis().min(i64::MAX as u128) as i64
}

/// How often expired jobs are looked for: a quarter of their time to live, between
/// 100 ms and a minute.
fn expire_every(config: &JobsConfig) -> Duration {
    (config.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// A new job id: 22 URL-safe base64 characters, the last 20 of them 120 bits from the
/// operating system's random source, the first 2 (12 more random bits) `batch`'s when
/// given, else random too (and then the caller's `batch` for the ids that follow).
///
/// Why a batch's ids share their first two characters: the store's index of ids is
/// ordered by them, so the ids of one group commit land together in one or two of its
/// pages, where ids random from the first character dirty one page of it each (at
/// 20,000 stored jobs, 37 log frames per commit of 26 submits against 11). Whoever
/// holds an id still has to guess 120 random bits to find another job; what the shared
/// characters tell is only that two jobs were submitted in one commit.
///
/// Errors: the random source's.
pub fn new_job_id(batch: &mut Option<[u8; 2]>) -> Result<String, getrandom::Error> {
    // 3 bytes make 4 characters, of which the first 2 are the batch's; 15 make the 20
    // others.
    let mut bytes = [0u8; 18];
    random::fill(&mut bytes)?;
    let mut id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let prefix = *batch.get_or_insert([id.as_bytes()[0], id.as_bytes()[1]]);
    id.replace_range(0..4, "");
    let prefix = std::str::from_utf8(&prefix).unwrap_or("AA");
    id.insert_str(0, prefix);
    Ok(id)
}

/// Whether `id` could be a job id (22 URL-safe base64 characters); others are unknown
/// without asking the store.
fn is_job_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A digest of what makes a request the same request: its method and target, and its
/// body. Header fields are left out (dates, tracing ids and such differ between tries).
fn fingerprint(head: &[u8], body: &[u8]) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let method_and_target = match line.iter().rposition(|&b| b == b' ') {
        Some(at) => &line[..at],
        None => line,
    };
    let mut digest = sha2::Sha256::new();
    digest.update((method_and_target.len() as u64).to_le_bytes());
    digest.update(method_and_target);
    digest.update(body);
    digest.finalize().to_vec()
}

/// Whether a failure means the pipeline could not take the run (so another run may
/// succeed), rather than that the work itself failed.
fn is_transient(failure: &Failure) -> bool {
    matches!(
        failure.kind,
        FailureKind::QueueFull
            | FailureKind::WorkerDied
            | FailureKind::NextStageUnavailable
            | FailureKind::ShuttingDown
            | FailureKind::ProxyLost
            | FailureKind::NoWorkers
    )
}

struct Service {
    store: Box<dyn JobStore>,
    /// The store's key for callers' idempotency keys.
    caller_secret: Vec<u8>,
    /// Whether this batch's transaction began, and if not why (for the self-test).
    began: Result<(), String>,
    config: JobsConfig,
    events: Sender<Event>,
    doorbell: zmq::Socket,
    stats: Arc<Mutex<JobStats>>,
    counts: StateCounts,
    /// Jobs waiting for a run: (number, created), oldest first.
    queue: VecDeque<(u64, i64)>,
    /// When the earliest scheduled job may start (milliseconds since the Unix epoch):
    /// the one timer of all scheduled jobs, read from the store at start, after a
    /// release and after a cancel, lowered by a submit.
    next_scheduled: Option<i64>,
    /// Runs to try again: (when, number, created).
    retries: BinaryHeap<Reverse<(Instant, u64, i64)>>,
    /// Jobs in the pipeline, each with whether its end may be stored quietly: its
    /// run is its first, and it has neither error nor progress (see `ends`).
    running: HashMap<u64, bool>,
    /// Long-polls, by job number.
    waiters: HashMap<u64, Vec<Waiter>>,
    /// When each long-poll ends: (when, job number, waiter id).
    deadlines: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    next_waiter: u64,
    /// Events of the batch under way, sent once it is committed and the store has
    /// scrubbed what it removed (see [`JobStore::scrub`] and `scrub`).
    outbox: Vec<Event>,
    /// Committed events, admin answers and webhooks waiting for the store's scrub.
    unscrubbed: scrub::Unscrubbed,
    /// Events of the batch under way that tell of no job's end (`202`s of submits,
    /// dispatches): sent once it is committed, before the scrub.
    early: Vec<Event>,
    /// Runs' ends of the batch under way, stored together (see `ends`).
    ending: Vec<ends::PendingEnd>,
    /// Submits of the batch under way, stored together (see `store_submits`).
    submitted: Vec<lifecycle::Submitted>,
    /// Why a write of the batch under way that must not be kept half-done failed (a
    /// group of submits): the batch is then rolled back instead of committed.
    failed_write: Option<StoreError>,
    /// Channels a job's end is published on, by job number (see [`Command::Notify`]).
    notify: HashMap<u64, Vec<String>>,
    next_expiry: Instant,
    commit_stats: JobStats,
    /// Webhook deliveries, when configured.
    deliveries: Option<callbacks::Deliveries>,
    /// Runs whose ends a failed commit rolled back.
    unsettled: settle::Unsettled,
    /// The front end drains: no job is dispatched any more.
    draining: bool,
    /// Rate limits of the warnings a burst can repeat hundreds of times a second.
    warnings: Warnings,
    /// Admin answers waiting for the batch's commit.
    admin_pending: admin::Pending,
    /// Committed admin answers waiting for the store's scrub.
    admin_held: admin::Pending,
    /// With a shared store: when the lease is next renewed (see `remote`).
    lease_due: Option<Instant>,
    /// The last event each watched job's event streams were sent, by job number, so a
    /// change heard from another front end sends only the events after it.
    seen_events: HashMap<u64, u64>,
    /// Whether every job's events go to the front end, watched or not.
    every_event: EventSwitch,
    /// With a store whose log the service syncs: the log (see `log_sync`).
    log_sync: Option<log_sync::LogSync>,
    /// The first two characters of the ids of the batch under way's submits (see
    /// [`new_job_id`]), chosen by its first.
    id_prefix: Option<[u8; 2]>,
    /// Why the log's last sync failed, until one succeeds (for the self-test).
    sync_error: Option<String>,
}

/// The service's rate-limited warnings (see [`LogLimit`]).
struct Warnings {
    /// A submit refused because the store holds `max_queued` unfinished jobs.
    submit_refused: LogLimit,
    /// A run the pipeline could not take, tried again later.
    run_retried: LogLimit,
    /// A group commit that failed.
    commit_failed: LogLimit,
}

impl Warnings {
    fn new() -> Self {
        Warnings {
            submit_refused: LogLimit::new("jobs: submits refused (too many unfinished jobs)"),
            run_retried: LogLimit::new("jobs: runs not taken by the pipeline"),
            commit_failed: LogLimit::new("jobs: failed commits"),
        }
    }

    fn all(&mut self) -> [&mut LogLimit; 3] {
        [
            &mut self.submit_refused,
            &mut self.run_retried,
            &mut self.commit_failed,
        ]
    }
}

impl Service {
    fn run(&mut self, commands: Receiver<Command>) {
        // The first batch does not wait: the jobs recovered at start (queued, or running
        // when the last process stopped) are dispatched at once, not when the first
        // command or timer comes.
        let mut recovered = true;
        loop {
            self.scrub_if_due(&commands, Instant::now());
            // Runs' ends that the last batch left (it stored submits, see `ends`) are
            // stored by this one, which does not wait for a command.
            let carried = !self.ending.is_empty();
            let wait = match carried {
                true => Duration::ZERO,
                false => self.next_timer().saturating_duration_since(Instant::now()),
            };
            let first = if std::mem::take(&mut recovered) {
                None
            } else {
                match self.receive(&commands, wait) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) if carried => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            self.id_prefix = None;
            self.began = self.store.begin().map_err(|e| e.to_string());
            match &self.began {
                Ok(()) => self.settle_uncertain(),
                Err(e) => log::error!("jobs: cannot start a transaction: {e}"),
            }
            let batch = first.into_iter().chain(commands.try_iter().take(MAX_BATCH));
            for command in batch {
                self.handle(command);
            }
            if carried || self.submitted.is_empty() || self.ends_heard() {
                self.store_ends();
            }
            self.on_webhook_outcomes();
            self.store_submits();
            self.on_timers(Instant::now());
            self.dispatch();
            self.commit();
            // A webhook tells of a job's end, so it leaves as the answers that tell of
            // one do: after the commit that stored the end and the scrub that took the
            // request off the disk (`flush` or a later `scrub_if_due` sends it, never
            // `on_timers`, which runs before the commit).
            self.flush();
        }
        // What waits for a scrub leaves before the thread ends.
        self.scrub_now();
        log::debug!("jobs: the job store's thread stops");
    }

    fn next_timer(&self) -> Instant {
        let mut next = self.next_expiry;
        if let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            next = next.min(*at);
        }
        if let Some(Reverse((at, _, _))) = self.retries.peek() {
            next = next.min(*at);
        }
        if let Some(at) = self.next_webhook_due() {
            next = next.min(at);
        }
        if let Some(at) = self.unsettled.retry_at {
            next = next.min(at);
        }
        if let Some(at) = self.lease_due {
            next = next.min(at);
        }
        if let Some(at) = self.scrub_due() {
            next = next.min(at);
        }
        if let Some(ms) = self.next_scheduled {
            next = next.min(callbacks::instant_of(ms));
        }
        let summaries = [
            &self.warnings.submit_refused,
            &self.warnings.run_retried,
            &self.warnings.commit_failed,
        ];
        for due in summaries.iter().filter_map(|limit| limit.summary_due()) {
            next = next.min(due);
        }
        next
    }

    fn handle(&mut self, command: Command) {
        let Some(command) = self.intercept_callback(command) else {
            return;
        };
        // The runs' ends gathered so far are stored before a command that may read
        // their jobs (see `ends`; an answer stores them itself when it must).
        if !matches!(command, Command::Submit { .. } | Command::Answered { .. }) {
            self.store_ends();
        }
        let reply = match &command {
            Command::Submit { reply, .. }
            | Command::Status { reply, .. }
            | Command::Result { reply, .. }
            | Command::Cancel { reply, .. } => Some(*reply),
            Command::Watch { reply, .. } => Some(*reply),
            Command::Answered { .. }
            | Command::SelfTest { .. }
            | Command::Drain
            | Command::Progress { .. }
            | Command::Notify { .. }
            | Command::Gone { .. }
            | Command::Remote(_)
            | Command::Admin(_) => None,
        };
        let done = match command {
            Command::Submit {
                reply,
                head,
                body,
                wait,
                client,
            } => self.submit(reply, head, body, wait, client),
            Command::Status { reply, id, wait } => self.status(reply, &id, wait),
            Command::Result { reply, id } => self.result(reply, &id),
            Command::Cancel { reply, id } => self.cancel(reply, &id),
            Command::Answered { number, answer } => {
                self.unsettled.answered(number);
                self.answered(number, answer)
            }
            Command::Notify { number, channel } => {
                let channels = self.notify.entry(number).or_default();
                if !channels.contains(&channel) {
                    channels.push(channel);
                }
                Ok(())
            }
            Command::Drain => {
                // Runs in the pipeline get the drain's time to end; no new one starts.
                self.draining = true;
                self.end_waits(|_| true);
                Ok(())
            }
            Command::SelfTest { token } => {
                self.selftest(token);
                Ok(())
            }
            Command::Progress {
                number,
                fraction,
                message,
            } => self.progress(number, fraction, &message),
            Command::Watch {
                reply,
                id,
                last_event_id,
            } => self.watch(reply, &id, last_event_id.unwrap_or(0)),
            Command::Admin(call) => {
                self.admin(call);
                Ok(())
            }
            Command::Gone {
                connection,
                request_id,
            } => {
                self.forget(connection, request_id);
                Ok(())
            }
            Command::Remote(notice) => self.remote(notice),
        };
        if let Err(e) = done {
            log::error!("jobs: {e}");
            if let Some(reply) = reply {
                self.reply(reply, &answers::store_failed());
            }
        }
    }

    /// Checks the store for the front end's self-test: the batch's transaction began,
    /// a read answers, and the store's last write did not fail (a full disk fails only
    /// writes, and this batch writes nothing). The commit, checked at the end of the
    /// batch, may still turn the answer into a failure: see `refuse_batch`.
    fn selftest(&mut self, token: u64) {
        let result = match &self.began {
            Err(e) => Err(format!("the job store cannot start a transaction: {e}")),
            Ok(()) => match (self.store.counts(), self.store.last_write_error()) {
                (Err(e), _) => Err(format!("the job store cannot be read: {e}")),
                (Ok(_), Some(e)) => Err(format!("the job store's last write failed: {e}")),
                (Ok(_), None) => match &self.sync_error {
                    Some(e) => Err(format!("the job store's last write failed: {e}")),
                    None => Ok(()),
                },
            },
        };
        self.outbox.push(Event::SelfTest { token, result });
    }

    fn reply(&mut self, to: ReplyTo, response: &Response) {
        self.outbox.push(Event::Reply {
            to,
            bytes: to.render(response),
        });
    }

    /// The record for an id a client gave, or the answer for an id that has none.
    fn find(&mut self, id: &str) -> Result<Result<JobRecord, Response>, StoreError> {
        if !is_job_id(id) {
            return Ok(Err(answers::unknown_job()));
        }
        Ok(match self.store.by_id(id)? {
            None => Err(answers::unknown_job()),
            Some(record) if record.state == JobState::Expired => Err(answers::expired_job()),
            Some(record) => Ok(record),
        })
    }

    fn on_timers(&mut self, now: Instant) {
        for limit in self.warnings.all() {
            limit.flush(now);
        }
        while let Some(Reverse((at, number, waiter_id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            self.end_wait(number, waiter_id);
        }
        if self.next_scheduled.is_some_and(|ms| ms <= now_ms()) {
            self.release_scheduled();
        }
        while let Some(Reverse((at, number, created))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            self.queue.push_front((number, created));
        }
        if now >= self.next_expiry {
            self.next_expiry = now + expire_every(&self.config);
            self.expire();
        }
        self.on_lease(now);
    }

    fn expire(&mut self) {
        let expired = self
            .store
            .expire(now_ms(), ttl_ms(&self.config))
            .and_then(|n| Ok((n, self.store.counts()?)));
        match expired {
            Ok((n, counts)) => {
                if n > 0 {
                    log::info!("jobs: {n} ended jobs expired");
                }
                self.counts = counts;
            }
            Err(e) => log::error!("jobs: expiry failed: {e}"),
        }
    }

    fn commit(&mut self) {
        let started = Instant::now();
        // A group of submits that could not be stored fails the batch as a commit
        // would: none of its writes is kept half-done.
        let committed = match self.failed_write.take() {
            Some(e) => Err(e),
            None => self.store.commit(),
        };
        if let Err(e) = committed {
            if self.warnings.commit_failed.allow() {
                log::error!(
                    "jobs: a commit failed, its {} answers are refused: {e}",
                    self.outbox.len() + self.early.len()
                );
            }
            self.store.rollback();
            self.refuse_batch(&e.to_string());
            self.batch_unsettled();
            return;
        }
        self.batch_settled();
        // A log the service syncs is synced here, when the batch tells anyone anything:
        // the commit's time is its sync's too.
        self.sync_log();
        let took = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        let stats = &mut self.commit_stats;
        stats.commits += 1;
        stats.commit_last_us = took;
        stats.commit_max_us = stats.commit_max_us.max(took);
        stats.commit_seconds.observe_us(took);
        stats.commit_average_us = if stats.commits == 1 {
            took
        } else {
            (stats.commit_average_us * 15 + took) / 16
        };
    }

    /// Hands events to the front end and rings its doorbell; false once the front end
    /// is gone.
    fn send_events(&mut self, events: &mut Vec<Event>) -> bool {
        if events.is_empty() {
            return true;
        }
        for event in events.drain(..) {
            if self.events.send(event).is_err() {
                return false;
            }
        }
        // A full doorbell is already rung.
        let _ = self.doorbell.send(zmq::Message::new(), zmq::DONTWAIT);
        true
    }

    /// After a failed commit: every answer of the batch becomes a 503, nothing is
    /// dispatched, and the queue and counts are read again from the store (the runs the
    /// batch ended are settled later, see `settle`).
    fn refuse_batch(&mut self, why: &str) {
        let mut outbox = std::mem::take(&mut self.early);
        outbox.append(&mut self.outbox);
        for event in outbox {
            match event {
                Event::Reply { to, .. } | Event::Hold { to, .. } => {
                    self.reply(to, &answers::store_failed())
                }
                Event::SelfTest { token, .. } => self.outbox.push(Event::SelfTest {
                    token,
                    result: Err(format!("the job store cannot commit: {why}")),
                }),
                // A run this batch started was never sent: the rollback took its start
                // (or, for a job stored already running, the job), so it holds no place
                // under --jobs-max-running.
                Event::Dispatch { number, .. } => {
                    self.running.remove(&number);
                }
                _ => {}
            }
        }
        match self
            .store
            .queued()
            .and_then(|q| Ok((q, self.store.counts()?)))
        {
            Ok((queue, counts)) => {
                // The runs this batch dispatched were rolled back to the queue; those
                // dispatched before are still in the pipeline, and still count.
                let queued: HashSet<u64> = queue.iter().map(|(number, _)| *number).collect();
                self.running.retain(|number, _| !queued.contains(number));
                self.queue = queue.into();
                self.counts = counts;
            }
            Err(e) => log::error!("jobs: the store cannot be read again: {e}"),
        }
        // Jobs this batch released are scheduled again.
        self.reread_schedule();
    }

    /// Sends the committed batch's events that tell of no job's end (`202`s,
    /// dispatches) at once; the others wait for the store's scrub (see `scrub`). After
    /// a failed commit its `503`s wait the same way, behind earlier answers.
    fn flush(&mut self) {
        let mut early = std::mem::take(&mut self.early);
        let sent = self.send_events(&mut early);
        self.early = early;
        if !sent {
            return;
        }
        self.after_commit();
        if let Ok(mut stats) = self.stats.lock() {
            *stats = JobStats {
                counts: self.counts,
                oldest_queued_ms: self
                    .queue
                    .front()
                    .map(|(_, created)| now_ms().saturating_sub(*created).max(0) as u64),
                statements: self.store.statements(),
                ..self.commit_stats
            };
        }
    }
}

#[cfg(test)]
#[path = "id_tests.rs"]
mod tests;
