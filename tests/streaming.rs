//! Answers in pieces over real sockets: a stage's streamed response (chunked for
//! HTTP/1.1, close-delimited for HTTP/1.0) in order with pipelined requests, hang-ups
//! and stalls mid-stream, and a job's Server-Sent Events with progress, several
//! watchers, `Last-Event-ID` and the keep-alive comment.

#[path = "http_common/mod.rs"]
mod common;

use common::{find, http_config, Latch, TestServer, WAIT};
use prime_server::http::Response;
use prime_server::jobs::JobsConfig;
use prime_server::stages::{HttpJob, Next, StageError};
use prime_server::Pipeline;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A client that reads raw bytes: heads, chunks, events.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("write");
    }

    /// Reads more bytes; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!(
                "reading: {e}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads until `needle` is in the buffer; returns everything through it.
    fn read_through(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            assert!(
                self.fill(),
                "closed before {:?}; have {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads a response head.
    fn head(&mut self) -> String {
        String::from_utf8(self.read_through(b"\r\n\r\n")).expect("a UTF-8 head")
    }

    /// Reads one chunk; `None` for the last chunk.
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.read_through(b"\r\n");
        let size = usize::from_str_radix(
            std::str::from_utf8(&line[..line.len() - 2]).expect("a size line"),
            16,
        )
        .expect("a hex size");
        while self.buf.len() < size + 2 {
            assert!(self.fill(), "closed inside a chunk");
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(self.buf.drain(..2).collect::<Vec<u8>>(), b"\r\n");
        (size > 0).then_some(data)
    }

    /// Reads to EOF.
    fn rest(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }
}

/// `/count?n=N` streams N lines; `/plain` answers whole; `/forever` streams until
/// interrupted (then opens `stopped`); `/drop` stops after one piece; `/stall` sends
/// one piece, then nothing.
fn stage(stopped: Latch) -> impl FnMut(&mut HttpJob) -> Result<Next, StageError> + Clone {
    move |job: &mut HttpJob| {
        let request = job.request()?.clone();
        let fail =
            |e: prime_server::pipeline::stream::StreamError| StageError::internal(e.to_string());
        if request.path == "/plain" {
            return Ok(Next::respond(Response::new(200).body("plain")));
        }
        let mut stream = job
            .stream(&Response::new(200).header("Content-Type", "text/plain"))
            .map_err(fail)?;
        match request.path.as_str() {
            "/count" => {
                let n: usize = request
                    .query_values("n")
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(3);
                for i in 1..=n {
                    std::thread::sleep(Duration::from_millis(20));
                    stream
                        .send(format!("line {i}\n").as_bytes())
                        .map_err(fail)?;
                }
                stream.finish().map_err(fail)?;
            }
            "/forever" => {
                let give_up = Instant::now() + WAIT;
                while !job.interrupted() && Instant::now() < give_up {
                    stream.send(b"tick\n").map_err(fail)?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                if job.interrupted() {
                    stopped.open();
                }
            }
            "/drop" => stream.send(b"half").map_err(fail)?,
            _ => {
                stream.send(b"first").map_err(fail)?;
                let give_up = Instant::now() + WAIT;
                while !job.interrupted() && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::mem::forget(stream);
            }
        }
        Ok(Next::Streamed)
    }
}

fn stream_server(stopped: Latch, request_timeout: Duration) -> TestServer {
    let mut config = http_config();
    config.request_timeout = request_timeout;
    TestServer::start(
        Pipeline::new().http_stage("stream", 2, stage(stopped)),
        config,
    )
}

#[test]
fn a_streamed_answer_is_chunked_and_the_next_pipelined_answer_waits_for_its_end() {
    let server = stream_server(Latch::default(), Duration::from_secs(30));
    let mut client = RawClient::connect(server.addr());
    client.send("GET /count?n=5 HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = client.head();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    let mut body = Vec::new();
    while let Some(piece) = client.chunk() {
        body.extend(piece);
    }
    assert_eq!(body, b"line 1\nline 2\nline 3\nline 4\nline 5\n");
    let second = client.head();
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    assert!(second.contains("Content-Length: 5\r\n"), "{second}");
    assert_eq!(client.read_through(b"plain"), b"plain");
}

#[test]
fn a_streamed_answer_to_http_1_0_is_delimited_by_the_close() {
    let server = stream_server(Latch::default(), Duration::from_secs(30));
    let mut client = RawClient::connect(server.addr());
    client.send("GET /count?n=3 HTTP/1.0\r\n\r\n");
    let head = client.head();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(
        !head.contains("Transfer-Encoding") && !head.contains("Content-Length"),
        "{head}"
    );
    assert_eq!(client.rest(), b"line 1\nline 2\nline 3\n");
}

#[test]
fn hanging_up_mid_stream_interrupts_the_work() {
    let stopped = Latch::default();
    let server = stream_server(stopped.clone(), Duration::from_secs(30));
    let mut client = RawClient::connect(server.addr());
    client.send("GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
    client.head();
    assert_eq!(client.chunk().as_deref(), Some(&b"tick\n"[..]));
    drop(client);
    assert!(stopped.wait(WAIT), "the stage was not interrupted");
    // The server serves on.
    let mut other = RawClient::connect(server.addr());
    other.send("GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(other.rest().ends_with(b"plain"));
}

#[test]
fn a_stream_cut_short_or_stalled_closes_the_connection_without_the_last_chunk() {
    let server = stream_server(Latch::default(), Duration::from_millis(800));
    for path in ["/drop", "/stall"] {
        let mut client = RawClient::connect(server.addr());
        client.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let head = client.head();
        assert!(
            head.contains("Transfer-Encoding: chunked"),
            "{path}: {head}"
        );
        let rest = client.rest();
        assert!(
            !rest.ends_with(b"0\r\n\r\n"),
            "{path}: a stream cut short must not look complete: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

// ---- Server-Sent Events of jobs -------------------------------------------------

fn scratch_db(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("streaming")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir.join("jobs.sqlite")
}

/// One event as read off a stream: its id, type and data.
#[derive(Debug, PartialEq)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads SSE events (and comments) from the chunks of an event stream.
struct EventReader {
    client: RawClient,
    text: String,
    ended: bool,
}

impl EventReader {
    fn open(addr: SocketAddr, location: &str, last_event_id: Option<&str>) -> EventReader {
        let mut client = RawClient::connect(addr);
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        client.send(&format!(
            "GET {location}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}\r\n"
        ));
        let head = client.head();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        for field in [
            "Content-Type: text/event-stream",
            "Cache-Control: no-cache",
            "X-Accel-Buffering: no",
            "Transfer-Encoding: chunked",
        ] {
            assert!(head.contains(field), "{field} in {head}");
        }
        EventReader {
            client,
            text: String::new(),
            ended: false,
        }
    }

    /// The next block (event or comment); `None` once the stream has ended.
    fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.text.find("\n\n") {
                let block = self.text[..at].to_string();
                self.text.drain(..at + 2);
                return Some(block);
            }
            if self.ended {
                return None;
            }
            match self.client.chunk() {
                Some(piece) => self
                    .text
                    .push_str(std::str::from_utf8(&piece).expect("UTF-8")),
                None => self.ended = true,
            }
        }
    }

    /// The next event, skipping comments; `None` once the stream has ended.
    fn next_event(&mut self) -> Option<Sse> {
        loop {
            let block = self.next_block()?;
            if block.starts_with(':') {
                continue;
            }
            let mut event = Sse {
                id: None,
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                match line.split_once(": ") {
                    Some(("id", v)) => event.id = Some(v.to_string()),
                    Some(("event", v)) => event.event = Some(v.to_string()),
                    Some(("data", v)) => event.data.push_str(v),
                    _ => panic!("unexpected line {line:?}"),
                }
            }
            return Some(event);
        }
    }

    fn all_events(&mut self) -> Vec<Sse> {
        std::iter::from_fn(|| self.next_event()).collect()
    }
}

/// A stage that reports progress at two steps, each step waiting for its gate.
fn stepped(gates: [Latch; 2]) -> impl FnMut(&mut HttpJob) -> Result<Next, StageError> + Clone {
    move |job: &mut HttpJob| {
        for (i, gate) in gates.iter().enumerate() {
            gate.wait(WAIT);
            job.progress((i + 1) as f32 / 2.0, &format!("step {}", i + 1));
        }
        Ok(Next::respond(Response::new(200).body("all done")))
    }
}

fn submit(addr: SocketAddr) -> String {
    let mut client = RawClient::connect(addr);
    client.send("GET /work HTTP/1.1\r\nHost: x\r\nPrefer: respond-async\r\n\r\n");
    let head = client.head();
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .expect("a Location")
        .to_string()
}

fn kinds(events: &[Sse]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.data).expect("JSON data");
            match e.event.as_deref() {
                Some("state") => format!("state {}", data["state"].as_str().unwrap_or("?")),
                Some("progress") => format!("progress {}", data["message"].as_str().unwrap_or("?")),
                other => panic!("unexpected event type {other:?}"),
            }
        })
        .collect()
}

#[test]
fn job_events_reach_every_watcher_and_a_reconnect_gets_exactly_what_it_missed() {
    let gates = [Latch::default(), Latch::default()];
    let mut config = http_config();
    let mut jobs = JobsConfig::new(scratch_db("sse"));
    jobs.sse_keepalive = Duration::from_millis(200);
    config.jobs = Some(jobs);
    let server = TestServer::start(
        Pipeline::new().http_stage("work", 1, stepped(gates.clone())),
        config,
    );
    let location = submit(server.addr());

    let mut first = EventReader::open(server.addr(), &location, None);
    let mut second = EventReader::open(server.addr(), &location, None);
    // Both see the past: queued, then running once the worker takes it.
    for reader in [&mut first, &mut second] {
        let queued = reader.next_event().expect("an event");
        assert_eq!(queued.id.as_deref(), Some("1"));
        assert_eq!(kinds(&[queued]), ["state queued"]);
    }
    let running = first.next_event().expect("running");
    assert_eq!(kinds(&[running]), ["state running"]);
    // Idle: the keep-alive comment comes every 200 ms here (15 s by default).
    let comment = first.next_block().expect("a block");
    assert_eq!(comment, ": keep-alive");

    gates[0].open();
    let step = first.next_event().expect("progress");
    assert_eq!(step.id.as_deref(), Some("3"));
    assert_eq!(kinds(&[step]), ["progress step 1"]);

    // A third watcher that had event 2 gets exactly 3, then the live ones.
    let mut resumed = EventReader::open(server.addr(), &location, Some("2"));
    let missed = resumed.next_event().expect("the missed event");
    assert_eq!(missed.id.as_deref(), Some("3"));

    gates[1].open();
    let rest = first.all_events();
    assert_eq!(kinds(&rest), ["progress step 2", "state succeeded"]);
    let last: serde_json::Value = serde_json::from_str(&rest[1].data).expect("JSON");
    assert_eq!(last["progress"]["message"], "step 2");
    let ids: Vec<_> = rest
        .iter()
        .map(|e| e.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["4", "5"]);
    assert_eq!(
        kinds(&second.all_events()),
        [
            "state running",
            "progress step 1",
            "progress step 2",
            "state succeeded"
        ]
    );
    assert_eq!(
        kinds(&resumed.all_events()),
        ["progress step 2", "state succeeded"]
    );

    // After the end, a new watcher gets the whole history and the end at once.
    let mut late = EventReader::open(server.addr(), &location, None);
    assert_eq!(late.all_events().len(), 5);
    // The status shows the last progress.
    let mut client = common::Client::connect(server.addr());
    let status = client.get(&location);
    assert_eq!(status.json()["progress"]["fraction"], 1.0);
}
