//! The open-file limit as an operator meets it: a daemon raises its soft limit to the
//! hard one and says so; when the descriptors run out anyway, the front end neither
//! spins nor stops serving the connections it has, warns at most once a second, and
//! accepts the waiting connections once descriptors are free again.

mod daemons;

use daemons::*;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

const ECHOD: &str = env!("CARGO_BIN_EXE_prime_echod");
const BOUND: Duration = Duration::from_secs(30);
/// Far below what a daemon starts with (about 20 descriptors), far above what it needs.
const SOFT: libc::rlim_t = 40;
const HARD: libc::rlim_t = 64;
/// More clients than descriptors left (and within libzmq's listen backlog of 100).
const FLOOD: usize = HARD as usize;

/// prime_echod with the open-file limit set to SOFT and HARD.
fn echod_with_limits() -> Daemon {
    let mut command = Command::new(ECHOD);
    command
        .args(["tcp://127.0.0.1:0", "1"])
        .env("RUST_LOG", "info");
    let limit = libc::rlimit {
        rlim_cur: SOFT,
        rlim_max: HARD,
    };
    // SAFETY: setrlimit is async-signal-safe and only reads `limit`, a copy owned by the
    // closure; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Daemon::start_command("echod-nofile", command)
}

/// The port in `listening for Http on tcp://127.0.0.1:PORT`.
fn http_port(daemon: &mut Daemon) -> u16 {
    const MARK: &str = "listening for Http on tcp://127.0.0.1:";
    assert!(daemon.wait_for_log(MARK, BOUND), "{}", daemon.stderr());
    let log = daemon.stderr();
    let at = log.find(MARK).expect("marked") + MARK.len();
    log[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a port")
}

fn warnings(daemon: &Daemon) -> usize {
    daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("accepting a connection failed"))
        .count()
}

#[test]
fn out_of_descriptors_the_front_end_waits_warns_and_serves_on() {
    let started = Instant::now();
    let mut echod = echod_with_limits();
    let port = http_port(&mut echod);
    assert!(
        echod.stderr().contains(&format!(
            "soft limit raised from {SOFT} to the hard limit, {HARD}"
        )),
        "{}",
        echod.stderr()
    );
    let mut kept = Client::connect(port).expect("connect");
    let response = kept.get("/before", BOUND).expect("an answer");
    assert_eq!(response.status, 200, "{response:?}");

    // The kernel completes every handshake (the backlog), whatever the daemon accepts.
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    assert!(
        poll_until(BOUND, || (warnings(&echod) > 0).then_some(())).is_some(),
        "no warning about failed accepts: {}",
        echod.stderr()
    );
    // Stuck on a full backlog, the daemon must idle, not spin: over the time it takes
    // the kept connection to be answered twenty times, it uses less than half a core.
    let (cpu, wall) = (echod.cpu_ticks(), Instant::now());
    for i in 0..20 {
        let response = kept.get(&format!("/during-{i}"), BOUND).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let used = echod.cpu_ticks() - cpu;
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let elapsed = wall.elapsed().as_secs_f64() * ticks_per_second;
    assert!(
        (used as f64) < elapsed / 2.0,
        "the daemon used {used} ticks of CPU in {elapsed:.0} ticks of waiting"
    );

    // Descriptors free again: the connections that waited are accepted, and new ones.
    drop(flood);
    let mut late = Client::connect(port).expect("connect");
    let response = late
        .get("/after", BOUND)
        .expect("an answer after the flood");
    assert_eq!(response.status, 200, "{response:?}");

    // At most one warning a second.
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(
        warnings(&echod) <= seconds,
        "{} warnings in {seconds} s: {}",
        warnings(&echod),
        echod.stderr()
    );
    echod.signal("TERM");
    let status = echod.wait_exit(BOUND).expect("exits after SIGTERM");
    assert!(status.success(), "{status}: {}", echod.stderr());
}
