//! The pipeline core: what travels between the front end, the proxies and the workers,
//! and the loops that move it.
//!
//! In data-flow order:
//! - [`envelope`]: the first frame of every message (request id, connection, protocol
//!   facts, deadline) and the interrupt frame;
//! - [`wire`]: the broker protocol's tags (READY, BUSY, PROBE/STATUS, RETURN, CENSUS);
//! - [`proxy`]: the load-balancing broker in front of each stage;
//! - [`worker`]: the worker loop, [`Job`], [`Outcome`], the [`Work`] trait and, for
//!   stages that hold many jobs on one thread, [`ConcurrentWork`];
//! - [`stream`]: a stage's answer sent in pieces;
//! - [`loopback`]: answers and typed failures on their way back to the front end, and
//!   how either is rendered in the client's protocol;
//! - [`channel`]: holds and published messages (GRIP's terms), and the bus's topics;
//! - [`bus`]: the XSUB/XPUB forwarder between front ends and a front end's link to it;
//! - [`selftest`]: the probe that crosses every stage and the reports it brings back;
//! - [`census`]: when a proxy is lost, which requests went with it;
//! - [`front_ends`]: several front ends on one pipeline: each answer to the front end
//!   its envelope names;
//! - [`metrics`]: a proxy's figures, published for a metrics scrape.
//!
//! Nothing here reads HTTP requests or knows the front end's connections: the front end
//! ([`crate::server`]) and the stages ([`crate::stages`]) sit above.

pub mod bus;
pub mod census;
pub mod channel;
pub mod envelope;
pub mod front_ends;
pub mod loopback;
pub mod metrics;
pub mod proxy;
pub mod selftest;
pub mod stream;
pub mod wire;
pub mod worker;

pub use worker::{ConcurrentWork, Job, Outcome, Work};
