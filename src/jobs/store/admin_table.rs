//! What the job admin API reads in the SQLite job store: the jobs' task column, the
//! feed of changes (`job_changes`), and the queries that list jobs by filter (called
//! by [`SqliteStore`](super::SqliteStore)'s [`JobStore`](super::JobStore) methods).
//!
//! Every change of a job's state (its submission included) is one row of
//! `job_changes`, written by a trigger in the same transaction as the change itself,
//! so the feed never holds a change that was rolled back and never lacks one that was
//! committed. Its `seq` is the table's row id: SQLite gives a new row the highest `seq`
//! plus one, and the row that holds the highest is never deleted (a forgotten job's
//! newest change becomes a blank marker instead, see [`forget_deleted`]), so `seq`
//! only grows and a number is never used twice. (Until schema version 9 it was an
//! `AUTOINCREMENT` key, which kept its highest in `sqlite_sequence`: a read and a write
//! of that table for every change, about 4,500 instructions each.)

use super::{
    plain_state_data, sql_int, JobChange, JobEvent, JobFilter, JobRecord, JobState, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension};

/// Created at open when missing (schema version 6). The triggers are made anew at
/// every open: a job stored already running (`JobStore::insert_and_start`) has two
/// changes, queued and then running, as one inserted and then started has.
///
/// Since schema version 8 a change also names the job's event that told of it
/// (`event`: the job's `events` after the change, NULL for a change that made no event,
/// such as a restart's requeue of the runs under way or an expiry) and the job's
/// `attempts` then: a `state` event with neither error nor progress is then not stored
/// in `job_events` but read back from its change (see [`events_after`]).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS job_changes (
    seq INTEGER PRIMARY KEY,
    number INTEGER NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    event INTEGER,
    attempts INTEGER
);
CREATE INDEX IF NOT EXISTS job_changes_by_number ON job_changes (number);
DROP TRIGGER IF EXISTS job_changes_insert;
CREATE TRIGGER job_changes_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_changes (number, id, state, at_ms, event, attempts)
    SELECT NEW.number, NEW.id, 'queued', NEW.created_ms, NEW.events - 1, 0
    WHERE NEW.state = 'running';
    INSERT INTO job_changes (number, id, state, at_ms, event, attempts)
    VALUES (NEW.number, NEW.id, NEW.state, NEW.updated_ms, NEW.events, NEW.attempts);
END;
DROP TRIGGER IF EXISTS job_changes_update;
CREATE TRIGGER job_changes_update AFTER UPDATE OF state ON jobs
WHEN OLD.state IS NOT NEW.state BEGIN
    INSERT INTO job_changes (number, id, state, at_ms, event, attempts)
    VALUES (NEW.number, NEW.id, NEW.state, NEW.updated_ms,
        CASE WHEN NEW.events > OLD.events THEN NEW.events END, NEW.attempts);
END;
";

/// Run at every open: for a file older than version 6, the column of the task, and one
/// change per job already stored (its present state), in submission order, so a
/// listener starting from 0 sees every job; for one older than version 8, the feed's
/// columns `event` and `attempts`.
pub(crate) fn migrate(db: &Connection, version: i64) -> rusqlite::Result<()> {
    let has_task: i64 = db.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'task'",
        [],
        |row| row.get(0),
    )?;
    if has_task == 0 {
        db.execute_batch("ALTER TABLE jobs ADD COLUMN task TEXT")?;
    }
    // A feed of schema version 6 or 7 gets the columns of version 8, NULL in the
    // changes it holds: their events stay in `job_events`.
    let (columns, has_event): (i64, i64) = db.query_row(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE name = 'event')
         FROM pragma_table_info('job_changes')",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if columns > 0 && has_event == 0 {
        db.execute_batch(
            "ALTER TABLE job_changes ADD COLUMN event INTEGER;
             ALTER TABLE job_changes ADD COLUMN attempts INTEGER;",
        )?;
    }
    without_autoincrement(db)?;
    db.execute_batch(SCHEMA)?;
    if version < 6 {
        db.execute_batch(
            "INSERT INTO job_changes (number, id, state, at_ms)
             SELECT number, id, state, updated_ms FROM jobs ORDER BY number",
        )?;
    }
    Ok(())
}

/// A feed made before schema version 9 (an `AUTOINCREMENT` key) is rebuilt without it,
/// its changes kept with their numbers; when the highest number given was a change
/// deleted since, a blank marker (number 0) keeps it, so the next change still gets a
/// higher one.
fn without_autoincrement(db: &Connection) -> rusqlite::Result<()> {
    let sql: Option<String> = db
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'job_changes'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if !sql.is_some_and(|sql| sql.to_ascii_uppercase().contains("AUTOINCREMENT")) {
        return Ok(());
    }
    // The triggers name the table, so they go first (`SCHEMA` makes them again).
    db.execute_batch(
        "BEGIN IMMEDIATE;
         DROP TRIGGER IF EXISTS job_changes_insert;
         DROP TRIGGER IF EXISTS job_changes_update;
         CREATE TABLE job_changes_v9 (
             seq INTEGER PRIMARY KEY,
             number INTEGER NOT NULL,
             id TEXT NOT NULL,
             state TEXT NOT NULL,
             at_ms INTEGER NOT NULL,
             event INTEGER,
             attempts INTEGER
         );
         INSERT INTO job_changes_v9 (seq, number, id, state, at_ms, event, attempts)
             SELECT seq, number, id, state, at_ms, event, attempts FROM job_changes;
         INSERT INTO job_changes_v9 (seq, number, id, state, at_ms)
             SELECT s.seq, 0, '', '', 0 FROM sqlite_sequence AS s
             WHERE s.name = 'job_changes'
                 AND s.seq > (SELECT COALESCE(MAX(seq), 0) FROM job_changes_v9);
         DROP TABLE job_changes;
         ALTER TABLE job_changes_v9 RENAME TO job_changes;
         COMMIT;",
    )
    .inspect_err(|_| {
        let _ = db.execute_batch("ROLLBACK");
    })?;
    log::info!(
        "job database: the feed of changes rebuilt without AUTOINCREMENT (schema version 9)"
    );
    Ok(())
}

/// A request's task: its `X-Task-Name` field, else its path (without the query, which
/// may hold secrets).
pub(crate) fn task_of(head: &[u8]) -> Option<String> {
    if let Some(name) = crate::http::field_text(head, "x-task-name") {
        return Some(name.trim().to_string());
    }
    let line = head.split(|b| *b == b'\r' || *b == b'\n').next()?;
    let target = line.split(|b| *b == b' ').nth(1)?;
    let path = target.split(|b| *b == b'?').next()?;
    Some(String::from_utf8_lossy(path).into_owned())
}

/// The `WHERE` clause and parameters of a filter, for jobs numbered above `after`.
fn clause(filter: &JobFilter, after: u64) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = String::from("number > ?");
    let mut values = vec![Value::Integer(sql_int(after))];
    if !filter.states.is_empty() {
        let marks = vec!["?"; filter.states.len()].join(", ");
        sql.push_str(&format!(" AND state IN ({marks})"));
        values.extend(
            filter
                .states
                .iter()
                .map(|s| Value::Text(s.as_str().to_string())),
        );
    }
    if let Some(task) = &filter.task {
        sql.push_str(" AND task = ?");
        values.push(Value::Text(task.clone()));
    }
    if let Some(before) = filter.created_before_ms {
        sql.push_str(" AND created_ms < ?");
        values.push(Value::Integer(before));
    }
    if let Some(after_ms) = filter.created_after_ms {
        sql.push_str(" AND created_ms > ?");
        values.push(Value::Integer(after_ms));
    }
    (sql, values)
}

/// Up to `limit` jobs numbered above `after` that pass `filter`, in submission order,
/// each with its task.
pub(crate) fn list(
    db: &Connection,
    columns: &str,
    read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<JobRecord, StoreError>>,
    filter: &JobFilter,
    after: u64,
    limit: usize,
) -> Result<Vec<(JobRecord, Option<String>)>, StoreError> {
    let (condition, mut values) = clause(filter, after);
    values.push(rusqlite::types::Value::Integer(sql_int(limit as u64)));
    let sql = format!("SELECT {columns}, task FROM jobs WHERE {condition} ORDER BY number LIMIT ?");
    let mut statement = db.prepare_cached(&sql)?;
    let task_column = columns.split(',').count();
    let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
        Ok((read(row)?, row.get::<_, Option<String>>(task_column)?))
    })?;
    let mut jobs = Vec::new();
    for row in rows {
        let (record, task) = row?;
        jobs.push((record?, task));
    }
    Ok(jobs)
}

/// Up to `limit` changes after `since`, in order.
pub(crate) fn changes(
    db: &Connection,
    since: u64,
    limit: usize,
) -> Result<Vec<JobChange>, StoreError> {
    let mut statement = db.prepare_cached(
        "SELECT seq, id, state, at_ms FROM job_changes WHERE seq > ?1 AND number > 0
         ORDER BY seq LIMIT ?2",
    )?;
    let rows = statement.query_map(params![sql_int(since), sql_int(limit as u64)], |row| {
        let state: String = row.get(2)?;
        Ok(JobChange {
            seq: row.get::<_, i64>(0)?.max(0) as u64,
            id: row.get(1)?,
            state: JobState::parse(&state).unwrap_or(JobState::Expired),
            at_ms: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A job's events after `seq`, in order: those stored in `job_events`, and the plain
/// `state` events kept with the changes they tell of (schema version 8, see
/// [`SCHEMA`]), but where `job_events` holds an event of the same number (stored
/// there, it is the event) and once the job has expired (its events are forgotten).
pub(crate) fn events_after(
    db: &Connection,
    number: u64,
    seq: u64,
) -> Result<Vec<JobEvent>, StoreError> {
    let mut statement = db.prepare_cached(
        "SELECT seq, kind, data, NULL, NULL, NULL FROM job_events WHERE number = ?1 AND seq > ?2
         UNION ALL
         SELECT c.event, 'state', NULL, c.state, c.attempts, c.at_ms FROM job_changes AS c
         WHERE c.number = ?1 AND c.event > ?2
             AND NOT EXISTS (SELECT 1 FROM job_events AS e WHERE e.number = ?1 AND e.seq = c.event)
             AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.number = ?1 AND j.state = 'expired')
         ORDER BY 1",
    )?;
    let rows = statement.query_map(params![sql_int(number), sql_int(seq)], |row| {
        let seq = row.get::<_, i64>(0)?.max(0) as u64;
        let data = match row.get::<_, Option<String>>(2)? {
            Some(data) => data,
            None => {
                let state: String = row.get(3)?;
                let attempts = row.get::<_, Option<i64>>(4)?.unwrap_or(0);
                plain_state_data(
                    JobState::parse(&state).unwrap_or(JobState::Expired),
                    attempts.clamp(0, i64::from(u32::MAX)) as u32,
                    row.get(5)?,
                )
            }
        };
        Ok(JobEvent {
            seq,
            kind: row.get(1)?,
            data,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The highest sequence number given so far (0 before the first change).
pub(crate) fn last_seq(db: &Connection) -> Result<u64, StoreError> {
    let seq: i64 = db
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM job_changes")?
        .query_row([], |row| row.get(0))?;
    Ok(seq.max(0) as u64)
}

/// Puts a failed job whose request is still stored back in the queue; `None` if it is
/// not failed, or its request is gone.
pub(crate) fn retry_sql(columns: &str) -> String {
    format!(
        "UPDATE jobs SET events = events + 1, state = 'queued', updated_ms = ?2, status = NULL,
             answer_headers = NULL, answer_body = NULL
         WHERE number = ?1 AND state = 'failed' AND head IS NOT NULL RETURNING {columns}"
    )
}

/// Forgets the changes of the expired jobs that expiry is about to delete (those that
/// expired before `before_ms`). The feed's newest change, if it is one of them, becomes
/// a blank marker (number 0, which no job has and no reader lists) rather than going:
/// it holds the highest `seq`, which the next change's follows. An older marker goes.
pub(crate) fn forget_deleted(db: &Connection, before_ms: i64) -> Result<(), StoreError> {
    db.prepare_cached(
        "UPDATE job_changes SET number = 0, id = '', state = '', at_ms = 0, event = NULL,
             attempts = NULL
         WHERE seq = (SELECT MAX(seq) FROM job_changes) AND number IN
             (SELECT number FROM jobs WHERE state = 'expired' AND updated_ms < ?1)",
    )?
    .execute([before_ms])?;
    db.prepare_cached(
        "DELETE FROM job_changes WHERE number IN
             (SELECT number FROM jobs WHERE state = 'expired' AND updated_ms < ?1)
             OR (number = 0 AND seq < (SELECT MAX(seq) FROM job_changes))",
    )?
    .execute([before_ms])?;
    Ok(())
}

/// The header fields a failed job's stored request loses when the job fails: what
/// authenticates its caller (RFC 9110 §11.6.2, §11.7.2; RFC 6265 §5.4). A failed job
/// keeps the rest of its request for a retry, but its credentials leave the disk when
/// it ends, as every job's do.
const CREDENTIAL_FIELDS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// `head` (a request line and its header fields, as the front end stored them) without
/// the fields that carry credentials.
pub(super) fn without_credentials(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut first = true;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let credential = !first
            && line.iter().position(|&b| b == b':').is_some_and(|colon| {
                let name = line[..colon].trim_ascii();
                CREDENTIAL_FIELDS
                    .iter()
                    .any(|field| name.eq_ignore_ascii_case(field.as_bytes()))
            });
        first = false;
        if !credential {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Removes the credentials from the stored request of job `number`, if it is kept.
pub(super) fn scrub_credentials(db: &Connection, number: u64) -> Result<(), StoreError> {
    let head: Option<Vec<u8>> = db
        .prepare_cached("SELECT head FROM jobs WHERE number = ?1")?
        .query_row([sql_int(number)], |row| row.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if let Some(head) = head {
        let kept = without_credentials(&head);
        if kept.len() != head.len() {
            db.prepare_cached("UPDATE jobs SET head = ?2 WHERE number = ?1")?
                .execute(params![sql_int(number), kept])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod credential_tests {
    use super::without_credentials;

    #[test]
    fn credentials_leave_a_kept_head_and_nothing_else_does() {
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nX-Task-Name: t\r\ncookie: id=1\r\nProxy-Authorization : Basic eA==\r\n\r\n";
        let kept = without_credentials(head);
        assert_eq!(
            kept,
            b"POST /a HTTP/1.1\r\nHost: x\r\nX-Task-Name: t\r\n\r\n".to_vec()
        );
        // A request line that looks like a field is kept.
        assert_eq!(
            without_credentials(b"GET /cookie:x HTTP/1.1\r\n\r\n"),
            b"GET /cookie:x HTTP/1.1\r\n\r\n".to_vec()
        );
    }
}
