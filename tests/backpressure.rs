//! Back-pressure between stages: a lagging stage is protected by its proxy's queue bound,
//! not by libzmq's default pipe high-water marks.

mod common;

use common::{Front, HandWired, PATIENCE};
use prime_server::pipeline::loopback::FailureKind;
use prime_server::pipeline::proxy::{Proxy, ProxyConfig};
use prime_server::pipeline::worker::WorkerConfig;
use prime_server::{FrontSockets, Job, Outcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// More jobs than the pipe from one worker to the next proxy holds by default (libzmq's
/// high-water marks: 1000 on each side of an inproc pipe), far fewer than that proxy's
/// queue bound (10,000 by default).
const JOBS: usize = 3000;

/// Waits until `counter` reaches `target`.
fn wait_for_count(counter: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + PATIENCE;
    while counter.load(Ordering::SeqCst) < target {
        assert!(Instant::now() < deadline, "only {counter:?} of {target}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A worker forwards with `DONTWAIT`, so when the next stage's proxy falls ~2000 jobs
/// behind (e.g. its thread is descheduled on a busy machine) the forward fails and the
/// job is answered 503 `NextStageUnavailable`, although the proxy's queue bound, the
/// documented limit for answering 503, is far from reached. `prime_serverd 1000000 1`
/// (4096 requests in flight) hits this on a loaded 2-core machine.
///
/// Here the second proxy is bound but starts reading only after the first stage has
/// forwarded every job.
#[test]
fn a_lagging_next_stage_refuses_jobs_below_its_queue_bound() {
    let ctx = zmq::Context::new();
    let (loopback, interrupt) = ("inproc://lag-loopback", "inproc://lag-interrupt");
    let first = ProxyConfig::new(
        "inproc://first-up",
        "inproc://first-down",
        Some(loopback.to_string()),
    );
    let second = ProxyConfig::new(
        "inproc://second-up",
        "inproc://second-down",
        Some(loopback.to_string()),
    );
    let queue_bound = second.queue_bound;
    let (first, second) = (
        Proxy::bind(&ctx, first).expect("the first proxy binds"),
        Proxy::bind(&ctx, second).expect("the second proxy binds"),
    );
    let mut wired = HandWired::default();
    wired.run_proxy(first);
    let forwarded = Arc::new(AtomicUsize::new(0));
    let forward = {
        let forwarded = forwarded.clone();
        move |job: &mut Job<'_>| {
            forwarded.fetch_add(1, Ordering::SeqCst);
            Outcome::Forward(job.take_frames())
        }
    };
    let to_second = Some("inproc://second-up".to_string());
    let config = WorkerConfig::new("inproc://first-down", to_second, loopback, interrupt);
    wired.spawn_pool(&ctx, "forward", &config, 1, forward);
    let front = Front::new(
        FrontSockets::bind(&ctx, "inproc://first-up", loopback, interrupt)
            .expect("the front binds"),
    );

    let ids: Vec<u64> = (0..JOBS)
        .map(|k| front.send(k.to_string().as_bytes()))
        .collect();
    wait_for_count(&forwarded, JOBS);
    wired.run_proxy(second);
    let echo = |job: &mut Job<'_>| Outcome::respond(job.frame(0).unwrap_or_default().to_vec());
    let config = WorkerConfig::new("inproc://second-down", None, loopback, interrupt);
    wired.spawn_pool(&ctx, "echo", &config, 1, echo);

    let refused = front
        .replies_to(&ids)
        .into_iter()
        .filter(|reply| matches!(reply, Err(f) if f.kind == FailureKind::NextStageUnavailable))
        .count();
    assert_eq!(
        refused, 0,
        "{refused} of {JOBS} jobs refused by a next stage whose queue bound is {queue_bound}"
    );
}
