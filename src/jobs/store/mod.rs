//! The durable job store: a small trait, and its implementations: SQLite (embedded, the
//! default) and PostgreSQL (shared by several front ends, see [`postgres`]).
//!
//! Only the job service's thread calls a store, so the trait is synchronous and takes
//! `&mut self`. Writes are grouped: the service calls [`JobStore::begin`], applies every
//! command it has, and [`JobStore::commit`]s once. A store shared by several front ends
//! (a database server) can replace SQLite behind the same trait.
//!
//! The SQLite file runs in WAL mode with `synchronous=FULL` by default: a commit is on
//! disk when `commit` returns, so neither a `kill -9` nor a power cut loses an accepted
//! job ([`Durability::Process`] trades the power cut for commits fifty times cheaper).
//! The job service takes the log's sync over ([`JobStore::log_to_sync`]): it syncs the
//! log after the commits whose answers leave, before they leave. It is
//! created with mode 0600 (SQLite gives its `-wal` and `-shm` files the same mode, and
//! existing ones are set to 0600 at every open), since stored requests can carry
//! `Authorization` and `Cookie` headers; a request (and the client's address) is kept
//! only until its job ends (a failed job keeps its request without its credentials,
//! `Authorization`, `Proxy-Authorization` and `Cookie`, until it is retried or
//! expires, so that the admin API can run it again), and then leaves the disk: SQLite's `secure_delete` zeroes
//! it in the database's pages, and the write-ahead log that held it is checkpointed and
//! truncated after the commit that removed it.
//!
//! One process owns a store file: it holds a lock on `{path}.lock` while the store is
//! open ([`StoreError::Locked`]).

use super::clock::rfc3339;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

mod admin_table;
mod file_identity;
pub mod postgres;
mod sqlite;
pub mod wal;
mod webhook_table;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A number or count as an SQL integer parameter. SQLite and PostgreSQL hold 64-bit
/// signed integers; a value above `i64::MAX` (never a stored job's number or sequence,
/// which the databases number; only a client's `after`, `since` or `limit`) becomes
/// `i64::MAX`, which no stored number passes.
fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The most delivery attempts kept per job (the latest ones).
const MAX_ATTEMPTS_KEPT: usize = 64;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Stored to run later (`Job-Delay`, `Job-Not-Before`): it moves to `Queued` at its
    /// time ([`JobRecord::not_before_ms`]).
    Scheduled,
    /// Stored, waiting for a run.
    Queued,
    /// In the pipeline.
    Running,
    /// Ended with an answer whose status is below 400.
    Succeeded,
    /// Ended with an error: an answer of status 400 or above, or a failure in the
    /// pipeline (timeout, panic, no worker after every attempt).
    Failed,
    /// Cancelled by `DELETE` before it ended.
    Cancelled,
    /// Removed after its time to live: only its id is left, for `410 Gone`.
    Expired,
}

impl JobState {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    /// The state named `name` (as [`as_str`](Self::as_str) writes it), if any.
    pub fn parse(name: &str) -> Option<JobState> {
        Some(match name {
            "scheduled" => JobState::Scheduled,
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            "expired" => JobState::Expired,
            _ => return None,
        })
    }

    /// Whether the job has ended (it has a result, or was cancelled, or expired).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            JobState::Scheduled | JobState::Queued | JobState::Running
        )
    }

    /// Whether the job ended with a stored result.
    pub fn has_result(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// What the store knows of a job, without its request or its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// The store's number for the job: what travels in the envelope.
    pub number: u64,
    /// The job's public id: 22 URL-safe base64 characters, 120 random bits of its own
    /// (see [`new_job_id`](crate::jobs::service::new_job_id)).
    pub id: String,
    /// Where the job is.
    pub state: JobState,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When its state last changed, in milliseconds since the Unix epoch.
    pub updated_ms: i64,
    /// How many times it was sent into the pipeline.
    pub attempts: u32,
    /// Once it has ended with an answer, that answer's status.
    pub status: Option<u16>,
    /// For a failed job, what went wrong; for a queued one, why its last run failed.
    pub error: Option<String>,
    /// The last progress a stage reported: the fraction done (0 to 1) and a message.
    pub progress: Option<(f64, String)>,
    /// How many events the job has had: each change recorded here (submit, start, end,
    /// requeue, cancel, progress) is one, and this is the last one's number.
    pub events: u64,
    /// For a job submitted to run later, the time it may start, in milliseconds since
    /// the Unix epoch.
    pub not_before_ms: Option<i64>,
}

/// One event of a job, as its event streams send it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    /// Its number in the job's sequence, from 1: the event stream's `id:`.
    pub seq: u64,
    /// `state` or `progress`.
    pub kind: String,
    /// The event's data (JSON).
    pub data: String,
}

/// The data of a `state` event with neither error nor progress (JSON: state, attempts,
/// time of the change), which a store may derive from the job's change of state rather
/// than store (see [`JobStore::state_events_from_changes`]).
pub(crate) fn plain_state_data(state: JobState, attempts: u32, updated_ms: i64) -> String {
    format!(
        r#"{{"state":"{}","attempts":{attempts},"updated":"{}"}}"#,
        state.as_str(),
        rfc3339(updated_ms)
    )
}

/// An answer as stored: what a synchronous call would have been answered, without the
/// fields that depend on the connection (`Content-Length`, `Date`, `Connection`, ...),
/// which are written anew for whoever fetches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The status code.
    pub status: u16,
    /// The header fields the stage set, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl StoredAnswer {
    /// Its header fields as the stores keep them: a JSON array of `[name, value]` pairs.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if they cannot be written as JSON.
    pub fn headers_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(&self.headers)
            .map_err(|e| StoreError::Corrupt(format!("answer headers: {e}")))
    }
}

/// A job's end to store (see [`JobStore::finish_many`]).
#[derive(Clone, Copy, Debug)]
pub struct Ending<'a> {
    /// The job's number.
    pub number: u64,
    /// `Succeeded` or `Failed`.
    pub state: JobState,
    /// The run's answer.
    pub answer: &'a StoredAnswer,
    /// Why it failed, if it did.
    pub error: Option<&'a str>,
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    /// Its public id.
    pub id: &'a str,
    /// The request head as received.
    pub head: &'a [u8],
    /// The request body, decoded.
    pub body: &'a [u8],
    /// The client's `Idempotency-Key` scoped to its caller (see
    /// [`caller`](crate::jobs::caller)), if it sent one.
    pub idempotency_key: Option<&'a str>,
    /// A digest of the request (method, target and body), to tell a repeat of the same
    /// request from another request under the same key; empty (and not stored by
    /// SQLite) for a job without a key, since nothing compares it then.
    pub fingerprint: &'a [u8],
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// The client's address (a `SocketAddr` as text), passed on by every run.
    pub client: Option<&'a str>,
    /// For a job to run later, when it may start (milliseconds since the Unix epoch):
    /// it is stored `Scheduled` until then. `None`: it is stored `Queued`.
    pub not_before_ms: Option<i64>,
}

impl NewJob<'_> {
    /// The state it is stored in: `Scheduled` when it may start later, else `Queued`.
    pub fn state(&self) -> JobState {
        match self.not_before_ms {
            Some(_) => JobState::Scheduled,
            None => JobState::Queued,
        }
    }

    /// Its record once started at `now_ms` (its first attempt) right after its insert,
    /// as [`JobStore::insert_and_start`] returns it.
    pub fn started_record(&self, number: u64, now_ms: i64) -> JobRecord {
        JobRecord {
            state: JobState::Running,
            updated_ms: now_ms,
            attempts: 1,
            events: 2,
            ..self.record(number)
        }
    }

    /// Its record once stored under `number`, as both stores insert it (one event: its
    /// creation).
    pub fn record(&self, number: u64) -> JobRecord {
        JobRecord {
            number,
            id: self.id.to_string(),
            state: self.state(),
            created_ms: self.now_ms,
            updated_ms: self.now_ms,
            attempts: 0,
            status: None,
            error: None,
            progress: None,
            events: 1,
            not_before_ms: self.not_before_ms,
        }
    }
}

/// A job moved to running, with the request to run.
#[derive(Clone, Debug)]
pub struct StartedJob {
    /// Its record, now running.
    pub record: JobRecord,
    /// The request head as received.
    pub head: Vec<u8>,
    /// The request body.
    pub body: Vec<u8>,
    /// The client's address, when it was stored.
    pub client: Option<SocketAddr>,
}

impl StartedJob {
    /// A started job from its record and its request's columns as both stores keep
    /// them (a missing head or body is empty; a client address that does not parse is
    /// none).
    fn from_columns(
        record: JobRecord,
        head: Option<Vec<u8>>,
        body: Option<Vec<u8>>,
        client: Option<String>,
    ) -> StartedJob {
        StartedJob {
            record,
            head: head.unwrap_or_default(),
            body: body.unwrap_or_default(),
            client: client.and_then(|c| c.parse().ok()),
        }
    }
}

/// Which jobs an admin listing (or a cancel by filter) takes: every condition given
/// must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// The job is in one of these states (any state when empty).
    pub states: Vec<JobState>,
    /// The job's task: its request's `X-Task-Name`, else its path.
    pub task: Option<String>,
    /// Submitted before this time (milliseconds since the Unix epoch).
    pub created_before_ms: Option<i64>,
    /// Submitted after this time (milliseconds since the Unix epoch).
    pub created_after_ms: Option<i64>,
}

/// One change of a job's state, in the store's feed of changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobChange {
    /// Its number in the feed: every change has a greater one than those before it.
    pub seq: u64,
    /// The job's public id.
    pub id: String,
    /// The state the job moved to.
    pub state: JobState,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Events stored by [`JobStore::add_event`] and not yet written: a group's events go
/// to the database together, in one statement, before the group's commit (and before
/// any read of events).
#[derive(Debug, Default)]
struct PendingEvents {
    /// (job number, sequence number, time in ms, kind, data), in the order added.
    rows: Vec<(i64, i64, i64, String, String)>,
}

impl PendingEvents {
    fn push(&mut self, number: u64, event: &JobEvent, now_ms: i64) {
        self.rows.push((
            sql_int(number),
            sql_int(event.seq),
            now_ms,
            event.kind.clone(),
            event.data.clone(),
        ));
    }

    /// The events to write, each (job, sequence number) once: the last one stored
    /// under it, as a row-by-row write would leave it.
    fn take(&mut self) -> Vec<(i64, i64, i64, String, String)> {
        let mut rows = std::mem::take(&mut self.rows);
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        rows.reverse();
        rows.retain(|row| seen.insert((row.0, row.1)));
        rows.reverse();
        rows
    }

    fn clear(&mut self) {
        self.rows.clear();
    }
}

/// An ended job's answer columns: status, header fields as JSON, body.
type AnswerRow = (Option<i64>, Option<String>, Option<Vec<u8>>);

/// A finished job's stored answer from its columns (status, header fields as JSON,
/// body), as both stores keep them.
///
/// # Errors
/// [`StoreError::Corrupt`] for a missing or out-of-range status, or header fields
/// that are not the JSON list of pairs the store wrote.
fn answer_from_row(
    number: u64,
    (status, headers, body): AnswerRow,
) -> Result<Option<StoredAnswer>, StoreError> {
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("job {number} has no status")))?;
    let headers: Vec<(String, String)> = match headers {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("job {number} headers: {e}")))?,
        None => Vec::new(),
    };
    Ok(Some(StoredAnswer {
        status,
        headers,
        body: body.unwrap_or_default(),
    }))
}

/// How many jobs are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Scheduled.
    pub scheduled: u64,
    /// Queued.
    pub queued: u64,
    /// Running.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Expired (ids kept for `410 Gone`).
    pub expired: u64,
}

impl StateCounts {
    /// The count for `state`, to change it.
    pub fn of(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Scheduled => &mut self.scheduled,
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
            JobState::Expired => &mut self.expired,
        }
    }

    /// Jobs not yet ended.
    pub fn unfinished(&self) -> u64 {
        self.scheduled + self.queued + self.running
    }
}

/// Why the store failed.
#[derive(Debug)]
pub enum StoreError {
    /// The database could not be opened, or is not a job store this build can use.
    Open {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Another process has the store open (two front ends on one SQLite file would
    /// run each other's jobs twice; sharing a store is a database server's job).
    Locked {
        /// The database file.
        path: String,
        /// Who holds it: `process PID (program)`, as its lock file names it.
        holder: String,
        /// The lock file.
        lock: String,
    },
    /// A query failed.
    Sqlite(rusqlite::Error),
    /// A statement of the PostgreSQL store failed (or its connection did).
    Postgres(::postgres::Error),
    /// A stored value is not what this build writes.
    Corrupt(String),
    /// The database file was deleted or replaced while the store had it open: what
    /// this store commits would be in no file a restart opens, so it commits nothing.
    Lost {
        /// The file.
        path: String,
        /// What happened to it.
        reason: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, reason } => {
                write!(f, "the job database {path} cannot be used: {reason}")
            }
            StoreError::Locked { path, holder, lock } => write!(
                f,
                "the job database {path} is in use by {holder} (it holds {lock}); \
                 one process owns a job store: stop that one, or give this one its own --jobs-db"
            ),
            StoreError::Sqlite(e) => write!(f, "job database: {e}"),
            StoreError::Postgres(e) => write!(f, "job database: {e}"),
            StoreError::Corrupt(what) => write!(f, "job database holds a bad value: {what}"),
            StoreError::Lost { path, reason } => write!(
                f,
                "the job database {path} {reason} while the server ran: no job is accepted until it is restarted on a file it can keep"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e),
            StoreError::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// A durable home for jobs. Every write between [`begin`](Self::begin) and
/// [`commit`](Self::commit) becomes durable at once.
pub trait JobStore: Send {
    /// Starts a group of writes.
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Makes the group durable.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Drops the group (after a failed commit).
    fn rollback(&mut self);
    /// After a commit that removed stored requests (a job's end, a cancel, an
    /// expiry), takes the copies a store keeps of the removed rows off its disk: SQLite
    /// checkpoints its write-ahead log into the database, where `secure_delete` has
    /// zeroed them, and truncates the log. Nothing for a store that keeps no such copy
    /// (the default). The job service calls it between batches while
    /// [`scrub_pending`](Self::scrub_pending), at most a few milliseconds after the commit
    /// that made it owed, and holds every answer of that commit but those that tell of no
    /// job's end (`202`s and dispatches) until it has run.
    fn scrub(&mut self) {}
    /// Whether a commit since the last [`scrub`](Self::scrub) removed stored requests,
    /// so that a scrub is owed before anyone hears of those jobs' ends (`false` for a
    /// store that keeps no copies, the default).
    fn scrub_pending(&self) -> bool {
        false
    }
    /// For a store that can leave its commits' `fsync` to the caller (SQLite at
    /// [`Durability::Full`]): the file whose sync (`fdatasync`) makes every commit so
    /// far durable, its write-ahead log; from then on its commits reach the operating
    /// system and no further. The job service syncs it after each commit whose batch
    /// tells anyone anything, before the answers leave (see
    /// [`last_commit_wrote`](Self::last_commit_wrote)). Given once; `None` (the
    /// default) for a store whose `commit` returns once the commit is durable.
    fn log_to_sync(&mut self) -> Option<std::fs::File> {
        None
    }
    /// Whether the last [`commit`](Self::commit) wrote anything that a sync of
    /// [`log_to_sync`](Self::log_to_sync)'s file must make durable (`true`, the
    /// default, when unknown).
    fn last_commit_wrote(&self) -> bool {
        true
    }
    /// Why the store's last write to its disk failed (a commit; a disk that is full),
    /// until a later commit that wrote something succeeds; `None` while writes go
    /// through. The self-test reports it: reads alone cannot tell a full disk.
    fn last_write_error(&self) -> Option<String> {
        None
    }
    /// Stores a new job, queued (or scheduled, with a `not_before_ms`); returns its
    /// record.
    fn insert(&mut self, job: &NewJob<'_>) -> Result<JobRecord, StoreError>;
    /// Stores several new jobs, as [`insert`](Self::insert) each, in order; returns
    /// their records in the same order. A store with a round trip per statement
    /// (PostgreSQL) stores them with one.
    fn insert_many(&mut self, jobs: &[NewJob<'_>]) -> Result<Vec<JobRecord>, StoreError> {
        jobs.iter().map(|job| self.insert(job)).collect()
    }
    /// The job with this public id.
    fn by_id(&mut self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// The job with this number.
    fn by_number(&mut self, number: u64) -> Result<Option<JobRecord>, StoreError>;
    /// The store's own random key (32 bytes, made when the store was created and kept
    /// in it), under which callers' idempotency keys are stored (see
    /// [`caller`](crate::jobs::caller)).
    fn caller_secret(&mut self) -> Result<Vec<u8>, StoreError>;
    /// The job stored under an idempotency key (as scoped to its caller), with its
    /// request's fingerprint.
    fn by_idempotency_key(&mut self, key: &str)
        -> Result<Option<(JobRecord, Vec<u8>)>, StoreError>;
    /// [`insert_many`](Self::insert_many), then the first `start` of `jobs` (none of
    /// them scheduled) moved to running at `now_ms`, their first attempt, as
    /// [`start_many`](Self::start_many) would: returns every job's record as its
    /// insert stored it, and the started ones' records as running, in order. A store
    /// that can write a job already running (SQLite) writes each started job once, its
    /// feed of changes still holding both changes (queued, then running); the default
    /// inserts, then starts.
    ///
    /// Errors: the store's; [`StoreError::Corrupt`] when a job just stored could not
    /// be started.
    fn insert_and_start(
        &mut self,
        jobs: &[NewJob<'_>],
        start: usize,
        now_ms: i64,
    ) -> Result<(Vec<JobRecord>, Vec<JobRecord>), StoreError> {
        let records = self.insert_many(jobs)?;
        let numbers: Vec<u64> = records.iter().take(start).map(|r| r.number).collect();
        let started = self.start_many(&numbers, now_ms)?;
        if started.len() != numbers.len() {
            return Err(StoreError::Corrupt(format!(
                "{} of {} jobs just stored could start",
                started.len(),
                numbers.len()
            )));
        }
        Ok((records, started.into_iter().map(|s| s.record).collect()))
    }
    /// Moves a queued job to running (counting the attempt) and returns it with its
    /// request head and body; `None` if it is not queued (cancelled meanwhile).
    fn start(&mut self, number: u64, now_ms: i64) -> Result<Option<StartedJob>, StoreError>;
    /// [`start`](Self::start) for several jobs: the ones still queued, in the order
    /// given (the others are left out). A store with a round trip per statement
    /// (PostgreSQL) starts them with one.
    fn start_many(&mut self, numbers: &[u64], now_ms: i64) -> Result<Vec<StartedJob>, StoreError> {
        let mut started = Vec::with_capacity(numbers.len());
        for &number in numbers {
            started.extend(self.start(number, now_ms)?);
        }
        Ok(started)
    }
    /// [`finish`](Self::finish) for several jobs, in order: each one's record, `None`
    /// for one that had ended already. A store with a round trip per statement
    /// (PostgreSQL) ends them with one.
    fn finish_many(
        &mut self,
        ends: &[Ending<'_>],
        now_ms: i64,
    ) -> Result<Vec<Option<JobRecord>>, StoreError> {
        ends.iter().map(|end| self.finish(*end, now_ms)).collect()
    }
    /// Ends an unfinished job with its answer (`Succeeded` or `Failed`); its request is
    /// forgotten, except a failed job's, kept without its credentials (for a retry)
    /// until the job expires. `None` if it had already ended (a second answer is
    /// dropped).
    fn finish(&mut self, end: Ending<'_>, now_ms: i64) -> Result<Option<JobRecord>, StoreError>;
    /// [`finish`](Self::finish) for a caller that does not read the job's record:
    /// whether the job was unfinished (and is now ended). A store that reads the record
    /// back after its write (SQLite) leaves the read out.
    fn finish_quietly(&mut self, end: Ending<'_>, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.finish(end, now_ms)?.is_some())
    }
    /// Puts a running job back in the queue after a run the pipeline could not take.
    fn requeue(
        &mut self,
        number: u64,
        error: &str,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError>;
    /// Cancels an unfinished job (scheduled, queued or running); `None` if it had
    /// already ended.
    fn cancel(&mut self, number: u64, now_ms: i64) -> Result<Option<JobRecord>, StoreError>;
    /// The stored answer of an ended job.
    fn answer(&mut self, number: u64) -> Result<Option<StoredAnswer>, StoreError>;
    /// At start: queues again the jobs that were running when the last process stopped;
    /// returns how many.
    fn requeue_running(&mut self, now_ms: i64) -> Result<u64, StoreError>;
    /// Moves the scheduled jobs whose time is at or before `now_ms` to queued; returns
    /// their records, in submission order.
    fn release_due(&mut self, now_ms: i64) -> Result<Vec<JobRecord>, StoreError>;
    /// The earliest time a scheduled job may start (milliseconds since the Unix epoch),
    /// if any job is scheduled.
    fn next_not_before(&mut self) -> Result<Option<i64>, StoreError>;
    /// Every queued job (number, created) in submission order.
    fn queued(&mut self) -> Result<Vec<(u64, i64)>, StoreError>;
    /// Expires the jobs that ended more than `ttl_ms` ago (their answer and idempotency
    /// key go; the id stays, for `410 Gone`), and forgets the ids that expired more than
    /// `ttl_ms` ago. Returns how many jobs expired.
    fn expire(&mut self, now_ms: i64, ttl_ms: i64) -> Result<u64, StoreError>;
    /// How many jobs are in each state.
    fn counts(&mut self) -> Result<StateCounts, StoreError>;
    /// Records an unfinished job's progress; `None` if the job has ended.
    fn set_progress(
        &mut self,
        number: u64,
        fraction: f64,
        message: &str,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError>;
    /// Stores event `seq` of a job (the `events` of the record the change returned).
    /// A store may hold the events of a group and write them together, with one
    /// statement, before a read of events and at [`commit`](Self::commit); a rollback
    /// drops them with the rest.
    fn add_event(&mut self, number: u64, event: &JobEvent, now_ms: i64) -> Result<(), StoreError>;
    /// Whether a `state` event with neither error nor progress need not be given to
    /// [`add_event`](Self::add_event): the store keeps it with the change of state it
    /// tells of (the change's state, attempts and time, as `plain_state_data` writes
    /// them) and [`events_after`](Self::events_after) reads it from there.
    fn state_events_from_changes(&self) -> bool {
        false
    }
    /// A job's events after `seq`, in order.
    fn events_after(&mut self, number: u64, seq: u64) -> Result<Vec<JobEvent>, StoreError>;
    /// Registers a job's `Callback-URL`; nothing is delivered before the job ends.
    fn webhook_add(&mut self, number: u64, job_id: &str, url: &str) -> Result<(), StoreError>;
    /// A job's webhook, if it asked for one.
    fn webhook(&mut self, number: u64) -> Result<Option<WebhookRecord>, StoreError>;
    /// Writes a webhook's state, message, attempts and schedule.
    fn webhook_save(&mut self, record: &WebhookRecord) -> Result<(), StoreError>;
    /// Every webhook whose message waits for an attempt (at start, after a restart).
    fn webhooks_pending(&mut self) -> Result<Vec<WebhookRecord>, StoreError>;
    /// Up to `limit` jobs numbered above `after` that pass `filter`, in submission
    /// order, each with its task. Never their requests.
    fn list(
        &mut self,
        filter: &JobFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(JobRecord, Option<String>)>, StoreError>;
    /// Up to `limit` changes of state with a sequence number above `since`, in order.
    fn changes(&mut self, since: u64, limit: usize) -> Result<Vec<JobChange>, StoreError>;
    /// The highest sequence number a change has had (0 before the first).
    fn last_seq(&mut self) -> Result<u64, StoreError>;
    /// Queues a failed job again (its request is kept while it is failed); `None` if it
    /// is not failed or its request is no longer stored.
    fn retry(&mut self, number: u64, now_ms: i64) -> Result<Option<JobRecord>, StoreError>;
    /// How many SQL statements the store has sent to its database since it was opened
    /// (the statements triggers run inside them are not counted): the cost of a job in
    /// statements, for the status document.
    fn statements(&self) -> u64 {
        0
    }
    /// For a store several front ends share, this front end's id in it (the owner its
    /// jobs name); `None` for a store one process owns (SQLite), which then needs no
    /// lease and hears of no one else's changes.
    fn shared(&self) -> Option<&str> {
        None
    }
    /// Renews this front end's lease on the jobs it holds for `lease_ms` milliseconds
    /// from now, on the store's own clock (so front ends whose clocks differ agree). A
    /// store of one process has nothing to do.
    fn renew_lease(&mut self, _lease_ms: i64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Takes the unfinished jobs of front ends whose lease has lapsed (on the store's
    /// clock): each is queued (a running one again, its time of change `now_ms`) and
    /// held by this front end. Returns their
    /// records, with the state each was in, in submission order.
    fn take_over(&mut self, _now_ms: i64) -> Result<Vec<(JobRecord, JobState)>, StoreError> {
        Ok(Vec::new())
    }
    /// Takes the pending webhooks of front ends whose lease has lapsed (on the store's
    /// clock; `now_ms` is this front end's); returns them, this front end's to deliver
    /// from now on.
    fn webhooks_take_over(&mut self, _now_ms: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// How far a commit goes before its answers leave (SQLite's `synchronous` setting, in
/// WAL mode, with the log's sync for `Full` done apart from the commit: see
/// [`JobStore::log_to_sync`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on the disk (fsync) before a job is acknowledged: nothing
    /// accepted is lost, whatever stops the machine. A few milliseconds per commit;
    /// commits are grouped, so this bounds latency more than throughput.
    #[default]
    Full,
    /// Commits reach the operating system at once and the disk at checkpoints: nothing
    /// accepted is lost when the process dies (`kill -9`), but a power cut or a kernel
    /// crash can lose the last commits. Tens of microseconds per commit.
    Process,
}

impl Durability {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        }
    }
}

/// Where a job's webhook is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// The job has not ended; nothing to deliver yet.
    Waiting,
    /// The message waits for its next attempt.
    Pending,
    /// The receiver took it (`2xx`).
    Delivered,
    /// The receiver answered `410 Gone`: no more attempts.
    Gone,
    /// Every attempt failed for
    /// [`WebhookConfig::give_up`](crate::jobs::webhooks::WebhookConfig::give_up).
    GivenUp,
}

impl DeliveryState {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Waiting => "waiting",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Gone => "gone",
            DeliveryState::GivenUp => "given_up",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<DeliveryState> {
        Some(match name {
            "waiting" => DeliveryState::Waiting,
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "gone" => DeliveryState::Gone,
            "given_up" => DeliveryState::GivenUp,
            _ => return None,
        })
    }
}

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The receiver's status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, if it did not answer (or was refused before connecting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub latency_ms: u64,
}

/// A job's webhook as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    /// The job's number.
    pub number: u64,
    /// The job's public id (the message's `webhook-id`).
    pub job_id: String,
    /// Where to deliver.
    pub url: String,
    /// Where the delivery is.
    pub state: DeliveryState,
    /// The message, once the job has ended.
    pub payload: Option<Vec<u8>>,
    /// The attempts so far (the latest 64).
    pub attempts: Vec<Attempt>,
    /// When the first failed attempt was, in milliseconds since the Unix epoch.
    pub first_failure_ms: Option<i64>,
    /// When the next attempt is due, in milliseconds since the Unix epoch.
    pub next_ms: Option<i64>,
}

impl WebhookRecord {
    /// The webhook's part of the job's status document.
    pub fn to_json(&self) -> serde_json::Value {
        let attempts: Vec<serde_json::Value> = self
            .attempts
            .iter()
            .map(|a| {
                let mut value = serde_json::json!({
                    "at": rfc3339(a.at_ms),
                    "latency_ms": a.latency_ms,
                });
                if let Some(status) = a.status {
                    value["status"] = status.into();
                }
                if let Some(error) = &a.error {
                    value["error"] = error.as_str().into();
                }
                value
            })
            .collect();
        let mut value = serde_json::json!({
            "url": self.url,
            "state": self.state.as_str(),
            "attempts": attempts,
        });
        if let (DeliveryState::Pending, Some(next)) = (self.state, self.next_ms) {
            value["next_attempt"] = rfc3339(next).into();
        }
        value
    }

    /// Adds an attempt, keeping the latest 64.
    pub fn push_attempt(&mut self, attempt: Attempt) {
        if self.attempts.len() >= MAX_ATTEMPTS_KEPT {
            self.attempts.remove(0);
        }
        self.attempts.push(attempt);
    }
}
