//! A shared stop flag: every loop in the pipeline polls it between bounded waits.
//!
//! Loops never block for longer than [`POLL_CAP`], so setting the flag stops a whole
//! pipeline within a fraction of a second, whether its peers are alive or not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest any loop of ours waits before looking at its [`Shutdown`] again.
pub const POLL_CAP: Duration = Duration::from_millis(100);

/// A cloneable stop flag shared by the threads of one pipeline or daemon.
///
/// ```
/// let shutdown = prime_server::Shutdown::new();
/// let seen_by_thread = shutdown.clone();
/// assert!(!seen_by_thread.is_triggered());
/// shutdown.trigger();
/// assert!(seen_by_thread.is_triggered());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag that is not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder of a clone to stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Triggers this flag when the process receives SIGINT or SIGTERM.
    pub fn on_signals(&self) -> std::io::Result<()> {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, self.flag.clone())?;
        }
        Ok(())
    }

    /// Whether [`trigger`](Self::trigger) was called on any clone.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}
