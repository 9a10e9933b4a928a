//! WebSocket behind the gateway: `prime_gatewayd` relays a client's WebSocket to its
//! backend as GRIP's WebSocket-over-HTTP (`tests/grip_ws_backend.py`, written with the
//! published `gripcontrol` package: `WebSocketEvent`, `websocket_control_message`).
//! The backend accepts the `OPEN`, subscribes the socket to a channel with a control
//! message and greets it; messages become `TEXT`/`BINARY` events answered with events;
//! a publish from the backend (`GripPubControl`, `ws-message`) reaches the socket; a
//! socket's end reaches the backend as a `CLOSE` event with the client's code, or a
//! `DISCONNECT` event when the client left without a Close.
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

#[test]
fn a_gripcontrol_backend_serves_websockets_behind_the_gateway() {
    tools::python();
    if !netns::isolated("a_gripcontrol_backend_serves_websockets_behind_the_gateway") {
        return;
    }
    let control = free_port();
    let backend = start_backend(control);
    let port = free_port();
    let _gateway = Daemon::start_listening(
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
