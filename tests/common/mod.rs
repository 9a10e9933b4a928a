//! Helpers shared by the integration tests: a pipeline that stops itself when dropped, a
//! client that sends jobs under chosen request ids and collects their answers, and the
//! small tools (gates, event channels, long jobs) that let a test steer a worker.
//!
//! Every wait is bounded by [`PATIENCE`]; nothing here asserts on elapsed time.
//! Each test binary uses a different subset of these helpers, hence the allowance below.
#![allow(dead_code)]

use crossbeam_channel::Receiver;
use prime_server::base::sockets;
use prime_server::pipeline::envelope::{Envelope, Interrupt, InterruptReason, Protocol};
use prime_server::pipeline::loopback::{self, Answer, Failure};
use prime_server::pipeline::proxy::Proxy;
use prime_server::pipeline::worker::{WorkerConfig, WorkerPool};
use prime_server::{FrontSockets, Job, Outcome, Pipeline, RunningPipeline, Shutdown, Work};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long a "long" job runs if nothing interrupts it. Longer than [`PATIENCE`], so a
/// job that was never interrupted is told apart from one that was.
pub const LONG_JOB_CAP: Duration = Duration::from_secs(30);

/// The front end nonce of every request the tests send.
pub const NONCE: u64 = 0x7e57;

/// The request that [`whoami`] answers: used to warm pools up.
pub const WHOAMI: &[u8] = b"whoami";

/// What came back for one request: the response bytes, or the failure.
pub type Reply = Result<Vec<u8>, Failure>;

/// The front end's side of a pipeline: sends raw requests and collects answers by
/// request id. Answers to other requests that arrive meanwhile are kept for later, and
/// a second answer to the same request fails the test.
pub struct Front {
    sockets: FrontSockets,
    next_id: Cell<u64>,
    kept: RefCell<HashMap<u64, Reply>>,
    seen: RefCell<HashSet<u64>>,
}

impl Front {
    /// Wraps the sockets of a front end.
    pub fn new(sockets: FrontSockets) -> Self {
        Front {
            sockets,
            next_id: Cell::new(1),
            kept: RefCell::default(),
            seen: RefCell::default(),
        }
    }

    /// The sockets themselves.
    pub fn sockets(&self) -> &FrontSockets {
        &self.sockets
    }

    /// A request id no other request of this front uses.
    pub fn reserve_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Sends `request` under a fresh id and returns the id.
    pub fn send(&self, request: &[u8]) -> u64 {
        let id = self.reserve_id();
        self.send_as(id, request);
        id
    }

    /// Sends `request` under an id from [`reserve_id`](Self::reserve_id).
    pub fn send_as(&self, id: u64, request: &[u8]) {
        self.send_envelope(Envelope::new(id, 0, NONCE, Protocol::Raw), request);
    }

    /// Sends `request` under a fresh id with a deadline `timeout` from now.
    pub fn send_with_timeout(&self, request: &[u8], timeout: Duration) -> u64 {
        let id = self.reserve_id();
        let envelope = Envelope::new(id, 0, NONCE, Protocol::Raw).with_timeout(timeout);
        self.send_envelope(envelope, request);
        id
    }

    fn send_envelope(&self, envelope: Envelope, request: &[u8]) {
        let frames = [prime_server::pipeline::envelope::lead_frame(
            &envelope.encode(),
            request,
        )];
        sockets::send_frames(&self.sockets.entry, frames, 0).expect("sending a request");
    }

    /// Sends `request` and waits for its reply.
    pub fn ask(&self, request: &[u8]) -> Reply {
        let id = self.send(request);
        self.reply_to(id)
    }

    /// Waits (up to [`PATIENCE`]) for the reply to request `id`.
    pub fn reply_to(&self, id: u64) -> Reply {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(reply) = self.kept.borrow_mut().remove(&id) {
                return reply;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no answer to request {id} within {PATIENCE:?}"
            );
            self.receive_one(left.min(Duration::from_millis(100)));
        }
    }

    /// The replies to `ids`, in the same order.
    pub fn replies_to(&self, ids: &[u64]) -> Vec<Reply> {
        ids.iter().map(|&id| self.reply_to(id)).collect()
    }

    /// Whether request `id` has been answered, counting answers already waiting on the
    /// loopback but not waiting for more.
    pub fn was_answered(&self, id: u64) -> bool {
        while self.receive_one(Duration::ZERO) {}
        self.seen.borrow().contains(&id)
    }

    /// Receives one answer if one comes within `within`; returns whether one did.
    fn receive_one(&self, within: Duration) -> bool {
        let ready = self
            .sockets
            .loopback
            .poll(zmq::POLLIN, within.as_millis() as i64)
            .expect("polling the loopback");
        if ready == 0 {
            return false;
        }
        let frames = sockets::recv_frames(&self.sockets.loopback, 0).expect("reading an answer");
        let (envelope, answer) = loopback::decode(frames).expect("a well-formed answer");
        assert_eq!(
            envelope.nonce, NONCE,
            "an answer carries its request's nonce"
        );
        let id = envelope.request_id;
        assert!(
            self.seen.borrow_mut().insert(id),
            "request {id} was answered twice"
        );
        let reply = match answer {
            Answer::Response(bytes) => Ok(bytes.to_vec()),
            Answer::Failure(failure) => Err(failure),
            other => panic!("request {id}: no stage here answers in pieces or later: {other:?}"),
        };
        self.kept.borrow_mut().insert(id, reply);
        true
    }

    /// Publishes an interrupt for request `id` a few times over a tenth of a second, so
    /// that a subscriber whose subscription is still on its way hears at least one.
    pub fn announce_interrupt(&self, id: u64) {
        let interrupt = Interrupt {
            nonce: NONCE,
            request_id: id,
            reason: InterruptReason::ClientGone,
        };
        for _ in 0..5 {
            self.sockets
                .interrupt
                .send(&interrupt.encode()[..], 0)
                .expect("publishing an interrupt");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends [`WHOAMI`] requests, `workers` at a time, until `workers` different workers
    /// have answered: after this every worker of the pool is known to its proxy. The
    /// stage must answer [`WHOAMI`] with [`whoami`].
    pub fn wait_for_workers(&self, workers: usize) {
        let deadline = Instant::now() + PATIENCE;
        let mut names = HashSet::new();
        while names.len() < workers {
            assert!(
                Instant::now() < deadline,
                "only {names:?} of {workers} workers answered within {PATIENCE:?}"
            );
            let ids: Vec<u64> = (0..workers).map(|_| self.send(WHOAMI)).collect();
            for reply in self.replies_to(&ids) {
                names.insert(text(reply));
            }
        }
    }
}

/// A pipeline started for a test, stopped when dropped (even when the test fails).
/// It dereferences to its [`Front`].
pub struct TestPipeline {
    running: Option<RunningPipeline>,
    front: Front,
    _ctx: zmq::Context,
}

impl TestPipeline {
    /// Starts `pipeline` in a context of its own.
    pub fn start(pipeline: Pipeline) -> Self {
        let ctx = zmq::Context::new();
        let (running, sockets) = pipeline.start(&ctx).expect("the pipeline starts");
        TestPipeline {
            running: Some(running),
            front: Front::new(sockets),
            _ctx: ctx,
        }
    }

    /// Hands over the running pipeline, e.g. to stop it on another thread.
    pub fn take_running(&mut self) -> RunningPipeline {
        self.running.take().expect("the pipeline is still here")
    }
}

impl Deref for TestPipeline {
    type Target = Front;

    fn deref(&self) -> &Front {
        &self.front
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

/// Proxies and worker pools wired by hand rather than by [`Pipeline`], all stopped and
/// joined when dropped.
#[derive(Default)]
pub struct HandWired {
    shutdown: Shutdown,
    proxies: Vec<JoinHandle<()>>,
    pools: Vec<WorkerPool>,
}

impl HandWired {
    /// Runs a bound proxy on a thread of its own.
    pub fn run_proxy(&mut self, proxy: Proxy) {
        let stop = self.shutdown.clone();
        self.proxies.push(std::thread::spawn(move || {
            proxy.run(&stop).expect("the proxy runs");
        }));
    }

    /// Starts a pool of `workers` threads named `"{name}-{index}"`.
    pub fn spawn_pool<W: Work + Clone>(
        &mut self,
        ctx: &zmq::Context,
        name: &str,
        config: &WorkerConfig,
        workers: usize,
        work: W,
    ) {
        let pool = WorkerPool::spawn(ctx, name, config, workers, work, &self.shutdown)
            .expect("the worker pool starts");
        self.pools.push(pool);
    }
}

impl Drop for HandWired {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for pool in self.pools.drain(..) {
            pool.join();
        }
        for proxy in self.proxies.drain(..) {
            let _ = proxy.join();
        }
    }
}

/// The response of a reply as text; fails the test on a failure.
pub fn text(reply: Reply) -> String {
    match reply {
        Ok(bytes) => String::from_utf8(bytes).expect("a UTF-8 response"),
        Err(failure) => panic!("expected a response, got the failure {failure:?}"),
    }
}

/// The failure of a reply; fails the test on a response.
pub fn failure(reply: Reply) -> Failure {
    match reply {
        Ok(bytes) => panic!(
            "expected a failure, got the response {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(failure) => failure,
    }
}

/// The name of the current thread: a worker's is `"{stage}-{index}"`.
pub fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string()
}

/// The answer to [`WHOAMI`]: the worker's thread name, after a short pause so that a
/// batch of these spreads over the idle workers.
pub fn whoami() -> Outcome {
    std::thread::sleep(Duration::from_millis(5));
    Outcome::respond(thread_name().into_bytes())
}

/// The request's first frame as text.
pub fn request_text(job: &Job<'_>) -> String {
    String::from_utf8_lossy(job.frame(0).unwrap_or_default()).into_owned()
}

/// Waits (up to [`PATIENCE`]) for the next event on `events`.
pub fn expect_event<T>(events: &Receiver<T>, what: &str) -> T {
    events
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

/// A latch a test opens to release jobs that wait on it.
#[derive(Clone, Default)]
pub struct Gate {
    open: Arc<AtomicBool>,
}

impl Gate {
    /// Releases every job waiting on the gate, and every later one.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Holds `job` until the gate opens. Gives up when the job is interrupted (which
    /// includes its pipeline stopping) or after [`LONG_JOB_CAP`], so a failing test never
    /// leaves a worker stuck; returns whether the gate opened.
    pub fn wait(&self, job: &Job<'_>) -> bool {
        let give_up = Instant::now() + LONG_JOB_CAP;
        while Instant::now() < give_up && !job.interrupted() {
            if self.open.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

/// How a long job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongJobEnd {
    /// `job.interrupted()` said so.
    Interrupted,
    /// It ran for [`LONG_JOB_CAP`] without being interrupted.
    RanOut,
}

/// Polls `job.interrupted()` every millisecond for up to [`LONG_JOB_CAP`].
pub fn run_until_interrupted(job: &Job<'_>) -> LongJobEnd {
    let give_up = Instant::now() + LONG_JOB_CAP;
    while Instant::now() < give_up {
        if job.interrupted() {
            return LongJobEnd::Interrupted;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    LongJobEnd::RanOut
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates the directory; `label` makes its name easier to recognise.
    pub fn new(label: &str) -> Self {
        static DIRS: AtomicU64 = AtomicU64::new(0);
        let number = DIRS.fetch_add(1, Ordering::Relaxed);
        let name = format!("ps-{label}-{}-{number}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
