//! The stage API: [`HttpJob`], [`Next`], [`StageError`] and the [`HttpWork`] trait, over
//! the pipeline's [`Job`](crate::Job) and [`Outcome`](crate::Outcome).

use crate::http::{ParseError, Request, Response};
use crate::pipeline::channel::{Hold, Item};
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::stream::{ResponseStream, StreamError};
use crate::pipeline::worker::{Job, Outcome, Work};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// A job as an HTTP stage sees it.
pub struct HttpJob<'j, 'a> {
    job: &'j mut Job<'a>,
    request: Option<Request>,
}

impl<'j, 'a> HttpJob<'j, 'a> {
    pub(crate) fn new(job: &'j mut Job<'a>) -> Self {
        HttpJob { job, request: None }
    }

    /// The client's request (method, path, decoded query, headers, body), parsed on first
    /// use. For a netstring or raw request, its payload is the body of a `POST /`.
    pub fn request(&mut self) -> Result<&Request, StageError> {
        let request = match self.request.take() {
            Some(request) => request,
            None => match self.job.envelope().protocol {
                Protocol::Http { .. } => Request::from_parts(
                    self.job.frame(0).unwrap_or_default(),
                    self.job.frame(1).unwrap_or_default().to_vec(),
                )?,
                Protocol::Netstring | Protocol::Raw => Request::from_parts(
                    b"POST / HTTP/1.0\r\n\r\n",
                    self.job.frame(0).unwrap_or_default().to_vec(),
                )?,
            },
        };
        Ok(self.request.insert(request))
    }

    /// What the previous stage forwarded, if anything.
    pub fn intermediate(&self) -> Option<&[u8]> {
        self.job.frame(request_frames(self.job.envelope()))
    }

    /// What the previous stage forwarded, read as JSON into `T`.
    pub fn intermediate_json<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        let bytes = self
            .intermediate()
            .ok_or_else(|| StageError::internal("this stage expects a forwarded payload"))?;
        serde_json::from_slice(bytes)
            .map_err(|e| StageError::internal(format!("the forwarded payload is not valid: {e}")))
    }

    /// Whether the work should stop (client gone, deadline passed, shutting down).
    pub fn interrupted(&self) -> bool {
        self.job.interrupted()
    }

    /// The request's routing and protocol facts.
    pub fn envelope(&self) -> &Envelope {
        self.job.envelope()
    }

    /// Starts answering in pieces (see [`crate::pipeline::stream`]): the head of `response`
    /// goes now, then [`ResponseStream::send`] each piece and
    /// [`ResponseStream::finish`]; then return [`Next::Streamed`].
    ///
    /// ```
    /// use prime_server::http::Response;
    /// use prime_server::stages::{HttpJob, Next, StageError};
    /// fn countdown(job: &mut HttpJob) -> Result<Next, StageError> {
    ///     let mut stream = job
    ///         .stream(&Response::new(200).header("Content-Type", "text/plain"))
    ///         .map_err(|e| StageError::internal(e.to_string()))?;
    ///     for n in (1..=3).rev() {
    ///         if job.interrupted() {
    ///             return Ok(Next::Streamed); // dropped unfinished: the answer is cut short
    ///         }
    ///         stream.send(format!("{n}\n").as_bytes()).map_err(|e| StageError::internal(e.to_string()))?;
    ///     }
    ///     stream.finish().map_err(|e| StageError::internal(e.to_string()))?;
    ///     Ok(Next::Streamed)
    /// }
    /// # let _ = countdown;
    /// ```
    pub fn stream(&self, response: &Response) -> Result<ResponseStream<'_>, StreamError> {
        self.job.stream(response)
    }

    /// Starts answering with a body of exactly `length` bytes, sent in pieces with
    /// `Content-Length` (no chunked coding): see [`Job::stream_sized`].
    pub fn stream_sized(
        &self,
        response: &Response,
        length: u64,
    ) -> Result<ResponseStream<'_>, StreamError> {
        self.job.stream_sized(response, length)
    }

    /// Publishes `item` on `channel` (see [`crate::pipeline::channel`]): every hold on
    /// it, on every front end of the bus, gets it. Returns once the message is on its
    /// way to the front end's bus, not once delivered. A bad channel name is refused.
    ///
    /// ```
    /// use prime_server::stages::{HttpJob, Item, Next, StageError};
    /// use prime_server::http::Response;
    /// fn done(job: &mut HttpJob) -> Result<Next, StageError> {
    ///     let item = Item::stream("", "data: done\n\n").with_response(&Response::new(200).body("done"));
    ///     job.publish("account:42", item)?;
    ///     Ok(Next::respond(Response::new(202)))
    /// }
    /// # let _ = done;
    /// ```
    pub fn publish(&self, channel: &str, mut item: Item) -> Result<(), StageError> {
        check_channel(channel)?;
        item.channel = channel.to_string();
        self.job.publish(&item);
        Ok(())
    }

    /// Asks that this asynchronous job's end be published on `channel` (its status
    /// document, as `GET /jobs/{id}` shows it: an `http-stream` format `event: job` with
    /// the document as `data`, and an `http-response` format with it as the JSON body).
    /// Nothing for a request that is not an asynchronous job ([`is_async`](Self::is_async)).
    /// A bad channel name is refused.
    pub fn notify(&self, channel: &str) -> Result<(), StageError> {
        check_channel(channel)?;
        self.job.notify(channel);
        Ok(())
    }

    /// Reports a job's progress: `fraction` from 0 to 1 and a short message, stored with
    /// the job and sent to its event streams (see [`Job::progress`]).
    pub fn progress(&self, fraction: f32, message: &str) {
        self.job.progress(fraction, message);
    }

    /// Whether this request runs as an asynchronous job (submitted with `Prefer:
    /// respond-async`, or put off by an earlier [`Next::Later`]): nobody waits on a
    /// connection, and the answer is stored for the client to collect.
    pub fn is_async(&self) -> bool {
        self.job.envelope().job
    }

    /// The method of a JSON-RPC 2.0 call (see [`crate::stages::jsonrpc`]): `Some` only
    /// when this request is one the front end made of a call to its JSON-RPC path.
    pub fn jsonrpc_method(&self) -> Option<&str> {
        if !self.job.envelope().jsonrpc {
            return None;
        }
        super::jsonrpc::method_of(self.job.frame(0).unwrap_or_default())
    }

    /// The `params` of a JSON-RPC 2.0 call (an array or an object), or `None` when the
    /// call had none or this request is no JSON-RPC call (see
    /// [`jsonrpc_method`](Self::jsonrpc_method)).
    pub fn jsonrpc_params(&self) -> Option<serde_json::Value> {
        if !self.job.envelope().jsonrpc {
            return None;
        }
        super::jsonrpc::params_of(self.job.frame(1).unwrap_or_default())
    }

    /// The `params` of a JSON-RPC 2.0 call read into `T`.
    ///
    /// # Errors
    /// A `400` [`StageError`] (the caller's `-32602`, invalid params) when the call has
    /// no params or they do not fit `T`, or this request is no JSON-RPC call.
    pub fn jsonrpc_params_as<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        let params = self
            .jsonrpc_params()
            .ok_or_else(|| StageError::bad_request("this method takes params"))?;
        serde_json::from_value(params).map_err(|e| StageError::bad_request(e.to_string()))
    }

    /// Whether the request asks for a WebSocket (`Upgrade: websocket`, RFC 6455 §4.1):
    /// the front end has checked the handshake's fields; answer
    /// [`Next::accept_websocket`] to accept it.
    pub fn is_websocket_upgrade(&self) -> bool {
        let envelope = self.job.envelope();
        envelope.websocket.is_none()
            && matches!(envelope.protocol, Protocol::Http { .. })
            && crate::http::websocket::asks_upgrade(self.job.frame(0).unwrap_or_default())
    }

    /// For a message from a WebSocket client: whether it is text or binary. Its
    /// request is the upgrade request's head (path, query, `Cookie`, `Authorization`...)
    /// as a `POST`, with the message as the body (`Content-Type: text/plain;
    /// charset=utf-8` for text, `application/octet-stream` for binary). The answer's
    /// body goes back to the socket as one message: text when its `Content-Type` is
    /// text (`text/*`, JSON) and its body UTF-8, binary when it is another type or
    /// not UTF-8; a `204` answer sends nothing. Answers keep the order of the messages.
    pub fn websocket_message(&self) -> Option<crate::http::websocket::MessageKind> {
        self.job.envelope().websocket
    }

    /// The client's address as the front end saw it (the port is 0: libzmq gives the
    /// address alone), for an asynchronous job too (stored with the job); `None` when
    /// unknown.
    pub fn client_address(&self) -> Option<std::net::SocketAddr> {
        self.job.envelope().client
    }
}

/// Refuses a name that is not a channel's (see [`crate::pipeline::channel::valid_channel`]),
/// and a job's channel (`job:{id}`), where only the job service publishes (its name is
/// left out of the error: it holds the job's id).
fn check_channel(channel: &str) -> Result<(), StageError> {
    if crate::pipeline::channel::reserved_channel(channel) {
        return Err(StageError::new(
            403,
            "a job's channel takes no publishes from a stage",
        ));
    }
    if crate::pipeline::channel::valid_channel(channel) {
        Ok(())
    } else {
        Err(StageError::internal(format!(
            "{channel:?} is not a channel name"
        )))
    }
}

/// How many frames the request itself takes: head and body for HTTP (the front end
/// leaves out an empty body's frame; a stage that forwards puts an empty one back, so
/// that what it adds comes at this index), the payload else.
fn request_frames(envelope: &Envelope) -> usize {
    match envelope.protocol {
        Protocol::Http { .. } => 2,
        Protocol::Netstring | Protocol::Raw => 1,
    }
}

/// The outcome of [`Next::Later`]: the request's frames go back to the front end.
fn later(job: &mut Job<'_>) -> Outcome {
    let envelope = *job.envelope();
    let refusal = match envelope.protocol {
        _ if envelope.job => Some((
            500,
            "a stage asked to answer later a job that already is asynchronous",
        )),
        Protocol::Http { .. } => None,
        Protocol::Netstring | Protocol::Raw => {
            Some((400, "this request can only be answered later over HTTP"))
        }
    };
    if let Some((status, why)) = refusal {
        log::error!("request {}: {why}", envelope.request_id);
        return job.reply(&StageError::new(status, why).to_response());
    }
    let mut frames = job.take_frames().into_iter();
    let head = frames.next().unwrap_or_else(zmq::Message::new);
    let body = frames.next().unwrap_or_else(zmq::Message::new);
    Outcome::Later(head, body)
}

/// The outcome of [`Next::Hold`]: a single channel without a `prev-id` takes the
/// request's `Last-Event-ID` (an SSE client reconnecting) as its `prev-id`.
fn hold_with_last_event_id(job: &mut Job<'_>, mut hold: Hold) -> Outcome {
    if let Err(e) = hold.check() {
        log::error!("request {}: {e}", job.envelope().request_id);
        return job.reply(&StageError::internal(e.to_string()).to_response());
    }
    if let [only] = hold.channels.as_mut_slice() {
        if only.prev_id.is_none() && matches!(job.envelope().protocol, Protocol::Http { .. }) {
            let head = job.frame(0).unwrap_or_default();
            only.prev_id = crate::http::field_text(head, "last-event-id")
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty());
        }
    }
    job.hold(&hold)
}

/// What an HTTP stage decides.
#[derive(Debug)]
pub enum Next {
    /// Answer the client now; later stages never see the request.
    Respond(Response),
    /// Send the request on with this payload, to the named stage or else the next one.
    Forward {
        /// The stage to send to; `None` for the next one in the pipeline.
        stage: Option<String>,
        /// What the receiving stage reads with [`HttpJob::intermediate`].
        payload: Vec<u8>,
    },
    /// Send nothing: the work was interrupted and nobody waits for it.
    Abandon,
    /// Send nothing more: the answer was streamed with [`HttpJob::stream`].
    Streamed,
    /// "Got it, I need to think about it": the front end stores the request as an
    /// asynchronous job, answers the client `202 Accepted` with the job's `Location`, and
    /// runs the request through the pipeline again as that job, where
    /// [`HttpJob::is_async`] is true. A stage must not answer `Later` to a job that is
    /// already asynchronous: that is answered 500. Only HTTP requests can be answered
    /// later (a netstring request gets 400), and only by a front end with a job store.
    Later,
    /// Hold the client's connection on channels (see [`Hold`]): a long-poll answered by
    /// the first message published with an `http-response` format (or at the timeout by
    /// the hold's own answer), or a stream that each `http-stream` message extends.
    /// A single-channel hold without a `prev-id` takes the request's `Last-Event-ID` as
    /// its `prev-id`. Only HTTP requests a client waits on are held; others get the
    /// hold's own answer at once.
    Hold(Hold),
}

impl Next {
    /// Answers the client with `response`.
    pub fn respond(response: Response) -> Self {
        Next::Respond(response)
    }

    /// Forwards `payload` to the next stage.
    pub fn forward(payload: impl Into<Vec<u8>>) -> Self {
        Next::Forward {
            stage: None,
            payload: payload.into(),
        }
    }

    /// Forwards `value`, as JSON, to the next stage.
    pub fn forward_json<T: Serialize>(value: &T) -> Result<Self, StageError> {
        Ok(Self::forward(to_json(value)?))
    }

    /// Forwards `payload` to the stage named `stage` (any stage, an earlier one too).
    pub fn to(stage: &str, payload: impl Into<Vec<u8>>) -> Self {
        Next::Forward {
            stage: Some(stage.to_string()),
            payload: payload.into(),
        }
    }

    /// Forwards `value`, as JSON, to the stage named `stage`.
    pub fn to_json<T: Serialize>(stage: &str, value: &T) -> Result<Self, StageError> {
        Ok(Self::to(stage, to_json(value)?))
    }

    /// Holds the connection: see [`Next::Hold`].
    ///
    /// ```
    /// use prime_server::stages::{Hold, HttpJob, Next, StageError};
    /// fn wait(_job: &mut HttpJob) -> Result<Next, StageError> {
    ///     Ok(Next::hold(Hold::response(["account:42"]).timeout(55)))
    /// }
    /// # let _ = wait;
    /// ```
    pub fn hold(hold: Hold) -> Self {
        Next::Hold(hold)
    }

    /// Accepts a WebSocket upgrade (RFC 6455): the answer to a request that asks for
    /// one (see [`HttpJob::is_websocket_upgrade`]). The front end completes the
    /// handshake (`101 Switching Protocols`, `Sec-WebSocket-Accept`), and from then on
    /// each message the client sends comes through the pipeline as a request (see
    /// [`HttpJob::websocket_message`]). `protocol` is the subprotocol chosen among those
    /// the client offered in `Sec-WebSocket-Protocol` (one it did not offer fails the
    /// handshake with 500); `channels` are the channels the socket is held on at once:
    /// each message published there with a `ws-message` format is sent to it. Any other
    /// answer to an upgrade request refuses it, with that answer.
    ///
    /// ```
    /// use prime_server::stages::{HttpJob, Next, StageError};
    /// fn accept(job: &mut HttpJob) -> Result<Next, StageError> {
    ///     if job.is_websocket_upgrade() {
    ///         return Ok(Next::accept_websocket(None, &["news"]));
    ///     }
    ///     Err(StageError::bad_request("only WebSocket here"))
    /// }
    /// # let _ = accept;
    /// ```
    pub fn accept_websocket(protocol: Option<&str>, channels: &[&str]) -> Self {
        let mut accept = Response::new(101);
        if let Some(protocol) = protocol {
            accept = accept.header("Sec-WebSocket-Protocol", protocol);
        }
        if channels.is_empty() {
            return Next::Respond(accept);
        }
        // The mode does not matter to a socket: a response hold's answer travels whole.
        Next::Hold(Hold::response(channels.iter().copied()).answer(accept))
    }

    /// From a WebSocket message's stage: holds the message's socket on `channels` too
    /// (each message published there with a `ws-message` format is sent to it), and
    /// sends no answer for this message.
    pub fn subscribe_websocket(channels: &[&str]) -> Self {
        Next::Hold(Hold::response(channels.iter().copied()).answer(Response::new(204)))
    }

    /// Answers later: see [`Next::Later`].
    ///
    /// ```
    /// use prime_server::stages::{HttpJob, Next, StageError};
    /// // Long routes become asynchronous jobs; short ones are answered at once.
    /// fn route(job: &mut HttpJob) -> Result<Next, StageError> {
    ///     let long = job.request()?.query_values("far").next().is_some();
    ///     if long && !job.is_async() {
    ///         return Ok(Next::later());
    ///     }
    ///     Next::forward_json(&long)
    /// }
    /// # let _ = route;
    /// ```
    pub fn later() -> Self {
        Next::Later
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StageError> {
    serde_json::to_vec(value)
        .map_err(|e| StageError::internal(format!("the payload cannot be written as JSON: {e}")))
}

/// A stage's refusal: its status and message reach the client as a JSON error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for the client.
    pub message: String,
    /// The methods allowed, for a 405.
    pub allow: Option<String>,
}

impl StageError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        StageError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404: nothing answers at this path.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 405 with an `Allow` header listing `allow`.
    pub fn method_not_allowed(allow: &str, message: impl Into<String>) -> Self {
        StageError {
            allow: Some(allow.to_string()),
            ..Self::new(405, message)
        }
    }

    /// 500: the stage itself failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// The response the client gets.
    pub fn to_response(&self) -> Response {
        let response = Response::error(self.status, &self.message);
        match &self.allow {
            Some(allow) => response.header("Allow", allow.as_str()),
            None => response,
        }
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for StageError {}

impl From<ParseError> for StageError {
    fn from(e: ParseError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

/// An HTTP stage's work. Any `FnMut(&mut HttpJob) -> Result<Next, StageError>` is one;
/// implement it on a struct to keep per-worker state (a cache, a graph handle), to trim
/// that state after each job, or to advertise a heartbeat payload.
pub trait HttpWork: Send + 'static {
    /// Handles one request.
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError>;

    /// Runs after every job, whatever its outcome.
    fn cleanup(&mut self) {}

    /// The payload sent with each readiness message (see `proxy::Chooser`).
    fn heartbeat(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Checks what the stage depends on, for the front end's self-test: see
    /// [`Work::selftest`]. Passes by default.
    fn selftest(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl<F> HttpWork for F
where
    F: FnMut(&mut HttpJob<'_, '_>) -> Result<Next, StageError> + Send + 'static,
{
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        self(job)
    }
}

/// Adapts an [`HttpWork`] to the pipeline's [`Work`]; `Pipeline::http_stage` wraps it
/// for you.
#[derive(Clone, Debug)]
pub struct HttpStage<W>(pub W);

impl<W: HttpWork> Work for HttpStage<W> {
    fn work(&mut self, job: &mut Job<'_>) -> Outcome {
        let decision = self.0.handle(&mut HttpJob::new(job));
        match decision {
            Ok(Next::Respond(response)) => job.reply(&response),
            Ok(Next::Forward { stage, payload }) => {
                let keep = request_frames(job.envelope());
                let mut frames = job.forward_frames(keep);
                // A request without a body came without its body frame; the payload
                // still goes at its fixed place after the request.
                frames.resize_with(keep, zmq::Message::new);
                frames.push(payload.into());
                match stage {
                    Some(stage) => Outcome::ForwardTo(stage, frames),
                    None => Outcome::Forward(frames),
                }
            }
            Ok(Next::Abandon | Next::Streamed) => Outcome::Abandon,
            Ok(Next::Later) => later(job),
            Ok(Next::Hold(hold)) => hold_with_last_event_id(job, hold),
            Err(error) => {
                log::debug!("request {}: {error}", job.envelope().request_id);
                job.reply(&error.to_response())
            }
        }
    }

    fn cleanup(&mut self) {
        self.0.cleanup();
    }

    fn heartbeat(&self) -> Vec<u8> {
        self.0.heartbeat()
    }

    fn selftest(&mut self) -> Result<(), String> {
        self.0.selftest()
    }
}
