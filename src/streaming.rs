//! Answers in pieces: a stage's streamed response, and the Server-Sent Events format.
//!
//! A stage that wants to answer over time starts a [`ResponseStream`] with the head of
//! its response, sends body pieces as they are ready, and finishes it. Each part goes to
//! the front end on the loopback as it is sent (see [`crate::loopback`]); the front end
//! writes them to the client in order, with `Transfer-Encoding: chunked` for HTTP/1.1
//! and delimited by the connection's close for HTTP/1.0, and keeps the answers of later
//! pipelined requests waiting until the stream ends. The whole stream is bound by the
//! request's deadline: a stage that stops sending is cut off there, with the connection
//! closed. A client that hangs up interrupts the stage ([`Job::interrupted`]); one that
//! does not read is dropped past the front end's output bound, which interrupts it too.
//!
//! [`SseEvent`] writes the `text/event-stream` format (WHATWG HTML, "Server-sent
//! events"), which the front end uses for `GET /jobs/{id}/events` and embedders can use
//! for streams of their own.
//!
//! [`Job::interrupted`]: crate::Job::interrupted

use crate::envelope::{Envelope, Protocol};
use crate::http::Response;
use crate::loopback::{
    failure_frames, response_frames, stream_frames, Failure, FailureKind, StreamPart,
};
use crate::sockets;
use std::fmt;

/// A response being sent in pieces. Dropping it unfinished tells the front end the
/// answer stopped midway: the client's connection is closed after what was sent.
pub struct ResponseStream<'j> {
    loopback: &'j zmq::Socket,
    envelope: Envelope,
    /// For answers that are not streamed to a client (netstrings, raw, asynchronous
    /// jobs, whose answer is stored whole): the response, its body growing with each
    /// piece, sent whole at the end.
    whole: Option<Response>,
    finished: bool,
}

/// Why a piece could not be sent.
#[derive(Debug)]
pub struct StreamError(zmq::Error);

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the streamed answer could not be sent on: {}", self.0)
    }
}

impl std::error::Error for StreamError {}

impl<'j> ResponseStream<'j> {
    /// Sends the head of `response` (its status and header fields; its body, if any,
    /// is the first piece).
    pub(crate) fn start(
        loopback: &'j zmq::Socket,
        envelope: Envelope,
        response: &Response,
    ) -> Result<Self, StreamError> {
        let mut stream = ResponseStream {
            loopback,
            envelope,
            whole: None,
            finished: false,
        };
        match envelope.protocol {
            Protocol::Http {
                minor_version,
                keep_alive,
                ..
            } if !envelope.job => {
                let head = response.stream_head(minor_version, keep_alive);
                stream.part(StreamPart::Start, head)?;
            }
            _ => {
                stream.whole = Some(Response {
                    body: Vec::new(),
                    ..response.clone()
                })
            }
        }
        if !response.body.is_empty() {
            stream.send(&response.body)?;
        }
        Ok(stream)
    }

    fn part(&self, part: StreamPart, bytes: Vec<u8>) -> Result<(), StreamError> {
        let frames = stream_frames(&self.envelope.encode(), part, bytes.into());
        sockets::send_frames(self.loopback, frames, zmq::DONTWAIT).map_err(StreamError)
    }

    fn head_only(&self) -> bool {
        matches!(self.envelope.protocol, Protocol::Http { head: true, .. })
    }

    /// Sends one piece of the body (nothing for a HEAD request).
    pub fn send(&mut self, piece: &[u8]) -> Result<(), StreamError> {
        if let Some(whole) = &mut self.whole {
            whole.body.extend_from_slice(piece);
            return Ok(());
        }
        if piece.is_empty() || self.head_only() {
            return Ok(());
        }
        let minor_version = match self.envelope.protocol {
            Protocol::Http { minor_version, .. } => minor_version,
            _ => 1,
        };
        self.part(StreamPart::Piece, Response::chunk(minor_version, piece))
    }

    /// Ends the answer.
    pub fn finish(mut self) -> Result<(), StreamError> {
        self.finished = true;
        match self.whole.take() {
            Some(response) => {
                let bytes = crate::worker::render(self.envelope.protocol, &response);
                let frames = response_frames(&self.envelope.encode(), &bytes);
                sockets::send_frames(self.loopback, frames, zmq::DONTWAIT).map_err(StreamError)
            }
            None => {
                let minor_version = match self.envelope.protocol {
                    Protocol::Http { minor_version, .. } => minor_version,
                    _ => 1,
                };
                let last = if self.head_only() {
                    Vec::new()
                } else {
                    Response::last_chunk(minor_version).to_vec()
                };
                self.part(StreamPart::End, last)
            }
        }
    }
}

impl Drop for ResponseStream<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        log::warn!(
            "request {}: a streamed answer was dropped unfinished",
            self.envelope.request_id
        );
        let sent = if self.whole.is_some() {
            let failure = Failure::new(FailureKind::WorkerPanicked, "the answer stopped midway");
            let frames = failure_frames(&self.envelope.encode(), &failure);
            sockets::send_frames(self.loopback, frames, zmq::DONTWAIT)
        } else {
            let frames = stream_frames(
                &self.envelope.encode(),
                StreamPart::Abort,
                zmq::Message::new(),
            );
            sockets::send_frames(self.loopback, frames, zmq::DONTWAIT)
        };
        if let Err(e) = sent {
            log::warn!(
                "request {}: the end of a stream was not sent: {e}",
                self.envelope.request_id
            );
        }
    }
}

/// One event of a `text/event-stream`.
///
/// ```
/// use prime_server::streaming::SseEvent;
/// let event = SseEvent::new("line one\nline two").id("7").event("progress");
/// assert_eq!(event.to_bytes(), b"id: 7\nevent: progress\ndata: line one\ndata: line two\n\n");
/// assert_eq!(SseEvent::comment("keep-alive"), b": keep-alive\n\n");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`, which a reconnecting client sends back as `Last-Event-ID`.
    pub id: Option<String>,
    /// `event:`, the event's type (`message` when absent).
    pub event: Option<String>,
    /// `data:`, one line per line of the data.
    pub data: String,
    /// `retry:`, the reconnection time the client should use, in milliseconds.
    pub retry_ms: Option<u64>,
}

impl SseEvent {
    /// An event carrying `data`.
    pub fn new(data: impl Into<String>) -> Self {
        SseEvent {
            data: data.into(),
            ..SseEvent::default()
        }
    }

    /// Sets the event's id. CR and LF, which would end the field, are left out.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(one_line(id.into()));
        self
    }

    /// Sets the event's type. CR and LF are left out.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(one_line(event.into()));
        self
    }

    /// The event as it is written to the stream.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.data.len() + 32);
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        if let Some(event) = &self.event {
            out.push_str("event: ");
            out.push_str(event);
            out.push('\n');
        }
        if let Some(retry) = self.retry_ms {
            out.push_str(&format!("retry: {retry}\n"));
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line.strip_suffix('\r').unwrap_or(line));
            out.push('\n');
        }
        out.push('\n');
        out.into_bytes()
    }

    /// A comment line, which clients ignore: sent to keep idle proxies from closing the
    /// stream.
    pub fn comment(text: &str) -> Vec<u8> {
        format!(": {}\n\n", one_line(text.to_string())).into_bytes()
    }
}

fn one_line(text: String) -> String {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], "")
    } else {
        text
    }
}

/// The head of an event stream's response (`text/event-stream`, never cached, never
/// buffered by proxies that honour `X-Accel-Buffering`).
pub fn sse_response() -> Response {
    Response::new(200)
        .header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no")
}
