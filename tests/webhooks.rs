//! Webhooks over real sockets: a receiver in this test (a std `TcpListener` thread on
//! 127.0.0.1) answers each delivery as its script says, and the job's status document
//! shows what each attempt came back with. Also: the signature checked by Python's
//! `hmac`, callback URLs to non-public addresses refused at submit without a
//! connection, a pending delivery carried over a restart, and two front ends sharing
//! one PostgreSQL store delivering each attempt once. Every test runs in a
//! network namespace of its own with only loopback (see `netns`), so an address the
//! server is wrongly allowed to reach goes nowhere.

#[path = "http_common/mod.rs"]
mod common;
#[path = "daemons/mod.rs"]
mod daemons;
#[path = "netns/mod.rs"]
mod netns;
#[path = "postgres/mod.rs"]
mod pg;

use common::{http_config, wait_for, Client, HttpResponse, TestServer, WAIT};
use prime_server::jobs::ssrf::Cidr;
use prime_server::jobs::webhooks::WebhookConfig;
use prime_server::jobs::JobsConfig;
use prime_server::server::ServerConfig;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The signing secret, in the Standard Webhooks form: the key is the bytes
/// "a webhook test key".
const SECRET: &str = "whsec_YSB3ZWJob29rIHRlc3Qga2V5";

/// How the receiver answers one delivery.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// This status, with an empty body.
    Status(u16),
    /// This status with `Retry-After: S`.
    RetryAfter(u16, u64),
    /// Reads the request and never answers.
    Silent,
}

/// A question the receiver asks when a delivery has arrived, before it answers.
type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// A request the receiver took.
#[derive(Clone, Debug)]
struct Received {
    /// The request line.
    line: String,
    /// Header fields, names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The receiver's probe's answer at the moment the request had arrived.
    probed: Option<bool>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver on a free port of a loopback address, answering deliveries from a
/// script (the last entry repeats). Dropping it stops its thread.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(bind: &str, script: Vec<Reply>) -> std::io::Result<Receiver> {
        Receiver::probing(bind, script, None)
    }

    /// A receiver that asks `probe` as each delivery arrives.
    fn probing(bind: &str, script: Vec<Reply>, probe: Option<Probe>) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, connections, stop) =
                (received.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                // Connections left unanswered, held until the receiver stops.
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    let n = connections.fetch_add(1, Ordering::Relaxed);
                    let reply = script[n.min(script.len() - 1)];
                    if let Some(request) = serve(&stream, reply, probe.as_ref()) {
                        received.lock().unwrap().push(request);
                    }
                    held.push(stream);
                }
            })
        };
        Ok(Receiver {
            addr,
            received,
            connections,
            stop,
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("http://{a}/hook"),
            SocketAddr::V6(a) => format!("http://[{}]:{}/hook", a.ip(), a.port()),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `stream` and answers it as `reply` says.
fn serve(mut stream: &TcpStream, reply: Reply, probe: Option<&Probe>) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(WAIT)).ok()?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = common::find(&bytes, b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())?;
    while bytes.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    let body = bytes[head_end..head_end + length].to_vec();
    let probed = probe.map(|probe| probe());
    let answer = match reply {
        Reply::Status(status) => {
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::RetryAfter(status, seconds) => format!(
            "HTTP/1.1 {status} X\r\nRetry-After: {seconds}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::Silent => String::new(),
    };
    if !answer.is_empty() {
        stream.write_all(answer.as_bytes()).ok()?;
    }
    Some(Received {
        line,
        headers,
        body,
        probed,
    })
}

/// A fresh directory for one test's database.
fn scratch_dir(name: &str) -> PathBuf {
    common::scratch_dir("webhooks", name)
}

/// Webhooks with a fast schedule; callbacks may reach 127.0.0.0/8 when `loopback`.
fn webhook_config(loopback: bool) -> WebhookConfig {
    let key = prime_server::jobs::webhooks::parse_secret(SECRET).expect("a secret");
    let mut config = WebhookConfig::new(key);
    config.retry_first = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(400);
    config.timeout = Duration::from_secs(5);
    if loopback {
        config
            .policy
            .allow
            .push("127.0.0.0/8".parse::<Cidr>().unwrap());
    }
    config
}

/// The front end's configuration with jobs in `db` and these webhooks.
fn server_config(db: &Path, webhooks: Option<WebhookConfig>) -> ServerConfig {
    let mut config = http_config();
    let mut jobs = JobsConfig::new(db);
    jobs.webhooks = webhooks;
    config.jobs = Some(jobs);
    config
}

/// Submits `GET /hello` asynchronously with this `Callback-URL`.
fn submit(client: &mut Client, callback: &str) -> HttpResponse {
    client.send(format!(
        "GET /hello?n=1 HTTP/1.1\r\nHost: test\r\nPrefer: respond-async\r\nCallback-URL: {callback}\r\n\r\n"
    ));
    client.read_response()
}

/// The job's status document.
fn status(client: &mut Client, location: &str) -> serde_json::Value {
    client.send(common::get(location));
    let response = client.read_response();
    assert!(
        matches!(response.status, 200 | 303),
        "{response:?} {}",
        response.body_str()
    );
    response.json()
}

/// Polls the job's status until its webhook is in `state`; returns the document.
fn wait_for_webhook(client: &mut Client, location: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let document = status(client, location);
        if document["webhook"]["state"] == state {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never became {state}: {document}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn accepted_location(response: &HttpResponse) -> String {
    assert_eq!(response.status, 202, "{response:?} {}", response.body_str());
    response.header("Location").expect("a Location").to_string()
}

fn statuses(document: &serde_json::Value) -> Vec<Option<u64>> {
    document["webhook"]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].as_u64())
        .collect()
}

/// A receiver answering `script`, an echo server delivering to it with `webhooks`, a
/// client, and the location of a job submitted with the receiver as its callback (the
/// server is last: keep it alive for the test).
fn deliver(
    name: &str,
    script: Vec<Reply>,
    webhooks: WebhookConfig,
) -> (Receiver, Client, String, TestServer) {
    let receiver = Receiver::start("127.0.0.1:0", script).expect("a receiver");
    let dir = scratch_dir(name);
    let server = TestServer::echo(server_config(&dir.join("jobs.sqlite"), Some(webhooks)));
    let mut client = server.connect();
    let location = accepted_location(&submit(&mut client, &receiver.url()));
    (receiver, client, location, server)
}

#[test]
fn a_receiver_that_fails_twice_takes_the_third_attempt() {
    if !netns::isolated("a_receiver_that_fails_twice_takes_the_third_attempt") {
        return;
    }
    let (receiver, mut client, location, _server) = deliver(
        "fails-twice",
        vec![Reply::Status(500), Reply::Status(503), Reply::Status(204)],
        webhook_config(true),
    );
    let document = wait_for_webhook(&mut client, &location, "delivered");
    assert_eq!(document["state"], "succeeded");
    assert_eq!(document["webhook"]["url"], receiver.url());
    assert_eq!(statuses(&document), vec![Some(500), Some(503), Some(204)]);
    for attempt in document["webhook"]["attempts"].as_array().unwrap() {
        assert!(attempt["latency_ms"].is_u64(), "{attempt}");
        assert!(attempt["at"].is_string(), "{attempt}");
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let id = document["id"].as_str().unwrap();
    for request in &received {
        assert_eq!(request.line, "POST /hook HTTP/1.1");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("webhook-id"), Some(id));
        assert!(request.header("webhook-timestamp").is_some());
        assert!(request
            .header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,")));
        let message: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(message["id"], id);
        assert_eq!(message["state"], "succeeded");
        assert_eq!(message["status"], 200);
        let body: serde_json::Value =
            serde_json::from_str(message["body"].as_str().expect("a UTF-8 body")).unwrap();
        assert_eq!(body["path"], "/hello");
    }
}

#[test]
fn a_receiver_answering_410_gets_no_more_attempts() {
    if !netns::isolated("a_receiver_answering_410_gets_no_more_attempts") {
        return;
    }
    let (receiver, mut client, location, _server) = deliver(
        "gone",
        vec![Reply::Status(410), Reply::Status(200)],
        webhook_config(true),
    );
    let document = wait_for_webhook(&mut client, &location, "gone");
    assert_eq!(statuses(&document), vec![Some(410)]);
    // Ten times the first retry's wait: a retry would have come by now.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.connections(), 1);
    assert_eq!(status(&mut client, &location)["webhook"]["state"], "gone");
}

#[test]
fn a_receiver_that_never_answers_is_tried_again_then_given_up() {
    if !netns::isolated("a_receiver_that_never_answers_is_tried_again_then_given_up") {
        return;
    }
    let mut webhooks = webhook_config(true);
    webhooks.timeout = Duration::from_millis(300);
    webhooks.give_up = Duration::from_millis(1500);
    let (receiver, mut client, location, _server) =
        deliver("silent", vec![Reply::Silent], webhooks);
    let document = wait_for_webhook(&mut client, &location, "given_up");
    let attempts = document["webhook"]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{document}");
    for attempt in attempts {
        assert!(attempt["status"].is_null(), "{attempt}");
        let error = attempt["error"].as_str().expect("an error");
        assert!(error.contains("timeout"), "{error}");
    }
    assert_eq!(receiver.received().len(), attempts.len());
}

#[test]
fn the_signature_verifies_with_pythons_hmac() {
    if !netns::isolated("the_signature_verifies_with_pythons_hmac") {
        return;
    }
    let (receiver, mut client, location, _server) =
        deliver("signature", vec![Reply::Status(200)], webhook_config(true));
    wait_for_webhook(&mut client, &location, "delivered");
    let request = receiver.received().pop().expect("a delivery");
    // The receiver's check, as the README gives it.
    let check = r#"
import base64, hashlib, hmac, sys
secret, msg_id, timestamp, signature = sys.argv[1:5]
body = sys.stdin.buffer.read()
key = base64.b64decode(secret.removeprefix("whsec_"))
signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
ok = any(hmac.compare_digest("v1," + expected, s) for s in signature.split())
print("valid" if ok else "invalid")
"#;
    let verify = |body: &[u8]| {
        let mut python = std::process::Command::new("python3")
            .arg("-c")
            .arg(check)
            .arg(SECRET)
            .arg(request.header("webhook-id").unwrap())
            .arg(request.header("webhook-timestamp").unwrap())
            .arg(request.header("webhook-signature").unwrap())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        python.stdin.take().unwrap().write_all(body).unwrap();
        let output = python.wait_with_output().unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(verify(&request.body), "valid");
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert_eq!(verify(&tampered), "invalid");
}

#[test]
fn callbacks_to_non_public_addresses_are_refused_at_submit_without_a_connection() {
    if !netns::isolated(
        "callbacks_to_non_public_addresses_are_refused_at_submit_without_a_connection",
    ) {
        return;
    }
    // Real listeners on the loopback addresses named, to see that nothing connects.
    let v4 = Receiver::start("127.0.0.1:0", vec![Reply::Status(200)]).expect("a receiver");
    let v6 = Receiver::start("[::1]:0", vec![Reply::Status(200)]).ok();
    let dir = scratch_dir("ssrf");
    let server = TestServer::echo(server_config(
        &dir.join("jobs.sqlite"),
        Some(webhook_config(false)),
    ));
    let mut client = server.connect();
    let port = v4.addr.port();
    let v6_url = match &v6 {
        Some(receiver) => receiver.url(),
        None => "http://[::1]:9/hook".to_string(),
    };
    let refused = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        v6_url,
        "http://10.0.0.1/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://[::ffff:10.0.0.1]/".to_string(),
        "ftp://example.com/".to_string(),
        "not a url".to_string(),
    ];
    for url in &refused {
        let response = submit(&mut client, url);
        assert_eq!(response.status, 400, "{url}: {}", response.body_str());
        assert!(response.body_str().contains("Callback-URL"), "{url}");
        assert!(response.header("Location").is_none(), "{url}");
    }
    assert_eq!(v4.connections(), 0);
    if let Some(v6) = &v6 {
        assert_eq!(v6.connections(), 0);
    }
    // No job was stored for any refused submit.
    assert_eq!(server_jobs_count(&dir.join("jobs.sqlite")), 0);
}

/// How many jobs the database holds, read with SQLite directly.
fn server_jobs_count(db: &Path) -> i64 {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM jobs').fetchone()[0])")
        .arg(db)
        .output()
        .expect("python3");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn a_callback_without_webhooks_configured_is_refused() {
    if !netns::isolated("a_callback_without_webhooks_configured_is_refused") {
        return;
    }
    let dir = scratch_dir("unconfigured");
    let server = TestServer::echo(server_config(&dir.join("jobs.sqlite"), None));
    let mut client = server.connect();
    let response = submit(&mut client, "http://127.0.0.1:9/hook");
    assert_eq!(response.status, 400, "{}", response.body_str());
    assert!(response.body_str().contains("--webhook-secret"));
}

#[test]
fn a_pending_delivery_is_made_after_a_restart() {
    if !netns::isolated("a_pending_delivery_is_made_after_a_restart") {
        return;
    }
    // The first attempt is told to come back in 2 s; the server stops before then.
    let receiver = Receiver::start(
        "127.0.0.1:0",
        vec![Reply::RetryAfter(503, 2), Reply::Status(200)],
    )
    .expect("a receiver");
    let dir = scratch_dir("restart");
    let db = dir.join("jobs.sqlite");
    let location = {
        let server = TestServer::echo(server_config(&db, Some(webhook_config(true))));
        let mut client = server.connect();
        let location = accepted_location(&submit(&mut client, &receiver.url()));
        let deadline = Instant::now() + WAIT;
        loop {
            let document = status(&mut client, &location);
            if statuses(&document) == vec![Some(503)] {
                assert_eq!(document["webhook"]["state"], "pending");
                assert!(document["webhook"]["next_attempt"].is_string());
                break;
            }
            assert!(Instant::now() < deadline, "{document}");
            std::thread::sleep(Duration::from_millis(20));
        }
        location
    };
    assert!(wait_for(|| receiver.connections() == 1));
    let server = TestServer::echo(server_config(&db, Some(webhook_config(true))));
    let mut client = server.connect();
    let document = wait_for_webhook(&mut client, &location, "delivered");
    assert_eq!(statuses(&document), vec![Some(503), Some(200)]);
    let at = |i: usize| {
        humantime::parse_rfc3339(document["webhook"]["attempts"][i]["at"].as_str().unwrap())
            .unwrap()
    };
    // Retry-After: 2 was honoured across the restart.
    assert!(at(1).duration_since(at(0)).unwrap() >= Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 2);
}

/// Whether any file of the SQLite store at `db` holds `needle`.
fn on_disk(db: &Path, needle: &str) -> bool {
    daemons::store_file_holding(db, needle).is_some()
}

#[test]
fn a_webhook_leaves_after_its_jobs_credentials_left_the_disk() {
    if !netns::isolated("a_webhook_leaves_after_its_jobs_credentials_left_the_disk") {
        return;
    }
    // A webhook tells of a job's end as a status read does, so it must leave only after
    // the commit that stored the end and the scrub that took the request (with its
    // credentials) off every file of the store. The receiver looks at the files the
    // moment each delivery arrives, before it answers.
    let dir = scratch_dir("scrubbed-first");
    let db = dir.join("jobs.sqlite");
    let current = Arc::new(Mutex::new(String::new()));
    let probe: Probe = {
        let (db, current) = (db.clone(), current.clone());
        Arc::new(move || on_disk(&db, &current.lock().unwrap()))
    };
    let receiver = Receiver::probing("127.0.0.1:0", vec![Reply::Status(204)], Some(probe))
        .expect("a receiver");
    // Not the echo stage: its answer repeats the request's fields, credentials included.
    let server = TestServer::primes(server_config(&db, Some(webhook_config(true))));
    let mut client = server.connect();
    const JOBS: usize = 8;
    for n in 0..JOBS {
        let token = format!("tok{:x}n{n}secret", std::process::id());
        *current.lock().unwrap() = token.clone();
        client.send(format!(
            "GET /is_prime?possible_prime={} HTTP/1.1\r\nHost: test\r\n\
             Prefer: respond-async\r\nAuthorization: Bearer {token}\r\n\
             Callback-URL: {}\r\n\r\n",
            2 * n + 3,
            receiver.url()
        ));
        let location = accepted_location(&client.read_response());
        let document = wait_for_webhook(&mut client, &location, "delivered");
        assert_eq!(document["state"], "succeeded", "{document}");
        let received = receiver.received();
        assert_eq!(received.len(), n + 1, "one delivery per job");
        assert_eq!(
            received[n].probed,
            Some(false),
            "job {n}: the webhook arrived while its request's credentials were still on disk"
        );
        assert!(
            !on_disk(&db, &token),
            "job {n}: the credentials stayed on disk"
        );
    }
}

#[test]
fn a_cancelled_job_is_delivered_as_cancelled() {
    if !netns::isolated("a_cancelled_job_is_delivered_as_cancelled") {
        return;
    }
    let receiver = Receiver::start("127.0.0.1:0", vec![Reply::Status(200)]).expect("a receiver");
    // A stage that works until it is interrupted.
    let pipeline = prime_server::Pipeline::new().http_stage(
        "work",
        1,
        |job: &mut prime_server::stages::HttpJob| {
            let give_up = Instant::now() + WAIT;
            while !job.interrupted() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(prime_server::stages::Next::Abandon)
        },
    );
    let dir = scratch_dir("cancelled");
    let server = TestServer::start(
        pipeline,
        server_config(&dir.join("jobs.sqlite"), Some(webhook_config(true))),
    );
    let mut client = server.connect();
    let location = accepted_location(&submit(&mut client, &receiver.url()));
    let cancelled = common::request(&mut client, "DELETE", &location, &[]);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body_str());
    let document = wait_for_webhook(&mut client, &location, "delivered");
    assert_eq!(document["state"], "cancelled");
    let request = receiver.received().pop().expect("a delivery");
    let message: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(message["state"], "cancelled");
    assert!(
        message["status"].is_null() && message["body"].is_null(),
        "{message}"
    );
}

#[test]
fn addresses_that_embed_or_are_special_purpose_ones_are_refused_at_submit() {
    if !netns::isolated("addresses_that_embed_or_are_special_purpose_ones_are_refused_at_submit") {
        return;
    }
    let v4 = Receiver::start("127.0.0.1:0", vec![Reply::Status(200)]).expect("a receiver");
    let port = v4.addr.port();
    let dir = scratch_dir("ssrf-embedded");
    let server = TestServer::echo(server_config(
        &dir.join("jobs.sqlite"),
        Some(webhook_config(false)),
    ));
    let mut client = server.connect();
    let refused = [
        // 127.0.0.1 inside IPv6 transition forms.
        format!("http://[2002:7f00:1::1]:{port}/hook"), // 6to4, RFC 3056
        format!("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/hook"), // Teredo, RFC 4380
        format!("http://[64:ff9b::7f00:1]:{port}/hook"), // NAT64, RFC 6052
        format!("http://[64:ff9b:1::7f00:1]:{port}/hook"), // local-use NAT64, RFC 8215
        format!("http://[::127.0.0.1]:{port}/hook"),    // IPv4-compatible, RFC 4291
        format!("http://[::ffff:127.0.0.1]:{port}/hook"), // IPv4-mapped, RFC 4291
        format!("http://[2606:4700::200:5efe:7f00:1]:{port}/hook"), // ISATAP, RFC 5214
        // The metadata service the same ways.
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/".to_string(),
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/".to_string(),
        // Special-purpose ranges the old table missed.
        "http://192.0.0.170/".to_string(), // RFC 8880
        "http://[2001:2::1]/".to_string(), // RFC 5180
        "http://[3fff::1]/".to_string(),   // RFC 9637
        "http://[5f00::1]/".to_string(),   // RFC 9602
        "http://[fec0::1]/".to_string(),   // RFC 3879
    ];
    for url in &refused {
        let response = submit(&mut client, url);
        assert_eq!(response.status, 400, "{url}: {}", response.body_str());
        assert!(
            response.body_str().contains("is not allowed"),
            "{url}: {}",
            response.body_str()
        );
        assert!(response.header("Location").is_none(), "{url}");
    }
    assert_eq!(v4.connections(), 0);
    assert_eq!(server_jobs_count(&dir.join("jobs.sqlite")), 0);
}

#[test]
fn ports_outside_1_to_65535_are_refused_at_submit() {
    if !netns::isolated("ports_outside_1_to_65535_are_refused_at_submit") {
        return;
    }
    // Port 80 is where such a URL used to be delivered; listen there when allowed to.
    let port_80 = Receiver::start("127.0.0.1:80", vec![Reply::Status(200)]).ok();
    let dir = scratch_dir("ports");
    let server = TestServer::echo(server_config(
        &dir.join("jobs.sqlite"),
        Some(webhook_config(true)),
    ));
    let mut client = server.connect();
    for url in [
        "http://127.0.0.1:65536/hook",
        "http://127.0.0.1:99999/hook",
        "http://127.0.0.1:0/hook",
        "http://127.0.0.1:4294967376/hook",
    ] {
        let response = submit(&mut client, url);
        assert_eq!(response.status, 400, "{url}: {}", response.body_str());
        assert!(
            response.body_str().contains("port must be 1 to 65535"),
            "{url}: {}",
            response.body_str()
        );
    }
    assert_eq!(server_jobs_count(&dir.join("jobs.sqlite")), 0);
    if let Some(port_80) = &port_80 {
        // A good port still works: the receiver on 80 takes a delivery to :80.
        let location = accepted_location(&submit(&mut client, "http://127.0.0.1:80/hook"));
        wait_for_webhook(&mut client, &location, "delivered");
        assert_eq!(port_80.received().len(), 1);
    } else {
        println!("port 80 could not be bound here: the delivery to :80 is not checked");
    }
}

#[test]
fn a_refusal_does_not_say_what_the_name_resolved_to() {
    if !netns::isolated("a_refusal_does_not_say_what_the_name_resolved_to") {
        return;
    }
    let dir = scratch_dir("refusal-text");
    let server = TestServer::echo(server_config(
        &dir.join("jobs.sqlite"),
        Some(webhook_config(false)),
    ));
    let mut client = server.connect();
    let response = submit(&mut client, "http://localhost:8080/hook");
    assert_eq!(response.status, 400, "{}", response.body_str());
    let body = response.body_str();
    assert!(body.contains("localhost"), "{body}");
    assert!(body.contains("is not allowed"), "{body}");
    for address in ["127.0.0.1", "::1", "127.", "[::"] {
        assert!(!body.contains(address), "{body}");
    }
}

#[test]
fn logs_show_a_callbacks_origin_and_never_its_path_or_query() {
    if !netns::isolated("logs_show_a_callbacks_origin_and_never_its_path_or_query") {
        return;
    }
    let receiver = Receiver::start("127.0.0.1:0", vec![Reply::Status(500), Reply::Status(204)])
        .expect("a receiver");
    let port = receiver.addr.port();
    let dir = scratch_dir("logs");
    // prime_serverd as an operator runs it, logging everything (RUST_LOG=trace).
    let http_port = daemons::free_port();
    let args: Vec<String> = [
        &daemons::tcp(http_port),
        "1",
        "--jobs-db",
        &dir.join("jobs.sqlite").display().to_string(),
        "--webhook-secret",
        SECRET,
        "--webhook-retry-first",
        "0.1",
        "--allow-callback-network",
        "127.0.0.0/8",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut daemon = daemons::Daemon::start_with_log_level(
        "webhook-logs",
        env!("CARGO_BIN_EXE_prime_serverd"),
        &args,
        "trace",
    );
    assert!(
        daemon.wait_for_log("listening for Http on", daemons::START_TIMEOUT),
        "{}",
        daemon.stderr()
    );
    let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], http_port)));
    let url = format!("http://127.0.0.1:{port}/hook/CAPABILITY-IN-PATH?token=CAPABILITY-IN-QUERY");
    client.send(format!(
        "GET /is_prime?possible_prime=7 HTTP/1.1\r\nHost: test\r\nPrefer: respond-async\r\nCallback-URL: {url}\r\n\r\n"
    ));
    let location = accepted_location(&client.read_response());
    let document = wait_for_webhook(&mut client, &location, "delivered");
    assert_eq!(statuses(&document), vec![Some(500), Some(204)]);
    // The job's owner still sees the whole URL in its status document.
    assert_eq!(document["webhook"]["url"], url);
    // Refused ones are logged too.
    for refused in [
        "http://10.0.0.1/hook/CAPABILITY-REFUSED?token=CAPABILITY-REFUSED",
        "http://127.0.0.1:99999/hook/CAPABILITY-BAD-PORT",
    ] {
        client.send(format!(
            "GET /is_prime?possible_prime=7 HTTP/1.1\r\nHost: test\r\nPrefer: respond-async\r\nCallback-URL: {refused}\r\n\r\n"
        ));
        assert_eq!(client.read_response().status, 400, "{refused}");
    }
    let origin = format!("http://127.0.0.1:{port}");
    assert!(
        daemon.wait_for_log("answered 204", daemons::START_TIMEOUT),
        "{}",
        daemon.stderr()
    );
    assert!(
        daemon.wait_for_log("a submit is refused", daemons::START_TIMEOUT),
        "{}",
        daemon.stderr()
    );
    let logs = daemon.stderr();
    for status in ["answered 500", "answered 204"] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&origin) && l.contains(status)),
            "no line with {origin} and {status}:\n{logs}"
        );
    }
    for line in logs.lines() {
        assert!(!line.contains("CAPABILITY"), "{line}");
        assert!(!line.contains("/hook"), "{line}");
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(daemons::START_TIMEOUT).is_some());
}

/// A receiver that takes each delivery on a thread of its own, holds it `hold`, then
/// answers `204`, and counts how many deliveries it held at once.
struct SlowReceiver {
    addr: SocketAddr,
    /// Deliveries read and not yet answered.
    holding: Arc<AtomicUsize>,
    /// The most it held at once.
    most: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlowReceiver {
    fn start(hold: Duration) -> SlowReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a receiver");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let holding = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (holding, most, answered, stop) = (
                holding.clone(),
                most.clone(),
                answered.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    // Counted from the accept: the server took its slot before it
                    // connected, and frees it only after reading the answer.
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let (holding, answered) = (holding.clone(), answered.clone());
                    handlers.push(std::thread::spawn(move || {
                        let read = serve(&stream, Reply::Silent, None);
                        std::thread::sleep(hold);
                        holding.fetch_sub(1, Ordering::SeqCst);
                        if read.is_some() {
                            let mut stream = &stream;
                            let answer = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
                            if stream.write_all(answer.as_bytes()).is_ok() {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }));
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        SlowReceiver {
            addr,
            holding,
            most,
            answered,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn the_per_host_limit_counts_the_resolved_address_not_the_spelling() {
    if !netns::isolated("the_per_host_limit_counts_the_resolved_address_not_the_spelling") {
        return;
    }
    let receiver = SlowReceiver::start(Duration::from_millis(300));
    let port = receiver.addr.port();
    let dir = scratch_dir("per-destination");
    // The default limit (2 per destination) and four delivery threads.
    let webhooks = webhook_config(true);
    assert_eq!((webhooks.per_host, webhooks.threads), (2, 4));
    let server = TestServer::echo(server_config(&dir.join("jobs.sqlite"), Some(webhooks)));
    let mut client = server.connect();
    // Six spellings of 127.0.0.1:port.
    let spellings = [
        format!("http://127.0.0.1:{port}/a"),
        format!("http://127.1:{port}/b"),
        format!("http://0x7f.0.0.1:{port}/c"),
        format!("http://[::ffff:127.0.0.1]:{port}/d"),
        format!("http://2130706433:{port}/e"),
        format!("http://0177.0.0.1:{port}/f"),
    ];
    let locations: Vec<String> = spellings
        .iter()
        .map(|url| accepted_location(&submit(&mut client, url)))
        .collect();
    for location in &locations {
        let document = wait_for_webhook(&mut client, location, "delivered");
        assert_eq!(statuses(&document), vec![Some(204)], "{document}");
    }
    assert_eq!(receiver.answered.load(Ordering::SeqCst), spellings.len());
    let most = receiver.most.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} deliveries to one address and port at once"
    );
    assert_eq!(receiver.holding.load(Ordering::SeqCst), 0);
}

#[test]
fn a_submit_is_checked_while_every_delivery_thread_waits_on_a_receiver() {
    if !netns::isolated("a_submit_is_checked_while_every_delivery_thread_waits_on_a_receiver") {
        return;
    }
    let mut webhooks = webhook_config(true);
    // Longer than the client waits for an answer: a check queued behind these
    // deliveries would not be answered in time.
    webhooks.timeout = WAIT * 6;
    assert_eq!((webhooks.per_host, webhooks.threads), (2, 4));
    let dir = scratch_dir("check-while-busy");
    let server = TestServer::echo(server_config(&dir.join("jobs.sqlite"), Some(webhooks)));
    // Two receivers that never answer (dropped before the server: that ends the
    // deliveries held on them).
    let silent_a = Receiver::start("127.0.0.1:0", vec![Reply::Silent]).expect("a receiver");
    let silent_b = Receiver::start("127.0.0.1:0", vec![Reply::Silent]).expect("a receiver");
    let mut client = server.connect();
    let held: Vec<String> = [&silent_a, &silent_a, &silent_b, &silent_b]
        .iter()
        .map(|receiver| accepted_location(&submit(&mut client, &receiver.url())))
        .collect();
    assert!(
        wait_for(|| silent_a.connections() + silent_b.connections() == 4),
        "the four deliveries never reached the receivers"
    );
    // Every delivery thread now waits on a receiver; a submit's check goes on.
    for receiver in [&silent_a, &silent_b] {
        accepted_location(&submit(&mut client, &receiver.url()));
    }
    let refused = submit(&mut client, "http://10.0.0.1/hook");
    assert_eq!(refused.status, 400, "{}", refused.body_str());
    // ... and the four are still waiting: none of their attempts has ended.
    for location in &held {
        let document = status(&mut client, location);
        let attempts = document["webhook"]["attempts"]
            .as_array()
            .map_or(0, |a| a.len());
        assert_eq!(attempts, 0, "{document}");
    }
    assert_eq!(silent_a.connections() + silent_b.connections(), 4);
}

/// The front end's configuration with jobs in the PostgreSQL database at `url`, a
/// lease of `lease`, and these webhooks.
fn shared_config(url: &str, lease: Duration, webhooks: WebhookConfig) -> ServerConfig {
    let mut config = http_config();
    let mut jobs = JobsConfig::new(url);
    jobs.webhooks = Some(webhooks);
    jobs.lease = lease;
    config.jobs = Some(jobs);
    config
}

#[test]
fn two_front_ends_on_one_postgres_store_deliver_each_attempt_once() {
    if !netns::isolated("two_front_ends_on_one_postgres_store_deliver_each_attempt_once") {
        return;
    }
    let postgres = pg::Postgres::start();
    let receiver = Receiver::start(
        "127.0.0.1:0",
        vec![Reply::Status(500), Reply::Status(503), Reply::Status(204)],
    )
    .expect("a receiver");
    let lease = Duration::from_millis(600);
    let a = TestServer::echo(shared_config(&postgres.url(), lease, webhook_config(true)));
    let b = TestServer::echo(shared_config(&postgres.url(), lease, webhook_config(true)));
    let location = accepted_location(&submit(&mut a.connect(), &receiver.url()));
    // Read on the other front end: three attempts, each made once, by one of them.
    let document = wait_for_webhook(&mut b.connect(), &location, "delivered");
    assert_eq!(statuses(&document), vec![Some(500), Some(503), Some(204)]);
    // Leases renewed and looked at several times over: still no second delivery.
    std::thread::sleep(lease * 3);
    assert_eq!(receiver.received().len(), 3);
    assert_eq!(receiver.connections(), 3);
}

#[test]
fn a_pending_delivery_moves_to_another_front_end_when_its_lease_lapses() {
    if !netns::isolated("a_pending_delivery_moves_to_another_front_end_when_its_lease_lapses") {
        return;
    }
    let postgres = pg::Postgres::start();
    // The first attempt is told to come back in 2 s; its front end stops before then.
    let receiver = Receiver::start(
        "127.0.0.1:0",
        vec![Reply::RetryAfter(503, 2), Reply::Status(200)],
    )
    .expect("a receiver");
    let lease = Duration::from_millis(600);
    let b = TestServer::echo(shared_config(&postgres.url(), lease, webhook_config(true)));
    let location = {
        let a = TestServer::echo(shared_config(&postgres.url(), lease, webhook_config(true)));
        let mut client = a.connect();
        let location = accepted_location(&submit(&mut client, &receiver.url()));
        let deadline = Instant::now() + WAIT;
        loop {
            let document = status(&mut client, &location);
            if statuses(&document) == vec![Some(503)] {
                assert_eq!(document["webhook"]["state"], "pending");
                break;
            }
            assert!(Instant::now() < deadline, "{document}");
            std::thread::sleep(Duration::from_millis(20));
        }
        location
    };
    // A has stopped; B takes its pending delivery over once A's lease lapses.
    let document = wait_for_webhook(&mut b.connect(), &location, "delivered");
    assert_eq!(statuses(&document), vec![Some(503), Some(200)]);
    let at = |i: usize| {
        humantime::parse_rfc3339(document["webhook"]["attempts"][i]["at"].as_str().unwrap())
            .unwrap()
    };
    // Retry-After: 2 was honoured by the front end that took it over.
    assert!(at(1).duration_since(at(0)).unwrap() >= Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 2);
}
