//! The prime-checking demo service: the `parse` and `compute` stages behind
//! `prime_serverd` (both its HTTP service and its simulation mode) and `prime_workerd`.
//!
//! In the simulation mode (the raw protocol) a request is the decimal number itself and
//! the answer is one byte, `1` for a prime and `0` otherwise.

use crate::envelope::Protocol;
use crate::loopback::Failure;
use crate::primes::Algorithm;
use crate::worker::{Job, Outcome, Work};

/// The answer byte for a prime in the raw protocol.
pub const RAW_PRIME: &[u8] = b"1";
/// The answer byte for a non-prime in the raw protocol.
pub const RAW_NOT_PRIME: &[u8] = b"0";

/// The first stage: reads the number out of the request and forwards it, 8 bytes LE.
pub fn parse(job: &mut Job<'_>) -> Outcome {
    match job.envelope().protocol {
        Protocol::Raw | Protocol::Netstring => match parse_decimal(job.frame(0).unwrap_or(b"")) {
            Some(n) => Outcome::forward([n.to_le_bytes().to_vec()]),
            None => Outcome::Fail(Failure::rejected(
                400,
                "the request must be a decimal number from 0 to 18446744073709551615",
            )),
        },
        Protocol::Http { .. } => {
            Outcome::Fail(Failure::rejected(400, "this stage does not speak HTTP"))
        }
    }
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}

/// The second stage: decides whether the forwarded number is prime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Compute {
    /// Which primality test to run.
    pub algorithm: Algorithm,
}

impl Work for Compute {
    fn work(&mut self, job: &mut Job<'_>) -> Outcome {
        let Some(n) = job
            .frame(0)
            .and_then(|f| <[u8; 8]>::try_from(f).ok())
            .map(u64::from_le_bytes)
        else {
            return Outcome::Fail(Failure::rejected(400, "compute expects an 8-byte number"));
        };
        let verdict = self.algorithm.is_prime(n, &mut || job.interrupted());
        match verdict {
            None => Outcome::Abandon,
            Some(true) => Outcome::respond(RAW_PRIME),
            Some(false) => Outcome::respond(RAW_NOT_PRIME),
        }
    }
}
