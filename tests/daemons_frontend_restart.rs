//! The front end restarted while workers still hold its predecessor's requests: the
//! answers to those old requests must not reach the new front end's clients, even though
//! the new front end numbers its requests and connections from 1 again.

mod daemons;

use daemons::*;
use std::thread;
use std::time::Duration;

const READ: Duration = Duration::from_secs(30);
const DROPPED: &str = "dropped an answer meant for an earlier run";

#[test]
fn a_restarted_front_end_never_delivers_an_old_answer() {
    let mut d = Deployment::start(Options {
        // Both compute workers will be busy with old requests, so the new front end's
        // requests wait (in flight, with colliding ids) while the old answers come back.
        compute_concurrency: 2,
        ..Options::default()
    });
    let port = d.ports.http;

    let compute_cpu = d.compute.as_ref().expect("compute").cpu_ticks();
    let old: Vec<_> = [PRIME_2_61, PRIME_2_61_B]
        .into_iter()
        .map(|n| {
            thread::spawn(move || {
                let mut client = Client::connect(port).expect("connect");
                client.send_get(&is_prime(n)).expect("send");
                // The front end dies before it answers; the client sees the hang-up.
                client.read_response(READ)
            })
        })
        .collect();
    let compute = d.compute.as_ref().expect("compute");
    assert!(
        compute.wait_busy(compute_cpu, 30, Duration::from_secs(20)),
        "the compute workers never got busy with the old requests"
    );

    d.httpd.as_mut().expect("httpd").kill9();
    for t in old {
        let outcome = t.join().expect("old client");
        assert!(
            outcome.is_err(),
            "an answer from a dead front end: {outcome:?}"
        );
    }
    // The new front end logs the answers it drops at debug level.
    let args = d.httpd_args();
    d.httpd = Some(Daemon::start_with_log_level(
        "httpd-restarted",
        HTTPD,
        &args,
        "info,prime_server::server=debug",
    ));
    let httpd = d.httpd.as_mut().expect("httpd");
    assert!(
        httpd.wait_for_log("listening for Http on", START_TIMEOUT),
        "the new front end did not start: {}",
        httpd.stderr()
    );

    // Pipelined cheap requests: ids 1..=12 on the new front end, the same ids the old
    // requests had. They wait for a compute worker while the old answers arrive.
    let mut client = Client::connect(port).expect("connect");
    let asked: Vec<u64> = (0..12).map(|i| 1_000 + i).collect();
    for n in &asked {
        client.send_get(&is_prime(*n)).expect("send");
    }
    for n in &asked {
        let response = client.read_response(READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(
            response.possible_prime(),
            Some(*n),
            "an answer meant for another request: {response:?}"
        );
    }

    // Keep asking until both old answers have come back and been dropped, and a little
    // longer: nothing out of place.
    let httpd = d.httpd.as_ref().expect("httpd");
    let mut n = 2_000u64;
    let both_dropped = poll_until(Duration::from_secs(60), || {
        n += 1;
        let response = client.get(&is_prime(n), READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.possible_prime(), Some(n), "{response:?}");
        (httpd.stderr().matches(DROPPED).count() >= 2).then_some(())
    });
    assert!(
        both_dropped.is_some(),
        "the old answers never reached the new front end: {}",
        httpd.stderr()
    );
    for _ in 0..10 {
        n += 1;
        let response = client.get(&is_prime(n), READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.possible_prime(), Some(n), "{response:?}");
    }
}
