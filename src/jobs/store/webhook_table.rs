//! The webhooks' table in the SQLite job store, and its queries (called by
//! [`SqliteStore`](super::SqliteStore)'s [`JobStore`](super::JobStore) methods).

use super::sql_int;
use super::StoreError;
use super::{Attempt, DeliveryState, WebhookRecord};
use rusqlite::{params, Connection, OptionalExtension};

/// Created at open when missing (schema version 2).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
    number INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    payload BLOB,
    attempts TEXT NOT NULL DEFAULT '[]',
    first_failure_ms INTEGER,
    next_ms INTEGER
);
CREATE INDEX IF NOT EXISTS webhooks_by_state ON webhooks (state);
";

const COLUMNS: &str = "number, job_id, url, state, payload, attempts, first_failure_ms, next_ms";

fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<WebhookRecord, StoreError>> {
    let number: i64 = row.get(0)?;
    let state: String = row.get(3)?;
    let attempts: String = row.get(5)?;
    let Some(state) = DeliveryState::parse(&state) else {
        return Ok(Err(StoreError::Corrupt(format!("webhook state {state:?}"))));
    };
    let attempts: Vec<Attempt> = match serde_json::from_str(&attempts) {
        Ok(attempts) => attempts,
        Err(e) => return Ok(Err(StoreError::Corrupt(format!("webhook attempts: {e}")))),
    };
    Ok(Ok(WebhookRecord {
        number: number as u64,
        job_id: row.get(1)?,
        url: row.get(2)?,
        state,
        payload: row.get(4)?,
        attempts,
        first_failure_ms: row.get(6)?,
        next_ms: row.get(7)?,
    }))
}

/// Registers a job's callback, waiting for the job's end.
pub(crate) fn add(db: &Connection, number: u64, job_id: &str, url: &str) -> Result<(), StoreError> {
    db.prepare_cached(
        "INSERT OR REPLACE INTO webhooks (number, job_id, url, state) VALUES (?1, ?2, ?3, 'waiting')",
    )?
    .execute(params![sql_int(number), job_id, url])?;
    Ok(())
}

/// A job's webhook.
pub(crate) fn get(db: &Connection, number: u64) -> Result<Option<WebhookRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE number = ?1");
    let row = db
        .prepare_cached(&sql)?
        .query_row([sql_int(number)], read)
        .optional()?;
    row.transpose()
}

/// Writes a webhook's state, message, attempts and schedule.
pub(crate) fn save(db: &Connection, record: &WebhookRecord) -> Result<(), StoreError> {
    let attempts = serde_json::to_string(&record.attempts)
        .map_err(|e| StoreError::Corrupt(format!("webhook attempts: {e}")))?;
    db.prepare_cached(
        "UPDATE webhooks SET state = ?2, payload = ?3, attempts = ?4, first_failure_ms = ?5,
             next_ms = ?6 WHERE number = ?1",
    )?
    .execute(params![
        sql_int(record.number),
        record.state.as_str(),
        record.payload,
        attempts,
        record.first_failure_ms,
        record.next_ms
    ])?;
    Ok(())
}

/// Every webhook with a message waiting for an attempt.
pub(crate) fn pending(db: &Connection) -> Result<Vec<WebhookRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE state = 'pending' ORDER BY number");
    let mut statement = db.prepare(&sql)?;
    let rows = statement.query_map([], read)?;
    let mut records = Vec::new();
    for row in rows {
        records.push(row??);
    }
    Ok(records)
}

/// Forgets the webhooks of jobs that expired or are gone.
pub(crate) fn forget_expired(db: &Connection) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM webhooks WHERE number NOT IN
             (SELECT number FROM jobs WHERE state != 'expired')",
        [],
    )?;
    Ok(())
}
