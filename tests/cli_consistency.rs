//! The binaries agree with each other as a user reads them: the listen endpoint has one
//! name and one description, every help says where logs go and how `RUST_LOG` picks
//! them and ends with the same pointer to the README, `--version` names the commit,
//! `--listen`, `--concurrency` and `--config` are taken (or refused with a reason) by
//! every binary, a positional and its flag that disagree are an error, the man pages
//! render and the completions complete, the closing log lines are sentences, and
//! release binaries carry no debug info.
//!
//! "Every binary" is every `[[bin]]` of Cargo.toml, read at run time, so a new binary
//! is held to all of this without being named here.

mod daemons;
mod tools;

use daemons::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const ECHOD: &str = env!("CARGO_BIN_EXE_prime_echod");
const GATEWAYD: &str = env!("CARGO_BIN_EXE_prime_gatewayd");
const FILED: &str = env!("CARGO_BIN_EXE_prime_filed");

/// The names of Cargo.toml's `[[bin]]` entries.
fn binary_names() -> Vec<String> {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read Cargo.toml");
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let (true, Some(value)) = (in_bin, line.strip_prefix("name")) {
            let name = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            names.push(name.to_string());
        }
    }
    assert!(
        names.len() >= 6,
        "the [[bin]] entries of Cargo.toml: {names:?}"
    );
    names
}

/// Every binary's path: cargo builds them all, beside each other, for integration tests.
fn all_binaries() -> Vec<(String, PathBuf)> {
    let dir = Path::new(ECHOD).parent().expect("the binaries' directory");
    binary_names()
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            assert!(path.is_file(), "{name} was not built at {path:?}");
            (name, path)
        })
        .collect()
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program:?} {args:?}: {e}"))
}

fn stdout_of(program: &Path, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(output.status.success(), "{program:?} {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Generous: a daemon on a loaded machine starts and stops in well under a second.
const BOUND: Duration = Duration::from_secs(20);

fn help(program: &str) -> String {
    let output = Command::new(program)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("run {program} --help: {e}"));
    assert!(output.status.success(), "{program} --help: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

#[test]
fn every_help_names_the_listen_endpoint_alike_and_says_where_logs_go() {
    for program in [SERVERD, ECHOD, HTTPD, FILED] {
        let text = help(program);
        assert!(text.contains("LISTEN"), "{program}: {text}");
        // One description, whatever the line wrapping.
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("Where clients connect (bound)")
                || flat.contains("where clients connect (bound)"),
            "{program}: {text}"
        );
    }
    for (name, program) in all_binaries() {
        let text = stdout_of(&program, &["--help"]);
        assert!(text.contains("RUST_LOG"), "{name}: {text}");
        assert!(text.contains("stderr"), "{name}: {text}");
    }
}

#[test]
fn every_help_ends_with_the_same_pointer_to_the_readme() {
    let mut endings = Vec::new();
    for (name, program) in all_binaries() {
        let text = stdout_of(&program, &["--help"]);
        let last = text
            .trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap_or("")
            .to_string();
        assert!(
            last.contains("README.md"),
            "{name}'s help ends with {last:?}"
        );
        endings.push((name, last));
    }
    for (name, last) in &endings {
        assert_eq!(
            last, &endings[0].1,
            "{name} and {} end differently",
            endings[0].0
        );
    }
}

#[test]
fn every_version_names_the_crate_version_and_the_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    // Built from this checkout, the commit is HEAD's; from a copy without git, build.rs
    // says so.
    let commit = match &head {
        Some(hash) => format!("commit {hash}"),
        None => "unknown commit".to_string(),
    };
    for (name, program) in all_binaries() {
        let line = stdout_of(&program, &["--version"]);
        assert_eq!(
            line.trim_end(),
            format!("{name} {} ({commit})", env!("CARGO_PKG_VERSION")),
            "{name} --version"
        );
    }
}

/// The three flags every binary takes alike: each is in the help, or refused with a
/// reason (exit 2), never an unknown argument.
#[test]
fn every_binary_takes_listen_concurrency_and_config_or_says_why_not() {
    for (name, program) in all_binaries() {
        let help = stdout_of(&program, &["--help"]);
        for (flag, value) in [
            ("--listen", "tcp://127.0.0.1:1"),
            ("--concurrency", "2"),
            ("--config", "/nonexistent/topology.json"),
        ] {
            if help.contains(&format!("{flag} <")) {
                continue;
            }
            let output = run(&program, &[flag, value]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{name} {flag}: {stderr}");
            assert!(
                stderr.contains(&format!("{name} takes no {flag}: ")),
                "{name} refuses {flag} without a reason: {stderr}"
            );
        }
    }
    // Those the issue names: the one-process binaries take all three, the front end
    // --listen and --config, the daemons --config.
    for (program, flags) in [
        (SERVERD, &["--listen", "--concurrency", "--config"][..]),
        (ECHOD, &["--listen", "--concurrency", "--config"]),
        (GATEWAYD, &["--listen", "--concurrency", "--config"]),
        (HTTPD, &["--listen", "--config"]),
        (PROXYD, &["--listen", "--config"]),
        (WORKERD, &["--concurrency", "--config"]),
    ] {
        let help = help(program);
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} <")),
                "{program} lacks {flag}: {help}"
            );
        }
    }
}

/// A value for each positional of the usage lines, by its name.
fn sample(positional: &str) -> &'static str {
    match positional {
        "LISTEN" | "LISTEN|RANGE" => "tcp://127.0.0.1:1",
        "TARGET" => "http://127.0.0.1:9",
        "ROOT" => "/",
        "CONCURRENCY" => "2",
        other => panic!("no sample value for the positional {other}: add one here"),
    }
}

/// A positional and the flag that stands for it, given differently: exit 2, naming both.
#[test]
fn a_positional_and_its_flag_that_disagree_are_refused() {
    let mut checked = 0;
    for (name, program) in all_binaries() {
        let help = stdout_of(&program, &["--help"]);
        let usage = help
            .lines()
            .find(|line| line.starts_with("Usage:"))
            .expect("a usage line");
        let positionals: Vec<&str> = usage
            .split_whitespace()
            .filter(|word| word.starts_with('[') && word != &"[OPTIONS]")
            .map(|word| word.trim_matches(|c| c == '[' || c == ']'))
            .collect();
        let values: Vec<&str> = positionals.iter().map(|p| sample(p)).collect();
        for (positional, other) in [
            ("LISTEN", ("--listen", "tcp://127.0.0.1:2")),
            ("CONCURRENCY", ("--concurrency", "3")),
        ] {
            let Some(_) = positionals
                .iter()
                .find(|p| p.split('|').next() == Some(positional))
            else {
                continue;
            };
            let mut args = values.clone();
            args.extend([other.0, other.1]);
            let output = run(&program, &args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{name} {args:?}: {stderr}");
            assert!(
                stderr.contains("is given twice") && stderr.contains(other.0),
                "{name} {args:?}: {stderr}"
            );
            checked += 1;
        }
    }
    // prime_serverd, prime_echod and prime_gatewayd, twice each.
    assert!(checked >= 6, "{checked} checks");
}

/// The positionals' flags serve as the positionals do, mixed or alone, and a topology
/// file gives a one-process binary its listen endpoint and its stages' concurrency.
#[test]
fn flags_and_the_topology_file_stand_for_the_positionals() {
    let port = free_port();
    let echo = Daemon::start_listening(
        "echod-flags",
        ECHOD,
        &args(&["--concurrency", "1", "--listen", &tcp(port)]),
    );
    let answer = get(port, "/hello", BOUND).expect("an answer from prime_echod");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["path"], "/hello", "{answer:?}");
    drop(echo);

    let port = free_port();
    let mixed =
        Daemon::start_listening("echod-mixed", ECHOD, &args(&["--listen", &tcp(port), "1"]));
    assert_eq!(get(port, "/", BOUND).expect("an answer").status, 200);
    drop(mixed);

    // prime_gatewayd's three, all as flags: it serves its health path (no request goes
    // to the backend, so nothing leaves for the address it was given).
    let port = free_port();
    let gateway = Daemon::start_listening(
        "gatewayd-flags",
        GATEWAYD,
        &args(&[
            "--target",
            "http://127.0.0.1:1",
            "--concurrency",
            "1",
            "--listen",
            &tcp(port),
            "--health-path",
            "/health",
        ]),
    );
    let healthy = poll_until(BOUND, || {
        get(port, "/health", BOUND).ok().filter(|r| r.status == 200)
    });
    assert!(healthy.is_some(), "{}", gateway.stderr());
    assert!(
        gateway.stderr().contains("1 gateway threads forward"),
        "{}",
        gateway.stderr()
    );
    drop(gateway);

    let port = free_port();
    let topology = scratch_path("topology", "json");
    std::fs::write(
        &topology,
        format!(
            r#"{{ "front_end": {{ "listen": "{}", "loopback": "tcp://127.0.0.1:1", "interrupt": "tcp://127.0.0.1:2", "health_path": "/health" }},
                 "stages": [ {{ "name": "parse", "upstream": "tcp://127.0.0.1:3", "downstream": "tcp://127.0.0.1:4", "concurrency": 2 }},
                             {{ "name": "compute", "upstream": "tcp://127.0.0.1:5", "downstream": "tcp://127.0.0.1:6", "concurrency": 3 }} ] }}"#,
            tcp(port)
        ),
    )
    .expect("write the topology file");
    let config = topology.to_string_lossy().into_owned();
    let serverd = Daemon::start_listening("serverd-config", SERVERD, &args(&["--config", &config]));
    let answer = get(port, &is_prime(CHEAP), BOUND).expect("an answer from prime_serverd");
    assert_eq!(answer.json()["is_prime"], true, "{answer:?}");
    // The front end's entry gave the health path too (200 once the stages answer).
    let healthy = poll_until(BOUND, || {
        get(port, "/health", BOUND).ok().filter(|r| r.status == 200)
    });
    assert!(healthy.is_some(), "{}", serverd.stderr());
    drop(serverd);
}

/// `--generate man` writes a man page that man(1) renders, with every option of the help.
#[test]
fn every_man_page_renders_with_its_options() {
    let man = tools::program("man", "man-db");
    for (name, program) in all_binaries() {
        let page = scratch_path(&name, "1");
        std::fs::write(&page, stdout_of(&program, &["--generate", "man"])).expect("write");
        let output = Command::new(&man)
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .env("LANG", "C.UTF-8")
            .output()
            .expect("run man");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "man -l {name}: {stderr}"
        );
        // Rendered: no roff requests left, and the sections man readers look for.
        let text = String::from_utf8_lossy(&output.stdout);
        for section in ["NAME", "SYNOPSIS", "OPTIONS", "VERSION"] {
            assert!(
                text.contains(section),
                "{name}'s man page lacks {section}: {text}"
            );
        }
        assert!(
            !text.contains(".TH") && !text.contains("\\fB"),
            "{name}: {text}"
        );
        let help = stdout_of(&program, &["--help"]);
        let flags = help
            .split_whitespace()
            .filter(|word| word.starts_with("--") && word.len() > 2)
            .map(|word| word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()));
        for flag in flags {
            assert!(text.contains(flag), "{name}'s man page lacks {flag}");
        }
        assert!(text.contains(&format!("{name} - ")), "{name}: {text}");
    }
}

/// `--generate bash` writes a completion script that bash loads, and that completes the
/// binary's flags.
#[test]
fn every_bash_completion_completes_the_flags() {
    let bash = tools::program("bash", "bash");
    for (name, program) in all_binaries() {
        let script = scratch_path(&name, "bash");
        std::fs::write(&script, stdout_of(&program, &["--generate", "bash"])).expect("write");
        let function = format!("_{}", name.replace('-', "__"));
        let probe = format!(
            "source {script:?} && complete -p {name} && COMP_WORDS=({name} --con) && \
             COMP_CWORD=1 && COMP_LINE='{name} --con' && COMP_POINT=${{#COMP_LINE}} && \
             {function} {name} --con {name} && printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = Command::new(&bash)
            .args(["--norc", "-c", &probe])
            .output()
            .expect("bash");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains(&format!("-F {function} ")), "{name}: {text}");
        let completions: Vec<&str> = text.lines().skip(1).collect();
        assert!(
            completions.contains(&"--config"),
            "{name} completes --con to {completions:?}"
        );
    }
}

/// Sends SIGTERM and returns the daemon's log line that says `stopped`, once it has
/// exited 0.
fn stop_line_after_sigterm(daemon: &mut Daemon) -> String {
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(BOUND)
        .unwrap_or_else(|| panic!("{} did not stop: {}", daemon.name, daemon.stderr()));
    assert!(
        status.success(),
        "{}: {status}: {}",
        daemon.name,
        daemon.stderr()
    );
    let log = daemon.stderr();
    let stops: Vec<&str> = log.lines().filter(|l| l.contains(" stopped")).collect();
    assert_eq!(stops.len(), 1, "one closing line in {log}");
    stops[0].to_string()
}

/// A readable sentence: none of the braces and field names of a Rust debug struct.
fn assert_sentence(line: &str, starts: &str) {
    assert!(line.contains(starts), "closing line {line:?}");
    assert!(
        !line.contains('{') && !line.contains("Stats"),
        "a debug struct in {line:?}"
    );
}

/// Starts `program` with `argv`, waits for `started` in its log, stops it with SIGTERM
/// and asserts that its closing line is a sentence beginning with `closing`.
fn assert_closes_with_a_sentence(program: &str, argv: &[String], started: &str, closing: &str) {
    let mut daemon = Daemon::start("closing", program, argv);
    assert!(daemon.wait_for_log(started, BOUND), "{}", daemon.stderr());
    let line = stop_line_after_sigterm(&mut daemon);
    assert_sentence(&line, closing);
}

#[test]
fn the_closing_lines_are_sentences() {
    assert_closes_with_a_sentence(
        ECHOD,
        &args(&["tcp://127.0.0.1:0", "1"]),
        "listening for Http on",
        "front end stopped after 0 connections",
    );
    let ports = Ports::allocate();
    let (up, down) = (tcp(ports.up1), tcp(ports.down1));
    assert_closes_with_a_sentence(
        PROXYD,
        &args(&["--upstream", &up, "--downstream", &down]),
        "jobs arrive on",
        "proxy stopped: 0 jobs handed to workers",
    );
}

#[test]
fn release_binaries_carry_no_debug_info() {
    for (_, program) in all_binaries() {
        let program = program.to_string_lossy();
        // `cargo test` (debug) builds binaries with debug info on purpose, and so does
        // the profiling profile; the release profile must not.
        if !program.contains("/release/") {
            continue;
        }
        let bytes = std::fs::read(&*program).expect("read the binary");
        let sections = elf_section_names(&bytes);
        assert!(!sections.is_empty(), "{program}: no ELF sections found");
        let debug: Vec<&String> = sections
            .iter()
            .filter(|s| s.starts_with(".debug_"))
            .collect();
        assert!(debug.is_empty(), "{program} carries {debug:?}");
    }
}

/// The section names of a 64-bit little-endian ELF file (empty for anything else).
fn elf_section_names(elf: &[u8]) -> Vec<String> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Vec::new();
    }
    let (Some(table), Some(entry), Some(count), Some(names_index)) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e))
    else {
        return Vec::new();
    };
    let header = |index: usize| table + index * entry;
    let Some(names) = u64_at(header(names_index) + 0x18) else {
        return Vec::new();
    };
    (0..count)
        .filter_map(|index| {
            let start = names + u32_at(header(index))?;
            let len = elf.get(start..)?.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&elf[start..start + len]).into_owned())
        })
        .collect()
}
