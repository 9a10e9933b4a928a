//! The netstring listener next to the HTTP one, serving the prime pipeline.

#[path = "http_common/mod.rs"]
mod common;

use common::{http_config, Client, TestServer};
use serde_json::json;

fn netstring_server(max_bytes: usize) -> TestServer {
    let mut config = http_config().with_netstring("tcp://127.0.0.1:0");
    config.max_netstring_bytes = max_bytes;
    TestServer::primes(config)
}

fn connect(server: &TestServer) -> Client {
    Client::connect(server.addr_of(1))
}

fn json_of(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(payload)))
}

/// Expects a netstring holding a JSON error with status 400, then the connection closed.
fn assert_netstring_error_and_close(client: &mut Client) {
    let error = json_of(&client.read_netstring());
    assert_eq!(error["status"], 400, "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{error}"
    );
    client.assert_closed();
}

#[test]
fn a_number_gets_a_netstring_holding_the_json() {
    let server = netstring_server(1024);
    let mut client = connect(&server);
    client.send("1:7,");
    let answer = client.read_netstring();
    assert_eq!(
        json_of(&answer),
        json!({"is_prime": true, "possible_prime": 7})
    );
    // The whole frame on the wire is LEN:JSON, with nothing else.
    client.send("11:32416190071,");
    let answer = client.read_netstring();
    assert_eq!(
        json_of(&answer),
        json!({"is_prime": true, "possible_prime": 32416190071u64})
    );
}

#[test]
fn netstrings_coalesced_in_one_write_are_answered_in_order() {
    let server = netstring_server(1024);
    let mut client = connect(&server);
    let numbers: Vec<u64> = (1..=100).collect();
    let batch: String = numbers
        .iter()
        .map(|n| {
            let text = n.to_string();
            format!("{}:{text},", text.len())
        })
        .collect();
    client.send(batch);
    for n in numbers {
        let answer = json_of(&client.read_netstring());
        assert_eq!(answer["possible_prime"], n, "{answer}");
    }
}

#[test]
fn a_bad_number_is_an_error_but_the_connection_stays() {
    let server = netstring_server(1024);
    let mut client = connect(&server);
    client.send("3:abc,");
    let error = json_of(&client.read_netstring());
    assert_eq!(error["status"], 400, "{error}");
    client.send("1:8,");
    assert_eq!(
        json_of(&client.read_netstring()),
        json!({"is_prime": false, "possible_prime": 8})
    );
}

#[test]
fn non_numeric_length_is_an_error_and_closes() {
    let server = netstring_server(1024);
    let mut client = connect(&server);
    client.send("x:abc,1:7,");
    assert_netstring_error_and_close(&mut client);
}

#[test]
fn payload_longer_than_its_length_is_an_error_and_closes() {
    let server = netstring_server(1024);
    let mut client = connect(&server);
    client.send("3:abcd1:7,");
    assert_netstring_error_and_close(&mut client);
}

#[test]
fn length_over_the_limit_is_an_error_and_closes() {
    let server = netstring_server(100);
    let mut client = connect(&server);
    // Refused as soon as the length is read, before any payload.
    client.send("101:");
    assert_netstring_error_and_close(&mut client);
}

#[test]
fn good_netstrings_before_a_bad_one_are_answered_first() {
    let server = netstring_server(1024);
    let mut client = connect(&server);
    client.send("1:7,1:9,07:1234567,1:7,");
    for (n, prime) in [(7, true), (9, false)] {
        assert_eq!(
            json_of(&client.read_netstring()),
            json!({"is_prime": prime, "possible_prime": n})
        );
    }
    assert_netstring_error_and_close(&mut client);
}

#[test]
fn http_and_netstrings_are_served_side_by_side() {
    let server = netstring_server(1024);
    let mut netstrings = connect(&server);
    let mut http = server.connect();
    netstrings.send("2:11,");
    let response = http.get("/is_prime?possible_prime=11");
    assert_eq!(response.status, 200);
    let over_http = response.json();
    assert_eq!(json_of(&netstrings.read_netstring()), over_http);
}
