//! The demo: the prime-checking service behind `prime_serverd` and the echo stage
//! behind `prime_echod`, written as an embedder would write them.
//!
//! - [`primes`]: the primality tests (trial division, Miller-Rabin) the compute stage
//!   runs;
//! - [`service`]: the `parse`, `compute` and `echo` stages, for HTTP, netstring and raw
//!   requests;
//! - [`channels`]: the channels demo (`/channels/NAME`: hold, publish);
//! - [`simulation`]: `prime_serverd`'s simulation mode, which feeds a range of numbers
//!   through the pipeline without HTTP and counts the primes.

pub mod channels;
pub mod primes;
pub mod service;
pub mod simulation;

pub use service::{
    echo, parse, spawn_service, Compute, IS_PRIME_PATH, PARAMETER, RAW_NOT_PRIME, RAW_PRIME,
    SERVICES,
};
