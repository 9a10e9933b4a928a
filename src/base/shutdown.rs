//! How a pipeline or daemon stops: first it drains, then it stops.
//!
//! - *Draining* (SIGINT or SIGTERM, or [`Shutdown::drain`]): take no new work, finish
//!   what is held. A front end turns new connections away, a worker says goodbye to its
//!   proxy, a proxy hands out what is queued.
//! - *Stopped* ([`Shutdown::trigger`]): give up now. Long work sees it through
//!   `Job::interrupted`, and every loop ends within [`POLL_CAP`].
//!
//! Loops never block for longer than [`POLL_CAP`], so a stop takes a fraction of a
//! second whether the peers are alive or not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest any loop of ours waits before looking at its [`Shutdown`] again.
pub const POLL_CAP: Duration = Duration::from_millis(100);

/// A cloneable two-level stop flag shared by the threads of one pipeline or daemon.
///
/// ```
/// let shutdown = prime_server::Shutdown::new();
/// let seen_by_thread = shutdown.clone();
/// shutdown.drain();
/// assert!(seen_by_thread.is_draining() && !seen_by_thread.is_triggered());
/// shutdown.trigger();
/// assert!(seen_by_thread.is_triggered());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    draining: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag that is neither draining nor stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder to take no new work and finish what it holds.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Asks every holder to stop now.
    pub fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether a drain (or a stop) was asked for.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.is_triggered()
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Starts a drain when the process receives SIGINT or SIGTERM.
    pub fn on_signals(&self) -> std::io::Result<()> {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, self.draining.clone())?;
        }
        Ok(())
    }

    /// For a daemon's main thread: waits until a drain is asked for and `finished()` says
    /// the work is done, or `drain` has passed since the drain began; then stops.
    pub fn supervise(&self, drain: Duration, mut finished: impl FnMut() -> bool) {
        while !self.is_draining() && !finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let began = Instant::now();
        while !finished() && began.elapsed() < drain && !self.is_triggered() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.trigger();
    }
}
