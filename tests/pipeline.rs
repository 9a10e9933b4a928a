//! A job's way through a pipeline, as its sender sees it: answered through one, two and
//! three stages (in process, over TCP and over Unix sockets), answered early by a stage
//! that skips the rest, forwarded in place with `Job::forward`, failed with a 500 by a panicking stage without harm to the next
//! job, kept for a front end that reads its answers late, and cut short when the
//! pipeline stops under long jobs.

mod common;

use common::{
    expect_event, failure, request_text, run_until_interrupted, text, thread_name, whoami,
    LongJobEnd, TempDir, TestPipeline, PATIENCE, WHOAMI,
};
use prime_server::pipeline::loopback::FailureKind;
use prime_server::{Job, Outcome, Pipeline, Transport};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stage that appends `tag` to the request and forwards it.
fn append_and_forward(tag: String) -> impl FnMut(&mut Job<'_>) -> Outcome + Clone + Send {
    move |job: &mut Job<'_>| Outcome::forward([(request_text(job) + &tag).into_bytes()])
}

/// A stage that appends `tag` to the request and answers with it.
fn append_and_respond(tag: String) -> impl FnMut(&mut Job<'_>) -> Outcome + Clone + Send {
    move |job: &mut Job<'_>| Outcome::respond((request_text(job) + &tag).into_bytes())
}

/// `stages` stages of two workers each; stage `i` appends `+s{i}`, the last one answers.
fn tagging_pipeline(stages: usize, transport: Transport) -> Pipeline {
    let mut pipeline = Pipeline::new().transport(transport);
    for i in 1..stages {
        pipeline = pipeline.stage(&format!("s{i}"), 2, append_and_forward(format!("+s{i}")));
    }
    let last = format!("s{stages}");
    pipeline.stage(&last, 2, append_and_respond(format!("+{last}")))
}

/// Sends ten jobs at once and checks that each answer carries every stage's tag.
fn assert_every_stage_runs(stages: usize, transport: Transport) {
    let pipeline = TestPipeline::start(tagging_pipeline(stages, transport));
    let tags: String = (1..=stages).map(|i| format!("+s{i}")).collect();
    let ids: Vec<(u64, String)> = (0..10)
        .map(|k| {
            let request = format!("job{k}");
            (pipeline.send(request.as_bytes()), request)
        })
        .collect();
    for (id, request) in ids {
        assert_eq!(text(pipeline.reply_to(id)), format!("{request}{tags}"));
    }
}

#[test]
fn one_stage_answers() {
    assert_every_stage_runs(1, Transport::Inproc);
}

#[test]
fn two_stages_both_run() {
    assert_every_stage_runs(2, Transport::Inproc);
}

#[test]
fn three_stages_all_run() {
    assert_every_stage_runs(3, Transport::Inproc);
}

#[test]
fn three_stages_all_run_over_tcp() {
    assert_every_stage_runs(3, Transport::Tcp("127.0.0.1".into()));
}

#[test]
fn three_stages_all_run_over_ipc() {
    let dir = TempDir::new("ipc");
    assert_every_stage_runs(3, Transport::Ipc(dir.path().to_path_buf()));
}

#[test]
fn a_job_forwarded_in_place_carries_its_new_frame_alone_to_its_own_sender() {
    // Two frames out of the first stage; the second joins them with `Job::forward`,
    // which writes the new frame behind the envelope in the job's own vector (kept by
    // the worker for later jobs); the third sees that one frame, and every answer comes
    // back to the request it belongs to.
    let split = |job: &mut Job<'_>| {
        let text = request_text(job);
        Outcome::forward([text.into_bytes(), b"+s1".to_vec()])
    };
    let join = |job: &mut Job<'_>| {
        let joined: Vec<u8> = job.frames().flatten().copied().collect();
        let count = job.frame_count();
        job.forward(format!("{}+s2({count} frames)", String::from_utf8_lossy(&joined)).as_bytes())
    };
    let last = |job: &mut Job<'_>| {
        let frames = job.frame_count();
        Outcome::respond(format!("{}+s3({frames} frame)", request_text(job)).into_bytes())
    };
    let dir = TempDir::new("ipc");
    let pipeline = TestPipeline::start(
        Pipeline::new()
            .transport(Transport::Ipc(dir.path().to_path_buf()))
            .stage("s1", 2, split)
            .stage("s2", 2, join)
            .stage("s3", 2, last),
    );
    let ids: Vec<(u64, String)> = (0..40)
        .map(|k| {
            let request = format!("job{k}");
            (pipeline.send(request.as_bytes()), request)
        })
        .collect();
    for (id, request) in ids {
        assert_eq!(
            text(pipeline.reply_to(id)),
            format!("{request}+s1+s2(2 frames)+s3(1 frame)")
        );
    }
}

/// A stage that counts its calls in `calls` and then does what `then` does.
fn counted(
    calls: &Arc<AtomicUsize>,
    mut then: impl FnMut(&mut Job<'_>) -> Outcome + Clone + Send,
) -> impl FnMut(&mut Job<'_>) -> Outcome + Clone + Send {
    let calls = calls.clone();
    move |job: &mut Job<'_>| {
        calls.fetch_add(1, Ordering::SeqCst);
        then(job)
    }
}

#[test]
fn an_early_answer_skips_the_later_stages() {
    let calls: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let first = |job: &mut Job<'_>| match job.frame(0) {
        Some(b"early") => Outcome::respond(&b"answered by s1"[..]),
        _ => Outcome::forward([(request_text(job) + "+s1").into_bytes()]),
    };
    let second = append_and_forward("+s2".into());
    let third = append_and_respond("+s3".into());
    let pipeline = TestPipeline::start(
        Pipeline::new()
            .stage("s1", 1, counted(&calls[0], first))
            .stage("s2", 1, counted(&calls[1], second))
            .stage("s3", 1, counted(&calls[2], third)),
    );

    assert_eq!(text(pipeline.ask(b"early")), "answered by s1");
    // A job that goes all the way shows the later stages work and were idle before.
    assert_eq!(text(pipeline.ask(b"full")), "full+s1+s2+s3");
    let counts: Vec<usize> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [2, 1, 1], "calls per stage");
}

#[test]
fn a_panicking_stage_fails_only_its_own_job() {
    let work = |job: &mut Job<'_>| match job.frame(0) {
        Some(b"panic") => panic!("this stage panics on purpose"),
        _ => Outcome::respond(format!("{} by {}", request_text(job), thread_name()).into_bytes()),
    };
    let pipeline = TestPipeline::start(Pipeline::new().stage("fragile", 1, work));

    let failed = failure(pipeline.ask(b"panic"));
    assert_eq!(failed.kind, FailureKind::WorkerPanicked);
    assert_eq!(failed.status, 500);
    assert_eq!(text(pipeline.ask(b"next")), "next by fragile-0");
}

/// More answers than one worker's loopback pipe holds by default (libzmq's high-water
/// marks: 1000 on each side of an inproc pipe).
const MORE_THAN_A_PIPE_HOLDS: usize = 3000;

/// Waits until `counter` reaches `target`.
fn wait_for_count(counter: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + PATIENCE;
    while counter.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "only {} of {target} jobs ran within {PATIENCE:?}",
            counter.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn answers_wait_for_a_front_end_that_reads_late() {
    let done = Arc::new(AtomicUsize::new(0));
    let echo = counted(&done, |job: &mut Job<'_>| {
        Outcome::respond(job.frame(0).unwrap_or_default().to_vec())
    });
    let pipeline = TestPipeline::start(Pipeline::new().stage("echo", 1, echo));

    let ids: Vec<(u64, String)> = (0..MORE_THAN_A_PIPE_HOLDS)
        .map(|k| (pipeline.send(k.to_string().as_bytes()), k.to_string()))
        .collect();
    // Read nothing until the worker has answered every job.
    wait_for_count(&done, MORE_THAN_A_PIPE_HOLDS);
    for (id, request) in ids {
        assert_eq!(text(pipeline.reply_to(id)), request);
    }
}

#[test]
fn stop_returns_while_workers_are_in_long_jobs() {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let work = move |job: &mut Job<'_>| {
        if job.frame(0) == Some(WHOAMI) {
            return whoami();
        }
        let _ = started_tx.send(());
        let _ = ended_tx.send(run_until_interrupted(job));
        Outcome::Abandon
    };
    let mut pipeline = TestPipeline::start(Pipeline::new().stage("long", 2, work));
    pipeline.wait_for_workers(2);
    pipeline.send(b"long");
    pipeline.send(b"long");
    expect_event(&started, "the first long job starts");
    expect_event(&started, "the second long job starts");

    let running = pipeline.take_running();
    let (stopped_tx, stopped) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        running.stop();
        let _ = stopped_tx.send(());
    });
    stopped
        .recv_timeout(PATIENCE)
        .expect("stop() returns while workers are in long jobs");
    for _ in 0..2 {
        assert_eq!(
            expect_event(&ended, "a long job ends"),
            LongJobEnd::Interrupted
        );
    }
}

/// A concurrent stage that holds every job it starts until `release` is set, then
/// answers each with its request and the name of the thread that ran it.
#[derive(Clone)]
struct HeldUntilReleased {
    release: Arc<std::sync::atomic::AtomicBool>,
    started: Arc<AtomicUsize>,
    held: Vec<(u64, String)>,
}

impl prime_server::ConcurrentWork for HeldUntilReleased {
    fn start(&mut self, job: &mut Job<'_>, ticket: u64) -> Option<Outcome> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.held.push((ticket, request_text(job)));
        None
    }

    fn wait(
        &mut self,
        _jobs: Option<std::os::fd::RawFd>,
        timeout: Duration,
        finished: &mut Vec<(u64, Outcome)>,
    ) {
        if self.release.load(Ordering::SeqCst) {
            for (ticket, request) in self.held.drain(..) {
                let answer = format!("{request} by {}", thread_name());
                let frame = prime_server::pipeline::worker::answer_frame(answer.as_bytes());
                finished.push((ticket, Outcome::Respond(frame)));
            }
        }
        // Polls rather than watching the descriptor: each wait is short.
        std::thread::sleep(timeout.min(Duration::from_millis(2)));
    }

    fn abort(&mut self, ticket: u64) {
        self.held.retain(|(held, _)| *held != ticket);
    }
}

#[test]
fn a_concurrent_stage_of_one_thread_keeps_its_credit_and_queue_bound_and_answers_all() {
    // One call at once: the thread holds one job, three more wait in its socket (its
    // credit is four per call), two at the proxy (the bound), and the rest are 503.
    let work = HeldUntilReleased {
        release: Arc::new(Default::default()),
        started: Arc::new(AtomicUsize::new(0)),
        held: Vec::new(),
    };
    let (release, started) = (work.release.clone(), work.started.clone());
    let pipeline = TestPipeline::start(
        Pipeline::new()
            .queue_bound(2)
            .concurrent_stage("held", 1, 1, work),
    );
    let first = pipeline.send(b"job0");
    wait_for_count(&started, 1);
    let ids: Vec<u64> = (1..8)
        .map(|k| pipeline.send(format!("job{k}").as_bytes()))
        .collect();
    for &id in &ids[5..] {
        let refused = failure(pipeline.reply_to(id));
        assert_eq!(refused.kind, FailureKind::QueueFull, "{refused:?}");
        assert_eq!(refused.status, 503);
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "more than one call at once"
    );
    release.store(true, Ordering::SeqCst);
    assert_eq!(text(pipeline.reply_to(first)), "job0 by held-0");
    for (k, &id) in ids[..5].iter().enumerate() {
        assert_eq!(
            text(pipeline.reply_to(id)),
            format!("job{} by held-0", k + 1)
        );
    }
}
