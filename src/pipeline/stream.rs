//! Answers in pieces: a stage's streamed response.
//!
//! A stage that wants to answer over time starts a [`ResponseStream`] with the head of
//! its response, sends body pieces as they are ready, and finishes it. Each part goes to
//! the front end on the loopback as it is sent (see [`crate::pipeline::loopback`]); the front end
//! writes them to the client in order, with `Transfer-Encoding: chunked` for HTTP/1.1
//! and delimited by the connection's close for HTTP/1.0, and keeps the answers of later
//! pipelined requests waiting until the stream ends. The whole stream is bound by the
//! request's deadline: a stage that stops sending is cut off there, with the connection
//! closed. A client that hangs up interrupts the stage ([`Job::interrupted`]); one that
//! does not read is dropped past the front end's output bound, which interrupts it too.
//!
//! [`SseEvent`](crate::http::SseEvent) writes the `text/event-stream` format for such
//! streams.
//!
//! [`Job::interrupted`]: crate::Job::interrupted

use crate::base::sockets;
use crate::http::Response;
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::loopback::{
    failure_frames, render, response_frames, stream_frames, Failure, FailureKind, StreamPart,
};
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
                let bytes = render(self.envelope.protocol, &response);
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
