//! `kill -9` and restart of the first proxy: requests sent while it is gone are answered
//! 503 or 504, none hangs, and once it is back the workers and the front end reconnect
//! by themselves.

mod daemons;

use daemons::*;
use std::thread;
use std::time::Duration;

const READ: Duration = Duration::from_secs(20);

#[test]
fn the_first_proxy_restarted_is_found_again() {
    let mut d = Deployment::start(Options {
        httpd: args(&["--request-timeout", "2"]),
        ..Options::default()
    });
    let port = d.ports.http;

    d.proxy1.as_mut().expect("proxy1").kill9();

    // During the gap: requests on fresh connections and on a keep-alive one.
    let gap: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let n = 100 + i;
                let mut client = Client::connect(port).expect("connect");
                let first = client.get(&is_prime(n), READ).map_err(|e| e.to_string());
                let second = client
                    .get(&is_prime(n + 1), READ)
                    .map_err(|e| e.to_string());
                [first, second]
            })
        })
        .collect();
    for t in gap {
        for outcome in t.join().expect("client") {
            let response = outcome.unwrap_or_else(|e| panic!("no answer during the gap: {e}"));
            assert!(
                [503, 504].contains(&response.status),
                "during the gap: {response:?}"
            );
        }
    }
    let health = get(port, "/health", READ).expect("health");
    assert_eq!(health.status, 503, "{health:?}");

    d.start_proxy1();
    let proxy1 = d.proxy1.as_mut().expect("proxy1");
    assert!(
        proxy1.wait_for_log("proxy: jobs arrive on", START_TIMEOUT),
        "proxy1 did not restart: {}",
        proxy1.stderr()
    );
    assert!(
        d.wait_health(200, Duration::from_secs(30)),
        "/health did not come back after the first proxy restarted"
    );
    let mut client = Client::connect(port).expect("connect");
    let answered = poll_until(Duration::from_secs(30), || {
        let response = client.get(&is_prime(7), READ).ok()?;
        (response.status == 200).then_some(response)
    })
    .expect("requests did not succeed again after the first proxy restarted");
    assert_eq!(answered.possible_prime(), Some(7), "{answered:?}");
    for n in [11u64, 13, 15] {
        let response = client.get(&is_prime(n), READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.possible_prime(), Some(n), "{response:?}");
    }
}
