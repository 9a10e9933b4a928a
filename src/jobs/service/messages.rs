//! What the front end and the job service tell each other: [`Command`]s in, [`Event`]s
//! out, and whom an answer goes to ([`ReplyTo`]).

use super::admin;
use crate::http::Response;
use crate::pipeline::loopback::Failure;
use std::net::SocketAddr;
use std::time::Duration;

/// Whom to answer, and how: the connection and request the answer's slot belongs to,
/// and the client's HTTP facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    /// The front end's connection id.
    pub connection: u64,
    /// The request id of the slot the answer fills.
    pub request_id: u64,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// Whether the request was HEAD.
    pub head: bool,
}

impl ReplyTo {
    pub(super) fn render(&self, response: &Response) -> Vec<u8> {
        response.to_bytes(self.minor_version, self.keep_alive, self.head)
    }
}

/// What a job's run came back with, on the loopback.
#[derive(Debug)]
pub enum RunAnswer {
    /// A stage's HTTP answer, as bytes.
    Response(crate::pipeline::loopback::Payload),
    /// A failure in the pipeline.
    Failure(Failure),
}

/// What the front end asks of the job service.
#[derive(Debug)]
pub enum Command {
    /// Store a new job (`Prefer: respond-async`, or a stage's `Next::later`), answer
    /// `202` once it is committed, or its answer if it ends within `wait`.
    Submit {
        /// Whom to answer.
        reply: ReplyTo,
        /// The request head as received.
        head: Vec<u8>,
        /// The request body.
        body: Vec<u8>,
        /// `Prefer: wait=`.
        wait: Option<Duration>,
        /// The client's address, stored with the job so every run passes it on.
        client: Option<SocketAddr>,
    },
    /// `GET /jobs/{id}`, with `?wait=` to long-poll.
    Status {
        /// Whom to answer.
        reply: ReplyTo,
        /// The id as given.
        id: String,
        /// How long to wait for a change of state.
        wait: Option<Duration>,
    },
    /// `GET /jobs/{id}/result`.
    Result {
        /// Whom to answer.
        reply: ReplyTo,
        /// The id as given.
        id: String,
    },
    /// `DELETE /jobs/{id}`.
    Cancel {
        /// Whom to answer.
        reply: ReplyTo,
        /// The id as given.
        id: String,
    },
    /// A job's run has come back from the pipeline.
    Answered {
        /// The job's number (from the envelope).
        number: u64,
        /// What came back.
        answer: RunAnswer,
    },
    /// A stage asked that the job's end be published on `channel` too.
    Notify {
        /// The job's number (from the envelope).
        number: u64,
        /// The channel.
        channel: String,
    },
    /// The front end drains: answer every long-poll now, and start no more runs (those
    /// under way get the drain's time to end).
    Drain,
    /// A stage reported a job's progress.
    Progress {
        /// The job's number.
        number: u64,
        /// The fraction done, 0 to 1.
        fraction: f32,
        /// What is being done.
        message: String,
    },
    /// `GET /jobs/{id}/events`: the job's events as a `text/event-stream`, from after
    /// `last_event_id` (the `Last-Event-ID` of a reconnecting client), until it ends.
    Watch {
        /// Whom to stream to.
        reply: ReplyTo,
        /// The id as given.
        id: String,
        /// The last event the client has.
        last_event_id: Option<u64>,
    },
    /// The front end's self-test: check that the store takes a transaction and
    /// answers a read, and say so with [`Event::SelfTest`].
    SelfTest {
        /// Names the self-test in the answer.
        token: u64,
    },
    /// A call of the admin API (see [`admin`]).
    Admin(admin::AdminCall),
    /// Another front end changed a job in the shared store (see
    /// [`listen`](crate::jobs::store::postgres::listen)).
    Remote(crate::jobs::store::postgres::Notice),
    /// The connection of a request the service holds has closed: forget its long-poll.
    Gone {
        /// The connection.
        connection: u64,
        /// The request.
        request_id: u64,
    },
}

/// What the job service tells the front end.
#[derive(Debug)]
pub enum Event {
    /// Answer a request with these bytes.
    Reply {
        /// Whom.
        to: ReplyTo,
        /// The whole HTTP response.
        bytes: Vec<u8>,
    },
    /// Send a job's run into the pipeline.
    Dispatch {
        /// The job's number.
        number: u64,
        /// Its request head.
        head: Vec<u8>,
        /// Its request body.
        body: Vec<u8>,
        /// The client's address as stored with the job.
        client: Option<SocketAddr>,
    },
    /// The store's part of a self-test: `Ok` when a transaction began, a read
    /// answered and the commit went through; else why not.
    SelfTest {
        /// The token of [`Command::SelfTest`].
        token: u64,
        /// The outcome, with a sentence for the self-test's document.
        result: Result<(), String>,
    },
    /// Interrupt a job's run (it was cancelled).
    Interrupt {
        /// The job's number.
        number: u64,
    },
    /// A part of a streamed answer: its head (`start`) or a piece, in the client's
    /// framing.
    StreamPart {
        /// Whom.
        to: ReplyTo,
        /// The bytes.
        bytes: Vec<u8>,
        /// Whether this is the head.
        start: bool,
    },
    /// A job ended: publish its status document on these channels (see
    /// [`Command::Notify`]).
    Notify {
        /// The channels.
        channels: Vec<String>,
        /// The job's status document.
        document: serde_json::Value,
    },
    /// Hold an event stream (`GET /jobs/{id}/events` of a job not yet ended) on the
    /// job's channel: send `head` and the `missed` events now, then what the channel
    /// gets ([`Event::Publish`]) until the job's last event closes it.
    Hold {
        /// Whom.
        to: ReplyTo,
        /// The job's channel, `job:{id}` (a secret like the id: never logged).
        channel: String,
        /// The stream's head.
        head: Vec<u8>,
        /// The events the client missed, each as an SSE event (not yet framed).
        missed: Vec<Vec<u8>>,
    },
    /// Publish a job's event on its channel (see [`Event::Hold`]).
    Publish(crate::pipeline::channel::Item),
    /// The end of a streamed answer, with its last bytes.
    StreamEnd {
        /// Whom.
        to: ReplyTo,
        /// The last bytes (the last chunk for HTTP/1.1).
        last: Vec<u8>,
    },
}
