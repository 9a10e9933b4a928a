//! The gateway stage's unit tests (apart, to keep `gateway.rs` short enough to read).

use super::*;
use crate::stages::gateway_wire::{parts_of, render_plain, Answering};

#[test]
fn a_plain_answer_renders_as_the_general_path_renders_it() {
    let fields: [(&str, &[u8]); 8] = [
        ("Content-Type", b"text/plain"),
        ("Content-Length", b"5"),
        ("Connection", b"X-Hop, keep-alive"),
        ("X-Hop", b"private"),
        ("Keep-Alive", b"timeout=5"),
        ("Set-Cookie", b"a=1"),
        ("Set-Cookie", b"b=2"),
        ("Date", b"Sun, 06 Dec 2026 10:00:00 GMT"),
    ];
    for (status, minor_version, keep_alive, head) in [
        (200, 1, true, false),
        (200, 1, true, true),
        (404, 0, false, false),
        (204, 1, true, false),
        (304, 1, false, true),
    ] {
        let backend = crate::stages::gateway_wire::tests::answer(status, &fields, b"hello");
        let mut plain = Vec::new();
        let answering = Answering {
            minor_version,
            keep_alive,
            head_only: head,
            keep_length: head,
        };
        assert!(render_plain(&mut plain, parts_of(&backend), answering));
        let protocol = Protocol::Http {
            minor_version,
            keep_alive,
            head,
        };
        let general = render(protocol, &incoming(backend, head));
        assert_eq!(
            String::from_utf8_lossy(&plain),
            String::from_utf8_lossy(&general),
            "{status} HTTP/1.{minor_version} keep-alive {keep_alive} head {head}"
        );
    }
}

#[test]
fn targets_are_plain_http_with_an_optional_base() {
    assert_eq!(
        parse_target("http://127.0.0.1:9000").unwrap(),
        ("http://127.0.0.1:9000".to_string(), String::new())
    );
    assert_eq!(
        parse_target("http://backend:80/api/").unwrap(),
        ("http://backend:80".to_string(), "/api".to_string())
    );
    assert!(parse_target("https://backend").is_err());
    assert!(parse_target("http://").is_err());
    assert!(parse_target("http://u:p@backend").is_err());
    assert!(parse_target("http://backend/a?b").is_err());
}

#[test]
fn the_signature_covers_method_target_body_and_time() {
    let base = sign(b"k", 1, "POST", "/a", b"x");
    assert_ne!(base, sign(b"k", 2, "POST", "/a", b"x"));
    assert_ne!(base, sign(b"k", 1, "PUT", "/a", b"x"));
    assert_ne!(base, sign(b"k", 1, "POST", "/b", b"x"));
    assert_ne!(base, sign(b"k", 1, "POST", "/a", b"y"));
    assert_ne!(base, sign(b"j", 1, "POST", "/a", b"x"));
    assert_eq!(base, sign(b"k", 1, "POST", "/a", b"x"));
}
