//! `ZMQ_DEFER_FLUSH` (a `prime_server patch` in `vendor/zeromq-src`, see its PATCHES.md)
//! on the DEALER, PUSH and ROUTER sockets the front end and the proxies send on: a
//! message sent with it on reaches its peer only at `flush_deferred` (or when the
//! option is turned off, or the socket closes), whole and in the order sent; the
//! high-water mark still refuses what does not fit. Every wait is bounded.

use std::time::Duration;

/// How long a receive that should succeed may wait.
const WAIT_MS: i32 = 5_000;

/// A bound receiver and a connected sender over `inproc://`, each with `hwm` as both
/// high-water marks.
fn pair(
    ctx: &zmq::Context,
    receiver: zmq::SocketType,
    sender: zmq::SocketType,
    name: &str,
    hwm: i32,
) -> (zmq::Socket, zmq::Socket) {
    let rx = ctx.socket(receiver).expect("receiver");
    let tx = ctx.socket(sender).expect("sender");
    for s in [&rx, &tx] {
        s.set_sndhwm(hwm).expect("sndhwm");
        s.set_rcvhwm(hwm).expect("rcvhwm");
        s.set_linger(1_000).expect("linger");
    }
    if sender == zmq::DEALER || receiver == zmq::DEALER {
        // The ROUTER end names its DEALER peer, so tests can address it.
        let dealer = if sender == zmq::DEALER { &tx } else { &rx };
        dealer.set_identity(b"peer").expect("identity");
    }
    let endpoint = format!("inproc://defer-{name}");
    rx.bind(&endpoint).expect("bind");
    tx.connect(&endpoint).expect("connect");
    (rx, tx)
}

/// The data frames of the next message (a ROUTER's routing id dropped), within the wait.
fn next(socket: &zmq::Socket, routed: bool) -> Option<Vec<Vec<u8>>> {
    socket.set_rcvtimeo(WAIT_MS).expect("rcvtimeo");
    let mut frames = socket.recv_multipart(0).ok()?;
    if routed {
        frames.remove(0);
    }
    Some(frames)
}

/// Whether a message waits now (no wait).
fn waiting(socket: &zmq::Socket) -> bool {
    socket.poll(zmq::POLLIN, 0).expect("poll") > 0
}

/// Sends `n` two-part messages numbered from `from`.
fn send_numbered(socket: &zmq::Socket, from: u32, n: u32) {
    for i in from..from + n {
        let body = i.to_string();
        socket
            .send_multipart([b"job".as_slice(), body.as_bytes()], zmq::DONTWAIT)
            .expect("send");
    }
}

/// Checks that `n` messages numbered from `from` arrive, in order.
fn expect_numbered(socket: &zmq::Socket, routed: bool, from: u32, n: u32) {
    for i in from..from + n {
        let frames = next(socket, routed).unwrap_or_else(|| panic!("message {i} did not arrive"));
        assert_eq!(frames, vec![b"job".to_vec(), i.to_string().into_bytes()]);
    }
}

#[test]
fn a_dealers_deferred_messages_arrive_at_the_flush_in_order() {
    let ctx = zmq::Context::new();
    let (router, dealer) = pair(&ctx, zmq::ROUTER, zmq::DEALER, "dealer", 1_000);
    // A first message flushed as usual, so the connection is made before deferring.
    send_numbered(&dealer, 0, 1);
    expect_numbered(&router, true, 0, 1);
    dealer.set_defer_flush(true).expect("defer");
    send_numbered(&dealer, 1, 5);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !waiting(&router),
        "a deferred message reached the peer before the flush"
    );
    dealer.flush_deferred().expect("flush");
    expect_numbered(&router, true, 1, 5);
    // Turning the option off flushes what waits, and later sends flush at once.
    send_numbered(&dealer, 6, 2);
    dealer.set_defer_flush(false).expect("undefer");
    expect_numbered(&router, true, 6, 2);
    send_numbered(&dealer, 8, 1);
    expect_numbered(&router, true, 8, 1);
}

#[test]
fn a_push_sockets_deferred_messages_arrive_at_the_flush_and_at_close() {
    let ctx = zmq::Context::new();
    let (pull, push) = pair(&ctx, zmq::PULL, zmq::PUSH, "push", 1_000);
    push.set_defer_flush(true).expect("defer");
    send_numbered(&push, 0, 3);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !waiting(&pull),
        "a deferred message reached the peer before the flush"
    );
    push.flush_deferred().expect("flush");
    expect_numbered(&pull, false, 0, 3);
    // Closing the socket delivers what it still held back.
    send_numbered(&push, 3, 2);
    drop(push);
    expect_numbered(&pull, false, 3, 2);
}

#[test]
fn a_routers_deferred_messages_reach_each_peer_at_the_flush() {
    let ctx = zmq::Context::new();
    let (router, dealer) = pair(&ctx, zmq::ROUTER, zmq::DEALER, "router", 1_000);
    // The ROUTER learns its peer's id from a first message.
    send_numbered(&dealer, 0, 1);
    expect_numbered(&router, true, 0, 1);
    router.set_defer_flush(true).expect("defer");
    for i in 1..5u32 {
        let body = i.to_string();
        router
            .send_multipart([b"peer".as_slice(), b"job", body.as_bytes()], zmq::DONTWAIT)
            .expect("send");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !waiting(&dealer),
        "a deferred message reached the peer before the flush"
    );
    router.flush_deferred().expect("flush");
    expect_numbered(&dealer, false, 1, 4);
    // A peer that leaves with messages held back for it is forgotten: a flush later
    // touches nothing of it.
    router
        .send_multipart([b"peer".as_slice(), b"job", b"5"], zmq::DONTWAIT)
        .expect("send");
    drop(dealer);
    std::thread::sleep(Duration::from_millis(100));
    let _ = waiting(&router); // lets the router process the peer's departure
    router.flush_deferred().expect("flush after the peer left");
    router.set_defer_flush(false).expect("undefer");
}

#[test]
fn the_high_water_mark_counts_deferred_messages() {
    let ctx = zmq::Context::new();
    let (pull, push) = pair(&ctx, zmq::PULL, zmq::PUSH, "hwm", 10);
    push.set_defer_flush(true).expect("defer");
    let mut sent = 0u32;
    while sent < 1_000 {
        match push.send(sent.to_string().as_bytes(), zmq::DONTWAIT) {
            Ok(()) => sent += 1,
            Err(zmq::Error::EAGAIN) => break,
            Err(e) => panic!("send: {e}"),
        }
    }
    assert!(
        sent < 1_000,
        "the high-water mark never refused a deferred message"
    );
    push.flush_deferred().expect("flush");
    pull.set_rcvtimeo(WAIT_MS).expect("rcvtimeo");
    for i in 0..sent {
        let got = pull.recv_bytes(0).expect("a deferred message");
        assert_eq!(got, i.to_string().into_bytes());
    }
}
