//! Several front ends, one pipeline (see `prime_server::pipeline::front_ends`): each
//! answer (a JSON-RPC batch's calls too) reaches the front end holding its client, each
//! front end's interrupts and stream notices reach the workers, 10,000 pipelined
//! requests over three front ends each get exactly their own answer, a stage's publish
//! reaches holds on the other front ends, a front end killed or restarted leaves the
//! others serving, and `prime_serverd --front-ends N` spreads connections over its
//! threads and refuses a SQLite job store.
//!
//! Every wait is bounded; nothing asserts on elapsed time.

mod daemons;

use daemons::{args, free_port, is_prime, poll_until, tcp, Client, Daemon, START_TIMEOUT};
use prime_server::http::Response;
use prime_server::pipeline::channel::{Hold, Item};
use prime_server::server::{Server, ServerConfig};
use prime_server::{Job, Outcome, Pipeline, RunningPipeline, Shutdown};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const READ: Duration = Duration::from_secs(20);

/// The bytes of `/stream`'s answer: three times a stream's window, so the worker must
/// hear the front end's notices to finish.
const STREAMED: usize = 12 * 1024 * 1024;

/// Front ends as threads of this process on one pipeline, each on a port of its own
/// (so a test chooses which one a client reaches); stopped when dropped.
struct InProcess {
    ports: Vec<u16>,
    shutdown: Shutdown,
    threads: Vec<JoinHandle<()>>,
    pipeline: Option<RunningPipeline>,
}

impl InProcess {
    fn start(front_ends: usize, pipeline: Pipeline) -> InProcess {
        let ctx = zmq::Context::new();
        let (running, fronts) = pipeline
            .start_front_ends(&ctx, front_ends)
            .expect("the pipeline starts");
        let shutdown = Shutdown::new();
        let mut ports = Vec::new();
        let mut threads = Vec::new();
        for front in fronts {
            let port = free_port();
            let mut config = ServerConfig::http(tcp(port));
            config.jsonrpc_path = Some("/rpc".into());
            let server = Server::bind(&ctx, config, front).expect("a front end binds");
            let stop = shutdown.clone();
            threads.push(std::thread::spawn(move || {
                server.run(&stop).expect("a front end serves");
            }));
            ports.push(port);
        }
        InProcess {
            ports,
            shutdown,
            threads,
            pipeline: Some(running),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        drop(self.pipeline.take());
    }
}

/// The request target of a job's HTTP head.
fn target(job: &Job<'_>) -> String {
    let head = String::from_utf8_lossy(job.frame(0).unwrap_or_default()).into_owned();
    head.split(' ').nth(1).unwrap_or_default().to_string()
}

#[test]
fn answers_interrupts_batches_and_stream_notices_reach_the_right_front_end() {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let work = move |job: &mut Job<'_>| {
        let target = target(job);
        let front_end = job.envelope().front_end;
        match target.as_str() {
            "/wait" => {
                let _ = started_tx.send(front_end);
                let give_up = std::time::Instant::now() + Duration::from_secs(30);
                while !job.interrupted() && std::time::Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = ended_tx.send((front_end, job.interrupted()));
                Outcome::Abandon
            }
            "/stream" => {
                let piece = vec![b's'; 64 * 1024];
                let head = Response::new(200).header("Content-Type", "text/plain");
                if let Ok(mut stream) = job.stream_sized(&head, STREAMED as u64) {
                    for _ in 0..STREAMED / piece.len() {
                        if stream.send(&piece).is_err() {
                            return Outcome::Abandon;
                        }
                    }
                    let _ = stream.finish();
                }
                Outcome::Abandon
            }
            // Who answered, and what was asked: a client can tell its answers apart.
            _ => job.reply(&Response::new(200).body(format!("{front_end} {target}"))),
        }
    };
    let servers = InProcess::start(3, Pipeline::new().stage("work", 4, work));
    let ports = servers.ports.clone();

    // Many requests on every front end at once, pipelined: each answer is its own.
    let clients: Vec<JoinHandle<()>> = (0..6)
        .map(|client| {
            let (front_end, port) = (client % 3, ports[client % 3]);
            std::thread::spawn(move || {
                let mut connection = Client::connect(port).expect("connect");
                for round in 0..5 {
                    for n in 0..20 {
                        connection
                            .send_get(&format!("/echo/{client}/{round}/{n}"))
                            .expect("send");
                    }
                    for n in 0..20 {
                        let answer = connection.read_response(READ).expect("an answer");
                        assert_eq!(answer.status, 200);
                        assert_eq!(
                            answer.body,
                            format!("{front_end} /echo/{client}/{round}/{n}")
                        );
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client got its own answers");
    }

    // A client leaving front end 2 interrupts the worker running its request.
    let mut leaving = Client::connect(ports[2]).expect("connect");
    leaving.send_get("/wait").expect("send");
    let front_end = started.recv_timeout(READ).expect("the waiting job starts");
    assert_eq!(front_end, 2);
    drop(leaving);
    let (front_end, interrupted) = ended.recv_timeout(READ).expect("the waiting job ends");
    assert_eq!(
        (front_end, interrupted),
        (2, true),
        "the worker was not interrupted"
    );

    // A JSON-RPC batch on front end 2: each call is a request of its own, and each
    // call's answer comes back to front end 2 to be gathered.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"}]"#;
    let mut caller = Client::connect(ports[2]).expect("connect");
    let request = format!(
        "POST /rpc HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{batch}",
        batch.len()
    );
    caller.send_raw(request.as_bytes()).expect("send");
    let answer = caller.read_response(READ).expect("the batch's answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut results: Vec<(i64, String)> = answer
        .json()
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|call| {
            let id = call["id"].as_i64().expect("an id");
            (id, call["result"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    results.sort();
    assert_eq!(
        results,
        [(1, "2 /rpc".to_string()), (2, "2 /rpc".to_string())]
    );

    // A stream three windows long through front end 1: the worker hears its notices.
    let mut reader = Client::connect(ports[1]).expect("connect");
    let answer = reader.get("/stream", READ).expect("the whole stream");
    assert_eq!((answer.status, answer.body.len()), (200, STREAMED));
}

/// A two-stage prime deployment of processes with two `prime_httpd` sharing one port.
struct Shared {
    port: u16,
    httpd_args: [Vec<String>; 2],
    httpd: [Option<Daemon>; 2],
    _pipeline: Vec<Daemon>,
}

impl Shared {
    fn start() -> Shared {
        let [port, up1, down1, up2, down2, l0, i0, l1, i1] = [(); 9].map(|()| free_port());
        let fronts = ["--loopback", &tcp(l0), "--interrupt", &tcp(i0)]
            .into_iter()
            .chain(["--loopback", &tcp(l1), "--interrupt", &tcp(i1)])
            .map(str::to_string)
            .collect::<Vec<_>>();
        let loopbacks = args(&["--loopback", &tcp(l0), "--loopback", &tcp(l1)]);
        let proxy = |up: u16, down: u16| {
            let mut a = args(&["--upstream", &tcp(up), "--downstream", &tcp(down)]);
            a.extend(loopbacks.iter().cloned());
            a.extend(args(&["--heartbeat-timeout", "5"]));
            a
        };
        let worker = |stage: &str, up: u16, down: Option<u16>| {
            let mut a = args(&[
                "--upstream",
                &tcp(up),
                "--stage",
                stage,
                "--concurrency",
                "2",
            ]);
            if let Some(down) = down {
                a.extend(args(&["--downstream", &tcp(down)]));
            }
            a.extend(fronts.iter().cloned());
            a
        };
        let pipeline = vec![
            Daemon::start("proxy1", daemons::PROXYD, &proxy(up1, down1)),
            Daemon::start("proxy2", daemons::PROXYD, &proxy(up2, down2)),
            Daemon::start(
                "parse",
                daemons::WORKERD,
                &worker("parse", down1, Some(up2)),
            ),
            Daemon::start("compute", daemons::WORKERD, &worker("compute", down2, None)),
        ];
        let httpd = |number: u8, loopback: u16, interrupt: u16| {
            args(&[
                "--listen",
                &tcp(port),
                "--reuse-port",
                "--front-end",
                &number.to_string(),
                "--proxy",
                &tcp(up1),
                "--loopback",
                &tcp(loopback),
                "--interrupt",
                &tcp(interrupt),
                "--metrics-path",
                "/metrics",
            ])
        };
        let mut shared = Shared {
            port,
            httpd_args: [httpd(0, l0, i0), httpd(1, l1, i1)],
            httpd: [None, None],
            _pipeline: pipeline,
        };
        shared.start_httpd(0);
        shared.start_httpd(1);
        shared
    }

    fn start_httpd(&mut self, number: usize) {
        let name = format!("httpd{number}");
        let mut daemon = Daemon::start(&name, daemons::HTTPD, &self.httpd_args[number]);
        assert!(
            daemon.wait_for_log("listening for Http on", START_TIMEOUT),
            "{name} did not start: {}",
            daemon.stderr()
        );
        self.httpd[number] = Some(daemon);
    }

    /// A new connection and the front end it reached, once that front end answers a
    /// prime request (its pipeline is up).
    fn connect(&self) -> (Client, u8) {
        let mut client = Client::connect(self.port).expect("connect");
        let metrics = client.get("/metrics", READ).expect("metrics");
        let front_end = front_end_of(&metrics.body);
        let ready = poll_until(START_TIMEOUT, || {
            let answer = client.get(&is_prime(7), READ).ok()?;
            (answer.status == 200).then_some(())
        });
        assert!(ready.is_some(), "front end {front_end} does not answer");
        (client, front_end)
    }
}

/// The front end a metrics scrape came from.
fn front_end_of(metrics: &str) -> u8 {
    let line = metrics
        .lines()
        .find(|line| line.starts_with("prime_front_end_info{"))
        .unwrap_or_else(|| panic!("no prime_front_end_info in {metrics:?}"));
    line.split('"')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a front end number")
}

/// Connections to the shared port until there is one on each front end (the kernel
/// spreads them; bounded).
fn one_on_each(shared: &Shared) -> [Client; 2] {
    let mut found: [Option<Client>; 2] = [None, None];
    for _ in 0..64 {
        let (client, front_end) = shared.connect();
        let slot = &mut found[usize::from(front_end)];
        if slot.is_none() {
            *slot = Some(client);
        }
        if found.iter().all(Option::is_some) {
            return found.map(|c| c.expect("found"));
        }
    }
    panic!("64 connections to a shared port all reached one front end");
}

#[test]
fn two_front_end_processes_share_a_port_and_one_pipeline_and_survive_a_kill() {
    let mut shared = Shared::start();
    let [on_a, on_b] = one_on_each(&shared);

    // Both front ends at once, each request a different number: every answer names its
    // own number, so none went to the other front end.
    let load = |mut client: Client, base: u64, count: u64, progress: Arc<AtomicUsize>| {
        std::thread::spawn(move || {
            for i in 0..count {
                let n = base + 2 * i;
                let answer = client.get(&is_prime(n), READ).expect("an answer");
                assert_eq!((answer.status, answer.possible_prime()), (200, Some(n)));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            client
        })
    };
    let progress = Arc::new(AtomicUsize::new(0));
    let a = load(on_a, 1_000_001, 100, progress.clone());
    let b = load(on_b, 2_000_001, 100, progress.clone());
    let mut on_b = b.join().expect("front end 1's client got its answers");
    drop(a.join().expect("front end 0's client got its answers"));

    // Front end 0 is killed while front end 1's client keeps asking: no error there.
    let progress = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        on_b.send_get(&is_prime(3_000_001)).expect("send");
        assert_eq!(on_b.read_response(READ).expect("an answer").status, 200);
    }
    let b = load(on_b, 4_000_001, 300, progress.clone());
    let reached = poll_until(READ, || {
        (progress.load(Ordering::SeqCst) >= 50).then_some(())
    });
    assert!(reached.is_some(), "front end 1's client made no progress");
    shared.httpd[0].as_mut().expect("httpd0").kill9();
    b.join()
        .expect("front end 1's client saw no error while front end 0 died");

    // The port keeps serving: new connections all reach front end 1.
    for _ in 0..8 {
        let (_, front_end) = shared.connect();
        assert_eq!(front_end, 1);
    }

    // Front end 0 restarts at the same endpoints and is answered again.
    shared.start_httpd(0);
    let [mut again, _] = one_on_each(&shared);
    let answer = again.get(&is_prime(5_000_011), READ).expect("an answer");
    assert_eq!(
        (answer.status, answer.possible_prime()),
        (200, Some(5_000_011))
    );
}

#[test]
fn prime_serverd_front_ends_spread_connections_over_one_port() {
    let port = free_port();
    let serverd = env!("CARGO_BIN_EXE_prime_serverd");
    let listen = tcp(port);
    let _server = Daemon::start_listening(
        "serverd",
        serverd,
        &args(&[
            "--front-ends",
            "2",
            "--metrics-path",
            "/metrics",
            &listen,
            "2",
        ]),
    );
    let mut seen = [0usize; 2];
    let mut clients = Vec::new();
    // Connections held open together, so each is a new one for the kernel to place.
    for _ in 0..32 {
        let mut client = Client::connect(port).expect("connect");
        let metrics = client.get("/metrics", READ).expect("metrics");
        seen[usize::from(front_end_of(&metrics.body))] += 1;
        let answer = client.get(&is_prime(7), READ).expect("an answer");
        assert_eq!((answer.status, answer.possible_prime()), (200, Some(7)));
        clients.push(client);
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "connections per front end: {seen:?}"
    );
}

#[test]
fn several_front_ends_refuse_a_sqlite_job_store() {
    let serverd = env!("CARGO_BIN_EXE_prime_serverd");
    let db = daemons::scratch_path("front-ends-jobs", "sqlite");
    let listen = tcp(free_port());
    let (status, stderr) = daemons::run_to_exit(
        serverd,
        &args(&[
            "--front-ends",
            "2",
            "--jobs-db",
            db.to_str().expect("a path"),
            &listen,
            "1",
        ]),
        Duration::from_secs(30),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("postgres://") && stderr.contains("SQLite"),
        "the refusal does not name the PostgreSQL store: {stderr}"
    );
    assert!(!db.exists(), "the SQLite file was created anyway");
}

/// Front-end threads sharing a port, started by `Pipeline::bind_servers` as
/// `prime_serverd --front-ends N` does; stopped when dropped.
struct SharedThreads {
    port: u16,
    shutdown: Shutdown,
    threads: Vec<JoinHandle<()>>,
    pipeline: Option<RunningPipeline>,
}

impl SharedThreads {
    fn start(front_ends: usize, pipeline: Pipeline) -> SharedThreads {
        let ctx = zmq::Context::new();
        let (running, servers) = pipeline
            .bind_servers(&ctx, ServerConfig::http("tcp://127.0.0.1:0"), front_ends)
            .expect("the front ends start");
        let endpoint = servers[0].endpoints()[0].clone();
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        let shutdown = Shutdown::new();
        let threads = servers
            .into_iter()
            .map(|server| {
                let stop = shutdown.clone();
                std::thread::spawn(move || {
                    server.run(&stop).expect("a front end serves");
                })
            })
            .collect();
        SharedThreads {
            port,
            shutdown,
            threads,
            pipeline: Some(running),
        }
    }
}

impl Drop for SharedThreads {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        drop(self.pipeline.take());
    }
}

#[test]
fn a_stage_publishing_through_one_front_end_reaches_a_hold_on_another() {
    let work = |job: &mut Job<'_>| {
        let front_end = job.envelope().front_end;
        match target(job).as_str() {
            "/hold" => job.hold(&Hold::response(["news"]).timeout(30)),
            "/publish" => {
                let answer = Response::new(200).body("hello from the bus");
                job.publish(&Item::stream("news", "hello\n").with_response(&answer));
                job.reply(&Response::new(202).body("published"))
            }
            _ => job.reply(&Response::new(200).body(front_end.to_string())),
        }
    };
    let threads = SharedThreads::start(2, Pipeline::new().stage("channels", 2, work));
    let mut on: [Option<Client>; 2] = [None, None];
    for _ in 0..64 {
        let mut client = Client::connect(threads.port).expect("connect");
        let answer = client.get("/whoami", READ).expect("an answer");
        let front_end: usize = answer.body.parse().expect("a front end number");
        on[front_end].get_or_insert(client);
        if on.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(mut holder), Some(mut publisher)] = on else {
        panic!("64 connections to a shared port all reached one front end");
    };
    holder.send_get("/hold").expect("send");
    // The hold's subscription crosses the bus a moment after it arrives: publish until
    // the held client is answered (bounded).
    let mut answer = None;
    for _ in 0..100 {
        let published = publisher.get("/publish", READ).expect("an answer");
        assert_eq!(published.status, 202);
        if let Ok(held) = holder.read_response(Duration::from_millis(200)) {
            answer = Some(held);
            break;
        }
    }
    let answer = answer.expect("the hold on front end 0 never got front end 1's publish");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "hello from the bus")
    );
}

#[test]
fn ten_thousand_pipelined_requests_over_three_front_ends_each_get_their_own_answer() {
    const CONNECTIONS_PER_FRONT_END: usize = 4;
    const REQUESTS: usize = 10_000;
    const DEPTH: usize = 50;
    let work = |job: &mut Job<'_>| {
        let body = format!("{} {}", job.envelope().front_end, target(job));
        job.reply(&Response::new(200).body(body))
    };
    let servers = InProcess::start(3, Pipeline::new().stage("work", 4, work));
    let connections = 3 * CONNECTIONS_PER_FRONT_END;
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<JoinHandle<()>> = (0..connections)
        .map(|client| {
            let (front_end, port) = (client % 3, servers.ports[client % 3]);
            // Requests client, client + connections, ...: 10,000 in all.
            let numbers: Vec<usize> = (client..REQUESTS).step_by(connections).collect();
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut connection = Client::connect(port).expect("connect");
                for window in numbers.chunks(DEPTH) {
                    for n in window {
                        connection.send_get(&format!("/n/{n}")).expect("send");
                    }
                    for n in window {
                        let answer = connection.read_response(READ).expect("an answer");
                        assert_eq!(
                            (answer.status, answer.body.as_str()),
                            (200, format!("{front_end} /n/{n}").as_str()),
                            "connection {client} got another request's answer"
                        );
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Nothing more arrives: no answer was doubled.
                assert!(
                    connection
                        .read_response(Duration::from_millis(100))
                        .is_err(),
                    "connection {client} got an answer it did not ask for"
                );
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client got exactly its own answers");
    }
    assert_eq!(answered.load(Ordering::SeqCst), REQUESTS);
}

#[test]
fn the_front_ends_context_gets_the_io_threads_it_is_told_and_one_per_front_end() {
    for (io_threads, front_ends, wanted) in [(3, 1, 3), (1, 3, 3), (1, 1, 1)] {
        let ctx = zmq::Context::new();
        let mut config = ServerConfig::http("tcp://127.0.0.1:0");
        config.io_threads = io_threads;
        let hello = |_: &mut Job<'_>| Outcome::respond(Response::new(204).to_bytes(1, true, false));
        let (running, servers) = Pipeline::new()
            .stage("hello", 1, hello)
            .bind_servers(&ctx, config, front_ends)
            .expect("the front ends start");
        assert_eq!(
            ctx.get_io_threads().expect("the context answers"),
            wanted,
            "--io-threads {io_threads} with {front_ends} front end(s)"
        );
        drop(servers);
        running.stop();
    }
}
