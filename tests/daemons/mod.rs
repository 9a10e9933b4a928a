//! Helpers for the process-level tests: free ports, daemons run as child processes that
//! are always killed and reaped (even when a test fails), a two-stage deployment of
//! `prime_httpd`, two `prime_proxyd` and two `prime_workerd`, and a small HTTP/1.1
//! client with bounded reads.
//!
//! Every wait here is bounded; nothing asserts on elapsed wall time.

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const HTTPD: &str = env!("CARGO_BIN_EXE_prime_httpd");
pub const PROXYD: &str = env!("CARGO_BIN_EXE_prime_proxyd");
pub const WORKERD: &str = env!("CARGO_BIN_EXE_prime_workerd");

/// A prime that trial division settles at once.
pub const CHEAP: u64 = 7;
/// Primes whose trial division takes a while. How long depends on the machine: in a
/// release build on an idle core of a fast one (this project's 2-core machine of
/// 2026-12-06), 2^55-55 takes 0.14 s, 2^57-13 0.25 s, 2^61-1 1 s and 2^63-25 2 s; on
/// earlier machines and in debug builds several times as long, and more on a loaded
/// machine. A test that needs a request still at work after a few steps of its own (a
/// kill, a drain, a restart) uses 2^61-1 or slower: the two smaller ones can end
/// before such steps do.
pub const PRIME_2_55: u64 = 36_028_797_018_963_913;
pub const PRIME_2_57: u64 = 144_115_188_075_855_859;
/// The next prime below [`PRIME_2_57`], as slow.
pub const PRIME_2_57_B: u64 = 144_115_188_075_855_847;
pub const PRIME_2_61: u64 = 2_305_843_009_213_693_951;
/// The next prime below [`PRIME_2_61`], as slow.
pub const PRIME_2_61_B: u64 = 2_305_843_009_213_693_921;
pub const PRIME_2_63: u64 = 9_223_372_036_854_775_783;

/// The path of a request for `n`.
pub fn is_prime(n: u64) -> String {
    format!("/is_prime?possible_prime={n}")
}

/// A port nobody listened on a moment ago, never the same twice in one test process.
///
/// Ports come from below the kernel's ephemeral range, in turn from a start that
/// depends on the process id: the kernel gives ephemeral ports to every `bind(0)` and
/// outgoing connection, so a port taken from that range could be handed to one of them
/// (or, by `bind(0)`, to a second caller here) before the daemon binds it. The port is
/// checked free by binding it; the daemon binds it a moment later, a small race that
/// [`Deployment::start`] covers with a retry.
pub fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let floor = 10_000.min(ephemeral_low / 2);
    let span = ephemeral_low - floor;
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut port = next.unwrap_or(floor + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= ephemeral_low {
            floor
        } else {
            port + 1
        };
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port below the ephemeral range {ephemeral_low}");
}

/// `tcp://127.0.0.1:PORT`.
pub fn tcp(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// A file under the test target's temporary directory, unique in this run.
pub fn scratch_path(stem: &str, ext: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("daemons");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir.join(format!("{stem}-{}-{n}.{ext}", std::process::id()))
}

/// A scratch directory (under the test target's temporary directory, unique in this
/// run) removed with everything in it when dropped: for tests that fill a directory
/// with copies (installed binaries, systemd units), tens of megabytes a run would
/// otherwise leave behind.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, not yet created, directory named after `stem`.
    pub fn new(stem: &str) -> ScratchDir {
        ScratchDir(scratch_path(stem, "d"))
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A SQLite store's files: the database and its `-wal` and `-shm` files (any of them
/// may not exist).
pub fn store_files(db: &std::path::Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect()
}

/// The first file of the SQLite store `db` ([`store_files`]) whose raw bytes hold
/// `needle`, or `None`; a file that does not exist holds nothing.
///
/// # Panics
/// When a file exists but cannot be read.
pub fn store_file_holding(db: &std::path::Path, needle: &str) -> Option<PathBuf> {
    store_files(db)
        .into_iter()
        .find(|file| match std::fs::read(file) {
            Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("{}: {e}", file.display()),
        })
}

/// Sends `signal` (e.g. `TERM`, `KILL`) to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
    // A process that already exited is fine: the guard reaps it.
    let _ = status;
}

/// Polls `check` every 50 ms until it returns `Some`, or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon running as a child process, its stderr in a log file. Dropping it kills it
/// (SIGKILL) and reaps it.
pub struct Daemon {
    pub name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `program` with `args`, logging at info level.
    pub fn start(name: &str, program: &str, args: &[String]) -> Daemon {
        Self::start_with_log_level(name, program, args, "info")
    }

    /// Starts `program` with `args` and `RUST_LOG=level`.
    pub fn start_with_log_level(name: &str, program: &str, args: &[String], level: &str) -> Daemon {
        let mut command = Command::new(program);
        command.args(args).env("RUST_LOG", level);
        Self::start_command(name, command)
    }

    /// Starts `command` (its program, arguments, environment and whatever else the
    /// caller set), with stderr to the daemon's log file.
    pub fn start_command(name: &str, mut command: Command) -> Daemon {
        let log = scratch_path(name, "log");
        let stderr = File::create(&log).expect("create a log file");
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Daemon {
            name: name.to_string(),
            child,
            log,
            exit: None,
        }
    }

    /// Starts a daemon with a front end and waits until it listens for HTTP.
    pub fn start_listening(name: &str, program: &str, args: &[String]) -> Daemon {
        let mut daemon = Daemon::start(name, program, args);
        assert!(
            daemon.wait_for_log("listening for Http on", START_TIMEOUT),
            "{name} did not start: {}",
            daemon.stderr()
        );
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, signal: &str) {
        if self.exit.is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(status.is_some(), "{} survived SIGKILL", self.name);
    }

    /// The exit status, if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.try_exit())
    }

    /// Waits up to `timeout` for `needle` to appear in stderr; false if the process
    /// exited or the time passed first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || {
            if self.stderr().contains(needle) {
                return Some(true);
            }
            self.try_exit().map(|_| false)
        })
        .unwrap_or(false)
    }

    /// Resident memory in kB (VmRSS from /proc/PID/status).
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// CPU time used so far, in clock ticks (utime + stime from /proc/PID/stat).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are fields 14, 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// Waits until the process has used `ticks` more clock ticks of CPU than `since`:
    /// a sign that it is busy with a job.
    pub fn wait_busy(&self, since: u64, ticks: u64, timeout: Duration) -> bool {
        poll_until(timeout, || {
            (self.cpu_ticks() >= since + ticks).then_some(())
        })
        .is_some()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            send_signal(self.pid(), "KILL");
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} stderr ({}) ----", self.name, self.log.display());
            let text = self.stderr();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        } else {
            // The log helps only after a failure: a passing test leaves none behind.
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Runs a daemon that should refuse to start; returns its exit status and stderr.
/// Fails the test if it does not exit within `timeout`.
pub fn run_to_exit(program: &str, args: &[String], timeout: Duration) -> (ExitStatus, String) {
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("daemon")
        .to_string();
    let mut daemon = Daemon::start(&name, program, args);
    let status = daemon
        .wait_exit(timeout)
        .unwrap_or_else(|| panic!("{name} {args:?} still runs after {timeout:?}"));
    (status, daemon.stderr())
}

/// The ports of a two-stage deployment.
#[derive(Clone, Debug)]
pub struct Ports {
    pub http: u16,
    pub up1: u16,
    pub down1: u16,
    pub up2: u16,
    pub down2: u16,
    pub loopback: u16,
    pub interrupt: u16,
}

impl Ports {
    pub fn allocate() -> Ports {
        // Hold every listener until all are picked, so that the seven are distinct.
        let listeners: Vec<TcpListener> = (0..7)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let p: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        Ports {
            http: p[0],
            up1: p[1],
            down1: p[2],
            up2: p[3],
            down2: p[4],
            loopback: p[5],
            interrupt: p[6],
        }
    }
}

/// Per-daemon extra arguments and settings of a deployment.
#[derive(Clone, Debug)]
pub struct Options {
    pub httpd: Vec<String>,
    pub proxyd: Vec<String>,
    pub parse: Vec<String>,
    pub compute: Vec<String>,
    pub compute_concurrency: usize,
    /// Start the workers (false: only the front end and the proxies).
    pub workers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            httpd: Vec::new(),
            // A generous heartbeat timeout: a loaded machine can starve a worker's
            // heartbeat thread for a second, and these tests are not about that.
            proxyd: args(&["--heartbeat-timeout", "5"]),
            parse: Vec::new(),
            compute: Vec::new(),
            compute_concurrency: 2,
            workers: true,
        }
    }
}

/// Turns string literals into owned arguments.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A two-stage prime deployment, one process per piece. Any piece can be killed and
/// started again with the same endpoints.
pub struct Deployment {
    pub ports: Ports,
    pub options: Options,
    pub httpd: Option<Daemon>,
    pub proxy1: Option<Daemon>,
    pub proxy2: Option<Daemon>,
    pub parse: Option<Daemon>,
    pub compute: Option<Daemon>,
}

/// How long a daemon may take to start on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Deployment {
    /// Starts every piece and waits until `/is_prime?possible_prime=7` is answered 200
    /// (or, without workers, until the front end listens). Retries with fresh ports if a
    /// port was taken between allocation and bind.
    pub fn start(options: Options) -> Deployment {
        for attempt in 1..=3 {
            match Self::try_start(Ports::allocate(), options.clone()) {
                Ok(deployment) => return deployment,
                Err(why) if attempt < 3 && why.contains("Address already in use") => {
                    eprintln!("retrying the deployment with other ports: {why}");
                }
                Err(why) => panic!("the deployment did not start: {why}"),
            }
        }
        unreachable!()
    }

    fn try_start(ports: Ports, options: Options) -> Result<Deployment, String> {
        let mut d = Deployment {
            ports,
            options,
            httpd: None,
            proxy1: None,
            proxy2: None,
            parse: None,
            compute: None,
        };
        d.start_proxy1();
        d.start_proxy2();
        d.start_httpd_unchecked();
        for daemon in [&mut d.proxy1, &mut d.proxy2].into_iter().flatten() {
            if !daemon.wait_for_log("proxy: jobs arrive on", START_TIMEOUT) {
                return Err(format!(
                    "{} did not start: {}",
                    daemon.name,
                    daemon.stderr()
                ));
            }
        }
        let httpd = d.httpd.as_mut().expect("httpd");
        if !httpd.wait_for_log("listening for Http on", START_TIMEOUT) {
            return Err(format!("httpd did not start: {}", httpd.stderr()));
        }
        if d.options.workers {
            d.start_parse();
            d.start_compute();
            d.wait_answering(START_TIMEOUT);
            // The front end learns of workers from its probes, a moment later.
            assert!(
                d.wait_health(200, START_TIMEOUT),
                "/health did not become 200 with the workers running"
            );
        }
        Ok(d)
    }

    pub fn http_endpoint(&self) -> String {
        tcp(self.ports.http)
    }

    pub fn httpd_args(&self) -> Vec<String> {
        let p = &self.ports;
        let mut a = vec![
            "--listen".into(),
            tcp(p.http),
            "--proxy".into(),
            tcp(p.up1),
            "--loopback".into(),
            tcp(p.loopback),
            "--interrupt".into(),
            tcp(p.interrupt),
            "--health-path".into(),
            "/health".into(),
            "--status-path".into(),
            "/status".into(),
        ];
        a.extend(self.options.httpd.iter().cloned());
        a
    }

    /// Starts the front end without waiting for it.
    pub fn start_httpd_unchecked(&mut self) {
        let args = self.httpd_args();
        self.httpd = Some(Daemon::start("httpd", HTTPD, &args));
    }

    /// Starts (or restarts) the front end and waits until it listens.
    pub fn start_httpd(&mut self) {
        self.start_httpd_unchecked();
        let httpd = self.httpd.as_mut().expect("httpd");
        assert!(
            httpd.wait_for_log("listening for Http on", START_TIMEOUT),
            "httpd did not start: {}",
            httpd.stderr()
        );
    }

    fn proxy_args(&self, up: u16, down: u16) -> Vec<String> {
        let mut a = vec![
            "--upstream".into(),
            tcp(up),
            "--downstream".into(),
            tcp(down),
            "--loopback".into(),
            tcp(self.ports.loopback),
        ];
        a.extend(self.options.proxyd.iter().cloned());
        a
    }

    pub fn start_proxy1(&mut self) {
        let args = self.proxy_args(self.ports.up1, self.ports.down1);
        self.proxy1 = Some(Daemon::start("proxy1", PROXYD, &args));
    }

    pub fn start_proxy2(&mut self) {
        let args = self.proxy_args(self.ports.up2, self.ports.down2);
        self.proxy2 = Some(Daemon::start("proxy2", PROXYD, &args));
    }

    pub fn parse_args(&self) -> Vec<String> {
        let p = &self.ports;
        let mut a = vec![
            "--upstream".into(),
            tcp(p.down1),
            "--downstream".into(),
            tcp(p.up2),
            "--loopback".into(),
            tcp(p.loopback),
            "--interrupt".into(),
            tcp(p.interrupt),
            "--stage".into(),
            "parse".into(),
            "--concurrency".into(),
            "1".into(),
        ];
        a.extend(self.options.parse.iter().cloned());
        a
    }

    pub fn compute_args(&self) -> Vec<String> {
        let p = &self.ports;
        let mut a = vec![
            "--upstream".into(),
            tcp(p.down2),
            "--loopback".into(),
            tcp(p.loopback),
            "--interrupt".into(),
            tcp(p.interrupt),
            "--stage".into(),
            "compute".into(),
            "--concurrency".into(),
            self.options.compute_concurrency.to_string(),
        ];
        a.extend(self.options.compute.iter().cloned());
        a
    }

    pub fn start_parse(&mut self) {
        let args = self.parse_args();
        self.parse = Some(Daemon::start("parse", WORKERD, &args));
    }

    pub fn start_compute(&mut self) {
        let args = self.compute_args();
        self.compute = Some(Daemon::start("compute", WORKERD, &args));
    }

    /// Waits until a cheap request is answered 200, asking again on every failure.
    pub fn wait_answering(&self, timeout: Duration) {
        let port = self.ports.http;
        let answered = poll_until(timeout, || {
            let response = get(port, &is_prime(CHEAP), Duration::from_secs(5)).ok()?;
            (response.status == 200).then_some(())
        });
        assert!(
            answered.is_some(),
            "the deployment did not answer a cheap request within {timeout:?}"
        );
    }

    /// Waits until `/health` answers `status`.
    pub fn wait_health(&self, status: u16, timeout: Duration) -> bool {
        let port = self.ports.http;
        poll_until(timeout, || {
            let response = get(port, "/health", Duration::from_secs(5)).ok()?;
            (response.status == status).then_some(())
        })
        .is_some()
    }

    /// Every daemon still held, for signalling all at once.
    pub fn all_mut(&mut self) -> Vec<&mut Daemon> {
        [
            &mut self.httpd,
            &mut self.proxy1,
            &mut self.proxy2,
            &mut self.parse,
            &mut self.compute,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// An HTTP response as the client saw it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `possible_prime` of a prime checker's answer, if it is one.
    pub fn possible_prime(&self) -> Option<u64> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()?
            .get("possible_prime")?
            .as_u64()
    }
}

/// One keep-alive HTTP/1.1 connection with bounded reads.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> io::Result<Client> {
        let stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Sends a GET for `path` without waiting for the answer.
    pub fn send_get(&mut self, path: &str) -> io::Result<()> {
        self.send_request("GET", path, &[])
    }

    /// Sends `METHOD path` with extra header lines, without waiting for the answer.
    pub fn send_request(&mut self, method: &str, path: &str, headers: &[&str]) -> io::Result<()> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes())
    }

    /// Sends bytes as they are (a whole request, body included), without waiting.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// How many bytes arrive within `quiet` beyond the responses read so far (0 for a
    /// server that answered each request once).
    pub fn unread_bytes(&mut self, quiet: Duration) -> usize {
        self.closed_by_server(quiet);
        self.buffer.len()
    }

    /// Reads one response, waiting at most `timeout` for all of it.
    pub fn read_response(&mut self, timeout: Duration) -> io::Result<Response> {
        let end = Instant::now() + timeout;
        loop {
            if let Some((response, used)) = parse_response(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(response);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete response within {timeout:?}"),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))
                }
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no complete response within {timeout:?}"),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a GET and reads its response.
    pub fn get(&mut self, path: &str, timeout: Duration) -> io::Result<Response> {
        self.send_get(path)?;
        self.read_response(timeout)
    }

    /// Whether the server has closed this connection (reads EOF within `timeout`).
    pub fn closed_by_server(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The `Location` of a `202 Accepted`, which it asserts.
pub fn location_of(response: &Response) -> String {
    assert_eq!(response.status, 202, "{response:?}");
    response.header("Location").expect("a Location").to_string()
}

/// Polls a job (long-polling 10 s at a time) until it has ended; returns its status.
pub fn wait_until_ended(port: u16, location: &str) -> serde_json::Value {
    let mut client = Client::connect(port).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let response = client
            .get(&format!("{location}?wait=10"), Duration::from_secs(60))
            .expect("a status");
        let status = response.json();
        if !matches!(
            status["state"].as_str(),
            Some("scheduled" | "queued" | "running")
        ) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{location} never ended: {status}"
        );
    }
}

/// A GET on a fresh connection.
pub fn get(port: u16, path: &str, timeout: Duration) -> io::Result<Response> {
    Client::connect(port)?.get(path, timeout)
}

/// Parses one response from the front of `buffer`: `Some((response, bytes used))`, or
/// `None` if more bytes are needed. Bodies are delimited by Content-Length.
fn parse_response(buffer: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|e| bad(e.to_string()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().map_err(|_| bad(format!("bad length {v:?}"))))
        .transpose()?
        .unwrap_or(0);
    let body_start = head_end + 4;
    if buffer.len() < body_start + length {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buffer[body_start..body_start + length]).into_owned();
    Ok(Some((
        Response {
            status,
            headers,
            body,
        },
        body_start + length,
    )))
}

/// How long a [`Peer`] waits for what it reads.
pub const PEER_BOUND: Duration = Duration::from_secs(20);

/// A raw client connection with everything it has read so far: for tests that write
/// requests in pieces, pipeline them or hold a connection open, and read the bytes as
/// they come (each read waits at most 100 ms, each whole wait [`PEER_BOUND`]).
pub struct Peer {
    pub stream: TcpStream,
    pub seen: Vec<u8>,
}

impl Peer {
    /// Connects to `port` on 127.0.0.1 (no Nagle delay).
    pub fn connect(port: u16) -> Peer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        stream.set_nodelay(true).expect("no delay");
        Peer {
            stream,
            seen: Vec::new(),
        }
    }

    /// Writes `bytes` whole.
    pub fn write_text(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).expect("send");
    }

    /// What has been read so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads until `done` says the text so far is enough, within [`PEER_BOUND`]; panics
    /// naming `what` if the connection closes first or the bound passes.
    pub fn read_until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + PEER_BOUND;
        let mut buf = [0u8; 65536];
        while !done(&self.text()) {
            assert!(
                Instant::now() < end,
                "no {what} in time; got {:?}",
                self.text()
            );
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed before {what}; got {:?}", self.text()),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        self.text()
    }

    /// Reads until `needle` has been seen (counting from the start).
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.read_until(&format!("{needle:?}"), |text| text.contains(needle))
    }

    /// Reads until the server closes the connection (or resets it), within
    /// [`PEER_BOUND`].
    pub fn read_to_close(&mut self) -> String {
        let end = Instant::now() + PEER_BOUND;
        let mut buf = [0u8; 65536];
        loop {
            assert!(Instant::now() < end, "not closed: {:?}", self.text());
            match self.stream.read(&mut buf) {
                Ok(0) => return self.text(),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return self.text(),
                Err(_) => {}
            }
        }
    }
}
