//! The WebSocket protocol (RFC 6455) as a server speaks it, without I/O: the opening
//! handshake's checks and `Sec-WebSocket-Accept` (§4.2), a decoder that turns a client's
//! bytes into messages and control frames (§5), and the frames a server writes.
//!
//! Frame headers are read by `tungstenite` (`FrameHeader`, its `OpCode`s and
//! `CloseCode`s), and the accept key is its `derive_accept_key`: the kept crate where it
//! fits. A server frame's header (2, 4 or 10 bytes, no mask) is written here, every
//! message's, as its `format` writes it (a test compares them). What it would also do (own the socket, buffer whole messages in its own
//! buffers) does not fit a front end that gets its bytes from ZMQ_STREAM, so the message
//! layer is here: fragments are joined into one buffer bounded by the message limit
//! (1009 past it), text is checked as UTF-8 as its fragments arrive, so a bad byte fails
//! at once and a code point split across fragments is still whole (1007), and every
//! breach of the framing rules (reserved bits or opcodes, an unmasked client frame, a
//! fragmented or long control frame, a continuation out of place, a bad close code)
//! ends the connection with 1002. Extensions (permessage-deflate) are not negotiated.

use std::borrow::Cow;
use std::io::Cursor;
use std::ops::Range;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The only protocol version served (RFC 6455 §4.4).
pub const VERSION: &str = "13";

/// The longest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Status codes of a Close frame this server sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (a drain, or a client that stopped answering pings).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Text that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy was broken (too many unanswered messages).
    pub const POLICY: u16 = 1008;
    /// A message larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Whether a data message is text or binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text (opcode 1).
    Text,
    /// Bytes (opcode 2).
    Binary,
}

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A whole data message: a message of one frame borrowed from the decoder's buffer
    /// (valid until the decoder is fed or asked again), the fragments of a fragmented
    /// one joined.
    Message(MessageKind, Cow<'a, [u8]>),
    /// A ping, with its payload (to be answered by a pong with the same).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The client's Close: its status code and reason, if it gave them.
    Close(Option<(u16, String)>),
}

impl WsEvent<'_> {
    /// The event with its own copy of a borrowed payload.
    pub fn into_owned(self) -> WsEvent<'static> {
        match self {
            WsEvent::Message(kind, payload) => {
                WsEvent::Message(kind, Cow::Owned(payload.into_owned()))
            }
            WsEvent::Ping(payload) => WsEvent::Ping(payload),
            WsEvent::Pong => WsEvent::Pong,
            WsEvent::Close(status) => WsEvent::Close(status),
        }
    }
}

/// What one frame completed: an event of its own, or a message of one frame, still
/// in the buffer at this range (lent out by [`MessageDecoder::next_event`]).
enum Found {
    Event(WsEvent<'static>),
    Whole(MessageKind, Range<usize>),
}

/// Why the connection must be failed (RFC 6455 §7.1.7): the Close code to send, and a
/// reason for the log and the Close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsFailure {
    /// The status code.
    pub code: u16,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl WsFailure {
    fn protocol(reason: &'static str) -> Self {
        WsFailure {
            code: close_code::PROTOCOL_ERROR,
            reason,
        }
    }
}

impl std::fmt::Display for WsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for WsFailure {}

/// A message whose fragments are still arriving.
struct Partial {
    kind: MessageKind,
    data: Vec<u8>,
    /// For text: how much of `data` is known to be whole UTF-8.
    valid_up_to: usize,
}

/// The decoder of one client's frames: bytes in ([`feed`](Self::feed)), events out
/// ([`next_event`](Self::next_event)). It holds at most the frame being read and the
/// message being assembled, each bounded by the message limit.
pub struct MessageDecoder {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    start: usize,
    partial: Option<Partial>,
    max_message: usize,
    failed: bool,
}

impl MessageDecoder {
    /// A decoder refusing messages longer than `max_message` bytes (1009).
    pub fn new(max_message: usize) -> Self {
        MessageDecoder {
            buf: Vec::new(),
            start: 0,
            partial: None,
            max_message,
            failed: false,
        }
    }

    /// Takes bytes as they arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether part of a frame or of a fragmented message has arrived but not all.
    pub fn is_mid_message(&self) -> bool {
        self.start < self.buf.len() || self.partial.is_some()
    }

    /// Bytes held: the unread input and the message being assembled.
    pub fn held(&self) -> usize {
        self.buf.capacity() + self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    /// The next event, `Ok(None)` when more bytes are needed. After an error the
    /// connection is failed: every later call returns `Ok(None)`. A message of one
    /// frame (the usual kind) is lent from the input buffer, not copied.
    pub fn next_event(&mut self) -> Result<Option<WsEvent<'_>>, WsFailure> {
        if self.failed {
            return Ok(None);
        }
        if self.start == self.buf.len() {
            // Everything read: the usual end of a read's frames.
            self.compact();
            return Ok(None);
        }
        let found = loop {
            match self.next_frame() {
                Ok(Some(Some(found))) => break found,
                Ok(Some(None)) => continue,
                Ok(None) => {
                    self.compact();
                    return Ok(None);
                }
                Err(failure) => {
                    self.failed = true;
                    self.buf = Vec::new();
                    self.partial = None;
                    return Err(failure);
                }
            }
        };
        Ok(Some(match found {
            Found::Event(event) => event,
            Found::Whole(kind, range) => WsEvent::Message(kind, Cow::Borrowed(&self.buf[range])),
        }))
    }

    /// Gives back the consumed input's room once most of the buffer is consumed.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 64 * 1024 {
                self.buf = Vec::new();
            }
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// One frame: `None` when incomplete, `Some(None)` for a fragment that completes
    /// nothing yet.
    fn next_frame(&mut self) -> Result<Option<Option<Found>>, WsFailure> {
        let Some((header, length, header_len)) = client_header(&self.buf[self.start..])? else {
            return Ok(None);
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WsFailure::protocol("a reserved bit is set"));
        }
        let Some(mask) = header.mask else {
            return Err(WsFailure::protocol("a client frame is not masked"));
        };
        let control = matches!(header.opcode, OpCode::Control(_));
        if control && (!header.is_final || length > MAX_CONTROL_PAYLOAD as u64) {
            return Err(WsFailure::protocol(
                "a control frame is fragmented or longer than 125 bytes",
            ));
        }
        let assembled = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
        if !control && assembled.saturating_add(length) > self.max_message as u64 {
            return Err(WsFailure {
                code: close_code::TOO_BIG,
                reason: "the message is larger than the limit",
            });
        }
        let length = length as usize;
        let available = self.buf.len() - self.start - header_len;
        if available < length {
            return Ok(None);
        }
        let from = self.start + header_len;
        let payload = &mut self.buf[from..from + length];
        unmask(payload, mask);
        self.start = from + length;
        let payload = &self.buf[from..from + length];
        let event = |event| Ok(Some(Some(Found::Event(event))));
        match header.opcode {
            OpCode::Control(Control::Ping) => event(WsEvent::Ping(payload.to_vec())),
            OpCode::Control(Control::Pong) => event(WsEvent::Pong),
            OpCode::Control(Control::Close) => close_event(payload).and_then(event),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(WsFailure::protocol("a reserved opcode"))
            }
            OpCode::Data(Data::Continue) => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(WsFailure::protocol("a continuation frame starts nothing"));
                };
                partial.data.extend_from_slice(payload);
                check_utf8(partial, header.is_final)?;
                if header.is_final {
                    let done = self
                        .partial
                        .take()
                        .map(|p| Found::Event(WsEvent::Message(p.kind, Cow::Owned(p.data))));
                    return Ok(Some(done));
                }
                Ok(Some(None))
            }
            OpCode::Data(data) => {
                if self.partial.is_some() {
                    return Err(WsFailure::protocol(
                        "a new message began before the last one ended",
                    ));
                }
                let kind = if data == Data::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                if header.is_final {
                    // A message of one frame stays where it is: the caller copies it
                    // once, into the request's frame.
                    if kind == MessageKind::Text && !is_utf8(payload) {
                        return Err(WsFailure {
                            code: close_code::INVALID_PAYLOAD,
                            reason: "text that is not UTF-8",
                        });
                    }
                    return Ok(Some(Some(Found::Whole(kind, from..from + length))));
                }
                let mut partial = Partial {
                    kind,
                    data: payload.to_vec(),
                    valid_up_to: 0,
                };
                check_utf8(&mut partial, false)?;
                self.partial = Some(partial);
                Ok(Some(None))
            }
        }
    }
}

/// Whether `bytes` are UTF-8: ASCII first, a word at a time (most messages are), then
/// the full check.
pub fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// Checks the text received so far: a bad sequence fails at once; an incomplete one at
/// the end waits for the next fragment, unless this was the last.
fn check_utf8(partial: &mut Partial, last: bool) -> Result<(), WsFailure> {
    if partial.kind != MessageKind::Text {
        return Ok(());
    }
    let invalid = WsFailure {
        code: close_code::INVALID_PAYLOAD,
        reason: "text that is not UTF-8",
    };
    match std::str::from_utf8(&partial.data[partial.valid_up_to..]) {
        Ok(_) => partial.valid_up_to = partial.data.len(),
        Err(e) if e.error_len().is_some() || last => return Err(invalid),
        Err(e) => partial.valid_up_to += e.valid_up_to(),
    }
    Ok(())
}

/// A Close frame's payload (RFC 6455 §5.5.1): empty, or a valid code and UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<WsEvent<'static>, WsFailure> {
    match payload {
        [] => Ok(WsEvent::Close(None)),
        [_] => Err(WsFailure::protocol("a close frame of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_allowed(code) {
                return Err(WsFailure::protocol("a close code that may not be sent"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsFailure {
                code: close_code::INVALID_PAYLOAD,
                reason: "a close reason that is not UTF-8",
            })?;
            Ok(WsEvent::Close(Some((code, reason.to_string()))))
        }
    }
}

/// Whether a peer may send `code` in a Close frame (RFC 6455 §7.4: the defined codes
/// but 1004-1006 and 1015, and 3000-4999).
pub fn close_code_allowed(code: u16) -> bool {
    (1000..5000).contains(&code) && CloseCode::from(code).is_allowed()
}

/// A client frame's header at the start of `input`, its payload's length and the
/// header's: `None` while incomplete; a reserved opcode fails (1002). The usual frame
/// (masked, under 126 bytes: a 6-byte header) is read here, bit for bit as
/// `FrameHeader::parse` reads it (§5.2), without its reader; any other by it.
fn client_header(input: &[u8]) -> Result<Option<(FrameHeader, u64, usize)>, WsFailure> {
    let reserved = || WsFailure::protocol("a reserved opcode");
    if let [first, second, m0, m1, m2, m3, ..] = *input {
        if second & 0x80 != 0 && second & 0x7F < 126 {
            let opcode = OpCode::from(first & 0x0F);
            if matches!(
                opcode,
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_))
            ) {
                return Err(reserved());
            }
            let header = FrameHeader {
                is_final: first & 0x80 != 0,
                rsv1: first & 0x40 != 0,
                rsv2: first & 0x20 != 0,
                rsv3: first & 0x10 != 0,
                opcode,
                mask: Some([m0, m1, m2, m3]),
            };
            return Ok(Some((header, u64::from(second & 0x7F), 6)));
        }
    }
    let mut cursor = Cursor::new(input);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((header, length))) => Ok(Some((header, length, cursor.position() as usize))),
        Ok(None) => Ok(None),
        Err(_) => Err(reserved()),
    }
}

/// Unmasks a client frame's payload in place (§5.3): eight bytes at a time, then the
/// rest byte by byte (eight is a whole number of masks, so the key stays in step).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let key = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key).to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The longest header of a server frame, in bytes (RFC 6455 §5.2: 2, then 8 for a
/// 64-bit length, and no masking key).
pub const MAX_SERVER_HEADER: usize = 10;

/// The header of a server frame (never masked, RFC 6455 §5.1) of `payload_len` bytes:
/// `opcode` 0x1 text, 0x2 binary, 0x8 close, 0x9 ping, 0xA pong; final, no reserved
/// bit. Returns the bytes and how many of them are the header (2, 4 or 10).
///
/// ```
/// use prime_server::http::websocket::frame_header;
/// let (bytes, len) = frame_header(0x1, 300);
/// assert_eq!(&bytes[..len], [0x81, 126, 1, 44]);
/// ```
pub fn frame_header(opcode: u8, payload_len: usize) -> ([u8; MAX_SERVER_HEADER], usize) {
    // Written here rather than by `FrameHeader::format` (a writer and a match per
    // field, about a hundred instructions a message): FIN and the opcode, then the
    // length in 7 bits, or 126 and 16 bits, or 127 and 64 bits (§5.2), no mask.
    let mut bytes = [0; MAX_SERVER_HEADER];
    bytes[0] = 0x80 | (opcode & 0x0F);
    let len = match payload_len {
        0..=125 => {
            bytes[1] = payload_len as u8;
            2
        }
        126..=0xFFFF => {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        }
    };
    (bytes, len)
}

/// A server frame (never masked, RFC 6455 §5.1): `opcode` 0x1 text, 0x2 binary, 0x8
/// close, 0x9 ping, 0xA pong; final, no reserved bit.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let (header, len) = frame_header(opcode, payload.len());
    let mut out = Vec::with_capacity(len + payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
    out
}

/// The opcode of a data message's frame: 0x1 text, 0x2 binary.
pub fn message_opcode(kind: MessageKind) -> u8 {
    match kind {
        MessageKind::Text => 0x1,
        MessageKind::Binary => 0x2,
    }
}

/// A data message as a server frame.
pub fn message_frame(kind: MessageKind, payload: &[u8]) -> Vec<u8> {
    frame(message_opcode(kind), payload)
}

/// A Close frame with a status code and a reason (cut to fit 125 bytes at a character
/// boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(0x8, &payload)
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (RFC 6455
/// §4.2.2).
///
/// ```
/// // The example of RFC 6455 §1.3.
/// let accept = prime_server::http::websocket::accept_key("dGhlIHNhbXBsZSBub25jZQ==");
/// assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &str) -> String {
    tungstenite::handshake::derive_accept_key(key.as_bytes())
}

/// Whether a request head asks for a WebSocket: `Upgrade: websocket` and `Connection:
/// Upgrade` (tokens of their lists, any case; RFC 6455 §4.1). A request with only one
/// of them is no upgrade, and is served as HTTP (RFC 9110 §7.8: `Upgrade` may be
/// ignored).
///
/// ```
/// use prime_server::http::websocket::asks_upgrade;
/// assert!(asks_upgrade(b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"));
/// assert!(!asks_upgrade(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
/// ```
pub fn asks_upgrade(head: &[u8]) -> bool {
    let lists = |name: &'static str, token: &'static [u8]| {
        super::field_values(head, name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    lists("upgrade", b"websocket") && lists("connection", b"upgrade")
}

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 §4.1 asks: 16 bytes in base64.
pub fn key_is_valid(key: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|bytes| bytes.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_headers_are_read_as_tungstenite_reads_them() {
        // Every first byte, masked lengths of 7 bits (the fast path) and beyond it.
        for first in 0..=255u8 {
            for second in [0x80, 0x81, 0x80 | 125, 0x80 | 126, 0x80 | 127, 0x05] {
                let input = [first, second, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
                let ours = client_header(&input);
                let theirs = FrameHeader::parse(&mut Cursor::new(&input[..]));
                match (ours, theirs) {
                    (Ok(Some((h, len, at))), Ok(Some((t, tlen)))) => {
                        assert_eq!((h, len), (t, tlen), "{first:#x} {second:#x}");
                        let mut cursor = Cursor::new(&input[..]);
                        let _ = FrameHeader::parse(&mut cursor);
                        assert_eq!(at as u64, cursor.position());
                    }
                    (Err(_), Err(_)) => {}
                    (ours, theirs) => panic!("{first:#x} {second:#x}: {ours:?} {theirs:?}"),
                }
            }
        }
        // Incomplete: no header yet.
        assert!(matches!(client_header(&[0x81, 0x81, 0, 0]), Ok(None)));
    }

    #[test]
    fn payloads_are_unmasked_in_step_with_the_key() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut masked: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ mask[i % 4])
                .collect();
            unmask(&mut masked, mask);
            assert_eq!(masked, plain, "{len} bytes");
        }
    }

    #[test]
    fn server_frame_headers_are_tungstenites() {
        for opcode in [0x1, 0x2, 0x8, 0x9, 0xA] {
            for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 32] {
                let expected = FrameHeader {
                    opcode: OpCode::from(opcode),
                    ..FrameHeader::default()
                };
                let mut formatted = Vec::new();
                expected.format(len as u64, &mut formatted).unwrap();
                let (bytes, header_len) = super::frame_header(opcode, len);
                assert_eq!(&bytes[..header_len], &formatted[..], "{opcode} {len}");
            }
        }
    }

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn events(bytes: &[u8], max: usize) -> Result<Vec<WsEvent<'static>>, WsFailure> {
        let mut decoder = MessageDecoder::new(max);
        let mut out = Vec::new();
        // One byte at a time: ZMQ_STREAM splits anywhere.
        for byte in bytes {
            decoder.feed(&[*byte]);
            while let Some(event) = decoder.next_event()? {
                out.push(event.into_owned());
            }
        }
        Ok(out)
    }

    #[test]
    fn reads_every_length_form_and_joins_fragments_around_pings() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload = vec![b'a'; len];
            let got = events(&client(0x82, &payload), 1 << 20).unwrap();
            assert_eq!(got, [WsEvent::Message(MessageKind::Binary, payload.into())]);
        }
        let mut bytes = client(0x01, "h\u{e9}".as_bytes()[..2].as_ref());
        bytes.extend(client(0x89, b"p"));
        bytes.extend(client(0x80, &"h\u{e9}".as_bytes()[2..]));
        let got = events(&bytes, 100).unwrap();
        assert_eq!(
            got,
            [
                WsEvent::Ping(b"p".to_vec()),
                WsEvent::Message(MessageKind::Text, "h\u{e9}".as_bytes().into())
            ]
        );
    }

    #[test]
    fn messages_of_one_frame_are_lent_and_fragmented_ones_joined() {
        // Three messages in one read: each of one frame is lent from the buffer, in
        // order, until the decoder is asked again.
        let mut bytes = client(0x81, b"7");
        bytes.extend(client(0x82, &[0, 255]));
        bytes.extend(client(0x01, b"a"));
        bytes.extend(client(0x80, b"b"));
        bytes.extend(client(0x81, "\u{e9}t\u{e9}".as_bytes()));
        let mut decoder = MessageDecoder::new(100);
        decoder.feed(&bytes);
        let mut got = Vec::new();
        while let Some(event) = decoder.next_event().unwrap() {
            if let WsEvent::Message(_, payload) = &event {
                got.push(matches!(payload, Cow::Borrowed(_)));
            }
            assert!(matches!(event, WsEvent::Message(..)));
        }
        assert_eq!(
            got,
            [true, true, false, true],
            "only the fragmented one is joined"
        );
        let all = events(&bytes, 100).unwrap();
        let text = |t: &str| WsEvent::Message(MessageKind::Text, t.as_bytes().to_vec().into());
        assert_eq!(
            all,
            [
                text("7"),
                WsEvent::Message(MessageKind::Binary, vec![0, 255].into()),
                text("ab"),
                text("\u{e9}t\u{e9}"),
            ]
        );
        // A frame header says 1 byte of text, and the byte is not UTF-8: 1007 at once.
        let mut decoder = MessageDecoder::new(100);
        decoder.feed(&client(0x81, &[0xc3]));
        assert_eq!(decoder.next_event().unwrap_err().code, 1007);
    }

    #[test]
    fn fails_with_the_code_rfc_6455_gives() {
        let code = |bytes: Vec<u8>| events(&bytes, 100).unwrap_err().code;
        assert_eq!(code(client(0xc1, b"x")), 1002, "rsv1");
        assert_eq!(code(client(0x83, b"x")), 1002, "reserved data opcode");
        assert_eq!(code(client(0x8b, b"")), 1002, "reserved control opcode");
        assert_eq!(code(vec![0x81, 0x01, b'x']), 1002, "unmasked");
        assert_eq!(code(client(0x09, b"")), 1002, "fragmented ping");
        assert_eq!(code(client(0x89, &[0; 126])), 1002, "long ping");
        assert_eq!(code(client(0x80, b"x")), 1002, "continuation alone");
        let mut two = client(0x01, b"a");
        two.extend(client(0x81, b"b"));
        assert_eq!(code(two), 1002, "text inside a fragmented message");
        assert_eq!(code(client(0x81, &[0xff])), 1007);
        assert_eq!(code(client(0x82, &[0; 101])), 1009);
        let mut big = client(0x02, &[0; 60]);
        big.extend(client(0x80, &[0; 60]));
        assert_eq!(code(big), 1009, "fragments together past the limit");
        assert_eq!(code(client(0x88, &[3])), 1002, "one-byte close");
        assert_eq!(code(client(0x88, &1005u16.to_be_bytes())), 1002);
        assert_eq!(
            code(client(0x88, &[3, 0xe8, 0xff])),
            1007,
            "reason not UTF-8"
        );
    }

    #[test]
    fn a_split_code_point_waits_and_a_bad_one_fails_before_the_message_ends() {
        // A lone lead byte is fine mid-message...
        let got = events(&client(0x01, &[0xce]), 100);
        assert_eq!(got, Ok(vec![]));
        // ...but a bad sequence fails before the final fragment.
        let mut bytes = client(0x01, b"ok");
        bytes.extend(client(0x00, &[0xed, 0xa0, 0x80]));
        assert_eq!(events(&bytes, 100).unwrap_err().code, 1007);
    }

    #[test]
    fn close_codes_follow_section_7_4() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(close_code_allowed(ok), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!close_code_allowed(bad), "{bad}");
        }
        let frame = close_frame(1000, &"\u{e9}".repeat(100));
        assert!(frame.len() <= 127);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        assert_eq!(frame(0x1, b"hi"), [0x81, 2, b'h', b'i']);
        assert_eq!(&frame(0x2, &[0; 126])[..4], [0x82, 126, 0, 126]);
        assert_eq!(&frame(0x2, &[0; 65536])[..2], [0x82, 127]);
        assert!(key_is_valid("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!key_is_valid("c2hvcnQ="));
    }
}
