//! The SQLite job store: one file in WAL mode, its schema and queries.

use super::admin_table as admin;
use super::file_identity::FileIdentity;
use super::wal;
use super::webhook_table as sql;
use super::*;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most events one multi-row `INSERT` writes (see [`PendingEvents`]); a group's
/// events take as many statements as they fill.
const EVENT_ROWS: usize = 32;

/// The schema version this build writes (`PRAGMA user_version`). Version 3 added
/// `jobs.client`; an older file gets the column when opened. Version 4 added
/// `store_secret` and keeps idempotency keys scoped to their caller: the unscoped keys
/// of an older file are dropped when it is opened (a retry of such a request makes a
/// new job rather than find another caller's). Version 5 added `jobs.not_before_ms`
/// and the state `scheduled` (jobs that run later); an older file gets the column when
/// opened, and keeps its jobs as they were. Version 6 added `jobs.task` and the feed of
/// changes (`job_changes`, see `admin_table`); an older file gets them when opened, with
/// one change per stored job. Version 7 keeps idempotency keys unique by a partial
/// index of the jobs that have one (`jobs_by_key`), not by a `UNIQUE` column, whose
/// index held an entry for every job (see `schema::key_index`); an older file's `jobs` is
/// rebuilt when opened. Version 8 keeps a job's plain `state` events with the changes
/// of the feed they tell of (its columns `event` and `attempts`), not in `job_events`;
/// an older file gets the columns when opened, and keeps its events where they are.
/// Version 9 numbers the feed's changes by its row id, not an `AUTOINCREMENT` key (see
/// `admin_table`); an older feed is rebuilt when opened, its numbers kept.
const SCHEMA_VERSION: i64 = 9;

/// The table of the store's own random key.
const SECRET_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS store_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    number INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    fingerprint BLOB,
    head BLOB,
    body BLOB,
    status INTEGER,
    error TEXT,
    answer_headers TEXT,
    answer_body BLOB,
    progress REAL,
    progress_message TEXT,
    events INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_events (
    number INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (number, seq)
) WITHOUT ROWID;
";

/// The SQLite job store.
pub struct SqliteStore {
    db: Connection,
    /// The lock that makes this process the store's only owner (see `lock`); held
    /// as long as the store is open.
    _owner: std::fs::File,
    /// Whether a commit under way removes a stored request (its credentials): then the
    /// write-ahead log is checkpointed and emptied after it (see `empty_log`).
    scrub: bool,
    /// Why the last write failed, until a commit that wrote something succeeds.
    write_error: Option<String>,
    /// SQLite's count of changed rows when the group under way began.
    changes_at_begin: u64,
    /// Whether a group is under way (between `begin` and its commit or rollback).
    in_group: bool,
    /// The file as opened, checked before each commit.
    file: FileIdentity,
    /// Events of the group under way, written at its commit.
    pending_events: PendingEvents,
    /// At [`Durability::Full`], the write-ahead log opened for its sync, until the job
    /// service takes it ([`JobStore::log_to_sync`]): then commits stop syncing it
    /// themselves (`synchronous=NORMAL`), and the service syncs it apart.
    log: Option<std::fs::File>,
    /// Whether the last commit changed any row (see [`JobStore::last_commit_wrote`]).
    last_commit_wrote: bool,
    /// Statements run on `db` (counted by SQLite's trace hook, see `count_statements`):
    /// declared after `db`, so it outlives the connection that writes to it.
    statements: Box<AtomicU64>,
}

/// The columns a [`JobRecord`] is read from, as a literal, so that `concat!` can make a
/// statement's text of them once.
macro_rules! record_columns {
    () => {
        "number, id, state, created_ms, updated_ms, attempts, status, error, \
         progress, progress_message, events, not_before_ms"
    };
}
const RECORD_COLUMNS: &str = record_columns!();

impl SqliteStore {
    /// Opens (or creates, mode 0600) the job database at `path`, checks it, and sets WAL
    /// mode.
    ///
    /// One process owns a store: it holds an exclusive lock on `{path}.lock` (which
    /// names its process id) as long as the store is open.
    ///
    /// Errors: [`StoreError::Locked`] while another process (or another store in this
    /// one) has the file open; [`StoreError::Open`] for a file that is not a SQLite
    /// database, is damaged, cannot be read or written, or was written by a newer
    /// schema. Such a file is never replaced.
    ///
    /// ```
    /// use prime_server::jobs::SqliteStore;
    /// let dir = std::env::temp_dir().join(format!("doc-jobs-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("bad.sqlite"), b"not a database, just some bytes....").unwrap();
    /// assert!(SqliteStore::open(&dir.join("bad.sqlite")).is_err());
    /// assert!(SqliteStore::open(&dir.join("good.sqlite")).is_ok());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Durability::Full)
    }

    /// [`open`](Self::open) with a chosen [`Durability`].
    pub fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let owner = lock(path)?;
        create_private(path).map_err(|e| fail(e.to_string()))?;
        wal::report_before_open(path);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
        let file = FileIdentity::of(path).map_err(|e| fail(e.to_string()))?;
        let statements = Box::new(AtomicU64::new(0));
        count_statements(&db, &statements);
        let mut store = SqliteStore {
            db,
            _owner: owner,
            scrub: false,
            write_error: None,
            changes_at_begin: 0,
            in_group: false,
            file,
            pending_events: PendingEvents::default(),
            log: None,
            last_commit_wrote: false,
            statements,
        };
        store.prepare(durability).map_err(|e| fail(e.to_string()))?;
        if durability == Durability::Full {
            // The log exists once the connection has read the database in WAL mode
            // (`prepare` did); without it, commits keep syncing it themselves.
            let mut name = path.as_os_str().to_owned();
            name.push("-wal");
            store.log = std::fs::File::open(std::path::PathBuf::from(name)).ok();
        }
        // What a previous process left in the log (requests of jobs that ended since
        // the last checkpoint) goes now.
        store.scrub = true;
        store.empty_log();
        Ok(store)
    }

    fn prepare(&mut self, durability: Durability) -> Result<(), StoreError> {
        let db = &self.db;
        // Every statement here stays prepared: rusqlite keeps 16 by default, fewer than
        // the store uses, and re-preparing costs more than running most of them.
        db.set_prepared_statement_cache_capacity(96);
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "journal mode {mode} instead of wal"
            )));
        }
        db.pragma_update(None, "synchronous", durability.pragma())?;
        // A request deleted from the store (credentials and all) is overwritten with
        // zeros, not left in free space or free pages.
        db.pragma_update(None, "secure_delete", "ON")?;
        let check: String = db.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(format!("integrity check: {check}")));
        }
        let version: i64 = db.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "schema version {version}, this build knows {SCHEMA_VERSION}"
            )));
        }
        db.execute_batch(SCHEMA)?;
        db.execute_batch(sql::SCHEMA)?;
        let has_client: i64 = db.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'client'",
            [],
            |row| row.get(0),
        )?;
        if has_client == 0 {
            db.execute_batch("ALTER TABLE jobs ADD COLUMN client TEXT")?;
        }
        if version < 5 {
            let has_not_before: i64 = db.query_row(
                "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'not_before_ms'",
                [],
                |row| row.get(0),
            )?;
            if has_not_before == 0 {
                db.execute_batch("ALTER TABLE jobs ADD COLUMN not_before_ms INTEGER")?;
            }
        }
        db.execute_batch(schema::JOBS_INDEXES)?;
        admin::migrate(db, version)?;
        if version < 4 {
            db.execute_batch(
                "UPDATE jobs SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL",
            )?;
        }
        schema::key_index(db)?;
        db.execute_batch(SECRET_SCHEMA)?;
        let has_secret: i64 =
            db.query_row("SELECT COUNT(*) FROM store_secret", [], |row| row.get(0))?;
        if has_secret == 0 {
            let mut key = [0u8; 32];
            getrandom::getrandom(&mut key)
                .map_err(|e| StoreError::Corrupt(format!("no random store key: {e}")))?;
            db.execute(
                "INSERT INTO store_secret (id, key) VALUES (1, ?1)",
                [&key[..]],
            )?;
        }
        db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(())
    }

    /// After a commit that removed stored requests: copies the log into the database
    /// (where `secure_delete` has zeroed them) and truncates the log to nothing, so the
    /// old frames that held them are gone from the disk. A checkpoint that cannot
    /// finish now (SQLite busy) is tried again after the next commit.
    fn empty_log(&mut self) {
        if !self.scrub {
            return;
        }
        let done: rusqlite::Result<i64> =
            self.db
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0));
        match done {
            Ok(0) => self.scrub = false,
            Ok(_) => log::warn!("job database: the log is busy; it is emptied later"),
            Err(e) => {
                log::error!("job database: the log cannot be emptied now: {e}");
                self.write_error = Some(format!("emptying the log: {e}"));
            }
        }
    }

    fn record(
        &self,
        clause: &str,
        key: &dyn rusqlite::ToSql,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE {clause}");
        let mut statement = self.db.prepare_cached(&sql)?;
        let row = statement.query_row([key], read_record).optional()?;
        row.transpose()
    }

    /// Writes the events the group holds (see [`PendingEvents`]), up to [`EVENT_ROWS`]
    /// in each statement.
    fn write_events(&mut self) -> Result<(), StoreError> {
        let rows = self.pending_events.take();
        for chunk in rows.chunks(EVENT_ROWS) {
            let marks = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT OR REPLACE INTO job_events (number, seq, at_ms, kind, data) VALUES {marks}"
            );
            let mut statement = self.db.prepare_cached(&sql)?;
            let values = chunk.iter().flat_map(|(number, seq, at, kind, data)| {
                [
                    number as &dyn rusqlite::ToSql,
                    seq as &dyn rusqlite::ToSql,
                    at as &dyn rusqlite::ToSql,
                    kind as &dyn rusqlite::ToSql,
                    data as &dyn rusqlite::ToSql,
                ]
            });
            statement.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Fails once SQLite has rolled back the group under way by itself (after an I/O
    /// error, or a full disk or memory in a statement without a statement journal:
    /// the store's writes of one row run `OR FAIL`, which needs none), so that no
    /// later write of the group runs outside it and commits on its own.
    fn group_kept(&self) -> Result<(), StoreError> {
        if self.in_group && self.db.is_autocommit() {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT_ROLLBACK),
                Some("the group's transaction was rolled back by an earlier error".into()),
            )));
        }
        Ok(())
    }
}

/// Takes the store's owner lock: an exclusive `flock` on `{path}.lock` (created mode
/// 0600), which then holds this process's id so that a second process can name the
/// first. The kernel drops the lock when the process dies, however it dies.
///
/// Errors: [`StoreError::Locked`] when another open file holds the lock;
/// [`StoreError::Open`] when the lock file cannot be opened or written.
fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let fail = |reason: String| StoreError::Open {
        path: path.display().to_string(),
        reason: format!("its lock {}: {reason}", lock_path.display()),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| fail(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => {
                    let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| format!(" ({})", c.trim()))
                        .unwrap_or_default();
                    format!("process {pid}{program}")
                }
                Err(_) => "another process".to_string(),
            };
            return Err(StoreError::Locked {
                path: path.display().to_string(),
                holder,
                lock: lock_path.display().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail(e.to_string())),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| fail(e.to_string()))?;
    Ok(file)
}

/// Creates the file with mode 0600 if it does not exist; tightens the mode of an
/// existing one that others could read.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => tighten_companions(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let metadata = std::fs::metadata(path)?;
            if !metadata.is_file() {
                return Err(std::io::Error::other("it is not a regular file"));
            }
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "job database {}: mode {:o} let others read stored requests; setting 0600",
                    path.display(),
                    mode & 0o777
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            tighten_companions(path)
        }
        Err(e) => Err(e),
    }
}

/// Sets the `-wal` and `-shm` files a previous process left to mode 0600 (SQLite gives
/// the files it creates the database's mode, but keeps the mode of those it finds).
fn tighten_companions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let companion = std::path::PathBuf::from(name);
        let metadata = match std::fs::symlink_metadata(&companion) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !metadata.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                companion.display()
            )));
        }
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            log::warn!(
                "job database {}: mode {:o} let others read it; setting 0600",
                companion.display(),
                mode & 0o777
            );
            std::fs::set_permissions(&companion, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Counts the statements `db` runs in `counter` (SQLite's `sqlite3_trace_v2` with
/// `SQLITE_TRACE_STMT`; a trigger's statements, reported as `-- TRIGGER ...`, are part
/// of the statement that fired them and are not counted).
fn count_statements(db: &Connection, counter: &AtomicU64) {
    unsafe extern "C" fn on_statement(
        _kind: std::ffi::c_uint,
        context: *mut std::ffi::c_void,
        _statement: *mut std::ffi::c_void,
        sql: *mut std::ffi::c_void,
    ) -> std::ffi::c_int {
        // SAFETY: SQLite passes the statement's text (or a trigger's `-- TRIGGER name`)
        // as a NUL-terminated string, and `context` is the counter registered below.
        let text = unsafe { std::ffi::CStr::from_ptr(sql as *const std::ffi::c_char) };
        if !text.to_bytes().starts_with(b"--") {
            // SAFETY: the counter outlives the connection (see `SqliteStore::statements`).
            let counter = unsafe { &*(context as *const AtomicU64) };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        0
    }
    // SAFETY: the handle is the open connection's, used on this thread; the callback
    // only reads its arguments, and its context (the boxed counter) is dropped after
    // the connection is closed.
    unsafe {
        rusqlite::ffi::sqlite3_trace_v2(
            db.handle(),
            rusqlite::ffi::SQLITE_TRACE_STMT,
            Some(on_statement),
            counter as *const AtomicU64 as *mut std::ffi::c_void,
        );
    }
}

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<JobRecord, StoreError>> {
    let state: String = row.get(2)?;
    let Some(state) = JobState::parse(&state) else {
        return Ok(Err(StoreError::Corrupt(format!("job state {state:?}"))));
    };
    let number: i64 = row.get(0)?;
    let status: Option<i64> = row.get(6)?;
    let progress: Option<f64> = row.get(8)?;
    let progress_message: Option<String> = row.get(9)?;
    Ok(Ok(JobRecord {
        number: number as u64,
        id: row.get(1)?,
        state,
        created_ms: row.get(3)?,
        updated_ms: row.get(4)?,
        attempts: row.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
        status: status.and_then(|s| u16::try_from(s).ok()),
        error: row.get(7)?,
        progress: progress.map(|p| (p, progress_message.unwrap_or_default())),
        events: row.get::<_, i64>(10)?.max(0) as u64,
        not_before_ms: row.get(11)?,
    }))
}

impl JobStore for SqliteStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.pending_events.clear();
        self.db.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.changes_at_begin = self.db.total_changes();
        self.in_group = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.last_commit_wrote = false;
        self.group_kept()?;
        self.in_group = false;
        // Nothing is acknowledged that no file would hold after a restart.
        if let Err(lost) = self.file.check() {
            self.write_error = Some(lost.to_string());
            return Err(lost);
        }
        if let Err(e) = self.write_events() {
            self.write_error = Some(e.to_string());
            return Err(e);
        }
        let committed = self
            .db
            .prepare_cached("COMMIT")
            .and_then(|mut c| c.execute([]));
        if let Err(e) = committed {
            self.write_error = Some(e.to_string());
            return Err(e.into());
        }
        self.last_commit_wrote = self.db.total_changes() != self.changes_at_begin;
        if self.last_commit_wrote {
            self.write_error = None;
        }
        Ok(())
    }

    fn log_to_sync(&mut self) -> Option<std::fs::File> {
        let log = self.log.take()?;
        // In WAL mode `NORMAL` leaves out only the log's sync at each commit: the
        // header's sync when the log starts again, and the checkpoints' syncs, stay.
        match self.db.pragma_update(None, "synchronous", "NORMAL") {
            Ok(()) => Some(log),
            Err(e) => {
                log::warn!("job database: commits keep syncing the log themselves: {e}");
                None
            }
        }
    }

    fn last_commit_wrote(&self) -> bool {
        self.last_commit_wrote
    }

    fn scrub(&mut self) {
        self.empty_log();
    }

    fn scrub_pending(&self) -> bool {
        self.scrub
    }

    fn last_write_error(&self) -> Option<String> {
        self.write_error.clone()
    }

    fn rollback(&mut self) {
        self.in_group = false;
        self.pending_events.clear();
        if let Err(e) = self.db.execute_batch("ROLLBACK") {
            log::error!("job database: rollback failed: {e}");
        }
    }

    fn insert(&mut self, job: &NewJob<'_>) -> Result<JobRecord, StoreError> {
        let number = self.insert_row(job, None)?;
        Ok(job.record(number))
    }

    /// One statement per job, the started ones written running at once (the feed's
    /// insert trigger writes their two changes).
    fn insert_and_start(
        &mut self,
        jobs: &[NewJob<'_>],
        start: usize,
        now_ms: i64,
    ) -> Result<(Vec<JobRecord>, Vec<JobRecord>), StoreError> {
        let mut records = Vec::with_capacity(jobs.len());
        let mut started = Vec::with_capacity(start.min(jobs.len()));
        for (i, job) in jobs.iter().enumerate() {
            if i < start && job.not_before_ms.is_none() {
                let number = self.insert_row(job, Some(now_ms))?;
                records.push(job.record(number));
                started.push(job.started_record(number, now_ms));
            } else {
                records.push(self.insert(job)?);
            }
        }
        if started.len() != start.min(jobs.len()) {
            return Err(StoreError::Corrupt(
                "a scheduled job cannot start at its insert".into(),
            ));
        }
        Ok((records, started))
    }

    fn by_id(&mut self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.record("id = ?1", &id)
    }

    fn by_number(&mut self, number: u64) -> Result<Option<JobRecord>, StoreError> {
        self.record_of(number)
    }

    fn caller_secret(&mut self) -> Result<Vec<u8>, StoreError> {
        let key: Vec<u8> =
            self.db
                .query_row("SELECT key FROM store_secret WHERE id = 1", [], |row| {
                    row.get(0)
                })?;
        Ok(key)
    }

    fn by_idempotency_key(
        &mut self,
        key: &str,
    ) -> Result<Option<(JobRecord, Vec<u8>)>, StoreError> {
        let Some(record) = self.record("idempotency_key = ?1", &key)? else {
            return Ok(None);
        };
        let mut statement = self
            .db
            .prepare_cached("SELECT fingerprint FROM jobs WHERE number = ?1")?;
        let fingerprint: Option<Vec<u8>> =
            statement.query_row([sql_int(record.number)], |row| row.get(0))?;
        Ok(Some((record, fingerprint.unwrap_or_default())))
    }

    /// One statement: the change of state returns the request with the record.
    fn start(&mut self, number: u64, now_ms: i64) -> Result<Option<StartedJob>, StoreError> {
        self.group_kept()?;
        let mut started = self.db.prepare_cached(
            "UPDATE OR FAIL jobs SET events = events + 1, state = 'running', attempts = attempts + 1, updated_ms = ?2
             WHERE number = ?1 AND state = 'queued'",
        )?;
        if started.execute(params![sql_int(number), now_ms])? == 0 {
            return Ok(None);
        }
        // Read back by its number (not `RETURNING`, see `update`), with its request.
        let sql =
            format!("SELECT {RECORD_COLUMNS}, head, body, client FROM jobs WHERE number = ?1");
        let mut statement = self.db.prepare_cached(&sql)?;
        let row = statement
            .query_row([sql_int(number)], |row| {
                let record = read_record(row)?;
                let head: Option<Vec<u8>> = row.get(12)?;
                let body: Option<Vec<u8>> = row.get(13)?;
                let client: Option<String> = row.get(14)?;
                Ok(record.map(|record| StartedJob::from_columns(record, head, body, client)))
            })
            .optional()?;
        row.transpose()
    }

    fn finish(&mut self, end: Ending<'_>, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        match self.finish_row(end, now_ms)? {
            true => self.record_of(end.number),
            false => Ok(None),
        }
    }

    fn finish_quietly(&mut self, end: Ending<'_>, now_ms: i64) -> Result<bool, StoreError> {
        self.finish_row(end, now_ms)
    }

    fn requeue(
        &mut self,
        number: u64,
        error: &str,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        self.update(
            number,
            "UPDATE jobs SET events = events + 1, state = 'queued', updated_ms = ?2, error = ?3
             WHERE number = ?1 AND state = 'running'",
            &[&sql_int(number), &now_ms, &error],
        )
    }

    fn cancel(&mut self, number: u64, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        self.scrub = true;
        self.update(
            number,
            "UPDATE jobs SET events = events + 1, state = 'cancelled', updated_ms = ?2, head = NULL, body = NULL, client = NULL
             WHERE number = ?1 AND state IN ('scheduled', 'queued', 'running')",
            &[&sql_int(number), &now_ms],
        )
    }

    fn answer(&mut self, number: u64) -> Result<Option<StoredAnswer>, StoreError> {
        let mut statement = self.db.prepare_cached(
            "SELECT status, answer_headers, answer_body FROM jobs
             WHERE number = ?1 AND state IN ('succeeded', 'failed')",
        )?;
        let row: Option<AnswerRow> = statement
            .query_row([sql_int(number)], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        super::answer_from_row(number, row)
    }

    fn requeue_running(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let requeued = self.db.execute(
            "UPDATE jobs SET state = 'queued', updated_ms = ?1 WHERE state = 'running'",
            [now_ms],
        )?;
        Ok(requeued as u64)
    }

    fn release_due(&mut self, now_ms: i64) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET events = events + 1, state = 'queued', updated_ms = ?1
             WHERE state = 'scheduled' AND not_before_ms <= ?1 RETURNING {RECORD_COLUMNS}"
        );
        let mut statement = self.db.prepare_cached(&sql)?;
        let rows = statement.query_map([now_ms], read_record)?;
        let mut released = Vec::new();
        for row in rows {
            released.push(row??);
        }
        released.sort_by_key(|record| record.number);
        Ok(released)
    }

    fn next_not_before(&mut self) -> Result<Option<i64>, StoreError> {
        let mut statement = self
            .db
            .prepare_cached("SELECT MIN(not_before_ms) FROM jobs WHERE state = 'scheduled'")?;
        Ok(statement.query_row([], |row| row.get(0))?)
    }

    fn queued(&mut self) -> Result<Vec<(u64, i64)>, StoreError> {
        let mut statement = self.db.prepare(
            "SELECT number, created_ms FROM jobs WHERE state = 'queued' ORDER BY number",
        )?;
        let rows =
            statement.query_map([], |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn expire(&mut self, now_ms: i64, ttl_ms: i64) -> Result<u64, StoreError> {
        let before_ms = now_ms.saturating_sub(ttl_ms);
        self.write_events()?;
        admin::forget_deleted(&self.db, before_ms)?;
        self.db.execute(
            "DELETE FROM jobs WHERE state = 'expired' AND updated_ms < ?1",
            [before_ms],
        )?;
        self.db.execute(
            "DELETE FROM job_events WHERE number IN (SELECT number FROM jobs
                 WHERE state IN ('succeeded', 'failed', 'cancelled') AND updated_ms < ?1)",
            [before_ms],
        )?;
        let expired = self.db.execute(
            "UPDATE jobs SET state = 'expired', updated_ms = ?2, idempotency_key = NULL,
                 fingerprint = NULL, head = NULL, body = NULL, client = NULL, answer_headers = NULL,
                 answer_body = NULL, error = NULL, progress = NULL, progress_message = NULL
             WHERE state IN ('succeeded', 'failed', 'cancelled') AND updated_ms < ?1",
            params![before_ms, now_ms],
        )?;
        sql::forget_expired(&self.db)?;
        self.scrub |= expired > 0;
        Ok(expired as u64)
    }

    fn set_progress(
        &mut self,
        number: u64,
        fraction: f64,
        message: &str,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        self.update(
            number,
            "UPDATE jobs SET events = events + 1, progress = ?2, progress_message = ?3, updated_ms = ?4
             WHERE number = ?1 AND state IN ('queued', 'running')",
            &[&sql_int(number), &fraction, &message, &now_ms],
        )
    }

    fn add_event(&mut self, number: u64, event: &JobEvent, now_ms: i64) -> Result<(), StoreError> {
        self.pending_events.push(number, event, now_ms);
        Ok(())
    }

    fn state_events_from_changes(&self) -> bool {
        true
    }

    fn events_after(&mut self, number: u64, seq: u64) -> Result<Vec<JobEvent>, StoreError> {
        self.write_events()?;
        admin::events_after(&self.db, number, seq)
    }

    fn counts(&mut self) -> Result<StateCounts, StoreError> {
        let mut statement = self
            .db
            .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let mut counts = StateCounts::default();
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let state: String = row.get(0)?;
            let count: i64 = row.get(1)?;
            if let Some(state) = JobState::parse(&state) {
                *counts.of(state) = count as u64;
            }
        }
        Ok(counts)
    }

    fn webhook_add(&mut self, number: u64, job_id: &str, url: &str) -> Result<(), StoreError> {
        sql::add(&self.db, number, job_id, url)
    }

    fn webhook(&mut self, number: u64) -> Result<Option<WebhookRecord>, StoreError> {
        sql::get(&self.db, number)
    }

    fn webhook_save(&mut self, record: &WebhookRecord) -> Result<(), StoreError> {
        sql::save(&self.db, record)
    }

    fn webhooks_pending(&mut self) -> Result<Vec<WebhookRecord>, StoreError> {
        sql::pending(&self.db)
    }

    fn list(
        &mut self,
        filter: &JobFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(JobRecord, Option<String>)>, StoreError> {
        admin::list(&self.db, RECORD_COLUMNS, read_record, filter, after, limit)
    }

    fn changes(&mut self, since: u64, limit: usize) -> Result<Vec<JobChange>, StoreError> {
        admin::changes(&self.db, since, limit)
    }

    fn last_seq(&mut self) -> Result<u64, StoreError> {
        admin::last_seq(&self.db)
    }

    fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn retry(&mut self, number: u64, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let mut statement = self.db.prepare_cached(&admin::retry_sql(RECORD_COLUMNS))?;
        let row = statement
            .query_row(params![sql_int(number), now_ms], read_record)
            .optional()?;
        row.transpose()
    }
}

#[path = "sqlite_insert.rs"]
mod insert;
#[path = "sqlite_schema.rs"]
mod schema;

/// What the unit tests of both files below read of a store.
#[cfg(test)]
impl SqliteStore {
    /// The `CREATE TABLE` statement SQLite keeps for the table `name`.
    fn table_sql(&self, name: &str) -> String {
        self.db
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .expect("the table's SQL")
    }
}

#[cfg(test)]
#[path = "sqlite_feed_tests.rs"]
mod feed_tests;
#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
