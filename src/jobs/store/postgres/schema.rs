//! The PostgreSQL store's tables, its trigger of changes and notices, and its
//! connections.

use super::super::{Durability, StoreError};
use ::postgres::{Client, NoTls};

/// The notification channel of job changes (the trigger's `pg_notify`).
pub(super) const CHANNEL: &str = "prime_jobs";

/// Created at connection when missing (under the batch lock, so front ends starting
/// together do not race).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    number BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    fingerprint BYTEA,
    head BYTEA,
    body BYTEA,
    status BIGINT,
    error TEXT,
    answer_headers TEXT,
    answer_body BYTEA,
    progress DOUBLE PRECISION,
    progress_message TEXT,
    events BIGINT NOT NULL DEFAULT 0,
    client TEXT,
    not_before_ms BIGINT,
    task TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, updated_ms);
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (not_before_ms) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (owner) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS job_events (
    number BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (number, seq)
);
CREATE TABLE IF NOT EXISTS webhooks (
    number BIGINT PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    payload BYTEA,
    attempts TEXT NOT NULL DEFAULT '[]',
    first_failure_ms BIGINT,
    next_ms BIGINT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_by_state ON webhooks (state);
CREATE TABLE IF NOT EXISTS job_changes (
    seq BIGSERIAL PRIMARY KEY,
    number BIGINT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_changes_by_number ON job_changes (number);
CREATE TABLE IF NOT EXISTS store_secret (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    key BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS front_ends (
    id TEXT PRIMARY KEY,
    lease_until_ms BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION prime_job_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state THEN
        INSERT INTO job_changes (number, id, state, at_ms)
        VALUES (NEW.number, NEW.id, NEW.state, NEW.updated_ms);
    END IF;
    IF TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state
        OR OLD.events IS DISTINCT FROM NEW.events THEN
        PERFORM pg_notify('prime_jobs', NEW.number || ' ' || current_setting('application_name'));
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS prime_job_changed ON jobs;
CREATE TRIGGER prime_job_changed AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION prime_job_changed();
";

/// Whether `name` (a `--jobs-db` value) names a PostgreSQL database rather than a
/// SQLite file: a `postgres://` or `postgresql://` URL.
pub fn is_postgres_url(name: &str) -> bool {
    name.starts_with("postgres://") || name.starts_with("postgresql://")
}

/// The URL without its password, to name it in logs and errors.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) if query.contains("password") => format!("{path}?***"),
        _ => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

pub(super) fn connect(url: &str, id: &str, durability: Durability) -> Result<Client, StoreError> {
    let fail = |reason: String| StoreError::Open {
        path: redacted(url),
        reason,
    };
    let mut config: ::postgres::Config = url.parse().map_err(|e| fail(format!("{e}")))?;
    // An unreachable server is an error in seconds, not after the system's TCP
    // timeout (a stop waits for a connection under way).
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    let mut db = config.connect(NoTls).map_err(|e| fail(e.to_string()))?;
    let synchronous = match durability {
        Durability::Full => "on",
        Durability::Process => "off",
    };
    db.batch_execute(&format!(
        "SET application_name = '{id}'; SET synchronous_commit = {synchronous};
         SET client_min_messages = warning"
    ))
    .map_err(|e| fail(e.to_string()))?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::{is_postgres_url, redacted};

    #[test]
    fn urls_are_told_from_files_and_named_without_their_password() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://%2Ftmp/db"));
        assert!(!is_postgres_url("/var/lib/prime/jobs.sqlite"));
        assert!(!is_postgres_url("postgres.sqlite"));
        assert_eq!(
            redacted("postgres://prime:s3cret@db.example:5432/jobs"),
            "postgres://prime:***@db.example:5432/jobs"
        );
        assert_eq!(
            redacted("postgresql://prime@%2Ftmp%2Fpg/jobs?password=s3cret&sslmode=disable"),
            "postgresql://prime@%2Ftmp%2Fpg/jobs?***"
        );
        assert_eq!(
            redacted("postgresql://prime@%2Ftmp%2Fpg/jobs"),
            "postgresql://prime@%2Ftmp%2Fpg/jobs"
        );
    }
}
