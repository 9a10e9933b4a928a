//! Shared fixture for the HTTP integration tests: a server on a free port that always
//! shuts down (even when a test fails), a plain-TCP client that reads responses off the
//! wire one after another, and small helpers for bounded waits.
//!
//! Every wait here is bounded by [`WAIT`] so that a broken server fails a test instead of
//! hanging it, and nothing asserts on elapsed time.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

#[path = "../tcp_reset/mod.rs"]
mod tcp_reset;

use prime_server::server::{ServerConfig, ServerStats};
use prime_server::{Job, Outcome, Pipeline, RunningPipeline, Shutdown};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The bound on every wait in these tests: generous, for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// A front end and its pipeline running on threads of this process. Dropping it stops
/// both, so a failing test never leaves a server behind.
pub struct TestServer {
    endpoints: Vec<String>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<prime_server::Result<ServerStats>>>,
    pipeline: Option<RunningPipeline>,
    // Dropped last: terminating a context waits for its sockets to close.
    _ctx: zmq::Context,
}

impl TestServer {
    /// Binds `pipeline` behind a front end configured by `config` and runs it.
    pub fn start(pipeline: Pipeline, config: ServerConfig) -> TestServer {
        let health_path = config.health_path.clone();
        let ctx = zmq::Context::new();
        let (pipeline, server) = pipeline
            .bind_server(&ctx, config)
            .expect("binding the server");
        let endpoints = server.endpoints();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("front-end".into())
            .spawn(move || server.run(&stop))
            .expect("spawning the front end");
        let server = TestServer {
            endpoints,
            shutdown,
            thread: Some(thread),
            pipeline: Some(pipeline),
            _ctx: ctx,
        };
        if let Some(path) = health_path {
            server.wait_until_healthy(&path);
        }
        server
    }

    /// Waits (within [`WAIT`]) until the health path answers 200: it does once the first
    /// proxy has reported a worker, a moment after start.
    pub fn wait_until_healthy(&self, path: &str) {
        wait_until_healthy(self.addr(), path);
    }

    /// `prime_echod`'s pipeline: one `echo` stage of two workers.
    pub fn echo(config: ServerConfig) -> TestServer {
        TestServer::start(
            Pipeline::new().stage("echo", 2, prime_server::demo::echo),
            config,
        )
    }

    /// `prime_serverd`'s pipeline: `parse` then `compute`, two workers each.
    pub fn primes(config: ServerConfig) -> TestServer {
        TestServer::start(primes_pipeline(), config)
    }

    /// The address of the `index`th listening endpoint (0 is the HTTP one).
    pub fn addr_of(&self, index: usize) -> SocketAddr {
        endpoint_addr(&self.endpoints[index])
    }

    /// The address of the HTTP endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr_of(0)
    }

    /// A new client connection to the HTTP endpoint.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Starts the front end's drain, as SIGTERM does in a daemon.
    pub fn drain(&self) {
        self.shutdown.drain();
    }

    /// Stops the front end and the pipeline; returns the front end's counters.
    pub fn stop(mut self) -> ServerStats {
        self.shutdown.trigger();
        let thread = self.thread.take().expect("running");
        let stats = thread
            .join()
            .expect("the front end panicked")
            .expect("the front end failed");
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop();
        }
        stats
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            // A panic or error here is reported by `stop` when a test cares; while a
            // test is already failing it must not turn into a second panic.
            let _ = thread.join();
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop();
        }
    }
}

/// The prime service's two stages, as `prime_serverd` wires them.
pub fn primes_pipeline() -> Pipeline {
    Pipeline::new()
        .stage("parse", 2, prime_server::demo::parse)
        .stage("compute", 2, prime_server::demo::Compute::default())
}

/// A default HTTP configuration on a free port of 127.0.0.1.
pub fn http_config() -> ServerConfig {
    ServerConfig::http("tcp://127.0.0.1:0")
}

/// `tcp://127.0.0.1:41234` → `127.0.0.1:41234`.
pub fn endpoint_addr(endpoint: &str) -> SocketAddr {
    endpoint
        .strip_prefix("tcp://")
        .unwrap_or(endpoint)
        .parse()
        .unwrap_or_else(|e| panic!("endpoint {endpoint:?} is not tcp://IP:PORT: {e}"))
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many times a header occurs.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// Whether the response says the connection closes after it.
    pub fn says_close(&self) -> bool {
        self.header("Connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// Asserts the fields every response must carry: Content-Length (exactly once),
    /// Date (an HTTP date) and Server.
    pub fn assert_standard_headers(&self) {
        assert_eq!(
            self.header_count("Content-Length"),
            1,
            "Content-Length in {self:?}"
        );
        let date = self
            .header("Date")
            .unwrap_or_else(|| panic!("no Date in {self:?}"));
        assert!(
            httpdate::parse_http_date(date).is_ok(),
            "Date {date:?} is not an HTTP date"
        );
        assert!(self.header("Server").is_some(), "no Server in {self:?}");
    }

    /// Asserts a front-end or worker error: this status, a JSON body
    /// `{"error": "...", "status": N}`, and the standard headers.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {self:?} body {:?}",
            String::from_utf8_lossy(&self.body)
        );
        self.assert_standard_headers();
        assert!(
            self.header("Content-Type")
                .is_some_and(|t| t.starts_with("application/json")),
            "Content-Type of {self:?}"
        );
        let body = self.json();
        assert_eq!(body["status"], u64::from(status), "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error message in {body}"
        );
    }
}

/// A client on a plain TCP connection, with a buffer so that responses written back to
/// back can be read one after another.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// A pause after every read of at most 64 KiB, to play a slow reader.
    pub read_pause: Option<Duration>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
            read_pause: None,
        }
    }

    /// Closes the connection with a reset (RST), as a client that goes away abruptly
    /// does (a plain close is a FIN: its requests are still answered).
    pub fn reset(self) {
        tcp_reset::reset(self.stream);
    }

    /// Writes all of `bytes` in one write call (as far as the kernel allows).
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("writing to the server");
        self.stream.flush().expect("flushing");
    }

    /// Writes `bytes` in pieces of `size`.
    pub fn send_in_pieces(&mut self, bytes: &[u8], size: usize) {
        for piece in bytes.chunks(size) {
            self.send(piece);
        }
    }

    /// `GET target` with a Host header, HTTP/1.1.
    pub fn get(&mut self, target: &str) -> HttpResponse {
        self.send(get(target));
        self.read_response()
    }

    /// Reads more bytes into the buffer; panics on timeout, error or EOF.
    fn fill(&mut self, what: &str) {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!(
                "the server closed the connection while {what}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                if let Some(pause) = self.read_pause {
                    std::thread::sleep(pause);
                }
            }
            Err(e) => panic!(
                "reading while {what}: {e}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads one response: status line, headers and a Content-Length body (none for
    /// 1xx, 204 and 304).
    pub fn read_response(&mut self) -> HttpResponse {
        self.read_response_with(true)
    }

    /// Reads the response to a HEAD request: its Content-Length describes a body that is
    /// not sent.
    pub fn read_head_response(&mut self) -> HttpResponse {
        self.read_response_with(false)
    }

    fn read_response_with(&mut self, with_body: bool) -> HttpResponse {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill("reading a response head");
        };
        let head = String::from_utf8(self.buf[..head_end - 4].to_vec())
            .unwrap_or_else(|_| panic!("response head is not UTF-8: {:?}", &self.buf));
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        assert!(
            version == "HTTP/1.1" || version == "HTTP/1.0",
            "bad status line {status_line:?} (head {head:?})"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {line:?} in {head:?}"));
                (name.to_string(), value.trim().to_string())
            })
            .collect();
        let mut response = HttpResponse {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
        if with_body && !bodiless {
            let length: usize = response
                .header("Content-Length")
                .unwrap_or_else(|| panic!("no Content-Length in {response:?}"))
                .parse()
                .expect("numeric Content-Length");
            while self.buf.len() < length {
                self.fill("reading a response body");
            }
            response.body = self.buf.drain(..length).collect();
        }
        response
    }

    /// Reads exactly `n` raw bytes (e.g. netstrings).
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill("reading bytes");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one netstring `LEN:BYTES,` and returns its payload.
    pub fn read_netstring(&mut self) -> Vec<u8> {
        let colon = loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b':') {
                break i;
            }
            assert!(
                self.buf.len() < 32,
                "no netstring length in {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.fill("reading a netstring length");
        };
        let len: usize = std::str::from_utf8(&self.buf[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad netstring length in {:?}", &self.buf));
        self.buf.drain(..=colon);
        let mut payload = self.read_bytes(len + 1);
        assert_eq!(payload.pop(), Some(b','), "netstring without its comma");
        payload
    }

    /// Asserts that the server closes the connection (EOF or reset) within [`WAIT`]
    /// without sending any more bytes.
    pub fn assert_closed(&mut self) {
        let extra = self.read_until_closed();
        assert!(
            extra.is_empty(),
            "the server sent more bytes before closing: {:?}",
            String::from_utf8_lossy(&extra)
        );
    }

    /// Reads until the server closes the connection; returns the bytes received after
    /// whatever was already parsed. Panics if it stays open for [`WAIT`].
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut extra = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 64 * 1024];
        loop {
            assert!(
                Instant::now() < deadline,
                "the connection is still open after {WAIT:?}"
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => return extra,
                Ok(n) => extra.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {
                    panic!("the connection is still open after {WAIT:?}")
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset is a close too.
                Err(_) => return extra,
            }
        }
    }

    /// Asserts that the connection is still usable: a GET on it is answered 200.
    pub fn assert_open(&mut self) {
        let response = self.get("/still-open");
        assert_eq!(response.status, 200, "{response:?}");
    }

    /// Asserts that nothing arrives and the connection stays open for `quiet`.
    pub fn assert_silent_for(&mut self, quiet: Duration) {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
        self.stream.set_read_timeout(Some(quiet)).expect("timeout");
        let mut byte = [0u8; 1];
        let result = self.stream.read(&mut byte);
        self.stream.set_read_timeout(Some(WAIT)).expect("timeout");
        match result {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("the server closed the connection"),
            Ok(_) => panic!("the server sent {:?}", byte[0] as char),
            Err(e) => panic!("reading: {e}"),
        }
    }
}

pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET target HTTP/1.1` with a Host header and nothing else.
pub fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Polls `condition` every 10 ms until it holds or [`WAIT`] passes; returns whether it
/// held.
pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A one-shot gate shared between a test and its stages: `open` once, `wait` with a
/// bound.
#[derive(Clone, Default)]
pub struct Latch(Arc<(Mutex<bool>, Condvar)>);

impl Latch {
    pub fn open(&self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }

    pub fn is_open(&self) -> bool {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until opened or `bound` passes; returns whether it was opened.
    pub fn wait(&self, bound: Duration) -> bool {
        let (lock, cvar) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, bound, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// The request a stage sees, rebuilt from its frames.
pub fn request_of(job: &Job<'_>) -> prime_server::http::Request {
    prime_server::http::Request::from_parts(
        job.frame(0).unwrap_or_default(),
        job.frame(1).unwrap_or_default().to_vec(),
    )
    .expect("the front end forwards only valid heads")
}

/// A 200 response with this text body.
pub fn text_reply(job: &Job<'_>, body: impl Into<Vec<u8>>) -> Outcome {
    job.reply(&prime_server::http::Response::new(200).body(body))
}

/// Waits (within [`WAIT`]) until `path` on `addr` answers 200.
pub fn wait_until_healthy(addr: SocketAddr, path: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = Client::connect(addr).get(path);
        if response.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered 200: {response:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `METHOD target HTTP/1.1` with the extra header lines given, reads the answer.
pub fn request(client: &mut Client, method: &str, target: &str, headers: &[&str]) -> HttpResponse {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    client.send(text);
    if method == "HEAD" {
        client.read_head_response()
    } else {
        client.read_response()
    }
}

/// A fresh, empty directory `area/name-PID-N` under Cargo's temporary directory for
/// integration tests.
pub fn scratch_dir(area: &str, name: &str) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(area)
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}
