//! # prime_server
//!
//! A parallel-pipeline server on ZeroMQ: a front end parses client requests and sends
//! them through load-balancing proxies to pools of workers, stage after stage. Any stage
//! can answer the client at once through the loopback; a client that goes away (a reset,
//! or a close that a `102 Processing` probe or `half_closed_timeout` reveals, while a
//! client that only half-closed is still answered) sends an interrupt so workers can
//! drop its work.
//!
//! ```text
//!             HTTP/1.x                     multipart ZeroMQ messages
//!  client <-----------> front end ----------> proxy 1 -----> worker pool 1 --+--> proxy 2 -----> worker pool 2 ...
//!                       (ZMQ_STREAM)                                          |
//!                         ^    |                                              |
//!                         |    +--- interrupt (PUB) ---> every worker (SUB)   |
//!                         +-------- loopback (PULL) <--- any worker (PUSH) ---+
//! ```
//!
//! The same pieces run as threads in one process (`inproc://`), as processes on one host
//! (`ipc://`) or across hosts (`tcp://`): only the endpoints differ.
//!
//! ## Embedding
//!
//! Write a function per stage, name the stages, start the pipeline behind a front end:
//!
//! ```
//! use prime_server::http::Response;
//! use prime_server::server::ServerConfig;
//! use prime_server::stages::{HttpJob, Next, StageError};
//! use prime_server::{Pipeline, Shutdown};
//! use std::io::{Read, Write};
//!
//! // Cheap actions are answered by the first stage; costly ones go on.
//! fn parse(job: &mut HttpJob) -> Result<Next, StageError> {
//!     let request = job.request()?;
//!     match request.path.as_str() {
//!         "/hello" => Ok(Next::respond(Response::new(200).body("hello"))),
//!         "/square" => {
//!             let n: u64 = request.query_values("n").next().and_then(|v| v.parse().ok())
//!                 .ok_or_else(|| StageError::bad_request("n must be a whole number"))?;
//!             Next::forward_json(&n)
//!         }
//!         _ => Err(StageError::not_found("try /hello or /square?n=12")),
//!     }
//! }
//!
//! fn square(job: &mut HttpJob) -> Result<Next, StageError> {
//!     let n: u64 = job.intermediate_json()?;
//!     Ok(Next::respond(Response::json(200, &serde_json::json!({ "square": n * n }))))
//! }
//!
//! let ctx = zmq::Context::new();
//! let (pipeline, server) = Pipeline::new()
//!     .http_stage("parse", 2, parse)
//!     .http_stage("square", 2, square)
//!     .bind_server(&ctx, ServerConfig::http("tcp://127.0.0.1:0"))
//!     .unwrap();
//! let address = server.endpoints()[0].trim_start_matches("tcp://").to_string();
//! let shutdown = Shutdown::new();
//! let stop = shutdown.clone();
//! let front_end = std::thread::spawn(move || server.run(&stop));
//!
//! let mut client = std::net::TcpStream::connect(&address).unwrap();
//! client.write_all(b"GET /square?n=12 HTTP/1.0\r\n\r\n").unwrap();
//! let mut response = String::new();
//! client.read_to_string(&mut response).unwrap();
//! assert!(response.starts_with("HTTP/1.0 200 OK"));
//! assert!(response.ends_with(r#"{"square":144}"#));
//!
//! shutdown.trigger();
//! front_end.join().unwrap().unwrap();
//! pipeline.stop();
//! ```
//!
//! ## Map of the crate
//!
//! One folder per part, in data-flow order: bytes → [`http`] parser → [`server`] →
//! [`pipeline::envelope`] + frames → [`pipeline::proxy`] → [`pipeline::worker`] (running
//! [`stages`]) → [`pipeline::loopback`] → [`server`] → bytes. A module imports only
//! parts listed before it here (below it in the layering), never one after.
//!
//! - [`base`]: shared plumbing: the error type, endpoints, socket helpers, the shutdown
//!   flag, a fast hash, the open-file limit, rate-limited warnings, and the Prometheus
//!   exposition ([`base::metrics`]).
//! - [`http`]: the protocol: the streaming request parser, [`http::Request`],
//!   [`http::Response`], chunked bodies, header fields, the Server-Sent Events format,
//!   WebSocket framing ([`http::websocket`]) and GRIP's WebSocket-over-HTTP events.
//! - [`netstring`]: the second client protocol.
//! - [`pipeline`]: the core: the envelope, the broker protocol, the load-balancing
//!   proxy, the worker loop, streamed answers, the loopback, holds and published
//!   messages ([`pipeline::channel`]) and the bus between front ends
//!   ([`pipeline::bus`]), the self-test probe and the census that finds what a lost
//!   proxy took with it; a proxy's metrics; several front ends on one pipeline, each
//!   answer to the one holding its client ([`pipeline::front_ends`]).
//! - [`stages`]: stages written against HTTP requests, with typed errors; the gateway
//!   to an HTTP backend; static files; routing by task name; JSON-RPC 2.0 calls.
//! - [`jobs`]: asynchronous jobs (`Prefer: respond-async`, `/jobs/{id}`) in a durable
//!   store on a thread of the front end's process, now or later (`Job-Delay`); their
//!   ends delivered to a `Callback-URL` ([`jobs::webhooks`], guarded by [`jobs::ssrf`]).
//! - [`server`]: the front end on ZMQ_STREAM (HTTP/1.x and netstrings): its loop,
//!   connections and answer order, the requests it answers itself, its sockets toward
//!   the pipeline ([`FrontSockets`]), held requests and channels with their history,
//!   WebSocket clients (messages as requests, channel messages pushed), the control
//!   listener (`POST /publish/`).
//! - [`deploy`]: putting the pieces together: the in-process [`Pipeline`] builder
//!   (with N front-end threads on one port, [`deploy::front_ends`]), a multi-process
//!   [`deploy::topology`], the daemons' [`deploy::cli`] and their metrics listener
//!   ([`deploy::metrics_listener`]).
//! - [`demo`]: the prime-checking service behind `prime_serverd` and its simulation.

#![warn(missing_docs)]

pub mod base;
pub mod demo;
pub mod deploy;
pub mod http;
pub mod jobs;
pub mod netstring;
pub mod pipeline;
pub mod server;
pub mod stages;

/// JSON, as stages read and write it ([`serde_json::json!`] for a response body).
pub use serde_json;
/// The ZeroMQ binding the pipeline is built on, for the [`zmq::Context`] an embedder
/// passes to [`Pipeline::serve`], without a dependency of its own.
pub use zmq;

pub use base::error::{Error, Result};
pub use base::shutdown::Shutdown;
pub use deploy::builder::{Pipeline, RunningPipeline, Transport};
pub use pipeline::worker::{ConcurrentWork, Job, Outcome, Work};
pub use server::FrontSockets;
