//! A proxy that was paused (SIGSTOP, a stalled or overloaded machine, a VM migration)
//! longer than its heartbeat timeout must not take its workers for dead: their
//! heartbeats are waiting in its own socket.

mod daemons;

use daemons::*;
use std::thread;
use std::time::Duration;

const READ: Duration = Duration::from_secs(60);

#[test]
fn a_proxy_paused_past_the_heartbeat_timeout_keeps_its_busy_workers() {
    let d = Deployment::start(Options {
        compute_concurrency: 1,
        proxyd: args(&["--heartbeat-timeout", "1"]),
        ..Options::default()
    });
    let port = d.ports.http;
    let compute = d.compute.as_ref().expect("compute");
    let cpu = compute.cpu_ticks();
    let slow = thread::spawn(move || Client::connect(port)?.get(&is_prime(PRIME_2_61), READ));
    assert!(
        compute.wait_busy(cpu, 20, Duration::from_secs(20)),
        "the slow request never reached the compute worker"
    );

    let proxy2 = d.proxy2.as_ref().expect("proxy2");
    proxy2.signal("STOP");
    thread::sleep(Duration::from_secs(3));
    proxy2.signal("CONT");

    let response = slow.join().expect("client").expect("an answer");
    let proxy2 = d.proxy2.as_ref().expect("proxy2");
    assert_eq!(
        response.status,
        200,
        "{response:?}\nproxy2:\n{}",
        proxy2.stderr()
    );
    assert_eq!(response.possible_prime(), Some(PRIME_2_61), "{response:?}");
    assert!(
        !proxy2.stderr().contains("missed its heartbeats"),
        "proxy2 evicted a live worker:\n{}",
        proxy2.stderr()
    );
}
