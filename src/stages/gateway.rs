//! The gateway stage: forwards each request to a plain-HTTP backend and answers with the
//! backend's response, so a slow synchronous service sits behind the front end (and its
//! asynchronous jobs) unchanged.
//!
//! What is forwarded: the method, the request-target (path and query, under the target's
//! base path once its dot segments are removed, RFC 3986 §5.2.4: `/../x` cannot leave
//! the base; a dot segment hidden behind `%2F` or a backslash is refused `400`), the
//! body and every end-to-end header, `Authorization` and `Cookie` included, exactly
//! as the client sent them (for an asynchronous job: as they were stored). Hop-by-hop
//! headers (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
//! `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) are dropped both ways, and so are `Host` and
//! `Content-Length`, which the client connection sets anew. Added: `Forwarded`
//! (`for=<client>;proto=http;host="<the client's Host>"`, the client's address as the
//! front end saw it in the node form of RFC 7239 §6: `192.0.2.43`, `"[2001:db8::17]"`,
//! quoted with a port when one is known, `unknown` when the address is not), after the
//! incoming `Forwarded` values; `X-Forwarded-For` (the incoming chain, then the
//! client's address); `X-Forwarded-Host` (the incoming chain, then the client's
//! `Host`); `X-Real-IP` (the client's address as the front end saw it: a client's own
//! `X-Real-IP` is replaced, never passed on, and none is sent when the address is not
//! known); `X-Request-Id` (the client's, else our request id)
//! and, with a secret, `X-Prime-Signature` (see [`sign`]); with a GRIP key,
//! `Grip-Sig` (see [`HttpGateway::grip_key`]). A client's own `X-Prime-Signature` and
//! `Grip-Sig` are never passed on.
//!
//! A backend's answer may hold the request on channels with GRIP's instructions (see
//! [`grip`]); its `Grip-*` fields never reach the client.
//!
//! Redirects are not followed (the 3xx goes back to the client); only the configured
//! target is ever called. A backend that cannot be reached answers `502`, and so does
//! one that answers `101 Switching Protocols` (or any other 1xx as its final answer:
//! the gateway never forwards `Upgrade`, so nobody asked); one slower than the timeout
//! `504`, all with a JSON error.
//!
//! The calls are made with HTTP/1.1 connections on a current-thread tokio runtime that
//! each worker thread owns (see `gateway_calls`), with pools of kept-alive connections
//! to the backend: a plain HTTP request through the gateway's lean client
//! (`gateway_plain`), any other through hyper's. As a [`ConcurrentWork`] (`prime_gatewayd`, [`Pipeline::concurrent_stage`](crate::Pipeline::concurrent_stage))
//! one thread holds many calls in flight, as many as its credit at the proxy, and an
//! interrupt (client gone, job cancelled, deadline) aborts its call, which closes that
//! call's backend connection. As an [`HttpWork`] (one call per worker thread, e.g.
//! [`Pipeline::http_stage`](crate::Pipeline::http_stage)) the worker makes its call on
//! its own thread and watches [`HttpJob::interrupted`] meanwhile; an interrupt drops
//! the worker's runtime and with it the connection.
//!
//! Its self-test (see [`crate::pipeline::selftest`]) sends `HEAD <base>/` with `X-Prime-Selftest:
//! 1` to the backend, on a connection of its own, bounded by the call timeout or 1 s,
//! whichever is shorter: any HTTP answer passes, whatever its status; a refused
//! connection, an unknown host or no answer in time fails, with that as the error.
//!
//! ```no_run
//! use prime_server::stages::HttpGateway;
//! use std::time::Duration;
//!
//! let gateway = HttpGateway::new("http://127.0.0.1:9000")
//!     .unwrap()
//!     .timeout(Duration::from_secs(30))
//!     .secret(b"shared with the backend".to_vec());
//! // One thread holding up to 64 backend calls at once.
//! let pipeline = prime_server::Pipeline::new().concurrent_stage("gateway", 1, 64, gateway);
//! # drop(pipeline);
//! ```

use crate::http::Response;
use crate::pipeline::envelope::Protocol;
use crate::pipeline::loopback::{limit_passed, render, Failure, FailureKind};
use crate::pipeline::worker::{answer_frame, ConcurrentWork, Job, Outcome};
use crate::stages::api::{HttpJob, HttpWork, Next, StageError};
use crate::stages::gateway_answer::PlainAnswer;
use crate::stages::gateway_backend::CallError;
use crate::stages::gateway_calls::{until, Call, Called, Calls, PlainCalled};
use crate::stages::gateway_path::under_base;
use crate::stages::gateway_plain::{PlainCall, PlainRequest};
use crate::stages::gateway_wire::{
    connection_options, forwarded_node, is_hop_by_hop, origin_form, parts_of, plain_frame,
    with_head, Answering, Asking, Fields, IpText, FORWARDED, GRIP_SIG_NAME, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_PRIME_SIGNATURE, X_REAL_IP, X_REQUEST_ID,
};
use crate::stages::grip::{self, Instruction, GRIP_SIG};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ureq::http;

/// How often the worker looks at its job's interrupt while the backend works.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);

/// The longest a self-test's call to the backend may take.
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The header carrying the gateway's signature.
pub const SIGNATURE_HEADER: &str = "X-Prime-Signature";

/// Why a gateway could not be set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayError {
    /// The target is not an `http://HOST:PORT[/BASE]` URL.
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Target { target, reason } => {
                write!(f, "gateway target {target:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for GatewayError {}

/// What all workers of one gateway stage share.
#[derive(Clone, Debug)]
struct Settings {
    /// `http://host:port`, without a trailing slash.
    origin: String,
    /// A path every forwarded target is put under (`""` or `/base`, no trailing slash).
    base: String,
    /// The bound on one backend call, from connecting to the body's last byte.
    timeout: Duration,
    /// The key of `X-Prime-Signature`; no signature without it.
    secret: Option<Vec<u8>>,
    /// The largest backend body taken; a larger one is a 502.
    max_response_bytes: u64,
    /// The key of `Grip-Sig`; no `Grip-Sig` without it.
    grip_key: Option<Vec<u8>>,
}

/// A stage that forwards requests to an HTTP backend (see the module docs). Cloning it
/// for each worker gives each its own runtime and pool of kept-alive connections.
pub struct HttpGateway {
    settings: Arc<Settings>,
    /// This worker's client and calls, made on first use (and, for an [`HttpWork`],
    /// after an interrupt dropped them).
    calls: Option<Calls<Outcome>>,
}

impl Clone for HttpGateway {
    fn clone(&self) -> Self {
        HttpGateway {
            settings: Arc::clone(&self.settings),
            calls: None,
        }
    }
}

impl fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of debug output.
        f.debug_struct("HttpGateway")
            .field("origin", &self.settings.origin)
            .field("base", &self.settings.base)
            .field("timeout", &self.settings.timeout)
            .field("signed", &self.settings.secret.is_some())
            .field("grip_signed", &self.settings.grip_key.is_some())
            .finish()
    }
}

impl HttpGateway {
    /// A gateway to `target`, an `http://HOST:PORT[/BASE]` URL, with a 30 s timeout and
    /// no signature.
    pub fn new(target: &str) -> Result<Self, GatewayError> {
        let (origin, base) = parse_target(target)?;
        Ok(HttpGateway {
            settings: Arc::new(Settings {
                origin,
                base,
                timeout: Duration::from_secs(30),
                secret: None,
                max_response_bytes: 64 * 1024 * 1024,
                grip_key: None,
            }),
            calls: None,
        })
    }

    /// Bounds each backend call (connect, send, wait, read); past it the client gets 504
    /// saying `the gateway timeout (N s) passed`. The front end's request timeout also
    /// bounds a synchronous call: keep it above this one ([`HttpGateway::call_timeout`];
    /// `prime_gatewayd` does so unless `--request-timeout` is given).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().timeout = timeout;
        self
    }

    /// The bound on each backend call ([`HttpGateway::timeout`]; 30 s by default).
    pub fn call_timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Signs every forwarded request with `secret` in `X-Prime-Signature` (see [`sign`]).
    pub fn secret(mut self, secret: Vec<u8>) -> Self {
        self.settings_mut().secret = Some(secret);
        self
    }

    /// Signs every forwarded request with `Grip-Sig`, a JWT (HS256) made with `key`
    /// (see [`grip::grip_sig`]), so that a GRIP library in the backend knows a proxy
    /// that follows its instructions is in front. The backend's GRIP instructions are
    /// followed with or without a key (see [`grip`]).
    pub fn grip_key(mut self, key: Vec<u8>) -> Self {
        self.settings_mut().grip_key = Some(key);
        self
    }

    /// The largest backend body passed back (64 MiB by default); a larger one is a 502.
    pub fn max_response_bytes(mut self, bytes: u64) -> Self {
        self.settings_mut().max_response_bytes = bytes;
        self
    }

    fn settings_mut(&mut self) -> &mut Settings {
        self.calls = None;
        Arc::make_mut(&mut self.settings)
    }

    /// This worker's client, made on first use.
    fn calls(&mut self) -> Result<&mut Calls<Outcome>, StageError> {
        if self.calls.is_none() {
            let calls = Calls::new(&self.settings.origin, panicked).map_err(|e| {
                StageError::internal(format!("the gateway could not start its client: {e}"))
            })?;
            self.calls = Some(calls);
        }
        self.calls
            .as_mut()
            .ok_or_else(|| StageError::internal("the gateway has no client"))
    }
}

/// What a call whose task panicked answers: 500, as a worker's panic does.
fn panicked() -> Outcome {
    Outcome::Fail(Failure::new(
        FailureKind::WorkerPanicked,
        "the worker failed on this request",
    ))
}

/// The facts of a request that its answer needs once the call is over.
#[derive(Clone, Copy)]
struct Asked {
    request_id: u64,
    /// Whether it was a HEAD request (a `Content-Length` then comes back as it is).
    head: bool,
    /// A WebSocket's upgrade (`Some(true)`) or message (`Some(false)`), relayed as
    /// WebSocket-over-HTTP (see `gateway_ws`).
    websocket: Option<bool>,
}

/// What the client gets for a call that ended with `called`.
fn answer(settings: &Settings, asked: Asked, called: Called) -> Result<Next, StageError> {
    let request_id = asked.request_id;
    let error = match called {
        // The gateway never forwards `Upgrade`, so no 1xx may end an exchange: a 101
        // nobody asked for would hand the client's connection to a protocol the front
        // end does not speak.
        Ok(response) if response.status().is_informational() => StageError::new(
            502,
            format!(
                "the backend answered {}, which no request asked for",
                response.status()
            ),
        ),
        Ok(response) => {
            log::debug!(
                "request {request_id}: the backend answered {}",
                response.status()
            );
            if let Some(open) = asked.websocket {
                return super::gateway_ws::answer(open, incoming(response, false));
            }
            match grip::instruction(incoming(response, asked.head)) {
                Ok(Instruction::Respond(answer)) => return Ok(Next::respond(answer)),
                Ok(Instruction::Hold(hold)) => {
                    log::debug!(
                        "request {request_id}: the backend holds it ({:?}, {} channels)",
                        hold.mode,
                        hold.channels.len()
                    );
                    return Ok(Next::Hold(hold));
                }
                Err(error) => StageError::new(502, error.to_string()),
            }
        }
        Err(CallError::Timeout) => StageError::new(
            504,
            format!(
                "{}: the backend did not answer in time",
                limit_passed("gateway timeout", settings.timeout)
            ),
        ),
        Err(CallError::TooLarge(limit)) => {
            StageError::new(502, format!("the backend's answer is over {limit} bytes"))
        }
        Err(CallError::Unreached(why)) => {
            StageError::new(502, format!("the backend could not be reached: {why}"))
        }
    };
    log::warn!("request {request_id}: {error}");
    Err(error)
}

/// A finished call's answer as a worker sends it: rendered in the client's protocol.
fn rendered(protocol: Protocol, decided: Result<Next, StageError>) -> Outcome {
    let response = match decided {
        Ok(Next::Respond(response)) => response,
        Ok(Next::Hold(hold)) => return Outcome::Hold(Box::new(hold)),
        Ok(_) => return Outcome::Abandon,
        Err(error) => error.to_response(),
    };
    Outcome::Respond(render(protocol, &response).into())
}

/// The backend request for a job, and the facts its answer needs: the general path,
/// from the job's [`Request`](crate::http::Request) (WebSockets, netstrings, raw bytes, any head).
fn prepare(
    settings: &Settings,
    job: &mut HttpJob<'_, '_>,
) -> Result<(http::Request<Bytes>, Asked), StageError> {
    let request_id = job.envelope().request_id;
    let is_async = job.is_async();
    let client = job.client_address();
    let envelope = *job.envelope();
    let upgrade = job.is_websocket_upgrade();
    let message = job.websocket_message();
    let websocket = (upgrade || message.is_some()).then_some(upgrade);
    let request = job.request()?;
    let relayed;
    let request = match websocket {
        Some(_) => {
            relayed = super::gateway_ws::request(&envelope, request, message);
            &relayed
        }
        None => request,
    };
    let fields: Vec<httparse::Header<'_>> = request
        .headers
        .iter()
        .map(|(name, value)| httparse::Header {
            name,
            value: value.as_bytes(),
        })
        .collect();
    let asking = Asking {
        method: &request.method,
        target: &request.target,
        fields: &fields,
        body: &request.body,
    };
    let (outgoing, head) = outgoing(settings, &asking, request_id, is_async, client)?;
    forwarding(settings, request_id, &outgoing);
    let outgoing = outgoing.into_request()?;
    Ok((
        outgoing,
        Asked {
            request_id,
            head,
            websocket,
        },
    ))
}

/// [`prepare`] for an HTTP request read in place from the job's head frame (see
/// [`with_head`]), with no [`Request`](crate::http::Request) made; `None` when the general path must take it.
fn prepare_in_place(
    settings: &Settings,
    job: &Job<'_>,
) -> Option<Result<(Outgoing, Asked), StageError>> {
    let envelope = job.envelope();
    if !matches!(envelope.protocol, Protocol::Http { .. }) || envelope.websocket.is_some() {
        return None;
    }
    let (request_id, is_async, client) = (envelope.request_id, envelope.job, envelope.client);
    let head = job.frame(0).unwrap_or_default();
    let body = job.frame(1).unwrap_or_default();
    with_head(head, body, |asking| {
        let (outgoing, head) = outgoing(settings, asking, request_id, is_async, client)?;
        forwarding(settings, request_id, &outgoing);
        let asked = Asked {
            request_id,
            head,
            websocket: None,
        };
        Ok((outgoing, asked))
    })
}

fn forwarding(settings: &Settings, request_id: u64, outgoing: &Outgoing) {
    log::debug!(
        "request {request_id}: forwarding {} {} to {}",
        outgoing.method,
        outgoing.uri.path(),
        settings.origin
    );
}

/// What the client gets for a call of the concurrent path that ended with `called`, as
/// [`ConcurrentWork::wait`] gives it (an answer behind
/// [`ANSWER_ROOM`](crate::pipeline::worker::ANSWER_ROOM)): a plain answer
/// to an HTTP request rendered straight into its bytes ([`plain_frame`]), any other
/// through [`answer`] and [`rendered`].
fn finished(settings: &Settings, asked: Asked, protocol: Protocol, called: Called) -> Outcome {
    if let (Ok(response), Some(answering)) = (&called, answering(asked, protocol)) {
        if let Some(frame) = plain_frame(parts_of(response), answering) {
            return plain_answered(asked, response.status(), frame);
        }
    }
    match rendered(protocol, answer(settings, asked, called)) {
        Outcome::Respond(bytes) => Outcome::Respond(answer_frame(&bytes)),
        other => other,
    }
}

/// [`finished`] for a call of the lean client: a plain answer rendered from the fields
/// it read, with no `http::Response` made.
fn finished_plain(
    settings: &Settings,
    asked: Asked,
    protocol: Protocol,
    called: PlainCalled,
) -> Outcome {
    if let (Ok(plain), Some(answering)) = (&called, answering(asked, protocol)) {
        if let Some(frame) = plain_frame(plain.parts(), answering) {
            return plain_answered(asked, plain.status(), frame);
        }
    }
    finished(
        settings,
        asked,
        protocol,
        called.and_then(PlainAnswer::into_response),
    )
}

/// What a plain render follows: the client's HTTP request (none for a WebSocket's).
fn answering(asked: Asked, protocol: Protocol) -> Option<Answering> {
    match (protocol, asked.websocket) {
        (
            Protocol::Http {
                minor_version,
                keep_alive,
                head,
            },
            None,
        ) => Some(Answering {
            minor_version,
            keep_alive,
            head_only: head,
            keep_length: asked.head,
        }),
        _ => None,
    }
}

/// A plain answer's outcome.
fn plain_answered(asked: Asked, status: http::StatusCode, frame: zmq::Message) -> Outcome {
    log::debug!(
        "request {}: the backend answered {status}",
        asked.request_id
    );
    Outcome::Respond(frame)
}

impl ConcurrentWork for HttpGateway {
    fn start(&mut self, job: &mut Job<'_>, ticket: u64) -> Option<Outcome> {
        let protocol = job.envelope().protocol;
        // A request read in place goes through the lean client (`gateway_plain`),
        // unless it is one that client does not send.
        let prepared = match prepare_in_place(&self.settings, job) {
            Some(prepared) => prepared.and_then(|(outgoing, asked)| {
                Ok(match outgoing.into_plain()? {
                    Ok(plain) => (Sent::Plain(plain), asked),
                    Err(outgoing) => (Sent::Hyper(outgoing.into_request()?), asked),
                })
            }),
            None => prepare(&self.settings, &mut HttpJob::new(job))
                .map(|(outgoing, asked)| (Sent::Hyper(outgoing), asked)),
        };
        let (outgoing, asked) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return Some(rendered(protocol, Err(error))),
        };
        let settings = Arc::clone(&self.settings);
        let (limit, timeout) = (settings.max_response_bytes, settings.timeout);
        match (self.calls(), outgoing) {
            (Ok(calls), Sent::Hyper(request)) => calls.start(
                ticket,
                Call {
                    request,
                    limit,
                    timeout,
                },
                move |called| finished(&settings, asked, protocol, called),
            ),
            (Ok(calls), Sent::Plain(request)) => calls.start_plain(
                ticket,
                PlainCall {
                    request,
                    limit,
                    timeout,
                },
                move |called| finished_plain(&settings, asked, protocol, called),
            ),
            (Err(error), _) => return Some(rendered(protocol, Err(error))),
        }
        None
    }

    fn wait(&mut self, jobs: Option<RawFd>, timeout: Duration, finished: &mut Vec<(u64, Outcome)>) {
        match self.calls() {
            Ok(calls) => calls.wait(jobs, timeout, finished),
            Err(error) => {
                // Nothing can be held without a client: this only paces the loop.
                log::error!("{error}");
                std::thread::sleep(timeout);
            }
        }
    }

    fn abort(&mut self, ticket: u64) {
        if let Some(calls) = &mut self.calls {
            calls.abort(ticket);
        }
    }

    fn selftest(&mut self) -> Result<(), String> {
        selftest(&self.settings)
    }
}

/// The self-test's call (see the module docs), on a connection of its own.
fn selftest(settings: &Settings) -> Result<(), String> {
    let timeout = settings.timeout.min(SELFTEST_TIMEOUT);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    let url = format!("{}{}/", settings.origin, settings.base);
    let backend = &settings.origin;
    match agent.head(&url).header("X-Prime-Selftest", "1").call() {
        Ok(_) => Ok(()),
        Err(ureq::Error::Timeout(_)) => Err(format!(
            "the backend {backend} did not answer within {}",
            humantime::format_duration(timeout)
        )),
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("the backend {backend} refused the connection"))
        }
        Err(ureq::Error::ConnectionFailed) => {
            Err(format!("the backend {backend} refused the connection"))
        }
        Err(ureq::Error::HostNotFound) => Err(format!("the backend's host {backend} is not found")),
        Err(other) => Err(format!(
            "the backend {backend} could not be reached: {other}"
        )),
    }
}

impl HttpWork for HttpGateway {
    fn selftest(&mut self) -> Result<(), String> {
        selftest(&self.settings)
    }

    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        let (outgoing, asked) = prepare(&self.settings, job)?;
        let settings = Arc::clone(&self.settings);
        let (limit, timeout) = (settings.max_response_bytes, settings.timeout);
        let watching = until(INTERRUPT_POLL, || job.interrupted());
        let call = Call {
            request: outgoing,
            limit,
            timeout,
        };
        match self.calls()?.call(call, watching) {
            Some(called) => answer(&settings, asked, called),
            None => {
                // Dropping the runtime closes the call's connection at once.
                self.calls = None;
                log::info!(
                    "request {}: interrupted, the backend call is aborted",
                    asked.request_id
                );
                Ok(Next::Abandon)
            }
        }
    }
}

/// Builds the backend request from the client's; also says whether it is a HEAD.
///
/// The fields go straight into the request's `HeaderMap` (not through
/// `http::request::Builder`, which moves the whole request at every field), their
/// values into one buffer ([`Fields`]), and the client's address is written once for
/// the three fields that carry it. The target is in origin form (RFC 9112 §3.2.1).
fn outgoing(
    settings: &Settings,
    request: &Asking<'_, '_>,
    request_id: u64,
    is_async: bool,
    client: Option<SocketAddr>,
) -> Result<(Outgoing, bool), StageError> {
    let target = origin_form(request.target)?;
    // Dot segments go before the base is joined: none may climb out of it.
    let path = under_base(&settings.base, target)
        .map_err(|refusal| StageError::bad_request(refusal.to_string()))?;
    let connection = connection_options(
        request
            .fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .map(|f| f.value),
    );
    let method =
        http::Method::from_bytes(request.method.as_bytes()).map_err(|e| unforwardable(&e))?;
    let values: usize = request.fields.iter().map(|f| f.value.len()).sum();
    let mut fields = Fields::with_capacity(request.fields.len() + 6, values + 256);
    // The chains the client sent (`Forwarded`, `X-Forwarded-For`, `X-Forwarded-Host`),
    // each joined with the gateway's own value at its end.
    let mut forwarded_for = Vec::new();
    let mut forwarded = Vec::new();
    let mut forwarded_host = Vec::new();
    let mut request_id_header = false;
    let mut host = None;
    for field in request.fields {
        let name = field.name;
        if host.is_none() && name.eq_ignore_ascii_case("host") {
            host = Some(lossy(field.value));
        }
        // The signatures are the gateway's own: a client's are never passed on.
        if is_hop_by_hop(name, &connection)
            || name.eq_ignore_ascii_case(SIGNATURE_HEADER)
            || name.eq_ignore_ascii_case(GRIP_SIG)
        {
            continue;
        }
        // Values are passed as text, as a `Request` holds them (not UTF-8: lossily).
        let value = lossy(field.value);
        let chain = if name.eq_ignore_ascii_case("x-forwarded-for") {
            Some(&mut forwarded_for)
        } else if name.eq_ignore_ascii_case("forwarded") {
            Some(&mut forwarded)
        } else if name.eq_ignore_ascii_case("x-forwarded-host") {
            Some(&mut forwarded_host)
        } else {
            None
        };
        if let Some(chain) = chain {
            chain.push(value);
            continue;
        }
        // Says who the client is: only the front end knows, so the client's own is
        // replaced, never passed on.
        if name.eq_ignore_ascii_case("x-real-ip") {
            continue;
        }
        // The gateway honoured `respond-async` itself; the backend answers in place.
        if is_async && name.eq_ignore_ascii_case("prefer") {
            continue;
        }
        if name.eq_ignore_ascii_case("x-request-id") {
            request_id_header = true;
        }
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| unforwardable(&e))?;
        fields.push(name, &value);
    }
    let host = host.unwrap_or_default();
    let ip = client.map(|c| IpText::of(c.ip()));
    for value in &forwarded {
        fields.join(value);
    }
    fields.join(b"for=");
    match (client, &ip) {
        (Some(SocketAddr::V4(a)), Some(ip)) if a.port() == 0 => fields.extend(ip.as_bytes()),
        _ => fields.extend(forwarded_node(client).as_bytes()),
    }
    fields.extend(b";proto=http;host=\"");
    for part in host.split(|b| matches!(b, b'"' | b'\\')) {
        fields.extend(part);
    }
    fields.extend(b"\"");
    fields.end(FORWARDED.clone());
    for value in &forwarded_for {
        fields.join(value);
    }
    fields.join(ip.as_ref().map_or(&b"unknown"[..], |ip| ip.as_bytes()));
    fields.end(X_FORWARDED_FOR.clone());
    for value in &forwarded_host {
        fields.join(value);
    }
    if !host.is_empty() {
        fields.join(&host);
    }
    fields.end_unless_empty(X_FORWARDED_HOST.clone());
    if let Some(ip) = &ip {
        fields.push(X_REAL_IP.clone(), ip.as_bytes());
    }
    if !request_id_header {
        fields.push_number(X_REQUEST_ID.clone(), request_id);
    }
    if let Some(secret) = &settings.secret {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signature = sign(secret, now, request.method, &path, request.body);
        fields.push(X_PRIME_SIGNATURE.clone(), signature.as_bytes());
    }
    if let Some(key) = &settings.grip_key {
        let sig = grip::grip_sig_now(key).map_err(|e| StageError::internal(e.to_string()))?;
        fields.push(GRIP_SIG_NAME.clone(), sig.as_bytes());
    }
    let uri = http::Uri::try_from(path).map_err(|e| unforwardable(&e))?;
    let head = request.method.eq_ignore_ascii_case("HEAD");
    let outgoing = Outgoing {
        method,
        uri,
        fields,
        body: Bytes::copy_from_slice(request.body),
    };
    Ok((outgoing, head))
}

/// A field value's bytes as text, as a `Request` holds them: as they are when they
/// are UTF-8 (ASCII, the usual, told at once), else made so lossily (each byte that
/// is not, U+FFFD).
fn lossy(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if value.is_ascii() || std::str::from_utf8(value).is_ok() {
        return std::borrow::Cow::Borrowed(value);
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(value).into_owned().into_bytes())
}

/// A backend request made by [`outgoing`], before it takes the form its client sends:
/// hyper's [`http::Request`] or the lean client's bytes ([`PlainRequest`]).
struct Outgoing {
    method: http::Method,
    /// In origin form.
    uri: http::Uri,
    fields: Fields,
    body: Bytes,
}

impl Outgoing {
    /// The request as hyper sends it.
    ///
    /// Errors: a field value that is not one (`400`).
    fn into_request(self) -> Result<http::Request<Bytes>, StageError> {
        let headers = self.fields.into_map().map_err(|e| unforwardable(&e))?;
        let mut outgoing = http::Request::new(self.body);
        *outgoing.method_mut() = self.method;
        *outgoing.uri_mut() = self.uri;
        *outgoing.headers_mut() = headers;
        Ok(outgoing)
    }

    /// The request as the lean client sends it (see `gateway_plain`); `Ok(Err(self))`
    /// for one it does not send (`CONNECT`, or a target with no path), which hyper
    /// sends.
    ///
    /// Errors: a field value that is not one (`400`, as [`Outgoing::into_request`]).
    fn into_plain(self) -> Result<Result<PlainRequest, Outgoing>, StageError> {
        if self.method == http::Method::CONNECT {
            return Ok(Err(self));
        }
        let Some(target) = self.uri.path_and_query() else {
            return Ok(Err(self));
        };
        let mut head = Vec::with_capacity(256 + target.as_str().len());
        head.extend_from_slice(self.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_str().as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        self.fields
            .write_lines(&mut head)
            .map_err(|e| unforwardable(&e))?;
        Ok(Ok(PlainRequest {
            method: self.method,
            head,
            body: self.body,
        }))
    }
}

/// A backend request as the client that sends it takes it.
enum Sent {
    Hyper(http::Request<Bytes>),
    Plain(PlainRequest),
}

/// The `400` for a request the gateway cannot forward, and why.
fn unforwardable(e: &dyn fmt::Display) -> StageError {
    StageError::bad_request(format!("the request cannot be forwarded: {e}"))
}

/// The client's response from the backend's: status, end-to-end headers and body.
fn incoming(response: http::Response<Bytes>, head: bool) -> Response {
    let (parts, body) = response.into_parts();
    let connection = connection_options(
        parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let mut answer = Response::new(parts.status.as_u16()).body(body.to_vec());
    for (name, value) in &parts.headers {
        let keep_length = head && name == http::header::CONTENT_LENGTH;
        if is_hop_by_hop(name.as_str(), &connection) && !keep_length {
            continue;
        }
        answer = answer.header(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    answer
}

/// The value of `X-Prime-Signature` for a request: `t=<unix seconds>,v1=<hex>`, where
/// `<hex>` is the lowercase hex HMAC-SHA256, keyed with `secret`, of the string
///
/// ```text
/// <unix seconds> "\n" <METHOD> "\n" <path and query as sent to the backend> "\n" <lowercase hex SHA-256 of the body>
/// ```
///
/// A backend checks it by recomputing the HMAC from the request it received, comparing
/// in constant time, and refusing timestamps too far from its clock.
///
/// ```
/// let value = prime_server::stages::gateway::sign(b"key", 1700000000, "POST", "/orders?x=1", b"{}");
/// assert!(value.starts_with("t=1700000000,v1="));
/// assert_eq!(value.len(), "t=1700000000,v1=".len() + 64);
/// ```
pub fn sign(secret: &[u8], unix_seconds: u64, method: &str, target: &str, body: &[u8]) -> String {
    let digest = hex(&Sha256::digest(body));
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(format!("{unix_seconds}\n{method}\n{target}\n{digest}").as_bytes());
    format!("t={unix_seconds},v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Splits `http://host:port[/base]` into its origin and base path.
fn parse_target(target: &str) -> Result<(String, String), GatewayError> {
    let refuse = |reason: &str| GatewayError::Target {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| refuse("it must start with http:// (the gateway speaks plain HTTP)"))?;
    let (authority, base) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(refuse("it needs a host (and no user information)"));
    }
    if base.contains(['?', '#']) {
        return Err(refuse("it may have a base path but no query or fragment"));
    }
    let origin = format!("http://{authority}");
    origin
        .parse::<http::Uri>()
        .map_err(|e| refuse(&e.to_string()))?;
    Ok((origin, base.to_string()))
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
