//! Rate-limited warnings: a burst of the same event (refused submits, failed commits,
//! a pipeline that takes no more requests) writes a bounded number of lines, then one
//! summary saying how many more were suppressed.
//!
//! A [`LogLimit`] lets `burst` lines through per window of `every`; the lines past it
//! are counted, and the first call once the window has ended (or [`LogLimit::flush`],
//! which an owner calls from its timers, at [`LogLimit::summary_due`]) writes
//! `WHAT: N more suppressed in the last S s` at warn level.

use std::time::{Duration, Instant};

/// Lines per window that go through by default.
pub const BURST: u32 = 5;
/// The window's length by default.
pub const EVERY: Duration = Duration::from_secs(10);

/// The limit of one kind of warning (see the module's documentation).
#[derive(Debug)]
pub struct LogLimit {
    /// What the lines are about, for the summary (e.g. `jobs: submits refused`).
    what: &'static str,
    burst: u32,
    every: Duration,
    /// When the window under way began, if one is.
    window: Option<Instant>,
    /// Lines written in this window.
    written: u32,
    /// Lines held back in this window.
    suppressed: u64,
}

impl LogLimit {
    /// [`BURST`] lines every [`EVERY`] about `what`.
    pub fn new(what: &'static str) -> Self {
        Self::with(what, BURST, EVERY)
    }

    /// `burst` lines every `every` about `what`.
    pub fn with(what: &'static str, burst: u32, every: Duration) -> Self {
        LogLimit {
            what,
            burst,
            every,
            window: None,
            written: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written now; if not, it is counted for the summary.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.flush(now);
        let start = *self.window.get_or_insert(now);
        if now.duration_since(start) >= self.every {
            self.window = Some(now);
            self.written = 0;
        }
        if self.written < self.burst {
            self.written += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// When the summary of suppressed lines is due, if any were.
    pub fn summary_due(&self) -> Option<Instant> {
        match (self.window, self.suppressed) {
            (Some(start), 1..) => Some(start + self.every),
            _ => None,
        }
    }

    /// Writes the summary if its window has ended with lines suppressed, and closes
    /// the window.
    pub fn flush(&mut self, now: Instant) {
        let Some(due) = self.summary_due() else {
            return;
        };
        if now < due {
            return;
        }
        log::warn!(
            "{}: {} more suppressed in the last {} s",
            self.what,
            self.suppressed,
            self.every.as_secs_f64()
        );
        self.suppressed = 0;
        self.written = 0;
        self.window = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_lets_through_the_limit_and_counts_the_rest() {
        let mut limit = LogLimit::with("things", 3, Duration::from_secs(3600));
        let allowed = (0..10).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 3);
        assert_eq!(limit.suppressed, 7);
        let due = limit.summary_due().expect("a summary is due");
        // Before the window ends nothing changes; after it, the count starts over.
        limit.flush(due - Duration::from_secs(1));
        assert_eq!(limit.suppressed, 7);
        limit.flush(due);
        assert_eq!(limit.suppressed, 0);
        assert_eq!(limit.summary_due(), None);
        assert!(limit.allow());
    }
}
