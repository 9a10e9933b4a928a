//! The README's embedding example builds as written: its `Cargo.toml` lines and its
//! `src/main.rs`, taken from the README text, make a new crate whose only dependency is
//! this repository. It builds offline, from the registry cache the main build filled,
//! in this build's target directory so that what is already compiled is reused.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first fenced block opened by `fence` (e.g. "```rust") in `text`.
fn block<'a>(text: &'a str, fence: &str) -> &'a str {
    let start = text
        .find(fence)
        .unwrap_or_else(|| panic!("no {fence} block in the README's embedding section"))
        + fence.len();
    let end = text[start..].find("\n```").expect("a closed block") + start;
    &text[start..end]
}

#[test]
fn the_readme_embedding_example_builds_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("read README.md");
    let section = &readme[readme.find("## Embed it").expect("an Embed it section")..];
    let manifest =
        block(section, "```toml").replace("../prime_server", &repo.display().to_string());
    let main = block(section, "```rust");

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let krate = tmp.join("readme-example");
    std::fs::create_dir_all(krate.join("src")).expect("create the crate");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-example\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             {manifest}\n\n# Its own workspace, not the repository's.\n[workspace]\n"
        ),
    )
    .expect("write Cargo.toml");
    std::fs::write(krate.join("src/main.rs"), main).expect("write main.rs");
    // The versions the main build resolved, all in the registry cache.
    std::fs::copy(repo.join("Cargo.lock"), krate.join("Cargo.lock")).expect("copy Cargo.lock");

    let target = tmp.parent().expect("the target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--offline", "--quiet"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", target);
    if cfg!(not(debug_assertions)) {
        command.arg("--release");
    }
    let output = command.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "the README example does not build:\n{}\n--- main.rs ---\n{main}",
        String::from_utf8_lossy(&output.stderr)
    );
}
