//! GRIP behind the gateway, with a real backend: `tests/grip_backend.py`, a Python
//! HTTP server that uses the published `gripcontrol` package as its users do. Behind
//! `prime_gatewayd --grip-key-file`, it holds requests (a long-poll with a
//! `grip-instruct` body, a stream with `Grip-*` headers and a keep-alive) and publishes with
//! `GripPubControl` to the control listener's `POST /publish/`; held clients get the
//! messages, and a long-poll nobody publishes to gets the backend's own answer at its
//! timeout. The backend checks `Grip-Sig` with `gripcontrol.validate_sig`: reached
//! directly, or through a gateway without the key (where a client's own `Grip-Sig` is
//! stripped), it does not hold. Instructions the gateway cannot follow are `502`.
//!
//! The gateway connects to an address it was given, so each test runs in a network
//! namespace with only loopback (see `netns`). Every wait is bounded; nothing asserts
//! on elapsed time.

mod daemons;
mod netns;
mod tools;

use daemons::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const GATEWAYD: &str = env!("CARGO_BIN_EXE_prime_gatewayd");
const BOUND: Duration = Duration::from_secs(20);
const GRIP_KEY: &str = "grip signing key, shared with the backend";
const PUBLISH_KEY: &str = "publish key";

/// The Python backend (`grip_backend.py`), stopped on drop.
fn start_backend(control_port: u16, grip_key: &str, publish_key: &str) -> tools::PythonPeer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grip_backend.py");
    tools::PythonPeer::start(script, &[grip_key, &control_port.to_string(), publish_key])
}

/// Writes `text` to a scratch file; its path.
fn key_file(text: &str) -> String {
    let path = scratch_path("grip-key", "txt");
    std::fs::write(&path, format!("{text}\n")).expect("write a key file");
    path.display().to_string()
}

/// A client connection with what it has read so far.
/// A raw client connection (`daemons::Peer`) made by sending a `GET`.
type Client = Peer;

impl Client {
    /// Connects to `port` and sends `GET path` with extra header lines.
    fn get(port: u16, path: &str, extra: &str) -> Client {
        let mut client = Peer::connect(port);
        client.write_text(&format!(
            "GET {path} HTTP/1.1\r\nHost: grip.test\r\n{extra}\r\n"
        ));
        client
    }

    /// Reads until `needle` has been seen after the first `from` bytes.
    fn wait_for_after(&mut self, from: usize, needle: &str) -> String {
        self.read_until(&format!("{needle:?}"), |text| {
            text.get(from..).is_some_and(|after| after.contains(needle))
        })
    }
}

/// One whole exchange: `method path` to `port` with `Connection: close`; the answer.
fn exchange(port: u16, method: &str, path: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(BOUND))
        .expect("a read timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: grip.test\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The number of held requests the gateway's status page counts.
fn holds(port: u16) -> Option<u64> {
    let answer = exchange(port, "GET", "/status", "");
    let body = answer.split_once("\r\n\r\n")?.1;
    let status: serde_json::Value = serde_json::from_str(body).ok()?;
    status["channels"]["holds"].as_u64()
}

/// Waits until the gateway holds `count` requests.
fn wait_holds(port: u16, count: u64) {
    let reached = poll_until(BOUND, || (holds(port) == Some(count)).then_some(()));
    assert!(reached.is_some(), "holds never {count}: {:?}", holds(port));
}

/// Asks the backend (directly) to publish with GripPubControl.
fn publish(backend: u16, query: &str) {
    let answer = exchange(backend, "POST", &format!("/publish?{query}"), "");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("published\n"),
        "the backend's publish failed: {answer}"
    );
}

/// A gateway with a status page, and the ports of its listener and control listener.
fn gatewayd(name: &str, backend: u16, extra: &[&str]) -> (Daemon, u16, u16) {
    let (port, control) = (free_port(), free_port());
    let mut list = vec![
        tcp(port),
        format!("http://127.0.0.1:{backend}"),
        "4".to_string(),
        "--status-path".to_string(),
        "/status".to_string(),
        "--control-listen".to_string(),
        tcp(control),
    ];
    list.extend(extra.iter().map(|s| s.to_string()));
    (
        Daemon::start_listening(name, GATEWAYD, &list),
        port,
        control,
    )
}

#[test]
fn a_gripcontrol_backend_holds_requests_behind_the_gateway() {
    tools::python();
    if !netns::isolated("a_gripcontrol_backend_holds_requests_behind_the_gateway") {
        return;
    }
    let (grip_key, publish_key) = (key_file(GRIP_KEY), key_file(PUBLISH_KEY));
    // The backend needs the control port before the gateway starts: take it first.
    let control = free_port();
    let backend = start_backend(control, &grip_key, &publish_key);
    let port = free_port();
    let _gateway = Daemon::start_listening(
        "gatewayd-grip",
        GATEWAYD,
        &[
            tcp(port),
            format!("http://127.0.0.1:{}", backend.port),
            "4".to_string(),
            "--status-path".to_string(),
            "/status".to_string(),
            "--control-listen".to_string(),
            tcp(control),
            "--publish-key-file".to_string(),
            publish_key.clone(),
            "--grip-key-file".to_string(),
            grip_key.clone(),
        ],
    );

    // A long-poll (create_hold_response), answered by GripPubControl's publish.
    let mut long_poll = Client::get(port, "/response?ch=orders", "");
    wait_holds(port, 1);
    publish(backend.port, "ch=orders&kind=response");
    let answer = long_poll.wait_for("published answer\n");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(!answer.contains("fallback"), "{answer}");

    // A stream (Grip-* headers): the backend's head and body at once, without any
    // Grip-* field, then each http-stream message in order.
    let mut stream = Client::get(port, "/stream?ch=feed&ka=1", "");
    let head = stream.wait_for("start\n");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("grip-"), "{head}");
    wait_holds(port, 1);
    publish(backend.port, "ch=feed&kind=stream&n=3");
    let text = stream.wait_for("message 3\n");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {text:?}"))
    };
    assert!(at("start\n") < at("message 1\n"));
    assert!(at("message 1\n") < at("message 2\n") && at("message 2\n") < at("message 3\n"));
    // Idle: the keep-alive, its C-string escape undone.
    stream.wait_for_after(at("message 3\n"), ":idle\n");

    // A long-poll nobody publishes to: at its timeout, the backend's own answer.
    let mut quiet = Client::get(port, "/response?ch=quiet&timeout=1", "");
    let answer = quiet.wait_for("fallback\n");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-backend: fallback"),
        "{answer}"
    );
}

#[test]
fn only_the_gateways_grip_sig_makes_the_backend_hold() {
    tools::python();
    if !netns::isolated("only_the_gateways_grip_sig_makes_the_backend_hold") {
        return;
    }
    let (grip_key, publish_key) = (key_file(GRIP_KEY), key_file(PUBLISH_KEY));
    let backend = start_backend(free_port(), &grip_key, &publish_key);

    // Reached directly, without Grip-Sig: not held.
    let direct = exchange(backend.port, "GET", "/response?ch=a", "");
    assert!(direct.ends_with("not held: no Grip-Sig\n"), "{direct}");
    // With a Grip-Sig made with another key: not held either.
    let wrong = prime_server::stages::grip::grip_sig_now(b"another key").expect("a JWT");
    let forged = exchange(
        backend.port,
        "GET",
        "/response?ch=a",
        &format!("Grip-Sig: {wrong}\r\n"),
    );
    assert!(forged.ends_with("not held: invalid Grip-Sig\n"), "{forged}");

    // Through a gateway without --grip-key-file: no Grip-Sig is sent, and a client's
    // own (even one made with the right key) is stripped, never passed on.
    let (_plain, port, _) = gatewayd("gatewayd-grip-keyless", backend.port, &[]);
    let good = prime_server::stages::grip::grip_sig_now(GRIP_KEY.as_bytes()).expect("a JWT");
    let through = exchange(
        port,
        "GET",
        "/response?ch=a",
        &format!("Grip-Sig: {good}\r\n"),
    );
    assert!(through.starts_with("HTTP/1.1 200 "), "{through}");
    assert!(through.ends_with("not held: no Grip-Sig\n"), "{through}");

    // Through a gateway with the key: held (a long-poll that times out after 1 s into
    // the backend's own answer, never the instructions themselves).
    let (_signed, port, _) = gatewayd(
        "gatewayd-grip-keyed",
        backend.port,
        &["--grip-key-file", &grip_key],
    );
    let mut held = Client::get(port, "/response?ch=a&timeout=1", "");
    let answer = held.wait_for("fallback\n");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(!answer.contains("grip-instruct"), "{answer}");

    // Instructions that cannot be followed are the backend's error.
    let bad = exchange(port, "GET", "/bad?ch=a", "");
    assert!(bad.starts_with("HTTP/1.1 502 "), "{bad}");
    assert!(bad.contains("Grip-Hold"), "{bad}");
}
