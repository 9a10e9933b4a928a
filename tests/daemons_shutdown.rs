//! Graceful shutdown as an operator sees it: SIGTERM lets the work in flight finish,
//! refuses new work, and every daemon exits 0 within its drain time, whatever the order
//! and whether or not its peers are still there.

mod daemons;

use daemons::*;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const READ: Duration = Duration::from_secs(30);
/// What every daemon gets as `--drain-seconds` in the ordering tests.
const DRAIN: u64 = 3;
/// How long past its drain a daemon may take to exit: generous, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(10);

fn drain_args(seconds: u64) -> Vec<String> {
    vec!["--drain-seconds".into(), seconds.to_string()]
}

/// Every daemon drains for `seconds`.
fn draining_options(seconds: u64) -> Options {
    let mut o = Options::default();
    o.httpd.extend(drain_args(seconds));
    o.proxyd.extend(drain_args(seconds));
    o.parse.extend(drain_args(seconds));
    o.compute.extend(drain_args(seconds));
    o
}

/// SIGTERM, then the daemon must exit 0 within `within`.
fn terminate(daemon: &mut Daemon, within: Duration) {
    daemon.signal("TERM");
    expect_clean_exit(daemon, within);
}

fn expect_clean_exit(daemon: &mut Daemon, within: Duration) {
    let status = daemon.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "{} still runs {within:?} after SIGTERM:\n{}",
            daemon.name,
            daemon.stderr()
        )
    });
    assert!(
        status.success(),
        "{} exited {status}:\n{}",
        daemon.name,
        daemon.stderr()
    );
    assert!(!daemon.stderr().contains("panicked"), "{}", daemon.stderr());
}

/// A new connection during a drain is refused, or closed before it is served: a request
/// sent on it gets no answer.
fn assert_turned_away(port: u16) {
    let mut client = match Client::connect(port) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
        Err(e) => panic!("connecting during the drain: {e}"),
        Ok(client) => client,
    };
    // The write may fail if the server has already closed the connection.
    let _ = client.send_get(&is_prime(7));
    match client.read_response(Duration::from_secs(10)) {
        Ok(response) => panic!("a new connection was served during the drain: {response:?}"),
        Err(e) => assert_ne!(
            e.kind(),
            ErrorKind::TimedOut,
            "a new connection during the drain was left open"
        ),
    }
}

/// Starts a slow request on its own connection; the thread returns its response.
fn slow_request(port: u16, n: u64) -> thread::JoinHandle<std::io::Result<Response>> {
    thread::spawn(move || Client::connect(port)?.get(&is_prime(n), READ))
}

/// Starts a slow request for `n` and waits until the compute worker is busy with it.
fn slow_request_at_work(d: &Deployment, n: u64) -> thread::JoinHandle<std::io::Result<Response>> {
    let compute = d.compute.as_ref().expect("compute");
    let cpu = compute.cpu_ticks();
    let slow = slow_request(d.ports.http, n);
    assert!(
        compute.wait_busy(cpu, 20, READ),
        "the slow request never reached the compute worker"
    );
    slow
}

/// Waits for the slow request's answer, which must be 200 and for `n`.
fn assert_answered(slow: thread::JoinHandle<std::io::Result<Response>>, n: u64) {
    let response = slow.join().expect("client").expect("the request's answer");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.possible_prime(), Some(n), "{response:?}");
}

/// Sends SIGTERM to the front end and waits until it says it drains.
fn start_httpd_drain(d: &mut Deployment) -> &mut Daemon {
    let httpd = d.httpd.as_mut().expect("httpd");
    httpd.signal("TERM");
    assert!(
        httpd.wait_for_log("draining:", READ),
        "no drain logged: {}",
        httpd.stderr()
    );
    httpd
}

#[test]
fn sigterm_to_httpd_finishes_the_request_in_flight_and_refuses_new_connections() {
    let mut d = Deployment::start(Options {
        httpd: drain_args(30),
        ..Options::default()
    });
    let port = d.ports.http;
    let slow = slow_request_at_work(&d, PRIME_2_61);
    let httpd = start_httpd_drain(&mut d);
    assert_turned_away(port);
    assert_turned_away(port);
    assert!(
        !slow.is_finished(),
        "the slow request ended before the check"
    );

    assert_answered(slow, PRIME_2_61);
    expect_clean_exit(httpd, Duration::from_secs(30) + MARGIN);
}

#[test]
fn sigterm_with_drain_rejects_answers_new_requests_503_and_closes() {
    let mut d = Deployment::start(Options {
        httpd: args(&["--drain-seconds", "30", "--drain-rejects"]),
        ..Options::default()
    });
    let port = d.ports.http;
    let mut idle = Client::connect(port).expect("connect");
    let first = idle.get(&is_prime(7), READ).expect("an answer");
    assert_eq!(first.status, 200, "{first:?}");

    let slow = slow_request_at_work(&d, PRIME_2_61);
    let httpd = start_httpd_drain(&mut d);

    // The health check says so, and keeps the connection.
    let health = idle.get("/health", READ).expect("health during the drain");
    assert_eq!(health.status, 503, "{health:?}");
    assert_eq!(health.json()["status"], "draining", "{health:?}");
    // A new request on the open keep-alive connection is refused, and the connection closed.
    let refused = idle.get(&is_prime(11), READ).expect("an answer");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.header("connection").map(str::to_ascii_lowercase),
        Some("close".to_string()),
        "{refused:?}"
    );
    assert!(
        idle.closed_by_server(Duration::from_secs(10)),
        "the connection stayed open after Connection: close"
    );
    assert!(
        !slow.is_finished(),
        "the slow request ended before the check"
    );

    assert_answered(slow, PRIME_2_61);
    expect_clean_exit(httpd, Duration::from_secs(30) + MARGIN);
}

#[test]
fn sigterm_to_a_worker_mid_job_still_answers_the_job() {
    let mut d = Deployment::start(Options {
        compute_concurrency: 1,
        compute: drain_args(60),
        // Short enough that a worker whose heartbeats stop during its drain is evicted
        // (and its job answered 503) long before the job ends.
        proxyd: args(&["--heartbeat-timeout", "2"]),
        ..Options::default()
    });
    let slow = slow_request_at_work(&d, PRIME_2_61);
    let compute = d.compute.as_mut().expect("compute");
    compute.signal("TERM");
    assert_answered(slow, PRIME_2_61);
    expect_clean_exit(compute, Duration::from_secs(20));
}

/// Cheap requests on two keep-alive connections until `stop`; returns what went wrong
/// that a client would call a hang (a read that timed out). Refused and closed
/// connections are expected while daemons stop.
fn background_traffic(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let hangs = Arc::new(Mutex::new(Vec::new()));
        let lanes: Vec<_> = (0..2)
            .map(|_| {
                let (stop, hangs) = (stop.clone(), hangs.clone());
                thread::spawn(move || {
                    let mut client = None;
                    while !stop.load(Ordering::Relaxed) {
                        if client.is_none() {
                            client = Client::connect(port).ok();
                        }
                        let Some(c) = client.as_mut() else {
                            thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        match c.get(&is_prime(7), Duration::from_secs(20)) {
                            Ok(_) => thread::sleep(Duration::from_millis(10)),
                            Err(e) if e.kind() == ErrorKind::TimedOut => {
                                hangs.lock().unwrap().push(e.to_string());
                                client = None;
                            }
                            Err(_) => client = None,
                        }
                    }
                })
            })
            .collect();
        for lane in lanes {
            lane.join().expect("lane");
        }
        let hangs = hangs.lock().unwrap().clone();
        hangs
    })
}

fn drain_within() -> Duration {
    Duration::from_secs(DRAIN) + MARGIN
}

/// SIGTERM to one daemon after the other, each exiting 0 before the next is signalled:
/// front end first (httpd, proxy1, proxy2, parse, compute) or workers first (the reverse).
fn sigterm_in_order(workers_first: bool, traffic: bool) {
    let mut d = Deployment::start(draining_options(DRAIN));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = traffic.then(|| background_traffic(d.ports.http, stop.clone()));
    if traffic.is_some() {
        thread::sleep(Duration::from_millis(500));
    }
    let mut order = d.all_mut();
    if workers_first {
        order.reverse();
    }
    for daemon in order {
        terminate(daemon, drain_within());
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(traffic) = traffic {
        let hangs = traffic.join().expect("traffic");
        assert!(hangs.is_empty(), "requests hung: {hangs:?}");
    }
}

#[test]
fn sigterm_front_end_first_without_traffic() {
    sigterm_in_order(false, false);
}

#[test]
fn sigterm_front_end_first_with_traffic() {
    sigterm_in_order(false, true);
}

#[test]
fn sigterm_workers_first_without_traffic() {
    sigterm_in_order(true, false);
}

#[test]
fn sigterm_workers_first_with_traffic() {
    sigterm_in_order(true, true);
}

#[test]
fn sigterm_to_every_daemon_at_once_with_traffic() {
    let mut d = Deployment::start(draining_options(DRAIN));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = background_traffic(d.ports.http, stop.clone());
    thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    for daemon in d.all_mut() {
        daemon.signal("TERM");
    }
    for daemon in d.all_mut() {
        expect_clean_exit(daemon, drain_within().saturating_sub(began.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    let hangs = traffic.join().expect("traffic");
    assert!(hangs.is_empty(), "requests hung: {hangs:?}");
}

#[test]
fn sigterm_after_the_proxies_were_killed() {
    let mut d = Deployment::start(draining_options(DRAIN));
    d.proxy1.as_mut().expect("proxy1").kill9();
    d.proxy2.as_mut().expect("proxy2").kill9();
    // The front end still has a request the dead proxies will never answer.
    let mut client = Client::connect(d.ports.http).expect("connect");
    client.send_get(&is_prime(7)).expect("send");
    for daemon in [&mut d.parse, &mut d.compute, &mut d.httpd]
        .into_iter()
        .flatten()
    {
        terminate(daemon, drain_within());
    }
}

#[test]
fn sigterm_after_the_front_end_and_workers_were_killed() {
    let mut d = Deployment::start(draining_options(DRAIN));
    for daemon in [&mut d.httpd, &mut d.parse, &mut d.compute]
        .into_iter()
        .flatten()
    {
        daemon.kill9();
    }
    for daemon in [&mut d.proxy1, &mut d.proxy2].into_iter().flatten() {
        terminate(daemon, drain_within());
    }
}

#[test]
fn sigterm_after_the_workers_were_killed_mid_job() {
    // A proxy whose worker died holding a job drains once it has answered that job.
    let mut d = Deployment::start(draining_options(DRAIN));
    let port = d.ports.http;
    let cpu = d.compute.as_ref().expect("compute").cpu_ticks();
    let slow = slow_request(port, PRIME_2_63);
    assert!(
        d.compute
            .as_ref()
            .expect("compute")
            .wait_busy(cpu, 20, READ),
        "the slow request never reached the compute worker"
    );
    d.compute.as_mut().expect("compute").kill9();
    d.parse.as_mut().expect("parse").kill9();
    for daemon in [&mut d.proxy2, &mut d.proxy1, &mut d.httpd]
        .into_iter()
        .flatten()
    {
        terminate(daemon, drain_within());
    }
    // The client was answered (503) or hung up on; never left waiting.
    match slow.join().expect("client") {
        Ok(response) => assert_eq!(response.status, 503, "{response:?}"),
        Err(e) => assert_ne!(e.kind(), ErrorKind::TimedOut, "the request hung: {e}"),
    }
}
