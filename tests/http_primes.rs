//! The prime service over HTTP, through its two stages (parse, compute), and the health
//! path that needs no worker.

#[path = "http_common/mod.rs"]
mod common;

use common::{http_config, Client, TestServer};
use prime_server::{Job, Outcome, Pipeline};
use serde_json::json;

fn assert_answer(client: &mut Client, target: &str, expected: serde_json::Value) {
    let response = client.get(target);
    assert_eq!(response.status, 200, "{target}: {response:?}");
    response.assert_standard_headers();
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{response:?}"
    );
    assert_eq!(response.json(), expected, "{target}");
}

fn assert_bad(client: &mut Client, target: &str, status: u16, mentions: &str) {
    let response = client.get(target);
    response.assert_error(status);
    let error = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(mentions),
        "{target}: error {error:?} should mention {mentions:?}"
    );
    // A request the application refuses does not end the connection.
    assert!(!response.says_close(), "{response:?}");
}

#[test]
fn large_prime_is_prime() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    assert_answer(
        &mut client,
        "/is_prime?possible_prime=32416190071",
        json!({"is_prime": true, "possible_prime": 32416190071u64}),
    );
}

#[test]
fn small_numbers() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    for (n, prime) in [(0u64, false), (1, false), (2, true), (7, true), (9, false)] {
        assert_answer(
            &mut client,
            &format!("/is_prime?possible_prime={n}"),
            json!({"is_prime": prime, "possible_prime": n}),
        );
    }
}

#[test]
fn post_body_is_the_number() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    client.send("POST /is_prime HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n97");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.json(),
        json!({"is_prime": true, "possible_prime": 97})
    );
}

#[test]
fn head_is_answered_without_a_body() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    client.send("HEAD /is_prime?possible_prime=7 HTTP/1.1\r\nHost: test\r\n\r\n");
    let response = client.read_head_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_answer(
        &mut client,
        "/is_prime?possible_prime=8",
        json!({"is_prime": false, "possible_prime": 8}),
    );
}

#[test]
fn missing_parameter_is_400() {
    let server = TestServer::primes(http_config());
    assert_bad(&mut server.connect(), "/is_prime", 400, "missing");
    assert_bad(&mut server.connect(), "/is_prime?other=7", 400, "missing");
}

#[test]
fn repeated_parameter_is_400() {
    let server = TestServer::primes(http_config());
    assert_bad(
        &mut server.connect(),
        "/is_prime?possible_prime=7&possible_prime=11",
        400,
        "repeated",
    );
}

#[test]
fn empty_parameter_is_400() {
    let server = TestServer::primes(http_config());
    assert_bad(
        &mut server.connect(),
        "/is_prime?possible_prime=",
        400,
        "empty",
    );
}

#[test]
fn negative_parameter_is_400() {
    let server = TestServer::primes(http_config());
    assert_bad(
        &mut server.connect(),
        "/is_prime?possible_prime=-7",
        400,
        "negative",
    );
}

#[test]
fn non_numeric_parameter_is_400() {
    let server = TestServer::primes(http_config());
    assert_bad(
        &mut server.connect(),
        "/is_prime?possible_prime=seven",
        400,
        "whole number",
    );
}

#[test]
fn parameter_past_u64_is_400() {
    let server = TestServer::primes(http_config());
    assert_bad(
        &mut server.connect(),
        "/is_prime?possible_prime=18446744073709551616",
        400,
        "at most",
    );
}

#[test]
fn other_path_is_404() {
    let server = TestServer::primes(http_config());
    assert_bad(&mut server.connect(), "/other", 404, "/is_prime");
}

#[test]
fn delete_is_405_with_allow() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    client.send("DELETE /is_prime HTTP/1.1\r\nHost: test\r\n\r\n");
    let response = client.read_response();
    response.assert_error(405);
    let allow = response.header("Allow").expect("Allow header");
    let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    for method in ["GET", "POST"] {
        assert!(methods.contains(&method), "Allow: {allow}");
    }
    assert!(!response.says_close(), "{response:?}");
    assert_answer(
        &mut client,
        "/is_prime?possible_prime=4",
        json!({"is_prime": false, "possible_prime": 4}),
    );
}

#[test]
fn health_path_is_answered_without_any_worker() {
    // The only stage panics: any request that reached a worker would get 500.
    let stage = |_: &mut Job<'_>| -> Outcome { panic!("no worker may be touched") };
    let mut config = http_config();
    config.health_path = Some("/health".into());
    let server = TestServer::start(Pipeline::new().stage("panics", 1, stage), config);
    let mut client = server.connect();
    for target in ["/health", "/health?probe=1"] {
        let response = client.get(target);
        assert_eq!(response.status, 200, "{response:?}");
        response.assert_standard_headers();
        assert_eq!(response.json()["status"], "ok");
    }
    client.send("HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = client.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    // And the panicking stage is really there.
    client.get("/other").assert_error(500);
}

#[test]
fn prime_service_pipelines_in_order() {
    let server = TestServer::primes(http_config());
    let mut client = server.connect();
    let numbers: Vec<u64> = (1..=200).collect();
    let requests: String = numbers
        .iter()
        .map(|n| common::get(&format!("/is_prime?possible_prime={n}")))
        .collect();
    client.send(requests);
    for n in numbers {
        let response = client.read_response();
        assert_eq!(response.status, 200, "{n}: {response:?}");
        assert_eq!(response.json()["possible_prime"], n);
        let prime = n > 1 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0);
        assert_eq!(response.json()["is_prime"], prime, "{n}");
    }
}
