//! A compute stage slower than every deadline: clients get 504s, and neither the front
//! end nor the second proxy keeps anything of the requests it gave up on.

mod daemons;

use daemons::*;
use std::thread;
use std::time::Duration;

const READ: Duration = Duration::from_secs(20);
/// Requests pipelined per connection per round.
const BATCH: usize = 20;

/// Sends `rounds` rounds of `BATCH` pipelined slow requests on each of `connections`
/// connections; returns how many were answered with each status.
fn slow_traffic(port: u16, connections: usize, rounds: usize) -> Vec<u16> {
    let threads: Vec<_> = (0..connections)
        .map(|lane| {
            thread::spawn(move || {
                let mut client = Client::connect(port).expect("connect");
                let mut statuses = Vec::new();
                for round in 0..rounds {
                    for i in 0..BATCH {
                        // Distinct slow numbers, all far slower than the deadline.
                        let n = [PRIME_2_61, PRIME_2_63][(lane + round + i) % 2];
                        client.send_get(&is_prime(n)).expect("send");
                    }
                    for _ in 0..BATCH {
                        let response = client
                            .read_response(READ)
                            .unwrap_or_else(|e| panic!("no answer: {e}"));
                        statuses.push(response.status);
                    }
                }
                statuses
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect()
}

#[test]
fn requests_past_their_deadline_cost_no_memory() {
    let d = Deployment::start(Options {
        httpd: args(&["--request-timeout", "0.5"]),
        compute_concurrency: 1,
        ..Options::default()
    });
    let port = d.ports.http;
    let httpd = d.httpd.as_ref().expect("httpd");
    let proxy2 = d.proxy2.as_ref().expect("proxy2");
    let compute = d.compute.as_ref().expect("compute");

    // 100 requests, then 1900 more: memory after the first 100 is the baseline.
    let first = slow_traffic(port, 5, 1);
    assert_eq!(first.len(), 100);
    let base = (httpd.rss_kb(), proxy2.rss_kb(), compute.rss_kb());
    let rest = slow_traffic(port, 10, 2)
        .into_iter()
        .chain(slow_traffic(port, 10, 2))
        .chain(slow_traffic(port, 10, 2))
        .chain(slow_traffic(port, 10, 2))
        .chain(slow_traffic(port, 10, 1)) // 4 * 400 + 200 = 1800
        .chain(slow_traffic(port, 5, 1)) // + 100 = 1900
        .collect::<Vec<_>>();
    assert_eq!(rest.len(), 1900);
    let after = (httpd.rss_kb(), proxy2.rss_kb(), compute.rss_kb());

    let all: Vec<u16> = first.iter().chain(&rest).copied().collect();
    let timed_out = all.iter().filter(|&&s| s == 504).count();
    println!(
        "{} requests: {timed_out} answered 504, others {:?}",
        all.len(),
        all.iter().filter(|&&s| s != 504).collect::<Vec<_>>()
    );
    println!(
        "VmRSS after 100 / after 2000: httpd {} / {} kB, proxy2 {} / {} kB, compute {} / {} kB",
        base.0, after.0, base.1, after.1, base.2, after.2
    );
    assert!(
        all.iter().all(|&s| s == 504),
        "every request is slower than its deadline"
    );
    let limit_kb = 20 * 1024;
    assert!(
        after.0 < base.0 + limit_kb,
        "httpd grew from {} kB to {} kB",
        base.0,
        after.0
    );
    assert!(
        after.1 < base.1 + limit_kb,
        "proxy2 grew from {} kB to {} kB",
        base.1,
        after.1
    );

    // The pipeline is still usable for requests that fit their deadline.
    let response = get(port, &is_prime(7), READ).expect("an answer");
    assert_eq!(response.status, 200, "{response:?}");
}
