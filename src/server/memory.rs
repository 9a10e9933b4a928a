//! Gives memory back to the system after many connections have closed.
//!
//! Each client connection costs libzmq and the front end some heap (the stream engine's
//! buffers, the connection's decoder and maps). When thousands of connections close, the
//! allocator keeps the freed pages: without this, RSS after a burst of 10,000
//! connections stays at its peak and grows over repeated bursts. Two things give them
//! back:
//!
//! - Once enough connections have closed, and at most once per [`TRIM_EVERY`], the
//!   front end asks the C allocator (glibc's `malloc_trim`, which libzmq's memory and
//!   ours both come from) to return its free pages.
//! - [`tune_allocator`], called by the daemons at start, settles three glibc settings
//!   so that `malloc_trim` and `free` can do so. `malloc_trim` gives back the free pages
//!   inside every arena but the free space at the end (the top) only of the main
//!   arena; libzmq's I/O thread allocates in an arena of its own, whose top shrinks only
//!   inside `free`, when the freed chunk merged with its free neighbours reaches 64 KiB
//!   and the top is above the trim threshold. Left alone, glibc raises that threshold
//!   (up to 64 MiB) each time a large mmapped block is freed, as the front end's maps
//!   are after a burst, and small frees go to the fast bins, which merge into the top
//!   only inside `malloc_trim`: so now and then (4 bursts in 20, measured) a burst left
//!   1.5 to 6 MB in the I/O thread's arena until the next burst. Fixed thresholds and no
//!   fast bins let the frees of a burst's last connections shrink that top themselves
//!   (no such burst in 40 since).
//!
//! Elsewhere (not glibc) both do nothing.

use std::ffi::OsString;
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

/// Below this size a chunk freed in an arena's top is kept; above it, given back. Fixed
/// at glibc's default, which it would otherwise raise with every large block freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 128 * 1024;
/// Blocks this large and larger are mapped on their own and unmapped when freed (the
/// maps and queues a burst of connections grows): glibc's default, kept fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Settles the C allocator for a server that holds and drops thousands of connections
/// (glibc only; elsewhere it does nothing). Call it once at the start of the process,
/// before other threads start; the daemons do.
///
/// It fixes the trim and mmap thresholds at glibc's defaults (128 KiB), which glibc
/// would otherwise raise as large blocks are freed, and turns off the fast bins, so
/// that a small free (past glibc's per-thread cache, which still serves most small
/// blocks) merges with its free neighbours at once: then the frees of a burst of
/// closing connections give back the end of every arena, not only the main one (see
/// the module's documentation). On `prime_serverd`'s cheap requests the cost in
/// throughput was within the noise of interleaved runs.
///
/// An operator who tunes glibc's allocator through the environment (`GLIBC_TUNABLES`
/// with a `glibc.malloc.` setting, or a `MALLOC_*_` variable) keeps that tuning: this
/// then changes nothing.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if tuned_by_environment(std::env::vars_os()) {
            log::debug!("the C allocator is tuned by the environment; leaving it as it is");
        } else {
            set_allocator_options();
        }
    });
}

/// Whether these environment variables tune glibc's allocator themselves.
fn tuned_by_environment(vars: impl IntoIterator<Item = (OsString, OsString)>) -> bool {
    vars.into_iter().any(|(name, value)| {
        let name = name.to_string_lossy();
        (name == "GLIBC_TUNABLES" && value.to_string_lossy().contains("glibc.malloc."))
            || (name.starts_with("MALLOC_") && name.ends_with('_'))
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_allocator_options() {
    let options = [
        ("M_MXFAST", libc::M_MXFAST, 0),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        ("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ];
    for (name, option, value) in options {
        // SAFETY: mallopt(3) takes an option number and a value and only changes the
        // allocator's parameters, under its own lock; it is safe to call from any thread.
        if unsafe { libc::mallopt(option, value) } != 1 {
            log::warn!("the C allocator refused {name} = {value}; memory may be given back later");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_allocator_options() {}

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
    fn the_environment_s_allocator_tuning_is_kept() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
            pairs.iter().map(|(n, v)| (n.into(), v.into())).collect()
        };
        assert!(!tuned_by_environment(vars(&[
            ("PATH", "/bin"),
            ("RUST_LOG", "warn")
        ])));
        assert!(!tuned_by_environment(vars(&[(
            "GLIBC_TUNABLES",
            "glibc.rtld.nns=2"
        )])));
        assert!(tuned_by_environment(vars(&[(
            "GLIBC_TUNABLES",
            "glibc.rtld.nns=2:glibc.malloc.arena_max=1"
        )])));
        assert!(tuned_by_environment(vars(&[("MALLOC_ARENA_MAX_", "2")])));
        assert!(!tuned_by_environment(vars(&[("MALLOC_CONF", "x")])));
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
