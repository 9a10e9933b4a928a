//! A raw WebSocket client for the tests, written from RFC 6455: it sends exactly the
//! frames a test builds (masked or not, any opcode, reserved bits, fragments) and reads
//! the server's frames one by one, so a test sees the bytes on the wire.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long a test waits for any one thing.
pub const BOUND: Duration = Duration::from_secs(10);

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a Close frame (None for an empty one).
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read1 {
    Frame(Frame),
    /// The server closed the TCP connection.
    Closed,
    /// Nothing within the wait.
    Nothing,
}

pub struct WsClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The server's handshake response head.
    pub handshake: String,
}

/// A masked client frame: `first` is the first byte (FIN, RSV, opcode).
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A client frame, masked with `mask` or not.
pub fn frame_with(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n < 65536 => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The opening handshake's request for `path`, with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

impl WsClient {
    /// Connects and sends `request` raw; returns the client with the response head
    /// read (whatever its status).
    pub fn handshake_raw(port: u16, request: &str) -> WsClient {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        stream
            .write_all(request.as_bytes())
            .expect("send the upgrade");
        let mut client = WsClient {
            stream,
            buf: Vec::new(),
            handshake: String::new(),
        };
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(end) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = client.buf.drain(..end + 4).collect();
                client.handshake = String::from_utf8_lossy(&head).into_owned();
                return client;
            }
            assert!(
                Instant::now() < deadline,
                "no handshake answer: {:?}",
                String::from_utf8_lossy(&client.buf)
            );
            if !client.fill() {
                client.handshake = String::from_utf8_lossy(&client.buf).into_owned();
                return client;
            }
        }
    }

    /// Connects and completes the opening handshake on `path`.
    pub fn open(port: u16, path: &str) -> WsClient {
        Self::open_with(port, path, "")
    }

    /// Connects and completes the opening handshake on `path`, sending the `extra`
    /// header fields (each line ending in CRLF) with the upgrade request.
    pub fn open_with(port: u16, path: &str, extra: &str) -> WsClient {
        let client = Self::handshake_raw(port, &upgrade_request(path, extra));
        assert!(
            client.handshake.starts_with("HTTP/1.1 101 "),
            "{}",
            client.handshake
        );
        assert!(
            client
                .handshake
                .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{}",
            client.handshake
        );
        client
    }

    /// Reads what arrives; false once the server closed the connection.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
            Err(_) => false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // The server may have closed already; a failed write shows in what is read.
        let _ = self.stream.write_all(bytes);
    }

    /// Sends a whole text message.
    pub fn send_text(&mut self, text: &str) {
        self.send(&client_frame(0x81, text.as_bytes()));
    }

    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if masked {
            at += 4;
        }
        if b.len() < at + len {
            return None;
        }
        let frame = Frame {
            fin: b[0] & 0x80 != 0,
            rsv: (b[0] >> 4) & 7,
            opcode: b[0] & 0x0f,
            masked,
            payload: b[at..at + len].to_vec(),
        };
        self.buf.drain(..at + len);
        Some(frame)
    }

    /// The next frame, or the close of the connection, waiting at most `wait`.
    pub fn read_within(&mut self, wait: Duration) -> Read1 {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.parse() {
                return Read1::Frame(frame);
            }
            if Instant::now() >= deadline {
                return Read1::Nothing;
            }
            if !self.fill() {
                return match self.parse() {
                    Some(frame) => Read1::Frame(frame),
                    None => Read1::Closed,
                };
            }
        }
    }

    /// The next frame (failing the test if none comes).
    pub fn frame(&mut self) -> Frame {
        match self.read_within(BOUND) {
            Read1::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Expects the server to fail the connection with `code`: a Close frame with it
    /// (data frames before it are skipped), then the end of the connection.
    pub fn expect_close(&mut self, code: u16) {
        let deadline = Instant::now() + BOUND;
        loop {
            assert!(Instant::now() < deadline, "no close");
            match self.read_within(BOUND) {
                Read1::Frame(frame) if frame.opcode == 8 => {
                    assert_eq!(frame.close_code(), Some(code), "{frame:?}");
                    assert!(!frame.masked, "a server frame is never masked");
                    break;
                }
                Read1::Frame(_) => continue,
                other => panic!("expected a close {code}, got {other:?}"),
            }
        }
        self.expect_end();
    }

    /// Expects the server to close the TCP connection.
    pub fn expect_end(&mut self) {
        match self.read_within(BOUND) {
            Read1::Closed => {}
            other => panic!("expected the connection to end, got {other:?}"),
        }
    }
}
