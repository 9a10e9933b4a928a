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

#[test]
fn httpd_refuses_bad_endpoints() {
    for bad in BAD_ENDPOINTS {
        for flag in ["--listen", "--proxy", "--loopback", "--interrupt"] {
            let f = free();
            let mut a = vec![
                ("--listen", f.a),
                ("--proxy", f.b),
                ("--loopback", f.c),
                ("--interrupt", f.d),
            ];
            a.iter_mut()
                .filter(|(name, _)| *name == flag)
                .for_each(|(_, value)| *value = bad.to_string());
            let args: Vec<String> = a
                .into_iter()
                .flat_map(|(n, v)| [n.to_string(), v])
                .collect();
            assert_refused(HTTPD, &args, &[bad]);
        }
    }
}

#[test]
fn proxyd_refuses_bad_endpoints() {
    for bad in BAD_ENDPOINTS {
        for flag in ["--upstream", "--downstream", "--loopback"] {
            let f = free();
            let mut a = vec![
                ("--upstream", f.a),
                ("--downstream", f.b),
                ("--loopback", f.c),
            ];
            a.iter_mut()
                .filter(|(name, _)| *name == flag)
                .for_each(|(_, value)| *value = bad.to_string());
            let args: Vec<String> = a
                .into_iter()
                .flat_map(|(n, v)| [n.to_string(), v])
                .collect();
            assert_refused(PROXYD, &args, &[bad]);
        }
    }
}

#[test]
fn workerd_refuses_bad_endpoints() {
    for bad in BAD_ENDPOINTS {
        for flag in ["--upstream", "--downstream", "--loopback", "--interrupt"] {
            let f = free();
            let mut a = vec![
                ("--upstream", f.a),
                ("--downstream", f.b),
                ("--loopback", f.c),
                ("--interrupt", f.d),
            ];
            a.iter_mut()
                .filter(|(name, _)| *name == flag)
                .for_each(|(_, value)| *value = bad.to_string());
            let mut args: Vec<String> = a
                .into_iter()
                .flat_map(|(n, v)| [n.to_string(), v])
                .collect();
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
    assert_refused(WORKERD, &none, &["worker"]);
}

/// An endpoint another process has bound already.
fn taken() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, tcp(port))
}

#[test]
fn httpd_refuses_endpoints_already_bound() {
    assert_each_endpoint_in_use_refused(
        HTTPD,
        &["--listen", "--proxy", "--loopback", "--interrupt"],
        &["--listen", "--loopback", "--interrupt"],
    );
}

#[test]
fn proxyd_refuses_endpoints_already_bound() {
    assert_each_endpoint_in_use_refused(
        PROXYD,
        &["--upstream", "--downstream", "--loopback"],
        &["--upstream", "--downstream"],
    );
}

/// Starts `program` once per flag of `binds`, with every flag of `flags` given a free
/// endpoint except that one, given an endpoint already in use, and asserts it is refused
/// with a message naming the endpoint.
fn assert_each_endpoint_in_use_refused(program: &str, flags: &[&str], binds: &[&str]) {
    for flag in binds {
        let (_holder, endpoint) = taken();
        let f = free();
        let args: Vec<String> = flags
            .iter()
            .zip([f.a, f.b, f.c, f.d])
            .flat_map(|(name, value)| {
                let value = if name == flag {
                    endpoint.clone()
                } else {
                    value
                };
                [name.to_string(), value]
            })
            .collect();
        assert_refused(program, &args, &[&endpoint, "in use"]);
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
