//! Helpers for the tests of libzmq's patched engine and ZMQ_STREAM socket
//! (`zmq_engine_output`, `zmq_direct_write`): numbered payloads, a ZMQ_STREAM socket
//! with a TCP client and its routing id, bounded reads, and a pipe filled until a send
//! is refused. Every wait is bounded.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// How long a receive may wait before the test fails (a stalled engine never delivers).
pub const RECEIVE_TIMEOUT_MS: i32 = 20_000;

/// A message of `size` bytes (at least 9) that names its sequence number.
pub fn payload(seq: usize, size: usize) -> Vec<u8> {
    let mut body = format!("{seq:08}:").into_bytes();
    body.resize(size.max(9), b'a' + (seq % 26) as u8);
    body
}

/// A ZMQ_STREAM socket bound on a free loopback port, with a send high-water mark of
/// `hwm` messages and, when `direct`, `ZMQ_STREAM_DIRECT_WRITE` on.
pub fn bound_stream(ctx: &zmq::Context, hwm: i32, direct: bool) -> (zmq::Socket, u16) {
    let stream = ctx.socket(zmq::STREAM).expect("STREAM socket");
    stream.set_sndhwm(hwm).expect("ZMQ_SNDHWM");
    stream
        .set_rcvtimeo(RECEIVE_TIMEOUT_MS)
        .expect("ZMQ_RCVTIMEO");
    if direct {
        stream
            .set_stream_direct_write(true)
            .expect("ZMQ_STREAM_DIRECT_WRITE");
    }
    let port = super::daemons::free_port();
    stream
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .expect("bind STREAM");
    (stream, port)
}

/// A client connected to `port` and its routing id on `stream` (from its connect notice).
pub fn connect(stream: &zmq::Socket, port: u16) -> (TcpStream, Vec<u8>) {
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_millis(RECEIVE_TIMEOUT_MS as u64)))
        .expect("a read timeout");
    let id = stream
        .recv_bytes(0)
        .expect("the connect notice's routing id");
    let notice = stream.recv_bytes(0).expect("the connect notice");
    assert!(notice.is_empty(), "a connect notice is empty");
    (client, id)
}

/// Reads exactly `len` bytes from `client`.
pub fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    client
        .read_exact(&mut bytes)
        .unwrap_or_else(|e| panic!("{len} bytes never came: {e}"));
    bytes
}

/// Sends `message` to `id`, waiting (bounded) while the pipe refuses it.
pub fn send_retrying(stream: &zmq::Socket, id: &[u8], message: &[u8], seq: usize) {
    for _ in 0..4_000 {
        match stream.send_to_peer(id, message) {
            Ok(()) => return,
            Err(zmq::Error::EAGAIN) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("message {seq}: {e}"),
        }
    }
    panic!("message {seq}: the pipe never took it");
}

/// Sends messages of 64 KiB to a peer that does not read until one is refused
/// (`EAGAIN`: the kernel's buffers, then the pipe, are full); the bytes of those
/// accepted, in order. Fails if 4,000 never fill it.
pub fn fill_until_refused(stream: &zmq::Socket, id: &[u8]) -> Vec<u8> {
    let mut accepted = Vec::new();
    for seq in 0..4_000 {
        let message = payload(seq, 64 * 1024);
        match stream.send_to_peer(id, &message) {
            Ok(()) => accepted.extend_from_slice(&message),
            Err(zmq::Error::EAGAIN) => return accepted,
            Err(e) => panic!("message {seq}: {e}"),
        }
    }
    panic!("4,000 messages of 64 KiB never filled the pipe");
}

/// Closes `id`'s connection once what was sent to it is written (`[routing id, empty
/// frame]`).
pub fn send_close(stream: &zmq::Socket, id: &[u8]) {
    stream
        .send(id, zmq::SNDMORE | zmq::DONTWAIT)
        .expect("the close's routing id");
    stream
        .send(zmq::Message::new(), zmq::DONTWAIT)
        .expect("the close");
}
