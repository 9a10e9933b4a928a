//! Outside tools the integration tests use as real peers: Python packages from the
//! package index (pinned in `tests/requirements.txt`, installed once into a virtual
//! environment under the target directory), npm packages (pinned in
//! `tests/package.json`), and programs from the distribution's packages (listed in
//! `.ci/apt-packages`, which `.ci/run` installs when missing).
//!
//! A missing tool fails the test with the command that installs it: never a silent pass.
//! Installs are serialised between test processes by a lock file.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The directory the tests may write to, shared by every test binary of this build.
fn tmp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Holds an exclusive `flock` on `path` while alive.
struct Lock(File);

impl Lock {
    fn take(path: &Path) -> Lock {
        let file = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {path:?}: {}", std::io::Error::last_os_error());
        Lock(file)
    }
}

/// Runs `command`, failing the test with its output (and `hint`) when it fails.
fn run(mut command: Command, hint: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}; {hint}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}\n{hint}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Python interpreter of a virtual environment holding every package pinned in
/// `tests/requirements.txt`, made (or brought up to date) on first use.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requirements.txt");
        let wanted = std::fs::read_to_string(&requirements)
            .unwrap_or_else(|e| panic!("read {requirements:?}: {e}"));
        let venv = tmp_dir().join("python-venv");
        let python = venv.join("bin/python3");
        let stamp = venv.join("installed-requirements.txt");
        let _lock = Lock::take(&tmp_dir().join("python-venv.lock"));
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            return python;
        }
        let hint = "the tests need python3 with venv and pip (Debian: apt-get install python3-venv python3-pip) and the package index";
        if !python.exists() {
            let mut make = Command::new("python3");
            make.args(["-m", "venv"]).arg(&venv);
            run(make, hint);
        }
        let mut install = Command::new(&python);
        install
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements);
        run(install, hint);
        std::fs::write(&stamp, &wanted).unwrap_or_else(|e| panic!("write {stamp:?}: {e}"));
        python
    })
}

/// A directory whose `node_modules` holds every package pinned in `tests/package.json`,
/// installed with npm on first use; run node with it as the working directory (or put
/// its `node_modules` on `NODE_PATH`).
pub fn node_modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/package.json");
        let wanted =
            std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("read {manifest:?}: {e}"));
        let dir = tmp_dir().join("node");
        let stamp = dir.join("installed-package.json");
        let _lock = Lock::take(&tmp_dir().join("node.lock"));
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            return dir;
        }
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
        std::fs::write(dir.join("package.json"), &wanted)
            .unwrap_or_else(|e| panic!("write package.json: {e}"));
        let mut install = Command::new("npm");
        install
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir);
        run(
            install,
            "the tests need node and npm (Debian: apt-get install nodejs npm)",
        );
        std::fs::write(&stamp, &wanted).unwrap_or_else(|e| panic!("write {stamp:?}: {e}"));
        dir
    })
}

/// The path of `program` on `PATH` (or at an absolute path), failing the test with how
/// to install `debian_package` when it is missing.
pub fn program(program: &str, debian_package: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = if program.starts_with('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: `apt-get install {debian_package}` \
                 (.ci/run installs the packages listed in .ci/apt-packages)"
            )
        })
}

/// A Python peer (a backend the tests talk to) run with [`python`]: started with its
/// script and arguments, it prints `listening PORT` as its first line; killed and
/// reaped when dropped.
pub struct PythonPeer {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl PythonPeer {
    /// Starts `script` with `args` and waits for its first line.
    ///
    /// # Panics
    /// If it cannot start, or its first line is not `listening PORT`.
    pub fn start(script: &str, args: &[&str]) -> PythonPeer {
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python peer");
        let stdout = child.stdout.take().expect("the peer's stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the peer's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the Python peer {script} did not start: {line:?}")
            });
        PythonPeer { child, port }
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
