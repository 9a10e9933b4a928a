//! What an operator sees when a daemon cannot start: a prompt non-zero exit and one
//! clear `error: ...` line naming the culprit, never a panic.

mod daemons;

use daemons::*;
use std::net::TcpListener;
use std::time::Duration;

/// Refusing to start takes milliseconds; this bound only catches a daemon that starts
/// (or hangs) instead.
const PROMPTLY: Duration = Duration::from_secs(15);

fn assert_refused(program: &str, args: &[String], mentions: &[&str]) {
    let (status, stderr) = run_to_exit(program, args, PROMPTLY);
    let shown = format!("{program} {}\nstderr:\n{stderr}", args.join(" "));
    assert!(!status.success(), "exited {status}: {shown}");
    assert!(
        !stderr.contains("panicked"),
        "panicked instead of reporting: {shown}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: ...` line: {shown}"));
    for needle in mentions {
        assert!(
            error.contains(needle),
            "the error line does not mention {needle:?}: {shown}"
        );
    }
}

/// Valid endpoints for the flags a test does not spoil.
struct Free {
    a: String,
    b: String,
    c: String,
    d: String,
}

fn free() -> Free {
    let p = Ports::allocate();
    Free {
        a: tcp(p.up1),
        b: tcp(p.down1),
        c: tcp(p.loopback),
        d: tcp(p.interrupt),
    }
}

const BAD_ENDPOINTS: [&str; 3] = ["127.0.0.1:5000", "udp://x", "tcp://127.0.0.1"];

/// `flags`, each with a free endpoint, except `spoiled`, which gets `value`.
fn endpoint_args(flags: &[&str], spoiled: &str, value: &str) -> Vec<String> {
    let f = free();
    flags
        .iter()
        .zip([f.a, f.b, f.c, f.d])
        .flat_map(|(name, free)| {
            let value = if *name == spoiled {
                value.to_string()
            } else {
                free
            };
            [name.to_string(), value]
        })
        .collect()
}

const HTTPD_ENDPOINTS: [&str; 4] = ["--listen", "--proxy", "--loopback", "--interrupt"];
const PROXYD_ENDPOINTS: [&str; 3] = ["--upstream", "--downstream", "--loopback"];
const WORKERD_ENDPOINTS: [&str; 4] = ["--upstream", "--downstream", "--loopback", "--interrupt"];

#[test]
fn httpd_refuses_bad_endpoints() {
    for bad in BAD_ENDPOINTS {
        for flag in HTTPD_ENDPOINTS {
            assert_refused(HTTPD, &endpoint_args(&HTTPD_ENDPOINTS, flag, bad), &[bad]);
        }
    }
}

#[test]
fn proxyd_refuses_bad_endpoints() {
    for bad in BAD_ENDPOINTS {
        for flag in PROXYD_ENDPOINTS {
            assert_refused(PROXYD, &endpoint_args(&PROXYD_ENDPOINTS, flag, bad), &[bad]);
        }
    }
}

#[test]
fn workerd_refuses_bad_endpoints() {
    for bad in BAD_ENDPOINTS {
        for flag in WORKERD_ENDPOINTS {
            let mut args = endpoint_args(&WORKERD_ENDPOINTS, flag, bad);
            args.extend(daemons::args(&["--stage", "parse", "--concurrency", "1"]));
            assert_refused(WORKERD, &args, &[bad]);
        }
    }
}

#[test]
fn workerd_refuses_an_unknown_service_and_zero_workers() {
    let f = free();
    let base = vec![
        "--upstream".to_string(),
        f.a,
        "--loopback".into(),
        f.c,
        "--interrupt".into(),
        f.d,
    ];
    let mut unknown = base.clone();
    unknown.extend(args(&["--stage", "bogus"]));
    assert_refused(WORKERD, &unknown, &["bogus"]);
    let mut none = base;
    none.extend(args(&["--stage", "compute", "--concurrency", "0"]));
    assert_refused(WORKERD, &none, &["--concurrency"]);
}

/// An endpoint another process has bound already.
fn taken() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, tcp(port))
}

#[test]
fn httpd_refuses_endpoints_already_bound() {
    for flag in ["--listen", "--loopback", "--interrupt"] {
        let (_holder, endpoint) = taken();
        let args = endpoint_args(&HTTPD_ENDPOINTS, flag, &endpoint);
        assert_refused(HTTPD, &args, &[&endpoint, "in use"]);
    }
}

#[test]
fn proxyd_refuses_endpoints_already_bound() {
    for flag in ["--upstream", "--downstream"] {
        let (_holder, endpoint) = taken();
        let args = endpoint_args(&PROXYD_ENDPOINTS, flag, &endpoint);
        assert_refused(PROXYD, &args, &[&endpoint, "in use"]);
    }
}

#[test]
fn a_missing_topology_file_is_reported() {
    let missing = scratch_path("no-such-topology", "json");
    let path = missing.display().to_string();
    assert_refused(
        HTTPD,
        &["--config".into(), path.clone()],
        &["topology file", &path],
    );
    for program in [PROXYD, WORKERD] {
        let args = vec![
            "--config".into(),
            path.clone(),
            "--stage".into(),
            "parse".into(),
        ];
        assert_refused(program, &args, &["topology file", &path]);
    }
}

/// A topology with free ports (never started).
fn topology_text() -> String {
    let p = Ports::allocate();
    format!(
        r#"{{
  "front_end": {{ "listen": "{}", "loopback": "{}", "interrupt": "{}" }},
  "stages": [
    {{ "name": "parse", "upstream": "{}", "downstream": "{}" }},
    {{ "name": "compute", "upstream": "{}", "downstream": "{}" }}
  ]
}}"#,
        tcp(p.http),
        tcp(p.loopback),
        tcp(p.interrupt),
        tcp(p.up1),
        tcp(p.down1),
        tcp(p.up2),
        tcp(p.down2)
    )
}

#[test]
fn a_topology_file_with_a_typo_is_reported() {
    let typo = scratch_path("typo-topology", "json");
    std::fs::write(&typo, topology_text().replace("\"listen\"", "\"lsiten\"")).expect("write");
    let path = typo.display().to_string();
    assert_refused(HTTPD, &["--config".into(), path.clone()], &["lsiten"]);
    for program in [PROXYD, WORKERD] {
        let args = vec![
            "--config".into(),
            path.clone(),
            "--stage".into(),
            "parse".into(),
        ];
        assert_refused(program, &args, &["lsiten"]);
    }
}

#[test]
fn a_topology_file_with_a_bad_endpoint_or_stage_is_reported() {
    let bad = scratch_path("bad-endpoint-topology", "json");
    let text = topology_text();
    let listen = text
        .split('"')
        .find(|s| s.starts_with("tcp://"))
        .expect("an endpoint")
        .to_string();
    std::fs::write(&bad, text.replace(&listen, "udp://x")).expect("write");
    let path = bad.display().to_string();
    assert_refused(HTTPD, &["--config".into(), path], &["udp://x"]);

    let good = scratch_path("good-topology", "json");
    std::fs::write(&good, topology_text()).expect("write");
    let path = good.display().to_string();
    for program in [PROXYD, WORKERD] {
        let args = vec![
            "--config".into(),
            path.clone(),
            "--stage".into(),
            "nosuchstage".into(),
        ];
        assert_refused(program, &args, &["nosuchstage"]);
    }
}

#[test]
fn any_cors_origin_with_credentials_is_refused_with_exit_2() {
    // The Fetch standard forbids `Access-Control-Allow-Origin: *` with credentials, and
    // echoing every origin instead would give every site the user's cookies.
    let f = free();
    let mut args = vec![
        "--listen".to_string(),
        f.a,
        "--proxy".into(),
        f.b,
        "--loopback".into(),
        f.c,
        "--interrupt".into(),
        f.d,
    ];
    args.extend(daemons::args(&["--cors-origin", "*", "--cors-credentials"]));
    assert_refused(HTTPD, &args, &["credentials", "*"]);
    let (status, _) = run_to_exit(HTTPD, &args, PROMPTLY);
    assert_eq!(status.code(), Some(2), "{status}");
}

const ECHOD: &str = env!("CARGO_BIN_EXE_prime_echod");

#[test]
fn a_host_name_in_a_bound_endpoint_is_resolved_before_binding() {
    // libzmq alone reads `localhost` in a bind as a network interface: "No such device".
    let port = free_port();
    let listen = format!("tcp://localhost:{port}");
    let daemon = Daemon::start_listening("echod-localhost", ECHOD, &args(&[&listen, "1"]));
    let mut client = Client::connect(port).expect("connect to 127.0.0.1");
    client.send_get("/named").expect("send");
    let response = client
        .read_response(START_TIMEOUT)
        .unwrap_or_else(|e| panic!("no answer ({e}): {}", daemon.stderr()));
    assert_eq!(response.status, 200, "{}", daemon.stderr());
    assert_eq!(response.json()["path"], "/named");
}

/// Why a loopback-only network namespace cannot be used here, if it cannot.
fn no_namespace() -> Option<String> {
    let probe = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up"])
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Some(e.to_string()),
    }
}

#[test]
fn an_unresolvable_host_name_is_refused_and_says_so() {
    // Name resolution may ask the network: only inside a loopback-only namespace.
    if let Some(why) = no_namespace() {
        println!("skipped: no loopback-only network namespace here ({why})");
        return;
    }
    let mut command = std::process::Command::new("unshare");
    command
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .args([ECHOD, "tcp://no-such-host.invalid:8002", "1"])
        .env("RUST_LOG", "info");
    let mut daemon = Daemon::start_command("echod-unresolvable", command);
    let status = daemon
        .wait_exit(PROMPTLY)
        .unwrap_or_else(|| panic!("still runs: {}", daemon.stderr()));
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: ...` line: {stderr}"));
    assert!(
        error.contains("no-such-host.invalid") && error.contains("resolves"),
        "{error}"
    );
    assert!(!error.contains("No such device"), "{error}");
}
