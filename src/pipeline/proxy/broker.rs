//! The broker's loop: one blocking receive per message on the ROUTER, each message told
//! apart (a job, a worker's READY, BUSY, GOODBYE or RETURN, a peer's PROBE or CENSUS),
//! and a sweep every quarter of the heartbeat timeout.

use super::{show, Proxy, ProxyStats};
use crate::base::error::Result;
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::envelope::lead_envelope;
use crate::pipeline::loopback::{Failure, FailureKind};
use crate::pipeline::wire::{read_ready, BUSY, CENSUS, GOODBYE, PROBE, RETURN, STATUS};
use std::time::{Duration, Instant};

/// How many waiting messages a proxy reads in a row, before a sweep, to hear from every
/// worker whose heartbeat is already queued.
const DRAIN_BATCH: usize = 10_000;
/// How many messages a busy proxy handles between two reads of the clock for its
/// sweeps (a read after each message cost more than the message's own bookkeeping).
const CLOCK_EVERY: u32 = 16;

impl Proxy {
    /// Balances jobs until `shutdown` is triggered, or, once a drain is asked for, until
    /// no job waits and no worker holds one; returns the counters.
    pub fn run(mut self, shutdown: &Shutdown) -> Result<ProxyStats> {
        log::info!(
            "proxy: jobs arrive on {}, workers connect to {}, failures go to {}",
            self.bound.0,
            self.bound.1,
            match &self.config.loopbacks[..] {
                [] => "nowhere (no loopback)".to_string(),
                loopbacks => loopbacks.join(", "),
            }
        );
        self.shutdown = shutdown.clone();
        let sweep_every = self.sweep_every();
        let wait = sweep_every.min(POLL_CAP).as_millis() as i32;
        self.router
            .set_rcvtimeo(wait)
            .map_err(|e| crate::Error::zmq("setting the receive timeout", e))?;
        // What one turn sends to a worker reaches it together: the jobs (and
        // answers) sent are flushed when the queue runs dry, before the wait, and
        // after every CLOCK_EVERY messages of a queue that never does (ZMQ_DEFER_FLUSH,
        // vendor/zeromq-src's PATCHES.md). A worker woken by the first job of a turn
        // would otherwise read it, sleep, and be woken again by the next.
        self.router
            .set_defer_flush(true)
            .map_err(|e| crate::Error::zmq("holding back the router's flushes", e))?;
        let mut next_sweep = Instant::now() + sweep_every;
        let mut next_summary = self
            .config
            .summary_every
            .map(|every| Instant::now() + every);
        let mut unclocked = 0;
        while !self.should_stop(shutdown) {
            // Asked without waiting first: a dry queue flushes the turn's sends
            // before the blocking receive (which wakes on the next message).
            let received =
                match self
                    .spare
                    .recv_routed(&self.router, &mut self.sender, zmq::DONTWAIT)
                {
                    Err(zmq::Error::EAGAIN) => {
                        self.flush_deferred();
                        self.spare.recv_routed(&self.router, &mut self.sender, 0)
                    }
                    received => received,
                };
            match received {
                Ok((frames, sender_len)) => {
                    self.on_message(frames, sender_len);
                    unclocked += 1;
                    if unclocked < CLOCK_EVERY {
                        continue;
                    }
                }
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(crate::Error::zmq("receiving at a proxy", e)),
            }
            unclocked = 0;
            self.flush_deferred();
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now, next_sweep, sweep_every);
                next_sweep = now + sweep_every;
            }
            if let (Some(at), Some(every)) = (next_summary, self.config.summary_every) {
                if now >= at {
                    self.log_summary();
                    next_summary = Some(now + every);
                }
            }
        }
        if let Err(e) = self.router.set_defer_flush(false) {
            log::debug!("proxy: flushing on the way out: {e}");
        }
        for job in std::mem::take(&mut self.waiting) {
            let detail = "the proxy is shutting down";
            self.answer_job(
                job.frames(),
                Failure::new(FailureKind::ShuttingDown, detail),
            );
        }
        log::debug!("proxy {} stopping: {}", self.config.upstream, self.stats);
        Ok(self.stats)
    }

    /// Makes what this turn sent visible to the workers and peers (see `run`).
    fn flush_deferred(&self) {
        if let Err(e) = self.router.flush_deferred() {
            log::debug!("proxy: flushing: {e}");
        }
    }

    /// The periodic sweep, due at `due` and run at `now` (every `every`): reads what
    /// waits, excuses a pause of the proxy itself, forgets silent workers and expired
    /// jobs, refuses jobs while the stage has no worker, publishes the figures.
    pub(super) fn sweep(&mut self, now: Instant, due: Instant, every: Duration) {
        // Read what is already waiting before judging any worker silent: after
        // this thread was descheduled, the heartbeats that came meanwhile are
        // queued here, not lost.
        for _ in 0..DRAIN_BATCH {
            match self
                .spare
                .recv_routed(&self.router, &mut self.sender, zmq::DONTWAIT)
            {
                Ok((frames, sender_len)) => self.on_message(frames, sender_len),
                Err(_) => break,
            }
        }
        // Late by more than a sweep: the proxy itself did not run (SIGSTOP, a
        // stalled machine). Its workers' heartbeats wait unread in its queue, so
        // the pause does not count against them.
        let paused = now - due;
        if paused > every {
            if paused >= self.config.heartbeat_timeout {
                log::warn!(
                    "proxy {}: did not run for {:.1}s; not counting that against the workers",
                    self.bound.0,
                    paused.as_secs_f64()
                );
            }
            self.excuse(paused);
        }
        self.evict_silent_workers();
        self.forget_expired_jobs();
        self.refuse_while_workerless(now);
        self.publish_metrics();
    }

    /// Whether the loop ends: a stop, or a drain with nothing left to hand out.
    pub(super) fn should_stop(&self, shutdown: &Shutdown) -> bool {
        shutdown.is_triggered() || (shutdown.is_draining() && self.is_empty())
    }

    /// Whether no job waits here and no worker holds one.
    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.workers.values().all(|w| w.in_flight.is_empty())
    }

    /// One message from the ROUTER, whose sender's id is the first `sender_len` bytes
    /// of `self.sender`: a job, or a worker's or a peer's message.
    pub(super) fn on_message(&mut self, mut frames: Vec<zmq::Message>, sender_len: usize) {
        // The first frame's bytes are looked up once (each look-up asks libzmq): a
        // job's envelope, read here for its dispatch too, or a worker's READY.
        let (envelope, ready) = match frames.first() {
            Some(first) => {
                let first: &[u8] = first;
                (lead_envelope(first).copied(), read_ready(first))
            }
            None => (None, None),
        };
        if let Some(envelope) = envelope {
            // A job: who sent it does not matter (answers go through the loopback).
            self.on_job(frames, envelope);
        } else {
            // A worker's or a peer's message: its sender's id goes in front, where
            // the handlers below read it.
            let sender = zmq::Message::from(&self.sender[..sender_len.min(zmq::ROUTING_ID_MAX)]);
            frames.insert(0, sender);
            if frames.len() > 3 && &frames[1][..] == RETURN && lead_envelope(&frames[3]).is_some() {
                // [peer, RETURN, worker id, lead frame, frames...]
                let job = frames.split_off(3);
                self.on_returned(&frames[2], job);
            } else {
                self.on_worker_message(&frames, ready);
            }
            self.spare.give_back(frames);
            self.dispatch_waiting();
        }
    }

    /// A message from a worker or a peer: `ready` is its second frame read as a READY.
    fn on_worker_message(&mut self, frames: &[zmq::Message], ready: Option<(u64, u32)>) {
        let expires = Instant::now() + self.config.heartbeat_timeout;
        match frames {
            [id, _, rest @ ..] if ready.is_some() => {
                let (completed, credit) = ready.unwrap_or_default();
                let payload = rest.first().map(|m| &m[..]).unwrap_or(&[]);
                self.on_ready(id, completed, credit.max(1) as usize, payload, expires);
            }
            [id, tag] if &tag[..] == GOODBYE => {
                log::info!("proxy {}: worker {} left", self.config.downstream, show(id));
                if let Some(slot) = self.workers.slot_of(id) {
                    self.workers.remove(slot);
                    self.idle.retain(|&idle| idle != slot);
                }
                self.note_if_workerless();
            }
            [peer, tag] if &tag[..] == PROBE => {
                let status = self.status().to_json().to_string();
                let frames = [
                    zmq::Message::from(&peer[..]),
                    zmq::Message::from(STATUS),
                    zmq::Message::from(status.into_bytes()),
                ];
                if let Err(e) = sockets::send_frames(&self.router, frames, zmq::DONTWAIT) {
                    log::debug!("proxy: status not sent: {e}");
                }
            }
            [peer, tag, census] if &tag[..] == CENSUS => self.answer_census(peer, census),
            [_, tag, ids @ ..] if &tag[..] == BUSY => {
                for id in ids {
                    if let Some(record) = self.workers.record_of(id) {
                        record.expires = expires;
                    }
                }
            }
            _ => log::warn!(
                "proxy {}: malformed worker message of {} frames",
                self.config.downstream,
                frames.len()
            ),
        }
    }
}
