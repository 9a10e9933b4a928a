//! The gateway's lean client for plain calls: a request read in place from the
//! client's head (see `gateway_wire::with_head`) goes to the backend on a connection of
//! this module's own, with no hyper connection task, channel or dispatcher between the
//! call and its socket. The call writes the request's bytes itself (request line,
//! fields, the backend's `Host`, `Content-Length` for a body: RFC 9112 §3, §6.2) and
//! reads the answer in place: its head with httparse (up to
//! [`MAX_ANSWER_FIELDS`](super::gateway_backend::MAX_ANSWER_FIELDS) fields, slots on the
//! stack), its body by `Content-Length`, chunked (the crate's own decoder,
//! [`ChunkedDecoder`]) or until the connection closes (RFC 9112 §6.3); 1xx answers other
//! than `101` are skipped, as hyper skips them.
//!
//! What hyper's client gave the gateway stays: connections kept alive per backend in a
//! pool of the thread's own ([`PlainPool`]), taken again only while no byte waits on
//! them (a closed one is dropped at once); the RFC 9112 §9.3.1 retry: a request whose
//! kept-alive connection fails before a byte of it went out, or (an idempotent method)
//! closes before a byte of the answer came, is sent again, once, on a new connection,
//! from the bytes already made; a call dropped before its answer's last byte (aborted,
//! timed out) closes its connection, and only a connection whose answer ended whole
//! and that may serve again (HTTP/1.1 without `close`, nothing more on it) goes back to
//! the pool. The whole call stays bounded by the gateway's timeout (the caller's), the
//! body by its size limit. Everything else (WebSockets, the general path, the blocking
//! `call`) goes through hyper as before.

use super::gateway_answer::{Framing, PlainAnswer};
use super::gateway_backend::{Backend, CallError};
use crate::http::{ChunkedDecoder, Limits, ParseError};
use bytes::Bytes;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use ureq::http;

/// The room a connection reads into at first, in bytes: a usual answer in one read.
const READ_ROOM: usize = 16 * 1024;

/// The largest answer head read, in bytes (status line and fields): hyper's bound on
/// its read buffer, which the gateway's answers met before.
const MAX_HEAD: usize = 8192 + 4096 * 100;

/// A connection whose read buffer grew past this many bytes for a large answer gives
/// the memory back before it waits in the pool.
const KEEP_ROOM: usize = 4 * READ_ROOM;

/// What hyper says of a connection that closed before an answer ended.
const INCOMPLETE: &str = "connection closed before message completed";

/// A connection to the backend, with its buffers.
pub(super) struct PlainConnection {
    stream: TcpStream,
    /// Bytes read are `read[..filled]`; the rest is zeroed room for the next read.
    read: Vec<u8>,
    filled: usize,
    /// The request being sent, made in a buffer each call reuses.
    out: Vec<u8>,
    /// Since when it waits in the pool.
    idle_since: Instant,
}

/// Why an exchange failed: the connection closed (or was reset) before a byte of the
/// answer came, which a kept-alive connection may retry, or any other reason.
enum Failed {
    /// `sent` says whether any byte of the request may have gone out; the reason.
    Closed {
        sent: bool,
        why: String,
    },
    Call(CallError),
}

impl From<CallError> for Failed {
    fn from(error: CallError) -> Self {
        Failed::Call(error)
    }
}

impl PlainConnection {
    /// A new connection to `backend`.
    async fn open(backend: &Backend) -> Result<Self, CallError> {
        let stream = TcpStream::connect((backend.host.as_str(), backend.port))
            .await
            .map_err(|e| CallError::Unreached(format!("tcp connect error: {e}")))?;
        // A request goes out in one write: no Nagle wait between answers.
        stream
            .set_nodelay(true)
            .map_err(|e| CallError::Unreached(e.to_string()))?;
        Ok(PlainConnection {
            stream,
            read: Vec::new(),
            filled: 0,
            out: Vec::new(),
            idle_since: Instant::now(),
        })
    }

    /// Whether the connection may take a request: nothing waits on it (no early byte,
    /// no end), as far as the runtime has seen without waiting.
    fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: an end, a stray byte, or readiness left from the last answer.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `out` whole.
    async fn send(&mut self) -> Result<(), Failed> {
        let PlainConnection { stream, out, .. } = self;
        let mut sent = 0;
        while sent < out.len() {
            let written = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, &out[sent..])).await;
            match written {
                Ok(0) => {
                    return Err(Failed::Closed {
                        sent: sent > 0,
                        why: INCOMPLETE.to_string(),
                    })
                }
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Failed::Closed {
                        sent: sent > 0,
                        why: format!("error writing a request: {e}"),
                    })
                }
            }
        }
        Ok(())
    }

    /// Reads more bytes after `read[..filled]` (growing the room when it is full);
    /// says how many (0 at the end).
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.filled == self.read.len() {
            let grown = (self.read.len() * 2).max(READ_ROOM);
            self.read.resize(grown, 0);
        }
        let PlainConnection {
            stream,
            read,
            filled,
            ..
        } = self;
        let room = &mut read[*filled..];
        let n = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut *room);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        *filled += n;
        Ok(n)
    }

    /// [`fill`](Self::fill), where an end or an error is the answer cut short.
    async fn fill_more(&mut self) -> Result<(), Failed> {
        match self.fill().await {
            Ok(0) => Err(CallError::Unreached(INCOMPLETE.to_string()).into()),
            Ok(_) => Ok(()),
            Err(e) => Err(CallError::Unreached(format!("error reading an answer: {e}")).into()),
        }
    }

    /// Reads the answer to the request sent: the answer, and whether the connection
    /// may serve again.
    async fn answer(
        &mut self,
        head_request: bool,
        limit: u64,
    ) -> Result<(PlainAnswer, bool), Failed> {
        self.filled = 0;
        // Whether any byte of an answer came (an interim one's included).
        let mut seen = false;
        let (mut response, head_end) = loop {
            match PlainAnswer::parse_head(&self.read[..self.filled])? {
                Some((response, len)) if is_skipped(response.status()) => {
                    // Its room goes to what follows: interim answers do not pile up.
                    self.read.copy_within(len..self.filled, 0);
                    self.filled -= len;
                }
                Some((response, len)) => break (response, len),
                None => {
                    if self.filled > MAX_HEAD {
                        return Err(CallError::Unreached(format!(
                            "the answer's head is over {MAX_HEAD} bytes"
                        ))
                        .into());
                    }
                    match self.fill().await {
                        Ok(0) if !seen => {
                            return Err(Failed::Closed {
                                sent: true,
                                why: INCOMPLETE.to_string(),
                            })
                        }
                        Ok(0) => return Err(CallError::Unreached(INCOMPLETE.to_string()).into()),
                        Ok(_) => seen = true,
                        Err(e) if !seen => {
                            return Err(Failed::Closed {
                                sent: true,
                                why: format!("error reading an answer: {e}"),
                            })
                        }
                        Err(e) => {
                            return Err(CallError::Unreached(format!(
                                "error reading an answer: {e}"
                            ))
                            .into())
                        }
                    }
                }
            }
        };
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // Nobody asked for it (the gateway never forwards `Upgrade`): the caller
            // refuses it, and the connection is another protocol's now.
            return Ok((response, false));
        }
        let mut keep = response.may_serve_again();
        let framing = response.framing(head_request)?;
        if matches!(framing, Framing::UntilClose) || response.is_framed_twice() {
            keep = false;
        }
        let too_large = || Failed::Call(CallError::TooLarge(limit));
        let end = match framing {
            Framing::Empty => head_end,
            Framing::Length(length) => {
                if length > limit {
                    return Err(too_large());
                }
                // Within the limit, which a usize holds.
                let length = usize::try_from(length).map_err(|_| too_large())?;
                while self.filled - head_end < length {
                    self.fill_more().await?;
                }
                let end = head_end + length;
                response.set_body(&self.read[head_end..end]);
                end
            }
            Framing::Chunked => {
                let limits = Limits {
                    max_body: usize::try_from(limit).unwrap_or(usize::MAX),
                    ..Limits::default()
                };
                let mut decoder = ChunkedDecoder::new();
                let mut body = Vec::new();
                let mut at = head_end;
                loop {
                    let progress = decoder
                        .decode(&self.read[at..self.filled], &mut body, &limits)
                        .map_err(|e| match e {
                            ParseError::BodyTooLarge { .. } => too_large(),
                            other => Failed::Call(CallError::Unreached(format!(
                                "invalid chunked body: {other}"
                            ))),
                        })?;
                    at += progress.consumed;
                    if progress.done {
                        break;
                    }
                    // What is decoded is no longer needed: the room goes to new bytes.
                    self.read.copy_within(at..self.filled, 0);
                    self.filled -= at;
                    at = 0;
                    self.fill_more().await?;
                }
                response.set_body(&body);
                at
            }
            Framing::UntilClose => {
                loop {
                    if (self.filled - head_end) as u64 > limit {
                        return Err(too_large());
                    }
                    match self.fill().await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            return Err(CallError::Unreached(format!(
                                "error reading an answer: {e}"
                            ))
                            .into())
                        }
                    }
                }
                response.set_body(&self.read[head_end..self.filled]);
                self.filled
            }
        };
        // A byte after the answer belongs to no request: the connection is not used
        // again.
        if end != self.filled {
            keep = false;
        }
        self.filled = 0;
        if self.read.len() > KEEP_ROOM {
            self.read = Vec::new();
        }
        Ok((response, keep))
    }
}

/// Whether an answer with `status` is an interim one the client skips (1xx but `101`).
fn is_skipped(status: http::StatusCode) -> bool {
    status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS
}

/// A request for the lean client, made by the gateway: its head's lines but `Host`
/// (the request line and the fields, each ended by CRLF), and its body.
pub(super) struct PlainRequest {
    pub(super) method: http::Method,
    pub(super) head: Vec<u8>,
    pub(super) body: Bytes,
}

/// A plain call to make: the request, the most body bytes taken, the bound on the
/// whole call.
pub(super) struct PlainCall {
    pub(super) request: PlainRequest,
    pub(super) limit: u64,
    pub(super) timeout: Duration,
}

/// Writes `request` as the bytes sent into `out` (emptied first): its head, the
/// backend's `Host` (`authority`), a `Content-Length` for a body (none for an empty
/// one, as hyper sent it), the empty line, the body.
fn encode(out: &mut Vec<u8>, authority: &http::HeaderValue, request: &PlainRequest) {
    out.clear();
    let body = &request.body;
    out.reserve(request.head.len() + authority.len() + body.len() + 48);
    out.extend_from_slice(&request.head);
    out.extend_from_slice(b"host: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !body.is_empty() {
        out.extend_from_slice(b"content-length: ");
        let mut digits = [0; 20];
        out.extend_from_slice(crate::http::decimal(body.len() as u64, &mut digits));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Makes a plain call: sends `request` on `pooled` or a new connection and reads its
/// answer (the body up to `limit` bytes); gives back the connection when it may serve
/// again. The request's bytes are made once: a retry (see the module docs) sends the
/// same bytes.
pub(super) async fn exchange(
    backend: Arc<Backend>,
    pooled: Option<PlainConnection>,
    request: PlainRequest,
    limit: u64,
) -> Result<(PlainAnswer, Option<PlainConnection>), CallError> {
    let idempotent = request.method.is_idempotent();
    let head_request = request.method == http::Method::HEAD;
    let mut reused = pooled.is_some();
    let mut connection = match pooled {
        Some(connection) => connection,
        None => PlainConnection::open(&backend).await?,
    };
    encode(&mut connection.out, &backend.authority, &request);
    drop(request);
    loop {
        let exchanged = match connection.send().await {
            Ok(()) => connection.answer(head_request, limit).await,
            Err(failed) => Err(failed),
        };
        match exchanged {
            Ok((answer, keep)) => return Ok((answer, keep.then_some(connection))),
            Err(Failed::Closed { sent, why }) => {
                if !(reused && (!sent || idempotent)) {
                    return Err(CallError::Unreached(why));
                }
                log::debug!("a kept-alive backend connection was closed; sending again");
                let out = std::mem::take(&mut connection.out);
                connection = PlainConnection::open(&backend).await?;
                connection.out = out;
                reused = false;
            }
            Err(Failed::Call(error)) => return Err(error),
        }
    }
}

/// The plain connections that wait for a request, the longest waiting first.
#[derive(Default)]
pub(super) struct PlainPool {
    idle: Vec<PlainConnection>,
}

impl PlainPool {
    /// The connection that waited least, if one may take a request; drops the closed
    /// ones and those idle `idle` or longer.
    pub(super) fn take(&mut self, now: Instant, idle: Duration) -> Option<PlainConnection> {
        while let Some(connection) = self.idle.pop() {
            if now.saturating_duration_since(connection.idle_since) < idle && connection.is_open() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps a connection whose answer ended whole.
    pub(super) fn put(&mut self, mut connection: PlainConnection, now: Instant) {
        connection.idle_since = now;
        self.idle.push(connection);
    }

    /// Whether no connection waits.
    pub(super) fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }

    /// Closes the connections idle `idle` or longer.
    pub(super) fn expire(&mut self, now: Instant, idle: Duration) {
        let stale = self
            .idle
            .iter()
            .take_while(|c| now.saturating_duration_since(c.idle_since) >= idle)
            .count();
        self.idle.drain(..stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A backend on a free port of 127.0.0.1 that answers each of its connections'
    /// first request with the next of `answers` and then closes it; its URL's backend.
    fn backend(answers: Vec<&'static [u8]>) -> (Backend, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let serving = std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut socket, _)) = listener.accept() else {
                    return;
                };
                socket
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("a timeout");
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = socket.write_all(answer);
            }
        });
        let backend = Backend {
            host: "127.0.0.1".to_string(),
            port,
            authority: http::HeaderValue::from_str(&format!("127.0.0.1:{port}"))
                .expect("an authority"),
        };
        (backend, serving)
    }

    /// What one GET of `/` to a backend that answers `answer` gives (body limit
    /// `limit`), and whether the connection would serve again.
    fn get(answer: &'static [u8], limit: u64) -> Result<(PlainAnswer, bool), CallError> {
        let (backend, serving) = backend(vec![answer]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let request = PlainRequest {
            method: http::Method::GET,
            head: b"GET / HTTP/1.1\r\n".to_vec(),
            body: Bytes::new(),
        };
        let called = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                exchange(Arc::new(backend), None, request, limit),
            )
            .await
            .expect("an answer in time")
        });
        serving.join().expect("the backend ended");
        called.map(|(answer, kept)| (answer, kept.is_some()))
    }

    #[test]
    fn reads_a_body_by_its_length_and_keeps_the_connection() {
        let (answer, kept) = get(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
            100,
        )
        .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.fields().collect::<Vec<_>>(),
            [(&b"content-length"[..], &b"5"[..]), (b"x-a", b"1")]
        );
        assert_eq!(answer.body(), b"hello");
        assert!(kept);
    }

    #[test]
    fn reads_a_chunked_body_and_skips_an_interim_answer() {
        let (answer, kept) = get(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.body(), b"abcde");
        assert!(kept);
    }

    #[test]
    fn reads_a_body_until_the_close_and_then_keeps_nothing() {
        let (answer, kept) = get(b"HTTP/1.1 200 OK\r\n\r\nto the end", 100).unwrap();
        assert_eq!(answer.body(), b"to the end");
        assert!(!kept);
        let (_, kept) = get(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .unwrap();
        assert!(!kept);
        let (_, kept) = get(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100).unwrap();
        assert!(!kept);
    }

    #[test]
    fn a_body_over_the_limit_is_too_large_however_it_is_framed() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nhello world",
        ] {
            let answer: &'static [u8] = answer;
            assert!(
                matches!(get(answer, 10), Err(CallError::TooLarge(10))),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[test]
    fn a_malformed_or_cut_answer_is_no_answer() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"not HTTP at all\r\n\r\n",
            b"",
        ] {
            let answer: &'static [u8] = answer;
            assert!(
                matches!(get(answer, 100), Err(CallError::Unreached(_))),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[test]
    fn a_request_is_written_with_the_backends_host_and_its_length() {
        let post = PlainRequest {
            method: http::Method::POST,
            head: b"POST /p?q=1 HTTP/1.1\r\nx-b: 2\r\n".to_vec(),
            body: Bytes::from_static(b"body"),
        };
        let mut out = Vec::new();
        let authority = http::HeaderValue::from_static("backend:8080");
        encode(&mut out, &authority, &post);
        assert_eq!(
            out,
            b"POST /p?q=1 HTTP/1.1\r\nx-b: 2\r\nhost: backend:8080\r\ncontent-length: 4\r\n\r\nbody"
        );
        let get = PlainRequest {
            method: http::Method::GET,
            head: b"GET / HTTP/1.1\r\n".to_vec(),
            body: Bytes::new(),
        };
        encode(&mut out, &authority, &get);
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: backend:8080\r\n\r\n");
    }
}
