//! `cargo install --path . --locked` puts every binary of Cargo.toml on `PATH`, and the
//! installed binaries run.
//!
//! The install is the README's command with `--root` a scratch directory, `--offline`
//! (everything is already in cargo's cache once the tests are built), and this test
//! run's own target directory and profile, so that cargo reuses what is built there
//! instead of building everything again in a directory of its own (minutes on two
//! cores). What it reuses is `cargo build --release --locked`'s build, which `.ci/run`
//! makes before the tests: the tests' own build differs from it, since the
//! dev-dependencies turn on features of getrandom, bitflags and regex-syntax (so ring,
//! rustls, ureq, regex, rusqlite and this crate are built again for an install). With
//! that build fresh the install is a copy, under a second here; without it, cargo makes
//! it first (about a minute and a half here after a change to `src/`).

mod daemons;

use daemons::ScratchDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bound on the install: a copy of fresh binaries takes a second; building the
/// release variant without the dev-dependencies' features (when `cargo build --release
/// --locked` was not run first) a few minutes on a loaded 2-core machine.
const INSTALL_BOUND: Duration = Duration::from_secs(900);

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
            let name = value.trim_start().trim_start_matches('=').trim();
            names.push(name.trim_matches('"').to_string());
        }
    }
    assert!(
        names.len() >= 6,
        "the [[bin]] entries of Cargo.toml: {names:?}"
    );
    names
}

/// The binaries cargo built for this test run, and their profile's directory.
fn built() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_prime_httpd"))
        .parent()
        .expect("the profile's directory")
}

fn stdout(command: &mut Command) -> String {
    let output = command.output().expect("run");
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn cargo_install_puts_every_binary_on_the_path_and_they_run() {
    let profile_dir = built();
    let target_dir = profile_dir.parent().expect("the target directory");
    let root = ScratchDir::new("install-root");
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut install = Command::new(cargo);
    install
        .args(["install", "--locked", "--offline", "--path"])
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("--root")
        .arg(&*root)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // As from a shell: without the variables cargo set for this test, which some build
    // scripts watch (ring's reruns when CARGO_MANIFEST_DIR changes), so that the
    // install reuses the build instead of rebuilding from ring up (and the next build
    // rebuilding it back).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_crate = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&&*name);
        if per_crate {
            install.env_remove(&*name);
        }
    }
    // The tests of a debug build (`cargo test` without --release) have debug binaries.
    if profile_dir.file_name().is_some_and(|name| name == "debug") {
        install.arg("--debug");
    }
    let mut child = install.spawn().expect("run cargo install");
    let end = Instant::now() + INSTALL_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo install") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo install did not finish within {INSTALL_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("cargo install's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "cargo install: {status}: {stderr}");

    let bin = root.join("bin");
    let mut installed: Vec<String> = std::fs::read_dir(&bin)
        .expect("the installed bin directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    installed.sort();
    let mut names = binary_names();
    names.sort();
    assert_eq!(installed, names, "installed in {bin:?}");

    // Found on PATH by name, each says the version of the binaries the tests ran.
    let path = std::env::join_paths([bin.clone()]).expect("a PATH");
    for name in &names {
        let version = stdout(Command::new(name).arg("--version").env("PATH", &path));
        let expected = stdout(Command::new(profile_dir.join(name)).arg("--version"));
        assert_eq!(version, expected, "{name}");
    }
    // And one does its work: the simulation mode needs no ports.
    let found = stdout(
        Command::new("prime_serverd")
            .args(["100", "1"])
            .env("PATH", &path)
            .env("RUST_LOG", "warn"),
    );
    assert_eq!(found.trim_end(), "25 primes found");
}
