//! A client that closes its socket after sending a request sends the same FIN as one
//! that only half-closes (`nc -N`): both must be right. The one that only half-closed
//! gets its answers (after interim `102 Processing` answers, for HTTP/1.1); the one
//! that has gone has its work interrupted: at once for HTTP/1.1 (the `102` is answered
//! with a reset), after `half_closed_timeout` for HTTP/1.0. A long-poll whose client
//! closes is forgotten.

#[path = "http_common/mod.rs"]
mod common;

use common::{http_config, request, request_of, text_reply, Latch, TestServer, WAIT};
use crossbeam_channel::{Receiver, Sender};
use prime_server::jobs::JobsConfig;
use prime_server::{Job, Outcome, Pipeline};
use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// How a `/long` request's work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `job.interrupted()` said so.
    Interrupted,
    /// The test's latch opened: the stage answers.
    Released,
    /// Neither, within [`WAIT`].
    RanOut,
}

/// One worker: `/long` reports its start, then waits (polling `job.interrupted()`) for
/// `release` and reports how it ended; it answers `done` if released. Anything else is
/// answered with its path.
fn long_pipeline(release: Latch) -> (Pipeline, Receiver<()>, Receiver<End>) {
    let (started_tx, started) = crossbeam_channel::unbounded::<()>();
    let (ended_tx, ended): (Sender<End>, _) = crossbeam_channel::unbounded();
    let work = move |job: &mut Job<'_>| {
        let request = request_of(job);
        if request.path != "/long" {
            return text_reply(job, request.path);
        }
        let _ = started_tx.send(());
        let give_up = Instant::now() + WAIT;
        let end = loop {
            if job.interrupted() {
                break End::Interrupted;
            }
            if release.is_open() {
                break End::Released;
            }
            if Instant::now() >= give_up {
                break End::RanOut;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let _ = ended_tx.send(end);
        match end {
            End::Released => text_reply(job, "done"),
            _ => Outcome::Abandon,
        }
    };
    (Pipeline::new().stage("long", 1, work), started, ended)
}

fn expect<T>(events: &Receiver<T>, what: &str) -> T {
    events
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

#[test]
fn a_client_that_closes_its_socket_has_its_work_interrupted() {
    let release = Latch::default();
    let (pipeline, started, ended) = long_pipeline(release.clone());
    let mut config = http_config();
    config.half_closed_probe = Duration::from_millis(100);
    let server = TestServer::start(pipeline, config);

    let mut client = server.connect();
    client.send("GET /long HTTP/1.1\r\nHost: test\r\n\r\n");
    expect(&started, "the long request starts");
    // A plain close: a FIN, as from a client that half-closes.
    drop(client);
    assert_eq!(expect(&ended, "the long request ends"), End::Interrupted);

    // The worker is free again.
    let mut next = server.connect();
    assert_eq!(next.get("/next").body_str(), "/next");
    release.open();
}

#[test]
fn a_half_closed_client_gets_interim_answers_then_its_answer() {
    let release = Latch::default();
    let (pipeline, started, ended) = long_pipeline(release.clone());
    let mut config = http_config();
    config.half_closed_probe = Duration::from_millis(100);
    let server = TestServer::start(pipeline, config);

    let mut client = server.connect();
    client
        .send("GET /quick HTTP/1.1\r\nHost: test\r\n\r\nGET /long HTTP/1.1\r\nHost: test\r\n\r\n");
    expect(&started, "the long request starts");
    client.stream.shutdown(Shutdown::Write).expect("half-close");
    let quick = client.read_response();
    assert_eq!(quick.status, 200);
    assert_eq!(quick.body_str(), "/quick");
    // The probes come only where no answer is under way, each a whole 1xx.
    let processing = client.read_response();
    assert_eq!(processing.status, 102, "{processing:?}");
    assert!(processing.body.is_empty());
    release.open();
    assert_eq!(expect(&ended, "the long request ends"), End::Released);
    let answer = loop {
        let response = client.read_response();
        if response.status != 102 {
            break response;
        }
    };
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body_str(), "done");
    client.assert_closed();
}

#[test]
fn an_http_1_0_half_closed_client_is_taken_as_gone_after_the_timeout() {
    let release = Latch::default();
    let (pipeline, started, ended) = long_pipeline(release.clone());
    let mut config = http_config();
    config.half_closed_timeout = Duration::from_millis(300);
    config.status_path = Some("/status".into());
    let server = TestServer::start(pipeline, config);

    let mut client = server.connect();
    client.send("GET /long HTTP/1.0\r\n\r\n");
    expect(&started, "the long request starts");
    client.stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(expect(&ended, "the long request ends"), End::Interrupted);
    // No interim answer is allowed to HTTP/1.0: the connection closes without one.
    client.assert_closed();
    let mut status = server.connect();
    let document = status.get("/status").json();
    assert_eq!(document["half_closed_gone"], 1, "{document}");
    release.open();
}

#[test]
fn a_long_poll_whose_client_closes_is_forgotten() {
    let release = Latch::default();
    let (pipeline, started, _ended) = long_pipeline(release.clone());
    let dir = common::scratch_dir("half_close", "long_poll");
    let mut config = http_config();
    config.jobs = Some(JobsConfig::new(dir.join("jobs.sqlite")));
    config.status_path = Some("/status".into());
    config.half_closed_probe = Duration::from_millis(100);
    let server = TestServer::start(pipeline, config);

    let mut status = server.connect();
    let accepted = request(&mut status, "GET", "/long", &["Prefer: respond-async"]);
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let location = accepted.header("Location").expect("a Location").to_string();
    expect(&started, "the job runs");

    let mut poller = server.connect();
    poller.send(format!(
        "GET {location}?wait=30 HTTP/1.1\r\nHost: test\r\n\r\n"
    ));
    poller.stream.flush().expect("flush");
    let connections =
        |status: &mut common::Client| status.get("/status").json()["connections"].clone();
    assert!(
        common::wait_for(|| connections(&mut status) == 2),
        "the long-poll's connection is not seen"
    );
    drop(poller);
    // Forgotten well before its wait of 30 s ends (the bound here is shorter).
    assert!(
        common::wait_for(|| connections(&mut status) == 1),
        "the closed long-poll is still held"
    );
    release.open();
}
