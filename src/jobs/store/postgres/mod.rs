//! The PostgreSQL job store: one database shared by every front end that names it
//! (`--jobs-db postgres://...`), the same tables and states as the SQLite store, and
//! what sharing needs on top: leases, take-overs and change notices.
//!
//! - **One batch at a time across front ends.** [`begin`](JobStore::begin) takes a
//!   transaction-scoped advisory lock, so the front ends' batches never overlap: an
//!   idempotency key looked up and then inserted cannot race another front end's
//!   insert, the feed of changes (`job_changes`) never shows a number before a smaller
//!   one commits, and no two batches can deadlock on each other's rows. A batch holds
//!   the lock only from its `BEGIN` to its `COMMIT` (a few milliseconds).
//! - **Leases.** Every front end has a row in `front_ends` with the time its lease
//!   ends, renewed by its job service ([`renew_lease`](JobStore::renew_lease)); every
//!   unfinished job names the front end that holds it (`jobs.owner`, set by the submit,
//!   the start and a take-over). A front end whose lease lapses (it was killed, or lost
//!   the database) loses its jobs to the first other front end that looks
//!   ([`take_over`](JobStore::take_over)): its running jobs are queued again (at least
//!   once: `attempts` counts the runs) and its pending webhooks move too.
//! - **Change notices.** A trigger on `jobs` sends `NOTIFY prime_jobs` with the job's
//!   number and the changing front end's id (its `application_name`) at every change
//!   of state or new event; [`listen`] delivers them to the other front ends' job
//!   services, which wake their long-polls and event streams, and interrupt a run that
//!   another front end cancelled. PostgreSQL delivers a notice only once its
//!   transaction has committed, so a woken reader always finds the change.
//!
//! Durability: a job is acknowledged once its transaction has committed
//! ([`Durability::Full`]: on the server's disk; [`Durability::Process`] sets
//! `synchronous_commit = off`, so the server's crash, not a front end's, can lose the
//! last commits). The connection is made without TLS: use a Unix socket or a trusted
//! network.

use super::admin_table::{task_of, without_credentials};
use super::*;
use schema::{connect, SCHEMA};

mod batch;
mod notices;
mod schema;

use ::postgres::types::ToSql;
use ::postgres::{Client, Row, Statement};
pub use notices::{listen, Notice};
pub use schema::{is_postgres_url, redacted};
use std::collections::HashMap;

/// The advisory lock key that serialises the front ends' batches (and the creation of
/// the schema): "prime" in ASCII.
const BATCH_LOCK: i64 = 0x0070_7269_6d65;

const RECORD_COLUMNS: &str = "number, id, state, created_ms, updated_ms, attempts, status, error, \
     progress, progress_message, events, not_before_ms";

const WEBHOOK_COLUMNS: &str =
    "number, job_id, url, state, payload, attempts, first_failure_ms, next_ms";

/// The condition "the job's (or webhook's) owner holds no lease now".
/// Leases are kept on the database server's clock, never a front end's, so front ends
/// on hosts whose clocks differ agree on when a lease lapses.
const LAPSED: &str = "(owner IS NULL OR owner NOT IN
     (SELECT id FROM front_ends
      WHERE lease_until_ms >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint))";

/// The PostgreSQL job store.
pub struct PostgresStore {
    db: Client,
    /// Where the database is, to connect again after a lost connection.
    url: String,
    /// How far a commit goes (`synchronous_commit`), for a new connection.
    durability: Durability,
    /// This front end's id: its `application_name`, the owner of the jobs it holds.
    id: String,
    /// Prepared statements, by their text.
    statements: HashMap<String, Statement>,
    /// Why the last write failed, until a commit succeeds.
    write_error: Option<String>,
    /// Events of the batch under way, written before its commit.
    pending_events: PendingEvents,
    /// Statements sent to the server so far (each one round trip).
    statements_sent: u64,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL, as libpq's), creates the
    /// tables it lacks, and names this front end with a new random id.
    ///
    /// Errors: [`StoreError::Open`] when the server cannot be reached, refuses the
    /// connection, or the schema cannot be created.
    pub fn open(url: &str, durability: Durability) -> Result<PostgresStore, StoreError> {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).map_err(|e| StoreError::Open {
            path: redacted(url),
            reason: format!("no random front-end id: {e}"),
        })?;
        let id = format!(
            "prime-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let db = connect(url, &id, durability)?;
        let mut store = PostgresStore {
            db,
            url: url.to_string(),
            durability,
            id,
            statements: HashMap::new(),
            write_error: None,
            pending_events: PendingEvents::default(),
            statements_sent: 0,
        };
        store.prepare().map_err(|e| StoreError::Open {
            path: redacted(url),
            reason: e.to_string(),
        })?;
        Ok(store)
    }

    /// This front end's id in the store (the owner its jobs name).
    pub fn front_end_id(&self) -> &str {
        &self.id
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| StoreError::Corrupt(format!("no random store key: {e}")))?;
        let mut tx = self.db.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BATCH_LOCK])?;
        tx.batch_execute(SCHEMA)?;
        tx.execute(
            "INSERT INTO store_secret (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            &[&&key[..]],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.db.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        self.statements_sent += 1;
        Ok(self.db.execute(&statement, params)?)
    }

    fn rows(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        self.statements_sent += 1;
        Ok(self.db.query(&statement, params)?)
    }

    fn row(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql)?;
        self.statements_sent += 1;
        Ok(self.db.query_opt(&statement, params)?)
    }

    /// A statement of its own text (`BEGIN`, `COMMIT`, `ROLLBACK`), unprepared.
    fn simple(&mut self, sql: &str) -> Result<(), ::postgres::Error> {
        self.statements_sent += 1;
        self.db.batch_execute(sql)
    }

    fn record(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<JobRecord>, StoreError> {
        self.row(sql, params)?
            .map(|row| read_record(&row))
            .transpose()
    }

    fn records(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.rows(sql, params)?.iter().map(read_record).collect()
    }
}

fn read_record(row: &Row) -> Result<JobRecord, StoreError> {
    let state: String = row.try_get(2)?;
    let Some(state) = JobState::parse(&state) else {
        return Err(StoreError::Corrupt(format!("job state {state:?}")));
    };
    let number: i64 = row.try_get(0)?;
    let status: Option<i64> = row.try_get(6)?;
    let progress: Option<f64> = row.try_get(8)?;
    let progress_message: Option<String> = row.try_get(9)?;
    Ok(JobRecord {
        number: number.max(0) as u64,
        id: row.try_get(1)?,
        state,
        created_ms: row.try_get(3)?,
        updated_ms: row.try_get(4)?,
        attempts: row.try_get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
        status: status.and_then(|s| u16::try_from(s).ok()),
        error: row.try_get(7)?,
        progress: progress.map(|p| (p, progress_message.unwrap_or_default())),
        events: row.try_get::<_, i64>(10)?.max(0) as u64,
        not_before_ms: row.try_get(11)?,
    })
}

fn read_webhook(row: &Row) -> Result<WebhookRecord, StoreError> {
    let state: String = row.try_get(3)?;
    let Some(state) = DeliveryState::parse(&state) else {
        return Err(StoreError::Corrupt(format!("webhook state {state:?}")));
    };
    let attempts: String = row.try_get(5)?;
    let attempts: Vec<Attempt> = serde_json::from_str(&attempts)
        .map_err(|e| StoreError::Corrupt(format!("webhook attempts: {e}")))?;
    Ok(WebhookRecord {
        number: row.try_get::<_, i64>(0)?.max(0) as u64,
        job_id: row.try_get(1)?,
        url: row.try_get(2)?,
        state,
        payload: row.try_get(4)?,
        attempts,
        first_failure_ms: row.try_get(6)?,
        next_ms: row.try_get(7)?,
    })
}

impl JobStore for PostgresStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        if self.db.is_closed() {
            // The server restarted, or the network failed: a new connection, and its
            // statements prepared anew. Until it connects, every batch fails (503).
            self.db = connect(&self.url, &self.id, self.durability)?;
            self.statements.clear();
            log::warn!("jobs: connected to the job database again");
        }
        self.pending_events.clear();
        self.simple("BEGIN")?;
        if let Err(e) = self.execute("SELECT pg_advisory_xact_lock($1)", &[&BATCH_LOCK]) {
            let _ = self.simple("ROLLBACK");
            return Err(e);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if let Err(e) = self.write_events() {
            self.write_error = Some(e.to_string());
            return Err(e);
        }
        match self.simple("COMMIT") {
            Ok(()) => {
                self.write_error = None;
                Ok(())
            }
            Err(e) => {
                self.write_error = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    fn rollback(&mut self) {
        self.pending_events.clear();
        if let Err(e) = self.simple("ROLLBACK") {
            log::error!("job database: rollback failed: {e}");
        }
    }

    fn last_write_error(&self) -> Option<String> {
        self.write_error.clone()
    }

    fn insert(&mut self, job: &NewJob<'_>) -> Result<JobRecord, StoreError> {
        let state = job.state();
        let id = self.id.clone();
        let task = task_of(job.head);
        let row = self.row(
            "INSERT INTO jobs (id, state, created_ms, updated_ms, idempotency_key, fingerprint, head, body, events, client, not_before_ms, task, owner)
             VALUES ($1, $8, $2, $2, $3, $4, $5, $6, 1, $7, $9, $10, $11) RETURNING number",
            &[
                &job.id,
                &job.now_ms,
                &job.idempotency_key,
                &job.fingerprint,
                &job.head,
                &job.body,
                &job.client,
                &state.as_str(),
                &job.not_before_ms,
                &task,
                &id,
            ],
        )?;
        let number: i64 = match row {
            Some(row) => row.try_get(0)?,
            None => return Err(StoreError::Corrupt("an insert returned no number".into())),
        };
        Ok(job.record(number.max(0) as u64))
    }

    fn insert_many(&mut self, jobs: &[NewJob<'_>]) -> Result<Vec<JobRecord>, StoreError> {
        self.insert_batch(jobs)
    }

    fn by_id(&mut self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = $1");
        self.record(&sql, &[&id])
    }

    fn by_number(&mut self, number: u64) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE number = $1");
        self.record(&sql, &[&sql_int(number)])
    }

    fn caller_secret(&mut self) -> Result<Vec<u8>, StoreError> {
        match self.row("SELECT key FROM store_secret WHERE id = 1", &[])? {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(StoreError::Corrupt("no store key".into())),
        }
    }

    fn by_idempotency_key(
        &mut self,
        key: &str,
    ) -> Result<Option<(JobRecord, Vec<u8>)>, StoreError> {
        let sql =
            format!("SELECT {RECORD_COLUMNS}, fingerprint FROM jobs WHERE idempotency_key = $1");
        let Some(row) = self.row(&sql, &[&key])? else {
            return Ok(None);
        };
        let fingerprint: Option<Vec<u8>> = row.try_get(12)?;
        Ok(Some((read_record(&row)?, fingerprint.unwrap_or_default())))
    }

    fn start(&mut self, number: u64, now_ms: i64) -> Result<Option<StartedJob>, StoreError> {
        let id = self.id.clone();
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'running', attempts = attempts + 1,
                 updated_ms = $2, owner = $3
             WHERE number = $1 AND state = 'queued' RETURNING {RECORD_COLUMNS}, head, body, client"
        );
        let Some(row) = self.row(&sql, &[&sql_int(number), &now_ms, &id])? else {
            return Ok(None);
        };
        let head: Option<Vec<u8>> = row.try_get(12)?;
        let body: Option<Vec<u8>> = row.try_get(13)?;
        let client: Option<String> = row.try_get(14)?;
        Ok(Some(StartedJob::from_columns(
            read_record(&row)?,
            head,
            body,
            client,
        )))
    }

    fn start_many(&mut self, numbers: &[u64], now_ms: i64) -> Result<Vec<StartedJob>, StoreError> {
        self.start_batch(numbers, now_ms)
    }

    fn finish(&mut self, end: Ending<'_>, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let (number, state, answer, error) = (end.number, end.state, end.answer, end.error);
        let headers = answer.headers_json()?;
        let number = sql_int(number);
        if state == JobState::Failed {
            let head = self.row("SELECT head FROM jobs WHERE number = $1", &[&number])?;
            let head: Option<Vec<u8>> = match head {
                Some(row) => row.try_get(0)?,
                None => None,
            };
            if let Some(head) = head {
                let kept = without_credentials(&head);
                if kept.len() != head.len() {
                    self.execute(
                        "UPDATE jobs SET head = $2 WHERE number = $1",
                        &[&number, &kept],
                    )?;
                }
            }
        }
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = $2, updated_ms = $3, status = $4, error = $5,
                 answer_headers = $6, answer_body = $7,
                 head = CASE $2 WHEN 'failed' THEN head END, body = CASE $2 WHEN 'failed' THEN body END,
                 client = CASE $2 WHEN 'failed' THEN client END
             WHERE number = $1 AND state IN ('queued', 'running') RETURNING {RECORD_COLUMNS}"
        );
        self.record(
            &sql,
            &[
                &number,
                &state.as_str(),
                &now_ms,
                &i64::from(answer.status),
                &error,
                &headers,
                &answer.body,
            ],
        )
    }

    fn finish_many(
        &mut self,
        ends: &[Ending<'_>],
        now_ms: i64,
    ) -> Result<Vec<Option<JobRecord>>, StoreError> {
        self.finish_batch(ends, now_ms)
    }

    fn requeue(
        &mut self,
        number: u64,
        error: &str,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'queued', updated_ms = $2, error = $3
             WHERE number = $1 AND state = 'running' RETURNING {RECORD_COLUMNS}"
        );
        self.record(&sql, &[&sql_int(number), &now_ms, &error])
    }

    fn cancel(&mut self, number: u64, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'cancelled', updated_ms = $2, head = NULL,
                 body = NULL, client = NULL
             WHERE number = $1 AND state IN ('scheduled', 'queued', 'running') RETURNING {RECORD_COLUMNS}"
        );
        self.record(&sql, &[&sql_int(number), &now_ms])
    }

    fn answer(&mut self, number: u64) -> Result<Option<StoredAnswer>, StoreError> {
        let row = self.row(
            "SELECT status, answer_headers, answer_body FROM jobs
             WHERE number = $1 AND state IN ('succeeded', 'failed')",
            &[&sql_int(number)],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: Option<i64> = row.try_get(0)?;
        let headers: Option<String> = row.try_get(1)?;
        let body: Option<Vec<u8>> = row.try_get(2)?;
        super::answer_from_row(number, (status, headers, body))
    }

    /// Queues again the running jobs of front ends whose lease has lapsed (never those
    /// another live front end runs).
    fn requeue_running(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE jobs SET state = 'queued', updated_ms = $1 WHERE state = 'running' AND {LAPSED}"
        );
        self.execute(&sql, &[&now_ms])
    }

    fn release_due(&mut self, now_ms: i64) -> Result<Vec<JobRecord>, StoreError> {
        let id = self.id.clone();
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'queued', updated_ms = $1, owner = $2
             WHERE state = 'scheduled' AND not_before_ms <= $1 RETURNING {RECORD_COLUMNS}"
        );
        let mut released = self.records(&sql, &[&now_ms, &id])?;
        released.sort_by_key(|record| record.number);
        Ok(released)
    }

    fn next_not_before(&mut self) -> Result<Option<i64>, StoreError> {
        match self.row(
            "SELECT MIN(not_before_ms) FROM jobs WHERE state = 'scheduled'",
            &[],
        )? {
            Some(row) => Ok(row.try_get(0)?),
            None => Ok(None),
        }
    }

    fn queued(&mut self) -> Result<Vec<(u64, i64)>, StoreError> {
        let rows = self.rows(
            "SELECT number, created_ms FROM jobs WHERE state = 'queued' ORDER BY number",
            &[],
        )?;
        rows.iter()
            .map(|row| Ok((row.try_get::<_, i64>(0)?.max(0) as u64, row.try_get(1)?)))
            .collect()
    }

    fn expire(&mut self, now_ms: i64, ttl_ms: i64) -> Result<u64, StoreError> {
        let before_ms = now_ms.saturating_sub(ttl_ms);
        self.write_events()?;
        self.execute(
            "DELETE FROM job_changes WHERE number IN
                 (SELECT number FROM jobs WHERE state = 'expired' AND updated_ms < $1)",
            &[&before_ms],
        )?;
        self.execute(
            "DELETE FROM jobs WHERE state = 'expired' AND updated_ms < $1",
            &[&before_ms],
        )?;
        self.execute(
            "DELETE FROM job_events WHERE number IN (SELECT number FROM jobs
                 WHERE state IN ('succeeded', 'failed', 'cancelled') AND updated_ms < $1)",
            &[&before_ms],
        )?;
        let expired = self.execute(
            "UPDATE jobs SET state = 'expired', updated_ms = $2, idempotency_key = NULL,
                 fingerprint = NULL, head = NULL, body = NULL, client = NULL, answer_headers = NULL,
                 answer_body = NULL, error = NULL, progress = NULL, progress_message = NULL
             WHERE state IN ('succeeded', 'failed', 'cancelled') AND updated_ms < $1",
            &[&before_ms, &now_ms],
        )?;
        self.execute(
            "DELETE FROM webhooks WHERE number NOT IN
                 (SELECT number FROM jobs WHERE state != 'expired')",
            &[],
        )?;
        Ok(expired)
    }

    fn counts(&mut self) -> Result<StateCounts, StoreError> {
        let rows = self.rows("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])?;
        let mut counts = StateCounts::default();
        for row in rows {
            let state: String = row.try_get(0)?;
            let count: i64 = row.try_get(1)?;
            if let Some(state) = JobState::parse(&state) {
                *counts.of(state) = count.max(0) as u64;
            }
        }
        Ok(counts)
    }

    fn set_progress(
        &mut self,
        number: u64,
        fraction: f64,
        message: &str,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET events = events + 1, progress = $2, progress_message = $3, updated_ms = $4
             WHERE number = $1 AND state IN ('queued', 'running') RETURNING {RECORD_COLUMNS}"
        );
        self.record(&sql, &[&sql_int(number), &fraction, &message, &now_ms])
    }

    fn add_event(&mut self, number: u64, event: &JobEvent, now_ms: i64) -> Result<(), StoreError> {
        self.pending_events.push(number, event, now_ms);
        Ok(())
    }

    fn events_after(&mut self, number: u64, seq: u64) -> Result<Vec<JobEvent>, StoreError> {
        self.write_events()?;
        let rows = self.rows(
            "SELECT seq, kind, data FROM job_events WHERE number = $1 AND seq > $2 ORDER BY seq",
            &[&sql_int(number), &sql_int(seq)],
        )?;
        rows.iter()
            .map(|row| {
                Ok(JobEvent {
                    seq: row.try_get::<_, i64>(0)?.max(0) as u64,
                    kind: row.try_get(1)?,
                    data: row.try_get(2)?,
                })
            })
            .collect()
    }

    fn webhook_add(&mut self, number: u64, job_id: &str, url: &str) -> Result<(), StoreError> {
        let id = self.id.clone();
        self.execute(
            "INSERT INTO webhooks (number, job_id, url, state, owner) VALUES ($1, $2, $3, 'waiting', $4)
             ON CONFLICT (number) DO UPDATE SET job_id = EXCLUDED.job_id, url = EXCLUDED.url,
                 state = 'waiting', payload = NULL, attempts = '[]', first_failure_ms = NULL,
                 next_ms = NULL, owner = EXCLUDED.owner",
            &[&sql_int(number), &job_id, &url, &id],
        )?;
        Ok(())
    }

    fn webhook(&mut self, number: u64) -> Result<Option<WebhookRecord>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE number = $1");
        self.row(&sql, &[&sql_int(number)])?
            .map(|row| read_webhook(&row))
            .transpose()
    }

    /// Writes the webhook, which this front end now delivers (its owner).
    fn webhook_save(&mut self, record: &WebhookRecord) -> Result<(), StoreError> {
        let attempts = serde_json::to_string(&record.attempts)
            .map_err(|e| StoreError::Corrupt(format!("webhook attempts: {e}")))?;
        let id = self.id.clone();
        self.execute(
            "UPDATE webhooks SET state = $2, payload = $3, attempts = $4, first_failure_ms = $5,
                 next_ms = $6, owner = $7 WHERE number = $1",
            &[
                &sql_int(record.number),
                &record.state.as_str(),
                &record.payload,
                &attempts,
                &record.first_failure_ms,
                &record.next_ms,
                &id,
            ],
        )?;
        Ok(())
    }

    /// The pending webhooks no live front end delivers, now this one's.
    fn webhooks_pending(&mut self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks_take_over(crate::jobs::clock::now_ms())
    }

    fn list(
        &mut self,
        filter: &JobFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(JobRecord, Option<String>)>, StoreError> {
        let states: Vec<String> = filter
            .states
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        let after = sql_int(after);
        let limit = sql_int(limit as u64);
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, task FROM jobs
             WHERE number > $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2))
                 AND ($3::text IS NULL OR task = $3) AND ($4::bigint IS NULL OR created_ms < $4)
                 AND ($5::bigint IS NULL OR created_ms > $5)
             ORDER BY number LIMIT $6"
        );
        let rows = self.rows(
            &sql,
            &[
                &after,
                &states,
                &filter.task,
                &filter.created_before_ms,
                &filter.created_after_ms,
                &limit,
            ],
        )?;
        rows.iter()
            .map(|row| Ok((read_record(row)?, row.try_get(12)?)))
            .collect()
    }

    fn changes(&mut self, since: u64, limit: usize) -> Result<Vec<JobChange>, StoreError> {
        let rows = self.rows(
            "SELECT seq, id, state, at_ms FROM job_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&sql_int(since), &sql_int(limit as u64)],
        )?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get(2)?;
                Ok(JobChange {
                    seq: row.try_get::<_, i64>(0)?.max(0) as u64,
                    id: row.try_get(1)?,
                    state: JobState::parse(&state).unwrap_or(JobState::Expired),
                    at_ms: row.try_get(3)?,
                })
            })
            .collect()
    }

    fn last_seq(&mut self) -> Result<u64, StoreError> {
        let row = self.row(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_changes_seq_seq",
            &[],
        )?;
        match row {
            Some(row) => Ok(row.try_get::<_, i64>(0)?.max(0) as u64),
            None => Ok(0),
        }
    }

    fn retry(&mut self, number: u64, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let id = self.id.clone();
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'queued', updated_ms = $2, status = NULL,
                 answer_headers = NULL, answer_body = NULL, owner = $3
             WHERE number = $1 AND state = 'failed' AND head IS NOT NULL RETURNING {RECORD_COLUMNS}"
        );
        self.record(&sql, &[&sql_int(number), &now_ms, &id])
    }

    fn shared(&self) -> Option<&str> {
        Some(&self.id)
    }

    fn statements(&self) -> u64 {
        self.statements_sent
    }

    fn renew_lease(&mut self, lease_ms: i64) -> Result<(), StoreError> {
        let id = self.id.clone();
        self.execute(
            "INSERT INTO front_ends (id, lease_until_ms)
             VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2)
             ON CONFLICT (id) DO UPDATE SET lease_until_ms = EXCLUDED.lease_until_ms",
            &[&id, &lease_ms],
        )?;
        Ok(())
    }

    fn take_over(&mut self, now_ms: i64) -> Result<Vec<(JobRecord, JobState)>, StoreError> {
        let id = self.id.clone();
        let sql = format!(
            "WITH lapsed AS (
                 SELECT number, state AS was FROM jobs
                 WHERE state IN ('queued', 'running') AND owner IS DISTINCT FROM $2 AND {LAPSED}
                 ORDER BY number FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET owner = $2, state = 'queued',
                 events = jobs.events + CASE lapsed.was WHEN 'running' THEN 1 ELSE 0 END,
                 updated_ms = CASE lapsed.was WHEN 'running' THEN $1 ELSE jobs.updated_ms END
             FROM lapsed WHERE jobs.number = lapsed.number
             RETURNING {}, lapsed.was",
            RECORD_COLUMNS
                .split(", ")
                .map(|c| format!("jobs.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = self.rows(&sql, &[&now_ms, &id])?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let was: String = row.try_get(12)?;
            let was = JobState::parse(&was).unwrap_or(JobState::Queued);
            taken.push((read_record(row)?, was));
        }
        taken.sort_by_key(|(record, _)| record.number);
        self.execute(
            "DELETE FROM front_ends
             WHERE lease_until_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )?;
        Ok(taken)
    }

    fn webhooks_take_over(&mut self, _now_ms: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        let id = self.id.clone();
        let sql = format!(
            "UPDATE webhooks SET owner = $1 WHERE number IN (
                 SELECT number FROM webhooks WHERE state = 'pending'
                     AND owner IS DISTINCT FROM $1 AND {LAPSED}
                 ORDER BY number FOR UPDATE SKIP LOCKED)
             RETURNING {WEBHOOK_COLUMNS}"
        );
        let rows = self.rows(&sql, &[&id])?;
        let mut records: Vec<WebhookRecord> =
            rows.iter().map(read_webhook).collect::<Result<_, _>>()?;
        records.sort_by_key(|record| record.number);
        Ok(records)
    }
}
