//! The SQLite job store's indexes of `jobs`, and the change of schema version 7 (kept
//! apart so `sqlite.rs` stays under the length the layout allows).
use super::admin;
use crate::jobs::store::StoreError;
use rusqlite::Connection;

/// The indexes of `jobs` (but `jobs_by_key`, see [`key_index`]): the service's one
/// timer asks for the earliest scheduled job, which an index of the scheduled jobs
/// alone answers without reading the others.
pub(super) const JOBS_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, updated_ms);
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (not_before_ms) WHERE state = 'scheduled';
";

/// Makes idempotency keys unique by a partial index of the jobs that have one
/// (`jobs_by_key`), which the key's look-up uses (`idempotency_key = ?` implies it is
/// not NULL). A file of schema version 6 or older has a `UNIQUE` column instead, whose
/// index holds an entry for every job, a key or not: a job stored cost a B-tree insert
/// and a commit about two pages of the log more. Such a `jobs` table is rebuilt without
/// it (its rows copied, numbers and all, in one transaction; its indexes and the feed's
/// triggers made again), so a store of many jobs takes a moment to open once.
pub(super) fn key_index(db: &Connection) -> Result<(), StoreError> {
    let unique_column: i64 = db.query_row(
        "SELECT COUNT(*) FROM pragma_index_list('jobs') AS l, pragma_index_info(l.name) AS i
         WHERE l.origin = 'u' AND i.name = 'idempotency_key'",
        [],
        |row| row.get(0),
    )?;
    if unique_column > 0 {
        let sql: String = db.query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
            [],
            |row| row.get(0),
        )?;
        // The columns as they are (later versions added some with `ALTER TABLE`),
        // under another name (SQLite quotes a name it has rewritten: `"jobs"`).
        let column = "idempotency_key TEXT UNIQUE";
        let columns = sql.find('(').map(|at| &sql[at..]);
        let Some(columns) = columns.filter(|c| c.matches(column).count() == 1) else {
            return Err(StoreError::Corrupt(format!(
                "the jobs table is not as schema version 6 made it: {sql}"
            )));
        };
        let rebuilt = format!(
            "CREATE TABLE jobs_rebuilt {}",
            columns.replacen(column, "idempotency_key TEXT", 1)
        );
        db.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             {rebuilt};
             INSERT INTO jobs_rebuilt SELECT * FROM jobs;
             DROP TABLE jobs;
             ALTER TABLE jobs_rebuilt RENAME TO jobs;
             {JOBS_INDEXES}
             {admin_schema}
             COMMIT;",
            admin_schema = admin::SCHEMA
        ))
        .inspect_err(|_| {
            let _ = db.execute_batch("ROLLBACK");
        })?;
        log::info!("job database: idempotency keys moved to a partial index (schema version 7)");
    }
    db.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_key ON jobs (idempotency_key)
         WHERE idempotency_key IS NOT NULL",
    )?;
    Ok(())
}
