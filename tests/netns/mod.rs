//! Runs a test inside a network namespace of its own, with only loopback up, so that
//! whatever address a server under test is told to connect to, nothing leaves the
//! machine. The test binary runs itself again, for that one test, under
//! `unshare -n`; where the machine forbids it (no `unshare`, no privilege), the test
//! is skipped with the reason printed.
//!
//! ```ignore
//! #[test]
//! fn a_test() {
//!     if !netns::isolated("a_test") {
//!         return;
//!     }
//!     // ... the test, inside the namespace
//! }
//! ```

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set in the environment of the run inside the namespace.
const INSIDE: &str = "PRIME_SERVER_TEST_NETNS";

/// How long one isolated test may take, namespace and all.
const LIMIT: Duration = Duration::from_secs(300);

/// Why a namespace cannot be made here, if it cannot (asked once per binary).
fn unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        match Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up"])
            .stdin(Stdio::null())
            .output()
        {
            Err(e) => Some(format!("cannot run unshare: {e}")),
            Ok(out) if !out.status.success() => Some(format!(
                "`unshare -n` then `ip link set lo up` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(_) => None,
        }
    })
    .as_deref()
}

/// True when the caller is inside the namespace and should run the test's body. Else
/// runs the test named `test` (its function's name: the test binary's filter, exact)
/// inside a new namespace, fails if it fails there, and returns false; or prints why
/// it is skipped and returns false.
pub fn isolated(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if let Some(why) = unavailable() {
        println!("skipped {test}: no network namespace here ({why})");
        return false;
    }
    let binary = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(&binary)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    // Read both pipes on threads so that the child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the isolated test's status") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test} did not finish within {LIMIT:?} in its namespace");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    assert!(
        status.success() && out.contains("1 passed"),
        "{test} in its network namespace: {status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    false
}
