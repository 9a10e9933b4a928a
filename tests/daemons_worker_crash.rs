//! `kill -9` of the compute worker process under load: every request is answered (200,
//! or 503 for the jobs the dead worker held), none hangs, and a new worker process
//! takes over.

mod daemons;

use daemons::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any client read may take: a request that takes longer hangs.
const READ: Duration = Duration::from_secs(20);

/// One request as a client saw it.
#[derive(Debug)]
struct Seen {
    asked: u64,
    sent: Instant,
    answered: Instant,
    outcome: Result<Response, String>,
}

#[test]
fn killing_the_compute_worker_under_load_answers_every_request() {
    let mut d = Deployment::start(Options {
        compute_concurrency: 3,
        // Dead workers are noticed within 3 s, without mistaking a starved one for dead.
        proxyd: args(&["--heartbeat-timeout", "3"]),
        ..Options::default()
    });
    let port = d.ports.http;
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = Arc::new(AtomicBool::new(false));

    // Two slow requests the compute worker will still hold when it dies.
    let compute_cpu = d.compute.as_ref().expect("compute").cpu_ticks();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let seen = seen.clone();
            thread::spawn(move || {
                let sent = Instant::now();
                let outcome = Client::connect(port)
                    .and_then(|mut c| c.get(&is_prime(PRIME_2_63), READ))
                    .map_err(|e| e.to_string());
                seen.lock().unwrap().push(Seen {
                    asked: PRIME_2_63,
                    sent,
                    answered: Instant::now(),
                    outcome,
                });
            })
        })
        .collect();

    // Cheap requests on three keep-alive connections, each asking for its own numbers.
    let cheap: Vec<_> = (0..3u64)
        .map(|lane| {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                let mut client = Client::connect(port).expect("connect");
                let mut n = 1_000 * (lane + 1);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = Instant::now();
                    let outcome = client.get(&is_prime(n), READ).map_err(|e| e.to_string());
                    let failed = outcome.is_err();
                    seen.lock().unwrap().push(Seen {
                        asked: n,
                        sent,
                        answered: Instant::now(),
                        outcome,
                    });
                    if failed {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    let compute = d.compute.as_mut().expect("compute");
    assert!(
        compute.wait_busy(compute_cpu, 30, Duration::from_secs(20)),
        "the compute worker never got busy with the slow requests"
    );
    thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    compute.kill9();

    for t in slow {
        t.join().expect("slow client");
    }
    let restarted_at = Instant::now();
    d.start_compute();

    // Wait until the new worker has answered a few cheap requests sent after it started.
    let served = poll_until(Duration::from_secs(30), || {
        let seen = seen.lock().unwrap();
        let fresh = seen
            .iter()
            .filter(|s| s.sent > restarted_at)
            .filter(|s| s.outcome.as_ref().is_ok_and(|r| r.status == 200))
            .count();
        (fresh >= 5).then_some(fresh)
    });
    stop.store(true, Ordering::Relaxed);
    for t in cheap {
        t.join().expect("cheap client");
    }

    let seen = seen.lock().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for s in seen.iter() {
        let key = match &s.outcome {
            Ok(r) => r.status.to_string(),
            Err(e) => format!("error: {e}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    println!("{} requests: {counts:?}", seen.len());

    for s in seen.iter() {
        let response = match &s.outcome {
            Ok(response) => response,
            Err(e) => panic!("request for {} got no answer: {e}", s.asked),
        };
        match response.status {
            200 => assert_eq!(
                response.possible_prime(),
                Some(s.asked),
                "an answer for another request: {response:?}"
            ),
            503 => {}
            _ => panic!("request for {} answered {response:?}", s.asked),
        }
    }
    for s in seen.iter().filter(|s| s.asked == PRIME_2_63) {
        let response = s.outcome.as_ref().expect("checked");
        assert_eq!(response.status, 503, "a held request: {response:?}");
        let after_kill = s.answered.saturating_duration_since(killed_at);
        println!("a held request was answered {after_kill:?} after the kill");
        assert!(
            after_kill < Duration::from_secs(10),
            "a held request was answered only {after_kill:?} after its worker died"
        );
    }
    assert!(
        served.is_some(),
        "the new compute worker did not serve requests within 30 s"
    );
}
