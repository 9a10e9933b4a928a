//! `prime_serverd`'s simulation mode, run as a user runs it: the count of primes is its
//! last line of output with either algorithm, and a bad range is refused with an error
//! and a non-zero exit status.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one run may take before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How a finished run of `prime_serverd` went.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// The child process, killed if it is dropped before it exits (e.g. on a failed test).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads all of `pipe` on a thread of its own, so that neither pipe fills up.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs `prime_serverd` with `args`, killing it if it overruns [`RUN_LIMIT`].
fn prime_serverd(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_prime_serverd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prime_serverd starts");
    let mut child = KillOnDrop(child);
    let stdout = read_all(child.0.stdout.take().expect("a stdout pipe"));
    let stderr = read_all(child.0.stderr.take().expect("a stderr pipe"));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("waiting for prime_serverd") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "prime_serverd {args:?} still running after {RUN_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().expect("reading stdout"),
        stderr: stderr.join().expect("reading stderr"),
    }
}

/// Checks that a run succeeded and that its last line of output is `expected`.
fn assert_last_line(run: &Run, expected: &str) {
    assert!(
        run.status.success(),
        "exit status {:?}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(run.stdout.lines().last(), Some(expected), "{}", run.stdout);
}

/// Checks that a run failed with an error message.
fn assert_refused(run: &Run) {
    assert!(!run.status.success(), "exit status {:?}", run.status);
    assert!(
        run.stderr.contains("error"),
        "no error on stderr: {:?}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("primes found"),
        "a refused run still counted: {:?}",
        run.stdout
    );
}

#[test]
fn counts_the_primes_up_to_1000() {
    assert_last_line(&prime_serverd(&["1000", "2"]), "168 primes found");
}

#[test]
fn counts_the_primes_in_a_range_with_miller_rabin() {
    let run = prime_serverd(&["1,1000", "2", "--algorithm", "miller-rabin"]);
    assert_last_line(&run, "168 primes found");
}

#[test]
fn counts_2_and_no_even_number_above_it() {
    assert_last_line(&prime_serverd(&["2,2", "2"]), "1 primes found");
    assert_last_line(&prime_serverd(&["4,4", "2"]), "0 primes found");
    assert_last_line(&prime_serverd(&["1,2", "2"]), "1 primes found");
    assert_last_line(&prime_serverd(&["90,97", "2"]), "1 primes found");
}

#[test]
fn refuses_a_range_that_is_not_a_number() {
    assert_refused(&prime_serverd(&["abc", "2"]));
}

#[test]
fn refuses_an_empty_range() {
    assert_refused(&prime_serverd(&["10,5", "2"]));
}
