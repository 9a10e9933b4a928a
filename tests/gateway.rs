//! The gateway stage over real sockets: `prime_gatewayd` in front of a small HTTP/1.1
//! backend that runs on threads of this test (std `TcpListener`, no mock): what is
//! forwarded and what is dropped, the caller's credentials (synchronous, asynchronous,
//! after a restart), the signature checked by Python's `hmac`, 502 and 504, a
//! cancelled job closing its backend connection, many calls in flight on one thread
//! (and the jobs beyond them waiting there, not at the proxy), a Rust stage in front of
//! a gateway stage, routing by task and the self-test.

mod daemons;
mod http_common;

use daemons::*;
use prime_server::stages::{HttpGateway, HttpJob, Next, StageError};
use prime_server::Pipeline;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const GATEWAYD: &str = env!("CARGO_BIN_EXE_prime_gatewayd");
const READ: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// One request as the backend received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the backend answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// At once: `/status/NNN` answers NNN, `/redirect` a 302, anything else 201.
    Answer,
    /// After this long.
    Delay(Duration),
    /// Never, while `release` is unset (but `/quick...` at once); then like `Answer`.
    Hold,
    /// Like `Answer`, then closes the connection without saying so first (no
    /// `Connection: close`), as a backend that drops idle connections does.
    CloseAfter,
    /// Like `Answer`, but the first request that comes second on its connection is
    /// read and then the connection closed with no answer (once per backend).
    DropSecond,
}

/// State the backend shares with the test.
#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Connections accepted so far, and closed by the backend or the peer.
    accepted: AtomicUsize,
    ended: AtomicUsize,
    /// Connections closed by the gateway while a request on them had no answer yet.
    closed_unanswered: AtomicUsize,
    release: AtomicBool,
    stop: AtomicBool,
    /// Whether a `DropSecond` backend has dropped its request.
    dropped: AtomicBool,
    /// Requests held at once now, and at most.
    held: AtomicUsize,
    most_held: AtomicUsize,
}

/// A threaded HTTP/1.1 backend on a free port of 127.0.0.1; dropping it stops it.
struct Backend {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(mode: Mode) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let mut connections = Vec::new();
            while !state.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        state.accepted.fetch_add(1, Ordering::Relaxed);
                        let state = Arc::clone(&state);
                        connections.push(std::thread::spawn(move || {
                            serve(stream, mode, &state);
                            state.ended.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        });
        Backend {
            port,
            shared,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// Waits until the backend has received `n` requests; returns them.
    fn wait_seen(&self, n: usize) -> Vec<Seen> {
        poll_until(WAIT, || {
            let seen = self.seen();
            (seen.len() >= n).then_some(seen)
        })
        .unwrap_or_else(|| panic!("the backend saw {:?}, not {n} requests", self.seen()))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one keep-alive connection until the peer closes it or the backend stops.
fn serve(mut stream: TcpStream, mode: Mode, state: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = Vec::new();
    let mut served = 0;
    loop {
        let Some(seen) = read_request(&mut stream, &mut buffer, state) else {
            return;
        };
        state.seen.lock().expect("lock").push(seen.clone());
        served += 1;
        match mode {
            Mode::Answer | Mode::CloseAfter => {}
            Mode::DropSecond if served == 2 && !state.dropped.swap(true, Ordering::Relaxed) => {
                return;
            }
            Mode::DropSecond => {}
            Mode::Delay(delay) => {
                let until = Instant::now() + delay;
                while Instant::now() < until && !state.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Mode::Hold if seen.target.starts_with("/quick") => {}
            Mode::Hold => {
                let now = state.held.fetch_add(1, Ordering::Relaxed) + 1;
                state.most_held.fetch_max(now, Ordering::Relaxed);
                let _held = Unhold(&state.held);
                while !state.release.load(Ordering::Relaxed) {
                    if state.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let mut byte = [0u8; 1];
                    match stream.read(&mut byte) {
                        Ok(0) => {
                            state.closed_unanswered.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Ok(_) => {}
                        Err(e) if is_wait(&e) => {}
                        Err(_) => {
                            state.closed_unanswered.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        }
        if stream.write_all(&answer(&seen)).is_err() || matches!(mode, Mode::CloseAfter) {
            return;
        }
    }
}

/// Counts a held request out when it ends, however it ends.
struct Unhold<'a>(&'a AtomicUsize);

impl Drop for Unhold<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn is_wait(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads one request (Content-Length bodies only), or `None` when the connection ends.
fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>, state: &Shared) -> Option<Seen> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(used)) = request.parse(buffer) {
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if buffer.len() >= used + length {
                let seen = Seen {
                    method: request.method.unwrap_or("").to_string(),
                    target: request.path.unwrap_or("").to_string(),
                    headers,
                    body: buffer[used..used + length].to_vec(),
                };
                buffer.drain(..used + length);
                return Some(seen);
            }
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if is_wait(&e) => {
                if state.stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// How many fields the backend's answer to `/many-fields` has besides its usual ones:
/// more than the 64 the job store once held.
const MANY_FIELDS: usize = 100;

/// The backend's answer, with hop-by-hop fields of its own for the gateway to drop.
fn answer(seen: &Seen) -> Vec<u8> {
    if seen.target == "/switch" {
        // An upgrade nobody asked for.
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec();
    }
    let (status, extra) = if seen.target.starts_with("/many-fields") {
        let fields: String = (0..MANY_FIELDS)
            .map(|i| format!("X-Many-{i}: value {i}\r\n"))
            .collect();
        (200, fields)
    } else if let Some(code) = seen.target.strip_prefix("/status/") {
        (code.parse().unwrap_or(500), String::new())
    } else if seen.target.starts_with("/redirect") {
        (302, "Location: /elsewhere\r\n".to_string())
    } else {
        (201, String::new())
    };
    let body = format!("backend saw {} {}", seen.method, seen.target);
    format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nX-Backend: yes\r\n\
         Connection: X-Backend-Hop\r\nX-Backend-Hop: private\r\nKeep-Alive: timeout=30\r\n\
         {extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Starts `prime_gatewayd` on a free port in front of `target` with extra flags.
fn start_gatewayd(name: &str, port: u16, target: &str, extra: &[&str]) -> Daemon {
    let mut list = vec![tcp(port), target.to_string(), "2".to_string()];
    list.extend(extra.iter().map(|s| s.to_string()));
    Daemon::start_listening(name, GATEWAYD, &list)
}

/// A request with a body, as raw bytes.
/// `n` clients of the gateway on `port`, each having sent `GET /held/{i}`, with their
/// targets.
fn held_clients(port: u16, n: usize) -> Vec<(String, Client)> {
    (0..n)
        .map(|i| {
            let target = format!("/held/{i}");
            let mut client = Client::connect(port).expect("connect");
            client
                .send_raw(&raw("GET", &target, &[], b""))
                .expect("send");
            (target, client)
        })
        .collect()
}

fn raw(method: &str, target: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut text = format!(
        "{method} {target} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn ask(port: u16, bytes: &[u8]) -> Response {
    let mut client = Client::connect(port).expect("connect");
    client.send_raw(bytes).expect("send");
    client.read_response(READ).expect("a response")
}

const CREDENTIALS: [&str; 2] = [
    "Authorization: Bearer caller-token-42",
    "Cookie: session=abc; theme=dark",
];

fn assert_credentials(seen: &Seen) {
    assert_eq!(
        seen.header("Authorization"),
        Some("Bearer caller-token-42"),
        "{seen:?}"
    );
    assert_eq!(
        seen.header("Cookie"),
        Some("session=abc; theme=dark"),
        "{seen:?}"
    );
}

/// The test's client (127.0.0.1) is named in `Forwarded` and `X-Forwarded-For`.
fn assert_client_forwarded(seen: &Seen) {
    let forwarded = seen.header("Forwarded").unwrap_or("");
    assert!(forwarded.starts_with("for=127.0.0.1;"), "{seen:?}");
    assert_eq!(
        seen.header("X-Forwarded-For"),
        Some("127.0.0.1"),
        "{seen:?}"
    );
}

fn db_path(name: &str) -> String {
    scratch_path(name, "sqlite").display().to_string()
}

#[test]
fn method_path_query_body_and_end_to_end_headers_are_forwarded_hop_by_hop_ones_dropped() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let _gateway = start_gatewayd("gw-forward", port, &backend.url(), &[]);
    let mut headers = vec![
        "X-Custom: kept",
        "Connection: X-Client-Hop",
        "X-Client-Hop: dropped",
        "Keep-Alive: timeout=5",
        "TE: trailers",
        "Upgrade: websocket",
        "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
        "X-Prime-Signature: t=1,v1=forged",
        "X-Forwarded-For: 203.0.113.9",
    ];
    headers.extend(CREDENTIALS);
    let response = ask(
        port,
        &raw(
            "PATCH",
            "/orders/7?x=1&y=two%20words",
            &headers,
            b"{\"qty\":3}",
        ),
    );

    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(
        response.body,
        "backend saw PATCH /orders/7?x=1&y=two%20words"
    );
    assert_eq!(response.header("X-Backend"), Some("yes"));
    for hop in ["X-Backend-Hop", "Keep-Alive"] {
        assert_eq!(response.header(hop), None, "{hop} came back: {response:?}");
    }

    let seen = backend.wait_seen(1).remove(0);
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.target, "/orders/7?x=1&y=two%20words");
    assert_eq!(seen.body, b"{\"qty\":3}");
    assert_eq!(seen.header("X-Custom"), Some("kept"));
    assert_credentials(&seen);
    for hop in [
        "X-Client-Hop",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Proxy-Authorization",
        "X-Prime-Signature",
    ] {
        assert_eq!(seen.header(hop), None, "{hop} was forwarded: {seen:?}");
    }
    assert_eq!(
        seen.header("Host"),
        Some(&format!("127.0.0.1:{}", backend.port)[..])
    );
    // The client's address, in the node form of RFC 7239 §6 (libzmq gives no port).
    let forwarded = seen.header("Forwarded").expect("Forwarded");
    assert_eq!(
        forwarded, "for=127.0.0.1;proto=http;host=\"shop.test\"",
        "{seen:?}"
    );
    assert_eq!(
        seen.header("X-Forwarded-For"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert!(seen.header("X-Request-Id").is_some(), "{seen:?}");

    // A redirect goes back to the client; the gateway does not follow it.
    let redirect = ask(port, &raw("GET", "/redirect", &["X-Request-Id: r-1"], b""));
    assert_eq!(redirect.status, 302, "{redirect:?}");
    assert_eq!(redirect.header("Location"), Some("/elsewhere"));
    let seen = backend.wait_seen(2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].header("X-Request-Id"), Some("r-1"));
}

/// Sends `GET target` on `client` and checks that the backend's answer came back.
fn get_answered(client: &mut Client, target: &str) {
    client
        .send_raw(&raw("GET", target, &[], b""))
        .expect("send");
    let response = client.read_response(READ).expect("a response");
    assert_eq!(response.status, 201, "{target}: {response:?}");
    assert_eq!(response.body, format!("backend saw GET {target}"));
}

#[test]
fn calls_one_after_another_reuse_one_kept_alive_backend_connection() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let _gateway = start_gatewayd("gw-pool", port, &backend.url(), &[]);
    let mut client = Client::connect(port).expect("connect");
    for n in 0..10 {
        get_answered(&mut client, &format!("/pooled/{n}"));
    }
    assert_eq!(backend.wait_seen(10).len(), 10);
    assert_eq!(backend.shared.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn a_kept_alive_connection_the_backend_closed_is_never_a_502() {
    let backend = Backend::start(Mode::CloseAfter);
    let port = free_port();
    let _gateway = start_gatewayd("gw-closed", port, &backend.url(), &[]);
    let mut client = Client::connect(port).expect("connect");
    for n in 0..10 {
        get_answered(&mut client, &format!("/closing/{n}"));
        // The backend's close has happened before the next request is sent.
        let ended = poll_until(WAIT, || {
            (backend.shared.ended.load(Ordering::Relaxed) > n).then_some(())
        });
        assert!(ended.is_some(), "the backend never closed connection {n}");
    }
    // Each request on a connection of its own: none was sent twice.
    let seen = backend.wait_seen(10);
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert_eq!(backend.shared.accepted.load(Ordering::Relaxed), 10);
}

#[test]
fn a_get_whose_kept_alive_connection_closed_unanswered_is_sent_again_and_a_post_is_not() {
    let backend = Backend::start(Mode::DropSecond);
    let port = free_port();
    let _gateway = start_gatewayd("gw-again", port, &backend.url(), &[]);
    let mut client = Client::connect(port).expect("connect");
    get_answered(&mut client, "/first");
    // Sent on the kept-alive connection, which closes unanswered: sent again on a new
    // one (RFC 9112 §9.3.1), the same request field for field.
    let again = ask(port, &raw("GET", "/again?n=1", &CREDENTIALS, b""));
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.body, "backend saw GET /again?n=1");
    let seen = backend.wait_seen(3);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1].target, "/again?n=1");
    assert_eq!(seen[1].headers, seen[2].headers);
    assert_credentials(&seen[2]);
    assert_eq!(backend.shared.accepted.load(Ordering::Relaxed), 2);

    // A POST is never sent twice: the client learns the backend failed.
    let backend = Backend::start(Mode::DropSecond);
    let port = free_port();
    let _gateway = start_gatewayd("gw-not-again", port, &backend.url(), &[]);
    let mut client = Client::connect(port).expect("connect");
    get_answered(&mut client, "/first");
    let posted = ask(port, &raw("POST", "/orders", &[], b"{\"n\":1}"));
    assert_eq!(posted.status, 502, "{posted:?}");
    let seen = backend.wait_seen(2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].body, b"{\"n\":1}");
    let after = ask(port, &raw("GET", "/after", &[], b""));
    assert_eq!(after.status, 201, "{after:?}");
}

#[test]
fn the_signature_checks_out_with_pythons_hmac() {
    let backend = Backend::start(Mode::Answer);
    let secret_file = scratch_path("gateway-secret", "txt");
    std::fs::write(&secret_file, "s3cret-shared\n").expect("write the secret");
    let port = free_port();
    let _gateway = start_gatewayd(
        "gw-sign",
        port,
        &backend.url(),
        &["--gateway-secret-file", &secret_file.display().to_string()],
    );
    let response = ask(port, &raw("POST", "/hook?a=1", &[], b"payload bytes"));
    assert_eq!(response.status, 201, "{response:?}");
    let seen = backend.wait_seen(1).remove(0);
    let signature = seen.header("X-Prime-Signature").expect("a signature");

    let check = |method: &str, target: &str, body: &str| -> bool {
        let script = "import hashlib,hmac,sys\n\
            sig,method,target,body=sys.argv[1:5]\n\
            fields=dict(p.split('=',1) for p in sig.split(','))\n\
            msg='\\n'.join([fields['t'],method,target,hashlib.sha256(body.encode()).hexdigest()])\n\
            good=hmac.new(b's3cret-shared',msg.encode(),hashlib.sha256).hexdigest()\n\
            sys.exit(0 if hmac.compare_digest(good,fields['v1']) else 1)";
        let status = std::process::Command::new("python3")
            .args(["-c", script, signature, method, target, body])
            .status()
            .expect("run python3");
        status.success()
    };
    assert!(check("POST", "/hook?a=1", "payload bytes"), "{signature}");
    assert!(!check("POST", "/hook?a=2", "payload bytes"), "{signature}");
    assert!(!check("POST", "/hook?a=1", "other bytes"), "{signature}");
    assert!(!check("PUT", "/hook?a=1", "payload bytes"), "{signature}");
}

#[test]
fn a_dead_backend_is_502_and_a_slow_one_504() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let port = free_port();
    let _gateway = start_gatewayd("gw-dead", port, &dead, &[]);
    let response = ask(port, &raw("GET", "/anything", &[], b""));
    assert_eq!(response.status, 502, "{response:?}");
    assert_eq!(response.json()["status"], 502);
    assert!(response.json()["error"].as_str().is_some(), "{response:?}");

    let slow = Backend::start(Mode::Delay(Duration::from_secs(5)));
    let port = free_port();
    let _gateway = start_gatewayd("gw-slow", port, &slow.url(), &["--gateway-timeout", "0.5"]);
    let response = ask(port, &raw("GET", "/slowly", &[], b""));
    assert_eq!(response.status, 504, "{response:?}");
    assert_eq!(response.json()["status"], 504);
    assert_eq!(slow.wait_seen(1)[0].target, "/slowly");
}

#[test]
fn cancelling_a_job_closes_its_backend_connection() {
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    let db = db_path("gw-cancel");
    let _gateway = start_gatewayd("gw-cancel", port, &backend.url(), &["--jobs-db", &db]);
    let accepted = ask(
        port,
        &raw("POST", "/report", &["Prefer: respond-async"], b"big report"),
    );
    let location = location_of(&accepted);
    let seen = backend.wait_seen(1);
    assert_eq!(seen[0].body, b"big report");
    assert_eq!(
        seen[0].header("Prefer"),
        None,
        "the gateway honoured respond-async itself"
    );

    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("DELETE", &location, &[])
        .expect("send a cancel");
    let cancelled = client.read_response(READ).expect("an answer");
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert!(
        poll_until(WAIT, || {
            (backend.shared.closed_unanswered.load(Ordering::Relaxed) >= 1).then_some(())
        })
        .is_some(),
        "the backend's connection stayed open after the cancel"
    );
    assert_eq!(wait_until_ended(port, &location)["state"], "cancelled");
}

/// A client that sends a call and closes its socket (FIN, nothing more read): the
/// front end finds it gone (its interim `102` is answered with a reset), the call is
/// interrupted, and the backend learns it: its connection is closed unanswered.
#[test]
fn a_call_whose_client_closed_its_socket_closes_its_backend_connection() {
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    // A gateway timeout far above the wait below: only the client's leaving can close
    // the backend's connection in time.
    let _gateway = start_gatewayd(
        "gw-client-gone",
        port,
        &backend.url(),
        &["--gateway-timeout", "120"],
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    assert_eq!(backend.wait_seen(1)[0].target, "/held");
    drop(stream);
    assert!(
        poll_until(WAIT, || {
            (backend.shared.closed_unanswered.load(Ordering::Relaxed) >= 1).then_some(())
        })
        .is_some(),
        "the backend's connection stayed open after its client left"
    );
}

#[test]
fn a_one_call_per_thread_gateway_stage_closes_the_backend_connection_of_a_client_that_left() {
    // The gateway as an HttpWork (Pipeline::http_stage): the call runs on the worker's
    // own thread, which watches for the client's leaving meanwhile; then a new call
    // goes through the same worker.
    let backend = Backend::start(Mode::Hold);
    let gateway = HttpGateway::new(&backend.url())
        .expect("a gateway")
        .timeout(Duration::from_secs(120));
    let pipeline = Pipeline::new().http_stage("gateway", 1, gateway);
    let server = http_common::TestServer::start(pipeline, http_common::http_config());
    let port = server.addr().port();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    assert_eq!(backend.wait_seen(1)[0].target, "/held");
    drop(stream);
    assert!(
        poll_until(WAIT, || {
            (backend.shared.closed_unanswered.load(Ordering::Relaxed) >= 1).then_some(())
        })
        .is_some(),
        "the backend's connection stayed open after its client left"
    );
    let response = ask(port, &raw("GET", "/quick/after", &[], b""));
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.body, "backend saw GET /quick/after");
}

#[test]
fn an_idempotency_key_never_gives_one_caller_the_job_run_with_anothers_credentials() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let db = db_path("gw-idempotency");
    let _gateway = start_gatewayd("gw-idempotency", port, &backend.url(), &["--jobs-db", &db]);
    let submit = |authorization: &str, body: &[u8]| {
        let headers = [
            "Prefer: respond-async",
            "Idempotency-Key: pay-1",
            authorization,
        ];
        ask(port, &raw("POST", "/bill?id=1", &headers, body))
    };
    let alice = location_of(&submit("Authorization: Bearer alice", b"due"));
    assert_eq!(wait_until_ended(port, &alice)["state"], "succeeded");
    // Bob's identical request is his own job, run with his credentials.
    let bob = location_of(&submit("Authorization: Bearer bob", b"due"));
    assert_ne!(bob, alice);
    assert_eq!(wait_until_ended(port, &bob)["state"], "succeeded");
    let seen = backend.wait_seen(2);
    let mut callers: Vec<Option<&str>> = seen.iter().map(|s| s.header("Authorization")).collect();
    callers.sort();
    assert_eq!(
        callers,
        [Some("Bearer alice"), Some("Bearer bob")],
        "{seen:?}"
    );
    // Another request under the key from a third caller: a job of its own, not a 422
    // that would tell it the key exists.
    let probe = location_of(&submit("Authorization: Bearer mallory", b"other"));
    assert!(![&alice, &bob].contains(&&probe));
    // Alice repeating hers finds it.
    assert_eq!(
        location_of(&submit("Authorization: Bearer alice", b"due")),
        alice
    );
}

#[test]
fn credentials_reach_the_backend_for_async_jobs_and_again_after_a_restart() {
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    let db = db_path("gw-restart");
    let mut first = start_gatewayd("gw-restart-1", port, &backend.url(), &["--jobs-db", &db]);
    let mut headers = vec!["Prefer: respond-async"];
    headers.extend(CREDENTIALS);
    let location = location_of(&ask(port, &raw("POST", "/bill?id=9", &headers, b"due")));
    let first_call = &backend.wait_seen(1)[0];
    assert_credentials(first_call);
    assert_client_forwarded(first_call);
    let log = first.stderr();
    for secret in ["caller-token-42", "session=abc"] {
        assert!(!log.contains(secret), "a credential was logged: {log}");
    }

    // The process dies while its call is held; a new one takes the stored job up again.
    first.kill9();
    backend.shared.release.store(true, Ordering::Relaxed);
    let _second = start_gatewayd("gw-restart-2", port, &backend.url(), &["--jobs-db", &db]);
    let status = wait_until_ended(port, &location);
    assert_eq!(status["state"], "succeeded", "{status}");
    let seen = backend.seen();
    assert!(seen.len() >= 2, "the job did not run again: {seen:?}");
    let again = seen.last().expect("a second call");
    assert_eq!(again.target, "/bill?id=9");
    assert_eq!(again.body, b"due");
    assert_credentials(again);
    // The client's address was stored with the job: the run after the restart has it.
    assert_client_forwarded(again);
    let result = get(port, &format!("{location}/result"), READ).expect("a result");
    assert_eq!(result.status, 201, "{result:?}");
    assert_eq!(result.body, "backend saw POST /bill?id=9");
}

#[test]
fn task_names_choose_the_pool_and_held_slow_tasks_do_not_delay_fast_ones() {
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    let _gateway = start_gatewayd(
        "gw-tasks",
        port,
        &backend.url(),
        &[
            "--pool",
            "slow=1",
            "--task",
            "report=slow",
            "--task",
            "lookup=gateway",
        ],
    );
    // Three costly tasks: the one-worker pool holds one at the backend, two wait.
    let mut reports: Vec<Client> = (0..3)
        .map(|i| {
            let mut client = Client::connect(port).expect("connect");
            let request = raw(
                "POST",
                &format!("/report/{i}"),
                &["X-Task-Name: report"],
                b"",
            );
            client.send_raw(&request).expect("send");
            client
        })
        .collect();
    backend.wait_seen(1);

    // Cheap tasks, and requests without a name, are answered meanwhile.
    for i in 0..5 {
        let target = format!("/quick/{i}");
        let response = ask(port, &raw("GET", &target, &["X-Task-Name: lookup"], b""));
        assert_eq!(response.status, 201, "{response:?}");
        assert_eq!(response.body, format!("backend saw GET {target}"));
    }
    let unnamed = ask(port, &raw("GET", "/quick/unnamed", &[], b""));
    assert_eq!(unnamed.status, 201, "{unnamed:?}");
    let unknown = ask(port, &raw("GET", "/quick/x", &["X-Task-Name: nope"], b""));
    assert_eq!(unknown.status, 400, "{unknown:?}");
    assert!(unknown.json()["error"].as_str().is_some(), "{unknown:?}");
    let reports_seen = backend
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/report"))
        .count();
    assert_eq!(reports_seen, 1, "the slow pool has one worker");

    backend.shared.release.store(true, Ordering::Relaxed);
    for client in &mut reports {
        let response = client.read_response(READ).expect("a report");
        assert_eq!(response.status, 201, "{response:?}");
        assert!(response.body.starts_with("backend saw POST /report/"));
    }
    assert_eq!(backend.shared.most_held.load(Ordering::Relaxed), 1);
    let unknown_seen = backend.seen().iter().any(|s| s.target == "/quick/x");
    assert!(!unknown_seen, "an unknown task reached the backend");
}

/// How many threads process `pid` has now.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's /proc entry")
        .count()
}

#[test]
fn sixty_four_calls_wait_at_the_backend_at_once_on_one_gateway_thread() {
    const CALLS: usize = 64;
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    let gateway = Daemon::start_listening(
        "gw-in-flight",
        GATEWAYD,
        &[tcp(port), backend.url(), CALLS.to_string()],
    );
    let idle_threads = threads_of(gateway.pid());
    // Two more requests than CONCURRENCY: they wait at the gateway thread, not at the
    // backend.
    let mut clients = held_clients(port, CALLS + 2);
    backend.wait_seen(CALLS);
    let all_held = poll_until(WAIT, || {
        (backend.shared.held.load(Ordering::Relaxed) == CALLS).then_some(())
    });
    assert!(
        all_held.is_some(),
        "the backend holds {CALLS} calls at once"
    );
    let busy_threads = threads_of(gateway.pid());
    // The calls in flight cost no thread each (the old design took two per call).
    assert!(
        busy_threads < idle_threads + 4,
        "{busy_threads} threads with {CALLS} calls in flight, {idle_threads} idle"
    );

    backend.shared.release.store(true, Ordering::Relaxed);
    for (target, client) in &mut clients {
        let response = client.read_response(READ).expect("an answer");
        assert_eq!(response.status, 201, "{target}: {response:?}");
        assert_eq!(response.body, format!("backend saw GET {target}"));
    }
    assert_eq!(backend.seen().len(), CALLS + 2);
    // CONCURRENCY bounds the calls in flight.
    assert_eq!(backend.shared.most_held.load(Ordering::Relaxed), CALLS);
}

#[test]
fn prime_workerd_runs_a_gateway_stage_of_a_multi_process_deployment() {
    let backend = Backend::start(Mode::Answer);
    let mut d = Deployment::start(Options {
        parse: args(&["--gateway", &backend.url(), "--gateway-timeout", "20"]),
        workers: false,
        ..Options::default()
    });
    // The first stage's prime_workerd is a gateway: prime_httpd -> prime_proxyd -> it.
    d.start_parse();
    let port = d.ports.http;
    let target = "/any/path?q=1";
    let answered = poll_until(START_TIMEOUT, || {
        let response = get(port, target, Duration::from_secs(5)).ok()?;
        (response.status == 201).then_some(response)
    })
    .expect("the deployment answers through the gateway stage");
    assert_eq!(answered.body, format!("backend saw GET {target}"));
    assert_eq!(answered.header("X-Backend"), Some("yes"));
    let seen = backend.wait_seen(1);
    assert!(seen.iter().all(|s| s.target == target), "{seen:?}");
}

/// The document of `GET /selftest` once it answers 200 (it panics if it never does).
fn passing_selftest(port: u16) -> serde_json::Value {
    poll_until(WAIT, || {
        let response = get(port, "/selftest", READ).ok()?;
        (response.status == 200).then_some(response.json())
    })
    .expect("the self-test passes")
}

/// The part of a self-test document about `stage`.
fn stage_part(document: &serde_json::Value, stage: &str) -> serde_json::Value {
    document["parts"]
        .as_array()
        .and_then(|parts| parts.iter().find(|p| p["stage"] == stage))
        .cloned()
        .unwrap_or_else(|| panic!("no part for stage {stage}: {document}"))
}

#[test]
fn the_selftest_passes_through_a_healthy_gateway_and_names_a_stopped_backend() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let db = db_path("gw-selftest");
    let _gateway = start_gatewayd(
        "gw-selftest",
        port,
        &backend.url(),
        &[
            "--jobs-db",
            &db,
            "--status-path",
            "/status",
            "--selftest-path",
            "/selftest",
        ],
    );
    let document = passing_selftest(port);
    assert_eq!(document["status"], "ok", "{document}");
    let parts = document["parts"].as_array().expect("parts");
    assert!(
        parts
            .iter()
            .any(|p| p["part"] == "store" && p["ok"] == true),
        "{document}"
    );
    assert_eq!(stage_part(&document, "gateway")["ok"], true, "{document}");
    let probes = backend.seen();
    assert!(
        probes
            .iter()
            .any(|s| s.method == "HEAD" && s.header("X-Prime-Selftest") == Some("1")),
        "the backend was not called by the self-test: {probes:?}"
    );

    let url = backend.url();
    drop(backend);
    let failed = get(port, "/status?selftest=1", READ).expect("a self-test");
    assert_eq!(failed.status, 503, "{failed:?}");
    let document = failed.json();
    assert_eq!(document["status"], "failed", "{document}");
    let gateway = stage_part(&document, "gateway");
    assert_eq!(gateway["ok"], false, "{document}");
    let error = gateway["error"].as_str().expect("an error");
    assert!(
        error.contains(&url) && error.contains("refused"),
        "the error does not name the backend and the refusal: {error}"
    );
    let parts = document["parts"].as_array().expect("parts");
    assert!(
        parts
            .iter()
            .any(|p| p["part"] == "store" && p["ok"] == true),
        "the store is still fine: {document}"
    );
    // Without ?selftest=1 the status path still shows the status document.
    let status = get(port, "/status", READ).expect("the status document");
    assert_eq!(status.status, 200);
    assert!(status.json()["first_proxy"].is_object(), "{status:?}");
}

#[test]
fn the_front_end_routes_tasks_itself_with_no_dispatch_stage_sync_and_async() {
    let main = Backend::start(Mode::Answer);
    let reports = Backend::start(Mode::Answer);
    let port = free_port();
    let db = db_path("gw-front-tasks");
    let pool = format!("slow=1@{}", reports.url());
    let _gateway = start_gatewayd(
        "gw-front-tasks",
        port,
        &main.url(),
        &[
            "--pool",
            &pool,
            "--task",
            "report=slow",
            "--task",
            "/reports/=slow",
            "--jobs-db",
            &db,
            "--status-path",
            "/status",
            "--selftest-path",
            "/selftest",
        ],
    );
    // The self-test probes every entry: both pools answer, and there is no dispatch stage.
    let document = passing_selftest(port);
    assert_eq!(stage_part(&document, "gateway")["ok"], true, "{document}");
    assert_eq!(stage_part(&document, "slow")["ok"], true, "{document}");
    let parts = document["parts"].as_array().expect("parts");
    assert!(
        !parts.iter().any(|p| p["stage"] == "dispatch"),
        "a dispatch stage ran: {document}"
    );
    let status = get(port, "/status", READ)
        .expect("the status document")
        .json();
    let routed = status["routed"].as_array().expect("routed entries");
    assert_eq!(routed.len(), 1, "{status}");
    assert_eq!(routed[0]["stage"], "slow", "{status}");

    // Pipelined on one connection: by name, unknown (the front end's 400), by prefix,
    // unnamed; answered in order.
    let mut client = Client::connect(port).expect("connect");
    let mut batch = raw("GET", "/by-name/1", &["X-Task-Name: report"], b"");
    batch.extend(raw("GET", "/unknown/2", &["X-Task-Name: nope"], b""));
    batch.extend(raw("GET", "/reports/3", &[], b""));
    batch.extend(raw("GET", "/plain/4", &[], b""));
    client.send_raw(&batch).expect("send");
    for (target, status) in [
        ("/by-name/1", 201),
        ("/unknown/2", 400),
        ("/reports/3", 201),
        ("/plain/4", 201),
    ] {
        let response = client.read_response(READ).expect("an answer");
        assert_eq!(response.status, status, "{target}: {response:?}");
        if status == 400 {
            let error = response.json()["error"].as_str().map(str::to_string);
            assert!(error.is_some_and(|e| e.contains("nope")), "{response:?}");
        } else {
            assert_eq!(response.body, format!("backend saw GET {target}"));
        }
    }
    let on = |backend: &Backend| -> Vec<String> {
        backend
            .seen()
            .into_iter()
            .map(|s| s.target)
            .filter(|t| !t.is_empty())
            .collect()
    };
    assert!(
        on(&reports).contains(&"/by-name/1".to_string()),
        "{:?}",
        on(&reports)
    );
    assert!(
        on(&reports).contains(&"/reports/3".to_string()),
        "{:?}",
        on(&reports)
    );
    assert!(
        on(&main).contains(&"/plain/4".to_string()),
        "{:?}",
        on(&main)
    );
    for target in ["/by-name/1", "/reports/3"] {
        assert!(!on(&main).contains(&target.to_string()), "{:?}", on(&main));
    }
    for backend in [&main, &reports] {
        let unknown = on(backend).contains(&"/unknown/2".to_string());
        assert!(!unknown, "an unknown task was sent on");
    }

    // An asynchronous job is routed by its stored head; an unknown name is refused
    // before anything is stored.
    let headers = ["Prefer: respond-async", "X-Task-Name: report"];
    let location = location_of(&ask(port, &raw("POST", "/job/5", &headers, b"work")));
    let ended = wait_until_ended(port, &location);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let result = get(port, &format!("{location}/result"), READ).expect("a result");
    assert_eq!(result.body, "backend saw POST /job/5");
    assert!(
        on(&reports).contains(&"/job/5".to_string()),
        "{:?}",
        on(&reports)
    );
    assert!(
        !on(&main).contains(&"/job/5".to_string()),
        "{:?}",
        on(&main)
    );
    let refused = ask(
        port,
        &raw(
            "POST",
            "/job/6",
            &["Prefer: respond-async", "X-Task-Name: nope"],
            b"",
        ),
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.header("Location").is_none(), "{refused:?}");
}

/// A topology of a `tasks` stage in front of two stages, `fast` and `slow`.
fn tasks_topology(ports: &[u16; 9], table: &str) -> String {
    let t = |i: usize| tcp(ports[i]);
    format!(
        r#"{{
  "front_end": {{ "listen": "{}", "loopback": "{}", "interrupt": "{}", "status_path": "/status" }},
  "stages": [
    {{ "name": "dispatch", "service": "tasks", "upstream": "{}", "downstream": "{}" }},
    {{ "name": "fast", "upstream": "{}", "downstream": "{}" }},
    {{ "name": "slow", "upstream": "{}", "downstream": "{}" }}
  ],
  "tasks": {table}
}}"#,
        t(0),
        t(1),
        t(2),
        t(3),
        t(4),
        t(5),
        t(6),
        t(7),
        t(8)
    )
}

/// The arguments of a daemon of the topology file at `path`: `--config path`, then
/// `--stage stage` if given, then `extra`.
fn topology_args(path: &str, stage: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut list = vec!["--config".to_string(), path.to_string()];
    if let Some(stage) = stage {
        list.extend(["--stage".to_string(), stage.to_string()]);
    }
    list.extend(extra.iter().map(|s| s.to_string()));
    list
}

/// The `fast` and `slow` stages of the topology file at `path` (a proxy and a gateway
/// worker each, to `fast` and `slow`), with daemon names starting with `name`.
fn fast_and_slow_stages(name: &str, path: &str, fast: &Backend, slow: &Backend) -> Vec<Daemon> {
    let mut daemons = Vec::new();
    for (stage, backend) in [("fast", fast), ("slow", slow)] {
        let url = backend.url();
        let proxy = topology_args(path, Some(stage), &[]);
        let worker = topology_args(path, Some(stage), &["--gateway", &url]);
        daemons.push(Daemon::start(
            &format!("{name}-proxy-{stage}"),
            PROXYD,
            &proxy,
        ));
        daemons.push(Daemon::start(
            &format!("{name}-worker-{stage}"),
            WORKERD,
            &worker,
        ));
    }
    daemons
}

/// [`tasks_topology`] without its `dispatch` stage: the front end applies the table.
fn front_routed_topology(ports: &[u16; 9], table: &str) -> String {
    tasks_topology(ports, table)
        .lines()
        .filter(|line| !line.contains(r#""dispatch""#))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Sends each case (target, task name, the stage it must reach), checks each is
/// answered 201 and reached the backend of its stage (and nothing else did), and that
/// an unknown task name is answered 400.
fn assert_routed(port: u16, cases: &[(&str, Option<&str>, &str)], fast: &Backend, slow: &Backend) {
    for (target, task, _) in cases {
        let header = task.map(|t| format!("X-Task-Name: {t}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        let response = ask(port, &raw("GET", target, &headers, b""));
        assert_eq!(response.status, 201, "{target}: {response:?}");
    }
    let unknown = ask(port, &raw("GET", "/x", &["X-Task-Name: nope"], b""));
    assert_eq!(unknown.status, 400, "{unknown:?}");
    let targets = |backend: &Backend| -> Vec<String> {
        let seen = backend.seen().into_iter().filter(|s| s.method == "GET");
        seen.map(|s| s.target).collect()
    };
    for (target, _, stage) in cases {
        let backend = if *stage == "slow" { slow } else { fast };
        assert!(
            targets(backend).contains(&target.to_string()),
            "{target} did not reach {stage}: fast {:?}, slow {:?}",
            targets(fast),
            targets(slow)
        );
    }
    assert_eq!(targets(fast).len() + targets(slow).len(), cases.len());
}

#[test]
fn a_topology_task_table_routes_by_name_and_path_prefix_and_refuses_unknown_stages() {
    let ports: [u16; 9] = std::array::from_fn(|_| free_port());
    let table = r#"{ "table": { "report": "slow", "/reports/": "slow", "lookup": "fast" }, "default": "fast" }"#;

    // A table naming a stage the file lacks: every daemon refuses the file, naming it.
    let bad = scratch_path("tasks-bad", "json");
    let wrong = table.replace(r#""report": "slow""#, r#""report": "archive""#);
    std::fs::write(&bad, tasks_topology(&ports, &wrong)).expect("write");
    let bad = bad.display().to_string();
    for (program, extra) in [(WORKERD, &["--stage", "dispatch"][..]), (HTTPD, &[][..])] {
        let mut list = vec!["--config".to_string(), bad.clone()];
        list.extend(extra.iter().map(|s| s.to_string()));
        let (status, stderr) = run_to_exit(program, &list, WAIT);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("\"archive\""), "{stderr}");
    }

    let fast = Backend::start(Mode::Answer);
    let slow = Backend::start(Mode::Answer);
    let file = scratch_path("tasks", "json");
    std::fs::write(&file, tasks_topology(&ports, table)).expect("write");
    let path = file.display().to_string();
    let with = |stage: Option<&str>, extra: &[&str]| topology_args(&path, stage, extra);
    let _stages = fast_and_slow_stages("tasks", &path, &fast, &slow);
    let _daemons = [
        Daemon::start("proxy-dispatch", PROXYD, &with(Some("dispatch"), &[])),
        Daemon::start("httpd-tasks", HTTPD, &with(None, &[])),
        Daemon::start("worker-dispatch", WORKERD, &with(Some("dispatch"), &[])),
    ];
    let port = ports[0];
    // Every stage answers the self-test once all daemons are up.
    poll_until(START_TIMEOUT, || {
        let response = get(port, "/status?selftest=1", READ).ok()?;
        (response.status == 200).then_some(())
    })
    .expect("the deployment comes up");

    let cases = [
        ("/by-name/1", Some("report"), "slow"),
        ("/reports/2", None, "slow"),
        ("/reports/3", Some("lookup"), "fast"),
        ("/other/4", None, "fast"),
        ("/reports", None, "fast"),
    ];
    assert_routed(port, &cases, &fast, &slow);
}

#[test]
fn a_topology_without_a_tasks_stage_has_its_front_end_route_by_task() {
    let ports: [u16; 9] = std::array::from_fn(|_| free_port());
    let table = r#"{ "table": { "report": "slow", "/reports/": "slow", "lookup": "fast" } }"#;
    // The same file without its `tasks` stage: `fast` comes first.
    let text = front_routed_topology(&ports, table);
    let fast = Backend::start(Mode::Answer);
    let slow = Backend::start(Mode::Answer);
    let file = scratch_path("front-tasks", "json");
    std::fs::write(&file, text).expect("write");
    let path = file.display().to_string();
    let with = |stage: Option<&str>, extra: &[&str]| topology_args(&path, stage, extra);
    let _stages = fast_and_slow_stages("front-tasks", &path, &fast, &slow);
    let _httpd = Daemon::start("httpd-front-tasks", HTTPD, &with(None, &[]));
    let port = ports[0];
    let document = poll_until(START_TIMEOUT, || {
        let response = get(port, "/status?selftest=1", READ).ok()?;
        (response.status == 200).then_some(response.json())
    })
    .expect("the deployment comes up");
    assert_eq!(stage_part(&document, "slow")["ok"], true, "{document}");
    let status = get(port, "/status", READ).expect("the status").json();
    assert_eq!(status["routed"][0]["stage"], "slow", "{status}");

    // No default: a request that matches nothing goes to the first stage.
    let cases = [
        ("/by-name/1", Some("report"), "slow"),
        ("/reports/2", None, "slow"),
        ("/reports/3", Some("lookup"), "fast"),
        ("/other/4", None, "fast"),
    ];
    assert_routed(port, &cases, &fast, &slow);
}

/// A Rust stage that lets through only orders with a whole-number `qty`.
fn validate(job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
    let request = job.request()?;
    let qty = request.query_values("qty").next().unwrap_or("");
    if qty.parse::<u32>().is_err() {
        return Err(StageError::bad_request(format!(
            "qty must be a whole number, not {qty:?}"
        )));
    }
    Ok(Next::forward(Vec::new()))
}

#[test]
fn a_rust_stage_validates_in_front_of_a_gateway_stage() {
    let backend = Backend::start(Mode::Answer);
    let gateway = HttpGateway::new(&backend.url()).expect("a gateway");
    let pipeline = Pipeline::new()
        .http_stage("validate", 2, validate)
        .http_stage("gateway", 2, gateway);
    let server = http_common::TestServer::start(pipeline, http_common::http_config());
    let port = server.addr().port();
    let cases = [
        ("/orders?qty=3", 201),
        ("/orders?qty=lots", 400),
        ("/orders", 400),
        ("/orders?qty=-1", 400),
        ("/orders?qty=7", 201),
    ];
    for (target, status) in cases {
        let response = ask(port, &raw("POST", target, &[], b"{}"));
        assert_eq!(response.status, status, "{target}: {response:?}");
        if status == 400 {
            let error = response.json()["error"].as_str().unwrap_or("").to_string();
            assert!(error.contains("qty must be a whole number"), "{error}");
        } else {
            assert_eq!(response.body, format!("backend saw POST {target}"));
        }
    }
    let seen: Vec<String> = backend.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, ["/orders?qty=3", "/orders?qty=7"]);
}

#[test]
fn the_requests_a_killed_routed_proxy_held_are_answered_503_and_the_running_one_completes() {
    let ports: [u16; 9] = std::array::from_fn(|_| free_port());
    let table = r#"{ "table": { "report": "slow" } }"#;
    // The front end routes `report` straight to the `slow` stage's proxy.
    let text = front_routed_topology(&ports, table);
    let fast = Backend::start(Mode::Answer);
    let slow = Backend::start(Mode::Hold);
    let file = scratch_path("routed-proxy-loss", "json");
    std::fs::write(&file, text).expect("write");
    let path = file.display().to_string();
    let with = |stage: Option<&str>, extra: &[&str]| topology_args(&path, stage, extra);
    let (fast_url, slow_url) = (fast.url(), slow.url());
    let mut proxy_slow = Daemon::start("proxy-slow-lost", PROXYD, &with(Some("slow"), &[]));
    let _daemons = [
        Daemon::start("proxy-fast-lost", PROXYD, &with(Some("fast"), &[])),
        Daemon::start(
            "httpd-routed-lost",
            HTTPD,
            &with(None, &["--request-timeout", "120"]),
        ),
        Daemon::start(
            "worker-fast-lost",
            WORKERD,
            &with(Some("fast"), &["--gateway", &fast_url]),
        ),
        Daemon::start(
            "worker-slow-lost",
            WORKERD,
            &with(
                Some("slow"),
                &[
                    "--gateway",
                    &slow_url,
                    "--gateway-timeout",
                    "120",
                    "--concurrency",
                    "1",
                    "--prefetch",
                    "1",
                ],
            ),
        ),
    ];
    let port = ports[0];
    // Up once both stages' workers answer the self-test (the held backend fails the
    // slow stage's check, which is all right here).
    poll_until(START_TIMEOUT, || {
        let document = get(port, "/status?selftest=1", READ).ok()?.json();
        let up = |stage: &str| {
            let part = stage_part(&document, stage);
            part["workers"].as_array().is_some_and(|w| !w.is_empty())
        };
        (up("fast") && up("slow")).then_some(())
    })
    .expect("the deployment comes up");
    let reports_seen = || -> Vec<String> {
        let seen = slow.seen().into_iter().filter(|s| s.method == "GET");
        seen.map(|s| s.target).collect()
    };

    // The slow stage's one worker holds the first report at the backend; two more wait
    // in the slow stage's proxy.
    let mut reports: Vec<Client> = (0..3)
        .map(|i| {
            let mut client = Client::connect(port).expect("connect");
            let request = raw(
                "GET",
                &format!("/report/{i}"),
                &["X-Task-Name: report"],
                b"",
            );
            client.send_raw(&request).expect("send");
            if i == 0 {
                poll_until(START_TIMEOUT, || (!reports_seen().is_empty()).then_some(()))
                    .expect("the first report reaches the backend");
            }
            client
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let killed_at = Instant::now();
    proxy_slow.kill9();
    for client in &mut reports[1..] {
        let response = client.read_response(READ).expect("an answer");
        let after = killed_at.elapsed();
        println!("a request held by the killed routed proxy was answered {after:?} after the kill");
        assert_eq!(response.status, 503, "{response:?}");
        assert!(response.body.contains("proxy was lost"), "{response:?}");
        assert!(
            after < Duration::from_secs(15),
            "answered {after:?} after the kill"
        );
    }
    // The running one completes once the backend answers.
    slow.shared.release.store(true, Ordering::Relaxed);
    let response = reports[0].read_response(READ).expect("the running report");
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.body, "backend saw GET /report/0");
    assert_eq!(
        reports_seen(),
        ["/report/0"],
        "a lost request reached the backend"
    );
    for client in &mut reports {
        assert_eq!(
            client.unread_bytes(Duration::from_millis(500)),
            0,
            "a second answer on one connection"
        );
    }
}

#[test]
fn dot_segments_cannot_leave_the_base_path() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let base = format!("{}/api", backend.url());
    let _gateway = start_gatewayd("gw-dots", port, &base, &[]);
    for (target, reaches) in [
        ("/../admin", "/api/admin"),
        ("/a/../../../etc/passwd?x=/../y", "/api/etc/passwd?x=/../y"),
        ("/%2e%2e/%2E%2e/admin", "/api/admin"),
        ("/orders/./7/", "/api/orders/7/"),
        ("http://shop.test/../admin", "/api/admin"),
    ] {
        let response = ask(port, &raw("GET", target, &[], b""));
        assert_eq!(response.status, 201, "{target}: {response:?}");
        assert_eq!(
            response.body,
            format!("backend saw GET {reaches}"),
            "{target}"
        );
    }
    let seen = backend.wait_seen(5);
    assert!(
        seen.iter().all(|s| s.target.starts_with("/api/")),
        "a path left the base: {seen:?}"
    );
    // A dot segment behind an encoded slash or a backslash is refused, never forwarded.
    for target in ["/..%2fadmin", "/a/..%5C..%5Cadmin"] {
        let response = ask(port, &raw("GET", target, &[], b""));
        assert_eq!(response.status, 400, "{target}: {response:?}");
        assert!(
            response.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("dot segment")),
            "{response:?}"
        );
    }
    assert_eq!(
        backend.seen().len(),
        5,
        "a refused target reached the backend"
    );
}

#[test]
fn an_unasked_101_is_502_and_the_gateway_goes_on() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let _gateway = start_gatewayd("gw-101", port, &backend.url(), &[]);
    let response = ask(
        port,
        &raw(
            "GET",
            "/switch",
            &["Upgrade: h2c", "Connection: Upgrade"],
            b"",
        ),
    );
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("101")),
        "{response:?}"
    );
    assert_eq!(response.header("Upgrade"), None);
    // The backend was never asked to upgrade.
    assert_eq!(backend.wait_seen(1)[0].header("Upgrade"), None);
    let after = ask(port, &raw("GET", "/after", &[], b""));
    assert_eq!(after.status, 201, "{after:?}");
}

#[test]
fn an_answer_with_many_fields_is_the_same_synchronously_and_as_a_job() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let db = db_path("gw-many");
    let _gateway = start_gatewayd("gw-many", port, &backend.url(), &["--jobs-db", &db]);
    let assert_all = |response: &Response| {
        assert_eq!(response.status, 200, "{response:?}");
        for i in 0..MANY_FIELDS {
            let value = format!("value {i}");
            assert_eq!(
                response.header(&format!("X-Many-{i}")),
                Some(&value[..]),
                "field {i} of {response:?}"
            );
        }
    };
    assert_all(&ask(port, &raw("GET", "/many-fields", &[], b"")));
    let location = location_of(&ask(
        port,
        &raw(
            "POST",
            "/many-fields?job=1",
            &["Prefer: respond-async"],
            b"",
        ),
    ));
    let status = wait_until_ended(port, &location);
    assert_eq!(status["state"], "succeeded", "{status}");
    let result = get(port, &format!("{location}/result"), READ).expect("a result");
    assert_all(&result);
}

#[test]
fn x_real_ip_is_replaced_and_x_forwarded_host_appended() {
    let backend = Backend::start(Mode::Answer);
    let port = free_port();
    let _gateway = start_gatewayd("gw-real-ip", port, &backend.url(), &[]);
    let spoofed = [
        "X-Real-IP: 198.51.100.66",
        "X-Forwarded-Host: origin.example",
    ];
    assert_eq!(ask(port, &raw("GET", "/who", &spoofed, b"")).status, 201);
    assert_eq!(ask(port, &raw("GET", "/plain", &[], b"")).status, 201);
    let seen = backend.wait_seen(2);
    assert_eq!(seen[0].header("X-Real-IP"), Some("127.0.0.1"), "{seen:?}");
    assert_eq!(
        seen[0].header("X-Forwarded-Host"),
        Some("origin.example, shop.test"),
        "{seen:?}"
    );
    assert_eq!(
        seen[0]
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-real-ip"))
            .count(),
        1,
        "{seen:?}"
    );
    assert_eq!(seen[1].header("X-Real-IP"), Some("127.0.0.1"));
    assert_eq!(seen[1].header("X-Forwarded-Host"), Some("shop.test"));
}

#[test]
fn a_504_names_the_limit_that_fired() {
    let backend = Backend::start(Mode::Hold);
    // The gateway's own timeout.
    let port = free_port();
    let _short = start_gatewayd(
        "gw-504-gateway",
        port,
        &backend.url(),
        &["--gateway-timeout", "1"],
    );
    let response = ask(port, &raw("GET", "/held-1", &[], b""));
    assert_eq!(response.status, 504, "{response:?}");
    let error = response.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("the gateway timeout (1 s) passed"),
        "{error}"
    );
    // A lower request timeout, given explicitly, is honoured, and says so.
    let port = free_port();
    let _cut = start_gatewayd(
        "gw-504-request",
        port,
        &backend.url(),
        &["--gateway-timeout", "60", "--request-timeout", "1"],
    );
    let response = ask(port, &raw("GET", "/held-2", &[], b""));
    assert_eq!(response.status, 504, "{response:?}");
    let error = response.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("the request timeout (1 s) passed"),
        "{error}"
    );
}

#[test]
fn a_gateway_timeout_above_the_default_request_timeout_is_not_cut_at_30_s() {
    // --gateway-timeout 31 with the default --request-timeout (30 s): the call runs its
    // 31 s and the gateway's own 504 names the gateway timeout.
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    let _gateway = start_gatewayd(
        "gw-long",
        port,
        &backend.url(),
        &["--gateway-timeout", "31"],
    );
    let response = ask(port, &raw("GET", "/held-long", &[], b""));
    assert_eq!(response.status, 504, "{response:?}");
    let error = response.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("the gateway timeout (31 s) passed"),
        "{error}"
    );
}

/// The gateway thread takes jobs ahead of its calls: with CONCURRENCY 1 and a call
/// held at the backend, the requests behind it wait at the thread (the proxy has
/// handed them on, none waits there), the backend still holds one call at a time, and
/// each is answered, its own, once the backend lets go.
#[test]
fn jobs_beyond_the_calls_in_flight_wait_at_the_gateway_thread_and_the_cap_holds() {
    const CLIENTS: usize = 3;
    let backend = Backend::start(Mode::Hold);
    let port = free_port();
    let _gateway = Daemon::start_listening(
        "gw-ahead",
        GATEWAYD,
        &[
            tcp(port),
            backend.url(),
            "1".to_string(),
            "--status-path".to_string(),
            "/status".to_string(),
        ],
    );
    let mut clients = held_clients(port, CLIENTS);
    backend.wait_seen(1);
    let handed_on = poll_until(WAIT, || {
        let status = get(port, "/status", READ).ok()?.json();
        let proxy = &status["first_proxy"]["status"];
        let dispatched = proxy["dispatched"].as_u64()?;
        (dispatched >= CLIENTS as u64 && proxy["waiting"] == 0).then_some(())
    });
    assert!(
        handed_on.is_some(),
        "the proxy kept jobs back: {}",
        get(port, "/status", READ).expect("status").body
    );
    assert_eq!(
        backend.seen().len(),
        1,
        "one call at a time: {:?}",
        backend.seen()
    );

    backend.shared.release.store(true, Ordering::Relaxed);
    for (target, client) in &mut clients {
        let response = client.read_response(READ).expect("an answer");
        assert_eq!(response.status, 201, "{target}: {response:?}");
        assert_eq!(response.body, format!("backend saw GET {target}"));
    }
    assert_eq!(backend.seen().len(), CLIENTS);
    assert_eq!(backend.shared.most_held.load(Ordering::Relaxed), 1);
}
