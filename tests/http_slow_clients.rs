//! Clients that misbehave must not hurt others: one that never reads its large
//! responses, and one that hangs up while its request is being worked on. And what is
//! bounded is what waits for a client, not what it gets over time: a slow reader that
//! keeps reading gets everything.

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

/// Asserts that `response` is the answer to `/big?bytes={bytes}`.
fn assert_big(response: &common::HttpResponse, bytes: usize, what: &str) {
    assert_eq!(response.status, 200, "{what}: {:?}", response.headers);
    assert_eq!(response.body.len(), bytes, "{what}: body length");
    assert!(
        response.body.iter().all(|&b| b == b'b'),
        "{what}: the body came back changed"
    );
}

/// Reads until the connection ends (EOF or reset), for up to [`WAIT`], pausing `pause`
/// between reads; returns whether it ended and how many bytes arrived.
fn read_until_it_ends(client: &mut common::Client, pause: Duration) -> (bool, usize) {
    let deadline = Instant::now() + WAIT;
    let mut received = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if Instant::now() > deadline {
            return (false, received);
        }
        match client.stream.read(&mut chunk) {
            Ok(0) => return (true, received),
            Ok(n) => received += n,
            Err(e) if common::is_timeout(&e) => return (false, received),
            Err(_) => return (true, received),
        }
        std::thread::sleep(pause);
    }
}

#[test]
fn a_client_that_never_reads_does_not_block_another() {
    // 12 answers of about 1 MB: more than the kernel's buffers and libzmq's queue (16
    // messages of at most 256 KiB) hold, within the default max_output_bytes (16 MiB).
    // Each is a byte longer than the one before, so the order shows.
    const BIG: usize = 1_000_000;
    const COUNT: usize = 12;
    let config = http_config();
    assert!(COUNT * (BIG + COUNT) < config.max_output_bytes);
    let server = TestServer::start(Pipeline::new().stage("sized", 2, sized_stage), config);
    let mut hog = server.connect();
    let requests: String = (0..COUNT)
        .map(|i| get(&format!("/big?bytes={}", BIG + i)))
        .collect();
    hog.send(requests);
    let mut reader = server.connect();
    for i in 0..20 {
        let response = reader.get(&format!("/small-{i}"));
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body_str(), format!("/small-{i}"));
    }
    // The server kept the hog's answers, whole and in order.
    for i in 0..COUNT {
        let response = hog.read_response();
        assert_big(&response, BIG + i, &format!("hog response {i}"));
    }
    hog.assert_open();
}

#[test]
fn a_slow_reader_that_keeps_reading_gets_more_than_max_output_bytes() {
    // 40 answers of about 1 MB, 12 asked for at a time (more than the kernel's buffers
    // and libzmq's queue hold), read 64 KiB every 2 ms: the server writes faster than
    // the client reads, so its output stalls again and again, yet what waits stays under
    // max_output_bytes, while the total is more than three times that bound.
    const BIG: usize = 1_000_000;
    const COUNT: usize = 40;
    const AHEAD: usize = 12;
    let mut config = http_config();
    config.max_output_bytes = 12 * 1024 * 1024;
    // Even with nothing taken by libzmq, the answers asked for (with their heads) fit.
    assert!(AHEAD * (BIG + COUNT + 1024) < config.max_output_bytes);
    assert!(COUNT * BIG > 3 * config.max_output_bytes);
    let server = TestServer::start(Pipeline::new().stage("sized", 2, sized_stage), config);
    let mut client = server.connect();
    client.read_pause = Some(Duration::from_millis(2));
    let ask = |client: &mut common::Client, i: usize| {
        client.send(get(&format!("/big?bytes={}", BIG + i)));
    };
    for i in 0..AHEAD {
        ask(&mut client, i);
    }
    for i in 0..COUNT {
        let response = client.read_response();
        assert_big(&response, BIG + i, &format!("response {i}"));
        if i + AHEAD < COUNT {
            ask(&mut client, i + AHEAD);
        }
    }
    client.read_pause = None;
    client.assert_open();
}

#[test]
fn an_answer_larger_than_max_output_bytes_reaches_a_client_that_reads() {
    // The bound is on what waits behind the answer being written: one answer far larger
    // than it still goes out whole, to a client that reads late, and the next one too.
    const BIG: usize = 8_000_000;
    let mut config = http_config();
    config.max_output_bytes = 64 * 1024;
    let server = TestServer::start(Pipeline::new().stage("sized", 2, sized_stage), config);
    let mut client = server.connect();
    client.send(get(&format!("/big?bytes={BIG}")));
    std::thread::sleep(Duration::from_millis(500));
    assert_big(&client.read_response(), BIG, "the large answer");
    let response = client.get(&format!("/big?bytes={}", BIG + 1));
    assert_big(&response, BIG + 1, "the second large answer");
    client.assert_open();
}

#[test]
fn a_large_answer_before_close_reaches_a_client_that_reads_late() {
    // The client asks for the close (HTTP/1.0, or HTTP/1.1 with `Connection: close`)
    // and starts reading a second later. 1 MB fits in what libzmq takes at once, so the
    // close frame follows it at once, while libzmq still holds the answer; the larger
    // answers wait in the server first, and the close follows their last bytes. Sent in
    // messages of 256 KiB, 8 MiB ends in a short one (as long as the head), 8 MiB - 10000
    // in one of nearly 256 KiB.
    let server = TestServer::start(
        Pipeline::new().stage("sized", 2, sized_stage),
        http_config(),
    );
    for (bytes, version, header) in [
        (1_000_000, "1.0", ""),
        (8_000_000, "1.0", ""),
        (8 * 1024 * 1024, "1.1", "Connection: close\r\n"),
        (8 * 1024 * 1024 - 10_000, "1.1", "Connection: close\r\n"),
    ] {
        let mut client = server.connect();
        client.send(format!(
            "GET /big?bytes={bytes} HTTP/{version}\r\nHost: test\r\n{header}\r\n"
        ));
        std::thread::sleep(Duration::from_secs(1));
        let response = client.read_response();
        assert_big(
            &response,
            bytes,
            &format!("{bytes} bytes over HTTP/{version}"),
        );
        assert!(response.says_close(), "{response:?}");
        client.assert_closed();
    }
}

#[test]
fn a_client_that_never_reads_is_dropped_past_max_output_bytes() {
    // Far more than libzmq's queue (16 messages of at most 256 KiB) and the kernel's
    // buffers can hold, so the server's own bounded buffer must overflow however answers are
    // batched.
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
    let (closed, received) = read_until_it_ends(&mut hog, Duration::from_millis(10));
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
fn a_client_that_resets_its_connection_interrupts_its_request() {
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
    // Gone for good: a reset. (A FIN would only say it has finished sending.)
    client.reset();
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
fn a_dropped_client_is_hung_up_even_when_its_queue_is_full() {
    // One worker answering every 5 ms: the answers fill the kernel's buffers, then
    // libzmq's queue (16 messages), and the server drops the client at the next answer
    // (past max_output_bytes), when libzmq refuses the close frame too: the hang-up must
    // be tried again until it goes through.
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
    let (closed, received) = read_until_it_ends(&mut hog, Duration::ZERO);
    assert!(
        closed,
        "no EOF after {received} bytes: the server never hung up"
    );
    assert!(
        received < COUNT * BIG,
        "all {received} bytes arrived: never dropped"
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    // Answers within max_output_bytes, so only the write timeout can end this: the
    // client's receive window stays shut, and the kernel aborts the connection.
    const BIG: usize = 1_000_000;
    const COUNT: usize = 14;
    let mut config = http_config();
    config.write_timeout = Duration::from_secs(1);
    assert!(COUNT * (BIG + 1024) < config.max_output_bytes);
    let server = TestServer::start(Pipeline::new().stage("sized", 2, sized_stage), config);
    let mut hog = server.connect();
    hog.send(requests_for_big(COUNT, BIG));
    // Well past the timeout, and its backed-off window probes.
    std::thread::sleep(Duration::from_secs(8));
    let (ended, received) = read_until_it_ends(&mut hog, Duration::ZERO);
    assert!(ended, "the connection is still open after {received} bytes");
    assert!(
        received < COUNT * BIG,
        "all {received} bytes arrived: never cut off"
    );
    // The server goes on serving others.
    let response = server.connect().get("/after");
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn a_client_that_never_reads_holds_no_more_than_max_output_bytes() {
    // The bound holds as answers come, not after a whole batch of them is queued: the
    // most that ever waited for the client is the bound plus at most one answer (the
    // one that took it past), however many answers arrived together from the workers.
    const BIG: usize = 512 * 1024;
    const COUNT: usize = 200;
    let mut config = http_config();
    config.max_output_bytes = 2 * 1024 * 1024;
    config.status_path = Some("/status".into());
    let bound = config.max_output_bytes;
    // Eight workers, so that answers come back in large batches.
    let server = TestServer::start(Pipeline::new().stage("sized", 8, sized_stage), config);
    let mut hog = server.connect();
    hog.send(requests_for_big(COUNT, BIG));
    // The hog never reads: it must be dropped, leaving only the connection that asks.
    assert!(
        wait_for(|| server.connect().get("/status").json()["connections"] == 1),
        "the hog was never dropped"
    );
    let stats = server.stop();
    eprintln!(
        "most bytes that waited for the hog: {}",
        stats.most_output_waiting
    );
    assert!(stats.most_output_waiting > 0, "{stats:?}");
    assert!(
        stats.most_output_waiting <= (bound + BIG) as u64,
        "{} bytes waited for the hog, more than the bound {bound} and one answer {BIG}",
        stats.most_output_waiting
    );
    drop(hog);
}
