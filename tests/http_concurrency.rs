//! Many clients at once: a thousand open connections, each with a request, all answered.
//!
//! The client and the server share this process, so every connection costs two file
//! descriptors here. With the common soft limit of 1024 open files that allows fewer
//! than 500 connections, so the test reads its limit from `/proc/self/limits` and, when
//! it is too low for 1000, uses what fits and prints a note saying so. (It cannot raise
//! the limit itself without `libc`.) This file is its own test binary so that no other
//! test's sockets count against the budget.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, Client, TestServer};

const WANTED: usize = 1000;

/// The soft limit on open files and how many are open now, if /proc says.
fn fd_budget() -> Option<(usize, usize)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    let soft = if soft == "unlimited" {
        usize::MAX
    } else {
        soft.parse().ok()?
    };
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some((soft, open))
}

fn connection_count() -> usize {
    match fd_budget() {
        Some((soft, open)) => {
            // Two descriptors per connection, and room for libzmq and the test harness.
            let fits = soft.saturating_sub(open + 100) / 2;
            if fits < WANTED {
                println!(
                    "note: the open-file limit is {soft} ({open} in use) and client and server \
                     share this process, so only {fits} connections are opened instead of \
                     {WANTED}; raise `ulimit -n` to test {WANTED}"
                );
            }
            fits.min(WANTED)
        }
        None => WANTED,
    }
}

#[test]
fn a_thousand_concurrent_connections_are_all_served() {
    let count = connection_count();
    assert!(count >= 100, "too few file descriptors to test anything");
    let server = TestServer::echo(http_config());
    let mut clients: Vec<Client> = (0..count).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(get(&format!("/c?i={i}")));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let response = client.read_response();
        assert_eq!(response.status, 200, "connection {i}: {response:?}");
        assert_eq!(response.json()["target"], format!("/c?i={i}"));
    }
    // Every connection is still open and usable.
    for (i, client) in clients.iter_mut().enumerate().step_by(97) {
        let response = client.get(&format!("/again?i={i}"));
        assert_eq!(response.status, 200, "connection {i}: {response:?}");
    }
    drop(clients);
    let stats = server.stop();
    assert!(stats.connections >= count as u64, "{stats:?}");
    assert!(stats.answered >= count as u64, "{stats:?}");
}
