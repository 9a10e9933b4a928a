//! URL subscriptions to channels over real sockets and processes: a `prime_serverd`
//! with a control listener registers URLs (`PUT /subscriptions/{name}`), and a receiver
//! in this test (a std `TcpListener` thread on 127.0.0.1) takes the POSTs of the
//! channel's messages, published with `POST /publish/`. Delivered in order and signed
//! (the Standard Webhooks signature checked here with HMAC-SHA256), retried after
//! failures, dropped at the TTL, removed after failing past `--webhook-give-up` or at a
//! `410`, URLs to non-public addresses refused, `401` without the publish key when one
//! is set, a message published on another front end of the bus delivered, and the
//! subscriptions kept over a restart in the job store's file.
//! Every test runs in a network namespace of its own with only loopback (see `netns`).
//! Every wait is bounded; nothing asserts on elapsed time.

#[path = "daemons/mod.rs"]
mod daemons;
#[path = "netns/mod.rs"]
mod netns;

use base64::Engine;
use daemons::*;
use hmac::{KeyInit, Mac};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const PROXYD: &str = env!("CARGO_BIN_EXE_prime_proxyd");
const BOUND: Duration = Duration::from_secs(15);
/// The webhook secret (`whsec_` and the base64 of the key "a subscription key").
const SECRET: &str = "whsec_YSBzdWJzY3JpcHRpb24ga2V5";
const KEY: &[u8] = b"a subscription key";

/// A POST the receiver took.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// An HTTP receiver on 127.0.0.1 answering each request with the next status of its
/// script (the last repeats). Dropping it stops its thread.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(script: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !stopping.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let status = script[n.min(script.len() - 1)];
                n += 1;
                if let Some(request) = serve(stream, status) {
                    seen.lock().unwrap().push(request);
                }
            }
        });
        Receiver {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests to `path` were taken; returns them.
    fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        poll_until(BOUND, || {
            let to_path: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.path == path)
                .collect();
            (to_path.len() >= count).then_some(to_path)
        })
        .unwrap_or_else(|| {
            panic!(
                "{count} requests to {path} did not come; got {:?}",
                self.received()
            )
        })
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

/// Reads one request and answers it with `status` (closing the connection).
fn serve(stream: TcpStream, status: u16) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(BOUND)).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split(' ').nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut field = String::new();
        reader.read_line(&mut field).ok()?;
        let field = field.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = reader.into_inner();
    let _ = stream.write_all(
        format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    Some(Received {
        path,
        headers,
        body,
    })
}

/// A `prime_serverd` with a control listener and the webhook secret, plus `extra`
/// options; its control port.
fn serverd(name: &str, extra: &[&str]) -> (Daemon, u16) {
    let (daemon, _, control) = serverd_with_status(name, extra);
    (daemon, control)
}

/// As [`serverd`], with a status path (`/status`): the daemon, its public port and its
/// control port.
fn serverd_with_status(name: &str, extra: &[&str]) -> (Daemon, u16, u16) {
    let (port, control) = (free_port(), free_port());
    let mut list = vec![
        tcp(port),
        "1".to_string(),
        "--status-path".to_string(),
        "/status".to_string(),
        "--control-listen".to_string(),
        tcp(control),
        "--webhook-secret".to_string(),
        SECRET.to_string(),
        "--webhook-retry-first".to_string(),
        "0.1".to_string(),
    ];
    list.extend(extra.iter().map(|s| s.to_string()));
    let mut daemon = Daemon::start_listening(name, SERVERD, &list);
    assert!(
        daemon.wait_for_log("control listener on", BOUND),
        "{}",
        daemon.stderr()
    );
    (daemon, port, control)
}

/// The options that let the server reach the receiver on loopback.
const LOOPBACK_ALLOWED: &[&str] = &["--allow-callback-network", "127.0.0.0/8"];

/// One request to the control listener: its status and body.
fn control(port: u16, method: &str, path: &str, extra: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(BOUND)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn put(port: u16, name: &str, channel: &str, url: &str, ttl: f64) -> (u16, String) {
    let body = serde_json::json!({"channel": channel, "url": url, "ttl": ttl}).to_string();
    control(port, "PUT", &format!("/subscriptions/{name}"), "", &body)
}

fn get(port: u16, name: &str) -> (u16, String) {
    control(port, "GET", &format!("/subscriptions/{name}"), "", "")
}

fn publish(port: u16, channel: &str, id: &str, content: &str) {
    let body = serde_json::json!({"items": [{"channel": channel, "id": id,
        "formats": {"http-stream": {"content": content}}}]})
    .to_string();
    let (status, text) = control(port, "POST", "/publish/", "", &body);
    assert_eq!(status, 200, "{text}");
}

/// The Standard Webhooks signature of a delivery's id, timestamp and body with the key.
fn signature(delivery: &Received) -> String {
    let id = delivery.header("webhook-id");
    let timestamp = delivery.header("webhook-timestamp");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Checks the signature a delivery carries.
fn assert_signed(delivery: &Received) {
    assert_eq!(delivery.header("webhook-signature"), signature(delivery));
}

#[test]
fn each_message_is_posted_in_order_signed_and_a_deleted_subscription_gets_no_more() {
    if !netns::isolated(
        "each_message_is_posted_in_order_signed_and_a_deleted_subscription_gets_no_more",
    ) {
        return;
    }
    let receiver = Receiver::start(vec![200]);
    let (_server, public, port) = serverd_with_status("subs-delivered", LOOPBACK_ALLOWED);
    let (status, body) = put(port, "alpha", "news", &receiver.url("/alpha"), 600.0);
    assert_eq!(status, 201, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["channel"], "news");
    assert_eq!(view["name"], "alpha");
    let (status, _) = put(port, "witness", "news", &receiver.url("/witness"), 600.0);
    assert_eq!(status, 201);
    // A PUT again renews: 200.
    let (status, _) = put(port, "alpha", "news", &receiver.url("/alpha"), 600.0);
    assert_eq!(status, 200);
    let (status, body) = get(port, "alpha");
    assert_eq!(status, 200, "{body}");
    let (status, body) = control(public, "GET", "/status", "", "");
    assert_eq!(status, 200, "{body}");
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["channels"]["url_subscriptions"], 2, "{document}");

    publish(port, "news", "1", "first");
    publish(port, "other", "x", "not for them");
    publish(port, "news", "2", "second");
    let got = receiver.wait_for("/alpha", 2);
    assert_eq!(got.len(), 2, "{got:?}");
    for (n, (delivery, content)) in got.iter().zip(["first", "second"]).enumerate() {
        assert_signed(delivery);
        assert_eq!(delivery.header("content-type"), "application/json");
        assert_eq!(delivery.header("webhook-id"), format!("alpha.{}", n + 1));
        let item = delivery.json();
        assert_eq!(item["channel"], "news");
        assert_eq!(item["id"], (n + 1).to_string());
        assert_eq!(item["formats"]["http-stream"]["content"], content);
    }
    // The signature covers the body: another body does not match it.
    let mut altered = got[0].clone();
    altered.body.push(b' ');
    assert_ne!(altered.header("webhook-signature"), signature(&altered));

    assert_eq!(
        control(port, "DELETE", "/subscriptions/alpha", "", "").0,
        204
    );
    assert_eq!(get(port, "alpha").0, 404);
    assert_eq!(
        control(port, "DELETE", "/subscriptions/alpha", "", "").0,
        404
    );
    publish(port, "news", "3", "third");
    // The witness, on the same channel, gets the third; the deleted one does not.
    receiver.wait_for("/witness", 3);
    std::thread::sleep(Duration::from_millis(300));
    let to_alpha = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/alpha")
        .count();
    assert_eq!(to_alpha, 2);
}

#[test]
fn a_failed_delivery_is_retried_before_the_next_message() {
    if !netns::isolated("a_failed_delivery_is_retried_before_the_next_message") {
        return;
    }
    let receiver = Receiver::start(vec![500, 503, 200]);
    let (_server, port) = serverd("subs-retried", LOOPBACK_ALLOWED);
    assert_eq!(put(port, "r", "jobs", &receiver.url("/r"), 600.0).0, 201);
    publish(port, "jobs", "1", "one");
    publish(port, "jobs", "2", "two");
    let got = receiver.wait_for("/r", 4);
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, ["r.1", "r.1", "r.1", "r.2"]);
    assert_eq!(got[0].body, got[2].body, "a retry sends the same message");
    for delivery in &got {
        assert_signed(delivery);
    }
    let (status, body) = get(port, "r");
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["failures"], 0, "{view}");
}

#[test]
fn a_subscription_whose_ttl_lapses_is_dropped() {
    if !netns::isolated("a_subscription_whose_ttl_lapses_is_dropped") {
        return;
    }
    let receiver = Receiver::start(vec![200]);
    let (_server, port) = serverd("subs-ttl", LOOPBACK_ALLOWED);
    assert_eq!(put(port, "short", "c", &receiver.url("/short"), 0.5).0, 201);
    assert_eq!(put(port, "long", "c", &receiver.url("/long"), 600.0).0, 201);
    assert_eq!(get(port, "short").0, 200);
    let gone = poll_until(BOUND, || (get(port, "short").0 == 404).then_some(()));
    assert!(gone.is_some(), "the short subscription outlived its TTL");
    publish(port, "c", "1", "after the TTL");
    receiver.wait_for("/long", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        receiver.received().iter().all(|r| r.path != "/short"),
        "{:?}",
        receiver.received()
    );
}

#[test]
fn a_subscription_failing_past_give_up_is_removed() {
    if !netns::isolated("a_subscription_failing_past_give_up_is_removed") {
        return;
    }
    let receiver = Receiver::start(vec![500]);
    let (server, port) = serverd(
        "subs-give-up",
        &[
            "--allow-callback-network",
            "127.0.0.0/8",
            "--webhook-give-up",
            "0.5",
        ],
    );
    assert_eq!(put(port, "f", "c", &receiver.url("/f"), 600.0).0, 201);
    publish(port, "c", "1", "never taken");
    let gone = poll_until(BOUND, || (get(port, "f").0 == 404).then_some(()));
    assert!(gone.is_some(), "still there: {}", server.stderr());
    assert!(receiver.received().len() >= 2, "{:?}", receiver.received());
    let log = server.stderr();
    assert!(log.contains("subscription f: deliveries failed"), "{log}");
    // Each attempt's line names a subscription's delivery, not a job's.
    assert!(
        log.lines()
            .any(|l| l.contains("subscription ~") && l.contains("answered 500")),
        "{log}"
    );
    assert!(!log.contains("job ~"), "{log}");
}

#[test]
fn urls_to_addresses_that_are_not_public_are_refused() {
    if !netns::isolated("urls_to_addresses_that_are_not_public_are_refused") {
        return;
    }
    let (_strict, port) = serverd("subs-ssrf", &[]);
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/hook",
        "ftp://example.com/x",
    ] {
        let (status, body) = put(port, "s", "c", url, 60.0);
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(get(port, "s").0, 404, "{url}");
    }
    // Bad bodies.
    for body in [
        "not json",
        r#"{"channel":"c","url":"http://example.com/"}"#,
        r#"{"channel":"c","url":"http://example.com/","ttl":0}"#,
        r#"{"url":"http://example.com/","ttl":5}"#,
    ] {
        let (status, text) = control(port, "PUT", "/subscriptions/s", "", body);
        assert_eq!(status, 400, "{body}: {text}");
    }
    assert_eq!(control(port, "POST", "/subscriptions/s", "", "").0, 405);
    // An allowed network opens that network only.
    let (_allowing, port) = serverd("subs-ssrf-allow", LOOPBACK_ALLOWED);
    assert_eq!(put(port, "s", "c", "http://127.0.0.1:9/hook", 60.0).0, 201);
    assert_eq!(
        put(port, "m", "c", "http://169.254.169.254/latest/", 60.0).0,
        400
    );
}

#[test]
fn subscriptions_need_the_publish_key_when_one_is_set() {
    if !netns::isolated("subscriptions_need_the_publish_key_when_one_is_set") {
        return;
    }
    let key_file = scratch_path("subs-key", "txt");
    std::fs::write(&key_file, "subscription publish key\n").unwrap();
    let key_path = key_file.to_string_lossy().into_owned();
    let (_server, port) = serverd(
        "subs-key",
        &[
            "--allow-callback-network",
            "127.0.0.0/8",
            "--publish-key-file",
            &key_path,
        ],
    );
    let body = r#"{"channel":"c","url":"http://127.0.0.1:9/hook","ttl":60}"#;
    let (status, _) = control(port, "PUT", "/subscriptions/k", "", body);
    assert_eq!(status, 401);
    assert_eq!(get(port, "k").0, 401);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"iss": "tests", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"subscription publish key"),
    )
    .unwrap();
    let authorization = format!("Authorization: Bearer {token}\r\n");
    let (status, text) = control(port, "PUT", "/subscriptions/k", &authorization, body);
    assert_eq!(status, 201, "{text}");
    let (status, _) = control(port, "GET", "/subscriptions/k", &authorization, "");
    assert_eq!(status, 200);
    let _ = std::fs::remove_file(key_file);
}

#[test]
fn a_message_published_on_another_front_end_reaches_the_subscription() {
    if !netns::isolated("a_message_published_on_another_front_end_reaches_the_subscription") {
        return;
    }
    let (xsub, xpub) = (tcp(free_port()), tcp(free_port()));
    let mut bus = Daemon::start("subs-bus", PROXYD, &args(&["--bus", &xsub, &xpub]));
    assert!(bus.wait_for_log("bus forwarder", BOUND), "{}", bus.stderr());
    let on_bus = ["--bus", xsub.as_str(), xpub.as_str()];
    let (_a, a_control) = serverd("subs-front-a", &on_bus);
    let mut b_options = on_bus.to_vec();
    b_options.extend_from_slice(LOOPBACK_ALLOWED);
    let (_b, b_control) = serverd("subs-front-b", &b_options);
    let receiver = Receiver::start(vec![200]);
    assert_eq!(
        put(b_control, "far", "shared", &receiver.url("/far"), 600.0).0,
        201
    );
    // The bus subscription takes a moment to reach A's publisher: publish on A until
    // a message arrives at B's subscriber.
    let mut sent = 0;
    let heard = poll_until(BOUND, || {
        sent += 1;
        publish(a_control, "shared", &sent.to_string(), "from A");
        (!receiver.received().is_empty()).then_some(())
    });
    assert!(
        heard.is_some(),
        "nothing published on A reached B's subscription"
    );
    let first = &receiver.received()[0];
    assert_signed(first);
    assert_eq!(first.json()["formats"]["http-stream"]["content"], "from A");
}

#[test]
fn with_a_job_store_the_subscriptions_survive_a_restart() {
    if !netns::isolated("with_a_job_store_the_subscriptions_survive_a_restart") {
        return;
    }
    let db = scratch_path("subs-store", "sqlite");
    let db_path = db.to_string_lossy().into_owned();
    let options = [
        "--allow-callback-network",
        "127.0.0.0/8",
        "--jobs-db",
        db_path.as_str(),
    ];
    let receiver = Receiver::start(vec![200]);
    {
        let (_before, port) = serverd("subs-before-restart", &options);
        assert_eq!(put(port, "kept", "c", &receiver.url("/kept"), 600.0).0, 201);
        assert_eq!(put(port, "gone", "c", &receiver.url("/gone"), 600.0).0, 201);
        assert_eq!(
            control(port, "DELETE", "/subscriptions/gone", "", "").0,
            204
        );
    }
    let (after, port) = serverd("subs-after-restart", &options);
    let (status, body) = get(port, "kept");
    assert_eq!(status, 200, "{body}\n{}", after.stderr());
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["channel"], "c");
    assert!(view["expires_in"].as_f64().unwrap() <= 600.0, "{view}");
    assert_eq!(get(port, "gone").0, 404);
    publish(port, "c", "1", "after the restart");
    let got = receiver.wait_for("/kept", 1);
    assert_signed(&got[0]);
    assert!(receiver.received().iter().all(|r| r.path != "/gone"));
    drop(after);
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{db_path}{suffix}"));
    }
}

#[test]
fn a_receiver_that_answers_410_gone_ends_its_subscription() {
    if !netns::isolated("a_receiver_that_answers_410_gone_ends_its_subscription") {
        return;
    }
    let receiver = Receiver::start(vec![410]);
    let (server, port) = serverd("subs-gone", LOOPBACK_ALLOWED);
    assert_eq!(put(port, "g", "c", &receiver.url("/g"), 600.0).0, 201);
    publish(port, "c", "1", "unwanted");
    let gone = poll_until(BOUND, || (get(port, "g").0 == 404).then_some(()));
    assert!(gone.is_some(), "still there: {}", server.stderr());
    assert_eq!(receiver.received().len(), 1, "a 410 is not retried");
}
