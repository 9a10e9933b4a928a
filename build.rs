//! Names the commit the binaries are built from, for `--version`: sets
//! `PRIME_SERVER_COMMIT` to `commit ABCDEF1` (`git rev-parse --short HEAD`), or to
//! `unknown commit` when the source is not this repository's checkout (a crates.io
//! package, a tarball, a copy inside another repository) or git is not installed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The checkout must be this package's: a copy unpacked inside some other
    // repository would otherwise be named by that repository's commit.
    let ours = match (
        git(&["rev-parse", "--show-toplevel"]),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        (Some(top), Some(manifest)) => same_dir(&PathBuf::from(top), &PathBuf::from(manifest)),
        _ => false,
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).filter(|_| ours);
    let Some(commit) = commit else {
        println!("cargo:rustc-env=PRIME_SERVER_COMMIT=unknown commit");
        return;
    };
    // Run again when HEAD moves: a commit, a checkout, a branch's ref updated (loose or
    // packed). Only files that exist: cargo reruns every time for a missing one.
    let mut watched = vec![git_path("HEAD"), git_path("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_path(&branch));
    }
    for path in watched.into_iter().flatten() {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rustc-env=PRIME_SERVER_COMMIT=commit {commit}");
}

/// The trimmed output of a successful `git ARGS`, if any.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Where git keeps `name` (`.git/HEAD`, a branch's ref), also in a worktree.
fn git_path(name: &str) -> Option<PathBuf> {
    git(&["rev-parse", "--git-path", name]).map(PathBuf::from)
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
