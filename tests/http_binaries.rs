//! The daemons as users run them: `prime_serverd` and `prime_echod` on a free port, found
//! from their log, answering over HTTP and exiting cleanly on SIGTERM.

#[path = "http_common/mod.rs"]
mod common;

use common::{endpoint_addr, Client, WAIT};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A daemon child process; killed on drop unless it already exited.
struct Daemon {
    child: Child,
    /// Its stderr, line by line, read on a thread so it never blocks on a full pipe.
    log: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn spawn(program: &str, args: &[&str]) -> Daemon {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (send, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for the log line announcing the HTTP listener; returns its address.
    fn http_addr(&mut self) -> SocketAddr {
        const MARK: &str = "listening for Http on ";
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    let found = line
                        .find(MARK)
                        .map(|i| line[i + MARK.len()..].trim().to_string());
                    self.seen.push(line);
                    if let Some(endpoint) = found {
                        return endpoint_addr(&endpoint);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {MARK:?} line within {WAIT:?}; log: {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the daemon exited ({:?}) before listening; log: {:?}",
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the daemon") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {WAIT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn prime_serverd_serves_http_and_stops_on_sigterm() {
    let mut daemon = Daemon::spawn(
        env!("CARGO_BIN_EXE_prime_serverd"),
        &["tcp://127.0.0.1:0", "2", "--health-path", "/health"],
    );
    let addr = daemon.http_addr();
    common::wait_until_healthy(addr, "/health");
    let mut client = Client::connect(addr);
    let health = client.get("/health");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");
    let answer = client.get("/is_prime?possible_prime=7");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({"is_prime": true, "possible_prime": 7})
    );
    let refused = client.get("/is_prime?possible_prime=x");
    refused.assert_error(400);
    drop(client);
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn prime_echod_serves_http_and_stops_on_sigterm() {
    let mut daemon = Daemon::spawn(
        env!("CARGO_BIN_EXE_prime_echod"),
        &["tcp://127.0.0.1:0", "1"],
    );
    let addr = daemon.http_addr();
    let mut client = Client::connect(addr);
    client.send("POST /echo?a=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["body_length"], 3);
    // A connection still open at SIGTERM does not keep the daemon alive.
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
    client.assert_closed();
}
