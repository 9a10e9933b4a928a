//! # prime_server
//!
//! A parallel-pipeline server on ZeroMQ: a front end parses client requests and sends
//! them through load-balancing proxies to pools of workers, stage after stage. Any stage
//! can answer the client at once through the loopback; a client that hangs up sends an
//! interrupt so workers can drop its work.
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
//! - [`envelope`]: the first frame of every message, and the interrupt frame.
//! - [`proxy`]: the load-balancing broker in front of each stage.
//! - [`worker`]: the worker loop, [`Job`], [`Outcome`] and the [`Work`] trait.
//! - [`loopback`]: answers and typed failures on their way back to the front end.
//! - [`pipeline`]: a builder that wires stages together in one process.
//! - [`primes`] and [`demo`]: the prime-checking service behind `prime_serverd`.

pub mod cli;
pub mod demo;
pub mod envelope;
pub mod error;
pub mod http;
pub mod loopback;
pub mod netstring;
pub mod pipeline;
pub mod primes;
pub mod proxy;
pub mod server;
pub mod shutdown;
pub mod simulation;
pub mod sockets;
pub mod topology;
pub mod worker;

pub use error::{Error, Result};
pub use pipeline::{FrontSockets, Pipeline, RunningPipeline, Transport};
pub use shutdown::Shutdown;
pub use worker::{Job, Outcome, Work};
