//! Asynchronous jobs: "answer later" for every route of every pipeline.
//!
//! A request with `Prefer: respond-async` (RFC 7240 §4.1), or one a stage puts off with
//! [`Next::later`](crate::stages::Next::later), becomes a job: it is committed to a
//! durable [`JobStore`] and the client is answered `202 Accepted` with
//! `Location: /jobs/{id}`. The job then runs through the same proxies and workers as a
//! synchronous request, its envelope marked as a job ([`Envelope::job`]) whose answer
//! goes back to the store instead of to a connection. The client collects it later:
//!
//! | request | answer |
//! |---|---|
//! | `GET /jobs/{id}` | `200` with the job's state as JSON; `303 See Other` to `/jobs/{id}/result` once it has ended; `?wait=S` long-polls until the state changes |
//! | `GET /jobs/{id}/result` | the stored answer (status, headers, body) exactly as a synchronous call gets it; `404` before the end |
//! | `DELETE /jobs/{id}` | cancels: running work is interrupted, the job stays readable as `cancelled` |
//! | `GET /jobs/{id}/events` | a `text/event-stream` of the job's state changes and progress reports, each with an `id:`; `Last-Event-ID` resumes after that event; it ends after the final state |
//!
//! Unknown ids are `404`; ids of jobs removed after [`JobsConfig::ttl`] are `410 Gone`.
//!
//! A submit with `Job-Delay` or `Job-Not-Before` runs later: the job is stored
//! `scheduled` and queued at its time (see [`schedule`]; the job service keeps one timer,
//! on the earliest).
//!
//! ## Threads
//! The store lives on a thread of its own in the front end's process (see
//! [`service`]): the front end's loop hands it commands over a channel and never waits
//! on the disk. The thread takes every command waiting, applies them in one
//! transaction and commits once (group commit), and only then sends the `202`s and
//! hands the front end the jobs to dispatch. Accepted jobs are therefore on disk before
//! anyone is told so, and a `kill -9` loses none: at start, jobs that were queued or
//! running are queued again (at least once; `attempts` counts the runs).
//!
//! ## Webhooks
//! A submit with `Callback-URL` has the job's end POSTed there, signed, retried and
//! recorded in the store: see [`webhooks`], and [`ssrf`] for the addresses a callback
//! may not reach.
//!
//! [`Envelope::job`]: crate::pipeline::envelope::Envelope::job

pub mod answers;
pub mod caller;
mod clock;
pub mod prefer;
pub mod schedule;
pub mod service;
pub mod special_purpose;
pub mod ssrf;
pub mod store;
pub mod tag;
pub mod webhooks;

pub use caller::CallerIdentity;
pub use prefer::{AsyncPreference, JobRoute};
pub use service::{JobStats, JobsHandle};
pub use store::{
    Durability, JobRecord, JobState, JobStore, PostgresStore, SqliteStore, StoreError, StoredAnswer,
};

use std::path::PathBuf;
use std::time::Duration;

/// How the front end keeps asynchronous jobs.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// The SQLite database file, created (mode 0600) if missing; or a PostgreSQL
    /// database's `postgres://` (or `postgresql://`) URL, a store several front ends
    /// share (see [`store::postgres`]).
    pub db_path: PathBuf,
    /// How long finished jobs and their results are kept (24 h by default). An expired
    /// job's id answers `410 Gone` for as long again, then `404`.
    pub ttl: Duration,
    /// How many unfinished (queued or running) jobs the store takes; past it a submit
    /// is answered `503` with `Retry-After` (100,000 by default).
    pub max_queued: usize,
    /// How long one run of a job may take in the pipeline before it fails with `504`
    /// (10 minutes by default): the jobs' counterpart of the request timeout.
    pub job_timeout: Duration,
    /// How many jobs run in the pipeline at once (64 by default); the others wait in
    /// the store, so a flood of jobs cannot fill the proxies' queues ahead of
    /// synchronous requests.
    pub max_running: usize,
    /// How many times a job is run when the pipeline could not take it (queue full,
    /// worker died, shutting down) before it fails; runs are spaced by a backoff of 1 s
    /// doubling to 30 s.
    pub max_attempts: u32,
    /// The longest `Prefer: wait=` or `?wait=` honoured (60 s by default).
    pub max_wait: Duration,
    /// Where the job resources live (`/jobs` by default): `{path}/{id}`,
    /// `{path}/{id}/result` and `{path}/{id}/events`.
    pub path: String,
    /// How far each commit goes before jobs are acknowledged ([`Durability::Full`] by
    /// default).
    pub durability: Durability,
    /// How often an idle event stream gets a comment line, so proxies do not close it
    /// (15 s by default).
    pub sse_keepalive: Duration,
    /// Deliver jobs' ends to the `Callback-URL` their clients give (see [`webhooks`]);
    /// none by default, and then a submit with `Callback-URL` is answered `400`.
    pub webhooks: Option<webhooks::WebhookConfig>,
    /// Whose an `Idempotency-Key` is: a key finds a job only for the caller that
    /// stored it (see [`caller`]). By default the caller is the request's
    /// `Authorization` and `Cookie` values ([`CallerIdentity::credentials`]).
    pub caller: CallerIdentity,
    /// With a shared store (PostgreSQL): how long this front end's hold on its jobs
    /// lasts unless renewed (10 s by default; renewed every third of it). Once it
    /// lapses (the front end was killed), another front end takes its jobs over and
    /// runs them again.
    pub lease: Duration,
}

impl JobsConfig {
    /// Jobs stored in the SQLite file `db_path`, with the default limits.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        JobsConfig {
            db_path: db_path.into(),
            ttl: Duration::from_secs(24 * 3600),
            max_queued: 100_000,
            job_timeout: Duration::from_secs(600),
            max_running: 64,
            max_attempts: 5,
            max_wait: Duration::from_secs(60),
            path: "/jobs".to_string(),
            sse_keepalive: Duration::from_secs(15),
            durability: Durability::Full,
            webhooks: None,
            caller: CallerIdentity::default(),
            lease: Duration::from_secs(10),
        }
    }

    /// Whether the store is a PostgreSQL database (a `postgres://` URL) rather than a
    /// SQLite file.
    pub fn is_postgres(&self) -> bool {
        self.db_path
            .to_str()
            .is_some_and(store::postgres::is_postgres_url)
    }

    /// The store's name for logs and errors: the file, or the URL without its
    /// password.
    pub fn store_name(&self) -> String {
        match self.db_path.to_str() {
            Some(url) if self.is_postgres() => store::postgres::redacted(url),
            _ => self.db_path.display().to_string(),
        }
    }
}
