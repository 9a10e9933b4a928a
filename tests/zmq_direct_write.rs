//! A ZMQ_STREAM socket with `ZMQ_STREAM_DIRECT_WRITE` (a `prime_server patch` in
//! `vendor/zeromq-src`, see its PATCHES.md) writes a message to an idle connection from
//! the sending thread, and leaves the rest of a partial write, and everything sent while
//! the engine still has output, to libzmq's I/O thread. A client must not see the
//! difference: every byte arrives once and in the order sent, a full pipe still refuses
//! (`EAGAIN`) with nothing of the refused message sent, and a client that leaves
//! mid-answer frees its connection without a byte meant for it reaching anyone else.
//! Each wait is bounded.

mod daemons;
mod zmq_peers;

use std::io::Read;
use std::thread;
use std::time::Duration;
use zmq_peers::{connect, fill_until_refused, payload, read_exactly, send_retrying};

/// A ZMQ_STREAM socket with direct writes, bound on a free loopback port.
fn direct_stream(ctx: &zmq::Context, hwm: i32) -> (zmq::Socket, u16) {
    zmq_peers::bound_stream(ctx, hwm, true)
}

/// Small answers written at once, large ones partly written by the sending thread and
/// finished by the engine, and answers sent while the engine still writes: a reader
/// that pauses gets every byte once, in order, through both kinds of send.
#[test]
fn answers_partly_written_directly_arrive_whole_and_in_order() {
    const MESSAGES: usize = 600;
    let ctx = zmq::Context::new();
    let (stream, port) = direct_stream(&ctx, 16);
    let (mut client, id) = connect(&stream, port);
    let mut expected = Vec::new();
    let mut sizes = Vec::new();
    for seq in 0..MESSAGES {
        // Mostly small, every 7th larger than the kernel's socket buffers.
        let size = if seq % 7 == 3 {
            300_000 + seq * 13
        } else {
            20 + seq % 300
        };
        sizes.push(size);
        expected.extend_from_slice(&payload(seq, size));
    }
    let total = expected.len();
    let reader = thread::spawn(move || {
        let mut got = Vec::with_capacity(total);
        let mut chunk = vec![0u8; 50_000];
        while got.len() < total {
            let n = client
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("after {} of {total} bytes: {e}", got.len()));
            assert!(
                n > 0,
                "the connection closed after {} of {total} bytes",
                got.len()
            );
            got.extend_from_slice(&chunk[..n]);
            if got.len() % 7 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        (got, client)
    });
    for (seq, size) in sizes.iter().enumerate() {
        let message = payload(seq, *size);
        if seq % 5 == 0 {
            // The two-frame send takes the same road.
            loop {
                match stream.send(&id[..], zmq::SNDMORE | zmq::DONTWAIT) {
                    Ok(()) => break,
                    Err(zmq::Error::EAGAIN) => thread::sleep(Duration::from_millis(5)),
                    Err(e) => panic!("message {seq}: {e}"),
                }
            }
            stream.send(&message[..], 0).expect("data");
        } else {
            send_retrying(&stream, &id, &message, seq);
        }
        if seq % 50 == 0 {
            // Let the engine go idle, so the next answers go straight out.
            thread::sleep(Duration::from_millis(20));
        }
    }
    let (got, _client) = reader.join().expect("reader thread");
    assert_eq!(got.len(), total);
    assert!(got == expected, "the bytes arrived out of order");
}

/// A client that does not read: the kernel's buffers fill (a direct write is partial,
/// the rest goes to the engine), then the pipe until a send is refused; what was
/// accepted arrives whole once the client reads, and nothing of the refused message.
#[test]
fn a_full_pipe_still_refuses_whole_messages() {
    let ctx = zmq::Context::new();
    let (stream, port) = direct_stream(&ctx, 4);
    let (mut client, id) = connect(&stream, port);
    // Idle first: the engine has lent its output.
    thread::sleep(Duration::from_millis(50));
    let accepted = fill_until_refused(&stream, &id);
    assert!(read_exactly(&mut client, accepted.len()) == accepted);
    let last = b"the next message";
    send_retrying(&stream, &id, last, 4_000);
    assert_eq!(read_exactly(&mut client, last.len()), last);
}

/// A client that leaves in the middle of a large answer: its connection is freed (the
/// socket hears it is gone, sends to it end in `EHOSTUNREACH`), and a client that
/// connects afterwards, whose descriptor may be the same number, gets only its own bytes.
#[test]
fn a_client_gone_mid_answer_frees_its_connection() {
    let ctx = zmq::Context::new();
    let (stream, port) = direct_stream(&ctx, 1000);
    let (mut first, first_id) = connect(&stream, port);
    thread::sleep(Duration::from_millis(50));
    let big = payload(1, 4_000_000);
    stream
        .send_to_peer(&first_id, &big)
        .expect("a large answer");
    // Read a little of it, then leave with the rest unread (a reset).
    let head = read_exactly(&mut first, 1000);
    assert_eq!(&head[..], &big[..1000]);
    drop(first);
    // The socket hears that the peer is gone: a reset before the end of its input
    // brings both empty notices (end of input, gone) under its routing id.
    for _ in 0..2 {
        let id = stream.recv_bytes(0).expect("a disconnect notice");
        let body = stream.recv_bytes(0).expect("the notice's body");
        assert_eq!(id, first_id, "a notice for another peer");
        assert!(body.is_empty(), "data from a client that only read");
    }
    let mut gone = false;
    for _ in 0..2_000 {
        if stream.send_to_peer(&first_id, b"late") == Err(zmq::Error::EHOSTUNREACH) {
            gone = true;
            break;
        }
        // A look at the input lets the socket read the end of the peer's pipe.
        let _ = stream.poll(zmq::POLLIN, 5);
    }
    assert!(gone, "the gone client's connection was never freed");
    let (mut second, second_id) = connect(&stream, port);
    assert_ne!(second_id, first_id);
    thread::sleep(Duration::from_millis(50));
    stream
        .send_to_peer(&second_id, b"only this")
        .expect("an answer to the second client");
    assert_eq!(read_exactly(&mut second, 9), b"only this");
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a short read timeout");
    let mut more = [0u8; 16];
    match second.read(&mut more) {
        Ok(0) => panic!("the second connection closed"),
        Ok(n) => panic!("the second client got {n} bytes not meant for it"),
        Err(_) => {}
    }
}

/// `stream_peer_idle` (`zmq_stream_peer_idle`): false while an answer the client has
/// not read waits in libzmq, true once the client read it all; an unknown peer is
/// `EHOSTUNREACH`. The front end asks it to tell whether libzmq's I/O thread is still
/// writing a channel's last publish.
#[test]
fn a_peer_is_idle_once_everything_sent_to_it_is_written() {
    let ctx = zmq::Context::new();
    let (stream, port) = direct_stream(&ctx, 1000);
    let (mut client, id) = connect(&stream, port);
    let idle_within = |stream: &zmq::Socket| {
        (0..2_000).any(|_| {
            if stream.stream_peer_idle(&id).expect("a known peer") {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
            false
        })
    };
    assert!(idle_within(&stream), "a new connection never became idle");
    // More than the kernel takes at once from a client that does not read.
    let big = payload(7, 16_000_000);
    stream.send_to_peer(&id, &big).expect("a large answer");
    assert!(
        !stream.stream_peer_idle(&id).expect("a known peer"),
        "idle with most of 16 MB unwritten"
    );
    assert!(read_exactly(&mut client, big.len()) == big);
    assert!(idle_within(&stream), "never idle after the client read all");
    assert_eq!(
        stream.stream_peer_idle(b"nobody"),
        Err(zmq::Error::EHOSTUNREACH)
    );
}

/// An answer closed right after it is sent (`[routing id, empty frame]`, as after an
/// HTTP/1.0 answer or `Connection: close`): when a direct write took all but a few
/// bytes (the kernel's buffers full, a client not reading yet), the rest waits in the
/// engine's buffer, and the close must not drop it. Small socket buffers and answers of
/// many sizes, so that some leave a rest smaller than the engine's 8 KiB batch; each
/// client reads only after the close was sent, and must get every byte, then the end.
#[test]
fn an_answer_closed_at_once_arrives_whole_whatever_the_kernel_took() {
    const CLIENTS: usize = 120;
    let ctx = zmq::Context::new();
    let stream = ctx.socket(zmq::STREAM).expect("STREAM socket");
    stream.set_sndbuf(4096).expect("ZMQ_SNDBUF");
    stream
        .set_rcvtimeo(zmq_peers::RECEIVE_TIMEOUT_MS)
        .expect("ZMQ_RCVTIMEO");
    stream
        .set_stream_direct_write(true)
        .expect("ZMQ_STREAM_DIRECT_WRITE");
    let port = daemons::free_port();
    stream
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .expect("bind STREAM");
    let mut peers = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a client socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        socket.connect(&address.into()).expect("connect");
        let client: std::net::TcpStream = socket.into();
        client
            .set_read_timeout(Some(Duration::from_millis(20_000)))
            .expect("a read timeout");
        let id = stream.recv_bytes(0).expect("a connect notice's routing id");
        assert!(stream.recv_bytes(0).expect("the notice").is_empty());
        peers.push((client, id));
    }
    // Idle: every engine has lent its output.
    thread::sleep(Duration::from_millis(50));
    let mut answers = Vec::with_capacity(CLIENTS);
    for (n, (_, id)) in peers.iter().enumerate() {
        let answer = payload(n, 2_048 + n * 256);
        send_retrying(&stream, id, &answer, n);
        zmq_peers::send_close(&stream, id);
        answers.push(answer);
    }
    // Let the I/O thread act on every close before anyone reads.
    thread::sleep(Duration::from_millis(200));
    for (n, ((mut client, _), answer)) in peers.into_iter().zip(answers).enumerate() {
        client
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("a short read timeout");
        let mut got = Vec::with_capacity(answer.len());
        let mut chunk = [0u8; 16 * 1024];
        let mut ended = false;
        for _ in 0..2_000 {
            match client.read(&mut chunk) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(k) => got.extend_from_slice(&chunk[..k]),
                // The socket's thread must turn for a close to finish (its pipe's
                // termination is a handshake with the I/O thread).
                Err(_) => {
                    stream.get_events().expect("ZMQ_EVENTS");
                }
            }
        }
        assert!(ended, "client {n}: no end after {} bytes", got.len());
        assert_eq!(
            got.len(),
            answer.len(),
            "client {n}: {} of {} bytes before the end",
            got.len(),
            answer.len()
        );
        assert!(got == answer, "client {n}: the bytes differ");
    }
}
