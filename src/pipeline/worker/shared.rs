//! What a pool's worker threads share with its heartbeat thread: each worker's
//! [`Member`] (busy flag, running job, job socket), the pool's [`Counters`], and the
//! [`Doze`] that lets the heartbeat thread sleep while the pool is idle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// What a pool's workers have done, counted as they go.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) completed: AtomicU64,
    pub(super) panicked: AtomicU64,
    pub(super) skipped: AtomicU64,
    /// How long the stage function took per job.
    pub(super) work: crate::base::metrics::SharedHistogram,
}

/// Lets the pool's heartbeat thread sleep through idle periods: it checks for long jobs
/// every [`WorkerConfig::rescue_after`] only while the pool works, and a worker starting
/// a job wakes it when it dozes.
#[derive(Default)]
pub(super) struct Doze {
    /// Whether the heartbeat thread is asleep until its next beat.
    pub(super) dozing: AtomicBool,
    /// The heartbeat thread, once it runs.
    pub(super) thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Doze {
    /// Called by a worker that has just marked itself busy.
    pub(super) fn job_started(&self) {
        // SeqCst pairs with the heartbeat thread's store of `dozing` and its load of the
        // busy flags: either it sees this worker busy, or this sees it dozing.
        if self.dozing.load(Ordering::SeqCst) && self.dozing.swap(false, Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }
}

/// What one worker thread shares with its pool's heartbeat thread.
pub(super) struct Member {
    /// The worker's id at the proxy.
    pub(super) id: Vec<u8>,
    /// Whether the worker is running a job.
    pub(super) busy: AtomicBool,
    /// How many jobs the worker has started: the same count seen twice while busy means
    /// one job has run for a whole check interval.
    pub(super) started: AtomicU64,
    /// The nonce and request id of the job it runs (meaningful while `busy`), for a
    /// census. Two words, not read together: a census that reads them torn misses the
    /// job once, and the census's second round counts it.
    pub(super) running_nonce: AtomicU64,
    pub(super) running_request: AtomicU64,
    /// The (nonce, request id) of every job a concurrent worker holds (see
    /// [`super::concurrent`]), for a census; empty for a worker that runs one at a time.
    pub(super) held: Mutex<Vec<(u64, u64)>>,
    /// The worker's job socket. The worker locks it to wait for a job and to say READY;
    /// while the worker runs a long job, the heartbeat thread locks it to take the jobs
    /// queued behind that one and hand them back to the proxy.
    pub(super) jobs: Mutex<zmq::Socket>,
}

impl Member {
    pub(super) fn jobs(&self) -> std::sync::MutexGuard<'_, zmq::Socket> {
        // Nothing panics while holding the lock (user code runs outside it), and a
        // socket has no invariant a panic could break anyway.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The jobs a concurrent worker holds.
    pub(super) fn held_jobs(&self) -> std::sync::MutexGuard<'_, Vec<(u64, u64)>> {
        // As for `jobs`: nothing panics while holding it.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The job socket, unless the worker holds it.
    pub(super) fn try_jobs(&self) -> Option<std::sync::MutexGuard<'_, zmq::Socket>> {
        match self.jobs.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}
