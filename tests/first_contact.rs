//! A new user's first mistakes, in every binary: a bad endpoint (port out of range, a
//! port that is not a number, an unknown host, no transport) or an impossible value
//! (`--prefetch 0`, no workers) gets exit code 2 and an `error: ...` line that names
//! the endpoint or option and what is wrong, with nothing printed before it.

mod daemons;

use daemons::*;
use std::time::Duration;

/// Refusing takes milliseconds; this bound only catches a binary that starts instead.
const PROMPTLY: Duration = Duration::from_secs(15);

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const ECHOD: &str = env!("CARGO_BIN_EXE_prime_echod");

/// Each kind of bad endpoint, with what its error must say.
const BAD: [(&str, &str); 5] = [
    ("tcp://127.0.0.1:99999", "outside 1-65535"),
    ("tcp://127.0.0.1:65536", "outside 1-65535"),
    ("tcp://127.0.0.1:http", "not a number"),
    ("tcp://no-such-host.invalid:8002", "no-such-host.invalid"),
    ("127.0.0.1:8010", "no transport"),
];

/// Runs `program` to its exit; asserts exit code 2 and that stderr starts with an
/// `error: ` line holding every one of `mentions`.
fn assert_usage_error(program: &str, args: &[String], mentions: &[&str]) {
    let (status, stderr) = run_to_exit(program, args, PROMPTLY);
    let shown = format!("{program} {}\nstderr:\n{stderr}", args.join(" "));
    assert_eq!(status.code(), Some(2), "exit status {status}: {shown}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: "),
        "something came before the error: {shown}"
    );
    for needle in mentions {
        assert!(
            first.contains(needle),
            "no {needle:?} in the error: {shown}"
        );
    }
}

/// A daemon, its endpoint flags (each with a valid free endpoint) and its other
/// arguments.
type DaemonCommand = (&'static str, Vec<(&'static str, String)>, Vec<String>);

/// The flags of each daemon that take endpoints, each with a valid free endpoint.
fn daemon_commands() -> Vec<DaemonCommand> {
    let p = Ports::allocate();
    vec![
        (
            HTTPD,
            vec![
                ("--listen", tcp(p.http)),
                ("--proxy", tcp(p.up1)),
                ("--loopback", tcp(p.loopback)),
                ("--interrupt", tcp(p.interrupt)),
                ("--netstring", tcp(p.down2)),
            ],
            vec![],
        ),
        (
            PROXYD,
            vec![
                ("--upstream", tcp(p.up1)),
                ("--downstream", tcp(p.down1)),
                ("--loopback", tcp(p.loopback)),
            ],
            vec![],
        ),
        (
            WORKERD,
            vec![
                ("--upstream", tcp(p.down1)),
                ("--downstream", tcp(p.up2)),
                ("--loopback", tcp(p.loopback)),
                ("--interrupt", tcp(p.interrupt)),
                ("--route", format!("compute={}", tcp(p.up2))),
            ],
            args(&["--stage", "parse"]),
        ),
    ]
}

#[test]
fn every_daemon_names_each_bad_endpoint_and_exits_2() {
    for (program, flags, rest) in daemon_commands() {
        for spoiled in 0..flags.len() {
            for (bad, why) in BAD {
                let mut argv = rest.clone();
                for (i, (flag, good)) in flags.iter().enumerate() {
                    let value = match (i == spoiled, *flag) {
                        (true, "--route") => format!("compute={bad}"),
                        (true, _) => bad.to_string(),
                        (false, _) => good.clone(),
                    };
                    argv.extend([flag.to_string(), value]);
                }
                // The help calls the listen endpoint LISTEN in every binary.
                let name = match flags[spoiled].0 {
                    "--listen" => "LISTEN",
                    flag => flag,
                };
                assert_usage_error(program, &argv, &[bad, why, name]);
            }
        }
    }
}

#[test]
fn the_all_in_one_binaries_name_each_bad_endpoint_and_exit_2() {
    for program in [SERVERD, ECHOD] {
        for (bad, why) in BAD {
            assert_usage_error(program, &args(&[bad, "2"]), &[bad, why, "LISTEN"]);
        }
        let netstring = args(&["tcp://127.0.0.1:0", "1", "--netstring", "tcp://127.0.0.1:x"]);
        assert_usage_error(program, &netstring, &["--netstring", "not a number"]);
    }
}

#[test]
fn impossible_values_are_refused_with_exit_2() {
    let p = Ports::allocate();
    let listen = tcp(p.http);
    let worker = |extra: &[&str]| {
        let mut argv = args(&["--stage", "parse", "--upstream", &tcp(p.down1)]);
        argv.extend(args(&["--loopback", &tcp(p.loopback)]));
        argv.extend(args(&["--interrupt", &tcp(p.interrupt)]));
        argv.extend(args(extra));
        argv
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            SERVERD,
            args(&[&listen, "2", "--prefetch", "0"]),
            "--prefetch",
        ),
        (SERVERD, args(&[&listen, "0"]), "CONCURRENCY"),
        (SERVERD, args(&["100", "0"]), "CONCURRENCY"),
        (SERVERD, args(&["10,1", "1"]), "empty"),
        (ECHOD, args(&[&listen, "0"]), "CONCURRENCY"),
        (
            ECHOD,
            args(&[&listen, "1", "--health-path", "health"]),
            "--health-path",
        ),
        (
            ECHOD,
            args(&[&listen, "1", "--request-timeout", "0"]),
            "--request-timeout",
        ),
        (WORKERD, worker(&["--prefetch", "0"]), "--prefetch"),
        (WORKERD, worker(&["--concurrency", "0"]), "--concurrency"),
        (
            PROXYD,
            args(&[
                "--upstream",
                &tcp(p.up1),
                "--downstream",
                &tcp(p.down1),
                "--queue-bound",
                "0",
            ]),
            "--queue-bound",
        ),
    ];
    for (program, argv, mention) in cases {
        assert_usage_error(program, &argv, &[mention]);
    }
}

#[test]
fn a_runtime_configuration_error_also_exits_2() {
    // Valid on its face, refused by the kernel: the port is taken.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = tcp(holder.local_addr().expect("addr").port());
    for program in [SERVERD, ECHOD] {
        assert_usage_error(program, &args(&[&taken, "1"]), &[&taken]);
    }
}
