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
    /// Connections closed since the last trim.
    closed: usize,
    /// When the last trim was.
    last: Instant,
    /// A burst of closes is under way: trim again each [`TRIM_EVERY`] while any
    /// connection closes, however few, and once more after the first [`TRIM_EVERY`]
    /// without a close, so the last closes of a burst (which come after the trims that
    /// began it) are given back too. That last trim matters because libzmq frees a
    /// connection's engine and session on its I/O thread, after the front end has
    /// counted the close.
    following: bool,
}

impl Trimmer {
    pub(crate) fn new() -> Self {
        Trimmer {
            closed: 0,
            last: Instant::now(),
            following: false,
        }
    }

    /// Notes that a connection closed.
    pub(crate) fn closed(&mut self) {
        self.closed += 1;
    }

    /// Whether to trim now: the last trim is long enough ago, and either enough
    /// connections closed (`open` is how many remain: a burst's first trim waits while
    /// more stay open than closed) or a burst's trims are under way (see `following`).
    /// If so, the caller shrinks its maps, then calls [`trim`].
    pub(crate) fn due(&mut self, now: Instant, open: usize) -> bool {
        if now.duration_since(self.last) < TRIM_EVERY {
            return false;
        }
        let starts = self.closed >= CLOSED_FOR_TRIM && open <= self.closed;
        if !starts && !self.following {
            return false;
        }
        // A trim with no close since the last one is the burst's last.
        self.following = starts || self.closed > 0;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(trimmer: &mut Trimmer, n: usize) {
        for _ in 0..n {
            trimmer.closed();
        }
    }

    #[test]
    fn a_burst_is_trimmed_until_its_last_close() {
        let mut trimmer = Trimmer::new();
        let start = trimmer.last;
        let at = |s: u64| start + Duration::from_secs(s);
        close(&mut trimmer, CLOSED_FOR_TRIM - 1);
        assert!(!trimmer.due(at(1), 0), "too few closed");
        close(&mut trimmer, 1);
        assert!(
            !trimmer.due(at(1), CLOSED_FOR_TRIM + 1),
            "more open than closed"
        );
        assert!(trimmer.due(at(1), 10));
        close(&mut trimmer, 10);
        assert!(!trimmer.due(at(1) + TRIM_EVERY / 2, 0), "too soon");
        assert!(trimmer.due(at(2), 0), "the burst's last closes");
        assert!(
            trimmer.due(at(3), 0),
            "once more after a second without a close"
        );
        assert!(!trimmer.due(at(4), 0), "the burst has ended");
        close(&mut trimmer, 10);
        assert!(
            !trimmer.due(at(5), 0),
            "the burst has ended: a few closes wait"
        );
    }
}
