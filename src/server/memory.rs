//! Gives memory back to the system after many connections have closed.
//!
//! Each client connection costs libzmq and the front end some heap (the stream engine's
//! buffers, the connection's decoder and maps). When thousands of connections close, the
//! allocator keeps the freed pages: without this, RSS after a burst of 10,000
//! connections stays at its peak and grows over repeated bursts. Once enough
//! connections have closed, and at most once per [`TRIM_EVERY`], the front end asks the
//! C allocator (glibc's `malloc_trim`, which libzmq's memory and ours both come from) to
//! return its free pages. Elsewhere it does nothing.

use std::time::{Duration, Instant};

/// How many connections must have closed since the last trim to be worth one.
const CLOSED_FOR_TRIM: usize = 1000;
/// The shortest time between trims (a trim walks the whole heap).
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Counts closed connections and trims the heap when enough have.
pub(crate) struct Trimmer {
    closed: usize,
    last: Instant,
}

impl Trimmer {
    pub(crate) fn new() -> Self {
        Trimmer {
            closed: 0,
            last: Instant::now(),
        }
    }

    /// Notes that a connection closed.
    pub(crate) fn closed(&mut self) {
        self.closed += 1;
    }

    /// Whether to trim now: enough connections closed and the last trim is long enough
    /// ago; `open` is how many connections remain (a trim waits while more stay open
    /// than closed). If so, the caller shrinks its maps, then calls [`trim`].
    pub(crate) fn due(&mut self, now: Instant, open: usize) -> bool {
        if self.closed < CLOSED_FOR_TRIM
            || open > self.closed
            || now.duration_since(self.last) < TRIM_EVERY
        {
            return false;
        }
        log::debug!(
            "{} connections closed; returning free heap pages",
            self.closed
        );
        self.closed = 0;
        self.last = now;
        true
    }
}

/// Returns the C allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: malloc_trim(3) takes a byte count and only releases free memory of the
    // allocator's own arenas; it is safe to call at any time from any thread.
    unsafe {
        malloc_trim(0);
    }
}

/// Returns the C allocator's free pages to the system (only glibc's can be asked).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() {}
