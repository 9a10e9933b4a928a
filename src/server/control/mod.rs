//! The control listener: a second HTTP listener for operators and backends, never the
//! public one (`--control-listen tcp://127.0.0.1:5561`). It listens on loopback
//! addresses only unless told otherwise (`--control-allow-remote`).
//!
//! The front end's loop owns its listening socket and serves the publishes itself
//! ([`inline`]): it accepts each connection, reads it without blocking, and answers a
//! small `POST /publish/` on the loop, delivering the items to its holds and its bus
//! as it reads them, so a publish wakes two threads (the front end, then libzmq's I/O
//! thread, which writes to the subscribers), not three (a connection's thread first,
//! which then woke the front end through its inbox). A connection whose next request is
//! anything else (another route, a body over [`inline::INLINE_BODY`], a head that is
//! not yet whole at [`inline::INLINE_HEAD`], a chunked body) is handed, with the bytes
//! already read, to a thread of its own (at most [`MAX_CONNECTIONS`] connections in
//! all, inline or not; more are answered 503 and closed), which serves it from then on
//! with blocking sockets, as every connection was before. Each request there goes to
//! the first route of [`ROUTES`] whose method and path match. What a route hands to
//! the front end goes through the front end's inbox (an in-process PUSH to its PULL),
//! so a route never touches the front end's state; a publish's items, parsed there, go
//! over a channel beside it ([`Publishes`]) and the inbox only wakes the front end, so
//! the front end never parses them again.
//!
//! Routes: `POST /publish/` (see [`publish`]); `PUT`, `GET` and `DELETE
//! /subscriptions/{name}` (see [`subscriptions`]); the job admin API, `GET /jobs`,
//! `GET /jobs/changes`, `POST /jobs/{id}/retry`, `POST /jobs/cancel` (see [`admin`]).

mod admin;
pub(crate) mod inline;
mod publish;
mod subscriptions;

use crate::http::{Request, Response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request body accepted, in bytes (larger: 413).
const MAX_BODY: usize = 10 * 1024 * 1024;
/// The largest request head accepted, in bytes (larger: 431).
const MAX_HEAD: usize = 64 * 1024;
/// How long a publish may wait for the front end to take it before it is answered 503.
const INBOX_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay silent before it is closed.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The control listener's settings.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Where to listen: `tcp://HOST:PORT` (port 0 picks a free one).
    pub listen: String,
    /// Listen on an address that is not loopback too (off by default).
    pub allow_remote: bool,
    /// The publish key: `POST /publish/` then needs `Authorization: Bearer` with a JWT
    /// signed with it (HS256), as GRIP publishers send. Without a key, any local caller
    /// may publish.
    pub publish_key: Option<Vec<u8>>,
    /// The admin token (`--admin-token-file`): the job admin API's routes then need
    /// `Authorization: Bearer TOKEN`. Without one, they answer `404`.
    pub admin_token: Option<Vec<u8>>,
}

/// How many published items may wait for the front end before a publish waits (up to
/// [`INBOX_TIMEOUT`]), as the inbox's high-water mark did.
pub(crate) const PUBLISHES_WAITING: usize = 1000;

/// The sending side of the published items' channel (its receiver is the front end's).
pub(crate) type Publishes = crossbeam_channel::Sender<crate::pipeline::channel::Item>;

/// What a route may use.
pub(crate) struct ControlContext {
    /// PUSH to the front end's inbox.
    inbox: zmq::Socket,
    /// The published items, read by the front end when the inbox wakes it.
    publishes: Publishes,
    /// The publish key, if one is set.
    publish_key: Option<Vec<u8>>,
    /// The URL subscriptions' registry, when the server delivers webhooks.
    subscriptions: Option<super::subscriptions::Registry>,
    /// The admin token, if one is set.
    admin_token: Option<Vec<u8>>,
    /// The job service, when the server keeps jobs.
    admin: Option<crate::jobs::service::admin::AdminLink>,
    /// Set when the listener stops (ends event streams and long-polls).
    stop: Arc<AtomicBool>,
}

/// One route of the control listener: a method, a path, and what answers it.
pub(crate) struct Route {
    /// The request method.
    pub(crate) method: &'static str,
    /// The path, matched exactly, except that a segment `*` matches any one segment.
    pub(crate) path: &'static str,
    /// The handler.
    pub(crate) handler: fn(&ControlContext, &Request) -> Response,
}

/// Every route, in the order they are tried.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/publish/",
        handler: publish::publish,
    },
    Route {
        method: "PUT",
        path: "/subscriptions/*",
        handler: subscriptions::subscription,
    },
    Route {
        method: "GET",
        path: "/subscriptions/*",
        handler: subscriptions::subscription,
    },
    Route {
        method: "DELETE",
        path: "/subscriptions/*",
        handler: subscriptions::subscription,
    },
    Route {
        method: "GET",
        path: "/jobs",
        handler: admin::list,
    },
    Route {
        method: "GET",
        path: "/jobs/changes",
        handler: admin::changes,
    },
    Route {
        method: "POST",
        path: "/jobs/cancel",
        handler: admin::cancel,
    },
    Route {
        method: "POST",
        path: "/jobs/*/retry",
        handler: admin::retry,
    },
];

/// Whether `path` matches a route's `pattern` (a `*` segment matches one non-empty
/// segment).
fn matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some("*"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The answer a request gets from the routes: the first whose method and path match;
/// 405 if only the path does, 404 if none.
fn dispatch(context: &ControlContext, request: &Request) -> Response {
    let mut path_known = false;
    for route in ROUTES {
        if matches(route.path, &request.path) {
            if route.method == request.method {
                return (route.handler)(context, request);
            }
            path_known = true;
        }
    }
    if path_known {
        let allow: Vec<&str> = ROUTES
            .iter()
            .filter(|r| matches(r.path, &request.path))
            .map(|r| r.method)
            .collect();
        return Response::error(405, "method not allowed here").header("Allow", allow.join(", "));
    }
    Response::error(404, "no such control resource")
}

/// The running control listener; dropping it stops its thread.
pub(crate) struct ControlListener {
    /// The endpoint bound, `tcp://HOST:PORT`.
    pub(crate) endpoint: String,
    /// Its listening socket and the connections the front end serves on its loop.
    pub(crate) inline: inline::Inline,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why a control listener cannot start.
#[derive(Debug)]
pub enum ControlError {
    /// The endpoint is not `tcp://HOST:PORT`.
    Endpoint(String),
    /// The address is not loopback and remote callers are not allowed.
    NotLoopback(SocketAddr),
    /// Binding failed.
    Bind(std::io::Error),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Endpoint(e) => write!(f, "{e:?} is not tcp://HOST:PORT"),
            ControlError::NotLoopback(a) => write!(
                f,
                "{a} is not a loopback address; the control listener is for operators and backends (give --control-allow-remote to listen there anyway)"
            ),
            ControlError::Bind(e) => write!(f, "cannot listen: {e}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// The socket address of `tcp://HOST:PORT`.
pub fn control_address(endpoint: &str) -> Result<SocketAddr, ControlError> {
    let bad = || ControlError::Endpoint(endpoint.to_string());
    let rest = endpoint.strip_prefix("tcp://").ok_or_else(bad)?;
    rest.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

impl ControlListener {
    /// Binds the listener and starts its thread; publishes go to `inbox` (the front
    /// end's in-process PULL endpoint), subscriptions to `subscriptions` (if the server
    /// delivers webhooks), admin calls to `admin` (the job service).
    pub(crate) fn start(
        ctx: &zmq::Context,
        config: ControlConfig,
        inbox: &str,
        publishes: Publishes,
        subscriptions: Option<super::subscriptions::Registry>,
        admin: Option<crate::jobs::service::admin::AdminLink>,
    ) -> Result<Self, ControlError> {
        let address = control_address(&config.listen)?;
        if !address.ip().is_loopback() && !config.allow_remote {
            return Err(ControlError::NotLoopback(address));
        }
        let listener = TcpListener::bind(address).map_err(ControlError::Bind)?;
        let bound = listener.local_addr().map_err(ControlError::Bind)?;
        listener.set_nonblocking(true).map_err(ControlError::Bind)?;
        let endpoint = format!("tcp://{bound}");
        log::info!("control listener on {endpoint}");
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, inbox, flag) = (ctx.clone(), inbox.to_string(), stop.clone());
        let open = Arc::new(AtomicUsize::new(0));
        let (handoff, handed) = crossbeam_channel::bounded(MAX_CONNECTIONS);
        let inline =
            inline::Inline::new(listener, handoff, open.clone(), config.publish_key.clone());
        let shared = Shared {
            publishes,
            subscriptions,
            publish_key: config.publish_key,
            admin_token: config.admin_token,
            admin,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || serve_handed(&ctx, &handed, &inbox, &shared, &open, &flag))
            .map_err(ControlError::Bind)?;
        Ok(ControlListener {
            endpoint,
            inline,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What every connection's context shares.
struct Shared {
    publishes: Publishes,
    subscriptions: Option<super::subscriptions::Registry>,
    publish_key: Option<Vec<u8>>,
    admin_token: Option<Vec<u8>>,
    admin: Option<crate::jobs::service::admin::AdminLink>,
    stop: Arc<AtomicBool>,
}

/// A connection the front end hands over: its socket and the bytes already read from
/// it (a request's beginning, or more).
pub(crate) type Handed = (TcpStream, Vec<u8>);

/// Serves each connection the front end hands over on a thread of its own, until
/// `stop`. `open` counts the connections (the front end's and the threads'); each
/// thread takes one off when it ends.
fn serve_handed(
    ctx: &zmq::Context,
    handed: &crossbeam_channel::Receiver<Handed>,
    inbox: &str,
    shared: &Shared,
    open: &Arc<AtomicUsize>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let (stream, buffer) = match handed.recv_timeout(Duration::from_millis(100)) {
            Ok(connection) => connection,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        // A front end that stopped, or does not keep up, answers 503 after
        // INBOX_TIMEOUT rather than holding the connection's thread for ever.
        let context = match ctx.socket(zmq::PUSH).and_then(|s| {
            s.set_sndtimeo(INBOX_TIMEOUT.as_millis() as i32)?;
            s.set_linger(0)?;
            s.connect(inbox)?;
            Ok(s)
        }) {
            Ok(socket) => ControlContext {
                inbox: socket,
                publishes: shared.publishes.clone(),
                publish_key: shared.publish_key.clone(),
                admin_token: shared.admin_token.clone(),
                admin: shared.admin.clone(),
                stop: shared.stop.clone(),
                subscriptions: shared.subscriptions.clone(),
            },
            Err(e) => {
                log::warn!("control listener: no socket to the front end: {e}");
                open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
        };
        let done = open.clone();
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                serve(&context, stream, buffer);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::warn!("control listener: no thread for a connection: {e}");
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Serves one connection's requests (keep-alive) until it closes or stays silent;
/// `buffer` holds what the front end already read from it.
fn serve(context: &ControlContext, mut stream: TcpStream, mut buffer: Vec<u8>) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(READ_TIMEOUT)).is_err()
    {
        return;
    }
    loop {
        let (response, keep_alive, minor) = match read_request(&mut stream, &mut buffer) {
            Ok(Some((request, _))) if admin::wants_stream(&request) => {
                admin::stream(context, &request, &mut stream);
                return;
            }
            Ok(Some((request, keep_alive))) => {
                let minor = request.minor_version;
                (dispatch(context, &request), keep_alive, minor)
            }
            Ok(None) => return,
            Err(refusal) => (refusal, false, 1),
        };
        if stream
            .write_all(&response.to_bytes(minor, keep_alive, false))
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

/// Reads one request; `Ok(None)` when the connection closed between requests, `Err`
/// with the refusal for a bad one.
fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<Option<(Request, bool)>, Response> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = memchr::memmem::find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > MAX_HEAD {
            return Err(Response::error(431, "the request head is too large"));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) if buffer.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(Response::error(400, "the request ended early")),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = buffer[..head_end].to_vec();
    let fields = |name| crate::http::field_text(&head, name);
    if fields("transfer-encoding").is_some() {
        return Err(Response::error(411, "send the body with a Content-Length"));
    }
    let length: usize = match fields("content-length") {
        None => 0,
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| Response::error(400, "the Content-Length is not a number"))?,
    };
    if length > MAX_BODY {
        return Err(Response::error(413, "the body is too large"));
    }
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(Response::error(400, "the body ended early")),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    let request = Request::from_parts(&head, body)
        .map_err(|e| Response::error(e.status(), &e.to_string()))?;
    let close = request
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let keep_alive = !close && (request.minor_version == 1);
    Ok(Some((request, keep_alive)))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn a_star_segment_matches_one_non_empty_segment() {
        assert!(matches("/publish/", "/publish/"));
        assert!(!matches("/publish/", "/publish/x"));
        assert!(matches("/subscriptions/*", "/subscriptions/a-1"));
        assert!(!matches("/subscriptions/*", "/subscriptions/"));
        assert!(!matches("/subscriptions/*", "/subscriptions/a/b"));
        assert!(!matches("/subscriptions/*", "/subscriptionsx"));
        assert!(matches("/jobs/*/retry", "/jobs/abc/retry"));
        assert!(!matches("/jobs/*/retry", "/jobs//retry"));
    }
}
