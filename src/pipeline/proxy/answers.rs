//! What a proxy answers itself: a job it cannot place (a failure through the front end's
//! loopback) and a census call (every job it holds).

use super::Proxy;
use crate::base::sockets;
use crate::pipeline::envelope::{lead_envelope, ENVELOPE_LEN};
use crate::pipeline::loopback::{failure_frames, Failure};
use crate::pipeline::wire::CENSUS;

impl Proxy {
    /// Answers a census call: every job waiting here or held by a worker, to the peer
    /// that asked (the front end, or a pool that relays it).
    pub(super) fn answer_census(&self, peer: &[u8], census: &[u8]) {
        let waiting = self.waiting.iter().map(|job| &job.frames()[0][..]);
        let held = self
            .workers
            .values()
            .flat_map(|w| w.in_flight.iter().map(|e| &e[..]));
        let list = crate::pipeline::census::held_list(
            waiting
                .chain(held)
                .filter_map(crate::pipeline::census::held_by),
        );
        log::info!(
            "proxy {}: census: {} jobs waiting, {} held by workers",
            self.bound.0,
            self.waiting.len(),
            self.workers
                .values()
                .map(|w| w.in_flight.len())
                .sum::<usize>()
        );
        let frames = [
            zmq::Message::from(peer),
            zmq::Message::from(CENSUS),
            zmq::Message::from(census),
            zmq::Message::from(list),
        ];
        if let Err(e) = sockets::send_frames(&self.router, frames, zmq::DONTWAIT) {
            log::debug!("proxy: census answer not sent: {e}");
        }
    }

    /// Answers a job (its frames, lead frame first) with `failure`.
    pub(super) fn answer_job(&self, frames: &[zmq::Message], failure: Failure) {
        match frames.first().and_then(|lead| lead_envelope(lead)) {
            Some(envelope) => self.answer(envelope, failure),
            None => log::warn!("proxy: a job without an envelope was dropped: {failure}"),
        }
    }

    /// Answers the job whose envelope this is with `failure`, through the loopback of the
    /// front end the envelope names.
    pub(super) fn answer(&self, envelope: &[u8; ENVELOPE_LEN], failure: Failure) {
        if self.loopback.is_empty() {
            log::warn!("proxy: no loopback to answer with: {failure}");
            return;
        }
        let frames = failure_frames(envelope, &failure);
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::warn!("proxy: could not answer through the loopback: {e}");
        }
    }
}
