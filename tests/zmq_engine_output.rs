//! libzmq's stream engine polls for output only while it has something left to send
//! (a `prime_server patch` in `vendor/zeromq-src`, see its PATCHES.md): a write burst
//! that goes at once stops output without asking the poller for POLLOUT, and anything
//! left (a partial write, a batch that filled the encoder) waits for POLLOUT. A mistake
//! there stalls a connection for ever, so these tests drive each case over real TCP
//! connections between ZMTP sockets and check that every message arrives, whole and in
//! order, within a bounded wait. The one-call send to a ZMQ_STREAM peer
//! (`zmq_stream_send`, another patch) is checked the same way: order, and failures
//! that send nothing.

mod daemons;
mod zmq_peers;

use daemons::free_port;
use std::thread;
use zmq_peers::{fill_until_refused, payload, read_exactly, RECEIVE_TIMEOUT_MS};

/// A PULL socket bound on a free loopback port and a PUSH socket connected to it.
fn push_pull(ctx: &zmq::Context) -> (zmq::Socket, zmq::Socket) {
    let pull = ctx.socket(zmq::PULL).expect("PULL socket");
    pull.set_rcvtimeo(RECEIVE_TIMEOUT_MS).expect("ZMQ_RCVTIMEO");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    pull.bind(&endpoint).expect("bind PULL");
    let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
    push.set_sndtimeo(RECEIVE_TIMEOUT_MS).expect("ZMQ_SNDTIMEO");
    push.connect(&endpoint).expect("connect PUSH");
    (push, pull)
}

/// Megabytes sent while the receiver is not reading: the kernel's buffers fill, so
/// writes are partial or refused (EAGAIN) and each encoder batch fills to
/// `out_batch_size`; the rest must go on POLLOUT, in order, once the receiver reads.
#[test]
fn bursts_larger_than_the_socket_buffers_arrive_whole_and_in_order() {
    const MESSAGES: usize = 3_000;
    const SIZE: usize = 3_000;
    let ctx = zmq::Context::new();
    let (push, pull) = push_pull(&ctx);
    let sender = thread::spawn(move || {
        for seq in 0..MESSAGES {
            push.send(payload(seq, SIZE), 0)
                .expect("send within the timeout");
        }
        push
    });
    // Let the sender run ahead until the high-water marks and the kernel stop it.
    thread::sleep(std::time::Duration::from_millis(300));
    for seq in 0..MESSAGES {
        let got = pull
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("message {seq} of {MESSAGES} never came: {e}"));
        assert_eq!(got, payload(seq, SIZE), "message {seq}");
    }
    let push = sender.join().expect("sender thread");
    drop(push);
}

/// Many small request-reply round trips: every reply is written after the engine's
/// output stopped (its pipe found empty), so each one is a restart of output with a
/// write that goes at once; a restart that forgot to write or to poll would stall.
#[test]
fn replies_after_output_stopped_each_arrive() {
    const ROUND_TRIPS: usize = 2_000;
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).expect("ROUTER socket");
    router
        .set_rcvtimeo(RECEIVE_TIMEOUT_MS)
        .expect("ZMQ_RCVTIMEO");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    router.bind(&endpoint).expect("bind ROUTER");
    let dealer = ctx.socket(zmq::DEALER).expect("DEALER socket");
    dealer
        .set_rcvtimeo(RECEIVE_TIMEOUT_MS)
        .expect("ZMQ_RCVTIMEO");
    dealer.connect(&endpoint).expect("connect DEALER");
    let server = thread::spawn(move || {
        for seq in 0..ROUND_TRIPS {
            let frames = router
                .recv_multipart(0)
                .unwrap_or_else(|e| panic!("request {seq} never came: {e}"));
            assert_eq!(frames.len(), 2, "request {seq}: identity and body");
            let mut answer = frames[1].clone();
            answer.extend_from_slice(b" answered");
            router
                .send_multipart([frames[0].clone(), answer], 0)
                .expect("send reply");
        }
        router
    });
    for seq in 0..ROUND_TRIPS {
        let request = payload(seq, 20);
        dealer.send(request.as_slice(), 0).expect("send request");
        let got = dealer
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("reply {seq} of {ROUND_TRIPS} never came: {e}"));
        let mut expected = request;
        expected.extend_from_slice(b" answered");
        assert_eq!(got, expected, "reply {seq}");
    }
    drop(server.join().expect("server thread"));
}

/// Bursts of small messages after idle moments, so that some bursts go at once (output
/// stops) and some fill a batch (output keeps polling): the order of every message and
/// the count still hold.
#[test]
fn alternating_small_and_large_bursts_keep_order() {
    const BURSTS: usize = 40;
    let ctx = zmq::Context::new();
    let (push, pull) = push_pull(&ctx);
    let sender = thread::spawn(move || {
        let mut seq = 0;
        for burst in 0..BURSTS {
            // 1 message, or 300 of 100 bytes (30 KB, several 8 KiB batches).
            let count = if burst % 2 == 0 { 1 } else { 300 };
            for _ in 0..count {
                push.send(payload(seq, 100), 0)
                    .expect("send within the timeout");
                seq += 1;
            }
            thread::sleep(std::time::Duration::from_millis(2));
        }
        (push, seq)
    });
    let total = BURSTS / 2 * 301;
    for seq in 0..total {
        let got = pull
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("message {seq} of {total} never came: {e}"));
        assert_eq!(got, payload(seq, 100), "message {seq}");
    }
    let (push, sent) = sender.join().expect("sender thread");
    assert_eq!(sent, total);
    drop(push);
}

/// A ZMQ_STREAM socket bound on a free loopback port, a TCP client connected to it, and
/// the client's routing id (from its connect notice).
fn stream_peer(ctx: &zmq::Context, hwm: i32) -> (zmq::Socket, std::net::TcpStream, Vec<u8>) {
    let (stream, port) = zmq_peers::bound_stream(ctx, hwm, false);
    let (client, id) = zmq_peers::connect(&stream, port);
    (stream, client, id)
}

/// `Socket::send_to_peer` (libzmq's `zmq_stream_send`, a prime_server patch) sends the
/// routing id and the data in one call: its messages and two-frame sends to the same
/// peer arrive in the order sent. It fails as a whole: an unknown peer is
/// `EHOSTUNREACH`, another socket type `ENOTSUP`, a two-frame send under way `EFSM`
/// (which then completes as it would have), and a peer whose pipe is full `EAGAIN`,
/// with nothing of the refused message ever sent.
#[test]
fn a_stream_send_in_one_call_keeps_the_order_and_fails_whole() {
    let ctx = zmq::Context::new();
    let (stream, mut client, id) = stream_peer(&ctx, 1000);
    assert_eq!(
        stream.send_to_peer(b"no such peer", b"x"),
        Err(zmq::Error::EHOSTUNREACH)
    );
    let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
    assert_eq!(push.send_to_peer(&id, b"x"), Err(zmq::Error::ENOTSUP));

    let mut expected = Vec::new();
    for seq in 0..200 {
        let message = payload(seq, 40 + seq % 100);
        if seq % 3 == 0 {
            stream.send(&id[..], zmq::SNDMORE).expect("routing id");
            stream.send(&message[..], 0).expect("data");
        } else {
            stream.send_to_peer(&id, &message).expect("one-call send");
        }
        expected.extend_from_slice(&message);
    }
    assert_eq!(read_exactly(&mut client, expected.len()), expected);

    stream.send(&id[..], zmq::SNDMORE).expect("routing id");
    assert_eq!(stream.send_to_peer(&id, b"between"), Err(zmq::Error::EFSM));
    stream.send(&b"rest"[..], 0).expect("data");
    assert_eq!(read_exactly(&mut client, 4), b"rest");

    // A peer that does not read: the kernel's buffers, then its pipe (4 messages),
    // fill until a send is refused.
    let (stream, mut client, id) = stream_peer(&ctx, 4);
    let accepted = fill_until_refused(&stream, &id);
    assert_eq!(read_exactly(&mut client, accepted.len()), accepted);
    // Then the next message sent is the next that arrives: none of the refused one.
    let last = b"the next message";
    let mut sent = false;
    for _ in 0..1_000 {
        match stream.send_to_peer(&id, last) {
            Ok(()) => {
                sent = true;
                break;
            }
            Err(zmq::Error::EAGAIN) => thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => panic!("the last message: {e}"),
        }
    }
    assert!(sent, "the pipe never took a message again");
    assert_eq!(read_exactly(&mut client, last.len()), last);
}
