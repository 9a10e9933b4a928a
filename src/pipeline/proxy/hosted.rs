//! A proxy run by the thread of its stage's one worker, rather than on a thread of its
//! own: the same broker (the same messages, credit, queue bound, probes, censuses and
//! heartbeats), turned without blocking between the worker's own steps. In one
//! process, a stage of one concurrent worker (the gateway's default) saves a thread
//! hop per job this way: a job from the front end wakes the worker thread, which hands
//! it to itself, instead of waking the proxy thread, which then wakes the worker.
//!
//! The host must [`turn`](HostedProxy::turn) the proxy after anything it sent to it
//! (its READY, its answers stay out of it) and before it reads its own job socket, and
//! must wake when the proxy's socket signals ([`fd`](HostedProxy::fd): libzmq's
//! `ZMQ_FD`, which signals a change, not a level; a turn reads the socket until it is
//! empty) or the sweep is due ([`due`](HostedProxy::due)). Once its worker has left,
//! [`finish`](HostedProxy::finish) runs the proxy as its own thread would until the
//! stop or the end of the drain.
//!
//! The host's own worker ([`hand_to`](HostedProxy::hand_to)) trades with the proxy in
//! memory: the jobs for it wait in a queue the host reads
//! ([`take_local`](HostedProxy::take_local)) before its socket, and its READY is
//! handled at once ([`ready_local`](HostedProxy::ready_local)). Both would otherwise be
//! messages through libzmq's pipes between two sockets of one thread, each first
//! message after a pause a signal on the reader's mailbox (an `eventfd` written, then
//! read, by the same thread). The queue holds what the socket would have: no more
//! than the worker's credit, and jobs the census does not list (waiting, not started).

use super::Proxy;
use crate::base::shutdown::Shutdown;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How many messages one turn reads at most, so that a flood from upstream does not
/// starve the host's own work.
const TURN_BATCH: usize = 1024;

/// The worker on the proxy's own thread: its routing id and the jobs handed to it that
/// it has not taken yet.
pub(super) struct Local {
    /// The worker's routing id, as its READY names it.
    pub(super) id: Vec<u8>,
    /// Jobs handed to it, oldest first: each as its socket would have received it
    /// (the lead frame, then the rest).
    pub(super) jobs: VecDeque<Vec<zmq::Message>>,
}

/// A bound proxy that another thread turns (see the module docs).
pub struct HostedProxy {
    proxy: Proxy,
    /// How often the sweep runs (as the proxy's own loop runs it).
    every: Duration,
    /// When the next sweep is due.
    next_sweep: Instant,
    /// When the next summary line is due, if any.
    next_summary: Option<Instant>,
}

impl HostedProxy {
    /// Takes `proxy` to be turned by the calling thread, stopping with `shutdown`.
    pub fn new(mut proxy: Proxy, shutdown: &Shutdown) -> Self {
        proxy.shutdown = shutdown.clone();
        let every = proxy.sweep_every();
        let now = Instant::now();
        log::info!(
            "proxy: jobs arrive on {}, workers connect to {}; run by its worker's thread",
            proxy.bound.0,
            proxy.bound.1
        );
        HostedProxy {
            next_summary: proxy.config.summary_every.map(|every| now + every),
            proxy,
            every,
            next_sweep: now + every,
        }
    }

    /// Reads and handles what waits on the proxy's socket (at most a batch), without
    /// blocking; runs the sweep when it is due. Says whether more may wait (the batch
    /// was full): the host then turns it again before it sleeps.
    ///
    /// # Errors
    /// The socket failed: the proxy can take no more messages.
    pub fn turn(&mut self) -> crate::base::error::Result<bool> {
        let proxy = &mut self.proxy;
        let mut more = true;
        for _ in 0..TURN_BATCH {
            match proxy
                .spare
                .recv_routed(&proxy.router, &mut proxy.sender, zmq::DONTWAIT)
            {
                Ok((frames, sender_len)) => proxy.on_message(frames, sender_len),
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                    more = false;
                    break;
                }
                Err(e) => return Err(crate::Error::zmq("receiving at a proxy", e)),
            }
        }
        let now = Instant::now();
        if now >= self.next_sweep {
            proxy.sweep(now, self.next_sweep, self.every);
            self.next_sweep = now + self.every;
        }
        if let (Some(at), Some(every)) = (self.next_summary, proxy.config.summary_every) {
            if now >= at {
                proxy.log_summary();
                self.next_summary = Some(now + every);
            }
        }
        Ok(more)
    }

    /// The proxy socket's `ZMQ_FD`, which signals when a message may be waiting.
    pub fn fd(&self) -> Option<RawFd> {
        match self.proxy.router.get_fd() {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::error!("proxy: no descriptor for its socket: {e}");
                None
            }
        }
    }

    /// Hands the jobs for the worker whose routing id is `worker` (the host's own) over
    /// in memory from now on: the host takes them with
    /// [`take_local`](Self::take_local) and reports with
    /// [`ready_local`](Self::ready_local).
    pub fn hand_to(&mut self, worker: Vec<u8>) {
        self.proxy.local = Some(Local {
            id: worker,
            jobs: VecDeque::new(),
        });
    }

    /// The oldest job handed to the host's worker and not taken yet, if any.
    pub fn take_local(&mut self) -> Option<Vec<zmq::Message>> {
        self.proxy.local.as_mut()?.jobs.pop_front()
    }

    /// The host's worker's READY (see [`crate::pipeline::wire::ready_frame`]), handled
    /// at once: `completed` jobs in all, `credit` it may hold, its heartbeat `payload`.
    /// The jobs waiting for it may go to it now. Without [`hand_to`](Self::hand_to),
    /// does nothing and says false: the worker then sends its READY on its socket.
    pub fn ready_local(&mut self, completed: u64, credit: u32, payload: &[u8]) -> bool {
        let proxy = &mut self.proxy;
        let Some(local) = proxy.local.take() else {
            return false;
        };
        let expires = Instant::now() + proxy.config.heartbeat_timeout;
        proxy.on_ready(
            &local.id,
            completed,
            credit.max(1) as usize,
            payload,
            expires,
        );
        proxy.local = Some(local);
        proxy.dispatch_waiting();
        true
    }

    /// Ends the hand-over in memory (the host's worker is leaving): jobs go through
    /// the socket again. Returns the jobs handed over and not taken yet, oldest first.
    pub fn stop_local(&mut self) -> VecDeque<Vec<zmq::Message>> {
        self.proxy
            .local
            .take()
            .map(|local| local.jobs)
            .unwrap_or_default()
    }

    /// When the next sweep is due: the host wakes by then.
    pub fn due(&self) -> Instant {
        self.next_sweep
    }

    /// Runs the proxy on the calling thread until the stop, or the end of the drain,
    /// as its own thread would (see [`Proxy::run`]), after its host's worker left.
    pub fn finish(mut self, shutdown: &Shutdown) {
        self.proxy.local = None;
        if let Err(e) = self.proxy.run(shutdown) {
            log::error!("proxy stopped: {e}");
        }
    }
}

impl Proxy {
    /// How often the proxy sweeps: a quarter of the heartbeat timeout, at least 10 ms.
    pub(super) fn sweep_every(&self) -> Duration {
        (self.config.heartbeat_timeout / 4).max(Duration::from_millis(10))
    }
}
