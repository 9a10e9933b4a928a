//! A front end started by `Pipeline::bind_server` (as `prime_serverd` starts one) runs
//! its stages' proxies on its own thread. What a client sees must not change: answers
//! through two stages in request order, and 503 once a stage's queue is full.

use prime_server::http::Response;
use prime_server::server::ServerConfig;
use prime_server::{Job, Outcome, Pipeline, RunningPipeline, Shutdown};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a test waits for anything at most.
const PATIENCE: Duration = Duration::from_secs(10);

/// A served pipeline on a free port; stopped when dropped.
struct Served {
    port: u16,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
    pipeline: Option<RunningPipeline>,
}

impl Served {
    fn start(pipeline: Pipeline) -> Served {
        let ctx = zmq::Context::new();
        let mut config = ServerConfig::http("tcp://127.0.0.1:0");
        config.metrics_path = Some("/metrics".into());
        let (running, server) = pipeline
            .bind_server(&ctx, config)
            .expect("the front end starts");
        let port = server.endpoints()[0]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            server.run(&stop).expect("the front end serves");
        });
        Served {
            port,
            shutdown,
            thread: Some(thread),
            pipeline: Some(running),
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("a connection");
        stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
        stream
    }

    /// The jobs the proxies refused with a full queue, from the metrics path.
    fn refused(&self) -> u64 {
        let mut client = self.connect();
        let (_, body) = exchange(&mut client, &["/metrics"]).remove(0);
        body.lines()
            .filter(|l| {
                l.starts_with("prime_proxy_jobs_total") && l.contains("outcome=\"queue_full\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        drop(self.pipeline.take());
    }
}

/// Writes a GET for each path in one write (pipelined) and reads as many answers:
/// (status, body) each, in the order read.
fn exchange(client: &mut TcpStream, paths: &[&str]) -> Vec<(u16, String)> {
    let requests: String = paths
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    client
        .write_all(requests.as_bytes())
        .expect("the requests go out");
    let mut buffer = Vec::new();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + PATIENCE;
    while answers.len() < paths.len() {
        assert!(Instant::now() < deadline, "answers missing: {answers:?}");
        // Parse what has arrived: head, then a body of Content-Length bytes.
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status");
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]);
                answers.push((status, body.into_owned()));
                buffer.drain(..end + 4 + length);
                continue;
            }
        }
        let read = client.read(&mut chunk).expect("the answers come");
        assert!(read > 0, "the connection closed after {answers:?}");
        buffer.extend_from_slice(&chunk[..read]);
    }
    answers
}

/// The request's path, from its head in frame 0.
fn path_of(job: &Job<'_>) -> String {
    let head = String::from_utf8_lossy(job.frame(0).unwrap_or_default()).into_owned();
    head.split_whitespace().nth(1).unwrap_or("").to_string()
}

#[test]
fn answers_through_two_hosted_proxies_keep_request_order() {
    let forward = |job: &mut Job<'_>| Outcome::Forward(job.take_frames());
    let answer = |job: &mut Job<'_>| {
        let path = path_of(job);
        job.reply(&Response::new(200).body(path))
    };
    let served = Served::start(
        Pipeline::new()
            .stage("first", 2, forward)
            .stage("second", 2, answer),
    );
    let mut client = served.connect();
    for round in 0..5 {
        let paths: Vec<String> = (0..64).map(|k| format!("/{round}-{k}")).collect();
        let asked: Vec<&str> = paths.iter().map(String::as_str).collect();
        let answers = exchange(&mut client, &asked);
        for (path, (status, body)) in paths.iter().zip(&answers) {
            assert_eq!((*status, body.as_str()), (200, path.as_str()));
        }
    }
}

#[test]
fn a_full_queue_at_a_hosted_proxy_is_answered_503_in_order() {
    // One worker holding one job at once, two jobs may wait: of six requests sent
    // while the first runs, three are refused.
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let (held, counted) = (release.clone(), started.clone());
    let work = move |job: &mut Job<'_>| {
        let path = path_of(job);
        if path.starts_with("/hold") {
            counted.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + PATIENCE;
            while !held.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        job.reply(&Response::new(200).body(path))
    };
    let served = Served::start(
        Pipeline::new()
            .queue_bound(2)
            .prefetch(1)
            .stage("held", 1, work),
    );
    let mut warm = served.connect();
    assert_eq!(exchange(&mut warm, &["/warm"])[0], (200, "/warm".into()));
    let mut client = served.connect();
    let paths = ["/hold0", "/hold1", "/hold2", "/hold3", "/hold4", "/hold5"];
    let asking = std::thread::spawn(move || exchange(&mut client, &paths));
    let deadline = Instant::now() + PATIENCE;
    while (started.load(Ordering::SeqCst) == 0 || served.refused() < 3) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    release.store(true, Ordering::SeqCst);
    let answers = asking.join().expect("the client reads its answers");
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503], "{answers:?}");
    assert_eq!(answers[2].1, "/hold2");
}
