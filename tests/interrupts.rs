//! Interrupts and deadlines: a job interrupted while it waits is never started and never
//! answered, and a long job polling `job.interrupted()` ends early when its interrupt is
//! published or its deadline passes, after which its worker takes the next job.

mod common;

use common::{
    expect_event, run_until_interrupted, text, Gate, LongJobEnd, TestPipeline, LONG_JOB_CAP,
};
use crossbeam_channel::Receiver;
use prime_server::{Job, Outcome, Pipeline};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn an_interrupted_job_is_never_started() {
    let gate = Gate::default();
    let b_runs = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = crossbeam_channel::unbounded();
    let work = {
        let (gate, b_runs) = (gate.clone(), b_runs.clone());
        move |job: &mut Job<'_>| {
            match job.frame(0) {
                Some(b"A") => {
                    let _ = started_tx.send(());
                    gate.wait(job);
                }
                Some(b"B") => {
                    b_runs.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
            Outcome::respond(job.frame(0).unwrap_or_default().to_vec())
        }
    };
    let pipeline = TestPipeline::start(Pipeline::new().stage("solo", 1, work));

    let a = pipeline.send(b"A");
    expect_event(&started, "job A starts");
    let b = pipeline.reserve_id();
    pipeline.announce_interrupt(b);
    pipeline.send_as(b, b"B");
    gate.open();
    assert_eq!(text(pipeline.reply_to(a)), "A");
    // One worker takes jobs in order, so once C is answered B has had its turn.
    assert_eq!(text(pipeline.ask(b"C")), "C");
    assert_eq!(b_runs.load(Ordering::SeqCst), 0, "B's work ran");
    assert!(!pipeline.was_answered(b), "B was answered");
}

/// One worker: `long` polls `interrupted()` until it says so (reporting how it ended on
/// the returned channel, after its request id on the first), anything else is echoed.
fn long_job_pipeline() -> (TestPipeline, Receiver<u64>, Receiver<LongJobEnd>) {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let work = move |job: &mut Job<'_>| {
        if job.frame(0) != Some(b"long") {
            return Outcome::respond(job.frame(0).unwrap_or_default().to_vec());
        }
        let _ = started_tx.send(job.envelope().request_id);
        let _ = ended_tx.send(run_until_interrupted(job));
        Outcome::Abandon
    };
    let pipeline = TestPipeline::start(Pipeline::new().stage("patient", 1, work));
    (pipeline, started, ended)
}

#[test]
fn a_long_job_ends_early_when_its_interrupt_is_published() {
    let (pipeline, started, ended) = long_job_pipeline();

    let long = pipeline.send(b"long");
    assert_eq!(expect_event(&started, "the long job starts"), long);
    pipeline.announce_interrupt(long);
    assert_eq!(
        expect_event(&ended, "the long job ends"),
        LongJobEnd::Interrupted
    );
    assert_eq!(text(pipeline.ask(b"next")), "next");
    assert!(!pipeline.was_answered(long));
}

#[test]
fn a_long_job_ends_early_when_its_deadline_passes() {
    let (pipeline, started, ended) = long_job_pipeline();

    // Long enough that the job surely starts before it, far shorter than LONG_JOB_CAP.
    let timeout = Duration::from_secs(2);
    assert!(timeout < LONG_JOB_CAP);
    let long = pipeline.send_with_timeout(b"long", timeout);
    assert_eq!(expect_event(&started, "the long job starts"), long);
    assert_eq!(
        expect_event(&ended, "the long job ends"),
        LongJobEnd::Interrupted
    );
    assert_eq!(text(pipeline.ask(b"next")), "next");
    assert!(!pipeline.was_answered(long));
}
