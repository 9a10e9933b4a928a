//! A pool of worker threads for one stage, and its heartbeat thread: it tells the proxy
//! which workers are busy, hands back the jobs queued behind a long one, and answers
//! censuses with the jobs its workers run.

use super::concurrent::{ConcurrentLoop, ConcurrentWork, Holder, PREFETCH_PER_CALL};
use super::shared::{Counters, Doze, Member};
use super::worker_loop::{WorkerEnded, WorkerLoop};
use super::{Work, WorkerConfig};
use crate::base::error::{Error, Result};
use crate::base::metrics::Exposition;
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::census::{Holdings, ProxyWatch};
use crate::pipeline::proxy::{HostedProxy, Proxy};
use crate::pipeline::wire::{BUSY, RETURN};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The threads of one running pool. Stop them with the [`Shutdown`] given at spawn, then
/// [`join`](WorkerPool::join).
pub struct WorkerPool {
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) counters: Arc<Counters>,
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Jobs received and handled (including failed and skipped ones).
    pub completed: u64,
    /// Jobs whose stage function panicked.
    pub panicked: u64,
    /// Jobs skipped because they were interrupted before they started.
    pub skipped: u64,
}

/// What a metrics scrape reads of a pool (see [`WorkerPool::metrics`]).
#[derive(Clone)]
pub struct PoolMetrics {
    counters: Arc<Counters>,
    workers: usize,
}

impl PoolMetrics {
    /// Adds the pool's figures, labelled with its stage's name, to `out`:
    /// `prime_stage_workers`, `prime_stage_jobs_total` by outcome and
    /// `prime_stage_work_seconds` (the stage function's time per job).
    pub fn expose(&self, stage: &str, out: &mut Exposition) {
        let c = &self.counters;
        out.gauge(
            "prime_stage_workers",
            "Worker threads of this process's pool for the stage.",
            &[("stage", stage)],
            self.workers as i64,
        );
        let jobs = "Jobs a stage's workers received, by outcome (ran, panicked, or skipped: interrupted before they started).";
        let completed = c.completed.load(Ordering::Relaxed);
        let panicked = c.panicked.load(Ordering::Relaxed);
        let skipped = c.skipped.load(Ordering::Relaxed);
        let ran = completed.saturating_sub(panicked + skipped);
        for (outcome, value) in [("ran", ran), ("panicked", panicked), ("skipped", skipped)] {
            let labels = [("stage", stage), ("outcome", outcome)];
            out.counter("prime_stage_jobs", jobs, &labels, value);
        }
        out.histogram(
            "prime_stage_work_seconds",
            "Time the stage function took per job (probes and skipped jobs excluded).",
            &[("stage", stage)],
            &c.work.snapshot(),
        );
    }
}

impl WorkerPool {
    /// Starts `count` workers, each with its own clone of `work`, plus the pool's
    /// heartbeat thread. `name` is the stage's name: it labels threads and log lines
    /// and the workers' self-test reports, so it should be the name routes and the
    /// front end know the stage by.
    pub fn spawn<W: Work + Clone>(
        ctx: &zmq::Context,
        name: &str,
        config: &WorkerConfig,
        count: usize,
        work: W,
        shutdown: &Shutdown,
    ) -> Result<WorkerPool> {
        let credits = vec![config.prefetch; count];
        let threads = Threads {
            credits: &credits,
            hands_back: true,
            run: |worker, _| worker.run(),
            proxy: None,
        };
        start_pool(ctx, name, config, work, shutdown, threads)
    }

    /// Starts `threads` concurrent workers (see [`ConcurrentWork`]) that run at
    /// most `in_flight` jobs between them, shared out as evenly as can be (a thread
    /// runs at least one, so there are at most `in_flight` threads), each with its
    /// own clone of `work`, plus the pool's heartbeat and census threads. Each thread
    /// takes a few more jobs than it runs, which wait at it for a running one to end.
    pub fn spawn_concurrent<C: ConcurrentWork + Clone>(
        ctx: &zmq::Context,
        name: &str,
        config: &WorkerConfig,
        threads: usize,
        in_flight: usize,
        work: C,
        shutdown: &Shutdown,
    ) -> Result<WorkerPool> {
        spawn_concurrent(ctx, name, config, threads, in_flight, work, None, shutdown)
    }

    /// [`WorkerPool::spawn_concurrent`] with one thread, which also runs the stage's
    /// bound `proxy` (see [`HostedProxy`]): in one process, a job then wakes that thread
    /// alone, not a proxy thread that then wakes it. Stopped and drained as the pool is.
    pub fn spawn_concurrent_hosting<C: ConcurrentWork + Clone>(
        ctx: &zmq::Context,
        name: &str,
        config: &WorkerConfig,
        in_flight: usize,
        work: C,
        proxy: Proxy,
        shutdown: &Shutdown,
    ) -> Result<WorkerPool> {
        spawn_concurrent(ctx, name, config, 1, in_flight, work, Some(proxy), shutdown)
    }

    /// What the pool's workers have done so far.
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            completed: self.counters.completed.load(Ordering::Relaxed),
            panicked: self.counters.panicked.load(Ordering::Relaxed),
            skipped: self.counters.skipped.load(Ordering::Relaxed),
        }
    }

    /// A handle on the pool's counters for a metrics scrape, which outlives the pool.
    pub fn metrics(&self) -> PoolMetrics {
        PoolMetrics {
            counters: self.counters.clone(),
            workers: self.threads.len().saturating_sub(2),
        }
    }

    /// Whether every thread of the pool has ended (after a drain or a stop).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every thread of the pool to end.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts a pool of concurrent workers (see [`WorkerPool::spawn_concurrent`]), the
/// first of which runs `proxy` if given.
#[allow(clippy::too_many_arguments)]
fn spawn_concurrent<C: ConcurrentWork + Clone>(
    ctx: &zmq::Context,
    name: &str,
    config: &WorkerConfig,
    threads: usize,
    in_flight: usize,
    work: C,
    proxy: Option<Proxy>,
    shutdown: &Shutdown,
) -> Result<WorkerPool> {
    if in_flight == 0 || threads == 0 {
        return Err(Error::Config(format!(
            "stage {name:?} needs at least one thread and one job in flight"
        )));
    }
    let threads = threads.min(in_flight);
    // Each thread's credit at the proxy: its share of the calls, times the jobs it
    // takes ahead per call (see `concurrent`).
    let credits: Vec<u32> = (0..threads)
        .map(|i| (in_flight / threads + usize::from(i < in_flight % threads)) as u32)
        .map(|calls| calls.max(1).saturating_mul(PREFETCH_PER_CALL))
        .collect();
    let threads = Threads {
        credits: &credits,
        hands_back: false,
        run: |worker, proxy| ConcurrentLoop::new(worker).hosting(proxy).run(),
        proxy,
    };
    start_pool(ctx, name, config, Holder::new(work), shutdown, threads)
}

/// The worker threads of a pool, as [`start_pool`] starts them.
struct Threads<'a, W> {
    /// One per thread: its credit at the proxy.
    credits: &'a [u32],
    /// Whether the heartbeat thread hands back the jobs queued behind a long one (a
    /// pool of concurrent workers has none: they take jobs as they come).
    hands_back: bool,
    /// What each thread runs on its loop (the first with the hosted proxy, if any).
    run: fn(WorkerLoop<W>, Option<HostedProxy>),
    /// The stage's proxy, for the first thread to run (see [`HostedProxy`]).
    proxy: Option<Proxy>,
}

/// Starts the worker threads, then the pool's heartbeat and census threads.
fn start_pool<W: Work + Clone>(
    ctx: &zmq::Context,
    name: &str,
    config: &WorkerConfig,
    work: W,
    shutdown: &Shutdown,
    threads_of: Threads<'_, W>,
) -> Result<WorkerPool> {
    let Threads {
        credits,
        hands_back,
        run,
        proxy,
    } = threads_of;
    let mut hosted = proxy.map(|proxy| HostedProxy::new(proxy, shutdown));
    if credits.is_empty() {
        return Err(Error::Config(format!(
            "stage {name:?} needs at least one worker"
        )));
    }
    let count = credits.len();
    let pool_id = crate::pipeline::envelope::random_u64();
    let counters = Arc::new(Counters::default());
    let mut members = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count + 2);
    let running = Arc::new(AtomicUsize::new(count));
    let doze = Arc::new(Doze::default());
    for (index, &credit) in credits.iter().enumerate() {
        let id = format!("{name}-{pool_id:016x}-{index}").into_bytes();
        let mut config = config.clone();
        config.prefetch = credit;
        let mut worker = WorkerLoop::connect(ctx, id, &config, work.clone(), shutdown)?;
        worker.stage = name.to_string();
        worker.counters = counters.clone();
        worker.doze = doze.clone();
        members.push(worker.member.clone());
        let ended = WorkerEnded(running.clone());
        let proxy = hosted.take();
        threads.push(spawn_thread(format!("{name}-{index}"), move || {
            run(worker, proxy);
            drop(ended);
        })?);
    }
    let watch = ProxyWatch::connect(
        ctx,
        &format!("{name}-{pool_id:016x}"),
        &config.upstream,
        &config.front_ends,
        holdings(members.clone()),
    )?;
    let (watch_shutdown, watch_running) = (shutdown.clone(), running.clone());
    let mut beat_config = config.clone();
    if !hands_back {
        // With a credit of 1 the heartbeat thread never looks for jobs to hand back.
        beat_config.prefetch = 1;
    }
    let beat = PoolHeartbeat::connect(ctx, &beat_config, members, running, doze, shutdown)?;
    threads.push(spawn_thread(format!("{name}-heartbeat"), move || {
        beat.run()
    })?);
    threads.push(spawn_thread(format!("{name}-watch"), move || {
        let shutdown = watch_shutdown.clone();
        watch.run(&watch_shutdown, || {
            shutdown.is_draining() && watch_running.load(Ordering::SeqCst) == 0
        })
    })?);
    Ok(WorkerPool { threads, counters })
}

/// What a pool's workers run, for a census: (nonce, request id) of each busy one's job.
pub(super) fn holdings(members: Vec<Arc<Member>>) -> Holdings {
    Arc::new(move || {
        members
            .iter()
            .filter(|m| m.busy.load(Ordering::Acquire))
            .flat_map(|m| {
                let held = m.held_jobs().clone();
                if held.is_empty() {
                    let request = m.running_request.load(Ordering::Acquire);
                    vec![(m.running_nonce.load(Ordering::Relaxed), request)]
                } else {
                    held
                }
            })
            .collect()
    })
}

pub(super) fn spawn_thread(
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .map_err(Error::Thread)
}

/// The pool's heartbeat thread: lists its busy workers to the proxy every interval, and
/// hands back to the proxy the jobs waiting behind a long one (see
/// [`WorkerConfig::rescue_after`]).
pub(super) struct PoolHeartbeat {
    pub(super) socket: zmq::Socket,
    pub(super) members: Vec<Arc<Member>>,
    /// How many of the pool's worker threads have not ended yet.
    pub(super) running: Arc<AtomicUsize>,
    pub(super) interval: Duration,
    /// How often to look for long jobs; `None` when workers hold one job at a time.
    pub(super) rescue_every: Option<Duration>,
    pub(super) doze: Arc<Doze>,
    pub(super) shutdown: Shutdown,
}

/// How many checks in a row must find every worker idle before the heartbeat thread
/// sleeps until its next beat (so a steady light load does not wake it per job).
pub(super) const IDLE_CHECKS_BEFORE_DOZING: u32 = 50;

impl PoolHeartbeat {
    pub(super) fn connect(
        ctx: &zmq::Context,
        config: &WorkerConfig,
        members: Vec<Arc<Member>>,
        running: Arc<AtomicUsize>,
        doze: Arc<Doze>,
        shutdown: &Shutdown,
    ) -> Result<Self> {
        // Handed-back jobs go through this socket too, so its pipe holds as many as a
        // stage sender's.
        let socket = sockets::stage_sender(ctx)?;
        sockets::connect(&socket, &config.upstream)?;
        let rescue_every = (config.prefetch > 1).then(|| {
            config
                .rescue_after
                .clamp(Duration::from_micros(100), config.heartbeat_interval)
        });
        Ok(PoolHeartbeat {
            socket,
            members,
            running,
            interval: config.heartbeat_interval,
            rescue_every,
            doze,
            shutdown: shutdown.clone(),
        })
    }

    /// Whether the beat should end: at a stop, or in a drain once every worker has ended.
    pub(super) fn is_over(&self) -> bool {
        self.shutdown.is_triggered()
            || (self.shutdown.is_draining() && self.running.load(Ordering::SeqCst) == 0)
    }

    pub(super) fn run(self) {
        let _ = self.doze.thread.set(std::thread::current());
        let mut next_beat = Instant::now();
        let mut next_check = self.rescue_every.map(|every| Instant::now() + every);
        // Per worker: the started count of the job it was running at the last check.
        let mut running_at_check: Vec<Option<u64>> = vec![None; self.members.len()];
        let mut idle_checks = 0u32;
        // A drain does not stop the beat: a worker finishing its last job says goodbye
        // only after it, and until then the proxy would take its silence for a death and
        // answer the job 503. The beat ends with the last worker, or at a stop.
        while !self.is_over() {
            let now = Instant::now();
            let next = next_check.map_or(next_beat, |check| check.min(next_beat));
            if now < next {
                std::thread::park_timeout((next - now).min(POLL_CAP));
                continue;
            }
            if let (Some(check), Some(every)) = (next_check, self.rescue_every) {
                if now >= check {
                    let any_busy = self.rescue(&mut running_at_check);
                    idle_checks = if any_busy {
                        0
                    } else {
                        idle_checks.saturating_add(1)
                    };
                    next_check = Some(now + every);
                    // Once idle long enough, doze between beats until a job starts.
                    if idle_checks >= IDLE_CHECKS_BEFORE_DOZING && self.doze_until(next_beat) {
                        next_check = Some(Instant::now() + every);
                    }
                }
            }
            if now >= next_beat {
                next_beat = now + self.interval;
                self.beat();
            }
        }
    }

    /// Sleeps until `until` unless a worker starts a job first; false if one already
    /// runs (then it does not sleep).
    pub(super) fn doze_until(&self, until: Instant) -> bool {
        self.doze.dozing.store(true, Ordering::SeqCst);
        if self.members.iter().any(|m| m.busy.load(Ordering::SeqCst)) {
            self.doze.dozing.store(false, Ordering::SeqCst);
            return false;
        }
        while self.doze.dozing.load(Ordering::SeqCst) && !self.is_over() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left.min(POLL_CAP));
        }
        self.doze.dozing.store(false, Ordering::SeqCst);
        true
    }

    /// Tells the proxy which workers are running a job, so it does not take their
    /// silence for death.
    pub(super) fn beat(&self) {
        let busy = self
            .members
            .iter()
            .filter(|member| member.busy.load(Ordering::Acquire))
            .map(|member| zmq::Message::from(&member.id[..]));
        let frames: Vec<zmq::Message> = std::iter::once(BUSY.into()).chain(busy).collect();
        if frames.len() > 1 {
            let _ = sockets::send_frames(&self.socket, frames, zmq::DONTWAIT);
        }
    }

    /// Hands back the jobs queued behind any job that has run since the last check;
    /// says whether any worker is busy.
    pub(super) fn rescue(&self, running_at_check: &mut [Option<u64>]) -> bool {
        let mut any_busy = false;
        for (member, seen) in self.members.iter().zip(running_at_check.iter_mut()) {
            let running = member
                .busy
                .load(Ordering::Acquire)
                .then(|| member.started.load(Ordering::Acquire));
            any_busy |= running.is_some();
            if running.is_some() && running == *seen && !self.shutdown.is_draining() {
                self.hand_back(member);
            }
            *seen = running;
        }
        any_busy
    }

    /// Takes the jobs waiting in a busy worker's socket and returns them to the proxy,
    /// which gives them to other workers (or queues them, first in line).
    pub(super) fn hand_back(&self, member: &Member) {
        let Some(jobs) = member.try_jobs() else {
            return;
        };
        let mut taken = Vec::new();
        while let Ok(frames) = sockets::recv_frames(&jobs, zmq::DONTWAIT) {
            taken.push(frames);
        }
        drop(jobs);
        if taken.is_empty() {
            return;
        }
        log::debug!(
            "worker {}: handing {} queued jobs back to the proxy",
            String::from_utf8_lossy(&member.id),
            taken.len()
        );
        // Newest first: the proxy puts each at the head of its queue, so the oldest ends
        // up first in line.
        for frames in taken.into_iter().rev() {
            let message = [
                zmq::Message::from(RETURN),
                zmq::Message::from(&member.id[..]),
            ]
            .into_iter()
            .chain(frames);
            if let Err(e) = sockets::send_frames(&self.socket, message, zmq::DONTWAIT) {
                log::warn!("a job handed back to the proxy was lost: {e}");
            }
        }
    }
}
