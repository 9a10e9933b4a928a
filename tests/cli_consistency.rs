//! The binaries agree with each other as a user reads them: the listen endpoint has one
//! name and one description, every help says where logs go and how `RUST_LOG` picks
//! them, the closing log lines are sentences, and release binaries carry no debug info.

mod daemons;

use daemons::*;
use std::process::Command;
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const ECHOD: &str = env!("CARGO_BIN_EXE_prime_echod");
const FILED: &str = env!("CARGO_BIN_EXE_prime_filed");
const ALL: [&str; 6] = [SERVERD, ECHOD, HTTPD, PROXYD, WORKERD, FILED];

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
    for program in ALL {
        let text = help(program);
        assert!(text.contains("RUST_LOG"), "{program}: {text}");
        assert!(text.contains("stderr"), "{program}: {text}");
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
    for program in ALL {
        // `cargo test` (debug) builds binaries with debug info on purpose, and so does
        // the profiling profile; the release profile must not.
        if !program.contains("/release/") {
            continue;
        }
        let bytes = std::fs::read(program).expect("read the binary");
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
