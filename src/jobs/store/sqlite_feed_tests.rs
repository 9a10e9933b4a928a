//! Unit tests of the feed of changes numbered by its row id (schema version 9): the
//! numbers of a rebuilt older feed, and a forgotten newest change.
use super::tests::insert;
use super::*;

fn store_at(name: &str) -> (SqliteStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("prime-feed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join("jobs.sqlite");
    (SqliteStore::open(&path).expect("a new store"), path)
}

fn seqs_and_ids(store: &mut SqliteStore) -> Vec<(u64, String)> {
    let changes = store.changes(0, 100).expect("changes");
    changes.into_iter().map(|c| (c.seq, c.id)).collect()
}

#[test]
fn a_version_8_feed_keeps_its_numbers_and_never_gives_one_again() {
    let (mut old, path) = store_at("v8");
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        insert(&mut old, id, i as i64);
    }
    // Version 8's feed: an AUTOINCREMENT key, whose highest (3) outlived its row.
    old.db
        .execute_batch(
            "DROP TRIGGER job_changes_insert; DROP TRIGGER job_changes_update;
             CREATE TABLE job_changes_v8 (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, number INTEGER NOT NULL,
                 id TEXT NOT NULL, state TEXT NOT NULL, at_ms INTEGER NOT NULL,
                 event INTEGER, attempts INTEGER);
             INSERT INTO job_changes_v8 SELECT * FROM job_changes;
             DROP TABLE job_changes;
             ALTER TABLE job_changes_v8 RENAME TO job_changes;
             DELETE FROM job_changes WHERE seq = 3;
             PRAGMA user_version = 8;",
        )
        .expect("make it version 8");
    old.db
        .execute_batch(admin::SCHEMA)
        .expect("the version 8 feed's index and triggers");
    drop(old);
    let mut store = SqliteStore::open(&path).expect("open a version 8 file");
    let sql = store.table_sql("job_changes");
    assert!(!sql.contains("AUTOINCREMENT"), "{sql}");
    assert_eq!(
        seqs_and_ids(&mut store),
        [(1, "a".to_string()), (2, "b".to_string())]
    );
    assert_eq!(store.last_seq().expect("last"), 3);
    insert(&mut store, "d", 4);
    assert_eq!(seqs_and_ids(&mut store)[2], (4, "d".to_string()));
    drop(store);
    // Opened again, nothing changes.
    let mut store = SqliteStore::open(&path).expect("open a version 9 file");
    assert_eq!(seqs_and_ids(&mut store).len(), 3);
    assert_eq!(store.last_seq().expect("last"), 4);
}

#[test]
fn a_forgotten_newest_change_keeps_its_number_from_coming_back() {
    let (mut store, _) = store_at("forget");
    let job = insert(&mut store, "a", 0);
    let answer = StoredAnswer {
        status: 200,
        headers: Vec::new(),
        body: b"yes".to_vec(),
    };
    store.start(job.number, 0).expect("start");
    store
        .finish(
            Ending {
                number: job.number,
                state: JobState::Succeeded,
                answer: &answer,
                error: None,
            },
            10,
        )
        .expect("finish");
    assert_eq!(store.expire(100, 50).expect("expire"), 1);
    assert_eq!(store.last_seq().expect("last"), 4);
    // Deleted: its changes leave the feed, but the highest number stays given.
    store.expire(200, 50).expect("expire");
    assert_eq!(store.by_id("a").expect("read"), None);
    assert!(seqs_and_ids(&mut store).is_empty());
    assert_eq!(store.last_seq().expect("last"), 4);
    let b = insert(&mut store, "b", 300);
    assert_eq!(seqs_and_ids(&mut store), [(5, "b".to_string())]);
    // The next forgetting takes the old marker with it.
    store.start(b.number, 300).expect("start");
    store
        .finish(
            Ending {
                number: b.number,
                state: JobState::Succeeded,
                answer: &answer,
                error: None,
            },
            310,
        )
        .expect("finish");
    store.expire(400, 50).expect("expire");
    store.expire(500, 50).expect("expire");
    let rows: i64 = store
        .db
        .query_row("SELECT COUNT(*) FROM job_changes", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 1, "one marker");
    assert_eq!(store.last_seq().expect("last"), 8);
    insert(&mut store, "c", 600);
    assert_eq!(seqs_and_ids(&mut store), [(9, "c".to_string())]);
}
