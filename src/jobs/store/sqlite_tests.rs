//! Unit tests of the SQLite job store (kept apart so `sqlite.rs` stays one concern).
use super::*;

/// A successful end of job `number` with `answer`.
fn success(number: u64, answer: &StoredAnswer) -> Ending<'_> {
    Ending {
        number,
        state: JobState::Succeeded,
        answer,
        error: None,
    }
}

/// A failed end of job `number` with `answer`, for `error`.
fn failure<'a>(number: u64, answer: &'a StoredAnswer, error: &'a str) -> Ending<'a> {
    Ending {
        number,
        state: JobState::Failed,
        answer,
        error: Some(error),
    }
}

/// A fresh, empty scratch directory of this process for the test `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("prime-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn store(name: &str) -> SqliteStore {
    SqliteStore::open(&scratch(name).join("jobs.sqlite")).expect("a new store")
}

/// The ids of the first ten changes in the store's feed, in order.
fn feed_ids(store: &mut SqliteStore) -> Vec<String> {
    store
        .changes(0, 10)
        .expect("changes")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Stores a job `id` (a GET with credentials, from a client) at `now_ms`; the feed's
/// tests use it too.
pub(super) fn insert(store: &mut SqliteStore, id: &str, now_ms: i64) -> JobRecord {
    store
        .insert(&NewJob {
            id,
            head: b"GET /x HTTP/1.1\r\nAuthorization: secret\r\n\r\n",
            body: b"",
            idempotency_key: None,
            fingerprint: b"f",
            now_ms,
            client: Some("127.0.0.1:0"),
            not_before_ms: None,
        })
        .expect("insert")
}

#[test]
fn a_commit_to_a_file_deleted_or_replaced_under_the_store_fails() {
    let mut kept = store("lost");
    let path = kept.file.path.clone();
    kept.begin().expect("begin");
    insert(&mut kept, "a", 1);
    kept.commit().expect("a commit while the file is there");

    // Replaced: another file renamed over the path.
    let other = path.with_file_name("other.sqlite");
    std::fs::write(&other, b"").expect("another file");
    std::fs::rename(&other, &path).expect("rename over the store");
    kept.begin().expect("begin");
    insert(&mut kept, "b", 2);
    let err = kept.commit().expect_err("a commit to a replaced file");
    assert!(
        matches!(&err, StoreError::Lost { reason, .. } if reason.contains("replaced")),
        "{err}"
    );
    kept.rollback();

    // Deleted.
    std::fs::remove_file(&path).expect("delete the store");
    kept.begin().expect("begin");
    insert(&mut kept, "c", 3);
    let err = kept.commit().expect_err("a commit to a deleted file");
    assert!(
        err.to_string().contains("was deleted while the server ran"),
        "{err}"
    );
    kept.rollback();
}

fn answer(status: u16) -> StoredAnswer {
    StoredAnswer {
        status,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: b"yes".to_vec(),
    }
}

#[test]
fn a_version_2_file_gets_the_client_column_and_keeps_its_jobs() {
    let dir = scratch("v2");
    let path = dir.join("jobs.sqlite");
    {
        let db = Connection::open(&path).expect("a database");
        // The jobs table as version 2 made it, without `client`.
        let old = SCHEMA;
        db.execute_batch(old).expect("the old schema");
        db.execute(
            "INSERT INTO jobs (id, state, created_ms, updated_ms, head, body) VALUES ('j1', 'queued', 1, 1, x'00', x'')",
            [],
        )
        .expect("an old job");
        db.pragma_update(None, "user_version", 2)
            .expect("version 2");
    }
    let mut store = SqliteStore::open(&path).expect("the old file opens");
    let started = store.start(1, 2).expect("start").expect("the old job");
    assert_eq!(started.client, None);
    let record = insert(&mut store, "j2", 3);
    let started = store
        .start(record.number, 4)
        .expect("start")
        .expect("the new job");
    assert_eq!(started.client, "127.0.0.1:0".parse().ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_version_3_file_drops_its_unscoped_keys_and_gets_a_secret_of_its_own() {
    let dir = scratch("v3");
    let path = dir.join("jobs.sqlite");
    {
        let db = Connection::open(&path).expect("a database");
        db.execute_batch(SCHEMA).expect("the old schema");
        db.execute_batch("ALTER TABLE jobs ADD COLUMN client TEXT")
            .expect("version 3's column");
        db.execute(
            "INSERT INTO jobs (id, state, created_ms, updated_ms, idempotency_key, fingerprint)
             VALUES ('j1', 'queued', 1, 1, 'order-1', x'00')",
            [],
        )
        .expect("an old job under an unscoped key");
        db.pragma_update(None, "user_version", 3)
            .expect("version 3");
    }
    let secret = {
        let mut store = SqliteStore::open(&path).expect("the old file opens");
        assert_eq!(store.by_idempotency_key("order-1").expect("read"), None);
        assert!(store.by_id("j1").expect("read").is_some());
        let secret = store.caller_secret().expect("a secret");
        assert_eq!(secret.len(), 32);
        secret
    };
    // The secret is the store's: the same after the file is opened again.
    let mut store = SqliteStore::open(&path).expect("the file opens again");
    assert_eq!(store.caller_secret().expect("a secret"), secret);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_version_4_file_gets_the_schedule_column_and_keeps_its_jobs() {
    let dir = scratch("v4");
    let path = dir.join("jobs.sqlite");
    {
        let db = Connection::open(&path).expect("a database");
        db.execute_batch(SCHEMA).expect("the old schema");
        db.execute_batch("ALTER TABLE jobs ADD COLUMN client TEXT")
            .expect("version 3's column");
        db.execute_batch(SECRET_SCHEMA).expect("version 4's table");
        db.execute(
            "INSERT INTO jobs (id, state, created_ms, updated_ms, head, body)
             VALUES ('j1', 'queued', 1, 1, x'00', x'')",
            [],
        )
        .expect("an old job");
        db.pragma_update(None, "user_version", 4)
            .expect("version 4");
    }
    let mut store = SqliteStore::open(&path).expect("the old file opens");
    let old = store.by_id("j1").expect("read").expect("kept");
    assert_eq!((old.state, old.not_before_ms), (JobState::Queued, None));
    assert_eq!(store.queued().expect("queued").len(), 1);
    store.begin().expect("begin");
    let later = store
        .insert(&NewJob {
            id: "j2",
            head: b"GET /x HTTP/1.1\r\n\r\n",
            body: b"",
            idempotency_key: None,
            fingerprint: b"f",
            now_ms: 10,
            client: None,
            not_before_ms: Some(500),
        })
        .expect("a scheduled job");
    store.commit().expect("commit");
    assert_eq!(later.state, JobState::Scheduled);
    assert_eq!(store.next_not_before().expect("read"), Some(500));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scheduled_jobs_are_released_at_their_time_in_order() {
    let mut store = store("scheduled");
    store.begin().expect("begin");
    let mut numbers = Vec::new();
    for (id, at) in [("s1", 300), ("s2", 100), ("s3", 200)] {
        let record = store
            .insert(&NewJob {
                id,
                head: b"GET /x HTTP/1.1\r\n\r\n",
                body: b"",
                idempotency_key: None,
                fingerprint: b"f",
                now_ms: 1,
                client: None,
                not_before_ms: Some(at),
            })
            .expect("insert");
        numbers.push(record.number);
    }
    assert_eq!(store.next_not_before().expect("read"), Some(100));
    assert!(store.release_due(99).expect("release").is_empty());
    let released = store.release_due(200).expect("release");
    let released: Vec<u64> = released.iter().map(|r| r.number).collect();
    assert_eq!(released, [numbers[1], numbers[2]]);
    assert_eq!(store.next_not_before().expect("read"), Some(300));
    assert!(
        store.start(numbers[0], 250).expect("start").is_none(),
        "not yet queued"
    );
    assert!(store.cancel(numbers[0], 260).expect("cancel").is_some());
    assert_eq!(store.next_not_before().expect("read"), None);
    let counts = store.counts().expect("counts");
    assert_eq!(
        (counts.scheduled, counts.queued, counts.cancelled),
        (0, 2, 1)
    );
    store.commit().expect("commit");
}

#[test]
fn a_job_runs_once_per_start_and_ends_once() {
    let mut store = store("lifecycle");
    let job = insert(&mut store, "a", 1);
    let started = store.start(job.number, 2).expect("start").expect("queued");
    assert_eq!(started.record.state, JobState::Running);
    assert_eq!(started.record.attempts, 1);
    assert!(started.head.starts_with(b"GET /x"));
    assert!(store.start(job.number, 3).expect("start").is_none());
    let ended = store
        .finish(success(job.number, &answer(200)), 4)
        .expect("finish")
        .expect("running");
    assert_eq!(
        (ended.state, ended.status),
        (JobState::Succeeded, Some(200))
    );
    // A second answer (a run after a restart) changes nothing.
    assert!(store
        .finish(failure(job.number, &answer(500), "late"), 5)
        .expect("finish")
        .is_none());
    assert_eq!(store.answer(job.number).expect("answer"), Some(answer(200)));
    // The request, with its credentials and the client's address, is gone once the
    // job has ended.
    let (head, client): (Option<Vec<u8>>, Option<String>) = store
        .db
        .query_row(
            "SELECT head, client FROM jobs WHERE number = ?1",
            [job.number as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a row");
    assert_eq!(head, None);
    assert_eq!(client, None);
}

#[test]
fn running_jobs_are_queued_again_after_a_restart() {
    let mut store = store("recover");
    let a = insert(&mut store, "a", 1);
    let b = insert(&mut store, "b", 2);
    store.start(a.number, 3).expect("start");
    assert_eq!(store.requeue_running(4).expect("requeue"), 1);
    assert_eq!(
        store.queued().expect("queued"),
        vec![(a.number, 1), (b.number, 2)]
    );
    let again = store.start(a.number, 5).expect("start").expect("queued");
    assert_eq!(again.record.attempts, 2);
}

#[test]
fn ended_jobs_expire_then_are_forgotten() {
    let mut store = store("expire");
    let done = insert(&mut store, "done", 0);
    let waiting = insert(&mut store, "waiting", 0);
    store.start(done.number, 0).expect("start");
    store
        .finish(success(done.number, &answer(200)), 10)
        .expect("finish");
    assert_eq!(store.expire(100, 50).expect("expire"), 1);
    assert_eq!(
        store.by_id("done").expect("read").map(|r| r.state),
        Some(JobState::Expired)
    );
    assert_eq!(store.answer(done.number).expect("answer"), None);
    // Unfinished jobs never expire.
    assert_eq!(
        store.by_id("waiting").expect("read").map(|r| r.state),
        Some(JobState::Queued)
    );
    store.expire(200, 50).expect("expire");
    assert_eq!(store.by_id("done").expect("read"), None);
    assert_eq!(store.counts().expect("counts").queued, 1);
    let _ = waiting;
}

#[test]
fn every_state_change_gets_the_next_sequence_number_and_a_failed_job_can_be_retried() {
    let mut store = store("changes");
    let job = insert(&mut store, "a", 1);
    store.start(job.number, 2).expect("start");
    store
        .finish(failure(job.number, &answer(500), "boom"), 3)
        .expect("finish");
    // A failed job keeps its request, for a retry.
    let queued = store.retry(job.number, 4).expect("retry").expect("failed");
    assert_eq!(queued.state, JobState::Queued);
    assert!(store.retry(job.number, 5).expect("retry").is_none());
    let again = store.start(job.number, 6).expect("start").expect("queued");
    assert_eq!(again.record.attempts, 2);
    assert!(again.head.starts_with(b"GET /x"));
    let changes = store.changes(0, 100).expect("changes");
    let states: Vec<&str> = changes.iter().map(|c| c.state.as_str()).collect();
    assert_eq!(states, ["queued", "running", "failed", "queued", "running"]);
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(store.last_seq().expect("last"), 5);
    assert_eq!(store.changes(3, 1).expect("changes")[0].seq, 4);
    // A progress report is not a change of state.
    store
        .set_progress(job.number, 0.5, "half", 7)
        .expect("progress");
    assert_eq!(store.last_seq().expect("last"), 5);
}

#[test]
fn a_version_5_file_gets_the_feed_with_one_change_per_job() {
    let mut old = store("v5");
    let path = old.file.path.clone();
    insert(&mut old, "a", 1);
    insert(&mut old, "b", 2);
    old.db
        .execute_batch(
            "DROP TRIGGER job_changes_insert; DROP TRIGGER job_changes_update;
             DROP TABLE job_changes; ALTER TABLE jobs DROP COLUMN task; PRAGMA user_version = 5;",
        )
        .expect("make it version 5");
    drop(old);
    let mut store = SqliteStore::open(&path).expect("open a version 5 file");
    let ids = feed_ids(&mut store);
    assert_eq!(ids, ["a", "b"]);
    let listed = store.list(&JobFilter::default(), 0, 10).expect("list");
    assert_eq!(listed.len(), 2);
    let c = insert(&mut store, "c", 3);
    assert_eq!(store.changes(2, 10).expect("changes")[0].id, c.id);
}

#[test]
fn a_version_6_file_keeps_its_jobs_and_keys_with_the_keys_in_a_partial_index() {
    let mut old = store("v6");
    let path = old.file.path.clone();
    insert(&mut old, "a", 1);
    old.insert(&new_job("b", Some("k"))).expect("insert b");
    // Version 6 made the key a UNIQUE column, whose index holds every job.
    let sql = old.table_sql("jobs");
    let v6 = sql
        .replacen("CREATE TABLE jobs", "CREATE TABLE jobs_v6", 1)
        .replacen("idempotency_key TEXT", "idempotency_key TEXT UNIQUE", 1);
    old.db
        .execute_batch(&format!(
            "{v6}; INSERT INTO jobs_v6 SELECT * FROM jobs; DROP TABLE jobs;
             ALTER TABLE jobs_v6 RENAME TO jobs; {} {} PRAGMA user_version = 6;",
            schema::JOBS_INDEXES,
            admin::SCHEMA
        ))
        .expect("make it version 6");
    drop(old);
    let indexes = |store: &SqliteStore| -> Vec<String> {
        let mut s = store
            .db
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs' ORDER BY name")
            .expect("prepare");
        let names = s.query_map([], |r| r.get(0)).expect("indexes");
        names.collect::<Result<_, _>>().expect("names")
    };
    let mut store = SqliteStore::open(&path).expect("open a version 6 file");
    let version: i64 = store
        .db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 9);
    // The id's UNIQUE column keeps its index; the key's is the partial one.
    assert_eq!(
        indexes(&store),
        [
            "jobs_by_key",
            "jobs_by_state",
            "jobs_scheduled",
            "sqlite_autoindex_jobs_1"
        ]
    );
    let (found, _) = store
        .by_idempotency_key("k")
        .expect("read")
        .expect("the key's job");
    assert_eq!((found.id.as_str(), found.number), ("b", 2));
    assert!(
        store.insert(&new_job("c", Some("k"))).is_err(),
        "a key twice"
    );
    let d = store.insert(&new_job("d", None)).expect("insert d");
    assert_eq!(d.number, 3);
    let ids = feed_ids(&mut store);
    assert_eq!(ids, ["a", "b", "d"], "the feed's trigger is kept");
    drop(store);
    // Opened again, nothing changes.
    let store = SqliteStore::open(&path).expect("open a version 8 file");
    assert_eq!(indexes(&store).len(), 4);
}

fn new_job<'a>(id: &'a str, key: Option<&'a str>) -> NewJob<'a> {
    NewJob {
        id,
        head: b"GET /x HTTP/1.1\r\n\r\n",
        body: b"",
        idempotency_key: key,
        fingerprint: b"f",
        now_ms: 1,
        client: None,
        not_before_ms: None,
    }
}

#[test]
fn a_group_of_jobs_is_stored_and_started_in_order_without_the_cancelled_ones() {
    let mut store = store("group");
    store.begin().expect("begin");
    let jobs = [
        new_job("g1", Some("k1")),
        new_job("g2", None),
        new_job("g3", Some("k3")),
    ];
    let records = store.insert_many(&jobs).expect("insert");
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["g1", "g2", "g3"]);
    assert!(records.windows(2).all(|w| w[0].number < w[1].number));
    assert_eq!(
        store
            .by_idempotency_key("k3")
            .expect("read")
            .map(|(r, _)| r.id),
        Some("g3".to_string())
    );
    store.cancel(records[1].number, 2).expect("cancel");
    let numbers: Vec<u64> = records.iter().rev().map(|r| r.number).collect();
    let started = store.start_many(&numbers, 3).expect("start");
    let started: Vec<(&str, JobState, u32)> = started
        .iter()
        .map(|s| (s.record.id.as_str(), s.record.state, s.record.attempts))
        .collect();
    assert_eq!(
        started,
        [("g3", JobState::Running, 1), ("g1", JobState::Running, 1)]
    );
    store.commit().expect("commit");
}

#[test]
fn jobs_started_at_their_insert_are_stored_as_an_insert_and_a_start_leave_them() {
    // The same three submits, two of them started: by one store in one write each,
    // and by another inserted and then started.
    let mut at_once = store("at-once");
    let mut apart = store("apart");
    let jobs = [
        new_job("s1", None),
        new_job("s2", Some("k2")),
        new_job("s3", None),
    ];
    at_once.begin().expect("begin");
    let (records, started) = at_once.insert_and_start(&jobs, 2, 5).expect("insert");
    at_once.commit().expect("commit");
    apart.begin().expect("begin");
    let inserted = apart.insert_many(&jobs).expect("insert");
    let numbers: Vec<u64> = inserted.iter().take(2).map(|r| r.number).collect();
    let started_apart: Vec<JobRecord> = apart
        .start_many(&numbers, 5)
        .expect("start")
        .into_iter()
        .map(|s| s.record)
        .collect();
    apart.commit().expect("commit");

    assert_eq!(records, inserted);
    assert_eq!(started, started_apart);
    let states: Vec<(JobState, u32, u64)> = started
        .iter()
        .map(|r| (r.state, r.attempts, r.events))
        .collect();
    assert_eq!(
        states,
        [(JobState::Running, 1, 2), (JobState::Running, 1, 2)]
    );
    for record in &records {
        assert_eq!(
            at_once.by_number(record.number).expect("read"),
            apart.by_number(record.number).expect("read"),
            "{}",
            record.id
        );
    }
    // The feed holds both changes of a started job, in order, with their times.
    let feed = |store: &mut SqliteStore| -> Vec<(String, JobState, i64)> {
        let changes = store.changes(0, 100).expect("changes");
        changes
            .into_iter()
            .map(|c| (c.id, c.state, c.at_ms))
            .collect()
    };
    let mut expected = feed(&mut apart);
    let mut got = feed(&mut at_once);
    // Apart, the inserts' changes come before the starts'; at once, each job's two
    // come together: the same changes per job, in the same order.
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected);
    assert_eq!(
        got.iter()
            .filter(|c| c.0 == "s1")
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [JobState::Queued, JobState::Running]
    );
    // A job started at its insert ends as any running job.
    at_once.begin().expect("begin");
    let answer = StoredAnswer {
        status: 200,
        headers: Vec::new(),
        body: b"ok".to_vec(),
    };
    let ended = at_once
        .finish(success(records[0].number, &answer), 6)
        .expect("finish");
    assert_eq!(ended.map(|r| r.state), Some(JobState::Succeeded));
    at_once.commit().expect("commit");
}

#[test]
fn a_groups_events_are_read_before_its_commit_and_dropped_by_its_rollback() {
    let mut store = store("events");
    let event = |seq: u64, data: &str| JobEvent {
        seq,
        kind: "state".into(),
        data: data.into(),
    };
    store.begin().expect("begin");
    let record = insert(&mut store, "e1", 1);
    store
        .add_event(record.number, &event(1, "one"), 1)
        .expect("add");
    store
        .add_event(record.number, &event(2, "two"), 1)
        .expect("add");
    // Stored again under the same number: the last one stays, as row by row.
    store
        .add_event(record.number, &event(2, "two again"), 1)
        .expect("add");
    let seen: Vec<String> = store
        .events_after(record.number, 0)
        .expect("read")
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(seen, ["one", "two again"]);
    store
        .add_event(record.number, &event(3, "three"), 2)
        .expect("add");
    store.commit().expect("commit");

    store.begin().expect("begin");
    store
        .add_event(record.number, &event(4, "four"), 3)
        .expect("add");
    store.rollback();
    store.begin().expect("begin");
    store.commit().expect("commit");
    let seqs: Vec<u64> = store
        .events_after(record.number, 1)
        .expect("read")
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [2, 3]);
}

/// Three writes of its row (insert, start, finish), the last two each read back by its
/// number (see `update`), and its share of the group's events.
#[test]
fn a_job_costs_three_writes_two_reads_and_its_share_of_the_groups_events() {
    let mut store = store("statements");
    let ids: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let jobs: Vec<NewJob<'_>> = ids.iter().map(|id| new_job(id, None)).collect();
    store.begin().expect("begin");
    let before = store.statements();
    let records = store.insert_many(&jobs).expect("insert");
    let numbers: Vec<u64> = records.iter().map(|r| r.number).collect();
    for started in store.start_many(&numbers, 2).expect("start") {
        let number = started.record.number;
        let ended = store
            .finish(
                Ending {
                    number,
                    state: JobState::Succeeded,
                    answer: &answer(200),
                    error: None,
                },
                3,
            )
            .expect("finish")
            .expect("ended");
        for seq in 1..=ended.events {
            let event = JobEvent {
                seq,
                kind: "state".into(),
                data: "{}".into(),
            };
            store.add_event(number, &event, 3).expect("add");
        }
    }
    assert_eq!(
        store.statements() - before,
        50,
        "insert, start, finish, reads"
    );
    store.commit().expect("commit");
    // The 30 events in one statement and the COMMIT; then the checkpoint that empties
    // the log of the ended jobs' requests.
    assert_eq!(store.statements() - before, 52);
    store.scrub();
    assert_eq!(store.statements() - before, 53);
}

/// Whether the database, its `-wal` or its `-shm` file holds `needle` in its raw bytes.
fn on_disk(db: &std::path::Path, needle: &[u8]) -> bool {
    ["", "-wal", "-shm"].iter().any(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::fs::read(std::path::PathBuf::from(name))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

#[test]
fn the_scrub_after_the_commit_that_ended_a_job_takes_its_request_off_every_file() {
    let dir = scratch("scrub");
    let db = dir.join("jobs.sqlite");
    let mut store = SqliteStore::open(&db).expect("a new store");
    let secret = b"Bearer tok-scrub-7f3a9c";
    let head = [
        &b"GET /x HTTP/1.1\r\nAuthorization: "[..],
        secret,
        b"\r\n\r\n",
    ]
    .concat();
    store.begin().expect("begin");
    let record = store
        .insert(&NewJob {
            head: &head,
            ..new_job("scrubbed", None)
        })
        .expect("insert");
    store.commit().expect("commit");
    store.begin().expect("begin");
    store
        .start(record.number, 2)
        .expect("start")
        .expect("started");
    store
        .finish(success(record.number, &answer(200)), 3)
        .expect("finish")
        .expect("ended");
    store.commit().expect("commit");
    // The commit alone leaves the request in the log's older frames: that is what the
    // scrub is for (the job service sends no answer that tells of the end before it).
    assert!(
        on_disk(&db, secret),
        "the log holds the request until the scrub"
    );
    store.scrub();
    assert!(!on_disk(&db, secret), "a file still holds the request");
    // A scrub with nothing removed since changes nothing and fails nothing.
    store.scrub();
    assert_eq!(store.last_write_error(), None);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_write_runs_outside_a_group_that_sqlite_rolled_back() {
    // The writes of one row run `OR FAIL`, without a statement journal: a full disk
    // in one of them makes SQLite roll back the whole group. What follows in the
    // group must fail, not run (and commit) on its own.
    let mut kept = store("rolled-back");
    kept.begin().expect("begin");
    let first = insert(&mut kept, "before", 1);
    kept.db
        .execute_batch("ROLLBACK")
        .expect("the rollback SQLite would do");
    let more = NewJob {
        id: "after",
        head: b"GET /x HTTP/1.1\r\n\r\n",
        body: b"",
        idempotency_key: None,
        fingerprint: b"f",
        now_ms: 2,
        client: None,
        not_before_ms: None,
    };
    assert!(
        kept.insert(&more).is_err(),
        "an insert ran outside the group"
    );
    assert!(
        kept.start(first.number, 3).is_err(),
        "a start ran outside the group"
    );
    assert!(kept.commit().is_err(), "a commit of a group that is gone");
    kept.rollback();
    assert!(kept.by_id("before").expect("a read").is_none());
    assert!(kept.by_id("after").expect("a read").is_none());
    // The next group works.
    kept.begin().expect("begin");
    insert(&mut kept, "next", 4);
    kept.commit().expect("commit");
    assert!(kept.by_id("next").expect("a read").is_some());
}

#[test]
fn a_full_store_hands_its_log_to_sync_once_and_then_commits_without_syncing_it() {
    let synchronous = |s: &SqliteStore| -> i64 {
        s.db.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    let mut full = store("log-to-sync");
    // Until the log is taken, every commit syncs it (FULL is 2).
    assert_eq!(synchronous(&full), 2);
    let log = full.log_to_sync().expect("the log of a full store");
    assert!(full.log_to_sync().is_none(), "the log is handed out once");
    assert_eq!(synchronous(&full), 1, "NORMAL: the caller syncs the log");
    // The file handed out is the store's log: a commit's frames land in it.
    let before = log.metadata().expect("the log's size").len();
    full.begin().expect("begin");
    insert(&mut full, "a", 1);
    full.commit().expect("commit");
    assert!(full.last_commit_wrote());
    assert!(log.metadata().expect("the log's size").len() > before);
    log.sync_data().expect("the log syncs");
    // A group that changed nothing has nothing to sync.
    full.begin().expect("begin");
    full.by_id("a").expect("a read");
    full.commit().expect("commit");
    assert!(!full.last_commit_wrote());

    // At durability `process` commits never sync the log: none is handed out.
    let path = scratch("log-to-sync-process").join("jobs.sqlite");
    let mut process = SqliteStore::open_with(&path, Durability::Process).expect("a store");
    assert!(process.log_to_sync().is_none());
    assert_eq!(synchronous(&process), 1);
}

/// A job's events as `(seq, data)`, after `seq`.
fn events(store: &mut SqliteStore, number: u64, seq: u64) -> Vec<(u64, String)> {
    let events = store.events_after(number, seq).expect("events");
    events.into_iter().map(|e| (e.seq, e.data)).collect()
}

#[test]
fn plain_state_events_are_read_from_the_feed_and_the_others_from_job_events() {
    let mut store = store("derived");
    assert!(store.state_events_from_changes());
    store.begin().expect("begin");
    let (records, started) = store
        .insert_and_start(&[new_job("a", None), new_job("b", None)], 1, 5)
        .expect("insert");
    let (a, b) = (started[0].number, records[1].number);
    let ended = store
        .finish(success(a, &answer(200)), 7)
        .expect("finish")
        .expect("ended");
    assert_eq!(ended.events, 3);
    store.start(b, 6).expect("start").expect("started");
    let queued = store.requeue(b, "the worker died", 8).expect("requeue");
    let queued = queued.expect("queued again");
    // Its error makes it an event of its own, stored.
    let own = JobEvent {
        seq: queued.events,
        kind: "state".into(),
        data: "with its error".into(),
    };
    store.add_event(b, &own, 8).expect("add");
    store.commit().expect("commit");
    let plain = |state, attempts, at| plain_state_data(state, attempts, at);
    assert_eq!(
        events(&mut store, a, 0),
        [
            (1, plain(JobState::Queued, 0, records[0].created_ms)),
            (2, plain(JobState::Running, 1, 5)),
            (3, plain(JobState::Succeeded, 1, 7)),
        ]
    );
    assert_eq!(events(&mut store, a, 2).len(), 1);
    assert_eq!(
        events(&mut store, b, 1),
        [
            (2, plain(JobState::Running, 1, 6)),
            (3, "with its error".to_string()),
        ]
    );
    // A restart's requeue of the runs under way makes a change but no event.
    store.start(b, 9).expect("start").expect("started");
    assert_eq!(store.requeue_running(10).expect("requeue"), 1);
    assert_eq!(
        events(&mut store, b, 3),
        [(4, plain(JobState::Running, 2, 9))]
    );
    // An expired job's events are forgotten, those of the feed too.
    store.begin().expect("begin");
    assert_eq!(store.expire(1_000, 10).expect("expire"), 1);
    store.commit().expect("commit");
    assert!(events(&mut store, a, 0).is_empty());
}

#[test]
fn a_version_7_file_keeps_its_events_and_derives_those_of_later_changes() {
    let mut old = store("v7");
    let path = old.file.path.clone();
    let a = insert(&mut old, "a", 1);
    let stored = JobEvent {
        seq: 1,
        kind: "state".into(),
        data: "stored by version 7".into(),
    };
    old.add_event(a.number, &stored, 1).expect("add");
    old.events_after(a.number, 0).expect("write the events");
    old.db
        .execute_batch(
            "DROP TRIGGER job_changes_insert; DROP TRIGGER job_changes_update;
             ALTER TABLE job_changes DROP COLUMN event; ALTER TABLE job_changes DROP COLUMN attempts;
             PRAGMA user_version = 7;",
        )
        .expect("make it version 7");
    drop(old);
    let mut store = SqliteStore::open(&path).expect("open a version 7 file");
    let version: i64 = store
        .db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 9);
    store.start(a.number, 2).expect("start").expect("started");
    assert_eq!(
        events(&mut store, a.number, 0),
        [
            (1, "stored by version 7".to_string()),
            (2, plain_state_data(JobState::Running, 1, 2)),
        ]
    );
    let b = insert(&mut store, "b", 3);
    assert_eq!(
        events(&mut store, b.number, 0),
        [(1, plain_state_data(JobState::Queued, 0, 3))]
    );
    assert_eq!(feed_ids(&mut store), ["a", "a", "b"]);
}
