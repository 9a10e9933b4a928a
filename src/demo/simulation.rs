//! The simulation mode: an in-process client that drives a pipeline with many requests
//! in flight, no HTTP involved, and counts the answers.

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

/// Sends one request per number in `range` (the number in decimal) with at most
/// `window` unanswered at a time, and counts answers equal to `yes`.
pub fn run(
    front: &FrontSockets,
    range: RangeInclusive<u64>,
    window: u64,
    yes: &[u8],
) -> Result<Tally, SimulationError> {
    let total = range.end().saturating_sub(*range.start()).saturating_add(1);
    let total = if range.is_empty() { 0 } else { total };
    let mut numbers = range;
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
