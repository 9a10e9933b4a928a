//! A busy front end batches its process's wake-ups (`base::sched`): with many WebSocket
//! messages in flight every thread of `prime_echod` runs `SCHED_BATCH`, and once the
//! load is gone they preempt again (`SCHED_OTHER`); `--no-batch-wakeups` never switches.
//! The policy is read where any operator would read it, `/proc/PID/task/*/stat`, and
//! every message's echo is checked on the wire. The switch's own logic (the thresholds,
//! the trials of each policy and the quiet window) is checked on this test process's
//! threads.
//!
//! Every wait is bounded; nothing asserts on elapsed time.

mod daemons;
mod websocket_common;

use daemons::{free_port, poll_until, tcp, Daemon};
use prime_server::base::sched::Batching;
use std::time::{Duration, Instant};
use websocket_common::*;

/// Held by each test: a child process takes the policy of the thread that starts it, so
/// no daemon may start while the switch's own test has this process batching.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const SCHED_OTHER: i64 = 0;
const SCHED_BATCH: i64 = 3;
const SCHED_IDLE: i64 = 5;

/// The scheduling policy of every thread of process `pid` (field 41 of each task's
/// `stat`), by thread id.
fn policies(pid: u32) -> Vec<(u32, i64)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The command name (field 2) may hold spaces: count from its ')'.
        let after = &stat[stat.rfind(')').map_or(0, |at| at + 2)..];
        let policy = after.split(' ').nth(38).and_then(|p| p.parse().ok());
        let tid = task.file_name().to_string_lossy().parse().ok();
        if let (Some(tid), Some(policy)) = (tid, policy) {
            found.push((tid, policy));
        }
    }
    found
}

/// 48 sockets on `prime_echod`, each sending 4 messages at once per round (192 in
/// flight, past `Batching::ABOVE`); `check` is called after each round's sends, with
/// the answers still to come, until it says stop or 200 rounds are done. Every echo
/// is checked.
fn load(port: u16, mut check: impl FnMut() -> bool) {
    let mut sockets: Vec<WsClient> = (0..48).map(|_| WsClient::open(port, "/echo")).collect();
    for round in 0..200 {
        for (i, socket) in sockets.iter_mut().enumerate() {
            for k in 0..4 {
                socket.send_text(&format!("{round}.{i}.{k}"));
            }
        }
        let stop = check();
        for (i, socket) in sockets.iter_mut().enumerate() {
            for k in 0..4 {
                let frame = socket.frame();
                assert_eq!(frame.opcode, 1, "{frame:?}");
                assert_eq!(frame.payload, format!("{round}.{i}.{k}").as_bytes());
            }
        }
        if stop {
            return;
        }
    }
}

#[test]
fn a_busy_front_end_batches_every_thread_and_a_quiet_one_preempts_again() {
    let _alone = one_at_a_time();
    let port = free_port();
    let args: Vec<String> = [tcp(port), "2".into(), "--ws-ping".into(), "0".into()].into();
    let echod = Daemon::start_listening("batch-wakeups", env!("CARGO_BIN_EXE_prime_echod"), &args);
    let pid = echod.pid();
    assert!(
        policies(pid).iter().all(|&(_, p)| p == SCHED_OTHER),
        "{:?}",
        policies(pid)
    );
    let mut batched = Vec::new();
    load(port, || {
        batched = policies(pid);
        batched.iter().all(|&(_, p)| p == SCHED_BATCH)
    });
    assert!(
        batched.len() > 5 && batched.iter().all(|&(_, p)| p == SCHED_BATCH),
        "under load every thread batches: {batched:?}"
    );
    // Quiet: back to preempting within the quiet window and a sweep or two.
    let back = poll_until(Duration::from_secs(10), || {
        let now = policies(pid);
        now.iter().all(|&(_, p)| p == SCHED_OTHER).then_some(now)
    });
    assert!(
        back.is_some(),
        "still batching when idle: {:?}",
        policies(pid)
    );
    // And a lone message is answered as before.
    let mut lone = WsClient::open(port, "/echo");
    lone.send_text("alone");
    assert_eq!(lone.frame().payload, b"alone");
}

#[test]
fn no_batch_wakeups_keeps_every_thread_preempting() {
    let _alone = one_at_a_time();
    let port = free_port();
    let args: Vec<String> = [
        tcp(port),
        "2".into(),
        "--ws-ping".into(),
        "0".into(),
        "--no-batch-wakeups".into(),
    ]
    .into();
    let echod =
        Daemon::start_listening("no-batch-wakeups", env!("CARGO_BIN_EXE_prime_echod"), &args);
    let pid = echod.pid();
    keeps_policy_under_load(port, pid, SCHED_OTHER);
}

#[test]
fn a_policy_the_operator_chose_is_kept_under_load() {
    let _alone = one_at_a_time();
    let port = free_port();
    // chrt(1) starts the daemon under SCHED_IDLE, as `chrt -i 0` or systemd's
    // CPUSchedulingPolicy=idle would.
    let mut command = std::process::Command::new("chrt");
    command
        .args(["-i", "0", env!("CARGO_BIN_EXE_prime_echod")])
        .args([tcp(port), "2".into(), "--ws-ping".into(), "0".into()])
        .env("RUST_LOG", "info");
    let mut echod = Daemon::start_command("chosen-policy", command);
    assert!(
        echod.wait_for_log("listening for Http on", Duration::from_secs(20)),
        "{}",
        echod.stderr()
    );
    let pid = echod.pid();
    keeps_policy_under_load(port, pid, SCHED_IDLE);
}

/// The calling thread's policy.
fn policy() -> i32 {
    // SAFETY: asks for the calling thread's policy; no pointer.
    unsafe { libc::sched_getscheduler(0) }
}

#[test]
fn a_busy_switch_keeps_the_faster_policy_and_stops_after_a_quiet_window() {
    let _alone = one_at_a_time();
    let t0 = Instant::now();
    let trial = Batching::TRIAL;
    let mut batching = Batching::new(true);
    batching.observe(Batching::ABOVE - 1, 0, t0);
    assert!(!batching.is_on());
    assert_eq!(policy(), libc::SCHED_OTHER);
    // Busy: the trial of batched wake-ups first.
    batching.observe(Batching::ABOVE, 0, t0);
    assert!(batching.is_on());
    assert_eq!(policy(), libc::SCHED_BATCH);
    // A thread started now takes the policy; it is switched with the rest.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (told, hear) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        told.send(policy()).unwrap();
        wait.recv().unwrap();
        policy()
    });
    assert_eq!(hear.recv().unwrap(), libc::SCHED_BATCH);
    // 1,000 requests in the batched trial, then the preempting trial.
    batching.observe(Batching::ABOVE, 1_000, t0 + trial);
    assert!(!batching.is_on());
    assert_eq!(policy(), libc::SCHED_OTHER);
    // 500 in the preempting trial: batched wins, and is kept for HOLD.
    batching.observe(Batching::ABOVE, 1_500, t0 + 2 * trial);
    assert!(batching.is_on());
    let hold_end = t0 + 2 * trial + Batching::HOLD;
    batching.observe(Batching::ABOVE, 5_000, hold_end - Duration::from_millis(1));
    assert!(batching.is_on());
    // The next pair of trials: batched slower this time (100 against 2,000).
    batching.observe(Batching::ABOVE, 5_000, hold_end);
    assert!(batching.is_on(), "each pair begins with batched wake-ups");
    batching.observe(Batching::ABOVE, 5_100, hold_end + trial);
    assert!(!batching.is_on());
    batching.observe(Batching::ABOVE, 7_100, hold_end + 2 * trial);
    assert!(!batching.is_on(), "preempting was faster: kept");
    assert_eq!(policy(), libc::SCHED_OTHER);
    // The next pair: batched faster again.
    let next = hold_end + 2 * trial + Batching::HOLD;
    batching.observe(Batching::ABOVE, 7_100, next);
    assert!(batching.is_on());
    assert_eq!(policy(), libc::SCHED_BATCH);
    // A front end that ends counts itself out.
    drop(batching);
    assert_eq!(policy(), libc::SCHED_OTHER);
    // Quiet: batched wake-ups won their trial, then the load falls under the low mark;
    // they stop once it has stayed there for a whole window.
    let t1 = Instant::now();
    let mut batching = Batching::new(true);
    batching.observe(Batching::ABOVE, 0, t1);
    batching.observe(Batching::ABOVE, 1_000, t1 + trial);
    batching.observe(Batching::ABOVE, 1_500, t1 + 2 * trial);
    assert!(batching.is_on());
    let low = t1 + 2 * trial + Batching::QUIET;
    batching.observe(Batching::BELOW - 1, 1_500, low);
    assert!(batching.is_on(), "the window just ended had the high mark");
    batching.observe(0, 1_500, low + Batching::QUIET / 2);
    assert!(batching.is_on());
    batching.observe(0, 1_500, low + Batching::QUIET);
    assert!(!batching.is_on());
    assert_eq!(policy(), libc::SCHED_OTHER);
    go.send(()).unwrap();
    assert_eq!(other.join().unwrap(), libc::SCHED_OTHER);
    // A switch turned off never batches.
    let mut off = Batching::new(false);
    off.observe(10 * Batching::ABOVE, 0, Instant::now());
    assert!(!off.is_on());
    assert_eq!(policy(), libc::SCHED_OTHER);
}

/// Loads the server on `port` for 20 rounds and asserts that every thread of `pid` runs
/// under `policy` at each.
fn keeps_policy_under_load(port: u16, pid: u32, policy: i64) {
    let mut rounds = 0;
    load(port, || {
        let now = policies(pid);
        assert!(now.iter().all(|&(_, p)| p == policy), "{now:?}");
        rounds += 1;
        rounds == 20
    });
    assert_eq!(rounds, 20);
}
