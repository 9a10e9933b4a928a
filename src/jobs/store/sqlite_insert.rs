//! The SQLite job store's writes of one job's row: a new job's, and the changes read
//! back (kept apart so `sqlite.rs` stays under the length the layout allows).
use super::*;

impl SqliteStore {
    /// Writes a new job's row: queued (or scheduled), or with `started` already running
    /// since then (its first attempt, its second event); returns its number.
    pub(super) fn insert_row(
        &mut self,
        job: &NewJob<'_>,
        started: Option<i64>,
    ) -> Result<u64, StoreError> {
        self.group_kept()?;
        // `OR FAIL` (as the start and the finish): with the feed's triggers a write of
        // one row would otherwise get a statement journal, 64 KiB allocated and freed
        // per statement (two `madvise` and page faults per job); no constraint of these
        // can fail half-way, and a full disk is caught by `group_kept`.
        let mut statement = self.db.prepare_cached(
            "INSERT OR FAIL INTO jobs (id, state, created_ms, updated_ms, idempotency_key, fingerprint, head, body, events, client, not_before_ms, task, attempts)
             VALUES (?1, ?8, ?2, ?11, ?3, ?4, ?5, ?6, ?12, ?7, ?9, ?10, ?13)",
        )?;
        let (state, updated_ms, events, attempts) = match started {
            Some(at) => (JobState::Running, at, 2, 1),
            None => (job.state(), job.now_ms, 1, 0),
        };
        statement.execute(params![
            job.id,
            job.now_ms,
            job.idempotency_key,
            job.idempotency_key.map(|_| job.fingerprint),
            job.head,
            job.body,
            job.client,
            state.as_str(),
            job.not_before_ms,
            admin::task_of(job.head),
            updated_ms,
            events,
            attempts
        ])?;
        Ok(self.db.last_insert_rowid() as u64)
    }

    /// Ends an unfinished job's row (see [`JobStore::finish`]): whether it was
    /// unfinished. The record is not read back.
    pub(super) fn finish_row(&mut self, end: Ending<'_>, now_ms: i64) -> Result<bool, StoreError> {
        let (number, state, answer, error) = (end.number, end.state, end.answer, end.error);
        let headers = answer.headers_json()?;
        self.scrub = true;
        if state == JobState::Failed {
            admin::scrub_credentials(&self.db, number)?;
        }
        self.group_kept()?;
        let mut statement = self.db.prepare_cached(
            "UPDATE OR FAIL jobs SET events = events + 1, state = ?2, updated_ms = ?3, status = ?4, error = ?5,
                 answer_headers = ?6, answer_body = ?7,
                 head = CASE ?2 WHEN 'failed' THEN head END, body = CASE ?2 WHEN 'failed' THEN body END,
                 client = CASE ?2 WHEN 'failed' THEN client END
             WHERE number = ?1 AND state IN ('queued', 'running')",
        )?;
        let changed = statement.execute(params![
            sql_int(number),
            state.as_str(),
            now_ms,
            i64::from(answer.status),
            error,
            headers,
            answer.body,
        ])?;
        Ok(changed > 0)
    }

    /// Runs an UPDATE of job `number`'s row (`?1` in `sql`), then reads the row's
    /// record back if it changed; `None` if it did not. Not `RETURNING`: SQLite
    /// gathers returned rows in a temporary B-tree opened and closed per statement,
    /// which cost more than reading the one row again by its number.
    pub(super) fn update(
        &self,
        number: u64,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<JobRecord>, StoreError> {
        self.group_kept()?;
        if self.db.prepare_cached(sql)?.execute(params)? == 0 {
            return Ok(None);
        }
        self.record_of(number)
    }

    /// Job `number`'s record, the read that follows every run's end: `record`'s by
    /// number, its statement's text made once rather than formatted for each read.
    pub(super) fn record_of(&self, number: u64) -> Result<Option<JobRecord>, StoreError> {
        const BY_NUMBER: &str =
            concat!("SELECT ", record_columns!(), " FROM jobs WHERE number = ?1");
        let mut statement = self.db.prepare_cached(BY_NUMBER)?;
        let row = statement
            .query_row([sql_int(number)], read_record)
            .optional()?;
        row.transpose()
    }
}
