//! A socket a GRIP backend accepted (through the gateway's WebSocket-over-HTTP) follows
//! the control messages among its backend's events, as Pushpin does, in their order
//! and when their answer arrives:
//!
//! - `subscribe` / `unsubscribe`: the socket is held on a channel, or no longer;
//! - `detach`: the client's later messages (and its close) are no longer sent into the
//!   pipeline; the socket stays open for publishes, pings and keep-alives;
//! - `keep-alive`: a message sent whenever the socket has been quiet for its timeout
//!   (nothing sent to the client; or, mode `interval`, at every timeout); one without
//!   content turns it off.
//!
//! Others (`session`, `set-meta`, `send-delayed`, `flush-delayed`) are not followed
//! (the gateway drops them).

use super::super::Server;
use super::{answer_head, KeepAliveState};
use crate::http::websocket;
use crate::http::websocket_events::{self as events, Control};
use crate::pipeline::channel::valid_channel;
use std::time::Instant;

impl Server {
    /// An answer to one of socket `id`'s messages arrived: an idle keep-alive waits
    /// again, and a GRIP socket follows the control messages of an answer of events.
    pub(in super::super) fn websocket_answered(&mut self, id: u64, answer: &[u8]) {
        let Some(ws) = self.connections.get_mut(&id).and_then(|c| c.websocket()) else {
            return;
        };
        if let Some(keep) = ws.keep_alive.as_mut().filter(|k| !k.interval) {
            keep.due = Instant::now() + keep.every;
        }
        if !ws.grip {
            return;
        }
        let Some(head) = answer_head(answer) else {
            return;
        };
        let is_events = head
            .content_type
            .is_some_and(|value| value.eq_ignore_ascii_case(events::CONTENT_TYPE.as_bytes()));
        if is_events {
            self.follow_controls(id, &answer[head.body_at..]);
        }
    }

    /// Follows the control messages of a body of events, in order.
    pub(super) fn follow_controls(&mut self, id: u64, body: &[u8]) {
        // A malformed body is reported where its frames are made.
        let Ok(list) = events::parse(body) else {
            return;
        };
        for event in list {
            let control = match event.control() {
                None => continue,
                Some(Ok(control)) => control,
                Some(Err(e)) => {
                    log::warn!("connection {id}: a WebSocket control message not followed: {e}");
                    continue;
                }
            };
            match control {
                Control::Subscribe(channel) if valid_channel(&channel) => {
                    self.hold_socket(id, &[&channel])
                }
                Control::Unsubscribe(channel) => self.unhold_socket(id, &channel),
                Control::Detach => {
                    if let Some(ws) = self.connections.get_mut(&id).and_then(|c| c.websocket()) {
                        log::debug!("connection {id}: its WebSocket's backend detached");
                        ws.detached = true;
                    }
                }
                Control::KeepAlive(keep) => {
                    if let Some(ws) = self.connections.get_mut(&id).and_then(|c| c.websocket()) {
                        ws.keep_alive = keep.map(|keep| {
                            Box::new(KeepAliveState {
                                frame: websocket::frame(keep.opcode, &keep.content),
                                every: keep.every,
                                interval: keep.interval,
                                due: Instant::now() + keep.every,
                            })
                        });
                    }
                }
                Control::Subscribe(_) | Control::Other(_) => {
                    log::debug!("connection {id}: a WebSocket control message not followed")
                }
            }
        }
    }
}
