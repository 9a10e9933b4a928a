//! Two front ends, one PostgreSQL job store: two `prime_serverd` processes (each with
//! its own pipeline) given the same `--jobs-db postgres://...`. Any front end accepts
//! a job and any answers its status, result, long-poll, event stream and cancel; a
//! change on one wakes the other's waiters; a cancel on one interrupts the other's
//! run; idempotency keys hold across them; and when one is killed with SIGKILL, the
//! other takes its jobs over once their lease lapses, losing none. A front end whose
//! database restarts connects again.

mod daemons;
#[path = "postgres/mod.rs"]
mod pg;

use daemons::*;
use prime_server::demo::primes::is_prime_miller_rabin;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const READ: Duration = Duration::from_secs(60);
/// A prime that trial division takes a while over (about 1 s in a release build).
const SLOW_PRIME: u64 = 18_446_744_073_709_551_557;

/// A `prime_serverd` with two workers per stage on `port`, its jobs in `url`, with a
/// lease of one second (renewed every third of it).
fn start_serverd(name: &str, port: u16, url: &str) -> Daemon {
    let args = args(&[
        &tcp(port),
        "2",
        "--jobs-db",
        url,
        "--jobs-lease",
        "1",
        "--status-path",
        "/status",
    ]);
    let mut daemon = Daemon::start_with_log_level(name, SERVERD, &args, "info");
    assert!(
        daemon.wait_for_log("listening for Http on", READ),
        "{name} did not start: {}",
        daemon.stderr()
    );
    daemon
}

/// Sends a request and reads its answer on a new connection.
fn call(port: u16, method: &str, target: &str, headers: &[&str]) -> Response {
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request(method, target, headers)
        .expect("send a request");
    client.read_response(READ).expect("an answer")
}

/// A job's state as front end `port` reads it.
fn state(port: u16, location: &str) -> String {
    call(port, "GET", location, &[]).json()["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The whole of an HTTP/1.0 event stream (the server closes it after the job's last
/// state): its body.
fn event_stream(port: u16, location: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(READ)).expect("a timeout");
    write!(stream, "GET {location}/events HTTP/1.0\r\n\r\n").expect("send");
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the stream to its end");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.to_string()
}

#[test]
fn a_job_accepted_by_one_front_end_is_read_woken_and_cancelled_on_the_other() {
    let postgres = pg::Postgres::start();
    let url = postgres.url();
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = start_serverd("serverd-a", port_a, &url);
    let mut b = start_serverd("serverd-b", port_b, &url);

    // Accepted on A; B reads it, and B's long-poll and event stream are woken by its
    // end on A.
    let n = 1_000_000_007;
    let location = location_of(&call(
        port_a,
        "GET",
        &is_prime(n),
        &["Prefer: respond-async"],
    ));
    let status = call(port_b, "GET", &location, &[]);
    assert!(matches!(status.status, 200 | 303), "{status:?}");
    let ended = wait_until_ended(port_b, &location);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let result = call(port_b, "GET", &format!("{location}/result"), &[]);
    assert_eq!(result.status, 200, "{result:?}");
    assert_eq!(result.possible_prime(), Some(n));
    assert_eq!(result.json()["is_prime"], true);

    let slow = location_of(&call(
        port_a,
        "GET",
        &is_prime(SLOW_PRIME),
        &["Prefer: respond-async"],
    ));
    let events = std::thread::spawn({
        let slow = slow.clone();
        move || event_stream(port_b, &slow)
    });
    let mut poller = Client::connect(port_b).expect("connect");
    poller
        .send_request("GET", &format!("{slow}?wait=60"), &[])
        .expect("a long-poll");
    assert!(
        poll_until(READ, || (state(port_b, &slow) == "running").then_some(())).is_some(),
        "the job never ran"
    );

    // Cancelled on B: A hears it and interrupts the run it dispatched.
    let cancelled = call(port_b, "DELETE", &slow, &[]);
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.json()["state"], "cancelled");
    assert!(
        a.wait_for_log("ended by another front end; its run is interrupted", READ),
        "A did not interrupt the cancelled run: {}",
        a.stderr()
    );
    assert_eq!(state(port_a, &slow), "cancelled");
    let woken = poller.read_response(READ).expect("the long-poll's answer");
    assert_eq!(woken.status, 200, "{woken:?}");
    assert_eq!(woken.json()["state"], "cancelled");
    let stream = events.join().expect("the event stream");
    assert!(stream.contains("\"state\":\"cancelled\""), "{stream}");
    assert!(stream.contains("event: state"), "{stream}");

    // One idempotency key, one job, whichever front end is asked.
    let key = "Idempotency-Key: shared-1";
    let first = location_of(&call(
        port_a,
        "GET",
        &is_prime(97),
        &["Prefer: respond-async", key],
    ));
    let again = location_of(&call(
        port_b,
        "GET",
        &is_prime(97),
        &["Prefer: respond-async", key],
    ));
    assert_eq!(first, again);
    let other = call(
        port_b,
        "GET",
        &is_prime(89),
        &["Prefer: respond-async", key],
    );
    assert_eq!(other.status, 422, "{other:?}");

    for daemon in [&mut a, &mut b] {
        daemon.signal("TERM");
        assert!(daemon.wait_exit(Duration::from_secs(30)).is_some());
    }
}

/// Numbers whose trial division takes a few milliseconds each: hundreds of them keep
/// two workers busy for a while, so many are unfinished when A dies.
const FIRST: u64 = 10_000_000_000_000;
const JOBS: u64 = 400;

#[test]
fn kill_9_of_one_front_end_loses_none_of_its_jobs_and_the_other_serves_on() {
    let postgres = pg::Postgres::start();
    let url = postgres.url();
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = start_serverd("serverd-a", port_a, &url);
    let mut b = start_serverd("serverd-b", port_b, &url);

    // B's synchronous clients, all through A's death.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let synchronous = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut client = Client::connect(port_b).expect("connect");
            let mut answered = 0u32;
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let response = client.get(&is_prime(7919), READ).expect("an answer");
                assert_eq!(response.status, 200, "{response:?}");
                assert_eq!(response.json()["is_prime"], true);
                answered += 1;
            }
            answered
        }
    });

    let mut client = Client::connect(port_a).expect("connect");
    for n in FIRST..FIRST + JOBS {
        client
            .send_request("GET", &is_prime(n), &["Prefer: respond-async"])
            .expect("send");
    }
    let locations: Vec<String> = (0..JOBS)
        .map(|_| location_of(&client.read_response(READ).expect("a 202")))
        .collect();
    a.kill9();
    a.wait_exit(Duration::from_secs(10));
    let unfinished =
        postgres.query("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')");
    let unfinished: u64 = unfinished[0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("a count");
    assert!(
        unfinished > 0,
        "every job had ended when A died: the test tested nothing"
    );

    for (i, location) in locations.iter().enumerate() {
        let n = FIRST + i as u64;
        let status = wait_until_ended(port_b, location);
        assert_eq!(status["state"], "succeeded", "{location}: {status}");
        assert!(
            status["attempts"].as_u64().is_some_and(|a| a >= 1),
            "{status}"
        );
        let result = call(port_b, "GET", &format!("{location}/result"), &[]);
        assert_eq!(result.status, 200, "{result:?}");
        assert_eq!(result.possible_prime(), Some(n));
        assert_eq!(
            result.json()["is_prime"],
            is_prime_miller_rabin(n),
            "{result:?}"
        );
    }
    assert!(
        b.stderr()
            .contains("taken over from front ends whose lease lapsed"),
        "{}",
        b.stderr()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = synchronous.join().expect("the synchronous client");
    assert!(answered > 0);
    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(30)).is_some());
}

#[test]
fn a_front_end_connects_again_after_the_database_restarts() {
    let mut postgres = pg::Postgres::start();
    let port = free_port();
    let mut a = start_serverd("serverd-a", port, &postgres.url());
    let before = location_of(&call(
        port,
        "GET",
        &is_prime(97),
        &["Prefer: respond-async"],
    ));
    assert_eq!(wait_until_ended(port, &before)["state"], "succeeded");

    postgres.restart();
    // The batch that finds the connection cut is refused (503); the next connects.
    let accepted = poll_until(READ, || {
        let response = call(port, "GET", &is_prime(89), &["Prefer: respond-async"]);
        match response.status {
            202 => Some(response),
            503 => None,
            _ => panic!("{response:?}"),
        }
    })
    .expect("no job accepted after the database restarted");
    let after = location_of(&accepted);
    assert_eq!(wait_until_ended(port, &after)["state"], "succeeded");
    assert_eq!(state(port, &before), "succeeded");
    assert!(
        a.stderr().contains("connected to the job database again"),
        "{}",
        a.stderr()
    );
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(30)).is_some());
}

/// `prime_serverd --front-ends 2` with a PostgreSQL store: two front-end threads of
/// one process on one port, each a front end of the store with its own lease. Jobs
/// submitted on connections the kernel spread over both are all read back, finished
/// and right, on connections spread the same way (so most reads of one front end's
/// jobs land on either).
#[test]
fn front_end_threads_of_one_process_share_a_postgresql_store() {
    let postgres = pg::Postgres::start();
    let url = postgres.url();
    let port = free_port();
    let args = args(&[
        "--front-ends",
        "2",
        &tcp(port),
        "1",
        "--jobs-db",
        &url,
        "--status-path",
        "/status",
    ]);
    let mut serverd = Daemon::start_with_log_level("serverd-threads", SERVERD, &args, "info");
    assert!(
        serverd.wait_for_log("listening for Http on", READ),
        "did not start: {}",
        serverd.stderr()
    );

    const COUNT: u64 = 24;
    let locations: Vec<String> = (0..COUNT)
        .map(|i| {
            let accepted = call(
                port,
                "GET",
                &is_prime(FIRST + i),
                &["Prefer: respond-async"],
            );
            assert_eq!(accepted.status, 202, "{accepted:?}");
            location_of(&accepted)
        })
        .collect();
    for (i, location) in locations.iter().enumerate() {
        let n = FIRST + i as u64;
        let status = wait_until_ended(port, location);
        assert_eq!(status["state"], "succeeded", "{location}: {status}");
        let result = call(port, "GET", &format!("{location}/result"), &[]);
        assert_eq!(result.status, 200, "{result:?}");
        assert_eq!(result.possible_prime(), Some(n));
        assert_eq!(result.json()["is_prime"], is_prime_miller_rabin(n));
    }
    let front_ends = postgres.query("SELECT count(*) FROM front_ends");
    assert_eq!(
        front_ends[0].as_deref(),
        Some("2"),
        "the two threads are not two front ends of the store"
    );
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}
