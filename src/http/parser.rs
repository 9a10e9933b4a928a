//! The per-connection streaming request parser used by the front end.
//!
//! ZMQ_STREAM hands over TCP bytes split and coalesced arbitrarily: a body may
//! come in a hundred frames, several pipelined requests in one, a CRLF may be
//! cut in half. [`RequestParser`] buffers whatever it is fed, scans each byte
//! once (scan positions survive between feeds), and yields requests in order.

use std::mem;
use std::ops::Range;

use super::chunked::ChunkedDecoder;
use super::fields;
use super::head::{self, Framing, HeadInfo};
use super::lines::{LineScanner, SectionScanner};
use super::{Limits, Method, ParseError};

/// Consumed bytes at the front of the buffer are only shifted out once there
/// are at least this many and they outnumber the live ones, so compaction
/// costs O(1) amortized per byte.
const COMPACT_THRESHOLD: usize = 16 * 1024;

/// A body's up-front reservation is capped so that declaring a large
/// Content-Length without sending it does not pin memory.
const MAX_BODY_RESERVE: usize = 1024 * 1024;

/// The largest head's vector a parser keeps for reuse ([`RequestParser::recycle_head`]).
const SPARE_HEAD_MAX: usize = 4096;

/// Something the front end must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The head asked for `Expect: 100-continue` and the body is not complete:
    /// write [`CONTINUE_RESPONSE`](super::CONTINUE_RESPONSE) now. Emitted at
    /// most once per request.
    Continue,
    /// A complete request.
    Request(ParsedRequest),
}

/// A complete request as the front end sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    /// Request line and header section exactly as received, through the blank
    /// line; leading empty lines are not included.
    pub head: Vec<u8>,
    /// The body with any chunked framing removed and trailers dropped.
    pub body: Vec<u8>,
    /// The method.
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Whether this is a `HEAD` request, whose response carries no body.
    pub is_head: bool,
    /// Where the request-target lies in `head`.
    pub target: Range<usize>,
    /// Whether the head has a `Prefer` field (RFC 7240), which may ask for an
    /// asynchronous answer: the front end reads the field only when this is set.
    pub has_prefer: bool,
    /// Whether the head has an `Upgrade` field (RFC 9110 §7.8), which may ask for a
    /// WebSocket: the front end reads the field only when this is set.
    pub has_upgrade: bool,
}

impl ParsedRequest {
    /// The request-target's path: what comes before any `?`, as text (empty if it is
    /// not UTF-8).
    pub fn path_str(&self) -> &str {
        std::str::from_utf8(self.path_bytes()).unwrap_or_default()
    }

    /// The request-target's path as received: what comes before any `?` (what
    /// [`path_str`](Self::path_str) gives as text, without its UTF-8 check).
    pub fn path_bytes(&self) -> &[u8] {
        let target = self.head.get(self.target.clone()).unwrap_or_default();
        &target[..memchr::memchr(b'?', target).unwrap_or(target.len())]
    }

    /// The request-target as received, for the access log (empty if it is not UTF-8).
    pub fn target_str(&self) -> &str {
        self.head
            .get(self.target.clone())
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or_default()
    }

    /// The request line as received (method, target, version), for the access log.
    pub fn request_line(&self) -> &[u8] {
        let rest = self.head.get(self.target.end..).unwrap_or_default();
        // Nearly always ` HTTP/1.x` with the line's end right after it.
        let end = match rest {
            [b' ', b'H', b'T', b'T', b'P', b'/', _, b'.', _, b'\r' | b'\n', ..] => Some(9),
            _ => memchr::memchr2(b'\r', b'\n', rest),
        };
        &self.head[..self.target.end + end.unwrap_or(rest.len())]
    }

    /// The method token as received, for the access log.
    pub fn method_str(&self) -> &str {
        let end = self.target.start.saturating_sub(1);
        self.head
            .get(..end)
            .and_then(|m| std::str::from_utf8(m).ok())
            .unwrap_or_default()
    }
}

/// Incremental HTTP/1.x request parser for one connection.
///
/// Feed it every piece received, then call [`next_event`](Self::next_event)
/// until it returns `Ok(None)`. After an `Err` the connection must be closed
/// once the error response is sent; the parser stays failed.
///
/// ```
/// # use prime_server::http::{Event, Limits, RequestParser};
/// let mut parser = RequestParser::new(Limits::default());
/// parser.feed(b"GET /is_prime?n=7 HTTP/1.1\r\nHo");
/// assert_eq!(parser.next_event(), Ok(None));
/// assert!(parser.is_mid_request());
/// parser.feed(b"st: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
/// let Ok(Some(Event::Request(first))) = parser.next_event() else { panic!() };
/// assert_eq!(first.target_str(), "/is_prime?n=7");
/// assert!(matches!(parser.next_event(), Ok(Some(Event::Request(_)))));
/// assert_eq!(parser.next_event(), Ok(None));
/// ```
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes before this index have been consumed.
    start: usize,
    state: State,
    /// Whether the request that was rejected was a HEAD (its error response has no body).
    rejected_head: bool,
    /// The `Origin` of the request that was rejected, as far as its head had arrived.
    rejected_origin: Option<Box<str>>,
    /// A head's vector given back by [`recycle_head`](Self::recycle_head), for the
    /// next request's head: its copy then needs no allocation.
    spare_head: Vec<u8>,
}

#[derive(Debug)]
enum State {
    RequestLine(LineScanner),
    Headers {
        line_len: usize,
        section: SectionScanner,
    },
    Body(Box<InFlight>),
    Failed(ParseError),
}

/// A request whose head is parsed and whose body is still arriving.
#[derive(Debug)]
struct InFlight {
    request: ParsedRequest,
    body: BodyState,
    send_continue: bool,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl RequestParser {
    /// A parser for a new connection.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            buf: Vec::new(),
            start: 0,
            state: State::RequestLine(LineScanner::default()),
            rejected_head: false,
            rejected_origin: None,
            spare_head: Vec::new(),
        }
    }

    /// Appends received bytes. After a parse error they are discarded.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        let drained = self.start == self.buf.len();
        match &mut self.state {
            State::Failed(_) => return,
            // The common large-upload case: body bytes go straight into the
            // body instead of through the buffer.
            State::Body(in_flight) if drained => {
                if let BodyState::Length(remaining) = &mut in_flight.body {
                    let n = (*remaining).min(bytes.len() as u64) as usize;
                    in_flight.request.body.extend_from_slice(&bytes[..n]);
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                }
            }
            _ => {}
        }
        if drained {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= COMPACT_THRESHOLD && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Gives back the buffer's memory when all of it has been read: a connection whose
    /// request is held (a long-poll, a stream) reads nothing more for a long while, and
    /// keeps no copy of the request it sent meanwhile.
    pub fn release_buffer(&mut self) {
        self.spare_head = Vec::new();
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Takes back a [`ParsedRequest::head`] this parser made, once its request is done
    /// with it: the next request's head is copied into it rather than into a new
    /// allocation. (Only one is kept, and none of more than 4 KiB, so a connection keeps
    /// no more than that for it; [`release_buffer`](Self::release_buffer) drops it.)
    pub fn recycle_head(&mut self, head: Vec<u8>) {
        if head.capacity() <= SPARE_HEAD_MAX && head.capacity() > self.spare_head.capacity() {
            self.spare_head = head;
        }
    }

    /// The next event, `Ok(None)` when more bytes are needed. An error is
    /// returned again on every later call; requests before it were returned
    /// first, and nothing after it ever is.
    pub fn next_event(&mut self) -> Result<Option<Event>, ParseError> {
        if let State::Failed(err) = &self.state {
            return Err(err.clone());
        }
        self.step().inspect_err(|err| {
            log::debug!("rejecting request: {err}");
            self.rejected_head = self.current_is_head();
            self.rejected_origin = self.origin().map(Into::into);
            self.state = State::Failed(err.clone());
            self.buf = Vec::new();
            self.start = 0;
        })
    }

    /// Whether bytes of an unfinished request are buffered (the slow-header
    /// timeout applies).
    pub fn is_mid_request(&self) -> bool {
        match self.state {
            State::RequestLine(_) | State::Headers { .. } => self.start < self.buf.len(),
            State::Body(_) => true,
            State::Failed(_) => false,
        }
    }

    /// Whether the request the parser rejected was a HEAD request, so that the error
    /// response carries no body (RFC 9110 §9.3.2).
    pub fn rejected_head(&self) -> bool {
        self.rejected_head
    }

    /// The `Origin` field (RFC 6454 §7) of the request being read, or of the one the
    /// parser rejected, as far as its head had arrived: so that the front end's own
    /// answer to a request it could not read (`400`, `408`, `413`, `431`) can carry
    /// the CORS fields. `None` without one, with more than one, or when it is not text.
    pub fn origin(&self) -> Option<&str> {
        let head: &[u8] = match &self.state {
            State::Failed(_) => return self.rejected_origin.as_deref(),
            State::Body(in_flight) => &in_flight.request.head,
            State::RequestLine(_) | State::Headers { .. } => {
                let rest = &self.buf[self.start..];
                // Empty lines before a request are ignored (RFC 9112 §2.2), and the
                // head ends at the first empty line after it: nothing of a body is read.
                let skip = rest
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                let rest = &rest[skip..];
                let end = [&b"\n\r\n"[..], b"\n\n"]
                    .iter()
                    .filter_map(|end| memchr::memmem::find(rest, end))
                    .min()
                    .map_or(rest.len(), |at| at + 1);
                &rest[..end]
            }
        };
        let mut values = fields::field_values(head, "origin");
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        std::str::from_utf8(first).ok()
    }

    /// Whether the request being parsed is a HEAD request, as far as its bytes tell.
    fn current_is_head(&self) -> bool {
        match &self.state {
            State::Body(in_flight) => in_flight.request.is_head,
            _ => self.buf[self.start..]
                .iter()
                .skip_while(|b| matches!(b, b'\r' | b'\n'))
                .take(5)
                .eq(b"HEAD ".iter()),
        }
    }

    /// Whether the current request's head is complete and its body is awaited.
    pub fn head_complete(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    fn step(&mut self) -> Result<Option<Event>, ParseError> {
        loop {
            let input = &self.buf[self.start..];
            match &mut self.state {
                State::RequestLine(scanner) => {
                    // A plain head that arrived whole is read in one pass, once: before
                    // the scanner has looked at any byte of it.
                    if scanner.is_fresh() {
                        if let Some(plain) = head::parse_plain_head(input, &self.limits) {
                            let (head_len, info) = plain?;
                            return self.take_head(head_len, info);
                        }
                    }
                    let Some(line) = scanner.next_line(input) else {
                        if scanner.partial_len(input) > self.limits.max_request_line {
                            return Err(self.request_line_too_long());
                        }
                        return Ok(None);
                    };
                    if line.is_empty() {
                        // RFC 9112 §2.2: ignore empty lines before a request.
                        self.start += scanner.consumed();
                        *scanner = LineScanner::default();
                    } else if line.len() > self.limits.max_request_line {
                        return Err(self.request_line_too_long());
                    } else {
                        let line_len = scanner.consumed();
                        self.state = State::Headers {
                            line_len,
                            section: SectionScanner::default(),
                        };
                    }
                }
                State::Headers { line_len, section } => {
                    let Some(len) = section.advance(&input[*line_len..], &self.limits)? else {
                        return Ok(None);
                    };
                    let (line_len, head_len) = (*line_len, *line_len + len);
                    let fields = section.fields();
                    return self.start_request(line_len, head_len, fields);
                }
                State::Body(_) => return self.continue_body(),
                State::Failed(err) => return Err(err.clone()),
            }
        }
    }

    fn request_line_too_long(&self) -> ParseError {
        ParseError::RequestLineTooLong {
            limit: self.limits.max_request_line,
        }
    }

    /// The head is complete (`fields` header lines after the request line): validate
    /// it, then read the body if there is one.
    fn start_request(
        &mut self,
        line_len: usize,
        head_len: usize,
        fields: usize,
    ) -> Result<Option<Event>, ParseError> {
        head::serve_later_minor_as_1_1(&mut self.buf[self.start..self.start + line_len]);
        let head = &self.buf[self.start..self.start + head_len];
        let info = head::parse_head(head, fields, self.limits.max_body)?;
        self.take_head(head_len, info)
    }

    /// Takes the validated head of `head_len` bytes off the buffer's front: the
    /// request, if it has no body; else the body is read next.
    fn take_head(&mut self, head_len: usize, info: HeadInfo) -> Result<Option<Event>, ParseError> {
        let mut owned = mem::take(&mut self.spare_head);
        owned.clear();
        owned.extend_from_slice(&self.buf[self.start..self.start + head_len]);
        let head = owned;
        self.start += head_len;
        let HeadInfo {
            method,
            minor_version,
            keep_alive,
            target,
            framing,
            expect_continue,
            has_prefer,
            has_upgrade,
        } = info;
        let (body, reserve) = match framing {
            Framing::None => (None, 0),
            Framing::Length(n) => (Some(BodyState::Length(n)), n as usize),
            Framing::Chunked => (Some(BodyState::Chunked(ChunkedDecoder::new())), 0),
        };
        let request = ParsedRequest {
            head,
            body: Vec::with_capacity(reserve.min(MAX_BODY_RESERVE)),
            method,
            minor_version,
            keep_alive,
            is_head: method == Method::Head,
            target,
            has_prefer,
            has_upgrade,
        };
        let Some(body) = body else {
            self.state = State::RequestLine(LineScanner::default());
            return Ok(Some(Event::Request(request)));
        };
        self.state = State::Body(Box::new(InFlight {
            request,
            body,
            send_continue: expect_continue,
        }));
        self.continue_body()
    }

    fn continue_body(&mut self) -> Result<Option<Event>, ParseError> {
        let State::Body(in_flight) = &mut self.state else {
            return Ok(None);
        };
        let input = &self.buf[self.start..];
        let body = &mut in_flight.request.body;
        let done = match &mut in_flight.body {
            BodyState::Length(remaining) => {
                let n = (*remaining).min(input.len() as u64) as usize;
                body.extend_from_slice(&input[..n]);
                self.start += n;
                *remaining -= n as u64;
                *remaining == 0
            }
            BodyState::Chunked(decoder) => {
                let progress = decoder.decode(input, body, &self.limits)?;
                self.start += progress.consumed;
                progress.done
            }
        };
        if !done {
            return Ok(mem::take(&mut in_flight.send_continue).then_some(Event::Continue));
        }
        match mem::replace(&mut self.state, State::RequestLine(LineScanner::default())) {
            State::Body(in_flight) => Ok(Some(Event::Request(in_flight.request))),
            _ => Ok(None),
        }
    }
}
