//! The front end's side of streamed answers (see [`crate::pipeline::stream`]): parts of an
//! answer go into the request's slot as they arrive on the loopback, and out to the
//! client as soon as the slot is at the front of the connection's answer order.
//!
//! Once its output is all with libzmq, the front end tells the worker how much of the
//! stream it has handed on (`Server::write`), so that a slow client paces the worker
//! (see [`crate::pipeline::stream`]). Notices travel on the interrupt channel, a PUB
//! socket, which may drop one; so the last notice of a stream that has gone quiet is
//! repeated a few times by the sweep ([`Server::remind_streams`]).

use super::answers::{mark_dirty, publish_written};
use super::output::AnswerBytes;
use super::Server;
use crate::pipeline::envelope::{Envelope, Protocol, StreamWritten};
use std::time::Instant;

/// How often the sweep repeats a quiet stream's last notice.
const REMINDERS: u8 = 3;

impl Server {
    /// Repeats the last notice of each stream whose output is all written and that
    /// has not moved since (a worker waiting on a notice the PUB socket dropped would
    /// otherwise wait until its deadline), [`REMINDERS`] times at most.
    pub(super) fn remind_streams(&mut self) {
        for conn in self.connections.values_mut() {
            if !conn.output.is_empty() {
                continue;
            }
            let Some(front) = conn.slots.front_mut() else {
                continue;
            };
            let Some(stream) = front.stream.as_deref_mut() else {
                continue;
            };
            if front.answer.is_some()
                || !stream.pieces.is_empty()
                || stream.acknowledged == 0
                || stream.reminders >= REMINDERS
            {
                continue;
            }
            stream.reminders += 1;
            let notice = StreamWritten {
                nonce: self.nonce,
                request_id: front.request_id,
                bytes: stream.acknowledged as u64,
            };
            publish_written(&self.front.interrupt, &notice);
        }
    }

    /// The head (`start`) or a piece of a streamed answer.
    pub(super) fn on_stream_part(&mut self, envelope: &Envelope, part: zmq::Message, start: bool) {
        let Some(in_flight) = self.requests.get(&envelope.request_id) else {
            // Already ended: answered 504, or its client left.
            return;
        };
        if in_flight.deadline <= Instant::now() {
            // The sweep cuts the stream short at its deadline.
            return;
        }
        let id = in_flight.connection;
        let close_delimited = start
            && matches!(
                in_flight.protocol,
                Protocol::Http {
                    minor_version: 0,
                    ..
                }
            );
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let Some(waiting) = conn.stream_part(
            envelope.request_id,
            AnswerBytes::Message(part.into()),
            close_delimited,
        ) else {
            return;
        };
        if waiting > self.config.max_output_bytes {
            // Behind an earlier answer, a stream may hold no more than the output bound.
            log::warn!(
                "connection {id}: {waiting} bytes of a streamed answer wait behind an earlier one; closing"
            );
            self.close(id, true);
            return;
        }
        mark_dirty(&mut self.dirty, conn, id);
    }

    /// The end of a streamed answer: its last bytes, or `None` when the stage stopped
    /// midway (the connection then closes after what was sent).
    pub(super) fn on_stream_end(&mut self, envelope: &Envelope, last: Option<zmq::Message>) {
        let Some(in_flight) = self.requests.remove(&envelope.request_id) else {
            return;
        };
        if last.is_none() {
            log::info!(
                "request {}: the stage stopped its streamed answer midway",
                envelope.request_id
            );
        }
        let id = in_flight.connection;
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        if conn.end_stream(
            envelope.request_id,
            last.map(|last| AnswerBytes::Message(last.into())),
        ) {
            mark_dirty(&mut self.dirty, conn, id);
        }
    }
}
