//! HTTP versions and keep-alive: which versions are served, and when the connection stays
//! open after a response.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, TestServer};

#[test]
fn http_1_1_is_served_and_stays_open_by_default() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    for _ in 0..3 {
        let response = client.get("/v11");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.version, "HTTP/1.1");
        assert!(!response.says_close(), "{response:?}");
        assert_eq!(response.json()["version"], "HTTP/1.1");
    }
}

#[test]
fn http_1_0_is_served_and_closes_by_default() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("GET /v10 HTTP/1.0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.version, "HTTP/1.0");
    assert!(response.says_close(), "{response:?}");
    assert_eq!(response.json()["version"], "HTTP/1.0");
    client.assert_closed();
}

#[test]
fn http_1_0_with_keep_alive_stays_open() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    for _ in 0..3 {
        client.send("GET /v10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = client.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.version, "HTTP/1.0");
        assert_eq!(response.header("Connection"), Some("keep-alive"));
    }
    client.assert_open();
}

#[test]
fn later_http_1_x_versions_are_served_as_1_1() {
    // RFC 9112 §2.3: a 1.x above 1.1 is answered as the highest 1.x we speak.
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    for version in ["HTTP/1.2", "HTTP/1.9"] {
        client.send(format!("GET /later {version}\r\nHost: test\r\n\r\n"));
        let response = client.read_response();
        assert_eq!(response.status, 200, "{version}: {response:?}");
        assert_eq!(response.version, "HTTP/1.1");
        assert!(
            !response.says_close(),
            "{version}: keep-alive as 1.1: {response:?}"
        );
        assert_eq!(response.json()["target"], "/later");
    }
    client.assert_open();
}

#[test]
fn http_2_0_is_505_and_closes() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(format!(
        "GET / HTTP/2.0\r\nHost: test\r\n\r\n{}",
        get("/after")
    ));
    let response = client.read_response();
    response.assert_error(505);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn connection_close_closes_after_the_response() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    // The request pipelined after the `close` one is never answered.
    client.send(format!(
        "GET /last HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n{}",
        get("/after")
    ));
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["target"], "/last");
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn connection_close_is_case_insensitive() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("GET /x HTTP/1.1\r\nHost: test\r\nConnection: Close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn connection_close_is_found_in_a_token_list() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("GET /x HTTP/1.1\r\nHost: test\r\nCONNECTION: foo , CLOSE\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn keep_alive_is_found_in_a_lowercase_token_list() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("GET /x HTTP/1.0\r\nconnection: keep-alive, foo\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("Connection"), Some("keep-alive"));
    client.send("GET /y HTTP/1.0\r\nconnection: KEEP-ALIVE\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["target"], "/y");
    client.assert_open();
}

#[test]
fn http_1_1_with_unrelated_connection_tokens_stays_open() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("GET /x HTTP/1.1\r\nHost: test\r\nConnection: foo, bar\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(!response.says_close(), "{response:?}");
    client.assert_open();
}
