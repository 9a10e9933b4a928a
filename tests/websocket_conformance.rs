//! WebSocket conformance against `prime_echod`, as raw-socket cases written from RFC
//! 6455 in the families of the Autobahn test suite (whose package no longer runs on
//! Python 3): the opening handshake (§4.2), framing and the three payload-length forms
//! (§5.2), reserved bits and opcodes (1002), pings and pongs (§5.5.2-3), fragmentation
//! with control frames between fragments (§5.4), UTF-8 validation including code
//! points split across fragments (1007, §8.1), the closing handshake with its codes
//! (§5.5.1, §7.4), unmasked client frames (§5.1), and the message size limit (1009).
//!
//! Every wait is bounded; nothing asserts on elapsed time.

mod daemons;
mod websocket_common;

use daemons::{free_port, Daemon};
use websocket_common::*;

/// The message limit the daemon runs with: room for a 64-bit length form.
const LIMIT: usize = 131_072;

/// `prime_echod` on a free port, with the WebSocket limit [`LIMIT`].
fn echod() -> (Daemon, u16) {
    let port = free_port();
    let args: Vec<String> = [
        format!("tcp://127.0.0.1:{port}"),
        "2".into(),
        "--ws-max-message".into(),
        LIMIT.to_string(),
    ]
    .into();
    let daemon = Daemon::start_listening("echod-ws", env!("CARGO_BIN_EXE_prime_echod"), &args);
    (daemon, port)
}

/// Expects the echo of a message: one final, unmasked frame of `opcode` with `payload`.
fn expect_echo(client: &mut WsClient, opcode: u8, payload: &[u8]) {
    let frame = client.frame();
    assert_eq!(
        (frame.fin, frame.rsv, frame.opcode, frame.masked),
        (true, 0, opcode, false),
        "{:?}",
        &frame.payload[..frame.payload.len().min(40)]
    );
    assert!(
        frame.payload == payload,
        "payload of {} bytes differs",
        payload.len()
    );
}

#[test]
fn the_handshake_answers_version_13_only_and_checks_its_fields() {
    let (_daemon, port) = echod();
    let client = WsClient::open(port, "/any/path?x=1");
    assert!(client.handshake.contains("Upgrade: websocket\r\n"));
    assert!(client.handshake.contains("Connection: Upgrade\r\n"));
    let old = upgrade_request("/", "").replace("Version: 13", "Version: 8");
    let refused = WsClient::handshake_raw(port, &old);
    assert!(
        refused.handshake.starts_with("HTTP/1.1 426 "),
        "{}",
        refused.handshake
    );
    assert!(refused.handshake.contains("Sec-WebSocket-Version: 13\r\n"));
    let no_key =
        upgrade_request("/", "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    let refused = WsClient::handshake_raw(port, &no_key);
    assert!(
        refused.handshake.starts_with("HTTP/1.1 400 "),
        "{}",
        refused.handshake
    );
    let post = upgrade_request("/", "").replacen("GET", "POST", 1);
    let refused = WsClient::handshake_raw(port, &post);
    assert!(
        refused.handshake.starts_with("HTTP/1.1 400 "),
        "{}",
        refused.handshake
    );
}

#[test]
fn every_payload_length_form_is_echoed_and_bytes_may_arrive_one_at_a_time() {
    let (_daemon, port) = echod();
    let mut client = WsClient::open(port, "/");
    for len in [0, 1, 125, 126, 127, 65535, 65536, 100_000] {
        let text = "x".repeat(len);
        client.send(&client_frame(0x81, text.as_bytes()));
        expect_echo(&mut client, 1, text.as_bytes());
        let binary: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        client.send(&client_frame(0x82, &binary));
        expect_echo(&mut client, 2, &binary);
    }
    // One byte per write: the front end reads frames across any split.
    let frame = client_frame(0x81, b"split anywhere");
    client.stream.set_nodelay(true).unwrap();
    for byte in &frame {
        client.send(&[*byte]);
    }
    expect_echo(&mut client, 1, b"split anywhere");
    // Many messages in one write come back in order.
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend(client_frame(0x81, format!("m{i}").as_bytes()));
    }
    client.send(&burst);
    for i in 0..50 {
        expect_echo(&mut client, 1, format!("m{i}").as_bytes());
    }
}

#[test]
fn reserved_bits_reserved_opcodes_and_unmasked_frames_fail_with_1002() {
    let (_daemon, port) = echod();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for rsv in 1..8u8 {
        cases.push(client_frame(0x81 | (rsv << 4), b"rsv"));
    }
    for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        cases.push(client_frame(0x80 | opcode, b""));
    }
    cases.push(frame_with(0x81, b"not masked", None));
    for case in cases {
        let mut client = WsClient::open(port, "/");
        // A good message first is still echoed; the bad frame then fails the socket.
        client.send_text("before");
        expect_echo(&mut client, 1, b"before");
        client.send(&case);
        client.expect_close(1002);
    }
}

#[test]
fn pings_get_their_pongs_and_bad_control_frames_fail() {
    let (_daemon, port) = echod();
    let mut client = WsClient::open(port, "/");
    for payload in [&b""[..], b"hello", &[0xfe; 125][..]] {
        client.send(&client_frame(0x89, payload));
        expect_echo(&mut client, 0xA, payload);
    }
    // An unsolicited pong is ignored.
    client.send(&client_frame(0x8a, b"unasked"));
    client.send_text("after the pong");
    expect_echo(&mut client, 1, b"after the pong");
    // Ten pings in one write: ten pongs, in order.
    let pings: Vec<u8> = (0..10u8).flat_map(|i| client_frame(0x89, &[i])).collect();
    client.send(&pings);
    for i in 0..10u8 {
        expect_echo(&mut client, 0xA, &[i]);
    }
    for bad in [
        client_frame(0x89, &[0; 126]),
        client_frame(0x09, b"fragmented ping"),
        client_frame(0x08, b"fragmented close"),
    ] {
        let mut client = WsClient::open(port, "/");
        client.send(&bad);
        client.expect_close(1002);
    }
}

#[test]
fn fragments_are_joined_around_control_frames() {
    let (_daemon, port) = echod();
    let mut client = WsClient::open(port, "/");
    let mut bytes = client_frame(0x01, b"frag");
    bytes.extend(client_frame(0x89, b"in between"));
    bytes.extend(client_frame(0x00, b"men"));
    bytes.extend(client_frame(0x8a, b"pong too"));
    bytes.extend(client_frame(0x80, b"ted"));
    client.send(&bytes);
    expect_echo(&mut client, 0xA, b"in between");
    expect_echo(&mut client, 1, b"fragmented");
    // Binary in one-byte fragments, each in its own write.
    let data = b"0123456789";
    client.send(&client_frame(0x02, &data[..1]));
    for (i, byte) in data.iter().enumerate().skip(1) {
        let first = if i == data.len() - 1 { 0x80 } else { 0x00 };
        client.send(&client_frame(first, &[*byte]));
    }
    expect_echo(&mut client, 2, data);
    // Empty fragments make an empty message.
    client.send(&client_frame(0x01, b""));
    client.send(&client_frame(0x00, b""));
    client.send(&client_frame(0x80, b""));
    expect_echo(&mut client, 1, b"");

    let mut lone = WsClient::open(port, "/");
    lone.send(&client_frame(0x80, b"continuation of nothing"));
    lone.expect_close(1002);
    let mut nested = WsClient::open(port, "/");
    nested.send(&client_frame(0x01, b"first"));
    nested.send(&client_frame(0x81, b"a new message mid-way"));
    nested.expect_close(1002);
}

#[test]
fn text_must_be_utf8_even_split_across_fragments() {
    let (_daemon, port) = echod();
    let mut client = WsClient::open(port, "/");
    let text = "κόσμε 😀 ∑ ü";
    client.send_text(text);
    expect_echo(&mut client, 1, text.as_bytes());
    // Every split of the bytes into two fragments, through code points too.
    for at in 0..=text.len() {
        let bytes = text.as_bytes();
        client.send(&client_frame(0x01, &bytes[..at]));
        client.send(&client_frame(0x80, &bytes[at..]));
        expect_echo(&mut client, 1, bytes);
    }
    // Binary is never checked.
    client.send(&client_frame(0x82, &[0xff, 0xfe]));
    expect_echo(&mut client, 2, &[0xff, 0xfe]);

    for bad in [
        &[0xff][..],
        &[
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
        ],
        &[0xc0, 0xaf],
        &[0xf4, 0x90, 0x80, 0x80],
        &[0xce],
    ] {
        let mut client = WsClient::open(port, "/");
        client.send(&client_frame(0x81, bad));
        client.expect_close(1007);
    }
    // A bad sequence fails at its fragment, before the message ends.
    let mut early = WsClient::open(port, "/");
    early.send(&client_frame(0x01, "good ".as_bytes()));
    early.send(&client_frame(0x00, &[0xed, 0xa0, 0x80]));
    early.expect_close(1007);
    // An incomplete code point at the last fragment fails too.
    let mut cut = WsClient::open(port, "/");
    cut.send(&client_frame(0x01, "ok".as_bytes()));
    cut.send(&client_frame(0x80, &"😀".as_bytes()[..3]));
    cut.expect_close(1007);
}

#[test]
fn the_closing_handshake_echoes_valid_codes_and_refuses_bad_ones() {
    let (_daemon, port) = echod();
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut client = WsClient::open(port, "/");
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ✓".as_bytes());
        client.send(&client_frame(0x88, &payload));
        client.expect_close(code);
    }
    let mut empty = WsClient::open(port, "/");
    empty.send(&client_frame(0x88, b""));
    empty.expect_close(1000);
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut client = WsClient::open(port, "/");
        client.send(&client_frame(0x88, &code.to_be_bytes()));
        client.expect_close(1002);
    }
    let mut one_byte = WsClient::open(port, "/");
    one_byte.send(&client_frame(0x88, &[0x03]));
    one_byte.expect_close(1002);
    let mut bad_reason = WsClient::open(port, "/");
    bad_reason.send(&client_frame(0x88, &[0x03, 0xe8, 0xff, 0xfe]));
    bad_reason.expect_close(1007);
    // A close in the middle of a fragmented message ends it; the fragment is dropped.
    let mut mid = WsClient::open(port, "/");
    mid.send(&client_frame(0x01, b"never finished"));
    mid.send(&client_frame(0x88, &1000u16.to_be_bytes()));
    mid.expect_close(1000);
    // Nothing is echoed after a close, even a message sent in the same write.
    let mut after = WsClient::open(port, "/");
    let mut bytes = client_frame(0x88, &1000u16.to_be_bytes());
    bytes.extend(client_frame(0x81, b"too late"));
    after.send(&bytes);
    after.expect_close(1000);
}

#[test]
fn messages_past_the_limit_fail_with_1009() {
    let (_daemon, port) = echod();
    let mut client = WsClient::open(port, "/");
    let at_limit = vec![b'a'; LIMIT];
    client.send(&client_frame(0x82, &at_limit));
    expect_echo(&mut client, 2, &at_limit);
    // One frame past the limit fails as soon as its header is read.
    let mut big = WsClient::open(port, "/");
    big.send(&client_frame(0x82, &vec![0; LIMIT + 1])[..14]);
    big.expect_close(1009);
    // Fragments that are small alone but too big together.
    let mut pieces = WsClient::open(port, "/");
    let half = vec![b'b'; LIMIT / 2 + 1];
    pieces.send(&client_frame(0x01, &half));
    pieces.send(&client_frame(0x80, &half));
    pieces.expect_close(1009);
}
