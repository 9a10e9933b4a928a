//! Trust in the job store, with real `prime_serverd` processes and real SQLite files:
//! recovered jobs run at start, one store has one owner, idempotency keys belong to
//! their caller, credentials leave the disk, logs carry no job ids, and the self-test
//! tells a full disk.

mod daemons;

use daemons::*;
use prime_server::jobs::store::NewJob;
use prime_server::jobs::{JobStore, SqliteStore};
use std::path::Path;
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const READ: Duration = Duration::from_secs(60);

fn serverd_args(port: u16, db: &Path, more: &[&str]) -> Vec<String> {
    let db = db.display().to_string();
    let mut list = vec![tcp(port), "1".to_string(), "--jobs-db".to_string(), db];
    list.extend(more.iter().map(|s| s.to_string()));
    list.extend(args(&["--status-path", "/status"]));
    list
}

fn start_serverd(name: &str, port: u16, db: &Path, more: &[&str]) -> Daemon {
    Daemon::start_listening(name, SERVERD, &serverd_args(port, db, more))
}

/// The `/status` document's job figures.
fn job_figures(port: u16) -> serde_json::Value {
    let status = get(port, "/status", READ).expect("the status document");
    assert_eq!(status.status, 200, "{status:?}");
    status.json()["jobs"].clone()
}

#[test]
fn jobs_queued_before_a_start_run_without_any_request_to_the_job_service() {
    let db = scratch_path("recovered", "sqlite");
    {
        // Jobs a previous process accepted: two queued, one running when it stopped.
        let mut store = SqliteStore::open(&db).expect("a new store");
        store.begin().expect("begin");
        for (i, n) in [7u64, 11, 13].iter().enumerate() {
            let head = format!("GET /is_prime?possible_prime={n} HTTP/1.1\r\nHost: t\r\n\r\n");
            let id = format!("recoveredjob{i:010}");
            let record = store
                .insert(&NewJob {
                    id: &id,
                    head: head.as_bytes(),
                    body: b"",
                    idempotency_key: None,
                    fingerprint: b"",
                    now_ms: 1,
                    client: None,
                })
                .expect("insert");
            if i == 2 {
                store.start(record.number, 2).expect("start");
            }
        }
        store.commit().expect("commit");
    }
    let port = free_port();
    let mut serverd = start_serverd("serverd-recovered", port, &db, &[]);
    // Only the status document is read: it does not reach the job service, so nothing
    // but the start can have dispatched the jobs. (Without that, they would wait for
    // the first command or the minute's expiry timer.)
    let ended = poll_until(Duration::from_secs(40), || {
        let jobs = job_figures(port);
        (jobs["succeeded"] == 3).then_some(jobs)
    });
    assert!(
        ended.is_some(),
        "the recovered jobs did not run: {}",
        job_figures(port)
    );
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}

#[test]
fn a_second_process_on_one_job_database_exits_2_naming_the_first() {
    let db = scratch_path("owned", "sqlite");
    let port = free_port();
    let mut first = start_serverd("serverd-owner", port, &db, &[]);
    let (status, stderr) = run_to_exit(
        SERVERD,
        &serverd_args(free_port(), &db, &[]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("process {}", first.pid())),
        "the refusal does not name the first process: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The first runs on, and takes jobs.
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(7), &["Prefer: respond-async"])
        .expect("send");
    let location = location_of(&client.read_response(READ).expect("a 202"));
    assert_eq!(wait_until_ended(port, &location)["state"], "succeeded");
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    // Once the first has stopped, the file opens again.
    let mut again = start_serverd("serverd-next-owner", port, &db, &[]);
    again.signal("TERM");
    assert!(again.wait_exit(Duration::from_secs(30)).is_some());
}

/// Submits `GET target` as a job with these header lines on a new connection.
fn submit(port: u16, target: &str, headers: &[&str]) -> Response {
    let mut all = vec!["Prefer: respond-async"];
    all.extend_from_slice(headers);
    let mut client = Client::connect(port).expect("connect");
    client.send_request("GET", target, &all).expect("send");
    client.read_response(READ).expect("an answer")
}

#[test]
fn an_idempotency_key_is_its_callers_own() {
    let db = scratch_path("idempotency-callers", "sqlite");
    let port = free_port();
    let mut serverd = start_serverd("serverd-callers", port, &db, &[]);
    let key = "Idempotency-Key: order-1";
    let alice = "Authorization: Bearer alice-token";
    let bob = "Authorization: Bearer bob-token";
    let target = is_prime(97);

    let first = location_of(&submit(port, &target, &[key, alice]));
    // The same caller again: the same job.
    assert_eq!(location_of(&submit(port, &target, &[key, alice])), first);
    // Another caller, the same key and request: its own job, not Alice's.
    let other = location_of(&submit(port, &target, &[key, bob]));
    assert_ne!(other, first);
    // Cookies are credentials too, and no credentials is a caller of its own.
    let cookie = location_of(&submit(port, &target, &[key, "Cookie: session=alice"]));
    let anonymous = location_of(&submit(port, &target, &[key]));
    for location in [&first, &other, &cookie] {
        assert_ne!(&anonymous, location);
    }
    assert_ne!(cookie, first);
    // Another caller's key with another request is invisible: a new job, no 422...
    let probe = location_of(&submit(
        port,
        &is_prime(89),
        &[key, "Authorization: Bearer mallory"],
    ));
    assert!(![&first, &other, &cookie, &anonymous].contains(&&probe));
    // ... while the owner reusing it for another request is told so.
    let reused = submit(port, &is_prime(89), &[key, alice]);
    assert_eq!(reused.status, 422, "{reused:?}");

    // Keys stay scoped after a restart (the store keeps its own key).
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
    let mut serverd = start_serverd("serverd-callers-again", port, &db, &[]);
    assert_eq!(location_of(&submit(port, &target, &[key, alice])), first);
    assert_eq!(location_of(&submit(port, &target, &[key, bob])), other);
    for location in [&first, &other, &cookie, &anonymous, &probe] {
        assert_eq!(wait_until_ended(port, location)["state"], "succeeded");
    }
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}
