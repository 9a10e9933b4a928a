//! WebSocket clients (RFC 6455) at the front end: the upgrade goes through the
//! pipeline, the front end completes the handshake, and then each message the client
//! sends is a request of its own, its answer a message back, in message order.
//!
//! - **Upgrade** (`upgrade`, below): a `GET` with `Upgrade: websocket` is checked here
//!   first (version 13 only, else `426` with `Sec-WebSocket-Version: 13`; a key of 16
//!   bytes; with CORS configured, an `Origin` the policy does not allow is `403`), then
//!   sent into the pipeline like any request. Its answer decides: a `101` (from
//!   [`Next::accept_websocket`](crate::stages::Next::accept_websocket)), held or not,
//!   completes the handshake (§4.2.2) and the connection's decoder becomes a
//!   [`WsState`]; so does a `200` of GRIP's WebSocket-over-HTTP events beginning with
//!   `OPEN` (a gateway backend's accept), whose other events are sent at once; any
//!   other answer refuses the upgrade, written as it is, and the connection closes
//!   after it. No request is read while the upgrade is decided.
//! - **Messages** (`messages`): each text or binary message enters the pipeline as a
//!   `POST` with the upgrade request's head (its target, `Cookie`, `Authorization` and
//!   the rest, less the handshake's fields), the envelope flagged as a WebSocket
//!   message, through the entry the head's task names. Its slot keeps its place in the
//!   connection's answer order, and the answer, an HTTP response from the worker like
//!   any, is turned into one frame when it leaves ([`answer_frame`]). Pings are
//!   answered at once; a Close is answered and the connection closes once it is
//!   written, interrupting what is still running, as a client that leaves does.
//! - **Push** (`push`): a socket held on channels (at the accept, or later by a
//!   message's stage, [`Next::subscribe_websocket`](crate::stages::Next::subscribe_websocket))
//!   gets each published item's `ws-message` format as a message, in its connection's
//!   output, which `max_output_bytes` bounds as for any answer: a socket that does not
//!   read is dropped.
//! - **Keeping alive**: a socket quiet for `ping` is sent a ping; one still quiet a
//!   `ping` later is dropped. WebSockets are not closed by `idle_timeout`.
//! - **GRIP** (`grip`): a socket a gateway backend accepted follows the control
//!   messages among its backend's events (`subscribe`, `unsubscribe`, `detach`,
//!   `keep-alive`), in their order.
//! - **Metrics** (`stats`): sockets open, messages each way, closes by code, upgrades
//!   refused, in the front end's Prometheus exposition.
//!
//! The framing is [`crate::http::websocket`]; no extension is negotiated (no
//! permessage-deflate).

mod grip;
mod messages;
mod push;
mod stats;

pub(super) use stats::WsStats;

use super::front::EntryIndex;
use super::output::AnswerBytes;
use super::Server;
use crate::base::fast_hash::FastMap;
use crate::http::websocket::{self, MessageDecoder, MessageKind};
use crate::http::websocket_events as events;
use crate::http::{field_text, field_values, Method, ParsedRequest, Response};
use crate::pipeline::loopback::Payload;
use memchr::memmem::Finder;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The WebSocket settings of a front end.
#[derive(Clone, Debug)]
pub struct WebSocketConfig {
    /// Ping a socket quiet this long; drop it when still quiet as long again (none:
    /// never; 30 s by default).
    pub ping: Option<Duration>,
    /// The largest message a client may send, in bytes (fragments together); a larger
    /// one closes the socket with 1009. 1 MiB by default.
    pub max_message: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            ping: Some(Duration::from_secs(30)),
            max_message: 1024 * 1024,
        }
    }
}

/// An upgrade request in the pipeline, waiting for its stage's answer.
pub(super) struct PendingUpgrade {
    /// The client's `Sec-WebSocket-Key`.
    key: Box<str>,
    /// The subprotocols the client offered.
    offered: Vec<String>,
    /// The head each message's request gets (see [`message_head`]).
    head: Box<[u8]>,
    /// The entry the upgrade request's head routes to, which its messages take too.
    entry: EntryIndex,
}

/// A connection that speaks WebSocket: its decoder and what its messages need.
pub(crate) struct WsState {
    pub(super) decoder: MessageDecoder,
    /// The head of each message's request, up to its `Content-Type`.
    pub(super) head: std::sync::Arc<[u8]>,
    pub(super) entry: EntryIndex,
    /// The id its channels know it by, and the channels, once it is held on any.
    pub(super) hold: Option<(u64, Vec<Box<str>>)>,
    /// A Close was sent: nothing more is.
    pub(super) close_sent: bool,
    /// The code of the Close sent, once one is.
    pub(super) close_code: Option<u16>,
    /// When a ping went out that nothing has followed yet.
    pub(super) ping_sent: Option<Instant>,
    /// Accepted with GRIP's WebSocket-over-HTTP events (a gateway backend's accept):
    /// its close is told to the pipeline as a `CLOSE` or `DISCONNECT` event.
    pub(super) grip: bool,
    /// The client's Close: its status code, if it sent one (the `CLOSE` event's
    /// content); none while the client has not closed.
    pub(super) client_close: Option<Vec<u8>>,
    /// A GRIP backend sent `detach`: the client's messages and close are no longer
    /// sent into the pipeline.
    pub(super) detached: bool,
    /// A GRIP backend's `keep-alive`, if one is on.
    pub(super) keep_alive: Option<Box<KeepAliveState>>,
    /// What the access log says of the socket when it closes.
    pub(in super::super) log: SocketLog,
}

/// A socket's line in the access log, written when it closes (its messages get none:
/// see `access_log`): its upgrade request's, and what happened since.
pub(crate) struct SocketLog {
    /// The upgrade request's id. (Its line is the messages' head's first, `GET` for
    /// `POST`: [`WsState::request_line`]; its entry theirs.)
    pub(in super::super) request_id: u64,
    /// When the upgrade request arrived.
    pub(in super::super) arrived: Instant,
    /// Text and binary messages received.
    pub(in super::super) received: u64,
    /// Text and binary messages sent.
    pub(in super::super) sent: u64,
    /// The bytes of the frames of the messages sent.
    pub(in super::super) sent_bytes: u64,
}

impl WsState {
    /// The upgrade request's line (for the access log): a `GET` of the target its
    /// messages' head carries (an upgrade is a `GET` over HTTP/1.1, checked).
    pub(super) fn request_line(&self) -> Vec<u8> {
        let first = self.head.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut line = b"GET".to_vec();
        line.extend_from_slice(first.strip_prefix(b"POST").unwrap_or(first));
        line
    }
}

/// A socket's keep-alive (GRIP's `keep-alive` control message): the frame sent when
/// it falls due.
pub(super) struct KeepAliveState {
    /// The whole frame.
    pub(super) frame: Vec<u8>,
    /// The idle time (or, `interval`, the period) before it is sent.
    pub(super) every: Duration,
    /// Sent at every `every` whatever else went (else only after `every` of silence).
    pub(super) interval: bool,
    /// When it is sent next, unless something else goes first (idle mode).
    pub(super) due: Instant,
}

/// The front end's WebSocket state beside its connections.
#[derive(Default)]
pub(super) struct WebSockets {
    /// Upgrade requests in the pipeline, by request id.
    pub(super) pending: FastMap<u64, PendingUpgrade>,
    /// Sockets held on channels: hold id → connection.
    pub(super) holds: FastMap<u64, u64>,
    /// Handshakes completed.
    pub(super) opened: u64,
    /// What the metrics count.
    pub(super) stats: WsStats,
}

/// What the front end makes of a request with an `Upgrade` field.
pub(super) enum UpgradeCheck {
    /// Not a WebSocket upgrade: served as any request.
    NotWebSocket,
    /// A WebSocket upgrade the front end refuses itself.
    Refuse(Response),
    /// A valid upgrade, for the pipeline to accept or refuse.
    Upgrade(PendingUpgrade),
}

/// Header fields of the upgrade request that its messages' requests leave out: the
/// handshake's and the framing's.
const DROPPED_FIELDS: [&str; 9] = [
    "upgrade",
    "connection",
    "content-length",
    "transfer-encoding",
    "content-type",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "expect",
];

/// Checks a request with an `Upgrade` field (RFC 6455 §4.2.1).
pub(super) fn check_upgrade(
    request: &ParsedRequest,
    cors: Option<&super::CorsConfig>,
    entry: EntryIndex,
) -> UpgradeCheck {
    let head = &request.head;
    if !websocket::asks_upgrade(head) {
        return UpgradeCheck::NotWebSocket;
    }
    if request.method != Method::Get || request.minor_version != 1 {
        return UpgradeCheck::Refuse(Response::error(
            400,
            "a WebSocket upgrade is a GET over HTTP/1.1",
        ));
    }
    if field_text(head, "sec-websocket-version") != Some(websocket::VERSION) {
        return UpgradeCheck::Refuse(
            Response::error(426, "only WebSocket version 13 is served")
                .header("Sec-WebSocket-Version", websocket::VERSION),
        );
    }
    let key = match field_text(head, "sec-websocket-key") {
        Some(key) if websocket::key_is_valid(key) => key,
        _ => {
            return UpgradeCheck::Refuse(Response::error(
                400,
                "Sec-WebSocket-Key must be 16 bytes in base64",
            ))
        }
    };
    if let (Some(cors), Some(origin)) = (cors, field_text(head, "origin")) {
        if cors.allow_origin(origin).is_none() {
            return UpgradeCheck::Refuse(Response::error(
                403,
                "this origin may not open a WebSocket here",
            ));
        }
    }
    let offered = field_values(head, "sec-websocket-protocol")
        .flat_map(|value| value.split(|&b| b == b','))
        .filter_map(|token| std::str::from_utf8(token.trim_ascii()).ok())
        .filter(|token| !token.is_empty())
        .map(str::to_string)
        .collect();
    UpgradeCheck::Upgrade(PendingUpgrade {
        key: key.into(),
        offered,
        head: message_head(request),
        entry,
    })
}

/// The head of a message's request: `POST`, the upgrade's target, its fields but
/// [`DROPPED_FIELDS`]; each message adds its `Content-Type` and the blank line.
fn message_head(request: &ParsedRequest) -> Box<[u8]> {
    let mut head = Vec::with_capacity(request.head.len());
    crate::http::post_head_without(
        &mut head,
        request.target_str(),
        &request.head,
        &DROPPED_FIELDS,
    );
    head.into_boxed_slice()
}

/// An answer's header fields: names and values.
type Fields = Vec<(String, Vec<u8>)>;

/// The status and fields of an HTTP answer's head, and where its body starts.
fn read_answer(bytes: &[u8]) -> Option<(u16, Fields, usize)> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => Some((
            response.code?,
            response
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            len,
        )),
        _ => None,
    }
}

/// What an answer's head says of its body, read in place.
struct AnswerHead<'a> {
    status: u16,
    /// The `Content-Type` field's value, trimmed.
    content_type: Option<&'a [u8]>,
    /// Where the body starts.
    body_at: usize,
}

/// The searchers of [`answer_head`]'s usual case: the blank line that ends a head, and
/// the `Content-Type` field as workers write it.
static HEAD_SEARCHERS: LazyLock<(Finder<'static>, Finder<'static>)> =
    LazyLock::new(|| (Finder::new(b"\r\n\r\n"), Finder::new(b"\r\nContent-Type:")));

/// The status, `Content-Type` and body of an answer to a message (an HTTP/1.x
/// response a worker rendered), without allocating: this runs for every message, so it
/// looks for the one field it needs rather than collecting them all. The usual head
/// (lines ending in CRLF, the field spelt `Content-Type`, as `Response` writes it)
/// takes two vector searches; any other goes line by line.
fn answer_head(bytes: &[u8]) -> Option<AnswerHead<'_>> {
    if !bytes.starts_with(b"HTTP/1.") || !matches!(bytes.get(12), Some(b' ' | b'\r')) {
        return None;
    }
    let mut status = 0u16;
    for &digit in bytes.get(9..12)? {
        if !digit.is_ascii_digit() {
            return None;
        }
        status = status * 10 + u16::from(digit - b'0');
    }
    let (blank_line, field) = &*HEAD_SEARCHERS;
    if let Some(end) = blank_line.find(bytes) {
        // The head with its last field's line end, so a match is a whole field name.
        let head = &bytes[..end + 2];
        if let Some(at) = field.find(head) {
            let value = &head[at + 15..];
            let value = &value[..memchr::memchr(b'\r', value).unwrap_or(value.len())];
            return Some(AnswerHead {
                status,
                content_type: Some(value.trim_ascii()),
                body_at: end + 4,
            });
        }
    }
    answer_head_by_lines(bytes, status)
}

/// [`answer_head`] for any head: line by line to the blank line, the field's name in
/// any case, lines ending in LF or CRLF.
fn answer_head_by_lines(bytes: &[u8], status: u16) -> Option<AnswerHead<'_>> {
    let name = b"content-type:";
    let mut content_type = None;
    let mut at = memchr::memchr(b'\n', bytes)? + 1;
    loop {
        let end = at + memchr::memchr(b'\n', &bytes[at..])?;
        let line = &bytes[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Some(AnswerHead {
                status,
                content_type,
                body_at: end + 1,
            });
        }
        if content_type.is_none()
            && line.len() >= name.len()
            && line[0] | 0x20 == b'c'
            && line[..name.len()].eq_ignore_ascii_case(name)
        {
            content_type = Some(line[name.len()..].trim_ascii());
        }
        at = end + 1;
    }
}

/// Whether `haystack` holds `needle`, ASCII case aside.
fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Whether an answer of this media type is sent as text (when its body is UTF-8).
fn is_textual(content_type: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        content_type
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    };
    starts(b"text/")
        || starts(b"application/json")
        || contains_ignoring_case(content_type, b"+json")
        || contains_ignoring_case(content_type, b"charset=utf-8")
}

/// An answer to a message as it leaves, in frames.
pub(in super::super) struct Framed {
    /// The frames.
    pub(in super::super) bytes: AnswerBytes,
    /// The frames end with a Close, of this code.
    pub(in super::super) close: Option<u16>,
    /// How many text and binary messages they hold.
    pub(in super::super) messages: u64,
    /// The answer's HTTP status, for the metrics (none when it was no HTTP answer).
    pub(in super::super) status: Option<[u8; 3]>,
}

/// An answer to a message, as it leaves: its body as one frame (text when its
/// `Content-Type` is text or JSON and its body UTF-8, binary otherwise), or the frames
/// of its events for `application/websocket-events` (GRIP's WebSocket-over-HTTP, from
/// the gateway); nothing for a `204`, an empty answer, or once the socket has sent its
/// Close. `alone`: nothing waits in the connection's output before it and no answer is
/// ready behind it, so the frame goes as a message of its own (written straight into
/// one for libzmq); otherwise it is joined with its neighbours (a vector, grown in
/// place).
pub(in super::super) fn answer_frame(answer: AnswerBytes, closed: bool, alone: bool) -> Framed {
    let mut nothing = Framed {
        bytes: AnswerBytes::Owned(Vec::new()),
        close: None,
        messages: 0,
        status: None,
    };
    let bytes = answer.as_slice();
    if closed || bytes.is_empty() {
        return nothing;
    }
    let Some(head) = answer_head(bytes) else {
        return nothing;
    };
    // Three ASCII digits: `answer_head` read them.
    let status = bytes.get(9..12).and_then(|digits| digits.try_into().ok());
    if head.status == 204 {
        nothing.status = status;
        return nothing;
    }
    let body = &bytes[head.body_at..];
    if head
        .content_type
        .is_some_and(|value| value.eq_ignore_ascii_case(events::CONTENT_TYPE.as_bytes()))
    {
        return Framed {
            status,
            ..event_frames(body)
        };
    }
    let textual = head.content_type.is_none_or(is_textual);
    let kind = if textual && websocket::is_utf8(body) {
        MessageKind::Text
    } else {
        MessageKind::Binary
    };
    let bytes = match alone {
        true => AnswerBytes::Message(Payload::from(message_frame(kind, body))),
        false => AnswerBytes::Owned(websocket::message_frame(kind, body)),
    };
    Framed {
        bytes,
        close: None,
        messages: 1,
        status,
    }
}

/// A data message's frame written straight into a message for libzmq: one allocation
/// (none up to libzmq's 33 inline bytes), freed once by libzmq, where a vector handed
/// over costs libzmq an allocation of its own and a free through a callback.
fn message_frame(kind: MessageKind, body: &[u8]) -> zmq::Message {
    let (header, header_len) = websocket::frame_header(websocket::message_opcode(kind), body.len());
    // Each byte written once (our zmq binding's `concat`, as lead frames are made).
    zmq::Message::concat(&header[..header_len], &[body])
}

/// The frames of a body of GRIP WebSocket-over-HTTP events: `TEXT`, `BINARY`, `PING`,
/// `PONG`, and `CLOSE` (after which nothing is sent). Control messages (`TEXT` with
/// `c:`) are followed, never sent (`grip`); a malformed body sends nothing.
fn event_frames(body: &[u8]) -> Framed {
    let mut out = Vec::new();
    let mut messages = 0;
    let list = match events::parse(body) {
        Ok(list) => list,
        Err(e) => {
            log::warn!("an answer's WebSocket events were not sent: {e}");
            Vec::new()
        }
    };
    let mut close = None;
    for event in list {
        if event.control().is_some() {
            continue;
        }
        match event.kind.as_str() {
            "TEXT" if std::str::from_utf8(&event.content).is_ok() => {
                messages += 1;
                out.extend(websocket::message_frame(MessageKind::Text, &event.content))
            }
            "BINARY" => {
                messages += 1;
                out.extend(websocket::message_frame(
                    MessageKind::Binary,
                    &event.content,
                ))
            }
            "PING" | "PONG" if event.content.len() <= websocket::MAX_CONTROL_PAYLOAD => {
                let opcode = if event.kind == "PING" { 0x9 } else { 0xA };
                out.extend(websocket::frame(opcode, &event.content));
            }
            "CLOSE" => {
                let code = match event.content.get(..2) {
                    Some(code) => u16::from_be_bytes([code[0], code[1]]),
                    None => websocket::close_code::NORMAL,
                };
                let reason = std::str::from_utf8(event.content.get(2..).unwrap_or_default());
                out.extend(websocket::close_frame(code, reason.unwrap_or_default()));
                close = Some(code);
                break;
            }
            "OPEN" => {}
            other => log::debug!("a WebSocket event {other} is not sent"),
        }
    }
    Framed {
        bytes: AnswerBytes::Owned(out),
        close,
        messages,
        status: None,
    }
}

impl Server {
    /// Notes an upgrade request just sent into the pipeline (its slot is the
    /// connection's last); nothing more is read from the connection until its answer.
    pub(super) fn upgrade_sent(&mut self, id: u64, pending: PendingUpgrade) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let Some(request_id) = conn.slots.back().map(|slot| slot.request_id) else {
            return;
        };
        if !self.requests.contains_key(&request_id) {
            return;
        }
        // A refusal closes the connection after it; an accept takes this back.
        conn.close_after(request_id);
        self.websocket.pending.insert(request_id, pending);
    }

    /// The answer to an upgrade request: a `101` completes the handshake (and holds
    /// the socket on `channels`); anything else is the refusal, as it is. Returns the
    /// bytes for the request's slot.
    pub(super) fn complete_upgrade(
        &mut self,
        id: u64,
        request_id: u64,
        pending: PendingUpgrade,
        answer: AnswerBytes,
        channels: &[&str],
    ) -> AnswerBytes {
        let Some((status, fields, body_at)) = read_answer(answer.as_slice()) else {
            return answer;
        };
        let is_events = fields.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("content-type")
                && value.eq_ignore_ascii_case(events::CONTENT_TYPE.as_bytes())
        });
        // GRIP's accept: events that begin with OPEN (a gateway backend's).
        let grip_open = status == 200
            && is_events
            && events::parse(&answer.as_slice()[body_at..])
                .is_ok_and(|list| list.first().is_some_and(|e| e.kind == "OPEN"));
        if status != 101 && !grip_open {
            log::info!("request {request_id}: the stage refused the WebSocket upgrade");
            self.websocket.stats.refused_stage += 1;
            return answer;
        }
        let chosen = fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .map(|(_, value)| String::from_utf8_lossy(value).trim().to_string());
        if let Some(chosen) = &chosen {
            if !pending.offered.iter().any(|offered| offered == chosen) {
                log::error!(
                    "request {request_id}: the stage chose a subprotocol the client did not offer"
                );
                self.websocket.stats.refused_stage += 1;
                let refusal = Response::error(500, "the server chose a subprotocol not offered");
                return AnswerBytes::Owned(refusal.to_bytes(1, false, false));
            }
        }
        let Some(conn) = self.connections.get_mut(&id) else {
            return answer;
        };
        let mut head = String::from(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        head.push_str(&format!(
            "Sec-WebSocket-Accept: {}\r\n",
            websocket::accept_key(&pending.key)
        ));
        let mut head = head.into_bytes();
        for (name, value) in &fields {
            let skip = [
                "upgrade",
                "connection",
                "content-length",
                "transfer-encoding",
                "sec-websocket-accept",
                "content-type",
                "date",
            ]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
            if !skip {
                head.extend_from_slice(name.as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value);
                head.extend_from_slice(b"\r\n");
            }
        }
        head.extend_from_slice(b"\r\n");
        // Events to send at once (a gateway backend's greeting) follow the head.
        let mut close = None;
        let mut greeting = (0, 0);
        if is_events {
            let framed = event_frames(&answer.as_slice()[body_at..]);
            head.extend_from_slice(framed.bytes.as_slice());
            self.websocket.stats.sent += framed.messages;
            greeting = (framed.messages, framed.bytes.len() as u64);
            close = framed.close;
        }
        let mut log = SocketLog {
            request_id,
            arrived: Instant::now(),
            received: 0,
            sent: greeting.0,
            sent_bytes: greeting.1,
        };
        if let Some(slot) = conn.slots.iter_mut().find(|s| s.request_id == request_id) {
            slot.close_after = close.is_some();
            slot.interim = false;
            log.arrived = slot.arrived;
        }
        conn.become_websocket(Box::new(WsState {
            decoder: MessageDecoder::new(self.config.websocket.max_message),
            head: pending.head.into(),
            entry: pending.entry,
            hold: None,
            close_sent: close.is_some(),
            close_code: close,
            ping_sent: None,
            grip: grip_open,
            client_close: None,
            detached: false,
            keep_alive: None,
            log,
        }));
        self.websocket.opened += 1;
        self.websocket.stats.open += 1;
        if !channels.is_empty() {
            self.hold_socket(id, channels);
        }
        if is_events && grip_open {
            self.follow_controls(id, &answer.as_slice()[body_at..]);
        }
        log::debug!("request {request_id}: WebSocket open on connection {id}");
        AnswerBytes::Owned(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_status_is_kept_for_the_metrics() {
        let status =
            |answer: &[u8]| answer_frame(AnswerBytes::Owned(answer.to_vec()), false, true).status;
        assert_eq!(status(b"HTTP/1.1 500 Oops\r\n\r\nx"), Some(*b"500"));
        assert_eq!(status(b"HTTP/1.1 204 No Content\r\n\r\n"), Some(*b"204"));
        let events = b"HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\n\r\n";
        assert_eq!(status(events), Some(*b"200"));
        assert_eq!(status(b"3:abc,"), None);
    }

    fn framed(answer: &[u8]) -> (Vec<u8>, Option<u16>, u64) {
        let framed = answer_frame(AnswerBytes::Owned(answer.to_vec()), false, true);
        let joined = answer_frame(AnswerBytes::Owned(answer.to_vec()), false, false);
        assert_eq!(framed.bytes.as_slice(), joined.bytes.as_slice());
        (
            framed.bytes.as_slice().to_vec(),
            framed.close,
            framed.messages,
        )
    }

    #[test]
    fn answers_become_frames_by_their_status_and_content_type() {
        let json =
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-type:  Application/JSON \r\n\r\n{}";
        assert_eq!(framed(json), (vec![0x81, 2, b'{', b'}'], None, 1));
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\nab";
        assert_eq!(framed(bytes), (vec![0x82, 2, b'a', b'b'], None, 1));
        let utf8 = b"HTTP/1.1 200 OK\r\nContent-Type: x/y; Charset=UTF-8\r\n\r\nab";
        assert_eq!(framed(utf8).0[0], 0x81);
        let none = b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(framed(none).0[0], 0x81, "no type: text when UTF-8");
        assert_eq!(
            framed(b"HTTP/1.1 204 No Content\r\n\r\n"),
            (vec![], None, 0)
        );
        assert_eq!(
            framed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain"),
            (vec![], None, 0)
        );
        assert_eq!(framed(b"HTTP/1.1 2x0 OK\r\n\r\nab"), (vec![], None, 0));
        // The field in another case, or after lines ending in LF alone, is found too;
        // a `Content-Type:` in the body is not the head's.
        let lower = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\n\r\nab";
        assert_eq!(framed(lower).0, vec![0x82, 2, b'a', b'b']);
        let lf = b"HTTP/1.1 200 OK\nContent-Type: image/png\n\nab";
        assert_eq!(framed(lf).0, vec![0x82, 2, b'a', b'b']);
        let in_body = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n\r\nContent-Type: image/png";
        assert_eq!(framed(in_body).0[0], 0x81, "no type in the head: text");
        let json =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(framed(json).0, vec![0x81, 2, b'{', b'}']);
        let events = b"HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\n\r\n\
                      TEXT 2\r\nhi\r\nTEXT 9\r\nc:{\"a\":1}\r\nCLOSE 2\r\n\x0f\xa0\r\nTEXT 1\r\nx\r\n";
        let (bytes, close, messages) = framed(events);
        assert_eq!((close, messages), (Some(4000), 1));
        assert_eq!(&bytes[..4], &[0x81, 2, b'h', b'i']);
        assert_eq!(
            &bytes[4..],
            &[0x88, 2, 0x0f, 0xa0],
            "nothing after the close"
        );
    }
}
