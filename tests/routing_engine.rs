//! Integration test of `examples/routing_engine`: runs the example binary on a port the
//! system picks and checks, over real HTTP, that its routes are the cheapest (against a
//! plain Dijkstra here on the same graph), that `/locate` finds the nearest node, that
//! bad requests get the right status, that a client hanging up stops its search, and
//! that cheap requests stay fast while costly ones run.
//!
//! Timing checks compare figures measured in the same run (ratios), never fixed times,
//! so a loaded machine slows both sides alike. The tests share one lock so that one
//! test's server never competes for the CPU with another test's measurements.
//!
//! `cargo test` builds the examples first; the example is found next to this test's
//! executable (`target/<profile>/examples/`).

#[path = "../examples/routing_engine/graph.rs"]
mod graph;
mod tcp_reset;

use graph::Graph;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single wait of this test lasts: a debug build of the example on a
/// loaded machine takes seconds for a long route, so this is generous, but bounded.
const WAIT: Duration = Duration::from_secs(60);

/// Relative tolerance between two sums of the same costs added in different orders.
const TOLERANCE: f64 = 1e-9;

/// Takes the lock that keeps these tests from running at the same time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The example's graph, built here too (once for all tests).
fn graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(Graph::standard)
}

/// The node in the far corner from node 0.
fn far_corner(graph: &Graph) -> u32 {
    graph.node_at(graph::WIDTH - 1, graph::HEIGHT - 1)
}

/// The example's executable, next to this test's: `target/<profile>/deps/routing_engine-HASH`
/// becomes `target/<profile>/examples/routing_engine`.
fn example_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("routing_engine{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} does not exist: build it with `cargo build --examples` (a plain `cargo test` \
         does, but `cargo test --test routing_engine` does not)",
        binary.display()
    );
    binary
}

/// The example running as a child process; dropping it kills the process.
struct Server {
    /// The process.
    child: Child,
    /// Where it listens, `127.0.0.1:PORT`.
    address: String,
    /// Every line it has written to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the example with `concurrency` workers per stage on a port the system
    /// picks, and waits until it says where it listens.
    fn start(concurrency: usize) -> Server {
        Server::start_with(concurrency, &[])
    }

    /// [`Server::start`] with more command-line options.
    fn start_with(concurrency: usize, options: &[&str]) -> Server {
        let binary = example_binary();
        let mut child = Command::new(&binary)
            .args(["tcp://127.0.0.1:0", &concurrency.to_string()])
            .args(options)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut server = Server {
            child,
            address: String::new(),
            log: Arc::default(),
        };
        let (found, address) = mpsc::channel();
        let log = server.log.clone();
        // Reads stderr to the end, or the example would block once the pipe is full.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, endpoint)) = line.split_once("listening for Http on tcp://") {
                    let _ = found.send(endpoint.trim().to_string());
                }
                log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        server.address = address.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "the example did not say where it listens within {WAIT:?}; it wrote:\n{}",
                server.log_text()
            )
        });
        server
    }

    /// A new connection to the server.
    fn client(&self) -> Client {
        Client::connect(&self.address)
    }

    /// What the server has logged so far.
    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// How many log lines so far contain `text`.
    fn count_log(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().filter(|line| line.contains(text)).count()
    }

    /// Waits (up to `within`) until more than `seen` log lines contain `text`; returns
    /// the newest such line, if one came.
    fn wait_for_log(&self, text: &str, seen: usize, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while self.count_log(text) <= seen && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|line| line.contains(text))
            .nth(seen)
            .cloned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 connection.
struct Client {
    /// The connection, buffered for reading response heads line by line.
    reader: BufReader<TcpStream>,
}

/// A response: status, the `Allow` header if any, and the body as JSON.
struct Reply {
    /// The status code.
    status: u16,
    /// The `Allow` header.
    allow: Option<String>,
    /// The `Location` header, if any.
    location: Option<String>,
    /// The body, parsed as JSON.
    body: Value,
}

impl Client {
    /// Connects to `address`; every read and write is bounded by [`WAIT`].
    fn connect(address: &str) -> Client {
        let stream = TcpStream::connect(address).expect("the example accepts connections");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        stream.set_nodelay(true).expect("no delay");
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request without waiting for the answer.
    fn send(&mut self, method: &str, target: &str) {
        self.send_with(method, target, "");
    }

    /// Sends a request with extra header lines (each ending in CRLF).
    fn send_with(&mut self, method: &str, target: &str, headers: &str) {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n{headers}\r\n"
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("the request is sent");
    }

    /// Reads one response.
    fn receive(&mut self) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let (mut length, mut allow, mut location) = (0usize, None, None);
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("a header line");
            let Some((name, value)) = line.trim_end().split_once(": ") else {
                break; // the empty line that ends the head
            };
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().expect("a length"),
                "allow" => allow = Some(value.to_string()),
                "location" => location = Some(value.to_string()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("the body");
        let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        Reply {
            status,
            allow,
            location,
            body,
        }
    }

    /// Sends a request and reads its response.
    fn request(&mut self, method: &str, target: &str) -> Reply {
        self.send(method, target);
        self.receive()
    }

    /// A GET that must succeed; returns its body.
    fn get(&mut self, target: &str) -> Value {
        let reply = self.request("GET", target);
        assert_eq!(reply.status, 200, "GET {target}: {}", reply.body);
        reply.body
    }

    /// How long a GET takes, start to finish.
    fn time(&mut self, target: &str) -> Duration {
        let started = Instant::now();
        self.get(target);
        started.elapsed()
    }
}

/// The `/route` target from `from` to `to`.
fn route(from: u32, to: u32) -> String {
    format!("/route?from={from}&to={to}")
}

/// An entry of the reference search's queue, smallest cost first.
#[derive(PartialEq)]
struct Queued(f64, u32);

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// Plain Dijkstra from `source`, run until every one of `targets` is settled: the
/// cheapest cost to each target, in order. Written independently of the example's A*.
fn reference_costs(graph: &Graph, source: u32, targets: &[u32]) -> Vec<f64> {
    let mut cost = vec![f64::INFINITY; graph.node_count()];
    let mut settled = vec![false; graph.node_count()];
    let mut wanted = vec![false; graph.node_count()];
    let mut remaining = 0;
    for &t in targets {
        if !std::mem::replace(&mut wanted[t as usize], true) {
            remaining += 1;
        }
    }
    let mut queue = BinaryHeap::from([Queued(0.0, source)]);
    cost[source as usize] = 0.0;
    while let Some(Queued(c, u)) = queue.pop() {
        if std::mem::replace(&mut settled[u as usize], true) {
            continue;
        }
        if wanted[u as usize] {
            remaining -= 1;
            if remaining == 0 {
                break;
            }
        }
        for (v, w) in graph.edges(u) {
            if c + w < cost[v as usize] {
                cost[v as usize] = c + w;
                queue.push(Queued(c + w, v));
            }
        }
    }
    targets.iter().map(|&t| cost[t as usize]).collect()
}

/// Whether `a` and `b` agree within [`TOLERANCE`].
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// Checks that `path` runs from `from` to `to` along edges of the graph, and returns the
/// sum of their costs.
fn path_cost(graph: &Graph, path: &[u32], from: u32, to: u32) -> f64 {
    assert_eq!(path.first(), Some(&from), "the path starts at {from}");
    assert_eq!(path.last(), Some(&to), "the path ends at {to}");
    path.windows(2)
        .map(|w| {
            graph
                .edges(w[0])
                .filter(|&(v, _)| v == w[1])
                .map(|(_, c)| c)
                .reduce(f64::min)
                .unwrap_or_else(|| panic!("no edge from {} to {}", w[0], w[1]))
        })
        .sum()
}

/// The sample of routes: four sources, each to something adjacent, nearby, across town,
/// to the far corner and to a random node.
fn sample_routes(graph: &Graph, rng: &mut StdRng) -> Vec<(u32, Vec<u32>)> {
    let (w, h) = (graph::WIDTH, graph::HEIGHT);
    let sources = [
        (0, 0),
        (w / 2, h / 2),
        (rng.gen_range(0..w), rng.gen_range(0..h)),
        (rng.gen_range(0..w), rng.gen_range(0..h)),
    ];
    sources
        .iter()
        .map(|&(i, j)| {
            let near = |di: usize, dj: usize| graph.node_at((i + di) % w, (j + dj) % h);
            let targets = vec![
                near(1, 0),
                near(3, 2),
                near(w / 3, h / 4),
                graph.node_at(w - 1 - i, h - 1 - j),
                rng.gen_range(0..graph.node_count() as u32),
            ];
            (graph.node_at(i, j), targets)
        })
        .collect()
}

#[test]
fn graph_is_connected_and_its_heuristic_admissible() {
    let _serial = serial();
    let graph = graph();
    assert_eq!(graph.node_count(), graph::WIDTH * graph::HEIGHT);
    let costs = reference_costs(
        graph,
        0,
        &(0..graph.node_count() as u32).collect::<Vec<_>>(),
    );
    assert!(
        costs.iter().all(|c| c.is_finite()),
        "every node is reachable"
    );
    assert!(graph.min_factor() >= 1.0, "cost factors start at 1");
    for u in 0..graph.node_count() as u32 {
        for (v, cost) in graph.edges(u) {
            assert!(cost >= graph.min_factor() * graph.distance(u, v) * (1.0 - TOLERANCE));
        }
    }
    println!(
        "{} nodes, {} edges, smallest cost factor {:.6}",
        graph.node_count(),
        graph.edge_count(),
        graph.min_factor()
    );
}

#[test]
fn routes_are_cheapest_and_valid() {
    let _serial = serial();
    let graph = graph();
    let server = Server::start(2);
    let mut client = server.client();
    let mut rng = StdRng::seed_from_u64(7);
    let mut checked = 0;
    for (from, targets) in sample_routes(graph, &mut rng) {
        let expected = reference_costs(graph, from, &targets);
        for (&to, &expected) in targets.iter().zip(&expected) {
            let body = client.get(&route(from, to));
            let cost = body["cost"].as_f64().expect("a cost");
            let path: Vec<u32> = serde_json::from_value(body["path"].clone()).expect("a path");
            assert!(
                close(cost, expected),
                "{from} -> {to}: {cost} but Dijkstra says {expected}"
            );
            let walked = path_cost(graph, &path, from, to);
            assert!(
                close(cost, walked),
                "{from} -> {to}: cost {cost}, path sums to {walked}"
            );
            assert_eq!(body["nodes"].as_u64(), Some(path.len() as u64));
            let manoeuvres = body["manoeuvres"].as_array().expect("manoeuvres");
            assert_eq!(
                manoeuvres.first().map(|m| &m["type"]),
                Some(&Value::from("start"))
            );
            assert_eq!(
                manoeuvres.last().map(|m| &m["type"]),
                Some(&Value::from("arrive"))
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
    let same = client.get(&route(5, 5));
    assert_eq!(same["cost"].as_f64(), Some(0.0));
    assert_eq!(same["nodes"].as_u64(), Some(1));
}

#[test]
fn locate_finds_the_nearest_node() {
    let _serial = serial();
    let graph = graph();
    let server = Server::start(2);
    let mut client = server.client();
    let mut rng = StdRng::seed_from_u64(11);
    let mut points: Vec<(f64, f64)> = (0..16).map(|_| (rng.gen(), rng.gen())).collect();
    points.extend([(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]);
    for (lat, lon) in points {
        let body = client.get(&format!("/locate?lat={lat}&lon={lon}"));
        let (best, distance) = (0..graph.node_count() as u32)
            .map(|u| {
                let (x, y) = graph.position(u);
                (u, (x - lon).hypot(y - lat))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("the graph has nodes");
        let answered = body["distance"].as_f64().expect("a distance");
        assert!(
            close(answered, distance),
            "({lat}, {lon}): {body} but {best} is at {distance}"
        );
        assert_eq!(
            body["node"].as_u64(),
            Some(u64::from(best)),
            "({lat}, {lon}): {body}"
        );
    }
}

#[test]
fn bad_requests_are_refused() {
    let _serial = serial();
    let server = Server::start(1);
    let mut client = server.client();
    let last = graph().node_count() - 1;
    let bad = [
        "/locate",
        "/locate?lat=0.5",
        "/locate?lat=abc&lon=0.5",
        "/locate?lat=1.5&lon=0.5",
        "/locate?lat=-0.1&lon=0.5",
        "/locate?lat=NaN&lon=0.5",
        "/locate?lat=0.5&lat=0.6&lon=0.5",
        "/route?from=0",
        "/route?from=-1&to=5",
        "/route?from=1.5&to=5",
        &format!("/route?from=0&to={}", last + 1),
        "/route?from=99999999999999999999&to=5",
    ];
    for target in bad {
        let reply = client.request("GET", target);
        assert_eq!(reply.status, 400, "GET {target}: {}", reply.body);
        assert!(
            reply.body["error"].is_string(),
            "GET {target}: {}",
            reply.body
        );
    }
    let reply = client.request("GET", "/nowhere");
    assert_eq!(reply.status, 404, "{}", reply.body);
    for target in ["/route?from=0&to=1", "/locate?lat=0.5&lon=0.5"] {
        let reply = client.request("POST", target);
        assert_eq!(reply.status, 405, "POST {target}: {}", reply.body);
        assert_eq!(reply.allow.as_deref(), Some("GET, HEAD"));
    }
    client.get(&format!("/route?from=0&to={last}"));
}

#[test]
fn hanging_up_stops_the_search() {
    let _serial = serial();
    let graph = graph();
    let server = Server::start(1);
    let long = route(0, far_corner(graph));
    let short = route(graph.node_at(10, 10), graph.node_at(11, 10));
    server.client().get(&short); // the workers allocate their buffers
    let t_long = server.client().time(&long);
    // A machine shared with other work can stall any one measurement, so up to three
    // tries; one clean result shows the mechanism works.
    for attempt in 1..=3 {
        let seen = server.count_log("abandoned after");
        let mut gone = server.client();
        gone.send("GET", &long);
        // Long enough for the search to be well under way, so what is tested is a search
        // stopped in its tracks, not a job skipped before it began.
        thread::sleep(t_long / 5);
        // Gone for good: a reset (a FIN would only say it has finished sending).
        tcp_reset::reset(gone.reader.into_inner());
        let t_short_after = server.client().time(&short);
        let abandoned = server.wait_for_log("abandoned after", seen, Duration::from_secs(5));
        println!(
            "attempt {attempt}: long route {t_long:?}; short route after a hang-up {t_short_after:?}; \
             log: {abandoned:?}"
        );
        if t_short_after < t_long / 2 && abandoned.is_some() {
            return;
        }
    }
    panic!(
        "the search went on after the client hung up; the example wrote:\n{}",
        server.log_text()
    );
}

#[test]
fn cheap_requests_stay_fast_while_costly_ones_run() {
    let _serial = serial();
    let graph = graph();
    let server = Server::start(2);
    let long = route(0, far_corner(graph));
    let mut client = server.client();
    client.get(&route(0, 1)); // the workers allocate their buffers
    let mut longs: Vec<Duration> = (0..3).map(|_| client.time(&long)).collect();
    longs.sort();
    let t_long = longs[1];
    let alone = locate_p50(&mut client, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (mut client, long) = (server.client(), long.clone());
            let (stop, running) = (stop.clone(), running.clone());
            thread::spawn(move || {
                let mut done = 0;
                running.fetch_add(1, SeqCst);
                while !stop.load(SeqCst) {
                    client.get(&long);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while running.load(SeqCst) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20)); // both long routes reach the search stage
    let loaded = locate_p50(&mut client, 200);
    stop.store(true, SeqCst);
    let routes: Vec<usize> = load
        .into_iter()
        .map(|t| t.join().expect("a load thread"))
        .collect();
    println!(
        "long route {t_long:?}; locate p50 alone {alone:?}, with two long routes running \
         {loaded:?} (long routes served meanwhile, per thread: {routes:?})"
    );
    assert!(
        routes.iter().all(|&n| n >= 1),
        "each load thread kept a long route in flight throughout"
    );
    assert!(
        loaded < t_long / 4,
        "locate p50 under load {loaded:?} is not well below a long route's {t_long:?}"
    );
}

/// The median time of `count` `/locate` requests at random points.
fn locate_p50(client: &mut Client, count: usize) -> Duration {
    let mut rng = StdRng::seed_from_u64(3);
    let mut times: Vec<Duration> = (0..count)
        .map(|_| {
            let (lat, lon): (f64, f64) = (rng.gen(), rng.gen());
            client.time(&format!("/locate?lat={lat}&lon={lon}"))
        })
        .collect();
    times.sort();
    times[count / 2]
}

#[test]
fn routes_can_be_asked_for_asynchronously_with_no_change_to_the_stages() {
    let _serial = serial();
    let graph = graph();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("routing-jobs");
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let db = dir.join(format!("jobs-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let server = Server::start_with(2, &["--jobs-db", &db.display().to_string()]);
    let mut client = server.client();
    let target = route(0, far_corner(graph));
    let synchronous = client.get(&target);

    client.send_with("GET", &target, "Prefer: respond-async\r\n");
    let accepted = client.receive();
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let location = accepted.location.expect("a Location");
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let status = client.request("GET", &format!("{location}?wait=10"));
        if status.status == 303 {
            assert_eq!(status.body["state"], "succeeded");
            break;
        }
        assert_eq!(status.status, 200, "{}", status.body);
        assert!(Instant::now() < deadline, "the route job never ended");
    }
    let result = client.get(&format!("{location}/result"));
    assert_eq!(result, synchronous);
}
