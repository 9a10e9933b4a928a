//! The gateway's WebSockets: GRIP's WebSocket-over-HTTP toward the backend. A client's
//! upgrade is POSTed to the backend as an `OPEN` event and each of its messages as a
//! `TEXT` or `BINARY` event (`Content-Type: application/websocket-events`, with a
//! `Connection-Id` naming the socket), so a backend written with `gripcontrol`'s
//! `WebSocketEvent` and `websocket_control_message` works behind the gateway as behind
//! Pushpin. The backend's answer is events too: `OPEN` accepts the socket, `TEXT`,
//! `BINARY`, `PING`, `CLOSE` are sent to it (the front end frames them), and control
//! messages (`TEXT` with `c:`: `subscribe`, `unsubscribe`, `detach`, `keep-alive`) are
//! checked here and passed on among the events, for the front end to follow in order.
//! A socket's close is POSTed too: the front end sends a request of its own with a
//! `CLOSE` (the client's code) or `DISCONNECT` event as its body, relayed as it is; its
//! answer is dropped.

use super::api::{Next, StageError};
use crate::http::websocket::MessageKind;
use crate::http::websocket_events::{self, Control, WsEventRecord, CONTENT_TYPE};
use crate::http::{Request, Response};
use crate::pipeline::channel::valid_channel;
use crate::pipeline::envelope::Envelope;

/// Fields of the client's request that a WebSocket-over-HTTP request leaves out: the
/// handshake's and the body's, which are the gateway's own.
const DROPPED: [&str; 6] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "content-type",
    "content-length",
    "connection-id",
];

/// The backend request for a WebSocket's upgrade (`message` none: `OPEN`) or one of its
/// messages, made from the client's request.
pub(super) fn request(
    envelope: &Envelope,
    client: &Request,
    message: Option<MessageKind>,
) -> Request {
    // The front end's own events (a socket's `CLOSE` or `DISCONNECT`) come as a
    // message whose body is already events; a client's message never has that type.
    let told = message.is_some()
        && client
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .is_some_and(|(_, value)| value.trim().eq_ignore_ascii_case(CONTENT_TYPE));
    let body = match message {
        _ if told => client.body.clone(),
        None => websocket_events::encode(&[WsEventRecord::new("OPEN", "")]),
        Some(MessageKind::Text) => {
            websocket_events::encode(&[WsEventRecord::new("TEXT", client.body.clone())])
        }
        Some(MessageKind::Binary) => {
            websocket_events::encode(&[WsEventRecord::new("BINARY", client.body.clone())])
        }
    };
    let mut headers: Vec<(String, String)> = client
        .headers
        .iter()
        .filter(|(name, _)| !DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)))
        .cloned()
        .collect();
    headers.push(("Content-Type".into(), CONTENT_TYPE.into()));
    headers.push(("Connection-Id".into(), connection_id(envelope)));
    headers.push(("Sec-WebSocket-Extensions".into(), "grip".into()));
    Request {
        method: "POST".into(),
        body,
        headers,
        ..client.clone()
    }
}

/// The id a backend knows a socket by: the front end's run and its connection.
fn connection_id(envelope: &Envelope) -> String {
    format!("{:016x}-{}", envelope.nonce, envelope.connection_id)
}

/// What the client's socket gets from the backend's answer: for the upgrade (`open`),
/// an accept (GRIP's: events beginning with `OPEN`) or the backend's refusal; for a
/// message, the events to send and the control messages to follow.
///
/// # Errors
/// A `502` [`StageError`] when the answer is not events, accepts nothing, or has a
/// control message that cannot be followed (malformed, or a channel not valid).
pub(super) fn answer(open: bool, response: Response) -> Result<Next, StageError> {
    let is_events = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .is_some_and(|(_, value)| value.trim().eq_ignore_ascii_case(CONTENT_TYPE));
    if response.status != 200 || !is_events {
        if open {
            // The backend refused the socket: the client gets its answer.
            return Ok(Next::respond(response));
        }
        return Err(StageError::new(
            502,
            format!(
                "the backend answered a WebSocket message with {} and no events",
                response.status
            ),
        ));
    }
    let events = websocket_events::parse(&response.body)
        .map_err(|e| StageError::new(502, format!("the backend's answer: {e}")))?;
    let mut sent = Vec::new();
    let mut opened = false;
    for event in events {
        if let Some(control) = event.control() {
            let control =
                control.map_err(|e| StageError::new(502, format!("the backend's answer: {e}")))?;
            match control {
                Control::Subscribe(channel) | Control::Unsubscribe(channel)
                    if !valid_channel(&channel) =>
                {
                    return Err(StageError::new(
                        502,
                        "the backend named no valid channel in a WebSocket control message",
                    ))
                }
                Control::Other(kind) => {
                    log::debug!("a WebSocket control message {kind:?} is not followed");
                }
                // The front end follows them, in their order among the events.
                _ => sent.push(event),
            }
            continue;
        }
        match event.kind.as_str() {
            "OPEN" => opened = true,
            "TEXT" | "BINARY" | "PING" | "PONG" | "CLOSE" => sent.push(event),
            other => log::debug!("a WebSocket event {other} from the backend is dropped"),
        }
    }
    if open && !opened {
        return Err(StageError::new(
            502,
            "the backend answered the WebSocket's OPEN without OPEN",
        ));
    }
    if open {
        // GRIP's own accept, which the front end takes as one (a 101 has no body for
        // the greeting).
        sent.insert(0, WsEventRecord::new("OPEN", ""));
    }
    let mut answer = Response::new(200).header("Content-Type", CONTENT_TYPE);
    if let Some((_, protocol)) = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
    {
        answer = answer.header("Sec-WebSocket-Protocol", protocol.as_str());
    }
    for (name, value) in &response.headers {
        if name.eq_ignore_ascii_case("set-cookie") {
            answer = answer.header("Set-Cookie", value.as_str());
        }
    }
    Ok(Next::respond(answer.body(websocket_events::encode(&sent))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(body: &[WsEventRecord]) -> Response {
        Response::new(200)
            .header("Content-Type", CONTENT_TYPE)
            .body(websocket_events::encode(body))
    }

    #[test]
    fn an_open_passes_its_control_messages_on_in_order() {
        let subscribe = r#"c:{"type": "subscribe", "channel": "room"}"#;
        let backend = events(&[
            WsEventRecord::new("OPEN", ""),
            WsEventRecord::new("TEXT", subscribe),
            WsEventRecord::new("TEXT", r#"c:{"type": "session", "id": "s"}"#),
            WsEventRecord::new("TEXT", "welcome"),
        ]);
        let Ok(Next::Respond(accept)) = answer(true, backend) else {
            panic!("not an answer");
        };
        assert_eq!(accept.status, 200);
        let expected = websocket_events::encode(&[
            WsEventRecord::new("OPEN", ""),
            WsEventRecord::new("TEXT", subscribe),
            WsEventRecord::new("TEXT", "welcome"),
        ]);
        assert_eq!(accept.body, expected, "session is not followed");
        let refused = answer(true, Response::new(403).body("no")).unwrap();
        assert!(matches!(refused, Next::Respond(r) if r.status == 403));
        assert!(answer(true, events(&[])).is_err(), "no OPEN");
        assert!(answer(false, Response::new(200).body("x")).is_err());
        let bad = events(&[WsEventRecord::new(
            "TEXT",
            "c:{\"type\":\"subscribe\",\"channel\":\"\"}",
        )]);
        assert!(answer(false, bad).is_err(), "an empty channel name");
        let bad = events(&[WsEventRecord::new(
            "TEXT",
            "c:{\"type\":\"keep-alive\",\"content\":1}",
        )]);
        assert!(answer(false, bad).is_err(), "content not a string");
    }
}
