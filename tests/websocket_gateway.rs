//! WebSocket behind the gateway: `prime_gatewayd` relays a client's WebSocket to its
//! backend as GRIP's WebSocket-over-HTTP (`tests/grip_ws_backend.py`, written with the
//! published `gripcontrol` package: `WebSocketEvent`, `websocket_control_message`).
//! The backend accepts the `OPEN`, subscribes the socket to a channel with a control
//! message and greets it; messages become `TEXT`/`BINARY` events answered with events;
//! a publish from the backend (`GripPubControl`, `ws-message`) reaches the socket; a
//! socket's end reaches the backend as a `CLOSE` event with the client's code, or a
//! `DISCONNECT` event when the client left without a Close. The backend's other
//! control messages are followed: `unsubscribe` stops a channel's publishes, `detach`
//! stops relaying the client's messages and close (publishes still arrive), and
//! `keep-alive` sends its message whenever the socket is quiet.
//!
//! The gateway connects to an address it was given, so the test runs in a network
//! namespace with only loopback (see `netns`). Every wait is bounded; nothing asserts
//! on elapsed time.

mod daemons;
mod netns;
mod tools;
mod websocket_common;

use daemons::*;
use websocket_common::*;

/// The Python backend (`grip_ws_backend.py`), stopped on drop.
fn start_backend(control_port: u16) -> tools::PythonPeer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grip_ws_backend.py");
    tools::PythonPeer::start(script, &[&control_port.to_string()])
}

/// The next text message.
fn text(client: &mut WsClient) -> String {
    let frame = client.frame();
    assert_eq!(frame.opcode, 1, "{frame:?}");
    String::from_utf8(frame.payload).expect("UTF-8")
}

/// `prime_gatewayd` in front of `backend`, with its control listener on `control`.
fn start_gateway(backend: &tools::PythonPeer, control: u16) -> (Daemon, u16) {
    let port = free_port();
    let gateway = Daemon::start_listening(
        "gatewayd-ws",
        env!("CARGO_BIN_EXE_prime_gatewayd"),
        &[
            tcp(port),
            format!("http://127.0.0.1:{}", backend.port),
            "2".to_string(),
            "--control-listen".to_string(),
            tcp(control),
        ],
    );
    (gateway, port)
}

/// Sends a ping and waits for its pong: every frame sent before it has been read.
fn round_trip(client: &mut WsClient) {
    client.send(&client_frame(0x89, b"sync"));
    let pong = client.frame();
    assert_eq!((pong.opcode, pong.payload), (0xA, b"sync".to_vec()));
}

#[test]
fn a_gripcontrol_backend_serves_websockets_behind_the_gateway() {
    tools::python();
    if !netns::isolated("a_gripcontrol_backend_serves_websockets_behind_the_gateway") {
        return;
    }
    let control = free_port();
    let backend = start_backend(control);
    let (_gateway, port) = start_gateway(&backend, control);
    let mut client = WsClient::open(port, "/chat");
    assert_eq!(text(&mut client), "welcome yes");
    client.send_text("hello");
    assert_eq!(text(&mut client), "echo hello");
    client.send(&client_frame(0x82, &[0, 255, 13, 10]));
    let frame = client.frame();
    assert_eq!((frame.opcode, frame.payload), (2, vec![0, 255, 13, 10]));
    // Another socket on the same channel gets the backend's publish too.
    let mut other = WsClient::open(port, "/chat");
    assert_eq!(text(&mut other), "welcome yes");
    client.send_text("publish news for the room");
    let mut got = vec![text(&mut client), text(&mut client)];
    got.sort();
    assert_eq!(got, ["news for the room", "published"]);
    assert_eq!(text(&mut other), "news for the room");
    client.send(&client_frame(0x88, &4001u16.to_be_bytes()));
    client.expect_close(4001);
    // The other leaves without a Close; a third socket asks what the backend was told.
    drop(other);
    let mut asker = WsClient::open(port, "/chat");
    assert_eq!(text(&mut asker), "welcome yes");
    let mut told = String::new();
    for _ in 0..100 {
        asker.send_text("closes");
        told = text(&mut asker);
        if told.matches(", ").count() >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(told, "closes: CLOSE 4001 known, DISCONNECT known");
}

#[test]
fn a_gripcontrol_backend_unsubscribes_detaches_and_keeps_sockets_alive() {
    tools::python();
    if !netns::isolated("a_gripcontrol_backend_unsubscribes_detaches_and_keeps_sockets_alive") {
        return;
    }
    let control = free_port();
    let backend = start_backend(control);
    let (_gateway, port) = start_gateway(&backend, control);
    let mut left = WsClient::open(port, "/chat");
    assert_eq!(text(&mut left), "welcome yes");
    let mut detached = WsClient::open(port, "/chat");
    assert_eq!(text(&mut detached), "welcome yes");
    let mut publisher = WsClient::open(port, "/chat");
    assert_eq!(text(&mut publisher), "welcome yes");

    // Unsubscribed: the room's next publish passes it by.
    left.send_text("unsubscribe");
    assert_eq!(text(&mut left), "unsubscribed");
    // Detached: its messages no longer reach the backend, the room's still reach it.
    detached.send_text("detach");
    assert_eq!(text(&mut detached), "detached");
    detached.send_text("after detach");
    round_trip(&mut detached);
    publisher.send_text("publish one");
    let mut got = vec![text(&mut publisher), text(&mut publisher)];
    got.sort();
    assert_eq!(got, ["one", "published"]);
    assert_eq!(
        text(&mut detached),
        "one",
        "a detached socket keeps its channels"
    );
    left.send_text("still here");
    assert_eq!(
        text(&mut left),
        "echo still here",
        "no publish after unsubscribe"
    );
    publisher.send_text("heard");
    let heard = text(&mut publisher);
    assert!(heard.starts_with("heard: "), "{heard}");
    assert!(!heard.contains("after detach"), "{heard}");
    // Its close is not told either: the backend let it go.
    detached.send(&client_frame(0x88, &4002u16.to_be_bytes()));
    detached.expect_close(4002);
    publisher.send_text("closes");
    let closes = text(&mut publisher);
    assert!(!closes.contains("4002"), "{closes}");

    // A keep-alive: "ka" whenever the socket has been quiet a second, again and again.
    left.send_text("keep-alive");
    assert_eq!(text(&mut left), "keeping alive");
    assert_eq!(text(&mut left), "ka");
    assert_eq!(text(&mut left), "ka");
    left.send_text("still here");
    let mut echoed = false;
    for _ in 0..10 {
        match text(&mut left).as_str() {
            "ka" => continue,
            other => {
                assert_eq!(other, "echo still here");
                echoed = true;
                break;
            }
        }
    }
    assert!(echoed, "the echo came among the keep-alives");
}
