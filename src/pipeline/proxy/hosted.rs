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

use super::Proxy;
use crate::base::shutdown::Shutdown;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How many messages one turn reads at most, so that a flood from upstream does not
/// starve the host's own work.
const TURN_BATCH: usize = 1024;

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

    /// When the next sweep is due: the host wakes by then.
    pub fn due(&self) -> Instant {
        self.next_sweep
    }

    /// Runs the proxy on the calling thread until the stop, or the end of the drain,
    /// as its own thread would (see [`Proxy::run`]), after its host's worker left.
    pub fn finish(self, shutdown: &Shutdown) {
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
