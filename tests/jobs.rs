//! Asynchronous jobs over real sockets, with real SQLite files in temporary
//! directories and real PostgreSQL servers of the tests' own: `Prefer:
//! respond-async`, status, long-polls, results, cancellation, idempotency, the bounds,
//! expiry, and a stage that answers later. Each test of the store's behaviour runs
//! against both stores (`on_sqlite::NAME`, `on_postgres::NAME`).

#[path = "http_common/mod.rs"]
mod common;
#[macro_use]
#[path = "postgres/mod.rs"]
mod pg;

use common::{http_config, request, wait_for, Client, HttpResponse, Latch, TestServer, WAIT};
use pg::{Db, Store};
use prime_server::http::Response;
use prime_server::jobs::{CallerIdentity, JobsConfig};
use prime_server::server::ServerConfig;
use prime_server::stages::{HttpJob, Next, StageError};
use prime_server::Pipeline;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A prime that trial division takes a while over (about 1 s in a release build).
const SLOW_PRIME: u64 = 18_446_744_073_709_551_557;

/// A fresh directory for one test's database.
fn scratch_dir(name: &str) -> PathBuf {
    common::scratch_dir("jobs", name)
}

/// The front end's configuration with jobs kept in a new database for this test.
fn jobs_config(store: Store, name: &str) -> (ServerConfig, Db) {
    let db = Db::new(store, scratch_dir(name).join("jobs.sqlite"));
    let mut config = http_config();
    config.jobs = Some(JobsConfig::new(db.name()));
    (config, db)
}

on_both_stores!(
    a_job_is_accepted_then_its_result_matches_the_synchronous_answer,
    prefer_wait_gives_the_answer_when_the_job_ends_in_time_and_202_otherwise,
    a_long_poll_is_woken_by_the_end_of_the_job,
    a_long_poll_ends_with_the_current_state_when_nothing_changes,
    cancelling_interrupts_the_running_work_and_the_job_stays_cancelled,
    an_idempotency_key_returns_the_same_job_for_the_same_request_only,
    pipelined_submits_are_each_stored_once_and_each_run,
    an_embedder_names_the_caller_an_idempotency_key_belongs_to,
    past_the_bound_a_submit_gets_503_with_retry_after,
    unknown_ids_are_404_and_expired_ones_410,
    a_job_whose_stage_refuses_it_fails_with_the_stage_answer_as_result,
    a_panicking_stage_and_a_job_past_its_timeout_fail_with_500_and_504,
    a_stage_can_decide_to_answer_later,
    the_status_document_counts_jobs_by_state,
);

fn jobs_of(config: &mut ServerConfig) -> &mut JobsConfig {
    config.jobs.as_mut().expect("jobs are configured")
}

/// Submits `GET target` with `Prefer: respond-async` (and more headers).
fn submit(client: &mut Client, target: &str, headers: &[&str]) -> HttpResponse {
    let mut all = vec!["Prefer: respond-async"];
    all.extend_from_slice(headers);
    request(client, "GET", target, &all)
}

/// Asserts a `202 Accepted` as RFC 7240 describes it; returns the job's location.
fn assert_accepted(response: &HttpResponse) -> String {
    assert_eq!(response.status, 202, "{response:?} {}", response.body_str());
    assert_eq!(response.header("Preference-Applied"), Some("respond-async"));
    assert!(response.header("Retry-After").is_some(), "{response:?}");
    let location = response.header("Location").expect("a Location").to_string();
    let job = response.json();
    assert_eq!(
        location,
        format!("/jobs/{}", job["id"].as_str().expect("an id"))
    );
    // 128 random bits, URL-safe base64.
    let id = location.trim_start_matches("/jobs/");
    assert_eq!(id.len(), 22, "{id}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    location
}

/// Polls the job's status until it has ended; returns the last status response.
fn wait_until_ended(client: &mut Client, location: &str) -> HttpResponse {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let response = request(client, "GET", &format!("{location}?wait=5"), &[]);
        let state = response.json()["state"].as_str().unwrap_or("").to_string();
        if !matches!(state.as_str(), "queued" | "running") {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "the job never ended: {response:?}"
        );
    }
}

/// The response as bytes with its Date line left out, to compare two answers.
fn without_date(response: &HttpResponse) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let headers = response
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("date"))
        .cloned()
        .collect();
    (response.status, headers, response.body.clone())
}

fn a_job_is_accepted_then_its_result_matches_the_synchronous_answer(store: Store) {
    let (config, path) = jobs_config(store, "prime");
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let target = format!("/is_prime?possible_prime={SLOW_PRIME}");

    let accepted = submit(&mut client, &target, &[]);
    let location = assert_accepted(&accepted);
    assert!(matches!(
        accepted.json()["state"].as_str(),
        Some("queued" | "running")
    ));

    let before = request(&mut client, "GET", &format!("{location}/result"), &[]);
    if before.status == 404 {
        assert_eq!(before.json()["job"], location.as_str(), "{before:?}");
    }

    let ended = wait_until_ended(&mut client, &location);
    assert_eq!(ended.status, 303, "{ended:?}");
    assert_eq!(
        ended.header("Location"),
        Some(format!("{location}/result").as_str())
    );
    let status = ended.json();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["attempts"], 1);
    for field in ["created", "updated"] {
        assert!(
            status[field].as_str().is_some_and(|t| t.ends_with('Z')),
            "{status}"
        );
    }

    let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
    let synchronous = request(&mut client, "GET", &target, &[]);
    assert_eq!(synchronous.status, 200);
    assert_eq!(without_date(&result), without_date(&synchronous));
    result.assert_standard_headers();

    // HEAD gets the same head and no body.
    let head = request(&mut client, "HEAD", &format!("{location}/result"), &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        result.header("Content-Length")
    );

    // Stored requests may carry credentials: only the owner reads the file.
    if let Db::Sqlite(path) = &path {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .expect("the database")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    server.stop();
}

#[test]
fn a_request_without_the_preference_is_answered_as_before() {
    let (config, _path) = jobs_config(Store::Sqlite, "sync");
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let response = request(
        &mut client,
        "GET",
        "/is_prime?possible_prime=7",
        &["Prefer: handling=lenient"],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["is_prime"], true);
    assert!(response.header("Preference-Applied").is_none());
}

fn prefer_wait_gives_the_answer_when_the_job_ends_in_time_and_202_otherwise(store: Store) {
    let gate = Latch::default();
    let held = gate.clone();
    let pipeline = Pipeline::new().http_stage("work", 2, move |job: &mut HttpJob| {
        let request = job.request()?;
        if request.path == "/slow" {
            held.wait(WAIT);
        }
        Ok(Next::respond(Response::new(200).body("done")))
    });
    let (config, _path) = jobs_config(store, "wait");
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();

    let quick = request(
        &mut client,
        "GET",
        "/quick",
        &["Prefer: respond-async, wait=20"],
    );
    assert_eq!(quick.status, 200, "{quick:?}");
    assert_eq!(quick.body_str(), "done");
    assert!(quick.header("Preference-Applied").is_none());

    let slow = request(
        &mut client,
        "GET",
        "/slow",
        &["Prefer: respond-async, wait=1"],
    );
    let location = assert_accepted(&slow);
    gate.open();
    let ended = wait_until_ended(&mut client, &location);
    assert_eq!(ended.json()["state"], "succeeded");
}

fn a_long_poll_is_woken_by_the_end_of_the_job(store: Store) {
    let gate = Latch::default();
    let held = gate.clone();
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&started);
    let pipeline = Pipeline::new().http_stage("work", 1, move |_job: &mut HttpJob| {
        seen.fetch_add(1, Ordering::SeqCst);
        held.wait(WAIT);
        Ok(Next::respond(Response::new(201).body("made")))
    });
    let (config, _path) = jobs_config(store, "longpoll");
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();
    let location = assert_accepted(&submit(&mut client, "/make", &[]));
    assert!(wait_for(|| started.load(Ordering::SeqCst) == 1));

    // Running: the long-poll waits (up to 60 s) for the next change of state.
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            gate.open();
        })
    };
    let woken = request(&mut client, "GET", &format!("{location}?wait=60"), &[]);
    opener.join().expect("the opener");
    assert_eq!(woken.status, 303, "{woken:?}");
    assert_eq!(woken.json()["state"], "succeeded");

    let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
    assert_eq!(result.status, 201);
    assert_eq!(result.body_str(), "made");
}

fn a_long_poll_ends_with_the_current_state_when_nothing_changes(store: Store) {
    let gate = Latch::default();
    let held = gate.clone();
    let pipeline = Pipeline::new().http_stage("work", 1, move |_job: &mut HttpJob| {
        held.wait(WAIT);
        Ok(Next::respond(Response::new(200)))
    });
    let (config, _path) = jobs_config(store, "longpoll-timeout");
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();
    let location = assert_accepted(&submit(&mut client, "/x", &[]));
    assert!(wait_for(|| {
        request(&mut client, "GET", &location, &[]).json()["state"] == "running"
    }));
    let polled = request(&mut client, "GET", &format!("{location}?wait=1"), &[]);
    assert_eq!(polled.status, 200);
    assert_eq!(polled.json()["state"], "running");
    gate.open();
}

fn cancelling_interrupts_the_running_work_and_the_job_stays_cancelled(store: Store) {
    let started = Latch::default();
    let stopped = Latch::default();
    let (on_start, on_stop) = (started.clone(), stopped.clone());
    let pipeline = Pipeline::new().http_stage("work", 1, move |job: &mut HttpJob| {
        on_start.open();
        let give_up = Instant::now() + WAIT * 2;
        while !job.interrupted() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        if job.interrupted() {
            on_stop.open();
            return Ok(Next::Abandon);
        }
        Ok(Next::respond(Response::new(200).body("finished anyway")))
    });
    let (config, _path) = jobs_config(store, "cancel");
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();
    let location = assert_accepted(&submit(&mut client, "/long", &[]));
    assert!(started.wait(WAIT), "the job never started");

    let cancelled = request(&mut client, "DELETE", &location, &[]);
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.json()["state"], "cancelled");
    assert!(stopped.wait(WAIT), "the work was not interrupted");

    let status = request(&mut client, "GET", &location, &[]);
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["state"], "cancelled");
    let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
    assert_eq!(result.status, 404);
    assert_eq!(result.json()["state"], "cancelled");
    // Cancelling again is harmless.
    assert_eq!(request(&mut client, "DELETE", &location, &[]).status, 200);
}

fn an_idempotency_key_returns_the_same_job_for_the_same_request_only(store: Store) {
    let (config, _path) = jobs_config(store, "idempotency");
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let key = "Idempotency-Key: order-1234";
    let first = assert_accepted(&submit(&mut client, "/is_prime?possible_prime=97", &[key]));
    let again = assert_accepted(&submit(&mut client, "/is_prime?possible_prime=97", &[key]));
    assert_eq!(first, again);

    let other = submit(&mut client, "/is_prime?possible_prime=89", &[key]);
    other.assert_error(422);

    let fresh = assert_accepted(&submit(
        &mut client,
        "/is_prime?possible_prime=97",
        &["Idempotency-Key: order-1235"],
    ));
    assert_ne!(first, fresh);
    let ended = wait_until_ended(&mut client, &first);
    assert_eq!(ended.json()["state"], "succeeded");
}

/// Twenty submits written at once on one connection (most reach the job service in one
/// batch, whose submits are stored together), ten keys each used twice for the same
/// request, then a key used for another request: each key names one job, every job
/// runs once, and the answers come in the order asked.
fn pipelined_submits_are_each_stored_once_and_each_run(store: Store) {
    let (config, _db) = jobs_config(store, "pipelined");
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let primes = [97, 89, 83, 79, 73, 71, 67, 61, 59, 53];
    let submit_bytes = |n: u64, key: usize| {
        format!(
            "GET /is_prime?possible_prime={n} HTTP/1.1\r\nHost: test\r\n\
             Prefer: respond-async\r\nIdempotency-Key: batch-{key}\r\n\r\n"
        )
    };
    let mut bytes = String::new();
    for _ in 0..2 {
        for (key, n) in primes.iter().enumerate() {
            bytes.push_str(&submit_bytes(*n, key));
        }
    }
    bytes.push_str(&submit_bytes(101, 0));
    client.send(bytes.as_bytes());
    let locations: Vec<String> = (0..20)
        .map(|_| assert_accepted(&client.read_response()))
        .collect();
    client.read_response().assert_error(422);
    assert_eq!(locations[..10], locations[10..]);
    let distinct: std::collections::HashSet<&String> = locations.iter().collect();
    assert_eq!(distinct.len(), 10, "{locations:?}");

    for (location, n) in locations[..10].iter().zip(primes) {
        let ended = wait_until_ended(&mut client, location);
        assert_eq!(ended.json()["state"], "succeeded", "{ended:?}");
        assert_eq!(ended.json()["attempts"], 1, "{ended:?}");
        let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
        let sync = client.get(&format!("/is_prime?possible_prime={n}"));
        assert_eq!(without_date(&result), without_date(&sync));
    }
}

fn an_embedder_names_the_caller_an_idempotency_key_belongs_to(store: Store) {
    let (mut config, _path) = jobs_config(store, "caller-hook");
    // Callers are tenants, named by a field; credentials do not matter here.
    jobs_of(&mut config).caller = CallerIdentity::new(|head: &[u8]| {
        prime_server::http::field_text(head, "x-tenant")
            .unwrap_or_default()
            .as_bytes()
            .to_vec()
    });
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let key = "Idempotency-Key: order-77";
    let target = "/is_prime?possible_prime=97";
    let a = assert_accepted(&submit(
        &mut client,
        target,
        &[key, "X-Tenant: a", "Authorization: Bearer 1"],
    ));
    let a_again = assert_accepted(&submit(
        &mut client,
        target,
        &[key, "X-Tenant: a", "Authorization: Bearer 2"],
    ));
    assert_eq!(a, a_again);
    let b = assert_accepted(&submit(&mut client, target, &[key, "X-Tenant: b"]));
    assert_ne!(a, b);
    // Another tenant's different request under the key is not told the key exists.
    assert_accepted(&submit(
        &mut client,
        "/is_prime?possible_prime=89",
        &[key, "X-Tenant: c"],
    ));
    submit(
        &mut client,
        "/is_prime?possible_prime=89",
        &[key, "X-Tenant: a"],
    )
    .assert_error(422);
}

fn past_the_bound_a_submit_gets_503_with_retry_after(store: Store) {
    let gate = Latch::default();
    let held = gate.clone();
    let pipeline = Pipeline::new().http_stage("work", 1, move |_job: &mut HttpJob| {
        held.wait(WAIT);
        Ok(Next::respond(Response::new(200)))
    });
    let (mut config, _path) = jobs_config(store, "bound");
    jobs_of(&mut config).max_queued = 2;
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();
    let first = assert_accepted(&submit(&mut client, "/a", &[]));
    assert_accepted(&submit(&mut client, "/b", &[]));
    let refused = submit(&mut client, "/c", &[]);
    refused.assert_error(503);
    assert!(refused.header("Retry-After").is_some(), "{refused:?}");
    gate.open();
    wait_until_ended(&mut client, &first);
    assert!(wait_for(|| submit(&mut client, "/d", &[]).status == 202));
}

fn unknown_ids_are_404_and_expired_ones_410(store: Store) {
    let (mut config, _path) = jobs_config(store, "expiry");
    jobs_of(&mut config).ttl = Duration::from_millis(500);
    let server = TestServer::primes(config);
    let mut client = server.connect();
    for target in [
        "/jobs/AAAAAAAAAAAAAAAAAAAAAA",
        "/jobs/not-an-id",
        "/jobs/AAAAAAAAAAAAAAAAAAAAAA/result",
    ] {
        request(&mut client, "GET", target, &[]).assert_error(404);
    }
    request(&mut client, "DELETE", "/jobs/AAAAAAAAAAAAAAAAAAAAAA", &[]).assert_error(404);
    let post = request(&mut client, "POST", "/jobs/AAAAAAAAAAAAAAAAAAAAAA", &[]);
    post.assert_error(405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD, DELETE"));

    let location = assert_accepted(&submit(&mut client, "/is_prime?possible_prime=7", &[]));
    wait_until_ended(&mut client, &location);
    assert!(
        wait_for(|| request(&mut client, "GET", &location, &[]).status == 410),
        "the job never expired"
    );
    request(&mut client, "GET", &format!("{location}/result"), &[]).assert_error(410);
}

fn a_job_whose_stage_refuses_it_fails_with_the_stage_answer_as_result(store: Store) {
    let (config, _path) = jobs_config(store, "failed");
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let synchronous = request(&mut client, "GET", "/is_prime?possible_prime=abc", &[]);
    assert_eq!(synchronous.status, 400);
    let location = assert_accepted(&submit(&mut client, "/is_prime?possible_prime=abc", &[]));
    let ended = wait_until_ended(&mut client, &location);
    let status = ended.json();
    assert_eq!(status["state"], "failed");
    assert_eq!(status["error"]["status"], 400);
    assert_eq!(
        status["error"]["detail"],
        synchronous.json()["error"],
        "{status}"
    );
    let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
    assert_eq!(without_date(&result), without_date(&synchronous));
}

fn a_panicking_stage_and_a_job_past_its_timeout_fail_with_500_and_504(store: Store) {
    let pipeline = Pipeline::new().http_stage("work", 2, |job: &mut HttpJob| {
        let request = job.request()?;
        match request.path.as_str() {
            "/panic" => panic!("a bug in the stage"),
            _ => {
                let give_up = Instant::now() + WAIT;
                while !job.interrupted() && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(Next::Abandon)
            }
        }
    });
    let (mut config, _path) = jobs_config(store, "fail");
    // Long enough for a panicking worker to print its backtrace (RUST_BACKTRACE=1
    // symbolizes the whole test binary first) on a loaded machine.
    jobs_of(&mut config).job_timeout = Duration::from_secs(3);
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();
    let panicked = assert_accepted(&submit(&mut client, "/panic", &[]));
    let late = assert_accepted(&submit(&mut client, "/forever", &[]));
    for (location, status) in [(panicked, 500), (late, 504)] {
        let ended = wait_until_ended(&mut client, &location).json();
        assert_eq!(ended["state"], "failed", "{ended}");
        assert_eq!(ended["error"]["status"], status, "{ended}");
        let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
        result.assert_error(status);
    }
}

/// Answers `/route?far=1` later; the job's run sees `is_async`.
fn route(job: &mut HttpJob) -> Result<Next, StageError> {
    let far = job.request()?.query_values("far").next().is_some();
    if far && !job.is_async() {
        return Ok(Next::later());
    }
    let body = serde_json::json!({ "far": far, "async": job.is_async() });
    Ok(Next::respond(Response::json(200, &body)))
}

fn a_stage_can_decide_to_answer_later(store: Store) {
    let (config, _path) = jobs_config(store, "later");
    let server = TestServer::start(Pipeline::new().http_stage("route", 2, route), config);
    let mut client = server.connect();
    let near = request(&mut client, "GET", "/route", &[]);
    assert_eq!(near.status, 200);
    assert_eq!(near.json()["async"], false);

    let far = request(&mut client, "GET", "/route?far=1", &[]);
    let location = assert_accepted(&far);
    wait_until_ended(&mut client, &location);
    let result = request(&mut client, "GET", &format!("{location}/result"), &[]);
    assert_eq!(
        result.json(),
        serde_json::json!({"far": true, "async": true})
    );
}

#[test]
fn without_a_job_store_answer_later_is_a_500_and_prefer_is_ignored() {
    let server = TestServer::start(Pipeline::new().http_stage("route", 2, route), http_config());
    let mut client = server.connect();
    request(&mut client, "GET", "/route?far=1", &[]).assert_error(500);
    let near = submit(&mut client, "/route", &[]);
    assert_eq!(near.status, 200);
    assert!(near.header("Preference-Applied").is_none());
}

fn the_status_document_counts_jobs_by_state(store: Store) {
    let (mut config, _path) = jobs_config(store, "status");
    config.status_path = Some("/status".into());
    let server = TestServer::primes(config);
    let mut client = server.connect();
    let location = assert_accepted(&submit(&mut client, "/is_prime?possible_prime=7", &[]));
    wait_until_ended(&mut client, &location);
    assert!(wait_for(|| {
        let status = request(&mut client, "GET", "/status", &[]).json();
        status["jobs"]["succeeded"] == 1
            && status["jobs"]["queued"] == 0
            && status["jobs"]["commits"].as_u64().is_some_and(|n| n > 0)
    }));
}

#[test]
fn a_corrupted_database_is_an_error_at_start_and_is_not_replaced() {
    let dir = scratch_dir("corrupt");
    let path = dir.join("jobs.sqlite");
    let garbage = b"this is not a SQLite database, it only has the right name".repeat(100);
    std::fs::write(&path, &garbage).expect("write garbage");
    let mut config = http_config();
    config.jobs = Some(JobsConfig::new(&path));
    let ctx = zmq::Context::new();
    let error = match common::primes_pipeline().bind_server(&ctx, config) {
        Ok(_) => panic!("a corrupted job database was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert_eq!(std::fs::read(&path).expect("the file"), garbage);
}

#[test]
fn two_front_ends_on_one_postgres_store_share_the_bound_of_unfinished_jobs() {
    let postgres = pg::Postgres::start();
    let gate = Latch::default();
    let gated = || {
        let held = gate.clone();
        Pipeline::new().http_stage("work", 1, move |_job: &mut HttpJob| {
            held.wait(WAIT);
            Ok(Next::respond(Response::new(200)))
        })
    };
    let config = || {
        let mut config = http_config();
        config.status_path = Some("/status".into());
        let mut jobs = JobsConfig::new(postgres.url());
        jobs.max_queued = 2;
        jobs.lease = Duration::from_millis(300);
        config.jobs = Some(jobs);
        config
    };
    let a = TestServer::start(gated(), config());
    let b = TestServer::start(gated(), config());
    let (mut on_a, mut on_b) = (a.connect(), b.connect());
    let first = assert_accepted(&submit(&mut on_a, "/a", &[]));
    assert_accepted(&submit(&mut on_a, "/b", &[]));
    // B counts A's jobs (it reads the counts again every third of its lease).
    assert!(wait_for(|| {
        let jobs = request(&mut on_b, "GET", "/status", &[]).json()["jobs"].clone();
        jobs["queued"].as_u64().unwrap_or(0) + jobs["running"].as_u64().unwrap_or(0) == 2
    }));
    let refused = submit(&mut on_b, "/c", &[]);
    refused.assert_error(503);
    assert!(refused.header("Retry-After").is_some(), "{refused:?}");
    gate.open();
    wait_until_ended(&mut on_a, &first);
    assert!(wait_for(|| submit(&mut on_b, "/d", &[]).status == 202));
}
