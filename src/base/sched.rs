//! Wake-ups that do not preempt while the pipeline is busy: a front end with many
//! requests in flight switches every thread of its process to Linux's `SCHED_BATCH`
//! (sched(7)), and back to `SCHED_OTHER` once the load is gone.
//!
//! Why: a message crosses several threads (libzmq's I/O thread, the front end, a proxy
//! and a worker per stage), each woken by the one before. Under `SCHED_OTHER` the woken
//! thread usually preempts its waker at once when no core is idle, handles the one
//! message it finds, hands it on (preempting in turn) and blocks again: each message
//! then travels alone, paying a wake-up and a context switch at every hop, which costs
//! so much CPU that the next message finds every thread asleep again. A `SCHED_BATCH`
//! thread woken on a busy core waits until that core's thread blocks (or its time slice
//! ends) instead, so the waker finishes its turn and the woken thread finds several
//! messages: the same work in a fraction of the wake-ups. A thread woken while a core is
//! idle runs there at once under either policy.
//!
//! The price is latency when the cores are busy with other work: a woken
//! `SCHED_BATCH` thread does not preempt a busy loop of another process either, and
//! waits for that loop's time slice to end (milliseconds). So the process switches only
//! while the pipeline holds many requests ([`Batching::ABOVE`]), when a request waits
//! behind others anyway, and switches back when a whole [`Batching::QUIET`] has passed
//! with fewer than [`Batching::BELOW`] in flight: a lone request is served as before.
//! Threads keep their nice value and their share of the CPU; only a wake-up's
//! preemption changes. Elsewhere than on Linux this does nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many front ends of this process want batching now: the process's threads are
/// `SCHED_BATCH` while it is above 0.
static WANTED: Mutex<usize> = Mutex::new(0);

/// One front end's view of its load, deciding when the process batches its wake-ups.
#[derive(Debug)]
pub struct Batching {
    /// Whether the front end may switch the process at all.
    enabled: bool,
    /// Whether this front end counts among [`WANTED`].
    on: bool,
    /// The most requests in flight seen since `window` began.
    peak: usize,
    /// When the current quiet window began.
    window: Instant,
}

impl Batching {
    /// Requests in flight from which a front end batches its process's wake-ups.
    pub const ABOVE: usize = 24;
    /// Requests in flight under which, for a whole [`QUIET`](Self::QUIET), it stops.
    pub const BELOW: usize = 8;
    /// How long the load must stay under [`BELOW`](Self::BELOW) before wake-ups
    /// preempt again (so a load that comes in bursts does not switch at every burst).
    pub const QUIET: Duration = Duration::from_millis(50);

    /// A front end's switch, off until its load is high; `enabled: false` never
    /// switches.
    pub fn new(enabled: bool) -> Batching {
        Batching {
            enabled,
            on: false,
            peak: 0,
            window: Instant::now(),
        }
    }

    /// Whether this front end has its process batching now.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Told the requests in flight at a turn of the front end's loop, at `now`.
    /// Costs a comparison or two, and the switch of every thread's policy (a system
    /// call per thread) when it starts or stops batching.
    #[inline]
    pub fn observe(&mut self, in_flight: usize, now: Instant) {
        if !self.enabled {
            return;
        }
        self.peak = self.peak.max(in_flight);
        if !self.on {
            if in_flight >= Self::ABOVE {
                self.on = true;
                self.peak = in_flight;
                self.window = now;
                want(true);
            }
            return;
        }
        if now.saturating_duration_since(self.window) < Self::QUIET {
            return;
        }
        if self.peak < Self::BELOW {
            self.on = false;
            want(false);
        }
        self.peak = in_flight;
        self.window = now;
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        if self.on {
            want(false);
        }
    }
}

/// Counts a front end in or out, switching the process's threads when the count
/// leaves or reaches 0.
fn want(batch: bool) {
    let mut wanted = WANTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = *wanted;
    *wanted = if batch {
        before + 1
    } else {
        before.saturating_sub(1)
    };
    if (before == 0) != (*wanted == 0) {
        let switched = set_process_policy(batch);
        log::debug!(
            "{} threads now {} (requests in flight {} {})",
            switched,
            if batch { "SCHED_BATCH" } else { "SCHED_OTHER" },
            if batch { "reached" } else { "stayed under" },
            if batch {
                Batching::ABOVE
            } else {
                Batching::BELOW
            },
        );
    }
}

/// Sets every thread of the process to `SCHED_BATCH` or `SCHED_OTHER`; returns how many
/// it switched. The list of threads is read twice, for a thread started meanwhile by
/// one not yet switched (a new thread takes its creator's policy).
#[cfg(target_os = "linux")]
fn set_process_policy(batch: bool) -> usize {
    let policy = if batch {
        libc::SCHED_BATCH
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    let mut switched = 0;
    for _ in 0..2 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return switched;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // SAFETY: sched_getscheduler and sched_setscheduler take a thread id and
            // read one live sched_param; a thread that ended meanwhile gives ESRCH.
            unsafe {
                if libc::sched_getscheduler(tid) == policy {
                    continue;
                }
                if libc::sched_setscheduler(tid, policy, &param) == 0 {
                    switched += 1;
                }
            }
        }
    }
    switched
}

#[cfg(not(target_os = "linux"))]
fn set_process_policy(_batch: bool) -> usize {
    0
}
