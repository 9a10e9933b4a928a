//! The control listener's publishes, served on the front end's own loop.
//!
//! A publish used to cross three threads, each woken in turn: the connection's thread
//! (a blocking read), the front end (through its inbox, after the items went over a
//! channel), then libzmq's I/O thread, which writes each held client's socket. Here the
//! front end owns the listening socket and its connections, non-blocking, among the
//! descriptors of its one `poll(2)` (see `server::wait`): a connection that becomes
//! readable is read on the loop, and a whole `POST /publish/` (a body of at most
//! [`INLINE_BODY`]) is checked (the publish key's JWT, the items) and delivered at once,
//! onto the bus and to this front end's holds, as a publish of a stage is. Its answer
//! is written to the connection after the loop has handed the deliveries to libzmq, so
//! the subscribers' bytes leave first. A publish thus wakes the front end and the I/O
//! thread only.
//!
//! Everything else goes to a control thread with the bytes already read (see the
//! listener's [`serve`](super::serve)): another route, a head not whole within
//! [`INLINE_HEAD`], a larger or chunked body, a head the parser refuses. That thread
//! serves the connection from then on, and gives the answers it always gave (`400`,
//! `405`, `411`, `413`, `431`, the routes' own). A connection stays here between
//! publishes (keep-alive), answers in order (nothing more is read while an answer waits
//! to be written), is closed after `Connection: close` or an HTTP/1.0 request, and after
//! [`READ_TIMEOUT`] without a byte either way; a request that ends early (the client
//! finished sending mid-request, or went silent) is answered `400`, as on a thread.
//! Connections here and on threads count together against [`MAX_CONNECTIONS`]; more are
//! answered `503` and closed.

use super::publish::{checked_items, published};
use super::{Handed, MAX_CONNECTIONS, READ_TIMEOUT};
use crate::http::Response;
use crate::server::Server;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The largest publish body served on the loop, in bytes; a larger one (up to the
/// listener's own limit) goes to a control thread, so the loop never parses much JSON
/// at once.
pub(crate) const INLINE_BODY: usize = 64 * 1024;
/// The most bytes read on the loop without a whole head; the connection then goes to a
/// control thread (which answers `431` past its own limit).
pub(crate) const INLINE_HEAD: usize = 8 * 1024;
/// The most header fields a publish served on the loop may have (more: a control
/// thread serves it).
const HEAD_FIELDS: usize = 32;
/// The most bytes taken from a connection by one read.
const READ_CHUNK: usize = 16 * 1024;

/// The control listener's listening socket and the connections the front end serves.
pub(crate) struct Inline {
    listener: TcpListener,
    /// The connections served here, in the order of their poll entries.
    connections: Vec<Connection>,
    /// The last poll's events: the listener's, then each connection's.
    events: Vec<i16>,
    /// Where reads land before they join a connection's input: made once, since
    /// zeroing a buffer for each read cost more than all the rest of a publish.
    scratch: Vec<u8>,
    /// Whether accepting failed (out of descriptors, say): the listener is left out of
    /// the poll until the next sweep, rather than waking the loop at every turn.
    accept_paused: bool,
    /// Where connections go to a control thread.
    handoff: crossbeam_channel::Sender<Handed>,
    /// Connections open, here and on the threads.
    open: Arc<AtomicUsize>,
    /// The publish key, if one is set.
    publish_key: Option<Vec<u8>>,
}

/// A control connection served on the loop.
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet taken by a request.
    input: Vec<u8>,
    /// Answer bytes not yet written.
    output: Vec<u8>,
    /// When a byte last went either way.
    heard: Instant,
    /// Close once the output is written (`Connection: close`, HTTP/1.0, a refusal).
    closing: bool,
    /// The client finished sending.
    ended: bool,
    /// Its next request is for a control thread: hand it over once the output is
    /// written.
    hand_over: bool,
}

/// What the bytes read so far hold.
enum NextRequest {
    /// Not yet a whole publish: wait for more.
    More,
    /// A whole publish (see [`Publish`]).
    Publish(Publish),
    /// A request for a control thread.
    HandOver,
}

/// A whole publish at the start of a connection's input, as places in it.
struct Publish {
    /// Where its body is.
    body: std::ops::Range<usize>,
    /// Where its first `Authorization` field's value is, if it has one.
    authorization: Option<std::ops::Range<usize>>,
    /// Its HTTP minor version.
    minor_version: u8,
    /// Whether the connection stays open after it (HTTP/1.1 without `Connection:
    /// close`).
    keep_alive: bool,
}

/// What the loop does with a connection after a turn.
enum Fate {
    Keep,
    Close,
    HandOver,
}

impl Inline {
    /// Serves `listener` (non-blocking already) on the loop; connections for a control
    /// thread go to `handoff`; `open` counts the connections, here and on the threads.
    pub(crate) fn new(
        listener: TcpListener,
        handoff: crossbeam_channel::Sender<Handed>,
        open: Arc<AtomicUsize>,
        publish_key: Option<Vec<u8>>,
    ) -> Self {
        Inline {
            listener,
            connections: Vec::new(),
            events: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            accept_paused: false,
            handoff,
            open,
            publish_key,
        }
    }

    /// Appends the poll entries: the listener (readable), then each connection
    /// (writable while it has output, else readable).
    pub(crate) fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        fds.push(libc::pollfd {
            // A negative descriptor is left out by poll(2).
            fd: match self.accept_paused {
                true => -1,
                false => self.listener.as_raw_fd(),
            },
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(self.connections.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: match c.output.is_empty() {
                true => libc::POLLIN,
                false => libc::POLLOUT,
            },
            revents: 0,
        }));
    }

    /// Keeps the events of the entries [`poll_fds`](Self::poll_fds) appended, as the
    /// poll left them; true if any has one.
    pub(crate) fn note_events(&mut self, fds: &[libc::pollfd]) -> bool {
        self.events.clear();
        self.events.extend(fds.iter().map(|fd| fd.revents));
        self.events.iter().any(|revents| *revents != 0)
    }

    /// Accepts every waiting connection into `connections`; past [`MAX_CONNECTIONS`]
    /// (here and on the threads), answers `503` and closes.
    fn accept(&mut self, connections: &mut Vec<Connection>, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control listener: cannot accept: {e}");
                    self.accept_paused = true;
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                let busy = Response::error(503, "too many control connections");
                let _ = (&stream).write(&busy.to_bytes(1, false, false));
                continue;
            }
            self.open.fetch_add(1, Ordering::SeqCst);
            connections.push(Connection {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                heard: now,
                closing: false,
                ended: false,
                hand_over: false,
            });
        }
    }

    /// Sends a connection to a control thread with what was read from it.
    fn hand_over(&self, connection: Connection) {
        if let Err(e) = self.handoff.try_send((connection.stream, connection.input)) {
            log::warn!("control listener: a connection found no thread to serve it: {e}");
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Connection {
    /// Reads what the client sent; `ended` once it finished sending (or the connection
    /// failed).
    /// `scratch` is where each read lands first.
    fn read(&mut self, scratch: &mut [u8], now: Instant) {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    self.heard = now;
                    self.input.extend_from_slice(&scratch[..n]);
                    if n == scratch.len() && self.input.len() <= INLINE_HEAD + INLINE_BODY {
                        continue;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.ended = true,
            }
            return;
        }
    }

    /// Writes as much of the output as the socket takes; false if the connection
    /// failed.
    fn write(&mut self, now: Instant) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.heard = now;
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Queues an answer; a connection that does not stay open reads nothing more.
    fn answer(&mut self, response: &Response, minor_version: u8, keep_alive: bool) {
        self.output
            .extend_from_slice(&response.to_bytes(minor_version, keep_alive, false));
        if !keep_alive {
            self.closing = true;
            self.input.clear();
        }
    }

    /// What happens to it after a turn, once its output was written as far as it went.
    fn fate(&mut self, now: Instant) -> Fate {
        if !self.write(now) {
            return Fate::Close;
        }
        if !self.output.is_empty() {
            return Fate::Keep;
        }
        if self.closing {
            Fate::Close
        } else if self.hand_over {
            Fate::HandOver
        } else if self.ended {
            Fate::Close
        } else {
            Fate::Keep
        }
    }
}

/// What the start of `input` holds (see [`NextRequest`]). The head is parsed once,
/// with httparse as `Request` parses it (a head it refuses goes to a control thread,
/// which answers it as it always did), and only the fields a publish needs are read.
fn next_request(input: &[u8]) -> NextRequest {
    let Some(end) = memchr::memmem::find(input, b"\r\n\r\n") else {
        return match input.len() > INLINE_HEAD {
            true => NextRequest::HandOver,
            false => NextRequest::More,
        };
    };
    let head_end = end + 4;
    let head = &input[..head_end];
    if !head.starts_with(b"POST /publish/ ") {
        return NextRequest::HandOver;
    }
    let mut fields = [httparse::EMPTY_HEADER; HEAD_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let (Ok(httparse::Status::Complete(_)), Some(minor_version)) =
        (parsed.parse(head), parsed.version)
    else {
        return NextRequest::HandOver;
    };
    let (mut length, mut close, mut authorization) = (None, false, None);
    let mut connection_seen = false;
    for field in parsed.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return NextRequest::HandOver;
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(field.value).ok();
            match value.and_then(|v| v.trim().parse::<usize>().ok()) {
                Some(n) if n <= INLINE_BODY && length.is_none() => length = Some(n),
                _ => return NextRequest::HandOver,
            }
        } else if name.eq_ignore_ascii_case("connection") && !connection_seen {
            // The first field, as `Request::header` reads it.
            connection_seen = true;
            close = field.value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case("authorization") && authorization.is_none() {
            let start = field.value.as_ptr() as usize - input.as_ptr() as usize;
            authorization = Some(start..start + field.value.len());
        }
    }
    let end = head_end + length.unwrap_or(0);
    if input.len() < end {
        return NextRequest::More;
    }
    NextRequest::Publish(Publish {
        body: head_end..end,
        authorization,
        minor_version,
        keep_alive: !close && minor_version == 1,
    })
}

impl Server {
    /// Serves the control listener's events from the last poll: accepts connections,
    /// reads them, delivers whole publishes, writes their answers (after the
    /// deliveries), and hands the connections that need a control thread to one.
    pub(in crate::server) fn serve_control(&mut self) {
        let Some(control) = &mut self.channels.control else {
            return;
        };
        let inline = &mut control.inline;
        let now = Instant::now();
        let mut events = std::mem::take(&mut inline.events);
        let mut connections = std::mem::take(&mut inline.connections);
        let mut scratch = std::mem::take(&mut inline.scratch);
        let known = connections.len();
        if events.first().is_some_and(|revents| *revents != 0) {
            inline.accept(&mut connections, now);
        }
        // A new connection is read at once: its request has often arrived with it.
        events.resize(known + 1, 0);
        events.resize(connections.len() + 1, libc::POLLIN);
        for (connection, revents) in connections.iter_mut().zip(&events[1..]) {
            if *revents == 0 {
                continue;
            }
            if connection.output.is_empty() && !connection.closing {
                connection.read(&mut scratch, now);
            }
            self.take_publishes(connection);
        }
        // The deliveries go to libzmq before the answers go out.
        self.flush_dirty();
        let Some(control) = &mut self.channels.control else {
            return;
        };
        let inline = &mut control.inline;
        let mut index = 0;
        while index < connections.len() {
            match connections[index].fate(now) {
                Fate::Keep => index += 1,
                Fate::Close => {
                    connections.swap_remove(index);
                    inline.open.fetch_sub(1, Ordering::SeqCst);
                }
                Fate::HandOver => inline.hand_over(connections.swap_remove(index)),
            }
        }
        inline.connections = connections;
        inline.scratch = scratch;
        events.clear();
        inline.events = events;
    }

    /// Serves the whole publishes at the start of a connection's input, in order, until
    /// one needs more bytes or a control thread, or an answer waits to be written.
    fn take_publishes(&mut self, connection: &mut Connection) {
        while !connection.closing && !connection.hand_over {
            match next_request(&connection.input) {
                NextRequest::More => break,
                NextRequest::HandOver => connection.hand_over = true,
                NextRequest::Publish(publish) => {
                    let input = &connection.input;
                    let key = self
                        .channels
                        .control
                        .as_ref()
                        .and_then(|c| c.inline.publish_key.as_deref());
                    let authorization = publish
                        .authorization
                        .and_then(|at| std::str::from_utf8(&input[at]).ok());
                    let checked = checked_items(key, authorization, &input[publish.body.clone()]);
                    connection.input.drain(..publish.body.end);
                    let response = match checked {
                        Ok(items) => {
                            self.publish_items(items);
                            published()
                        }
                        Err(refusal) => refusal,
                    };
                    connection.answer(&response, publish.minor_version, publish.keep_alive);
                }
            }
        }
        if connection.ended && !connection.hand_over && !connection.input.is_empty() {
            // The client finished sending in the middle of a request.
            connection.answer(&ended_early(&connection.input), 1, false);
        }
    }

    /// Closes the connections silent for [`READ_TIMEOUT`] (one in the middle of a
    /// request is told so first), and listens again after a failed accept.
    pub(in crate::server) fn sweep_control(&mut self, now: Instant) {
        let Some(control) = &mut self.channels.control else {
            return;
        };
        let inline = &mut control.inline;
        inline.accept_paused = false;
        let open = &inline.open;
        inline.connections.retain_mut(|connection| {
            if now.duration_since(connection.heard) < READ_TIMEOUT {
                return true;
            }
            if connection.output.is_empty() && !connection.input.is_empty() {
                let answer = ended_early(&connection.input).to_bytes(1, false, false);
                let _ = connection.stream.write(&answer);
            }
            open.fetch_sub(1, Ordering::SeqCst);
            false
        });
    }
}

/// The answer to a request that ended early: its head, or its body, incomplete.
fn ended_early(input: &[u8]) -> Response {
    match memchr::memmem::find(input, b"\r\n\r\n") {
        None => Response::error(400, "the request ended early"),
        Some(_) => Response::error(400, "the body ended early"),
    }
}

#[cfg(test)]
mod tests {
    use super::{next_request, NextRequest, INLINE_BODY, INLINE_HEAD};

    fn kind(input: &[u8]) -> &'static str {
        match next_request(input) {
            NextRequest::More => "more",
            NextRequest::Publish(..) => "publish",
            NextRequest::HandOver => "hand over",
        }
    }

    #[test]
    fn only_a_whole_small_publish_is_served_on_the_loop() {
        let publish = b"POST /publish/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(kind(publish), "publish");
        assert_eq!(kind(&publish[..publish.len() - 1]), "more");
        assert_eq!(kind(b"POST /publish/ HTTP/1.1\r\nContent-Le"), "more");
        assert_eq!(kind(b"GET /jobs HTTP/1.1\r\n\r\n"), "hand over");
        assert_eq!(kind(b"POST /publish/?x=1 HTTP/1.1\r\n\r\n"), "hand over");
        assert_eq!(
            kind(b"POST /publish/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "hand over"
        );
        let large = format!(
            "POST /publish/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            INLINE_BODY + 1
        );
        assert_eq!(kind(large.as_bytes()), "hand over");
        assert_eq!(
            kind(b"POST /publish/ HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            "hand over"
        );
        assert_eq!(kind(&vec![b'a'; INLINE_HEAD + 1]), "hand over");
        match next_request(b"POST /publish/ HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n") {
            NextRequest::Publish(publish) => {
                assert_eq!(publish.body, 27..27);
                assert!(!publish.keep_alive, "HTTP/1.0 closes");
            }
            _ => panic!("a publish"),
        }
        let signed = b"POST /publish/ HTTP/1.1\r\nConnection: close\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}";
        match next_request(signed) {
            NextRequest::Publish(publish) => {
                assert_eq!(&signed[publish.body], b"{}");
                assert_eq!(&signed[publish.authorization.unwrap()], b"Bearer t");
                assert!(!publish.keep_alive, "Connection: close");
            }
            _ => panic!("a publish"),
        }
        let twice = b"POST /publish/ HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(kind(twice), "hand over");
    }
}
