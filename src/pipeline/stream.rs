//! Answers in pieces: a stage's streamed response.
//!
//! A stage that wants to answer over time starts a [`ResponseStream`] with the head of
//! its response, sends body pieces as they are ready, and finishes it. Each part goes to
//! the front end on the loopback as it is sent (see [`crate::pipeline::loopback`]); the front end
//! writes them to the client in order, with `Transfer-Encoding: chunked` for HTTP/1.1
//! and delimited by the connection's close for HTTP/1.0, and keeps the answers of later
//! pipelined requests waiting until the stream ends. The whole stream is bound by the
//! request's deadline: a stage that stops sending is cut off there, with the connection
//! closed. A client that hangs up interrupts the stage ([`Job::interrupted`]).
//!
//! A client that reads slowly paces the stage: the front end publishes on the interrupt
//! channel how many bytes of the stream it has handed to the client's connection
//! ([`StreamWritten`](crate::pipeline::envelope::StreamWritten), once at least [`STREAM_ACK_STEP`] more have gone and its own
//! output for the connection is empty), and [`ResponseStream::send`] waits while
//! [`STREAM_WINDOW`] bytes or more are sent but not handed on. So the front end holds
//! at most a window per stream in its output (besides what libzmq and the kernel hold
//! for the connection), well within its output bound, and a large answer is never whole
//! in memory anywhere. A stream behind an earlier answer on its connection waits for
//! it the same way. While it waits, the stage still ends at the request's deadline or
//! when the client leaves (`send` then fails with [`StreamError::is_interrupted`]).
//!
//! A stream of known length ([`Job::stream_sized`]) sends `Content-Length` and its
//! pieces as they are, with no chunked coding; it must send exactly that many bytes,
//! or its end is taken as a stop midway.
//!
//! [`SseEvent`](crate::http::SseEvent) writes the `text/event-stream` format for such
//! streams.
//!
//! [`Job::interrupted`]: crate::Job::interrupted
//! [`Job::stream_sized`]: crate::Job::stream_sized

use crate::http::Response;
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::front_ends::Loopbacks;
use crate::pipeline::loopback::{
    failure_frames, render, response_frames, stream_frames, Failure, FailureKind, StreamPart,
};
use crate::pipeline::worker::InterruptWatch;
use std::fmt;
use std::time::Duration;

/// Bytes of a stream a worker may have sent that the front end has not yet handed to
/// the client's connection (4 MiB); [`ResponseStream::send`] waits past it. Well under
/// the front end's default output bound (16 MiB), which a configured bound must exceed
/// too for a slow reader of a stream to be paced rather than dropped.
pub const STREAM_WINDOW: u64 = 4 * 1024 * 1024;

/// How many more bytes of a stream the front end hands on before it says so (1 MiB); at
/// most a quarter of [`STREAM_WINDOW`], so a worker that waits always hears of room.
pub const STREAM_ACK_STEP: u64 = 1024 * 1024;

/// How long a waiting stream sleeps between looks at its interrupts and deadline.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// A response being sent in pieces. Dropping it unfinished tells the front end the
/// answer stopped midway: the client's connection is closed after what was sent.
pub struct ResponseStream<'j> {
    loopback: &'j Loopbacks,
    watch: &'j InterruptWatch,
    envelope: Envelope,
    /// Bytes sent on the loopback (head included), to compare with what the front end
    /// has handed on.
    sent: u64,
    /// For a stream of known length: its length.
    announced: Option<u64>,
    /// Body bytes given to [`send`](Self::send) so far.
    body_sent: u64,
    /// Whether the front end's notices about this stream are subscribed to.
    watching: bool,
    /// For answers that are not streamed to a client (netstrings, raw, asynchronous
    /// jobs, whose answer is stored whole): the response, its body growing with each
    /// piece, sent whole at the end.
    whole: Option<Response>,
    finished: bool,
}

/// Why a piece could not be sent, or a stream not finished.
#[derive(Debug)]
pub struct StreamError(Cause);

#[derive(Debug)]
enum Cause {
    /// The loopback refused the part.
    Send(zmq::Error),
    /// The request was interrupted (client gone, deadline passed, shutting down) while
    /// the stream waited for the client to read.
    Interrupted,
    /// A stream of known length got more, or fewer, bytes than it announced.
    Length { announced: u64, got: u64 },
}

impl StreamError {
    /// Whether the stream stopped because the request was interrupted: the client left,
    /// the deadline passed or the worker shuts down. Nobody waits for the rest.
    pub fn is_interrupted(&self) -> bool {
        matches!(self.0, Cause::Interrupted)
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Cause::Send(e) => write!(f, "the streamed answer could not be sent on: {e}"),
            Cause::Interrupted => write!(
                f,
                "the streamed answer was interrupted (client gone, deadline passed or shutting down)"
            ),
            Cause::Length { announced, got } if got > announced => write!(
                f,
                "the streamed answer announced {announced} bytes and was given more"
            ),
            Cause::Length { announced, got } => write!(
                f,
                "the streamed answer announced {announced} bytes and ended after {got}"
            ),
        }
    }
}

impl std::error::Error for StreamError {}

impl<'j> ResponseStream<'j> {
    /// Sends the head of `response` (its status and header fields; its body, if any,
    /// is the first piece). With `length`, the body is that many bytes, announced in
    /// `Content-Length` and sent as they are.
    pub(crate) fn start(
        loopback: &'j Loopbacks,
        watch: &'j InterruptWatch,
        envelope: Envelope,
        response: &Response,
        length: Option<u64>,
    ) -> Result<Self, StreamError> {
        let mut stream = ResponseStream {
            loopback,
            watch,
            envelope,
            sent: 0,
            announced: length,
            body_sent: 0,
            watching: false,
            whole: None,
            finished: false,
        };
        match envelope.protocol {
            Protocol::Http {
                minor_version,
                keep_alive,
                ..
            } if !envelope.job => {
                let head = match length {
                    Some(length) => response.sized_stream_head(minor_version, keep_alive, length),
                    None => response.stream_head(minor_version, keep_alive),
                };
                // Subscribed before the head goes, so that the front end's first notice
                // finds the subscription in place.
                watch.watch_stream(&envelope);
                stream.watching = true;
                stream.part(StreamPart::Start, head)?;
            }
            _ => {
                let mut whole = Response {
                    body: Vec::new(),
                    ..response.clone()
                };
                if let Some(length) = length {
                    whole
                        .headers
                        .retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
                    whole
                        .headers
                        .push(("Content-Length".into(), length.to_string()));
                }
                stream.whole = Some(whole);
            }
        }
        if !response.body.is_empty() {
            stream.send(&response.body)?;
        }
        Ok(stream)
    }

    fn part(&mut self, part: StreamPart, bytes: Vec<u8>) -> Result<(), StreamError> {
        self.sent += bytes.len() as u64;
        let frames = stream_frames(&self.envelope.encode(), part, bytes.into());
        self.loopback
            .send(frames, zmq::DONTWAIT)
            .map_err(|e| StreamError(Cause::Send(e)))
    }

    /// Waits while a window of bytes is sent and not yet handed to the client (see the
    /// module's notes), or until the request is interrupted.
    fn wait_for_room(&self) -> Result<(), StreamError> {
        while self.sent.saturating_sub(self.watch.stream_written()) >= STREAM_WINDOW {
            if self.watch.is_interrupted(&self.envelope) {
                return Err(StreamError(Cause::Interrupted));
            }
            self.watch.wait(WAIT_SLICE);
        }
        Ok(())
    }

    fn head_only(&self) -> bool {
        matches!(self.envelope.protocol, Protocol::Http { head: true, .. })
    }

    fn minor_version(&self) -> u8 {
        match self.envelope.protocol {
            Protocol::Http { minor_version, .. } => minor_version,
            _ => 1,
        }
    }

    /// Sends one piece of the body (nothing for a HEAD request). Waits while the client
    /// has not yet been handed [`STREAM_WINDOW`] bytes sent before; fails if the request
    /// is interrupted meanwhile, or if the piece goes past a sized stream's length.
    pub fn send(&mut self, piece: &[u8]) -> Result<(), StreamError> {
        if let Some(announced) = self.announced {
            let got = self.body_sent + piece.len() as u64;
            if got > announced {
                return Err(StreamError(Cause::Length { announced, got }));
            }
        }
        self.body_sent += piece.len() as u64;
        if let Some(whole) = &mut self.whole {
            whole.body.extend_from_slice(piece);
            return Ok(());
        }
        if piece.is_empty() || self.head_only() {
            return Ok(());
        }
        self.wait_for_room()?;
        let bytes = match self.announced {
            Some(_) => piece.to_vec(),
            None => Response::chunk(self.minor_version(), piece),
        };
        self.part(StreamPart::Piece, bytes)
    }

    /// Ends the answer. A sized stream that got fewer bytes than it announced fails, and
    /// its client's connection is closed after what was sent.
    pub fn finish(mut self) -> Result<(), StreamError> {
        if let Some(announced) = self.announced {
            if self.body_sent != announced {
                return Err(StreamError(Cause::Length {
                    announced,
                    got: self.body_sent,
                }));
            }
        }
        self.finished = true;
        match self.whole.take() {
            Some(response) => {
                let bytes = render(self.envelope.protocol, &response);
                let frames = response_frames(&self.envelope.encode(), &bytes);
                self.loopback
                    .send(frames, zmq::DONTWAIT)
                    .map_err(|e| StreamError(Cause::Send(e)))
            }
            None => {
                let last = if self.head_only() || self.announced.is_some() {
                    Vec::new()
                } else {
                    Response::last_chunk(self.minor_version()).to_vec()
                };
                self.part(StreamPart::End, last)
            }
        }
    }
}

impl Drop for ResponseStream<'_> {
    fn drop(&mut self) {
        if self.watching {
            self.watch.unwatch_stream(&self.envelope);
        }
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
            self.loopback.send(frames, zmq::DONTWAIT)
        } else {
            let frames = stream_frames(
                &self.envelope.encode(),
                StreamPart::Abort,
                zmq::Message::new(),
            );
            self.loopback.send(frames, zmq::DONTWAIT)
        };
        if let Err(e) = sent {
            log::warn!(
                "request {}: the end of a stream was not sent: {e}",
                self.envelope.request_id
            );
        }
    }
}
