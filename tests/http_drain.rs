//! A drain as a client sees it: new connections are refused while the open ones are
//! still answered; a request still in the pipeline when `drain_timeout`
//! (`--drain-seconds`) runs out is answered 503 with `Connection: close` (a netstring
//! client gets the netstring error), never cut off without an answer.

#[path = "http_common/mod.rs"]
mod common;

use common::{http_config, text_reply, wait_for, Latch, TestServer, WAIT};
use prime_server::{Job, Pipeline};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

/// A server whose stage holds every request until `release` opens (or [`WAIT`] passes),
/// opening `started` when it takes one; drains last 300 ms.
fn held_server(started: &Latch, release: &Latch) -> TestServer {
    held_server_draining_for(started, release, Duration::from_millis(300))
}

/// [`held_server`] with drains of `drain_timeout`.
fn held_server_draining_for(
    started: &Latch,
    release: &Latch,
    drain_timeout: Duration,
) -> TestServer {
    let (started, release) = (started.clone(), release.clone());
    let stage = move |job: &mut Job<'_>| {
        started.open();
        release.wait(WAIT);
        text_reply(job, "late")
    };
    let mut config = http_config().with_netstring("tcp://127.0.0.1:0");
    config.drain_timeout = drain_timeout;
    TestServer::start(Pipeline::new().stage("held", 2, stage), config)
}

#[test]
fn requests_unfinished_at_the_drain_deadline_get_503_and_close() {
    let (started, release) = (Latch::default(), Latch::default());
    let server = held_server(&started, &release);
    let mut client = server.connect();
    client.send("GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(started.wait(WAIT), "the request never reached the stage");
    server.drain();
    let response = client.read_response();
    response.assert_error(503);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
    release.open();
}

#[test]
fn a_netstring_unfinished_at_the_drain_deadline_gets_the_error() {
    let (started, release) = (Latch::default(), Latch::default());
    let server = held_server(&started, &release);
    let mut client = common::Client::connect(server.addr_of(1));
    client.send("4:held,");
    assert!(started.wait(WAIT), "the request never reached the stage");
    server.drain();
    let payload = client.read_netstring();
    let error: serde_json::Value = serde_json::from_slice(&payload).expect("JSON error");
    assert_eq!(error["status"], 503, "{error}");
    client.assert_closed();
    release.open();
}

/// Whether a new connection is refused (`ECONNREFUSED`). A server that accepts and then
/// closes it (with a FIN or a reset) has not refused it.
fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, WAIT),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

#[test]
fn a_drain_refuses_new_connections_and_still_answers_open_ones() {
    let (started, release) = (Latch::default(), Latch::default());
    let server = held_server_draining_for(&started, &release, WAIT * 3);
    let mut client = server.connect();
    client.send("GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(started.wait(WAIT), "the request never reached the stage");
    server.drain();

    // The front end starts its drain at its next turn; from then on, refusals (a
    // connection made just before may be accepted and closed, or reset in the backlog).
    assert!(
        wait_for(|| refused(server.addr())),
        "new connections were still accepted during the drain"
    );
    for _ in 0..3 {
        assert!(
            refused(server.addr()),
            "a new connection was accepted during the drain"
        );
    }

    // The open keep-alive connection gets its answer.
    release.open();
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body_str(), "late");
    server.stop();
}
