//! Runs `scripts/multihost` (the daemons on four network namespaces joined by a bridge)
//! and `scripts/multihost-front-ends` (two front ends behind HAProxy sharing a PostgreSQL
//! job store, one killed) where
//! it can: as root, with `ip netns add` working. Elsewhere it says why it skipped.

mod tools;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script should finish in well under a minute; this only catches a hang.
const LIMIT: Duration = Duration::from_secs(120);

/// Why network namespaces cannot be used here, if they cannot.
fn namespaces_unavailable() -> Option<String> {
    let probe = format!("ps-probe-{}", std::process::id());
    let added = Command::new("ip")
        .args(["netns", "add", &probe])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match added {
        Err(e) => Some(format!("cannot run `ip`: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {
            let _ = Command::new("ip")
                .args(["netns", "del", &probe])
                .stderr(Stdio::null())
                .status();
            None
        }
    }
}

#[test]
fn the_multihost_demo_serves_through_a_worker_restart() {
    if let Some(why) = namespaces_unavailable() {
        println!("skipped: network namespaces are not available here ({why})");
        return;
    }
    let stdout = run_script("multihost");
    let summary = Summary::of(&stdout);
    let (total, ok) = (summary.field("total"), summary.field("ok"));
    assert_eq!(total, 200, "{}", summary.0);
    assert!(
        ok * 10 >= total * 8,
        "most requests should be 200: {}",
        summary.0
    );
    assert!(
        stdout.contains("killed the work host's daemons"),
        "{stdout}"
    );
    assert!(stdout.contains("\"first_proxy\""), "no /status in {stdout}");
}

#[test]
fn two_front_ends_behind_haproxy_lose_no_request_and_no_job_when_one_is_killed() {
    if let Some(why) = namespaces_unavailable() {
        println!("skipped: network namespaces are not available here ({why})");
        return;
    }
    tools::program("/usr/sbin/haproxy", "haproxy");
    let stdout = run_script("multihost-front-ends");
    let summary = Summary::of(&stdout);
    assert_eq!(summary.field("total"), 400, "{}", summary.0);
    assert_eq!(
        summary.field("ok"),
        400,
        "a client saw the kill: {}",
        summary.0
    );
    assert!(stdout.contains("killed front0 (kill -9)"), "{stdout}");
    assert!(
        stdout.contains("  front0 DOWN"),
        "haproxy still sends to front0: {stdout}"
    );
    assert!(stdout.contains("  front1 UP"), "{stdout}");
    assert!(
        stdout.contains("prime_front_end_info{front_end=\"1\"} 1"),
        "{stdout}"
    );
    // The asynchronous jobs both front ends accepted into their shared PostgreSQL:
    // some were unfinished when front0 died, front1 took them over, and every one
    // ended `succeeded` with its own number's answer, read through HAProxy.
    let jobs = summary.field("jobs");
    assert_eq!(jobs, 60, "not every job was accepted: {}", summary.0);
    assert!(
        summary.field("unfinished") > 0,
        "every job had ended when front0 died: {}",
        summary.0
    );
    assert_eq!(summary.field("lost"), 0, "{}", summary.0);
    assert_eq!(summary.field("succeeded"), jobs, "{}", summary.0);
    assert_eq!(summary.field("right"), jobs, "{}", summary.0);
    assert!(summary.field("taken_over") > 0, "{}", summary.0);
}

/// A script's `summary: name=value ...` line.
struct Summary(String);

impl Summary {
    fn of(stdout: &str) -> Summary {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .expect("no summary line");
        Summary(line.to_string())
    }

    fn field(&self, name: &str) -> u64 {
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {:?}", self.0))
    }
}

/// Runs `scripts/NAME` with this build's binaries (bounded by [`LIMIT`]); its stdout
/// once it has exited 0.
fn run_script(name: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_prime_httpd"))
        .parent()
        .expect("the binaries' directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let mut child = Command::new("bash")
        .arg(&script)
        .env("PRIME_SERVER_BIN", bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run scripts/{name}: {e}"));

    // Read both pipes on threads so that the script never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if began.elapsed() > LIMIT {
            // SIGTERM lets the script's trap remove what it made.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    println!("{stdout}");
    eprintln!("{stderr}");
    let status = status.unwrap_or_else(|| panic!("scripts/{name} ran over {LIMIT:?}"));
    assert!(status.success(), "scripts/{name} exited {status}");

    stdout
}
