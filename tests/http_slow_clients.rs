//! Clients that misbehave must not hurt others: one that never reads its large
//! responses, and one that hangs up while its request is being worked on.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, request_of, text_reply, wait_for, Latch, TestServer, WAIT};
use prime_server::{Job, Pipeline};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers `/big?bytes=N` with N bytes and anything else with its path.
fn sized_stage(job: &mut Job<'_>) -> prime_server::Outcome {
    let request = request_of(job);
    if request.path == "/big" {
        let size: usize = request
            .query_values("bytes")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return text_reply(job, vec![b'b'; size]);
    }
    text_reply(job, request.path)
}

fn requests_for_big(count: usize, bytes: usize) -> String {
    (0..count)
        .map(|_| get(&format!("/big?bytes={bytes}")))
        .collect()
}

#[test]
fn a_client_that_never_reads_does_not_block_another() {
    const BIG: usize = 1_000_000;
    const COUNT: usize = 40;
    let server = TestServer::start(
        Pipeline::new().stage("sized", 2, sized_stage),
        http_config(),
    );
    let mut hog = server.connect();
    hog.send(requests_for_big(COUNT, BIG));
    let mut reader = server.connect();
    for i in 0..20 {
        let response = reader.get(&format!("/small-{i}"));
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body_str(), format!("/small-{i}"));
    }
    // The server kept the hog's answers (they fit in max_output_bytes) and in order.
    for i in 0..COUNT {
        let response = hog.read_response();
        assert_eq!(
            response.status, 200,
            "hog response {i}: {:?}",
            response.headers
        );
        assert_eq!(response.body.len(), BIG, "hog response {i}");
    }
    hog.assert_open();
}

#[test]
#[ignore = "bug: each flush hands libzmq one message of any size, so when answers are batched its 64-message queue holds hundreds of MB and max_output_bytes is never reached (and see a_dropped_client_is_hung_up_even_when_its_queue_is_full)"]
fn a_client_that_never_reads_is_dropped_past_max_output_bytes() {
    // Far more than libzmq's queue (64 messages) and the kernel's buffers can hold, so
    // the server's own bounded buffer must overflow however answers are batched.
    const BIG: usize = 256 * 1024;
    const COUNT: usize = 1000;
    let mut config = http_config();
    config.max_output_bytes = 64 * 1024;
    let server = TestServer::start(Pipeline::new().stage("sized", 2, sized_stage), config);
    let mut hog = server.connect();
    hog.send(requests_for_big(COUNT, BIG));
    // Others are served meanwhile.
    let mut reader = server.connect();
    for i in 0..10 {
        let response = reader.get(&format!("/small-{i}"));
        assert_eq!(response.status, 200, "{response:?}");
    }
    // Now the hog reads, but far slower than the server produces: the connection must
    // end (EOF or reset) before all the answers arrive.
    let deadline = Instant::now() + WAIT;
    let mut received = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    let closed = loop {
        if Instant::now() > deadline {
            break false;
        }
        match hog.stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(e) if common::is_timeout(&e) => break false,
            Err(_) => break true,
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        closed,
        "the hog's connection stayed open ({received} bytes read)"
    );
    assert!(
        received < COUNT * BIG,
        "the hog got all {received} bytes: it was never dropped"
    );
    server.connect().assert_open();
}

#[test]
fn a_client_that_hangs_up_interrupts_its_request() {
    let started = Latch::default();
    let interrupted = Arc::new(AtomicBool::new(false));
    let (start, seen) = (started.clone(), interrupted.clone());
    let stage = move |job: &mut Job<'_>| {
        if request_of(job).path != "/slow" {
            return text_reply(job, "fast");
        }
        start.open();
        let give_up = Instant::now() + WAIT;
        while !job.interrupted() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.store(job.interrupted(), Ordering::SeqCst);
        text_reply(job, "slow")
    };
    let mut config = http_config();
    // Far beyond the test's waits: only the hang-up can interrupt the stage.
    config.request_timeout = Duration::from_secs(600);
    let server = TestServer::start(Pipeline::new().stage("slow", 2, stage), config);
    let mut client = server.connect();
    client.send(get("/slow"));
    assert!(started.wait(WAIT), "the stage never got the request");
    drop(client);
    assert!(
        wait_for(|| interrupted.load(Ordering::SeqCst)),
        "the stage never saw job.interrupted() after the client left"
    );
    let mut other = server.connect();
    let response = other.get("/fast");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body_str(), "fast");
}

#[test]
#[ignore = "bug: close() cannot hang up a peer whose libzmq queue is full (the routing-id send fails with EAGAIN and is only logged), so a dropped non-reader keeps its TCP connection and never sees EOF"]
fn a_dropped_client_is_hung_up_even_when_its_queue_is_full() {
    // One worker answering every 5 ms: each 64 KiB answer is flushed as its own
    // message, so libzmq's 64-message queue fills (after the kernel's buffers) and the
    // server drops the client at the next answer.
    const BIG: usize = 64 * 1024;
    const COUNT: usize = 400;
    let stage = |job: &mut Job<'_>| {
        std::thread::sleep(Duration::from_millis(5));
        sized_stage(job)
    };
    let mut config = http_config();
    config.max_output_bytes = BIG;
    let server = TestServer::start(Pipeline::new().stage("paced", 1, stage), config);
    let mut hog = server.connect();
    hog.send(requests_for_big(COUNT, BIG));
    // Long enough for the answers to fill every buffer (COUNT * 5 ms of work).
    std::thread::sleep(Duration::from_secs(4));
    let mut received = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    let closed = loop {
        match hog.stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(e) if common::is_timeout(&e) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        closed,
        "no EOF after {received} bytes: the server never hung up"
    );
    assert!(
        received < COUNT * BIG,
        "all {received} bytes arrived: never dropped"
    );
}
