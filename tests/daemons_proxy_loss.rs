//! `kill -9` of a stage's proxy while it holds queued requests: those are answered 503
//! soon after (not 504 at the request timeout), the request its worker is running is
//! still answered 200 when the work is done, and no request is answered twice.

mod daemons;

use daemons::*;
use std::thread;
use std::time::{Duration, Instant};

/// Longer than any wait below: a 504 would mean the census did not answer.
const REQUEST_TIMEOUT_S: &str = "120";

/// A deployment with one compute worker of credit 1, started with `httpd` options, and
/// a connection whose long request that worker is running: whatever is sent next waits
/// in the compute stage's proxy.
fn with_the_compute_worker_busy(httpd: Vec<String>) -> (Deployment, Client) {
    let d = Deployment::start(Options {
        httpd,
        compute: args(&["--prefetch", "1"]),
        compute_concurrency: 1,
        ..Options::default()
    });
    let cpu = d.compute.as_ref().expect("compute").cpu_ticks();
    let mut running = Client::connect(d.ports.http).expect("connect");
    running.send_get(&is_prime(PRIME_2_63)).expect("send");
    assert!(
        d.compute
            .as_ref()
            .expect("compute")
            .wait_busy(cpu, 20, Duration::from_secs(30)),
        "the long request never reached the compute worker"
    );
    (d, running)
}

#[test]
fn the_requests_a_killed_proxy_held_are_answered_503_and_running_ones_complete() {
    // The one compute worker runs a long request...
    let (mut d, mut running) =
        with_the_compute_worker_busy(args(&["--request-timeout", REQUEST_TIMEOUT_S]));
    let port = d.ports.http;
    // ...so two more wait in the compute stage's proxy.
    let queued_numbers = [1_009u64, 1_013];
    let mut queued: Vec<Client> = queued_numbers
        .iter()
        .map(|&n| {
            let mut client = Client::connect(port).expect("connect");
            client.send_get(&is_prime(n)).expect("send");
            client
        })
        .collect();
    thread::sleep(Duration::from_millis(500));

    let killed_at = Instant::now();
    d.proxy2.as_mut().expect("proxy2").kill9();

    for (client, n) in queued.iter_mut().zip(queued_numbers) {
        let response = client
            .read_response(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the request for {n} queued in the killed proxy: {e}"));
        let after = killed_at.elapsed();
        println!("a request held by the killed proxy was answered {after:?} after the kill");
        assert_eq!(response.status, 503, "{response:?}");
        assert!(
            response.body.contains("proxy was lost"),
            "the 503 does not say why: {response:?}"
        );
        assert!(
            after < Duration::from_secs(15),
            "answered only {after:?} after the kill"
        );
    }

    let response = running
        .read_response(Duration::from_secs(120))
        .expect("the running request was not answered");
    println!(
        "the running request was answered {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.possible_prime(), Some(PRIME_2_63), "{response:?}");

    for client in queued.iter_mut().chain([&mut running]) {
        assert_eq!(
            client.unread_bytes(Duration::from_millis(500)),
            0,
            "a second answer on one connection"
        );
    }
    let httpd = d.httpd.as_ref().expect("httpd").stderr();
    assert!(
        !httpd.contains("dropped a malformed census message"),
        "{httpd}"
    );
}

#[test]
fn a_job_run_lost_with_a_proxy_is_run_again() {
    let db = scratch_path("proxy-loss-jobs", "sqlite");
    // The compute worker is busy, so the job's run waits in the compute stage's proxy.
    let (mut d, mut running) =
        with_the_compute_worker_busy(args(&["--jobs-db", &db.display().to_string()]));
    let port = d.ports.http;
    let n = 1_019u64;
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(n), &["Prefer: respond-async"])
        .expect("send");
    let location = location_of(
        &client
            .read_response(Duration::from_secs(30))
            .expect("a 202"),
    );
    thread::sleep(Duration::from_millis(500));

    d.proxy2.as_mut().expect("proxy2").kill9();

    // The lost run is failed as transient and queued again: the job says so.
    let retried = poll_until(Duration::from_secs(30), || {
        let status = get(port, &location, Duration::from_secs(10)).ok()?.json();
        (status["attempts"].as_u64() >= Some(2)
            || status["error"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("proxy was lost")))
        .then_some(status)
    });
    assert!(
        retried.is_some(),
        "the job's lost run was not retried: {}",
        get(port, &location, Duration::from_secs(10))
            .map(|r| r.body)
            .unwrap_or_default()
    );

    d.start_proxy2();
    let status = wait_until_ended(port, &location);
    assert_eq!(status["state"], "succeeded", "{status}");
    let result = get(port, &format!("{location}/result"), Duration::from_secs(10)).expect("result");
    assert_eq!(result.possible_prime(), Some(n), "{result:?}");
    let response = running
        .read_response(Duration::from_secs(120))
        .expect("the running request was not answered");
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn requests_queued_in_a_killed_first_proxy_are_answered_503() {
    // No workers: requests wait in the first proxy's queue.
    let mut d = Deployment::start(Options {
        httpd: args(&["--request-timeout", REQUEST_TIMEOUT_S]),
        workers: false,
        ..Options::default()
    });
    let port = d.ports.http;
    let mut clients: Vec<Client> = (0..3u64)
        .map(|i| {
            let mut client = Client::connect(port).expect("connect");
            client.send_get(&is_prime(101 + 2 * i)).expect("send");
            client
        })
        .collect();
    thread::sleep(Duration::from_millis(500));

    let killed_at = Instant::now();
    d.proxy1.as_mut().expect("proxy1").kill9();

    for client in &mut clients {
        let response = client
            .read_response(Duration::from_secs(60))
            .expect("a request queued in the killed first proxy");
        let after = killed_at.elapsed();
        println!("a request queued in the first proxy was answered {after:?} after the kill");
        assert_eq!(response.status, 503, "{response:?}");
        assert!(response.body.contains("proxy was lost"), "{response:?}");
        assert!(
            after < Duration::from_secs(15),
            "answered only {after:?} after the kill"
        );
        assert_eq!(client.unread_bytes(Duration::from_millis(200)), 0);
    }
}
