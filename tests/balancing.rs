//! The proxy's side of a stage: jobs spread fairly over a pool, a choose function
//! steers jobs to the worker it names, a worker that stops heartbeating is forgotten and
//! its job answered 503 while later jobs go to live workers, a full queue answers
//! exactly the jobs past its bound with 503, jobs a worker holds behind a long one go to
//! another worker, and a job goes to the worker holding the fewest.

mod common;

use common::{
    expect_event, failure, text, thread_name, whoami, Front, Gate, HandWired, TestPipeline, NONCE,
    PATIENCE, WHOAMI,
};
use prime_server::base::sockets;
use prime_server::pipeline::envelope::{Envelope, Protocol, ENVELOPE_LEN};
use prime_server::pipeline::loopback::FailureKind;
use prime_server::pipeline::proxy::{Chooser, Proxy, ProxyConfig, ProxyStatus};
use prime_server::pipeline::worker::{WorkerConfig, WorkerPool};
use prime_server::{FrontSockets, Job, Outcome, Pipeline, Shutdown, Work};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers with the worker's thread name after a 2 ms nap, so that many jobs in flight
/// keep every worker busy.
fn name_after_a_nap(job: &mut Job<'_>) -> Outcome {
    if job.frame(0) == Some(WHOAMI) {
        return whoami();
    }
    std::thread::sleep(Duration::from_millis(2));
    Outcome::respond(thread_name().into_bytes())
}

#[test]
fn many_jobs_in_flight_are_shared_fairly() {
    let pipeline = TestPipeline::start(Pipeline::new().stage("fair", 4, name_after_a_nap));
    pipeline.wait_for_workers(4);

    let ids: Vec<u64> = (0..400).map(|_| pipeline.send(b"work")).collect();
    let mut jobs_per_worker: HashMap<String, usize> = HashMap::new();
    for reply in pipeline.replies_to(&ids) {
        *jobs_per_worker.entry(text(reply)).or_default() += 1;
    }

    assert_eq!(
        jobs_per_worker.len(),
        4,
        "workers used: {jobs_per_worker:?}"
    );
    for (worker, jobs) in &jobs_per_worker {
        assert!(
            (50..=150).contains(jobs),
            "{worker} took {jobs} of 400 jobs: {jobs_per_worker:?}"
        );
    }
}

/// A worker that knows its own index, advertises it as its heartbeat payload and answers
/// every job with it. Each clone the pool makes takes the next index; every heartbeat is
/// counted per index, so a test can tell when workers have been idle for a while.
struct IndexedWorker {
    index: usize,
    next_index: Arc<AtomicUsize>,
    heartbeats: Arc<Mutex<HashMap<usize, usize>>>,
}

impl IndexedWorker {
    fn new() -> Self {
        IndexedWorker {
            index: usize::MAX,
            next_index: Arc::default(),
            heartbeats: Arc::default(),
        }
    }

    /// How many heartbeats each index has sent so far.
    fn heartbeat_counts(heartbeats: &Mutex<HashMap<usize, usize>>) -> HashMap<usize, usize> {
        heartbeats.lock().expect("heartbeat counts").clone()
    }
}

impl Clone for IndexedWorker {
    fn clone(&self) -> Self {
        IndexedWorker {
            index: self.next_index.fetch_add(1, Ordering::SeqCst),
            next_index: self.next_index.clone(),
            heartbeats: self.heartbeats.clone(),
        }
    }
}

impl Work for IndexedWorker {
    fn work(&mut self, _job: &mut Job<'_>) -> Outcome {
        Outcome::respond(self.index.to_string().into_bytes())
    }

    fn heartbeat(&self) -> Vec<u8> {
        let mut counts = self.heartbeats.lock().expect("heartbeat counts");
        *counts.entry(self.index).or_default() += 1;
        self.index.to_string().into_bytes()
    }
}

/// Picks the idle worker whose heartbeat payload equals the request's frame.
fn choose_named_worker() -> Chooser {
    Arc::new(|frames: &[&[u8]], heartbeats: &[&[u8]]| {
        let wanted = frames.first()?;
        heartbeats
            .iter()
            .position(|payload| payload[..] == wanted[..])
    })
}

/// Waits until each of `workers` indexes has sent at least two heartbeats more than in
/// `before`: a worker heartbeating on its own is idle, and the proxy has long had the
/// readiness message it sent after its last job.
fn wait_until_all_idle(
    heartbeats: &Mutex<HashMap<usize, usize>>,
    before: &HashMap<usize, usize>,
    workers: usize,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = IndexedWorker::heartbeat_counts(heartbeats);
        let idle = (0..workers)
            .filter(|i| now.get(i).copied().unwrap_or(0) >= before.get(i).copied().unwrap_or(0) + 2)
            .count();
        if idle == workers {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {idle} of {workers} workers heartbeat while idle: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_choose_function_sends_each_job_to_the_worker_it_names() {
    let work = IndexedWorker::new();
    let heartbeats = work.heartbeats.clone();
    let pipeline = TestPipeline::start(
        Pipeline::new()
            .stage("affine", 4, work)
            .choose(choose_named_worker())
            .heartbeat(Duration::from_millis(10), Duration::from_secs(2)),
    );

    // Repeats on purpose: least-recently-used order alone would never pick the worker
    // that has just finished.
    for wanted in ["3", "1", "1", "0", "2", "2", "3", "0", "1", "3", "3", "0"] {
        wait_until_all_idle(
            &heartbeats,
            &IndexedWorker::heartbeat_counts(&heartbeats),
            4,
        );
        assert_eq!(text(pipeline.ask(wanted.as_bytes())), wanted);
    }
}

#[test]
fn a_full_queue_answers_the_overflow_503() {
    let gate = Gate::default();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let work = {
        let gate = gate.clone();
        move |job: &mut Job<'_>| {
            if job.frame(0) == Some(b"block") {
                let _ = started_tx.send(());
                gate.wait(job);
            }
            Outcome::respond(job.frame(0).unwrap_or_default().to_vec())
        }
    };
    let pipeline = TestPipeline::start(
        Pipeline::new()
            .prefetch(1)
            .stage("narrow", 1, work)
            .queue_bound(2),
    );

    let blocker = pipeline.send(b"block");
    expect_event(&started, "the blocking job starts");
    let waiting: Vec<u64> = (0..5)
        .map(|k| pipeline.send(format!("job{k}").as_bytes()))
        .collect();

    for reply in pipeline.replies_to(&waiting[2..]) {
        let overflow = failure(reply);
        assert_eq!(overflow.kind, FailureKind::QueueFull);
        assert_eq!(overflow.status, 503);
    }
    assert!(!pipeline.was_answered(waiting[0]) && !pipeline.was_answered(waiting[1]));
    gate.open();
    assert_eq!(text(pipeline.reply_to(blocker)), "block");
    assert_eq!(text(pipeline.reply_to(waiting[0])), "job0");
    assert_eq!(text(pipeline.reply_to(waiting[1])), "job1");
}

#[test]
fn jobs_held_behind_a_long_job_go_to_another_worker() {
    long_job_with_quick_ones_behind(Pipeline::new(), Duration::ZERO);
}

#[test]
fn jobs_held_behind_a_long_job_go_to_another_worker_after_an_idle_spell() {
    // Idle for far longer than the pool's heartbeat thread takes to doze, with beats so
    // rare that only a worker waking it can get the quick jobs out within the test's
    // patience.
    let rare_beats = Pipeline::new().heartbeat(Duration::from_secs(60), Duration::from_secs(180));
    long_job_with_quick_ones_behind(rare_beats, Duration::from_millis(500));
}

fn long_job_with_quick_ones_behind(pipeline: Pipeline, idle: Duration) {
    let gate = Gate::default();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let work = {
        let gate = gate.clone();
        move |job: &mut Job<'_>| {
            if job.frame(0) == Some(WHOAMI) {
                return whoami();
            }
            if job.frame(0) == Some(b"long") {
                let _ = started_tx.send(thread_name());
                gate.wait(job);
            }
            Outcome::respond(thread_name().into_bytes())
        }
    };
    // Each worker may hold 4 jobs: the proxy alternates between the two workers, so the
    // one running the long job is sent quick jobs too.
    let pipeline = TestPipeline::start(pipeline.prefetch(4).stage("uneven", 2, work));
    pipeline.wait_for_workers(2);
    std::thread::sleep(idle);

    let long = pipeline.send(b"long");
    let stuck = expect_event(&started, "the long job starts");
    let quick: Vec<u64> = (0..12).map(|_| pipeline.send(b"quick")).collect();
    // Every quick job is answered while the long one still runs, all by the other worker:
    // those queued behind the long job were handed back and placed again.
    for (k, reply) in pipeline.replies_to(&quick).into_iter().enumerate() {
        let worker = text(reply);
        assert_ne!(worker, stuck, "quick job {k} waited for the long job");
    }
    assert!(!pipeline.was_answered(long));
    gate.open();
    assert_eq!(text(pipeline.reply_to(long)), stuck);
}

/// A worker speaking the proxy's protocol by hand, so that it can fall silent.
struct FakeWorker {
    socket: zmq::Socket,
}

impl FakeWorker {
    fn connect(ctx: &zmq::Context, endpoint: &str, id: &str) -> Self {
        let socket = sockets::socket(ctx, zmq::DEALER).expect("a DEALER socket");
        socket.set_identity(id.as_bytes()).expect("setting the id");
        sockets::connect(&socket, endpoint).expect("connecting to the proxy");
        FakeWorker { socket }
    }

    /// `[READY + completed jobs u64 LE + credit u32 LE, heartbeat payload]`, credit 1.
    fn say_ready(&self, completed: u64) {
        self.say_ready_with_credit(completed, 1);
    }

    fn say_ready_with_credit(&self, completed: u64, credit: u32) {
        let mut ready = b"\x01".to_vec();
        ready.extend_from_slice(&completed.to_le_bytes());
        ready.extend_from_slice(&credit.to_le_bytes());
        let frames = [zmq::Message::from(ready), zmq::Message::new()];
        sockets::send_frames(&self.socket, frames, 0).expect("sending READY");
    }

    /// Waits for a job; returns its envelope.
    fn take_job(&self) -> Envelope {
        let ready = self
            .socket
            .poll(zmq::POLLIN, PATIENCE.as_millis() as i64)
            .expect("polling for a job");
        assert_eq!(ready, 1, "the fake worker got no job within {PATIENCE:?}");
        let frames = sockets::recv_frames(&self.socket, 0).expect("receiving a job");
        assert!(
            frames[0].len() >= ENVELOPE_LEN,
            "a job starts with its envelope"
        );
        let (envelope, _) = Envelope::decode_lead(&frames[0]).expect("a valid envelope");
        envelope
    }

    fn has_mail(&self) -> bool {
        self.socket.poll(zmq::POLLIN, 0).expect("polling") > 0
    }
}

/// A proxy over TCP on a thread, and a front wired to it, for tests that play its
/// workers by hand.
struct LoneProxy {
    front: Front,
    /// Where workers connect.
    downstream: String,
    loopback: String,
    interrupt: String,
    /// Dropped last: stops the proxy (and any pool spawned on it).
    wired: HandWired,
}

impl LoneProxy {
    fn start(ctx: &zmq::Context, name: &str, heartbeat_timeout: Duration) -> Self {
        let loopback = format!("inproc://{name}-loopback");
        let interrupt = format!("inproc://{name}-interrupt");
        let mut config = ProxyConfig::new(
            "tcp://127.0.0.1:*",
            "tcp://127.0.0.1:*",
            Some(loopback.clone()),
        );
        config.heartbeat_timeout = heartbeat_timeout;
        let proxy = Proxy::bind(ctx, config).expect("the proxy binds");
        let (upstream, downstream) = proxy.endpoints();
        let mut wired = HandWired::default();
        wired.run_proxy(proxy);
        let sockets =
            FrontSockets::bind(ctx, &upstream, &loopback, &interrupt).expect("the front binds");
        LoneProxy {
            front: Front::new(sockets),
            downstream,
            loopback,
            interrupt,
            wired,
        }
    }
}

#[test]
fn a_silent_worker_is_evicted_and_its_job_answered_503() {
    let ctx = zmq::Context::new();
    let mut lone = LoneProxy::start(&ctx, "evict", Duration::from_millis(300));
    let (front, downstream) = (&lone.front, lone.downstream.clone());

    let silent = FakeWorker::connect(&ctx, &downstream, "silent");
    silent.say_ready(0);
    let doomed = front.send(b"doomed");
    assert_eq!(silent.take_job().request_id, doomed);
    // The fake now says nothing more, as if its process had hung.
    let died = failure(front.reply_to(doomed));
    assert_eq!(died.kind, FailureKind::WorkerDied);
    assert_eq!(died.status, 503);

    let mut live = WorkerConfig::new(downstream, None, &lone.loopback, &lone.interrupt);
    live.heartbeat_interval = Duration::from_millis(50);
    let answer_with_name = |_: &mut Job<'_>| Outcome::respond(thread_name().into_bytes());
    lone.wired
        .spawn_pool(&ctx, "live", &live, 1, answer_with_name);
    assert_eq!(text(front.ask(b"later")), "live-0");
    assert!(!silent.has_mail(), "the evicted worker got no more jobs");
}

/// Asks the proxy behind `endpoint` for its status, as the front end's health check
/// does (`[PROBE]`, answered `[STATUS, JSON]`).
fn proxy_status(ctx: &zmq::Context, endpoint: &str) -> ProxyStatus {
    let probe = sockets::socket(ctx, zmq::DEALER).expect("a DEALER socket");
    sockets::connect(&probe, endpoint).expect("connecting to the proxy");
    probe.send(&b"\x04"[..], 0).expect("sending a probe");
    let ready = probe.poll(zmq::POLLIN, PATIENCE.as_millis() as i64);
    assert_eq!(ready.expect("polling"), 1, "no status within {PATIENCE:?}");
    let frames = sockets::recv_frames(&probe, 0).expect("receiving the status");
    let json = frames.get(1).expect("a STATUS message has a JSON frame");
    ProxyStatus::from_json(json).expect("the status is JSON")
}

/// Asks for the proxy's status until `ready` holds for it.
fn wait_for_status(ctx: &zmq::Context, endpoint: &str, ready: impl Fn(&ProxyStatus) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        let status = proxy_status(ctx, endpoint);
        if ready(&status) {
            return;
        }
        last = Some(status);
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the proxy's status never became the one awaited; last seen: {last:?}");
}

#[test]
fn a_job_goes_to_the_idle_worker_holding_the_fewest_jobs() {
    let ctx = zmq::Context::new();
    let lone = LoneProxy::start(&ctx, "fewest", Duration::from_secs(600));
    let (front, downstream) = (&lone.front, &lone.downstream);

    // `busy` may hold 8 jobs and reports none done, as a worker deep in a long job would;
    // `prompt` may hold 1 and reports each job done as soon as it has taken it.
    let busy = FakeWorker::connect(&ctx, downstream, "busy");
    busy.say_ready_with_credit(0, 8);
    let prompt = FakeWorker::connect(&ctx, downstream, "prompt");
    prompt.say_ready_with_credit(0, 1);
    wait_for_status(&ctx, downstream, |status| status.idle == 2);
    // Both hold nothing: the first two jobs go one to each.
    let first: Vec<u64> = (0..2).map(|_| front.send(b"first")).collect();
    let mut taken = vec![busy.take_job().request_id, prompt.take_job().request_id];
    taken.sort_unstable();
    assert_eq!(taken, first);

    for done in 1..=5u64 {
        // `prompt` reports its job done, so it holds none and can take one again; `busy`
        // holds one or more and still has credit, and may well be first in line.
        prompt.say_ready_with_credit(done, 1);
        wait_for_status(&ctx, downstream, |status| status.idle == 2);
        let next = front.send(b"next");
        assert_eq!(
            prompt.take_job().request_id,
            next,
            "job {done} went to the worker holding none"
        );
        assert!(
            !busy.has_mail(),
            "job {done} went to the worker already holding jobs"
        );
    }
}

#[test]
fn a_worker_whose_pipe_is_full_keeps_its_jobs_and_later_ones_go_elsewhere() {
    // In-process, the pipe to a worker holds exactly the proxy's send mark plus the
    // worker's receive mark (libzmq's default 1000): no kernel buffer blurs where it
    // fills.
    let ctx = zmq::Context::new();
    let (upstream, downstream) = ("inproc://full-pipe-up", "inproc://full-pipe-down");
    let (loopback, interrupt) = (
        "inproc://full-pipe-loopback",
        "inproc://full-pipe-interrupt",
    );
    let mut config = ProxyConfig::new(upstream, downstream, Some(loopback.to_string()));
    config.heartbeat_timeout = Duration::from_secs(600);
    config.queue_bound = 1_000_000;
    let proxy = Proxy::bind(&ctx, config).expect("the proxy binds");
    let mut wired = HandWired::default();
    wired.run_proxy(proxy);
    let front = Front::new(
        FrontSockets::bind(&ctx, upstream, loopback, interrupt).expect("the front binds"),
    );

    // A worker with all the credit there is that reads nothing: its pipe fills up.
    let hoarder = FakeWorker::connect(&ctx, downstream, "hoarder");
    hoarder.say_ready_with_credit(0, u32::MAX);
    wait_for_status(&ctx, downstream, |status| status.idle == 1);
    let first = front.send(b"job");
    let limit = 2 * (sockets::STAGE_PIPE_HWM as usize + 1000);
    let mut sent = 1;
    while sent < limit && proxy_status(&ctx, downstream).waiting == 0 {
        for _ in 0..10_000 {
            front.send(b"job");
        }
        sent += 10_000;
    }
    wait_for_status(&ctx, downstream, |status| status.waiting > 0);

    // Its jobs are not answered as lost, and it is still known.
    assert!(
        !front.was_answered(first),
        "a job of the worker whose pipe was full was answered: {:?}",
        front.reply_to(first)
    );
    assert_eq!(proxy_status(&ctx, downstream).workers, 1);
    // A job that did not fit goes to the next worker that asks.
    let taker = FakeWorker::connect(&ctx, downstream, "taker");
    taker.say_ready_with_credit(0, 1);
    let taken = taker.take_job().request_id;
    assert!(taken > first, "the taker got job {taken}");
    assert!(!front.was_answered(first));
    drop(wired);
}

#[test]
fn the_jobs_a_disconnected_worker_held_are_answered_503() {
    let ctx = zmq::Context::new();
    // Far beyond the test's patience: only the disconnect can get the jobs answered.
    let lone = LoneProxy::start(&ctx, "gone", Duration::from_secs(600));
    let (front, downstream) = (&lone.front, &lone.downstream);

    // A worker that may hold 4 jobs takes 2, so it is still waiting for more...
    let gone = FakeWorker::connect(&ctx, downstream, "gone");
    gone.say_ready_with_credit(0, 4);
    let held: Vec<u64> = (0..2).map(|_| front.send(b"held")).collect();
    for id in &held {
        assert_eq!(gone.take_job().request_id, *id);
    }
    // ...when its process dies: its connection closes, and the next job the proxy tries
    // to give it finds it unreachable.
    drop(gone);
    let deadline = Instant::now() + PATIENCE;
    while !held.iter().all(|id| front.was_answered(*id)) {
        assert!(
            Instant::now() < deadline,
            "the jobs of the worker that left were never answered"
        );
        front.send(b"later");
        std::thread::sleep(Duration::from_millis(50));
    }
    for reply in front.replies_to(&held) {
        let lost = failure(reply);
        assert_eq!(lost.kind, FailureKind::WorkerDied);
        assert_eq!(lost.status, 503);
    }
}

#[test]
fn a_leaving_worker_runs_the_jobs_sent_before_its_goodbye_was_read() {
    // The test plays the proxy, so that it can send a job after the worker's goodbye, as
    // a busy proxy does when it has not read the goodbye yet.
    let ctx = zmq::Context::new();
    let (proxy_endpoint, loopback, interrupt) = (
        "inproc://leaving-proxy",
        "inproc://leaving-loopback",
        "inproc://leaving-interrupt",
    );
    let proxy = sockets::socket(&ctx, zmq::ROUTER).expect("a ROUTER socket");
    sockets::bind(&proxy, proxy_endpoint).expect("binding the fake proxy");
    let front = Front::new(
        FrontSockets::bind(&ctx, "inproc://leaving-unused", loopback, interrupt)
            .expect("the front binds"),
    );
    let shutdown = Shutdown::new();
    let config = WorkerConfig::new(proxy_endpoint, None, loopback, interrupt);
    let answer = |job: &mut Job<'_>| Outcome::respond(job.frame(0).unwrap_or_default().to_vec());
    let pool = WorkerPool::spawn(&ctx, "leaving", &config, 1, answer, &shutdown)
        .expect("the worker pool starts");

    let next_tagged = |tag: &[u8]| -> Vec<zmq::Message> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {tag:?} from the worker");
            if proxy
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .expect("polling")
                > 0
            {
                let frames = sockets::recv_frames(&proxy, 0).expect("receiving");
                if frames.get(1).is_some_and(|t| t.starts_with(tag)) {
                    return frames;
                }
            }
        }
    };
    let worker = next_tagged(b"\x01")[0].to_vec();
    shutdown.drain();
    next_tagged(b"\x03");
    let id = front.reserve_id();
    let envelope = Envelope::new(id, 0, NONCE, Protocol::Raw).encode();
    let job = [
        zmq::Message::from(&worker[..]),
        prime_server::pipeline::envelope::lead_frame(&envelope, b"late"),
    ];
    sockets::send_frames(&proxy, job, 0).expect("sending the late job");
    assert_eq!(text(front.reply_to(id)), "late");
    shutdown.trigger();
    pool.join();
}
