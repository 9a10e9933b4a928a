//! Several front ends, one pipeline: where the workers and proxies of a deployment reach
//! each of its front ends, and how an answer finds the one that holds its client.
//!
//! Every front end binds a loopback (PULL) and an interrupt publisher (PUB). A worker or
//! proxy is given the list of them ([`FrontEndLink`]s), in the same order everywhere;
//! a front end's place in that list is its number, which it writes in every envelope it
//! makes ([`Envelope::front_end`](crate::pipeline::envelope::Envelope::front_end)). [`Loopbacks`] connects one PUSH socket to each
//! front end's loopback and sends each answer on the socket its envelope names: the
//! answer is addressed, never spread round-robin, and a message costs no frame or
//! allocation more than with one front end. A connecting PUSH keeps its pipe while the
//! front end is away and reconnects by itself, so a front end that restarts at the
//! same endpoints is reached again (answers meant for its previous run carry the old
//! nonce, and it drops them). The interrupts need no addressing: a worker's SUB
//! socket connects to every front end's publisher, and interrupts name their front end
//! by its nonce.
//!
//! Messages without an envelope (a pool's census messages, see
//! [`crate::pipeline::census`]) go to every front end ([`Loopbacks::broadcast`]); each
//! keeps those of its own censuses.

use crate::base::error::{Error, Result};
use crate::base::sockets;
use crate::pipeline::envelope::lead_front_end;

/// The most front ends a deployment can have: the envelope names one in a byte.
pub const MAX_FRONT_ENDS: usize = 256;

/// Where a worker or proxy reaches one front end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontEndLink {
    /// The front end's loopback, where answers go (connected with PUSH).
    pub loopback: String,
    /// The front end's interrupt publisher (connected with SUB).
    pub interrupt: String,
}

impl FrontEndLink {
    /// A link to the front end whose loopback and interrupt publisher these are.
    pub fn new(loopback: impl Into<String>, interrupt: impl Into<String>) -> Self {
        FrontEndLink {
            loopback: loopback.into(),
            interrupt: interrupt.into(),
        }
    }
}

/// Pairs repeated `--loopback` and `--interrupt` values into links, in order.
///
/// ```
/// use prime_server::pipeline::front_ends::links;
/// let pairs = links(&["ipc:///l0".into(), "ipc:///l1".into()], &["ipc:///i0".into(), "ipc:///i1".into()]).unwrap();
/// assert_eq!(pairs[1].loopback, "ipc:///l1");
/// assert!(links(&["ipc:///l0".into()], &[]).is_err());
/// ```
///
/// # Errors
/// [`Error::Config`] when the two lists differ in length or name more than
/// [`MAX_FRONT_ENDS`] front ends.
pub fn links(loopbacks: &[String], interrupts: &[String]) -> Result<Vec<FrontEndLink>> {
    if loopbacks.len() != interrupts.len() {
        return Err(Error::Config(format!(
            "{} loopbacks but {} interrupt publishers: give one of each per front end, in the same order",
            loopbacks.len(),
            interrupts.len()
        )));
    }
    if loopbacks.len() > MAX_FRONT_ENDS {
        return Err(Error::Config(format!(
            "{} front ends: at most {MAX_FRONT_ENDS} can share a pipeline",
            loopbacks.len()
        )));
    }
    Ok(loopbacks
        .iter()
        .zip(interrupts)
        .map(|(loopback, interrupt)| FrontEndLink::new(loopback, interrupt))
        .collect())
}

/// One PUSH socket connected to each front end's loopback, in the deployment's order:
/// an answer goes to the front end its envelope names.
pub struct Loopbacks {
    sockets: Vec<zmq::Socket>,
}

impl Loopbacks {
    /// Connects a socket to each of `endpoints`. Answers are sent `DONTWAIT`, so a full
    /// pipe would drop them silently; their number is bounded by the requests in flight,
    /// so the pipes are not bounded.
    ///
    /// # Errors
    /// When a socket cannot be made or an endpoint is not one, or when there are more
    /// than [`MAX_FRONT_ENDS`].
    pub fn connect<'a>(
        ctx: &zmq::Context,
        endpoints: impl IntoIterator<Item = &'a str>,
    ) -> Result<Loopbacks> {
        let mut sockets = Vec::new();
        for endpoint in endpoints {
            let push = sockets::socket(ctx, zmq::PUSH)?;
            push.set_sndhwm(0)
                .map_err(|e| Error::zmq("lifting the loopback's high-water mark", e))?;
            sockets::connect(&push, endpoint)?;
            sockets.push(push);
        }
        if sockets.len() > MAX_FRONT_ENDS {
            return Err(Error::Config(format!(
                "{} front ends: at most {MAX_FRONT_ENDS} can share a pipeline",
                sockets.len()
            )));
        }
        Ok(Loopbacks { sockets })
    }

    /// How many front ends there are.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether there is no front end at all (answers then have nowhere to go).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Sends a message whose first frame is a lead frame (see
    /// [`crate::pipeline::envelope::lead_frame`]) to the front end its envelope names.
    ///
    /// # Errors
    /// libzmq's error, or `EHOSTUNREACH` when the envelope names a front end this list
    /// does not have (or the first frame has no envelope, with several front ends).
    pub fn send<I>(&self, frames: I, flags: i32) -> zmq::Result<()>
    where
        I: IntoIterator<Item = zmq::Message>,
    {
        // One front end: no need to read the envelope.
        if let [only] = &self.sockets[..] {
            return sockets::send_frames(only, frames, flags);
        }
        let mut frames = frames.into_iter().peekable();
        let Some(first) = frames.peek() else {
            return Ok(());
        };
        let socket = lead_front_end(first)
            .and_then(|front_end| self.sockets.get(usize::from(front_end)))
            .ok_or(zmq::Error::EHOSTUNREACH)?;
        sockets::send_frames(socket, frames, flags)
    }

    /// While `on`, holds back the flush of each message sent (libzmq's
    /// `ZMQ_DEFER_FLUSH`, vendor/zeromq-src/PATCHES.md) until [`Loopbacks::flush`],
    /// which makes them all visible at once: a batch of answers wakes a sleeping front
    /// end once. Off flushes what waits.
    ///
    /// # Errors
    /// libzmq's error for the first socket that refused.
    pub fn defer_flushes(&self, on: bool) -> zmq::Result<()> {
        for socket in &self.sockets {
            socket.set_defer_flush(on)?;
        }
        Ok(())
    }

    /// Makes every message held back (see [`Loopbacks::defer_flushes`]) visible to its
    /// front end.
    ///
    /// # Errors
    /// libzmq's error for the first socket that failed (only when the context ends).
    pub fn flush(&self) -> zmq::Result<()> {
        for socket in &self.sockets {
            socket.flush_deferred()?;
        }
        Ok(())
    }

    /// Sends the same message to every front end (`DONTWAIT`).
    ///
    /// # Errors
    /// The first error libzmq gave; the message still went to the front ends it could
    /// reach.
    pub fn broadcast(&self, frames: &[&[u8]]) -> zmq::Result<()> {
        let mut result = Ok(());
        for socket in &self.sockets {
            let message = frames.iter().map(|frame| zmq::Message::from(*frame));
            if let Err(e) = sockets::send_frames(socket, message, zmq::DONTWAIT) {
                result = result.and(Err(e));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope::{lead_frame, Envelope, Protocol};

    #[test]
    fn an_answer_reaches_the_front_end_its_envelope_names_and_no_other() {
        let ctx = zmq::Context::new();
        let pulls: Vec<zmq::Socket> = (0..3)
            .map(|i| {
                let pull = ctx.socket(zmq::PULL).unwrap();
                pull.bind(&format!("inproc://front-ends-test-{i}")).unwrap();
                pull
            })
            .collect();
        let endpoints: Vec<String> = (0..3)
            .map(|i| format!("inproc://front-ends-test-{i}"))
            .collect();
        let loopbacks = Loopbacks::connect(&ctx, endpoints.iter().map(String::as_str)).unwrap();
        assert_eq!(loopbacks.len(), 3);
        for round in 0..10u64 {
            for front_end in [2u8, 0, 1] {
                let envelope = Envelope::new(round, 0, 9, Protocol::Raw).at_front_end(front_end);
                let frame = lead_frame(&envelope.encode(), b"answer");
                loopbacks.send([frame], 0).unwrap();
            }
        }
        for (index, pull) in pulls.iter().enumerate() {
            for round in 0..10u64 {
                let frame = pull.recv_msg(0).unwrap();
                let (envelope, rest) = Envelope::decode_lead(&frame).unwrap();
                assert_eq!(
                    (envelope.front_end as usize, envelope.request_id),
                    (index, round)
                );
                assert_eq!(rest, b"answer");
            }
            assert!(
                pull.recv_msg(zmq::DONTWAIT).is_err(),
                "front end {index} got more"
            );
        }
        let stranger = Envelope::new(1, 0, 9, Protocol::Raw).at_front_end(3);
        let frame = lead_frame(&stranger.encode(), b"");
        assert_eq!(loopbacks.send([frame], 0), Err(zmq::Error::EHOSTUNREACH));
        loopbacks.broadcast(&[b"K", b"L"]).unwrap();
        for pull in &pulls {
            assert_eq!(&pull.recv_msg(0).unwrap()[..], b"K");
            assert_eq!(&pull.recv_msg(0).unwrap()[..], b"L");
        }
    }
}
