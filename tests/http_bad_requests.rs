//! Requests the front end refuses by itself: each gets its status with a JSON error, the
//! connection closes, and a request pipelined after the bad one is never answered.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, TestServer};

/// Sends `bad` followed by a valid GET in one write; expects one `status` response
/// saying close, then the connection closed with nothing more.
fn assert_rejected(bad: &str, status: u16) {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(format!("{bad}{}", get("/after-the-bad-one")));
    let response = client.read_response();
    response.assert_error(status);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
    // The server lives on for others.
    server.connect().assert_open();
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn two_different_content_lengths_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
}

#[test]
fn negative_content_length_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n",
        400,
    );
}

#[test]
fn signed_content_length_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: +5\r\n\r\nhello",
        400,
    );
}

#[test]
fn content_length_list_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1,2\r\n\r\nab",
        400,
    );
}

#[test]
fn space_before_colon_is_400() {
    assert_rejected(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Name : value\r\n\r\n",
        400,
    );
}

#[test]
fn obs_fold_is_400() {
    assert_rejected(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Folded: first\r\n  second\r\n\r\n",
        400,
    );
}

#[test]
fn header_line_without_colon_is_400() {
    assert_rejected("GET / HTTP/1.1\r\nHost: test\r\nNoColonHere\r\n\r\n", 400);
}

#[test]
fn control_character_in_header_value_is_400() {
    assert_rejected("GET / HTTP/1.1\r\nHost: test\r\nX-Bad: a\x01b\r\n\r\n", 400);
}

#[test]
fn http_1_1_without_host_is_400() {
    assert_rejected("GET / HTTP/1.1\r\nX-Other: x\r\n\r\n", 400);
}

#[test]
fn two_host_headers_is_400() {
    assert_rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

#[test]
fn invalid_chunk_size_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn overflowing_chunk_size_is_400() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn whitespace_after_a_chunk_size_without_an_extension_is_400() {
    // RFC 9112 §7.1: BWS may come only before `;`; `3 \r\n` is a bad chunk line.
    for line in ["3 ", "3\t", "3 \t "] {
        assert_rejected(
            &format!(
                "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nabc\r\n0\r\n\r\n"
            ),
            400,
        );
    }
}

#[test]
fn chunked_framing_in_http_1_0_is_400() {
    // RFC 9112 §6.1: HTTP/1.0 has no transfer codings, so the framing is faulty.
    assert_rejected(
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn unsupported_transfer_coding_is_501() {
    assert_rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    );
}

#[test]
fn chunked_not_the_final_coding_is_400_and_closes() {
    // RFC 9112 §6.3: the body's length cannot be known, so nothing after it can be read.
    for coding in [
        "gzip",
        "chunked, gzip",
        "chunked\r\nTransfer-Encoding: gzip",
    ] {
        assert_rejected(
            &format!(
                "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n"
            ),
            400,
        );
    }
}

#[test]
fn malformed_request_line_is_400() {
    assert_rejected("GET /\r\nHost: test\r\n\r\n", 400);
}

#[test]
fn a_bad_request_after_good_ones_closes_after_their_answers() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(format!(
        "{}{}GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{}",
        get("/one"),
        get("/two"),
        get("/never")
    ));
    for target in ["/one", "/two"] {
        let response = client.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.json()["target"], target);
    }
    let response = client.read_response();
    response.assert_error(400);
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}

#[test]
fn rejected_head_request_gets_no_body() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send("HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    let response = client.read_head_response();
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.says_close(), "{response:?}");
    client.assert_closed();
}
