//! A WebSocket's frames as they arrive: messages into the pipeline, pings answered,
//! the closing handshake (RFC 6455 §7), failures closed with their code, and the pings
//! of quiet sockets.

use super::super::answers::mark_dirty;
use super::super::output::AnswerBytes;
use super::super::Server;
use super::WsState;
use crate::base::sockets;
use crate::http::websocket::{self, close_code, MessageKind, WsEvent};
use crate::http::websocket_events::{self as events, WsEventRecord};
use crate::pipeline::envelope::{lead_frame, Envelope, Protocol};
use std::borrow::Cow;
use std::time::Instant;

/// The protocol facts of a message's request: HTTP/1.1, kept alive.
const MESSAGE_PROTOCOL: Protocol = Protocol::Http {
    minor_version: 1,
    keep_alive: true,
    head: false,
};

/// The largest message body copied into a message rather than handed over, in bytes.
const SMALL_BODY: usize = 1024;

/// A message's payload as the body frame of its request: none when empty. A small or
/// borrowed payload is copied into a message of its own (libzmq keeps up to 33 bytes
/// inline, and one allocation beats handing over a vector, which costs libzmq an
/// allocation of its own and a free through a callback); a large joined one is handed
/// over.
fn message_body(payload: Cow<'_, [u8]>) -> Option<zmq::Message> {
    match payload {
        payload if payload.is_empty() => None,
        Cow::Owned(joined) if joined.len() > SMALL_BODY => Some(zmq::Message::from(joined)),
        payload => Some(zmq::Message::from(&payload[..])),
    }
}

impl Server {
    /// Takes every whole message and control frame out of a WebSocket's decoder.
    pub(in super::super) fn read_messages(&mut self, id: u64) {
        loop {
            let Some(conn) = self.connections.get_mut(&id) else {
                return;
            };
            if conn.closing {
                return;
            }
            let unanswered = conn.slots.len();
            let Some(ws) = conn.websocket() else {
                return;
            };
            ws.ping_sent = None;
            let event = match ws.decoder.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(failure) => {
                    log::info!("connection {id}: WebSocket failed: {failure}");
                    return self.close_websocket(id, failure.code, failure.reason);
                }
            };
            match event {
                WsEvent::Message(kind, payload) => {
                    self.websocket.stats.received(kind);
                    ws.log.received += 1;
                    if ws.detached {
                        // Its backend let it go: the message goes nowhere.
                        log::debug!("connection {id}: a message after its backend detached");
                        continue;
                    }
                    if unanswered >= self.config.max_pipelined {
                        log::info!("connection {id}: too many unanswered WebSocket messages");
                        let why = "too many unanswered messages";
                        return self.close_websocket(id, close_code::POLICY, why);
                    }
                    // Copied out of the decoder's buffer once, into the request's body.
                    let body = message_body(payload);
                    self.forward_message(id, kind, body);
                }
                WsEvent::Ping(payload) => self.send_frame(id, websocket::frame(0xA, &payload)),
                WsEvent::Pong => {}
                WsEvent::Close(status) => {
                    log::debug!("connection {id}: the client closed its WebSocket");
                    let told = status
                        .as_ref()
                        .map_or(Vec::new(), |(code, _)| code.to_be_bytes().to_vec());
                    ws.client_close = Some(told);
                    let code = status.map_or(close_code::NORMAL, |(code, _)| code);
                    return self.close_websocket(id, code, "");
                }
            }
        }
    }

    /// Sends one message into the pipeline as a request with the upgrade's head.
    fn forward_message(&mut self, id: u64, kind: MessageKind, body: Option<zmq::Message>) {
        let Some(ws) = self.connections.get_mut(&id).and_then(|c| c.websocket()) else {
            return;
        };
        let content_type: &[u8] = match kind {
            MessageKind::Text => b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
            MessageKind::Binary => b"Content-Type: application/octet-stream\r\n\r\n",
        };
        // The head and its `Content-Type` are written once, straight into the lead
        // frame behind the envelope (the head shared, not copied, for the call).
        let head = std::sync::Arc::clone(&ws.head);
        let entry = ws.entry;
        self.forward_as(
            id,
            MESSAGE_PROTOCOL,
            (&[&head[..], content_type], body),
            entry,
            (false, None),
            Some(kind),
        );
    }

    /// Tells the pipeline that a socket accepted with GRIP's events closed, as GRIP's
    /// WebSocket-over-HTTP does: a request of the front end's own with the messages'
    /// head, its body a `CLOSE` event (with the client's status code) when the client
    /// closed, a `DISCONNECT` event otherwise (the connection lost, a ping unanswered,
    /// a failure, a drain). Its answer is nobody's: it is dropped when it comes.
    pub(in super::super) fn tell_closed(
        &mut self,
        id: u64,
        ws: &WsState,
        client: Option<std::net::SocketAddr>,
    ) {
        if !ws.grip || ws.detached {
            return;
        }
        let event = match &ws.client_close {
            Some(code) => WsEventRecord::new("CLOSE", code.clone()),
            None => WsEventRecord::new("DISCONNECT", ""),
        };
        let request_id = self.next_request;
        self.next_request += 1;
        let mut head = Vec::with_capacity(ws.head.len() + 64);
        head.extend_from_slice(&ws.head);
        head.extend_from_slice(b"Content-Type: ");
        head.extend_from_slice(events::CONTENT_TYPE.as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        let mut envelope = Envelope::new(request_id, id, self.nonce, MESSAGE_PROTOCOL)
            .at_front_end(self.front.front_end)
            .with_timeout(self.config.request_timeout)
            .with_client(client);
        envelope.websocket = Some(MessageKind::Binary);
        let body = zmq::Message::from(events::encode(&[event]));
        let message = [lead_frame(&envelope.encode(), &head), body];
        let socket = self.front.entry_socket(ws.entry);
        match sockets::send_frames(socket, message, zmq::DONTWAIT) {
            Ok(()) => {
                log::debug!("connection {id}: its WebSocket's close told (request {request_id})")
            }
            Err(e) => log::info!("connection {id}: its WebSocket's close was not told: {e}"),
        }
    }

    /// Queues a frame (a pong, a pushed message) after what the connection already
    /// has to write: whole frames only, so control frames never split a message.
    pub(super) fn send_frame(&mut self, id: u64, frame: Vec<u8>) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let Some(ws) = conn.websocket().filter(|ws| !ws.close_sent) else {
            return;
        };
        // Something goes: an idle keep-alive waits again.
        if let Some(keep) = ws.keep_alive.as_mut().filter(|k| !k.interval) {
            keep.due = Instant::now() + keep.every;
        }
        // A data frame (a pushed message, a keep-alive's) is a message sent.
        if frame.first().is_some_and(|b| b & 0x8 == 0) {
            ws.log.sent += 1;
            ws.log.sent_bytes += frame.len() as u64;
        }
        conn.output.push(AnswerBytes::Owned(frame));
        mark_dirty(&mut self.dirty, conn, id);
    }

    /// Sends a Close with `code` (and `reason`), and closes the connection once it is
    /// written: what is still running for it is interrupted, unsent answers dropped.
    pub(in super::super) fn close_websocket(&mut self, id: u64, code: u16, reason: &str) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let Some(ws) = conn.websocket() else {
            return;
        };
        if ws.close_sent {
            return;
        }
        ws.close_sent = true;
        ws.close_code = Some(code);
        conn.output
            .push(AnswerBytes::Owned(websocket::close_frame(code, reason)));
        conn.closing = true;
        conn.close_when_written = true;
        self.write(id);
    }

    /// Pings sockets quiet for `ping`, drops those still quiet a `ping` after their
    /// ping; at a drain, closes every socket with 1001.
    pub(in super::super) fn sweep_websockets(&mut self, now: Instant) {
        if self.websocket.opened == 0 {
            return;
        }
        let draining = self.draining_since.is_some();
        let ping = self.config.websocket.ping;
        let mut to_ping = Vec::new();
        let mut gone = Vec::new();
        let mut keep_alives = Vec::new();
        for (id, conn) in self.connections.iter_mut() {
            let quiet = now.duration_since(conn.last_active);
            let Some(ws) = conn.websocket() else {
                continue;
            };
            if let Some(keep) = ws.keep_alive.as_mut().filter(|k| k.due <= now) {
                keep.due = now + keep.every;
                keep_alives.push((*id, keep.frame.clone()));
            }
            if draining {
                gone.push((*id, close_code::GOING_AWAY, "the server is shutting down"));
                continue;
            }
            let Some(ping) = ping else {
                continue;
            };
            match ws.ping_sent {
                Some(sent) if now.duration_since(sent) >= ping => {
                    gone.push((*id, close_code::GOING_AWAY, "no answer to a ping"));
                }
                Some(_) => {}
                None if quiet >= ping => {
                    ws.ping_sent = Some(now);
                    to_ping.push(*id);
                }
                None => {}
            }
        }
        for id in to_ping {
            self.send_frame(id, websocket::frame(0x9, b""));
        }
        for (id, frame) in keep_alives {
            // A ping or pong keep-alive is no message.
            self.websocket.stats.sent += u64::from(frame.first().is_some_and(|b| b & 0x8 == 0));
            self.send_frame(id, frame);
        }
        for (id, code, reason) in gone {
            log::debug!("connection {id}: WebSocket closed: {reason}");
            self.close_websocket(id, code, reason);
        }
    }
}
