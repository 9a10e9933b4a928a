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
//! The price is paid when the cores are busy with other processes' work: a woken
//! `SCHED_BATCH` thread does not preempt them either, and waits at every hop for their
//! time slice to end (milliseconds). A lone request would wait so, and so the process
//! switches only while the pipeline holds many requests ([`Batching::ABOVE`]), when a
//! request waits behind others anyway, and switches back when a whole
//! [`Batching::QUIET`] has passed with fewer than [`Batching::BELOW`] in flight. And
//! throughput can fall several times over when other processes keep the cores busy,
//! so while busy the front end tries each policy in turn ([`Batching::TRIAL`]) and
//! keeps the one under which more requests went into the pipeline for
//! [`Batching::HOLD`], then tries both again. Threads keep their nice value and their
//! share of the CPU; only a wake-up's preemption changes. Elsewhere than on Linux this
//! does nothing.

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
    /// Whether this front end counts among [`WANTED`] (the process batches).
    on: bool,
    /// Whether the load is high: [`ABOVE`](Self::ABOVE) reached, and not yet quiet.
    busy: bool,
    /// The most requests in flight seen since `window` began.
    peak: usize,
    /// When the current quiet window began.
    window: Instant,
    /// Where the busy front end is in its cycle of trials.
    phase: Phase,
    /// When the phase began, and the requests sent into the pipeline by then.
    phase_start: (Instant, u64),
    /// Requests per second in this cycle's trial of batched wake-ups.
    batched_rate: f64,
}

/// A busy front end's cycle: a trial of each policy, then the faster one for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `SCHED_BATCH` for [`Batching::TRIAL`], its rate measured.
    TrialBatched,
    /// `SCHED_OTHER` for [`Batching::TRIAL`], its rate measured.
    TrialPreempting,
    /// The faster of the two for [`Batching::HOLD`].
    Hold,
}

impl Batching {
    /// Requests in flight from which a front end batches its process's wake-ups.
    pub const ABOVE: usize = 24;
    /// Requests in flight under which, for a whole [`QUIET`](Self::QUIET), it stops.
    pub const BELOW: usize = 8;
    /// How long the load must stay under [`BELOW`](Self::BELOW) before wake-ups
    /// preempt again (so a load that comes in bursts does not switch at every burst).
    pub const QUIET: Duration = Duration::from_millis(50);
    /// How long each policy is tried, its requests sent into the pipeline counted.
    pub const TRIAL: Duration = Duration::from_millis(100);
    /// How long the faster policy of a pair of trials is kept before the next pair.
    pub const HOLD: Duration = Duration::from_millis(1000);
    /// Batched wake-ups are kept unless preempting sent more than 1 / `TIE` times as
    /// many requests: they cost less CPU per request (measured: about half), which
    /// the rate of a short trial on a shared machine does not show, while the loss
    /// they are tried against is several times over.
    pub const TIE: f64 = 0.9;

    /// A front end's switch, off until its load is high; `enabled: false` never
    /// switches, nor does a front end whose thread does not run the default policy
    /// (an operator's `chrt` or systemd's `CPUSchedulingPolicy=` is kept).
    pub fn new(enabled: bool) -> Batching {
        let now = Instant::now();
        Batching {
            enabled: enabled && runs_default_policy(),
            on: false,
            busy: false,
            peak: 0,
            window: now,
            phase: Phase::Hold,
            phase_start: (now, 0),
            batched_rate: 0.0,
        }
    }

    /// Whether this front end has its process batching now.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Told the requests in flight and the count of requests sent into the pipeline so
    /// far at a turn of the front end's loop, at `now`. Costs a comparison or two, and
    /// the switch of every thread's policy (a system call per thread) when it flips.
    ///
    /// While busy the front end tries each policy for [`TRIAL`](Self::TRIAL) (batched
    /// first) and keeps the one under which more requests went into the pipeline
    /// (batched on a near tie, see [`TIE`](Self::TIE)) for [`HOLD`](Self::HOLD), then
    /// tries both again: batched wake-ups are faster when
    /// the threads that wake one another share the cores with each other, and far
    /// slower when other processes keep the cores busy (a `SCHED_BATCH` thread does
    /// not preempt them, and waits for their time slices to end at every hop).
    #[inline]
    pub fn observe(&mut self, in_flight: usize, sent: u64, now: Instant) {
        if !self.enabled {
            return;
        }
        self.peak = self.peak.max(in_flight);
        if !self.busy {
            if in_flight >= Self::ABOVE {
                self.busy = true;
                self.peak = in_flight;
                self.window = now;
                self.begin(Phase::TrialBatched, sent, now);
            }
            return;
        }
        if now.saturating_duration_since(self.window) >= Self::QUIET {
            if self.peak < Self::BELOW {
                self.busy = false;
                self.set(false);
                return;
            }
            self.peak = in_flight;
            self.window = now;
        }
        let (since, sent_then) = self.phase_start;
        let took = now.saturating_duration_since(since);
        match self.phase {
            Phase::TrialBatched if took >= Self::TRIAL => {
                self.batched_rate = rate(sent - sent_then, took);
                self.begin(Phase::TrialPreempting, sent, now);
            }
            Phase::TrialPreempting if took >= Self::TRIAL => {
                let preempting = rate(sent - sent_then, took);
                self.begin(Phase::Hold, sent, now);
                self.set(self.batched_rate >= Self::TIE * preempting);
            }
            Phase::Hold if took >= Self::HOLD => self.begin(Phase::TrialBatched, sent, now),
            _ => {}
        }
    }

    /// Starts `phase` (a trial sets its policy; a hold keeps the one its caller sets).
    fn begin(&mut self, phase: Phase, sent: u64, now: Instant) {
        self.phase = phase;
        self.phase_start = (now, sent);
        match phase {
            Phase::TrialBatched => self.set(true),
            Phase::TrialPreempting => self.set(false),
            Phase::Hold => {}
        }
    }

    /// Counts this front end in or out of [`WANTED`], if that changes.
    fn set(&mut self, on: bool) {
        if self.on != on {
            self.on = on;
            want(on);
        }
    }
}

/// Requests per second.
fn rate(requests: u64, over: Duration) -> f64 {
    requests as f64 / over.as_secs_f64().max(1e-9)
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
            "{switched} threads now {}",
            if batch { "SCHED_BATCH" } else { "SCHED_OTHER" }
        );
    }
}

/// Whether the calling thread runs `SCHED_OTHER`, the policy batching switches from.
#[cfg(target_os = "linux")]
fn runs_default_policy() -> bool {
    // SAFETY: sched_getscheduler(0) reads the calling thread's policy.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_OTHER }
}

#[cfg(not(target_os = "linux"))]
fn runs_default_policy() -> bool {
    false
}

/// Sets every thread of the process that runs `SCHED_OTHER` to `SCHED_BATCH`, or every
/// one that runs `SCHED_BATCH` back; returns how many it switched. A thread under any
/// other policy (real-time, idle: someone chose it) is left alone. The list of threads
/// is read twice, for a thread started meanwhile by one not yet switched (a new thread
/// takes its creator's policy).
#[cfg(target_os = "linux")]
fn set_process_policy(batch: bool) -> usize {
    let (from, policy) = if batch {
        (libc::SCHED_OTHER, libc::SCHED_BATCH)
    } else {
        (libc::SCHED_BATCH, libc::SCHED_OTHER)
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
                if libc::sched_getscheduler(tid) != from {
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
