//! HTTP/1.0 and HTTP/1.1 for prime_server: a streaming request parser for the
//! front end, a request type for workers and a response serializer.
//!
//! The front end owns a `ZMQ_STREAM` socket, so it sees TCP bytes exactly as the
//! kernel hands them over: one request may arrive in many frames, one frame may
//! hold several pipelined requests, and a frame boundary may fall anywhere, even
//! inside a CRLF. [`RequestParser`] therefore keeps per-connection state and
//! never assumes that a frame lines up with anything.
//!
//! A complete request travels to a worker as two buffers, the head as received
//! and the decoded body ([`ParsedRequest::head`], [`ParsedRequest::body`]); the
//! worker turns them back into a [`Request`] and answers with a [`Response`].
//!
//! [`websocket`] is RFC 6455 without I/O: the handshake's checks and frames;
//! [`websocket_events`] is GRIP's WebSocket-over-HTTP body format.

mod chunked;
mod error;
mod fields;
mod head;
mod limits;
mod lines;
mod parser;
mod plain;
mod request;
mod response;
mod sse;
#[cfg(test)]
mod tests;
pub mod websocket;
pub mod websocket_events;

pub(crate) use chunked::ChunkedDecoder;
pub use error::ParseError;
pub use fields::{field_text, field_values, post_head_without};
pub use head::Method;
pub use limits::Limits;
pub use parser::{Event, ParsedRequest, RequestParser};
pub use request::{Query, Request, RequestHead};
pub(crate) use response::decimal;
pub use response::{reason_phrase, write_response, Response, CONTINUE_RESPONSE};
pub use sse::{sse_response, SseEvent};
