//! The simulation mode: an in-process client that drives a pipeline with many requests
//! in flight, no HTTP involved, and counts the answers.
//!
//! It asks about the numbers the C++ original's simulation asks about: 2 and the odd
//! numbers of the range ([`Candidates`]); an even number above 2 is no prime and is not
//! sent, so the two programs send the same requests for the same range.

use crate::base::sockets;
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::loopback::{self, Answer, Failure};
use crate::server::FrontSockets;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How long the simulation waits without any answer before giving up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// What a simulation run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests answered with the given `yes` answer.
    pub yes: u64,
    /// Requests answered with anything else.
    pub no: u64,
    /// Requests answered with a failure, with the first few failures.
    pub failed: u64,
    /// Up to ten of the failures, for the report.
    pub first_failures: Vec<Failure>,
}

/// Why a simulation stopped before every request was answered.
#[derive(Debug)]
pub enum SimulationError {
    /// A socket call failed.
    Zmq(zmq::Error),
    /// No answer came for a minute.
    Stalled {
        /// How many answers had arrived.
        answered: u64,
    },
}

impl std::fmt::Display for SimulationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimulationError::Zmq(e) => write!(f, "socket error: {e}"),
            SimulationError::Stalled { answered } => write!(
                f,
                "no answer for {}s after {answered} answers",
                STALL_LIMIT.as_secs()
            ),
        }
    }
}

impl std::error::Error for SimulationError {}

/// The numbers of an inclusive range that may be prime and are worth a request: 2 when
/// the range holds it, then every odd number from 3 (the order the C++ original's
/// simulation sends them in). 1 and the even numbers above 2 are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidates {
    /// Whether 2 is still to come.
    two: bool,
    /// The next odd number, or `None` when they are all given.
    next: Option<u64>,
    /// The last number of the range.
    end: u64,
}

impl Candidates {
    /// The candidates of `range` (an empty range has none).
    pub fn of(range: RangeInclusive<u64>) -> Candidates {
        let (start, end) = (*range.start(), *range.end());
        let first_odd = start.max(3) | 1;
        Candidates {
            two: start <= 2 && 2 <= end,
            next: (start <= end && first_odd <= end).then_some(first_odd),
            end,
        }
    }

    /// How many numbers are still to come.
    pub fn remaining(&self) -> u64 {
        let odd = self.next.map_or(0, |next| (self.end - next) / 2 + 1);
        odd + u64::from(self.two)
    }
}

impl Iterator for Candidates {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.two {
            self.two = false;
            return Some(2);
        }
        let n = self.next?;
        self.next = n.checked_add(2).filter(|&after| after <= self.end);
        Some(n)
    }
}

/// Sends one request per number of `numbers` (the number in decimal) with at most
/// `window` unanswered at a time, and counts answers equal to `yes`.
///
/// # Errors
/// [`SimulationError::Zmq`] when a socket call fails; [`SimulationError::Stalled`] when
/// no answer comes for a minute.
pub fn run(
    front: &FrontSockets,
    mut numbers: Candidates,
    window: u64,
    yes: &[u8],
) -> Result<Tally, SimulationError> {
    let total = numbers.remaining();
    let mut tally = Tally::default();
    let (mut sent, mut answered) = (0u64, 0u64);
    let started = Instant::now();
    let mut last_answer = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(1);
    front
        .loopback
        .set_rcvtimeo(100)
        .map_err(SimulationError::Zmq)?;
    // One vector for every answer's frames: no allocation per answer.
    let mut frames = Vec::with_capacity(4);
    while answered < total {
        // The requests sent in one refill arrive together: they share one reading of
        // the clock (their arrival time), not one each.
        let mut envelope = Envelope::new(0, 0, 0, Protocol::Raw);
        while sent - answered < window {
            let Some(n) = numbers.next() else { break };
            envelope.request_id = n;
            send(front, &envelope, n)?;
            sent += 1;
        }
        // Block for the first answer, then take whatever else has arrived.
        match sockets::recv_frames_into(&front.loopback, &mut frames, 0) {
            Ok(()) => {
                answered += u64::from(count(&mut tally, &mut frames, yes));
                while sockets::recv_frames_into(&front.loopback, &mut frames, zmq::DONTWAIT).is_ok()
                {
                    answered += u64::from(count(&mut tally, &mut frames, yes));
                }
                last_answer = Instant::now();
            }
            Err(zmq::Error::EAGAIN) if last_answer.elapsed() > STALL_LIMIT => {
                return Err(SimulationError::Stalled { answered });
            }
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(SimulationError::Zmq(e)),
        }
        if Instant::now() >= next_report {
            let rate = answered as f64 / started.elapsed().as_secs_f64();
            log::info!("{answered}/{total} answered, {rate:.0} requests/s");
            next_report += Duration::from_secs(1);
        }
    }
    Ok(tally)
}

/// Sends `n` as a raw request whose envelope is `envelope`.
fn send(front: &FrontSockets, envelope: &Envelope, n: u64) -> Result<(), SimulationError> {
    let envelope = envelope.encode();
    // The number's digits on the stack: no string allocated per request.
    let mut digits = [0; 20];
    let frames = [crate::pipeline::envelope::lead_frame(
        &envelope,
        crate::http::decimal(n, &mut digits),
    )];
    sockets::send_frames(&front.entry, frames, 0).map_err(SimulationError::Zmq)
}

/// Counts one loopback message (its frames are taken, the vector kept); false for a
/// progress report, which ends no request.
fn count(tally: &mut Tally, frames: &mut Vec<zmq::Message>, yes: &[u8]) -> bool {
    match loopback::decode(frames.drain(..)) {
        Ok((_, Answer::Response(bytes))) if &bytes[..] == yes => tally.yes += 1,
        Ok((_, Answer::Response(_))) => tally.no += 1,
        Ok((_, Answer::Failure(failure))) => {
            tally.failed += 1;
            if tally.first_failures.len() < 10 {
                tally.first_failures.push(failure);
            }
        }
        Ok((_, Answer::Progress { .. })) => return false,
        Ok((_, answer)) => {
            tally.failed += 1;
            log::warn!("an answer the simulation cannot count: {answer:?}");
        }
        Err(e) => {
            tally.failed += 1;
            log::warn!("unreadable answer: {e}");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::Candidates;

    fn all(start: u64, end: u64) -> Vec<u64> {
        Candidates::of(start..=end).collect()
    }

    #[test]
    fn the_candidates_are_2_and_the_odd_numbers_from_3() {
        assert_eq!(all(1, 10), [2, 3, 5, 7, 9]);
        assert_eq!(all(2, 2), [2]);
        assert_eq!(all(4, 9), [5, 7, 9]);
        assert_eq!(all(0, 1), Vec::<u64>::new());
        assert_eq!(all(8, 8), Vec::<u64>::new());
        assert_eq!(all(u64::MAX - 3, u64::MAX), [u64::MAX - 2, u64::MAX]);
    }

    #[test]
    fn the_count_is_known_before_and_while_they_are_given() {
        for (start, end) in [(1, 10), (2, 2), (4, 9), (0, 1), (8, 8), (1, 1_000_000)] {
            let mut numbers = Candidates::of(start..=end);
            let expected = numbers.clone().count() as u64;
            assert_eq!(numbers.remaining(), expected, "{start},{end}");
            numbers.next();
            assert_eq!(
                numbers.remaining(),
                expected.saturating_sub(1),
                "{start},{end}"
            );
        }
        assert_eq!(Candidates::of(1..=1_000_000).remaining(), 500_000);
        assert_eq!(Candidates::of(u64::MAX - 3..=u64::MAX).remaining(), 2);
    }
}
