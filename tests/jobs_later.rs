//! Jobs that run later (`Job-Delay`, `Job-Not-Before`) over real sockets and real
//! SQLite files and PostgreSQL servers (`on_sqlite::NAME`, `on_postgres::NAME`): a delayed job starts no earlier than its time, can be cancelled,
//! refuses bad schedules with `400`, keeps its schedule through a restart, and 10,000
//! of them cost no CPU while they wait.

#[path = "http_common/mod.rs"]
mod common;
mod daemons;
#[macro_use]
#[path = "postgres/mod.rs"]
mod pg;

use common::{http_config, request, Client, HttpResponse, TestServer, WAIT};
use pg::{Db, Store};
use prime_server::http::Response;
use prime_server::jobs::JobsConfig;
use prime_server::stages::{HttpJob, Next, StageError};
use prime_server::Pipeline;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Milliseconds since the Unix epoch of an RFC 3339 time in a job's document.
fn ms_of(rfc3339: &serde_json::Value) -> i64 {
    let text = rfc3339.as_str().expect("a time");
    let time = humantime::parse_rfc3339(text).expect("an RFC 3339 time");
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The paths each run of the `record` stage saw, with the time it ran (ms).
type Runs = Arc<Mutex<Vec<(String, i64)>>>;

/// A front end with jobs (time to live 60 s) before a stage that records each run.
/// (The database is returned first, so that it outlives the server.)
fn recording_server(store: Store, name: &str) -> (Db, TestServer, Runs) {
    let runs: Runs = Arc::default();
    let seen = Arc::clone(&runs);
    let record = move |job: &mut HttpJob| -> Result<Next, StageError> {
        let path = job.request()?.path.clone();
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((path, now_ms()));
        Ok(Next::respond(Response::new(200).body("ran")))
    };
    let mut config = http_config();
    let db = Db::new(
        store,
        common::scratch_dir("jobs-later", name).join("jobs.sqlite"),
    );
    let mut jobs = JobsConfig::new(db.name());
    jobs.ttl = Duration::from_secs(60);
    config.jobs = Some(jobs);
    let server = TestServer::start(Pipeline::new().http_stage("record", 2, record), config);
    (db, server, runs)
}

fn submit(client: &mut Client, path: &str, schedule: &[&str]) -> HttpResponse {
    let mut headers = vec!["Prefer: respond-async"];
    headers.extend_from_slice(schedule);
    request(client, "GET", path, &headers)
}

/// Long-polls a job until it has left `scheduled`, `queued` and `running`.
fn wait_until_ended(client: &mut Client, location: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = request(client, "GET", &format!("{location}?wait=5"), &[]);
        let json = status.json();
        if !matches!(
            json["state"].as_str(),
            Some("scheduled" | "queued" | "running")
        ) {
            return json;
        }
        assert!(Instant::now() < deadline, "never ended: {json}");
    }
}

on_both_stores!(
    a_delayed_job_starts_no_earlier_than_its_time,
    a_scheduled_job_can_be_cancelled,
    a_restart_keeps_the_schedule,
);

fn a_delayed_job_starts_no_earlier_than_its_time(store: Store) {
    let (_db, server, runs) = recording_server(store, "delay");
    let mut client = server.connect();
    let submitted_ms = now_ms();
    let accepted = submit(&mut client, "/later", &["Job-Delay: 2"]);
    assert_eq!(accepted.status, 202, "{}", accepted.body_str());
    let job = accepted.json();
    assert_eq!(job["state"], "scheduled");
    let not_before = ms_of(&job["not_before"]);
    assert!(not_before >= submitted_ms + 2000, "{job}");
    assert!(accepted.header("Retry-After").is_some());
    let location = accepted.header("Location").expect("a Location").to_string();
    // Just after the submit it waits, with its time in its document.
    let status = request(&mut client, "GET", &location, &[]).json();
    assert_eq!(status["state"], "scheduled", "{status}");
    assert_eq!(status["not_before"], job["not_before"]);

    let ended = wait_until_ended(&mut client, &location);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let runs = runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].1 >= not_before,
        "ran at {} before its time {not_before}",
        runs[0].1
    );
}

fn a_scheduled_job_can_be_cancelled(store: Store) {
    let (_db, server, runs) = recording_server(store, "cancel");
    let mut client = server.connect();
    let first = submit(&mut client, "/cancelled", &["Job-Delay: 1"]);
    let location = first.header("Location").expect("a Location").to_string();
    let cancelled = request(&mut client, "DELETE", &location, &[]);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body_str());
    assert_eq!(cancelled.json()["state"], "cancelled");
    // A job scheduled after the cancelled one's time runs; the cancelled one never
    // does.
    let second = submit(&mut client, "/kept", &["Job-Delay: 1.5"]);
    let kept = second.header("Location").expect("a Location").to_string();
    assert_eq!(wait_until_ended(&mut client, &kept)["state"], "succeeded");
    let paths: Vec<String> = runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(paths, ["/kept"]);
    let status = request(&mut client, "GET", &location, &[]).json();
    assert_eq!(status["state"], "cancelled", "{status}");
}

#[test]
fn bad_schedules_are_refused_with_400() {
    let (_db, server, runs) = recording_server(Store::Sqlite, "refused");
    let mut client = server.connect();
    let far_date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let far = format!("Job-Not-Before: {far_date}");
    for (fields, says) in [
        (
            vec!["Job-Delay: soon"],
            "Job-Delay takes a number of seconds",
        ),
        (vec!["Job-Delay: -5"], "Job-Delay takes a number of seconds"),
        (
            vec!["Job-Not-Before: next tuesday"],
            "Job-Not-Before takes an HTTP-date",
        ),
        (
            vec![
                "Job-Delay: 5",
                "Job-Not-Before: Sun, 06 Dec 2026 08:00:00 GMT",
            ],
            "not both",
        ),
        (vec!["Job-Delay: 1", "Job-Delay: 2"], "more than once"),
        (vec!["Job-Delay: 61"], "time to live, 60s"),
        (vec![far.as_str()], "time to live, 60s"),
    ] {
        let refused = submit(&mut client, "/refused", &fields);
        assert_eq!(refused.status, 400, "{fields:?}: {}", refused.body_str());
        let error = refused.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(says), "{fields:?}: {error}");
    }
    assert!(runs.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
}

fn start_serverd(name: &str, port: u16, db: &str) -> daemons::Daemon {
    let args = daemons::args(&[
        &daemons::tcp(port),
        "2",
        "--jobs-db",
        db,
        "--jobs-durability",
        "process",
    ]);
    daemons::Daemon::start_listening(name, SERVERD, &args)
}

fn a_restart_keeps_the_schedule(store: Store) {
    let database = Db::new(store, daemons::scratch_path("later-restart", "sqlite"));
    let db = database.name();
    let port = daemons::free_port();
    let mut first = start_serverd("serverd-scheduling", port, &db);
    let mut client = daemons::Client::connect(port).expect("connect");
    client
        .send_request(
            "GET",
            &daemons::is_prime(97),
            &["Prefer: respond-async", "Job-Delay: 3"],
        )
        .expect("send");
    let accepted = client.read_response(WAIT).expect("a 202");
    let location = daemons::location_of(&accepted);
    let not_before = accepted.json()["not_before"].clone();
    first.kill9();

    let _second = start_serverd("serverd-scheduled", port, &db);
    let status = daemons::get(port, &location, WAIT)
        .expect("a status")
        .json();
    assert_eq!(status["state"], "scheduled", "{status}");
    assert_eq!(status["not_before"], not_before);
    let ended = daemons::wait_until_ended(port, &location);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    // It ended after its time, on the second process's timer.
    assert!(ms_of(&ended["updated"]) >= ms_of(&not_before), "{ended}");
    let result = daemons::get(port, &format!("{location}/result"), WAIT).expect("a result");
    assert_eq!(result.possible_prime(), Some(97));
}

#[test]
fn ten_thousand_delayed_jobs_cost_no_cpu_while_they_wait() {
    const JOBS: usize = 10_000;
    const ROUND: usize = 500;
    let db = daemons::scratch_path("later-idle", "sqlite");
    let db = db.display().to_string();
    let port = daemons::free_port();
    let daemon = start_serverd("serverd-waiting", port, &db);
    let mut client = daemons::Client::connect(port).expect("connect");
    for round in 0..JOBS / ROUND {
        for i in 0..ROUND {
            let n = (round * ROUND + i) as u64;
            client
                .send_request(
                    "GET",
                    &daemons::is_prime(n),
                    &["Prefer: respond-async", "Job-Delay: 600"],
                )
                .expect("send");
        }
        for _ in 0..ROUND {
            let accepted = client.read_response(WAIT).expect("a 202");
            assert_eq!(accepted.status, 202, "{accepted:?}");
        }
    }
    let last = daemons::get(port, "/jobs/none", WAIT).expect("an answer");
    assert_eq!(last.status, 404);
    // Settled: what the submits cost is spent. Then two seconds of waiting.
    std::thread::sleep(Duration::from_millis(500));
    let before = daemon.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let spent = daemon.cpu_ticks() - before;
    eprintln!("{spent} ticks of CPU in 2 s while {JOBS} jobs waited");
    // An idle prime_serverd spends a few ticks (of 10 ms) in two seconds on its
    // heartbeats and probes; a poll of 10,000 jobs, or a timer per job, would be far
    // more.
    assert!(
        spent <= 25,
        "{spent} ticks of CPU in 2 s while {JOBS} jobs waited"
    );
}
