//! Durability of asynchronous jobs, with real processes killed with SIGKILL: an accepted
//! job survives the death of the process that accepted it, and a job's answer is
//! matched by job number even when it reaches a front end that was restarted. The
//! first two hold for both stores (`on_sqlite::NAME`, `on_postgres::NAME`).

mod daemons;
#[macro_use]
#[path = "postgres/mod.rs"]
mod pg;

use daemons::*;
use pg::{Db, Store};
use prime_server::demo::primes::is_prime_miller_rabin;
use std::path::Path;
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const READ: Duration = Duration::from_secs(60);
/// Numbers whose trial division takes a few milliseconds each: 1,000 of them keep two
/// workers busy for seconds, so most jobs are unfinished when the process dies.
const FIRST: u64 = 10_000_000_000_000;
const JOBS: u64 = 1_000;

/// A `prime_serverd` with its jobs in `db` (a file or a URL); with PostgreSQL, a lease
/// of one second.
fn start_serverd(name: &str, port: u16, db: &str, durability: &str) -> Daemon {
    let args = args(&[
        &tcp(port),
        "2",
        "--jobs-db",
        db,
        "--jobs-lease",
        "1",
        "--jobs-durability",
        durability,
        "--status-path",
        "/status",
    ]);
    Daemon::start_listening(name, SERVERD, &args)
}

on_both_stores!(
    kill_9_right_after_1000_accepted_jobs_loses_none,
    a_job_answered_after_the_front_end_restarted_is_matched_by_its_number,
);

fn kill_9_right_after_1000_accepted_jobs_loses_none(store: Store) {
    kill_9_after_accepted_jobs(store, "full");
}

#[test]
fn kill_9_loses_nothing_accepted_with_process_durability_too() {
    kill_9_after_accepted_jobs(Store::Sqlite, "process");
}

/// Submits 1,000 jobs, kills the server with SIGKILL right after the last 202, starts
/// it again on the same file: every job ends `succeeded` with the right answer, and no
/// long-poller is answered twice.
fn kill_9_after_accepted_jobs(store: Store, durability: &str) {
    let database = Db::new(store, scratch_path("crash-jobs", "sqlite"));
    let db = database.name();
    let port = free_port();
    let mut first = start_serverd("serverd-before", port, &db, durability);

    // 1,000 submits pipelined on one connection; kill -9 as soon as the last 202 is in.
    let mut client = Client::connect(port).expect("connect");
    for n in FIRST..FIRST + JOBS {
        client
            .send_request("GET", &is_prime(n), &["Prefer: respond-async"])
            .expect("send");
    }
    let locations: Vec<String> = (0..JOBS)
        .map(|_| location_of(&client.read_response(READ).expect("a 202")))
        .collect();
    first.kill9();
    first.wait_exit(Duration::from_secs(10));

    let mut second = start_serverd("serverd-after", port, &db, durability);
    assert!(
        second.stderr().contains("were running at the last stop"),
        "{}",
        second.stderr()
    );

    // Long-pollers on some jobs, each on its own connection: one answer each.
    let mut pollers: Vec<(String, Client)> = locations
        .iter()
        .rev()
        .take(10)
        .map(|location| {
            let mut client = Client::connect(port).expect("connect");
            client
                .send_request("GET", &format!("{location}?wait=30"), &[])
                .expect("send");
            (location.clone(), client)
        })
        .collect();
    for (location, client) in &mut pollers {
        let answer = client.read_response(READ).expect("a long-poll answer");
        assert!(matches!(answer.status, 200 | 303), "{location}: {answer:?}");
    }

    let mut reruns = 0;
    for (i, location) in locations.iter().enumerate() {
        let n = FIRST + i as u64;
        let status = wait_until_ended(port, location);
        assert_eq!(status["state"], "succeeded", "{location}: {status}");
        let attempts = status["attempts"].as_u64().expect("attempts");
        assert!((1..=2).contains(&attempts), "{status}");
        reruns += usize::from(attempts == 2);
        let result = get(port, &format!("{location}/result"), READ).expect("a result");
        assert_eq!(result.status, 200, "{result:?}");
        assert_eq!(result.possible_prime(), Some(n));
        assert_eq!(
            result.json()["is_prime"],
            is_prime_miller_rabin(n),
            "{location}: {result:?}"
        );
    }
    assert!(
        reruns > 0,
        "no job was running at the kill: the test tested nothing"
    );
    for (location, client) in &mut pollers {
        assert_eq!(
            client.unread_bytes(Duration::from_millis(200)),
            0,
            "{location}: a long-poller was answered twice"
        );
    }
    let status = get(port, "/status", READ).expect("status").json();
    assert_eq!(status["jobs"]["succeeded"], JOBS, "{status}");
    assert_eq!(status["jobs"]["queued"], 0, "{status}");
    assert_eq!(status["jobs"]["running"], 0, "{status}");
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(30)).is_some());
}

#[test]
fn a_corrupted_job_database_is_exit_code_2_and_is_kept() {
    let db = scratch_path("corrupt-jobs", "sqlite");
    let garbage = vec![0xA5u8; 8192];
    std::fs::write(&db, &garbage).expect("write garbage");
    let (status, stderr) = run_to_exit(
        SERVERD,
        &args(&[
            &tcp(free_port()),
            "1",
            "--jobs-db",
            &db.display().to_string(),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&db).expect("the file"), garbage);
}

fn a_job_answered_after_the_front_end_restarted_is_matched_by_its_number(store: Store) {
    let database = Db::new(store, scratch_path("restart-jobs", "sqlite"));
    let mut d = Deployment::start(Options {
        httpd: args(&["--jobs-db", &database.name(), "--jobs-lease", "1"]),
        ..Options::default()
    });
    let port = d.ports.http;
    let compute_cpu = d.compute.as_ref().expect("compute").cpu_ticks();
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(PRIME_2_61), &["Prefer: respond-async"])
        .expect("send");
    let location = location_of(&client.read_response(READ).expect("a 202"));
    let compute = d.compute.as_ref().expect("compute");
    assert!(
        compute.wait_busy(compute_cpu, 20, Duration::from_secs(20)),
        "the compute workers never got busy with the job"
    );

    // The front end dies while a worker computes; a new one opens the same store.
    d.httpd.as_mut().expect("httpd").kill9();
    d.start_httpd();
    let status = wait_until_ended(port, &location);
    assert_eq!(status["state"], "succeeded", "{status}");
    let result = get(port, &format!("{location}/result"), READ).expect("a result");
    assert_eq!(result.possible_prime(), Some(PRIME_2_61));
    assert_eq!(result.json()["is_prime"], true);
}

/// A `-wal` file cut inside its last frame after a SIGKILL (a torn last write): the
/// restart says that committed frames are dropped and how many, instead of starting as
/// if nothing happened; on the same files left intact it says nothing of the kind.
#[test]
fn a_damaged_write_ahead_log_is_reported_at_start() {
    // Jobs that take seconds each (trial division up to about 1.5e9): the two workers
    // finish none before the kill, so no job's end empties the log (see `scrub`).
    const SLOW: u64 = 2_305_843_009_213_693_951;
    let db = scratch_path("torn-log", "sqlite");
    let port = free_port();
    let mut first = start_serverd("serverd-before", port, &db.display().to_string(), "full");
    let mut client = Client::connect(port).expect("connect");
    for _ in 0..20 {
        client
            .send_request("GET", &is_prime(SLOW), &["Prefer: respond-async"])
            .expect("send");
        assert_eq!(client.read_response(READ).expect("a 202").status, 202);
    }
    first.kill9();
    first.wait_exit(Duration::from_secs(10));

    // The same files twice: as left (intact), and with the log cut.
    let copy = scratch_path("torn-log-copy", "sqlite");
    let wal_of = |db: &Path| std::path::PathBuf::from(format!("{}-wal", db.display()));
    std::fs::copy(&db, &copy).expect("copy the database");
    let bytes = std::fs::read(wal_of(&db)).expect("the -wal file after SIGKILL");
    // Page size 4096: a frame is 24 + 4096 bytes.
    assert!(
        bytes.len() > 32 + 2 * 4120,
        "the log holds no frames: {}",
        bytes.len()
    );
    std::fs::write(wal_of(&copy), &bytes[..bytes.len() - 2060]).expect("a cut log");

    let mut intact = start_serverd("serverd-intact", port, &db.display().to_string(), "full");
    assert!(
        !intact.stderr().contains("write-ahead log is damaged"),
        "{}",
        intact.stderr()
    );
    intact.kill9();
    intact.wait_exit(Duration::from_secs(10));

    let mut torn = start_serverd(
        "serverd-torn",
        free_port(),
        &copy.display().to_string(),
        "full",
    );
    let stderr = torn.stderr();
    assert!(
        stderr.contains("its write-ahead log is damaged")
            && stderr.contains("frames after the last intact commit are dropped (1 damaged;"),
        "{stderr}"
    );
    torn.kill9();
    torn.wait_exit(Duration::from_secs(10));
}

/// The job database deleted under a running server: from then on no job is
/// acknowledged (a `202` would promise a job no file holds after a restart); submits are
/// answered `503`, the log and the self-test say why, and the server keeps serving
/// synchronous requests.
#[test]
fn a_job_database_deleted_under_the_server_stops_job_acceptance() {
    let db = scratch_path("deleted-store", "sqlite");
    let port = free_port();
    let mut server = start_serverd("serverd-deleted", port, &db.display().to_string(), "full");
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(7), &["Prefer: respond-async"])
        .expect("send");
    let before = client.read_response(READ).expect("a 202");
    assert_eq!(before.status, 202, "{before:?}");

    std::fs::remove_file(&db).expect("delete the job database");
    client
        .send_request("GET", &is_prime(11), &["Prefer: respond-async"])
        .expect("send");
    let after = client.read_response(READ).expect("an answer");
    assert_eq!(after.status, 503, "{after:?}");
    assert!(after.header("Retry-After").is_some(), "{after:?}");
    assert!(
        server.wait_for_log("was deleted while the server ran", Duration::from_secs(10)),
        "{}",
        server.stderr()
    );
    let selftest = get(port, "/status?selftest=1", READ).expect("a self-test");
    assert_eq!(selftest.status, 503, "{selftest:?}");
    assert!(selftest.body.contains("was deleted"), "{selftest:?}");
    let sync = get(port, &is_prime(13), READ).expect("a synchronous answer");
    assert_eq!(sync.status, 200, "{sync:?}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
}

/// SIGTERM while a job runs: the drain gives the run its time to end (the job is not
/// run a second time after the restart, so a backend is not called twice), and no new
/// run starts during the drain.
#[test]
fn a_drain_lets_running_jobs_end_instead_of_running_them_again() {
    // About a second and a half of trial division.
    const SLOW: u64 = 2_305_843_009_213_693_951;
    let db = scratch_path("drain-jobs", "sqlite");
    let port = free_port();
    let args_with_drain = |port: u16| {
        args(&[
            &tcp(port),
            "1",
            "--jobs-db",
            &db.display().to_string(),
            "--drain-seconds",
            "60",
        ])
    };
    let mut first = Daemon::start_listening("serverd-draining", SERVERD, &args_with_drain(port));
    let mut client = Client::connect(port).expect("connect");
    let mut locations = Vec::new();
    for _ in 0..2 {
        client
            .send_request("GET", &is_prime(SLOW), &["Prefer: respond-async"])
            .expect("send");
        locations.push(location_of(&client.read_response(READ).expect("a 202")));
    }
    // One compute worker: the first job runs, the second waits in the store.
    let running = poll_until(READ, || {
        let status = get(port, &locations[0], READ).ok()?.json();
        (status["state"] == "running").then_some(())
    });
    assert!(running.is_some(), "the first job never ran");
    first.signal("TERM");
    let exit = first
        .wait_exit(READ)
        .expect("the server stops after its drain");
    assert!(exit.success(), "{exit:?}");
    assert!(
        !first.stderr().contains("job runs unfinished"),
        "{}",
        first.stderr()
    );

    // The run ended within the drain: one attempt. The queued job was not started
    // during the drain, so it has none yet.
    let port = free_port();
    let mut second =
        Daemon::start_listening("serverd-after-drain", SERVERD, &args_with_drain(port));
    let ended = get(port, &locations[0], READ).expect("a status").json();
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(ended["attempts"], 1, "{ended}");
    let waited = wait_until_ended(port, &locations[1]);
    assert_eq!(waited["state"], "succeeded", "{waited}");
    assert_eq!(waited["attempts"], 1, "{waited}");
    second.kill9();
    second.wait_exit(Duration::from_secs(10));
}
