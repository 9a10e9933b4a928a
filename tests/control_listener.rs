//! The control listener over real sockets (`prime_serverd --control-listen`): the
//! front end serves `POST /publish/` on its own loop and hands every other request to a
//! control thread, so these check what a caller must not be able to tell apart: answers
//! in request order on one keep-alive connection whichever side serves each request, a
//! publish that arrives in pieces, a request that ends early (`400`), the refusals
//! (`405`, `411`, `413`, `431`), the connections closed after `Connection: close` and
//! HTTP/1.0, and the limit of 64 connections in all (`503`).
//!
//! Every wait is bounded; nothing asserts on elapsed time.

mod daemons;

use daemons::*;
use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant};

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const BOUND: Duration = Duration::from_secs(15);
/// The control listener's connections at once (`server::control::MAX_CONNECTIONS`).
const MAX_CONNECTIONS: usize = 64;

/// A `prime_serverd` with the channels demo and a control listener.
struct Served {
    _daemon: Daemon,
    port: u16,
    control: u16,
}

fn serverd(name: &str) -> Served {
    let (port, control) = (free_port(), free_port());
    let mut daemon = Daemon::start_listening(
        name,
        SERVERD,
        &args(&[&tcp(port), "1", "--control-listen", &tcp(control)]),
    );
    assert!(
        daemon.wait_for_log("control listener on", BOUND),
        "{}",
        daemon.stderr()
    );
    Served {
        _daemon: daemon,
        port,
        control,
    }
}

/// A stream subscriber to the demo's channel `name`, held once its head has arrived
/// (the front end keeps the hold in the same turn as it writes the head).
fn subscribe(port: u16, name: &str) -> Peer {
    let mut peer = Peer::connect(port);
    peer.write_text(&format!("GET /channels/{name} HTTP/1.1\r\nHost: x\r\n\r\n"));
    peer.wait_for(&format!("held on channel {name}"));
    peer
}

/// A whole `POST /publish/` of one stream item, over HTTP/1.`minor`, with extra header
/// lines.
fn publish(minor: u8, channel: &str, content: &str, extra: &str) -> String {
    let body = serde_json::json!({"items": [{"channel": channel,
        "formats": {"http-stream": {"content": content}}}]})
    .to_string();
    format!(
        "POST /publish/ HTTP/1.{minor}\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A publish on a new connection: the connection if it was answered `200`, none if it
/// was refused (`503`, or closed before its answer could be read).
fn try_publish(control: u16) -> Option<Peer> {
    let mut peer = Peer::connect(control);
    peer.write_text(&publish(1, "limit", "data: y\n\n", ""));
    let end = Instant::now() + BOUND;
    let mut buf = [0u8; 4096];
    while !peer.text().ends_with("Published\n") {
        assert!(Instant::now() < end, "no answer: {:?}", peer.text());
        match peer.stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => peer.seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(_) => {}
        }
        if peer.text().starts_with("HTTP/1.1 503") {
            return None;
        }
    }
    assert!(peer.text().starts_with("HTTP/1.1 200"), "{}", peer.text());
    Some(peer)
}

/// The status codes of the answers in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| &answer[..3])
        .collect()
}

/// Where each of `needles` is in `text`, asserting each is there once, in that order.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        assert_eq!(text.matches(needle).count(), 1, "{needle:?} once: {text:?}");
        let at = text[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} out of order: {text:?}"));
        from += at + needle.len();
    }
}

#[test]
fn publishes_and_other_routes_on_one_connection_are_answered_in_order() {
    let served = serverd("control-order");
    let mut subscriber = subscribe(served.port, "order");
    let mut control = Peer::connect(served.control);
    // Two publishes, a request for another route and a publish behind it, in one write.
    control.write_text(&format!(
        "{}{}GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n{}",
        publish(1, "order", "data: a\n\n", ""),
        publish(1, "order", "data: b\n\n", ""),
        publish(1, "order", "data: c\n\n", ""),
    ));
    let text = control.read_until("four answers", |text| {
        statuses(text).len() == 4 && text.ends_with("Published\n")
    });
    assert_eq!(statuses(&text), ["200", "200", "404", "200"], "{text}");
    // The connection stays open for more, on whichever side serves it now.
    control.write_text(&publish(1, "order", "data: d\n\n", ""));
    let text = control.read_until("a fifth answer", |text| {
        statuses(text).len() == 5 && text.ends_with("Published\n")
    });
    assert_eq!(statuses(&text)[4], "200", "{text}");
    let seen = subscriber.wait_for("data: d\n\n");
    assert_in_order(&seen, &["data: a\n", "data: b\n", "data: c\n", "data: d\n"]);
}

#[test]
fn a_publish_in_pieces_is_served_and_a_request_that_ends_early_is_told_so() {
    let served = serverd("control-pieces");
    let mut subscriber = subscribe(served.port, "pieces");
    let request = publish(1, "pieces", "data: whole\n\n", "");
    let mut control = Peer::connect(served.control);
    // In three writes, each after the last has had time to be read on its own.
    for piece in [&request[..20], &request[20..60], &request[60..]] {
        control.write_text(piece);
        std::thread::sleep(Duration::from_millis(50));
    }
    control.wait_for("Published\n");
    assert!(
        control.text().starts_with("HTTP/1.1 200"),
        "{}",
        control.text()
    );
    subscriber.wait_for("data: whole\n\n");

    // A client that finishes sending right after its publish is still answered.
    let mut last = Peer::connect(served.control);
    last.write_text(&publish(1, "pieces", "data: last\n\n", ""));
    last.stream.shutdown(Shutdown::Write).unwrap();
    let answer = last.read_to_close();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    subscriber.wait_for("data: last\n\n");

    // One that finishes sending in the middle of a head, or of a body, is told so.
    for (partial, reason) in [
        (
            "POST /publish/ HTTP/1.1\r\nHost: x\r\n",
            "the request ended early",
        ),
        (
            "POST /publish/ HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"items\"",
            "the body ended early",
        ),
    ] {
        let mut early = Peer::connect(served.control);
        early.write_text(partial);
        early.stream.shutdown(Shutdown::Write).unwrap();
        let answer = early.read_to_close();
        assert!(answer.starts_with("HTTP/1.1 400"), "{partial:?}: {answer}");
        assert!(answer.contains(reason), "{partial:?}: {answer}");
    }
    assert_eq!(subscriber.text().matches("data: ").count(), 2);
}

#[test]
fn the_control_listener_refuses_and_closes_as_http_says() {
    let served = serverd("control-refusals");
    let exchange = |request: &str| {
        let mut peer = Peer::connect(served.control);
        peer.write_text(request);
        peer.read_to_close()
    };
    let answer = exchange("GET /publish/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("Allow: POST"), "{answer}");
    let answer =
        exchange("POST /publish/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    let answer = exchange("POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A head past 64 KiB, sent whole (65,537 bytes without its end) so that none of it
    // is left unread when the answer comes.
    let mut head = String::from("POST /publish/ HTTP/1.1\r\nX-Long: ");
    head.push_str(&"a".repeat(64 * 1024 + 1 - head.len()));
    let answer = exchange(&head);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // HTTP/1.0 and `Connection: close` publishes are answered, then closed.
    let answer = exchange(&publish(0, "nobody", "data: x\n\n", ""));
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(answer.ends_with("Published\n"), "{answer}");
    let answer = exchange(&publish(
        1,
        "nobody",
        "data: x\n\n",
        "Connection: close\r\n",
    ));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(answer.ends_with("Published\n"), "{answer}");
}

#[test]
fn past_64_connections_in_all_the_control_listener_answers_503() {
    let served = serverd("control-limit");
    // Every eighth connection is served by a control thread (another route), the others
    // by the front end (publishes); each has had an answer, so each is counted.
    let mut open = Vec::new();
    for index in 0..MAX_CONNECTIONS {
        let mut peer = Peer::connect(served.control);
        if index % 8 == 0 {
            peer.write_text("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
            peer.wait_for("HTTP/1.1 404");
        } else {
            peer.write_text(&publish(1, "limit", "data: x\n\n", ""));
            peer.wait_for("Published\n");
        }
        open.push(peer);
    }
    let mut refused = Peer::connect(served.control);
    let answer = refused.read_to_close();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many control connections"), "{answer}");
    // Once two leave (one from each side), two more are served.
    drop(open.remove(1));
    drop(open.remove(0));
    for _ in 0..2 {
        let served_again = poll_until(BOUND, || {
            let peer = try_publish(served.control);
            if peer.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            peer
        });
        let peer = served_again.expect("a connection served once others left");
        open.push(peer);
    }
}
