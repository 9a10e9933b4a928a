//! Putting the pieces together: in one process ([`builder`]: stages as thread pools
//! behind a front end, for embedders and `prime_serverd`), across processes and hosts
//! ([`topology`]: a whole deployment in one JSON file), and the daemons' shared command
//! line ([`cli`], with [`command_line`]: how every binary is called, and the job and
//! gateway options in [`cli_jobs`] and [`cli_gateway`]), and the daemons'
//! metrics listener ([`metrics_listener`]). [`front_ends`] runs several front-end
//! threads on one pipeline and one port.

pub mod builder;
pub mod cli;
pub mod cli_gateway;
pub mod cli_jobs;
pub mod command_line;
pub mod front_ends;
pub mod metrics_listener;
pub mod topology;

pub use builder::{Pipeline, RunningPipeline, Transport};
