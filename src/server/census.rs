//! The front end's side of a census (see [`crate::pipeline::census`]): when a proxy is lost, the
//! requests nobody holds any more are answered 503 at once, instead of 504 at their
//! deadline.
//!
//! A census starts when the front end's connection to the first proxy breaks, or when a
//! worker pool reports that it lost its proxy (its connection broke, or went silent past
//! the ZMTP heartbeat timeout). Unanswered probes do not start one: a proxy far behind
//! its queue answers late but is not lost. It covers the requests sent
//! before it started, and takes two calls of at least [`CALL_WINDOW`] each: every worker
//! pool answers each call with what its workers run and what its proxy holds (a pool
//! that has to wait for its proxy says so at once, and the call stays open until its
//! answer comes, up to [`CALL_BOUND`]); the first proxy, unless it is the one lost,
//! answers the front end itself, and the call waits for it too. A request reported by
//! nobody in the first call is a suspect; a suspect reported by nobody in the second
//! call either is lost: the front end answers it 503 and publishes an interrupt, so
//! that if it turns up (a proxy that was only paused) it is not run. The second call is
//! what makes this safe against messages in transit at the first one: a job forwarded
//! to the next stage, an answer on its way, a job handed back to a proxy, torn reads.
//! Requests that keep running are reported by their pool at every call, however long
//! they run, and are left to finish.
//!
//! When the front end routes by task (see `FrontSockets::route_tasks`), the proxy of
//! every routed stage is asked through its entry too, like the first proxy, and each
//! one asked is waited for while the entry's connection to it is up; the front end
//! watches each routed entry's connection as it does the main one's, so a routed proxy
//! that dies starts a census and is not waited for (one that hangs with its connection
//! up is waited for until [`CALL_BOUND`]).
//!
//! Asynchronous job runs are counted the same way; a lost one is handed to the job
//! service as a transient failure, which runs it again.

use super::output::AnswerBytes;
use super::Server;
use crate::base::error::Result;
use crate::base::fast_hash::FastSet;
use crate::base::sockets;
use crate::pipeline::census::{self, LossMonitor, Message};
use crate::pipeline::envelope::InterruptReason;
use crate::pipeline::loopback::render_failure;
use crate::pipeline::loopback::{Failure, FailureKind};
use crate::pipeline::wire::CENSUS;
use std::time::{Duration, Instant};

/// How long each call of a census waits for answers. A live proxy answers after the
/// messages queued before the call, so this is also how far behind its queue a proxy
/// may fall before its jobs are taken for lost.
const CALL_WINDOW: Duration = Duration::from_millis(700);
/// The longest a call stays open waiting for the answers announced (a pool waits up to
/// 5 s for its proxy).
const CALL_BOUND: Duration = Duration::from_secs(6);

/// What the front end knows of censuses.
pub(super) struct Censuses {
    /// Says when the entry socket's connection to the first proxy breaks.
    monitor: LossMonitor,
    /// The number of the last call made.
    last_number: u64,
    /// The census under way.
    current: Option<Census>,
    /// A loss was reported during the census under way: take another one after it.
    again: bool,
    /// When the entry's connection to the first proxy last broke.
    entry_lost_at: Option<Instant>,
    /// One per routed entry (see `FrontSockets::routed`), in the same order: says when
    /// its connection to the stage's proxy is made or breaks.
    routed_monitors: Vec<LossMonitor>,
    /// Whether each routed entry's connection is down (broken and not made again): a
    /// census does not wait for a proxy it cannot reach.
    routed_down: Vec<bool>,
}

/// One census under way.
struct Census {
    /// The call now open.
    number: u64,
    /// Requests with a lower id were sent before the census began: it is about them.
    before: u64,
    /// When the open call may close, if every answer announced has come.
    closes: Instant,
    /// When it closes whatever has come.
    bound: Instant,
    /// Requests reported in the open call.
    heard: FastSet<u64>,
    /// Pools that announced an answer to the open call.
    announced: FastSet<String>,
    /// Pools that answered it.
    answered: FastSet<String>,
    /// Whether the first proxy, believed alive, has yet to answer.
    awaiting_first_proxy: bool,
    /// The routed entries (see `FrontSockets::routed`) whose proxies were asked and
    /// have yet to answer.
    awaiting_routed: FastSet<usize>,
    /// After the first call: the requests nobody reported in it.
    suspects: Option<FastSet<u64>>,
}

impl Censuses {
    /// Watches the entry socket's connection to the first proxy, and each routed
    /// entry's connection to its stage's proxy.
    pub(super) fn new(
        ctx: &zmq::Context,
        entry: &zmq::Socket,
        routed: &[&zmq::Socket],
    ) -> Result<Censuses> {
        let routed_monitors = routed
            .iter()
            .map(|socket| LossMonitor::attach(ctx, socket, "front-end-routed"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Censuses {
            monitor: LossMonitor::attach(ctx, entry, "front-end")?,
            last_number: 0,
            current: None,
            again: false,
            entry_lost_at: None,
            routed_down: vec![false; routed_monitors.len()],
            routed_monitors,
        })
    }
}

impl Server {
    /// Takes a census message off the loopback; false if `frames` is not one.
    pub(super) fn on_census_message(&mut self, frames: &[zmq::Message]) -> bool {
        match census::decode(frames) {
            None => false,
            Some(Err(())) => {
                log::warn!("dropped a malformed census message");
                true
            }
            Some(Ok(Message::Lost(who))) => {
                self.start_census(&format!("lost {who}"));
                true
            }
            Some(Ok(Message::Heard { census, pool })) => {
                if let Some(current) = self.current_call(census) {
                    current.announced.insert(pool);
                }
                true
            }
            Some(Ok(Message::Counted { census, held, pool })) => {
                let nonce = self.nonce;
                if let Some(current) = self.current_call(census) {
                    let ours = held.into_iter().filter(|(n, _)| *n == nonce);
                    current.heard.extend(ours.map(|(_, request)| request));
                    current.answered.insert(pool);
                }
                true
            }
        }
    }

    /// The open call, if `census` names it.
    fn current_call(&mut self, census: (u64, u64)) -> Option<&mut Census> {
        let nonce = self.nonce;
        self.census
            .current
            .as_mut()
            .filter(|c| census == (nonce, c.number))
    }

    /// Takes a proxy's census answer off an entry socket: the main entry (`routed`
    /// `None`, the first proxy) or routed entry `routed`; false if `frames` is not one.
    pub(super) fn on_proxy_census(
        &mut self,
        routed: Option<usize>,
        frames: &[zmq::Message],
    ) -> bool {
        let Some((census, held)) = census::read_proxy_answer(frames) else {
            return false;
        };
        let nonce = self.nonce;
        if let Some(current) = self.current_call(census) {
            let ours = held.into_iter().filter(|(n, _)| *n == nonce);
            current.heard.extend(ours.map(|(_, request)| request));
            match routed {
                None => current.awaiting_first_proxy = false,
                Some(index) => {
                    current.awaiting_routed.remove(&index);
                }
            }
        }
        true
    }

    /// Notices a lost first proxy, and closes the open call of a census when its time
    /// has come. Called by the sweep.
    pub(super) fn census_sweep(&mut self, now: Instant) {
        for (connected, endpoint) in self.census.monitor.events() {
            if connected {
                continue;
            }
            self.census.entry_lost_at = Some(now);
            if let Some(current) = &mut self.census.current {
                current.awaiting_first_proxy = false;
            }
            self.start_census(&format!(
                "lost the connection to the first proxy {endpoint}"
            ));
        }
        self.routed_census_sweep();
        let closing = self.census.current.as_ref().is_some_and(|c| {
            let all_in = !c.awaiting_first_proxy
                && c.awaiting_routed.is_empty()
                && c.announced.is_subset(&c.answered);
            (c.closes <= now && all_in) || c.bound <= now
        });
        if closing {
            self.close_call();
        }
    }

    /// Follows the routed entries' connections: a broken one starts a census, and is
    /// no longer waited for by the census under way.
    fn routed_census_sweep(&mut self) {
        let mut lost = Vec::new();
        for (index, monitor) in self.census.routed_monitors.iter().enumerate() {
            for (connected, endpoint) in monitor.events() {
                self.census.routed_down[index] = !connected;
                if !connected {
                    lost.push((index, endpoint));
                }
            }
        }
        for (index, endpoint) in lost {
            if let Some(current) = &mut self.census.current {
                current.awaiting_routed.remove(&index);
            }
            self.start_census(&format!(
                "lost the connection to the proxy of a routed stage {endpoint}"
            ));
        }
    }

    /// Starts a census, unless one is under way (then another follows it).
    fn start_census(&mut self, why: &str) {
        if self.census.current.is_some() {
            log::info!("{why}; a census follows the one under way");
            self.census.again = true;
            return;
        }
        log::warn!(
            "{why}; taking a census of the {} requests in the pipeline",
            self.requests.len() + self.job_runs().len()
        );
        let before = self.next_request;
        self.open_call(before, None);
    }

    /// Asks every pool (through the interrupt channel), the first proxy (through the
    /// entry) and every routed stage's proxy (through its entry) which requests they
    /// hold.
    fn open_call(&mut self, before: u64, suspects: Option<FastSet<u64>>) {
        self.census.last_number += 1;
        let number = self.census.last_number;
        let now = Instant::now();
        // The first proxy is waited for if it answered a probe since the entry's
        // connection last broke: then it is alive, however far behind.
        let first_proxy_alive = self.upstream.fresh(now).is_some()
            && self
                .upstream
                .last_seen
                .is_some_and(|seen| self.census.entry_lost_at.is_none_or(|lost| seen > lost));
        self.census.current = Some(Census {
            number,
            before,
            closes: now + CALL_WINDOW,
            bound: now + CALL_BOUND,
            heard: FastSet::default(),
            announced: FastSet::default(),
            answered: FastSet::default(),
            awaiting_first_proxy: false,
            awaiting_routed: FastSet::default(),
            suspects,
        });
        let call = census::call(self.nonce, number);
        if let Err(e) = self.front.interrupt.send(&call[..], zmq::DONTWAIT) {
            log::warn!("census {number}: call not published: {e}");
        }
        let id = census::census_id(self.nonce, number);
        let ask = [zmq::Message::from(CENSUS), zmq::Message::from(&id[..])];
        match sockets::send_frames(&self.front.entry, ask, zmq::DONTWAIT) {
            Ok(()) => {
                if let Some(current) = &mut self.census.current {
                    current.awaiting_first_proxy = first_proxy_alive;
                }
            }
            Err(e) => log::debug!("census {number}: not passed to the first proxy: {e}"),
        }
        // A routed stage's proxy holds the jobs the front end sent it straight, queued:
        // it is asked too, and waited for (up to the call's bound) while its connection
        // is up.
        for (index, routed) in self.front.routed.iter().enumerate() {
            let ask = [zmq::Message::from(CENSUS), zmq::Message::from(&id[..])];
            match sockets::send_frames(&routed.socket, ask, zmq::DONTWAIT) {
                Ok(()) if self.census.routed_down[index] => {}
                Ok(()) => {
                    if let Some(current) = &mut self.census.current {
                        current.awaiting_routed.insert(index);
                    }
                }
                Err(e) => log::debug!(
                    "census {number}: not passed to the proxy of stage {:?}: {e}",
                    routed.stage
                ),
            }
        }
    }

    /// The requests the census is about that are still unanswered: (request id, job
    /// number for a job's run).
    fn census_pending(&self, before: u64) -> Vec<(u64, Option<u64>)> {
        let requests = self.requests.keys().map(|&id| (id, None));
        let runs = self
            .job_runs()
            .into_iter()
            .map(|(id, number)| (id, Some(number)));
        requests
            .chain(runs)
            .filter(|(id, _)| *id < before)
            .collect()
    }

    /// Closes the open call: the first one names suspects and opens the second; the
    /// second answers the suspects nobody reported 503.
    fn close_call(&mut self) {
        let Some(census) = self.census.current.take() else {
            return;
        };
        let unreported: Vec<(u64, Option<u64>)> = self
            .census_pending(census.before)
            .into_iter()
            .filter(|(id, _)| !census.heard.contains(id))
            .filter(|(id, _)| census.suspects.as_ref().is_none_or(|s| s.contains(id)))
            .collect();
        match census.suspects {
            None if !unreported.is_empty() => {
                log::info!(
                    "census {}: {} requests unaccounted for; asking again",
                    census.number,
                    unreported.len()
                );
                let suspects = unreported.iter().map(|(id, _)| *id).collect();
                self.open_call(census.before, Some(suspects));
                return;
            }
            None => log::info!("census {}: every request is accounted for", census.number),
            Some(_) => self.answer_lost(census.number, &unreported),
        }
        if std::mem::take(&mut self.census.again) {
            self.start_census("a proxy was lost during the last census");
        }
    }

    /// Answers 503 the requests a lost proxy took with it, and interrupts them.
    fn answer_lost(&mut self, number: u64, lost: &[(u64, Option<u64>)]) {
        if lost.is_empty() {
            log::info!("census {number}: every request is accounted for");
            return;
        }
        log::warn!(
            "census {number}: {} requests were lost with a proxy; answering them 503",
            lost.len()
        );
        let failure = Failure::new(FailureKind::ProxyLost, "the stage's proxy was lost");
        for &(request_id, job) in lost {
            self.publish(self.nonce, request_id, InterruptReason::ProxyLost);
            if let Some(number) = job {
                log::info!("job number {number}: run {request_id} lost with a proxy; retried");
                self.fail_job_run(number, failure.clone());
                continue;
            }
            let Some(in_flight) = self.requests.remove(&request_id) else {
                continue;
            };
            log::info!("request {request_id}: lost with a stage's proxy; 503");
            let bytes = render_failure(in_flight.protocol, &failure, true);
            self.fill(in_flight.connection, request_id, AnswerBytes::Owned(bytes));
        }
    }
}
