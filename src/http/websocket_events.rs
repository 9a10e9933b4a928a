//! GRIP's WebSocket-over-HTTP events (`Content-Type: application/websocket-events`, as
//! Pushpin and Fanout define it): a WebSocket's life as a list of events in an HTTP body,
//! each `TYPE\r\n` or `TYPE <hex length>\r\n<content>\r\n`. Types: `OPEN`, `TEXT`,
//! `BINARY`, `PING`, `PONG`, `CLOSE` (content: a 2-byte status code, then the reason),
//! `DISCONNECT`. A `TEXT` event whose content starts with `c:` is a control message
//! for the proxy (JSON: `{"type": "subscribe", "channel": ...}`, `unsubscribe`,
//! `detach`), never sent to the client.

use std::fmt;

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

    /// The control message this event carries, if it is one (`TEXT` with `c:`).
    pub fn control(&self) -> Option<serde_json::Value> {
        if self.kind != "TEXT" {
            return None;
        }
        let json = self.content.strip_prefix(CONTROL_PREFIX)?;
        serde_json::from_slice(json).ok()
    }
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
        assert_eq!(parsed[1].control().unwrap()["channel"], "room");
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
}
