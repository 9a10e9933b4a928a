//! The systemd units in `deploy/systemd/`: one for every binary of Cargo.toml, each
//! accepted by `systemd-analyze verify` (no running systemd needed: it is pointed at a
//! scratch root holding the distribution's own units, ours, and our binaries in
//! /usr/local/bin, so the check that ExecStart's program exists is a real one), each
//! hardened as `systemd-analyze security` judges it ("OK" or better), and each
//! ExecStart a command line its binary takes.

mod daemons;
mod tools;

use daemons::{scratch_path, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd");

/// The most `systemd-analyze security` may find exposed, on its 0-100 scale (its
/// report shows a tenth of it: 2.0 is the top of "OK").
const EXPOSURE_THRESHOLD: &str = "20";

/// The unit files, by file name.
fn units() -> Vec<(String, String)> {
    let mut units: Vec<(String, String)> = std::fs::read_dir(UNITS)
        .expect("read deploy/systemd")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "service"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("read a unit"))
        })
        .collect();
    units.sort();
    assert!(units.len() >= 6, "units: {units:?}");
    units
}

/// The value of `key=` in a unit (its last setting), if any.
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

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
            names.push(
                value
                    .trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"')
                    .to_string(),
            );
        }
    }
    names
}

fn binary(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_prime_httpd"))
        .parent()
        .expect("the binaries' directory")
        .join(name)
}

/// A root for `systemd-analyze --root`: the distribution's units (targets such as
/// sysinit.target that every service depends on), ours, and our binaries.
fn scratch_root(units: &[(String, String)]) -> ScratchDir {
    let root = ScratchDir::new("systemd-root");
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("the distribution's systemd units (apt-get install systemd)");
    for dir in ["usr/lib/systemd", "usr/local/bin", "etc/systemd/system"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    let copy = Command::new("cp")
        .arg("-r")
        .arg(system)
        .arg(root.join("usr/lib/systemd/"))
        .status();
    assert!(copy.is_ok_and(|s| s.success()), "copy {system:?}");
    for name in binary_names() {
        let (from, to) = (binary(&name), root.join("usr/local/bin").join(&name));
        std::fs::hard_link(&from, &to)
            .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
            .unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
    for (name, text) in units {
        std::fs::write(root.join("etc/systemd/system").join(name), text).expect("write");
    }
    root
}

fn analyze(root: &Path, args: &[&str]) -> Output {
    let program = tools::program("systemd-analyze", "systemd");
    Command::new(program)
        .args(args)
        .arg(format!("--root={}", root.display()))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze")
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let units = units();
    let root = scratch_root(&units);
    let names: Vec<&str> = units.iter().map(|(name, _)| name.as_str()).collect();
    let mut args = vec!["verify", "--man=no"];
    args.extend(&names);
    let output = analyze(&root, &args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {names:?}: {}: {stderr}",
        output.status
    );
    // The same check finds a mistake, here: a misspelt setting and a missing program.
    let broken = vec![(
        "broken.service".to_string(),
        "[Service]\nExecStart=/usr/local/bin/prime_nothing\nNoNewPrivilege=yes\n".to_string(),
    )];
    let root = scratch_root(&broken);
    let output = analyze(&root, &["verify", "--man=no", "broken.service"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("NoNewPrivilege") && stderr.contains("prime_nothing"),
        "{stderr}"
    );
}

#[test]
fn every_unit_is_hardened() {
    let units = units();
    for (name, unit) in &units {
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("DynamicUser", "yes"),
            ("LimitNOFILE", "1048576"),
            ("KillSignal", "SIGTERM"),
        ] {
            assert_eq!(setting(unit, key), Some(value), "{name}: {key}");
        }
        // A daemon with a job store keeps it in its own state directory.
        let exec = setting(unit, "ExecStart").expect("ExecStart");
        if exec.contains("--jobs-db") {
            let state = setting(unit, "StateDirectory").expect("a StateDirectory");
            assert!(
                exec.contains("--jobs-db ${STATE_DIRECTORY}/"),
                "{name}: {exec}"
            );
            assert!(!state.is_empty(), "{name}");
        }
    }
    let root = scratch_root(&units);
    for (name, _) in &units {
        let threshold = format!("--threshold={EXPOSURE_THRESHOLD}");
        let output = analyze(&root, &["security", "--offline=true", &threshold, name]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let verdict = stdout.lines().last().unwrap_or("");
        assert!(
            output.status.success(),
            "{name}: {verdict} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every binary has a unit, and every unit's ExecStart is a command line its binary
/// takes (with the specifiers and variables systemd fills in filled in).
#[test]
fn every_binary_has_a_unit_whose_command_line_it_takes() {
    let units = units();
    let state = scratch_path("state", "d");
    for name in binary_names() {
        let program = format!("/usr/local/bin/{name}");
        let (unit, exec) = units
            .iter()
            .find_map(|(unit, text)| {
                let exec = setting(text, "ExecStart")?;
                (exec.split_whitespace().next() == Some(&program)).then_some((unit, exec))
            })
            .unwrap_or_else(|| panic!("no unit in deploy/systemd runs {program}: add one"));
        let args: Vec<String> = exec
            .split_whitespace()
            .skip(1)
            .map(|arg| {
                arg.replace("%i", "parse")
                    .replace("${STATE_DIRECTORY}", &state.to_string_lossy())
                    .replace("${PRIME_GATEWAY_TARGET}", "http://127.0.0.1:9")
            })
            .collect();
        assert!(
            !args.iter().any(|a| a.contains('%') || a.contains('$')),
            "{unit}: {args:?}"
        );
        // Clap reads every argument before a final --help, and refuses any it does not
        // know; --help then stops it from running.
        let output = Command::new(binary(&name))
            .args(&args)
            .arg("--help")
            .output()
            .expect("run the binary");
        assert!(
            output.status.success(),
            "{unit}: {name} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
