//! WebSockets held on channels: each socket has one hold id the channels know it by
//! (among the held requests' ids), and gets every published item's `ws-message`
//! format as a message. Holds of WebSockets take live messages only (no `prev-id`).

use super::super::output::AnswerBytes;
use super::super::Server;
use crate::http::websocket::{self, MessageKind};
use crate::pipeline::channel::{Hold, Item};
use crate::pipeline::envelope::Envelope;
use std::time::Instant;

impl Server {
    /// Holds a WebSocket on `channels` too (at its accept, or asked by a message's
    /// stage).
    pub(super) fn hold_socket(&mut self, id: u64, channels: &[&str]) {
        let hold_id = self.next_request;
        let Some(ws) = self.connections.get_mut(&id).and_then(|c| c.websocket()) else {
            return;
        };
        let (hold_id, held) = match &mut ws.hold {
            Some((hold_id, held)) => (*hold_id, held),
            None => {
                self.next_request += 1;
                let (_, held) = ws.hold.insert((hold_id, Vec::new()));
                (hold_id, held)
            }
        };
        let mut joined = Vec::new();
        for name in channels {
            if !held.iter().any(|c| &**c == *name) {
                held.push((*name).into());
                joined.push(*name);
            }
        }
        self.websocket.holds.insert(hold_id, id);
        for name in joined {
            self.channels.join(name, hold_id);
        }
    }

    /// Stops delivering `channel` to a WebSocket (a GRIP `unsubscribe`).
    pub(super) fn unhold_socket(&mut self, id: u64, channel: &str) {
        let Some(ws) = self.connections.get_mut(&id).and_then(|c| c.websocket()) else {
            return;
        };
        let Some((hold_id, held)) = &mut ws.hold else {
            return;
        };
        let Some(at) = held.iter().position(|c| &**c == channel) else {
            return;
        };
        held.swap_remove(at);
        if let Some(held) = self.channels.map.get_mut(channel) {
            held.holders.remove(hold_id);
            if held.holders.is_empty() {
                held.quiet_since = Some(Instant::now());
            }
        }
    }

    /// A hold that came back on the loopback for an upgrade request or a WebSocket
    /// message; false when it is neither (a hold of an HTTP request).
    pub(in super::super) fn on_websocket_hold(
        &mut self,
        envelope: &Envelope,
        hold: &Hold,
        answer: &mut Option<zmq::Message>,
    ) -> bool {
        let request_id = envelope.request_id;
        let pending = self.websocket.pending.remove(&request_id);
        if pending.is_none() && envelope.websocket.is_none() {
            return false;
        }
        let Some(in_flight) = self.requests.remove(&request_id) else {
            return true;
        };
        let id = in_flight.connection;
        let channels: Vec<&str> = hold.channels.iter().map(|c| c.name.as_str()).collect();
        let bytes = AnswerBytes::Message(answer.take().unwrap_or_else(zmq::Message::new).into());
        let bytes = match pending {
            Some(pending) => self.complete_upgrade(id, request_id, pending, bytes, &channels),
            None => {
                self.hold_socket(id, &channels);
                bytes
            }
        };
        self.fill(id, request_id, bytes);
        true
    }

    /// Sends an item to a held WebSocket; false when `hold_id` is no WebSocket's.
    pub(in super::super) fn deliver_to_socket(&mut self, hold_id: u64, item: &Item) -> bool {
        let Some(&id) = self.websocket.holds.get(&hold_id) else {
            return false;
        };
        let Some(format) = &item.ws_message else {
            return true;
        };
        self.channels.stats.delivered += 1;
        match format.close {
            Some(code) => self.close_websocket(id, code, ""),
            None => {
                let kind = if format.binary {
                    MessageKind::Binary
                } else {
                    MessageKind::Text
                };
                self.websocket.stats.sent += 1;
                self.send_frame(id, websocket::message_frame(kind, &format.content));
            }
        }
        true
    }

    /// Frees a closing WebSocket's hold on its channels.
    pub(in super::super) fn release_socket(&mut self, hold: Option<(u64, Vec<Box<str>>)>) {
        let Some((hold_id, names)) = hold else {
            return;
        };
        self.websocket.holds.remove(&hold_id);
        let now = Instant::now();
        for name in names {
            if let Some(channel) = self.channels.map.get_mut(&*name) {
                channel.holders.remove(&hold_id);
                if channel.holders.is_empty() {
                    channel.quiet_since = Some(now);
                }
            }
        }
    }
}
