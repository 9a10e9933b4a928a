//! The end of a drain as a client sees it: a request still in the pipeline when
//! `drain_timeout` (`--drain-seconds`) runs out is answered 503 with `Connection: close`
//! (a netstring client gets the netstring error), never cut off without an answer.

#[path = "http_common/mod.rs"]
mod common;

use common::{http_config, text_reply, Latch, TestServer, WAIT};
use prime_server::{Job, Pipeline};
use std::time::Duration;

/// A server whose stage holds every request until `release` opens (or [`WAIT`] passes),
/// opening `started` when it takes one; drains last 300 ms.
fn held_server(started: &Latch, release: &Latch) -> TestServer {
    let (started, release) = (started.clone(), release.clone());
    let stage = move |job: &mut Job<'_>| {
        started.open();
        release.wait(WAIT);
        text_reply(job, "late")
    };
    let mut config = http_config().with_netstring("tcp://127.0.0.1:0");
    config.drain_timeout = Duration::from_millis(300);
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
