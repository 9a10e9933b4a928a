//! Pipelining: responses leave in request order, however the pipeline finishes them.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, request_of, text_reply, Latch, TestServer, WAIT};
use prime_server::{Job, Pipeline};
use std::time::Duration;

/// A stage that answers `/slow` only after `/fast` was answered, so the two finish out of
/// order in the pipeline whatever the machine's load.
fn out_of_order_pipeline(fast_done: Latch) -> Pipeline {
    let stage = move |job: &mut Job<'_>| {
        let request = request_of(job);
        if request.path == "/slow" {
            let opened = fast_done.wait(WAIT);
            // Give the fast answer time to reach the front end first.
            std::thread::sleep(Duration::from_millis(200));
            text_reply(
                job,
                if opened {
                    "slow"
                } else {
                    "slow (fast never came)"
                },
            )
        } else {
            let outcome = text_reply(job, request.path.trim_start_matches('/').to_string());
            fast_done.open();
            outcome
        }
    };
    Pipeline::new().stage("order", 2, stage)
}

#[test]
fn responses_are_in_request_order_when_a_later_request_finishes_first() {
    let fast_done = Latch::default();
    let server = TestServer::start(out_of_order_pipeline(fast_done.clone()), http_config());
    let mut client = server.connect();
    client.send(format!("{}{}", get("/slow"), get("/fast")));
    let first = client.read_response();
    let second = client.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body_str(), "slow");
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.body_str(), "fast");
    assert!(fast_done.is_open());
    client.assert_open();
}

#[test]
fn front_end_answers_wait_for_earlier_worker_answers() {
    // The health check is answered by the front end at once, but it was asked second.
    let fast_done = Latch::default();
    let mut config = http_config();
    config.health_path = Some("/health".into());
    let server = TestServer::start(out_of_order_pipeline(fast_done.clone()), config);
    let mut client = server.connect();
    client.send(format!(
        "{}{}{}",
        get("/slow"),
        get("/health"),
        get("/fast")
    ));
    let first = client.read_response();
    assert_eq!(first.body_str(), "slow", "{first:?}");
    let second = client.read_response();
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.json()["status"], "ok");
    let third = client.read_response();
    assert_eq!(third.body_str(), "fast", "{third:?}");
}

#[test]
fn five_hundred_pipelined_requests_in_one_write_are_answered_in_order() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    let requests: String = (0..500).map(|i| get(&format!("/n?i={i}"))).collect();
    client.send(requests);
    for i in 0..500 {
        let response = client.read_response();
        assert_eq!(response.status, 200, "response {i}: {response:?}");
        assert_eq!(
            response.json()["target"],
            format!("/n?i={i}"),
            "response {i}"
        );
    }
    client.assert_open();
}

#[test]
fn too_many_unanswered_requests_on_one_connection_is_503_and_close() {
    let release = Latch::default();
    let gate = release.clone();
    let stage = move |job: &mut Job<'_>| {
        gate.wait(WAIT);
        text_reply(job, request_of(job).path)
    };
    let mut config = http_config();
    config.max_pipelined = 2;
    let server = TestServer::start(Pipeline::new().stage("gate", 2, stage), config);
    let mut client = server.connect();
    client.send(format!(
        "{}{}{}{}",
        get("/1"),
        get("/2"),
        get("/3"),
        get("/4")
    ));
    // Nothing can be written before the first two are answered; then they come first.
    release.open();
    for path in ["/1", "/2"] {
        let response = client.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body_str(), path);
    }
    let refused = client.read_response();
    refused.assert_error(503);
    assert!(refused.says_close(), "{refused:?}");
    client.assert_closed();
}
