//! Timeouts: slow request heads (408), slow pipelines (504, with an interrupt for the
//! stage) and idle keep-alive connections.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, request_of, text_reply, wait_for, Latch, TestServer, WAIT};
use prime_server::server::ServerConfig;
use prime_server::{Job, Outcome, Pipeline};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn half_a_head_then_silence_is_408_and_close() {
    let mut config = http_config();
    config.header_timeout = Duration::from_secs(1);
    let server = TestServer::echo(config);
    let mut client = server.connect();
    client.send("GET /slow-client HTTP/1.1\r\nHost: te");
    let response = client.read_response();
    response.assert_error(408);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn body_that_stops_arriving_is_408_and_close() {
    let mut config = http_config();
    config.header_timeout = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(1);
    let server = TestServer::echo(config);
    let mut client = server.connect();
    client.send("POST /slow-body HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhalf");
    let response = client.read_response();
    response.assert_error(408);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

/// A stage for `/sleepy` that works until `job.interrupted()` (bounded by [`WAIT`]),
/// records that it saw the interrupt, then does `after`; other paths answer at once.
fn sleepy_stage(
    seen: Arc<AtomicBool>,
    after: impl Fn(&mut Job<'_>) -> Outcome + Clone + Send + 'static,
) -> impl FnMut(&mut Job<'_>) -> Outcome + Clone + Send + 'static {
    move |job: &mut Job<'_>| {
        if request_of(job).path != "/sleepy" {
            return text_reply(job, "quick");
        }
        let give_up = Instant::now() + WAIT;
        while !job.interrupted() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.store(job.interrupted(), Ordering::SeqCst);
        after(job)
    }
}

fn one_second_deadline() -> ServerConfig {
    let mut config = http_config();
    config.request_timeout = Duration::from_secs(1);
    config
}

#[test]
fn stage_past_the_request_timeout_gets_504_and_is_interrupted() {
    let interrupted = Arc::new(AtomicBool::new(false));
    // Like the prime service's compute stage: an interrupted job is abandoned.
    let stage = sleepy_stage(interrupted.clone(), |_| Outcome::Abandon);
    let server = TestServer::start(
        Pipeline::new().stage("sleepy", 2, stage),
        one_second_deadline(),
    );
    let mut client = server.connect();
    let response = client.get("/sleepy");
    response.assert_error(504);
    // A pipeline failure keeps the client's keep-alive choice.
    assert!(!response.says_close(), "{response:?}");
    assert!(
        wait_for(|| interrupted.load(Ordering::SeqCst)),
        "the stage never saw job.interrupted()"
    );
    let next = client.get("/quick");
    assert_eq!(next.body_str(), "quick", "{next:?}");
}

#[test]
fn answer_arriving_after_the_deadline_is_504() {
    // The stage notices the deadline (as workers do, by the envelope) and answers anyway,
    // a little later: that answer is too late for the client, whenever the front end's
    // own timeout sweep runs.
    let interrupted = Arc::new(AtomicBool::new(false));
    let stage = sleepy_stage(interrupted.clone(), |job| {
        std::thread::sleep(Duration::from_millis(50));
        text_reply(job, "too late")
    });
    let server = TestServer::start(
        Pipeline::new().stage("sleepy", 2, stage),
        one_second_deadline(),
    );
    let mut client = server.connect();
    for _ in 0..3 {
        let response = client.get("/sleepy");
        response.assert_error(504);
    }
    assert!(wait_for(|| interrupted.load(Ordering::SeqCst)));
}

#[test]
fn late_answer_after_the_504_is_dropped() {
    let sent_504 = Latch::default();
    let gate = sent_504.clone();
    let stage = sleepy_stage(Arc::default(), move |job| {
        // Answer only once the client has its 504.
        gate.wait(WAIT);
        text_reply(job, "too late")
    });
    let server = TestServer::start(
        Pipeline::new().stage("sleepy", 2, stage),
        one_second_deadline(),
    );
    let mut client = server.connect();
    let response = client.get("/sleepy");
    response.assert_error(504);
    sent_504.open();
    let next = client.get("/quick");
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.body_str(), "quick");
    client.assert_silent_for(Duration::from_millis(300));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let mut config = http_config();
    config.idle_timeout = Duration::from_secs(1);
    let server = TestServer::echo(config);
    let mut client = server.connect();
    let response = client.get("/once");
    assert_eq!(response.status, 200, "{response:?}");
    client.assert_closed();
}

#[test]
fn connection_without_any_request_is_closed_after_idle_timeout() {
    let mut config = http_config();
    config.idle_timeout = Duration::from_secs(1);
    let server = TestServer::echo(config);
    let mut client = server.connect();
    client.assert_closed();
}

#[test]
fn idle_time_counts_from_the_last_response_not_the_last_request() {
    // The stage takes longer than the idle timeout; the connection was busy all along,
    // so a request sent soon after the response must still be served.
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let stage = move |job: &mut Job<'_>| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_secs(4));
        }
        text_reply(job, request_of(job).path)
    };
    let mut config = http_config();
    config.idle_timeout = Duration::from_secs(3);
    let server = TestServer::start(Pipeline::new().stage("slow", 1, stage), config);
    let mut client = server.connect();
    let first = client.get("/first");
    assert_eq!(first.body_str(), "/first", "{first:?}");
    std::thread::sleep(Duration::from_millis(500));
    client.send(get("/second"));
    let second = client.read_response();
    assert_eq!(second.body_str(), "/second", "{second:?}");
}
