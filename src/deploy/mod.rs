//! Putting the pieces together: in one process ([`builder`]: stages as thread pools
//! behind a front end, for embedders and `prime_serverd`), across processes and hosts
//! ([`topology`]: a whole deployment in one JSON file), and the daemons' shared command
//! line ([`cli`]), and the daemons' metrics listener ([`metrics_listener`]).

pub mod builder;
pub mod cli;
pub mod metrics_listener;
pub mod topology;

pub use builder::{Pipeline, RunningPipeline, Transport};
