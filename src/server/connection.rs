//! One client connection as the front end sees it: its decoder, and its answers kept in
//! request order until they can be written.
//!
//! Pipelined requests may finish out of order in the pipeline; each gets a [`Slot`] in
//! the connection's queue when it arrives, and only the answered slots at the front of
//! the queue are written, so responses always leave in request order.

use super::output::{status_of, AnswerBytes, Output};
use crate::http::RequestParser;
use crate::netstring::NetstringDecoder;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The per-connection decoder of the listener's protocol.
pub(crate) enum Decoder {
    /// An HTTP/1.x request parser.
    Http(RequestParser),
    /// A netstring decoder.
    Netstring(NetstringDecoder),
    /// A WebSocket, after its handshake.
    WebSocket(Box<super::websocket::WsState>),
}

impl Decoder {
    /// Whether part of a request has arrived but not all of it.
    pub(crate) fn is_mid_request(&self) -> bool {
        match self {
            Decoder::Http(parser) => parser.is_mid_request(),
            Decoder::Netstring(decoder) => decoder.is_mid_message(),
            // Frames have no slow-header or stalled-body timeout; pings keep watch.
            Decoder::WebSocket(_) => false,
        }
    }

    /// Whether the current request's head is complete (only its body is awaited).
    pub(crate) fn head_complete(&self) -> bool {
        match self {
            Decoder::Http(parser) => parser.head_complete(),
            Decoder::Netstring(decoder) => decoder.is_mid_message(),
            Decoder::WebSocket(_) => false,
        }
    }
}

/// A request's line, kept for its access-log entry: inline when it is short (as nearly
/// all are), so that keeping it costs no allocation per request.
#[derive(Clone, Debug)]
pub(crate) enum Label {
    /// Up to [`Label::INLINE`] bytes, and their count.
    Inline([u8; Label::INLINE], u8),
    /// A longer line.
    Boxed(Box<[u8]>),
}

impl Label {
    /// The longest line kept inline.
    const INLINE: usize = 62;
}

impl From<&[u8]> for Label {
    fn from(line: &[u8]) -> Self {
        if line.len() <= Label::INLINE {
            let mut bytes = [0u8; Label::INLINE];
            bytes[..line.len()].copy_from_slice(line);
            Label::Inline(bytes, line.len() as u8)
        } else {
            Label::Boxed(line.into())
        }
    }
}

impl std::ops::Deref for Label {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Label::Inline(bytes, len) => &bytes[..usize::from(*len)],
            Label::Boxed(line) => line,
        }
    }
}

/// When a connection whose output libzmq refused is tried again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stall {
    /// The next try.
    pub(crate) retry_at: Instant,
    /// The wait before it, doubled after each try that writes nothing.
    pub(crate) backoff: Duration,
}

/// The parts of a streamed answer that arrived and were not yet handed to the output.
#[derive(Default)]
pub(crate) struct SlotStream {
    /// Parts in order.
    pub(crate) pieces: VecDeque<AnswerBytes>,
    /// Their size.
    pub(crate) bytes: usize,
    /// The status of the head, for the access log.
    pub(crate) status: Box<str>,
    /// All the bytes of the stream so far, for the access log, and to tell the worker
    /// how much of it was handed on.
    pub(crate) total: usize,
    /// The bytes the worker was last told were handed on (see
    /// `crate::pipeline::stream`).
    pub(crate) acknowledged: usize,
    /// How often that was repeated since, for a worker that might have missed it.
    pub(crate) reminders: u8,
}

/// One request's place in the connection's answer order.
pub(crate) struct Slot {
    /// The request id (answers the front end made at once have one too, for the log).
    pub(crate) request_id: u64,
    /// The answer once known whole; for a streamed answer, its last bytes, once the
    /// stream has ended.
    pub(crate) answer: Option<AnswerBytes>,
    /// A streamed answer under way (see `crate::pipeline::stream`).
    pub(crate) stream: Option<Box<SlotStream>>,
    /// Whether the connection closes after this answer.
    pub(crate) close_after: bool,
    /// When the request arrived, for the access log.
    pub(crate) arrived: Instant,
    /// The request line, kept only while the access log is on.
    pub(crate) label: Option<Label>,
    /// CORS header lines to add to the answer (a request from an allowed origin).
    pub(crate) cors: Option<Box<[u8]>>,
    /// An HTTP/1.1 request: an interim `1xx` may precede its answer.
    pub(crate) interim: bool,
    /// The entry the request went into the pipeline through, if it did (for the log).
    pub(crate) upstream: Option<super::front::EntryIndex>,
    /// A WebSocket message's: its answer leaves as a frame (see `websocket`).
    pub(crate) websocket: bool,
}

/// When a connection's client half-closed, and when it was last probed.
pub(crate) struct HalfClosed {
    /// When the first notice (the FIN) came.
    pub(crate) since: Instant,
    /// When the last `102 Processing` was written.
    pub(crate) probed: Option<Instant>,
}

/// A client connection.
pub(crate) struct Connection {
    /// libzmq's routing id for the peer, needed to write to it.
    pub(crate) routing_id: Vec<u8>,
    /// The client's address, for the access log (`-` when it is off or unknown).
    pub(crate) peer: Box<str>,
    /// The client's address, for the stages (in the envelope); the port is 0, as
    /// libzmq gives the address alone.
    pub(crate) client: Option<std::net::SocketAddr>,
    /// Which listener (socket) it came in on.
    pub(crate) listener: usize,
    /// Its decoder.
    pub(crate) decoder: Decoder,
    /// Answers in request order.
    pub(crate) slots: VecDeque<Slot>,
    /// Bytes ready to write that libzmq did not take yet.
    pub(crate) output: Output,
    /// Set while libzmq refuses the output: when to try again.
    pub(crate) stall: Option<Stall>,
    /// The last time the client sent anything or its last pending answer was written:
    /// the idle and stalled-body timeouts count from here, so a slow answer does not
    /// use up the client's idle time.
    pub(crate) last_active: Instant,
    /// When the unfinished request head began to arrive.
    pub(crate) head_started: Option<Instant>,
    /// No more requests are read: a `Connection: close`, an error, or a shutdown.
    pub(crate) closing: bool,
    /// Close once `output` is written.
    pub(crate) close_when_written: bool,
    /// The client has finished sending (it half-closed the connection).
    pub(crate) input_ended: bool,
    /// When the client half-closed, and when it was last sent a `102 Processing` (see
    /// `Server::check_half_closed`); none for a connection that never half-closes.
    pub(crate) half_closed: Option<Box<HalfClosed>>,
    /// Already listed for a flush in this loop turn.
    pub(crate) dirty: bool,
    /// Bytes of answers filled since the last flush: once they could take the output
    /// past its bound, the connection is flushed at once (see `Server::fill`).
    pub(crate) unflushed: usize,
}

impl Connection {
    pub(crate) fn new(routing_id: Vec<u8>, listener: usize, decoder: Decoder) -> Self {
        Connection {
            routing_id,
            peer: "-".into(),
            client: None,
            listener,
            decoder,
            // Room for one request's slot and one answer, allocated now rather than
            // four of each at the first push: see `Output::new`.
            slots: VecDeque::with_capacity(1),
            output: Output::new(),
            stall: None,
            last_active: Instant::now(),
            head_started: None,
            closing: false,
            close_when_written: false,
            input_ended: false,
            half_closed: None,
            dirty: false,
            unflushed: 0,
        }
    }

    fn waiting_slot(&mut self, request_id: u64) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.request_id == request_id && s.answer.is_none())
    }

    /// Puts the answer for `request_id` in its slot; false if no slot waits for it. A
    /// slot whose answer has begun to stream cannot take a whole answer any more (a
    /// timeout, a failure): the stream is cut short there and the connection closed.
    pub(crate) fn fill(&mut self, request_id: u64, answer: AnswerBytes) -> bool {
        let Some(slot) = self.waiting_slot(request_id) else {
            return false;
        };
        if slot.stream.is_some() {
            slot.answer = Some(AnswerBytes::Owned(Vec::new()));
            slot.close_after = true;
            self.closing = true;
        } else {
            slot.answer = Some(answer);
        }
        true
    }

    /// Adds a part of a streamed answer to its slot; `close_delimited` (an HTTP/1.0 head)
    /// makes the connection close after it. Returns how many bytes of the stream wait in
    /// the slot, or `None` if no slot waits for it.
    pub(crate) fn stream_part(
        &mut self,
        request_id: u64,
        part: AnswerBytes,
        close_delimited: bool,
    ) -> Option<usize> {
        let slot = self.waiting_slot(request_id)?;
        let stream = slot.stream.get_or_insert_with(|| {
            Box::new(SlotStream {
                status: status_of(part.as_slice()).into(),
                ..SlotStream::default()
            })
        });
        stream.bytes += part.as_slice().len();
        stream.total += part.as_slice().len();
        stream.pieces.push_back(part);
        let waiting = stream.bytes;
        if close_delimited {
            slot.close_after = true;
            self.closing = true;
        }
        Some(waiting)
    }

    /// Adds a piece of a held stream: straight to the output when the stream's slot is
    /// at the front of the answer order with nothing of it waiting there (its head has
    /// gone, with its CORS fields), which is what the slot's flush would do with it
    /// (and a slot's queue of pieces is made for none of them); otherwise as
    /// [`stream_part`](Self::stream_part). Returns how many bytes of the stream wait in
    /// the slot (0 when it went to the output, where the output bound applies at the
    /// write), or `None` if no slot waits for it.
    pub(crate) fn hold_part(&mut self, request_id: u64, part: AnswerBytes) -> Option<usize> {
        if let Some(front) = self.slots.front_mut() {
            if front.request_id == request_id && front.answer.is_none() && front.cors.is_none() {
                if let Some(stream) = front.stream.as_deref_mut() {
                    if stream.pieces.is_empty() {
                        stream.total += part.as_slice().len();
                        self.output.push(part);
                        return Some(0);
                    }
                }
            }
        }
        self.stream_part(request_id, part, false)
    }

    /// Whether a piece of the held stream `request_id` may go straight to libzmq
    /// (`Server::append_bytes`): its slot is at the front of the answer order with
    /// nothing of it waiting there (its head has gone, with its CORS fields), and no
    /// earlier byte waits in the output or for a retry. Such a piece is the next thing
    /// [`hold_part`](Self::hold_part) and the flush would hand libzmq, so writing it
    /// at once keeps the order.
    pub(crate) fn writes_through(&self, request_id: u64) -> bool {
        self.output.is_empty()
            && self.stall.is_none()
            && self.slots.front().is_some_and(|front| {
                front.request_id == request_id
                    && front.answer.is_none()
                    && front.cors.is_none()
                    && front
                        .stream
                        .as_deref()
                        .is_some_and(|stream| stream.pieces.is_empty())
            })
    }

    /// Counts `len` bytes of the stream at the front of the answer order that went
    /// straight to libzmq (see [`writes_through`](Self::writes_through)).
    pub(crate) fn wrote_through(&mut self, len: usize) {
        if let Some(stream) = self.slots.front_mut().and_then(|f| f.stream.as_deref_mut()) {
            stream.total += len;
        }
    }

    /// Ends a streamed answer with its last bytes (`None`: it stopped midway, so the
    /// connection closes after what was sent).
    pub(crate) fn end_stream(&mut self, request_id: u64, last: Option<AnswerBytes>) -> bool {
        let Some(slot) = self.waiting_slot(request_id) else {
            return false;
        };
        slot.stream.get_or_insert_with(Box::default);
        match last {
            Some(last) => slot.answer = Some(last),
            None => {
                slot.answer = Some(AnswerBytes::Owned(Vec::new()));
                slot.close_after = true;
                self.closing = true;
            }
        }
        true
    }

    /// Makes the connection close once the answer to `request_id` is written (and read
    /// no more requests).
    pub(crate) fn close_after(&mut self, request_id: u64) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.request_id == request_id) {
            slot.close_after = true;
            self.closing = true;
        }
    }

    /// Makes the connection a WebSocket after its handshake: frames are read from now
    /// on.
    pub(crate) fn become_websocket(&mut self, state: Box<super::websocket::WsState>) {
        self.closing = false;
        self.decoder = Decoder::WebSocket(state);
    }

    /// The connection's WebSocket state, once it is one.
    pub(crate) fn websocket(&mut self) -> Option<&mut super::websocket::WsState> {
        match &mut self.decoder {
            Decoder::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// Whether the connection holds nothing: no unanswered request, no unwritten byte,
    /// no partial request.
    pub(crate) fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.output.is_empty() && !self.decoder.is_mid_request()
    }

    /// Notes when a partial request head started, for the slow-header timeout.
    pub(crate) fn track_head(&mut self, now: Instant) {
        if self.decoder.is_mid_request() && !self.decoder.head_complete() {
            self.head_started.get_or_insert(now);
        } else {
            self.head_started = None;
        }
    }
}
