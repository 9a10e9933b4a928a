//! Size limits: each is refused with its status and the connection closes.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, TestServer};

/// Sends `request` followed by a valid GET; expects `status` with close and nothing after.
fn assert_refused(server: &TestServer, request: &[u8], status: u16) {
    let mut client = server.connect();
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(get("/after").as_bytes());
    client.send(&bytes);
    let response = client.read_response();
    response.assert_error(status);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
    server.connect().assert_open();
}

#[test]
fn request_line_over_8_kib_is_414() {
    let server = TestServer::echo(http_config());
    let target = format!("/{}", "a".repeat(9000));
    assert_refused(&server, get(&target).as_bytes(), 414);
}

#[test]
fn request_line_at_the_limit_is_served() {
    let server = TestServer::echo(http_config());
    // "GET " + target + " HTTP/1.1" is exactly 8192 bytes.
    let target = format!("/{}", "a".repeat(8192 - 4 - 9 - 1));
    let mut client = server.connect();
    let response = client.get(&target);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["target"], target);
}

#[test]
fn header_section_over_64_kib_is_431() {
    let server = TestServer::echo(http_config());
    let mut request = String::from("GET / HTTP/1.1\r\nHost: test\r\n");
    for i in 0..40 {
        request.push_str(&format!("X-Big-{i}: {}\r\n", "v".repeat(2000)));
    }
    request.push_str("\r\n");
    assert_refused(&server, request.as_bytes(), 431);
}

#[test]
fn more_than_100_headers_is_431() {
    let server = TestServer::echo(http_config());
    let mut request = String::from("GET / HTTP/1.1\r\nHost: test\r\n");
    for i in 0..100 {
        request.push_str(&format!("X-H-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    assert_refused(&server, request.as_bytes(), 431);
}

#[test]
fn exactly_100_headers_are_served() {
    let server = TestServer::echo(http_config());
    let mut request = String::from("GET /many HTTP/1.1\r\nHost: test\r\n");
    for i in 0..99 {
        request.push_str(&format!("X-H-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let mut client = server.connect();
    client.send(request);
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.json()["headers"].as_array().map(Vec::len),
        Some(100)
    );
}

#[test]
fn declared_body_over_the_limit_is_413_before_the_body_is_sent() {
    let mut config = http_config();
    config.limits.max_body = 1000;
    let server = TestServer::echo(config);
    let mut client = server.connect();
    // Only the head: the answer must not wait for the body.
    client.send("POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 2000\r\n\r\n");
    let response = client.read_response();
    response.assert_error(413);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn declared_body_over_the_limit_with_expect_gets_413_and_no_100_continue() {
    let mut config = http_config();
    config.limits.max_body = 1000;
    let server = TestServer::echo(config);
    let mut client = server.connect();
    client.send(
        "POST /big HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n",
    );
    let response = client.read_response();
    response.assert_error(413);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let mut config = http_config();
    config.limits.max_body = 1000;
    let server = TestServer::echo(config);
    let mut client = server.connect();
    let chunk = "x".repeat(600);
    client.send(format!(
        "POST /big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n"
    ));
    let response = client.read_response();
    response.assert_error(413);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn body_at_the_limit_is_served() {
    let mut config = http_config();
    config.limits.max_body = 1000;
    let server = TestServer::echo(config);
    let mut client = server.connect();
    client.send(format!(
        "POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{}",
        "x".repeat(1000)
    ));
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["body_length"], 1000);
}
