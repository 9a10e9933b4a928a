//! What a batch of the PostgreSQL store writes with one statement (one round trip)
//! rather than one per job: its submits (`insert_many`), the runs it starts
//! (`start_many`), the runs' ends (`finish_many`) and its events (held until the
//! commit), each as arrays of columns.

use super::super::admin_table::task_of;
use super::super::{Ending, JobRecord, JobState, JobStore, NewJob, StartedJob, StoreError};
use super::{read_record, sql_int, PostgresStore, RECORD_COLUMNS};
use std::collections::HashMap;

impl PostgresStore {
    /// Writes the events the batch holds (`pending_events`) with one statement.
    pub(super) fn write_events(&mut self) -> Result<(), StoreError> {
        let rows = self.pending_events.take();
        if rows.is_empty() {
            return Ok(());
        }
        let mut numbers = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        let mut kinds = Vec::with_capacity(rows.len());
        let mut data = Vec::with_capacity(rows.len());
        for (number, seq, at, kind, text) in rows {
            numbers.push(number);
            seqs.push(seq);
            times.push(at);
            kinds.push(kind);
            data.push(text);
        }
        self.execute(
            "INSERT INTO job_events (number, seq, at_ms, kind, data)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])
             ON CONFLICT (number, seq) DO UPDATE
                 SET at_ms = EXCLUDED.at_ms, kind = EXCLUDED.kind, data = EXCLUDED.data",
            &[&numbers, &seqs, &times, &kinds, &data],
        )?;
        Ok(())
    }

    /// One statement for the batch: the jobs' columns as arrays, numbered in order.
    pub(super) fn insert_batch(
        &mut self,
        jobs: &[NewJob<'_>],
    ) -> Result<Vec<JobRecord>, StoreError> {
        if jobs.len() < 2 {
            return jobs.iter().map(|job| self.insert(job)).collect();
        }
        let ids: Vec<&str> = jobs.iter().map(|job| job.id).collect();
        let states: Vec<&str> = jobs.iter().map(|job| job.state().as_str()).collect();
        let created: Vec<i64> = jobs.iter().map(|job| job.now_ms).collect();
        let keys: Vec<Option<&str>> = jobs.iter().map(|job| job.idempotency_key).collect();
        let fingerprints: Vec<&[u8]> = jobs.iter().map(|job| job.fingerprint).collect();
        let heads: Vec<&[u8]> = jobs.iter().map(|job| job.head).collect();
        let bodies: Vec<&[u8]> = jobs.iter().map(|job| job.body).collect();
        let clients: Vec<Option<&str>> = jobs.iter().map(|job| job.client).collect();
        let not_before: Vec<Option<i64>> = jobs.iter().map(|job| job.not_before_ms).collect();
        let tasks: Vec<Option<String>> = jobs.iter().map(|job| task_of(job.head)).collect();
        let id = self.id.clone();
        let rows = self.rows(
            "INSERT INTO jobs (id, state, created_ms, updated_ms, idempotency_key, fingerprint, head, body, events, client, not_before_ms, task, owner)
             SELECT id, state, created, created, key, fingerprint, head, body, 1, client, not_before, task, $11
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bytea[], $6::bytea[],
                 $7::bytea[], $8::text[], $9::bigint[], $10::text[])
                 WITH ORDINALITY AS j(id, state, created, key, fingerprint, head, body, client, not_before, task, position)
             ORDER BY position
             RETURNING number, id",
            &[
                &ids,
                &states,
                &created,
                &keys,
                &fingerprints,
                &heads,
                &bodies,
                &clients,
                &not_before,
                &tasks,
                &id,
            ],
        )?;
        let mut numbers = HashMap::with_capacity(rows.len());
        for row in &rows {
            let number: i64 = row.try_get(0)?;
            let id: String = row.try_get(1)?;
            numbers.insert(id, number.max(0) as u64);
        }
        jobs.iter()
            .map(|job| {
                let Some(&number) = numbers.get(job.id) else {
                    return Err(StoreError::Corrupt("an insert returned no number".into()));
                };
                Ok(job.record(number))
            })
            .collect()
    }

    /// One statement for all: `number = ANY($1)`.
    pub(super) fn start_batch(
        &mut self,
        numbers: &[u64],
        now_ms: i64,
    ) -> Result<Vec<StartedJob>, StoreError> {
        if numbers.len() < 2 {
            let mut started = Vec::new();
            for &number in numbers {
                started.extend(self.start(number, now_ms)?);
            }
            return Ok(started);
        }
        let id = self.id.clone();
        let params: Vec<i64> = numbers.iter().map(|&n| sql_int(n)).collect();
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'running', attempts = attempts + 1,
                 updated_ms = $2, owner = $3
             WHERE number = ANY($1) AND state = 'queued' RETURNING {RECORD_COLUMNS}, head, body, client"
        );
        let rows = self.rows(&sql, &[&params, &now_ms, &id])?;
        let mut started = HashMap::with_capacity(rows.len());
        for row in &rows {
            let record = read_record(row)?;
            let job = StartedJob::from_columns(
                record,
                row.try_get(12)?,
                row.try_get(13)?,
                row.try_get(14)?,
            );
            started.insert(job.record.number, job);
        }
        Ok(numbers
            .iter()
            .filter_map(|number| started.remove(number))
            .collect())
    }

    /// One statement for the jobs that succeeded (a failed job's request loses its
    /// credentials first, one job at a time as in `finish`): the answers as arrays.
    pub(super) fn finish_batch(
        &mut self,
        ends: &[Ending<'_>],
        now_ms: i64,
    ) -> Result<Vec<Option<JobRecord>>, StoreError> {
        let succeeded: Vec<&Ending<'_>> = ends
            .iter()
            .filter(|end| end.state == JobState::Succeeded)
            .collect();
        if succeeded.len() < 2 {
            return ends.iter().map(|end| self.finish(*end, now_ms)).collect();
        }
        let mut numbers = Vec::with_capacity(succeeded.len());
        let mut statuses = Vec::with_capacity(succeeded.len());
        let mut errors = Vec::with_capacity(succeeded.len());
        let mut headers = Vec::with_capacity(succeeded.len());
        let mut bodies = Vec::with_capacity(succeeded.len());
        for end in &succeeded {
            numbers.push(sql_int(end.number));
            statuses.push(i64::from(end.answer.status));
            errors.push(end.error);
            headers.push(end.answer.headers_json()?);
            bodies.push(end.answer.body.as_slice());
        }
        // The answers' columns are named apart from the table's, so that RETURNING
        // reads the table's.
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'succeeded', updated_ms = $2,
                 status = a.s, error = a.e, answer_headers = a.h, answer_body = a.b,
                 head = NULL, body = NULL, client = NULL
             FROM UNNEST($1::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bytea[])
                 AS a(n, s, e, h, b)
             WHERE number = a.n AND state IN ('queued', 'running') RETURNING {RECORD_COLUMNS}"
        );
        let rows = self.rows(
            &sql,
            &[&numbers, &now_ms, &statuses, &errors, &headers, &bodies],
        )?;
        let mut ended = HashMap::with_capacity(rows.len());
        for row in &rows {
            let record = read_record(row)?;
            ended.insert(record.number, record);
        }
        ends.iter()
            .map(|end| match end.state {
                JobState::Succeeded => Ok(ended.remove(&end.number)),
                _ => self.finish(*end, now_ms),
            })
            .collect()
    }
}
