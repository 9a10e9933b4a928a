//! Runs `scripts/multihost` (the daemons on four network namespaces joined by a bridge)
//! where it can: as root, with `ip netns add` working. Elsewhere it says why it skipped.

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
    let bin = Path::new(env!("CARGO_BIN_EXE_prime_httpd"))
        .parent()
        .expect("the binaries' directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/multihost");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("PRIME_SERVER_BIN", bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/multihost");
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
    let status = status.unwrap_or_else(|| panic!("scripts/multihost ran over {LIMIT:?}"));
    assert!(status.success(), "scripts/multihost exited {status}");

    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .expect("no summary line");
    let field = |name: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {summary:?}"))
    };
    let (total, ok) = (field("total"), field("ok"));
    assert_eq!(total, 200, "{summary}");
    assert!(
        ok * 10 >= total * 8,
        "most requests should be 200: {summary}"
    );
    assert!(
        stdout.contains("killed the work host's daemons"),
        "{stdout}"
    );
    assert!(stdout.contains("\"first_proxy\""), "no /status in {stdout}");
}
