//! Protocol features: `Expect: 100-continue`, HEAD, empty lines before a request and
//! absolute-form targets.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, TestServer};
use std::time::Duration;

#[test]
fn expect_100_continue_gets_100_before_the_body_then_the_response() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(
        "POST /upload HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(interim.version, "HTTP/1.1");
    assert_eq!(interim.reason, "Continue");
    assert!(interim.headers.is_empty(), "{interim:?}");
    client.send("hello");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["body_length"], 5);
    client.assert_open();
}

#[test]
fn expect_100_continue_with_the_body_already_sent_gets_only_the_response() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(
        "POST /upload HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    );
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["body_length"], 5);
    client.assert_open();
}

#[test]
fn expect_100_continue_is_not_answered_for_http_1_0() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("POST /upload HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    client.assert_silent_for(Duration::from_millis(500));
    client.send("hello");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.version, "HTTP/1.0");
    assert_eq!(response.json()["body_length"], 5);
}

#[test]
fn head_gets_headers_only() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("HEAD /x HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = client.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    head.assert_standard_headers();
    let length: usize = head
        .header("Content-Length")
        .and_then(|l| l.parse().ok())
        .expect("Content-Length");
    assert!(length > 0, "the matching GET has a body");
    // Had the body been sent, it would be read here instead of the next status line.
    client.send(get("/after-head"));
    let next = client.read_response();
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.json()["target"], "/after-head");
}

#[test]
fn head_pipelined_before_get_gets_no_body() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(format!(
        "HEAD /x HTTP/1.1\r\nHost: test\r\n\r\n{}",
        get("/after-head")
    ));
    let head = client.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    let next = client.read_response();
    assert_eq!(next.json()["target"], "/after-head", "{next:?}");
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(format!("\r\n{}", get("/after-crlf")));
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["target"], "/after-crlf");
    // Also between pipelined requests, as some clients send after a POST body.
    client.send(format!("\r\n\r\n{}", get("/second")));
    let response = client.read_response();
    assert_eq!(response.json()["target"], "/second");
}

#[test]
fn absolute_form_target_works() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    let response = client.get("http://127.0.0.1/is_prime?possible_prime=7");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.json(),
        serde_json::json!({"possible_prime": 7, "is_prime": true})
    );
}

#[test]
fn methods_are_passed_through_to_the_stage() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE"] {
        client.send(format!("{method} /m HTTP/1.1\r\nHost: test\r\n\r\n"));
        let response = client.read_response();
        assert_eq!(response.status, 200, "{method}: {response:?}");
        assert_eq!(response.json()["method"], method);
    }
}

/// Sends `requests` in one write, then half-closes (FIN on the write side), like
/// `printf '...' | nc -N host port`; returns the client to read the answers.
fn send_then_half_close(server: &TestServer, requests: &str) -> common::Client {
    let mut client = server.connect();
    client.send(requests);
    client
        .stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    client
}

#[test]
fn client_that_half_closes_after_its_request_still_gets_the_response() {
    // HTTP/1.0: the connection closes after the answer anyway.
    let server = TestServer::echo(http_config());
    let mut client = send_then_half_close(&server, "GET /half HTTP/1.0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["target"], "/half");
    client.assert_closed();
}

#[test]
fn a_keep_alive_request_then_a_half_close_is_answered_then_closed() {
    // HTTP/1.1 keep-alive: the FIN, not the request, says no more will come.
    let server = TestServer::primes(http_config());
    let mut client = send_then_half_close(&server, &get("/is_prime?possible_prime=97"));
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["is_prime"], true);
    client.assert_closed();
}

#[test]
fn three_pipelined_requests_then_a_half_close_are_all_answered_in_order() {
    let server = TestServer::echo(http_config());
    let requests: String = ["/one", "/two", "/three"].iter().map(|p| get(p)).collect();
    let mut client = send_then_half_close(&server, &requests);
    for target in ["/one", "/two", "/three"] {
        let response = client.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.json()["target"], target);
    }
    client.assert_closed();
    // A half-closed connection with nothing to answer is closed at once.
    let mut idle = send_then_half_close(&server, "");
    idle.assert_closed();
}
