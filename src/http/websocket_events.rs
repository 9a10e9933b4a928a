//! GRIP's WebSocket-over-HTTP events (`Content-Type: application/websocket-events`, as
//! Pushpin and Fanout define it): a WebSocket's life as a list of events in an HTTP body,
//! each `TYPE\r\n` or `TYPE <hex length>\r\n<content>\r\n`. Types: `OPEN`, `TEXT`,
//! `BINARY`, `PING`, `PONG`, `CLOSE` (content: a 2-byte status code, then the reason),
//! `DISCONNECT`. A `TEXT` event whose content starts with `c:` is a control message
//! for the proxy, never sent to the client ([`Control`]: JSON such as
//! `{"type": "subscribe", "channel": "room"}`, what `gripcontrol`'s
//! `websocket_control_message` makes).

use base64::Engine;
use std::fmt;
use std::time::Duration;

/// The media type of a body of events.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// The prefix of a control message's content.
pub const CONTROL_PREFIX: &[u8] = b"c:";

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsEventRecord {
    /// `OPEN`, `TEXT`, `BINARY`, `PING`, `PONG`, `CLOSE`, `DISCONNECT`.
    pub kind: String,
    /// The content (none for `OPEN` and `DISCONNECT`).
    pub content: Vec<u8>,
}

impl WsEventRecord {
    /// An event of `kind` with `content`.
    pub fn new(kind: &str, content: impl Into<Vec<u8>>) -> Self {
        WsEventRecord {
            kind: kind.to_string(),
            content: content.into(),
        }
    }

    /// The control message this event carries, if it is one (`TEXT` whose content
    /// starts with `c:`), read as Pushpin reads it.
    ///
    /// # Errors
    /// [`EventsError`] for a control message that cannot be followed: not a JSON
    /// object, no `type`, a `subscribe` or `unsubscribe` without a `channel`, a
    /// `keep-alive` with a bad `message-type`, `content-bin`, `timeout` or `mode`.
    pub fn control(&self) -> Option<Result<Control, EventsError>> {
        if self.kind != "TEXT" {
            return None;
        }
        let json = self.content.strip_prefix(CONTROL_PREFIX)?;
        Some(Control::parse(json))
    }
}

/// How often a `keep-alive` control message without a `timeout` sends its message
/// (Pushpin's default, seconds).
pub const DEFAULT_KEEP_ALIVE: u32 = 55;

/// A control message from a backend to the proxy (a `TEXT` event `c:{...}`), in
/// Pushpin's terms (<https://pushpin.org/docs/advanced/>, "Keep-alives"; its
/// `WsControlMessage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// `{"type": "subscribe", "channel": C}`: deliver channel C's `ws-message`
    /// publishes to this socket.
    Subscribe(String),
    /// `{"type": "unsubscribe", "channel": C}`: stop delivering channel C to it.
    Unsubscribe(String),
    /// `{"type": "detach"}`: the backend lets the socket go; the client's later
    /// messages (and its close) are no longer relayed, the socket stays open for
    /// publishes.
    Detach,
    /// `{"type": "keep-alive", "content" | "content-bin", "message-type", "timeout",
    /// "mode"}`: send a message whenever the socket has been idle (or, mode
    /// `interval`, at every interval); none (no content given) turns it off.
    KeepAlive(Option<KeepAlive>),
    /// A type the proxy does not follow (`session`, `set-meta`, `send-delayed`,
    /// `flush-delayed`), named.
    Other(String),
}

/// What a `keep-alive` control message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// The frame's opcode: 0x1 text (the default), 0x2 binary, 0x9 ping, 0xA pong.
    pub opcode: u8,
    /// The message's payload.
    pub content: Vec<u8>,
    /// How long the socket stays idle before it is sent (at least a second).
    pub every: Duration,
    /// Mode `interval`: sent at every `every` whatever else was sent (mode `idle`,
    /// the default: only after `every` without anything sent).
    pub interval: bool,
}

impl Control {
    /// Reads a control message's JSON (after `c:`).
    ///
    /// ```
    /// use prime_server::http::websocket_events::Control;
    /// let control = Control::parse(br#"{"type": "unsubscribe", "channel": "room"}"#);
    /// assert_eq!(control, Ok(Control::Unsubscribe("room".into())));
    /// ```
    ///
    /// # Errors
    /// See [`WsEventRecord::control`].
    pub fn parse(json: &[u8]) -> Result<Control, EventsError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|_| EventsError("a control message not JSON"))?;
        let kind = value["type"]
            .as_str()
            .ok_or(EventsError("a control message without a type"))?;
        let channel = || {
            value["channel"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .ok_or(EventsError("a control message without a channel"))
        };
        Ok(match kind {
            "subscribe" => Control::Subscribe(channel()?),
            "unsubscribe" => Control::Unsubscribe(channel()?),
            "detach" => Control::Detach,
            "keep-alive" => Control::KeepAlive(keep_alive(&value)?),
            other => Control::Other(other.to_string()),
        })
    }
}

/// The keep-alive a `keep-alive` control message asks for; none without content.
fn keep_alive(value: &serde_json::Value) -> Result<Option<KeepAlive>, EventsError> {
    let (content, binary) = match (value.get("content-bin"), value.get("content")) {
        (Some(bin), _) => {
            let text = bin
                .as_str()
                .ok_or(EventsError("a keep-alive content-bin not a string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| EventsError("a keep-alive content-bin not base64"))?;
            (bytes, true)
        }
        (None, Some(text)) => {
            let text = text
                .as_str()
                .ok_or(EventsError("a keep-alive content not a string"))?;
            (text.as_bytes().to_vec(), false)
        }
        (None, None) => return Ok(None),
    };
    let opcode = match value.get("message-type").map(|t| t.as_str()) {
        None => match binary {
            true => 0x2,
            false => 0x1,
        },
        Some(Some("text")) => 0x1,
        Some(Some("binary")) => 0x2,
        Some(Some("ping")) => 0x9,
        Some(Some("pong")) => 0xA,
        Some(_) => return Err(EventsError("a keep-alive message-type not known")),
    };
    if opcode == 0x1 && std::str::from_utf8(&content).is_err() {
        return Err(EventsError("a text keep-alive not UTF-8"));
    }
    if opcode >= 0x8 && content.len() > crate::http::websocket::MAX_CONTROL_PAYLOAD {
        return Err(EventsError("a ping or pong keep-alive over 125 bytes"));
    }
    let seconds = match value.get("timeout") {
        None => DEFAULT_KEEP_ALIVE,
        Some(timeout) => timeout
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or(EventsError("a keep-alive timeout not a number of seconds"))?,
    };
    let interval = match value.get("mode").map(|m| m.as_str()) {
        None | Some(Some("idle")) => false,
        Some(Some("interval")) => true,
        Some(_) => return Err(EventsError("a keep-alive mode not idle or interval")),
    };
    Ok(Some(KeepAlive {
        opcode,
        content,
        every: Duration::from_secs(u64::from(seconds.max(1))),
        interval,
    }))
}

/// A body that is not a list of events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsError(pub &'static str);

impl fmt::Display for EventsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed WebSocket events: {}", self.0)
    }
}

impl std::error::Error for EventsError {}

/// Writes events as a body.
///
/// ```
/// use prime_server::http::websocket_events::{encode, parse, WsEventRecord};
/// let events = vec![WsEventRecord::new("OPEN", ""), WsEventRecord::new("TEXT", "hi")];
/// let body = encode(&events);
/// assert_eq!(body, b"OPEN\r\nTEXT 2\r\nhi\r\n");
/// assert_eq!(parse(&body).unwrap(), events);
/// ```
pub fn encode(events: &[WsEventRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.extend_from_slice(event.kind.as_bytes());
        if event.content.is_empty() && matches!(event.kind.as_str(), "OPEN" | "DISCONNECT") {
            out.extend_from_slice(b"\r\n");
            continue;
        }
        out.extend_from_slice(format!(" {:x}\r\n", event.content.len()).as_bytes());
        out.extend_from_slice(&event.content);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads a body of events.
///
/// # Errors
/// [`EventsError`] for a line without CRLF, a type that is not upper-case letters, a
/// length that is not hexadecimal, or content shorter than its length.
pub fn parse(body: &[u8]) -> Result<Vec<WsEventRecord>, EventsError> {
    let mut events = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = memchr::memmem::find(rest, b"\r\n").ok_or(EventsError("a line without CRLF"))?;
        let line =
            std::str::from_utf8(&rest[..end]).map_err(|_| EventsError("a line not ASCII"))?;
        rest = &rest[end + 2..];
        let (kind, length) = match line.split_once(' ') {
            Some((kind, hex)) => (
                kind,
                usize::from_str_radix(hex, 16).map_err(|_| EventsError("a bad length"))?,
            ),
            None => (line, 0),
        };
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(EventsError("a bad event type"));
        }
        let content = if line.contains(' ') {
            if rest.len() < length + 2 || &rest[length..length + 2] != b"\r\n" {
                return Err(EventsError("content shorter than its length"));
            }
            let content = rest[..length].to_vec();
            rest = &rest[length + 2..];
            content
        } else {
            Vec::new()
        };
        events.push(WsEventRecord {
            kind: kind.to_string(),
            content,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_controls_are_found() {
        let events = vec![
            WsEventRecord::new("OPEN", ""),
            WsEventRecord::new("TEXT", r#"c:{"type":"subscribe","channel":"room"}"#),
            WsEventRecord::new("BINARY", vec![0, 13, 10, 255]),
            WsEventRecord::new("CLOSE", 1000u16.to_be_bytes().to_vec()),
        ];
        let parsed = parse(&encode(&events)).unwrap();
        assert_eq!(parsed, events);
        assert_eq!(
            parsed[1].control(),
            Some(Ok(Control::Subscribe("room".into())))
        );
        assert!(parsed[2].control().is_none());
        for bad in [
            &b"TEXT 5\r\nhi\r\n"[..],
            b"OPEN",
            b"text 1\r\nx\r\n",
            b"TEXT zz\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn control_messages_are_read_as_pushpin_reads_them() {
        let parse = |json: &str| Control::parse(json.as_bytes());
        assert_eq!(parse(r#"{"type": "detach"}"#), Ok(Control::Detach));
        assert_eq!(
            parse(r#"{"type": "keep-alive", "content": "{}", "timeout": 30}"#),
            Ok(Control::KeepAlive(Some(KeepAlive {
                opcode: 0x1,
                content: b"{}".to_vec(),
                every: Duration::from_secs(30),
                interval: false,
            })))
        );
        let binary = parse(r#"{"type": "keep-alive", "content-bin": "AP8=", "mode": "interval"}"#);
        assert_eq!(
            binary,
            Ok(Control::KeepAlive(Some(KeepAlive {
                opcode: 0x2,
                content: vec![0, 255],
                every: Duration::from_secs(u64::from(DEFAULT_KEEP_ALIVE)),
                interval: true,
            })))
        );
        assert_eq!(
            parse(r#"{"type": "keep-alive"}"#),
            Ok(Control::KeepAlive(None))
        );
        assert_eq!(
            parse(r#"{"type": "set-meta", "name": "user"}"#),
            Ok(Control::Other("set-meta".into()))
        );
        for bad in [
            "[]",
            r#"{"channel": "room"}"#,
            r#"{"type": "unsubscribe"}"#,
            r#"{"type": "subscribe", "channel": ""}"#,
            r#"{"type": "keep-alive", "content": "x", "message-type": "close"}"#,
            r#"{"type": "keep-alive", "content": "x", "timeout": -1}"#,
            r#"{"type": "keep-alive", "content-bin": "!!"}"#,
            r#"{"type": "keep-alive", "content-bin": "/w==", "message-type": "text"}"#,
            r#"{"type": "keep-alive", "content": "x", "mode": "often"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
