//! WebSocket clients through a two-stage pipeline in this process: the upgrade
//! authorised by a stage as an HTTP request would be, messages as jobs whose answers
//! and channel messages arrive on the same socket in order, a close that interrupts
//! running work, a reader that stops reading cut at the output bound while another
//! socket keeps receiving; and two independent clients, Python's `websockets` and
//! Node's `ws`, against it and against `prime_echod`.
//!
//! Every wait is bounded; nothing asserts on elapsed time.

mod daemons;
mod http_common;
mod tools;
mod websocket_common;

use daemons::{free_port, tcp, Daemon};
use http_common::TestServer;
use prime_server::http::websocket::MessageKind;
use prime_server::http::Response;
use prime_server::server::{CorsConfig, ServerConfig};
use prime_server::stages::{HttpJob, Item, Next, StageError};
use prime_server::Pipeline;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use websocket_common::*;

/// Sleeping messages that saw their interrupt.
static INTERRUPTED: AtomicUsize = AtomicUsize::new(0);

/// The first stage: accepts upgrades carrying the right credentials (as a cookie or a
/// bearer token), and reads each message as a command.
fn front(job: &mut HttpJob) -> Result<Next, StageError> {
    if job.is_websocket_upgrade() {
        let request = job.request()?;
        let authorised = request.header("authorization") == Some("Bearer let-me-in")
            || request.header("cookie") == Some("session=ok");
        if !authorised {
            return Err(StageError::new(401, "who are you?"));
        }
        let protocol = request
            .header("sec-websocket-protocol")
            .and_then(|offered| offered.split(',').map(str::trim).find(|p| *p == "chat.v1"));
        return Ok(Next::accept_websocket(protocol, &["news"]));
    }
    let Some(kind) = job.websocket_message() else {
        return Err(StageError::not_found("WebSocket only"));
    };
    let request = job.request()?;
    if kind == MessageKind::Binary {
        let body = request.body.clone();
        let binary = Response::new(200).header("Content-Type", "application/octet-stream");
        return Ok(Next::respond(binary.body(body)));
    }
    let text = String::from_utf8_lossy(&request.body).into_owned();
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["work", n] => {
            job.publish("news", Item::ws_message("", format!("queued {n}"), false))?;
            Ok(Next::to("work", n.as_bytes()))
        }
        ["whoami"] => {
            let who = serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "cookie": request.header("cookie"),
                "authorization": request.header("authorization"),
                "content_type": request.header("content-type"),
            });
            Ok(Next::respond(Response::json(200, &who)))
        }
        ["subscribe", channel] => Ok(Next::subscribe_websocket(&[channel])),
        ["publish", channel, content] => {
            job.publish(channel, Item::ws_message("", *content, false))?;
            Ok(Next::respond(Response::new(204)))
        }
        ["flood", channel, count] => {
            let count: usize = count.parse().unwrap_or(0);
            for i in 0..count {
                let mut piece = vec![b'f'; 128 * 1024];
                piece[..8].copy_from_slice(format!("{i:08}").as_bytes());
                job.publish(channel, Item::ws_message("", piece, true))?;
            }
            Ok(Next::respond(Response::new(200).body("flooded")))
        }
        ["sleep"] => {
            job.publish("news", Item::ws_message("", "sleeping", false))?;
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                if job.interrupted() {
                    INTERRUPTED.fetch_add(1, Ordering::SeqCst);
                    return Ok(Next::Abandon);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Next::respond(Response::new(200).body("slept")))
        }
        _ => Err(StageError::bad_request(format!("what is {text:?}?"))),
    }
}

/// The second stage: the job's result.
fn work(job: &mut HttpJob) -> Result<Next, StageError> {
    let n: u64 = std::str::from_utf8(job.intermediate().unwrap_or_default())
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StageError::bad_request("a number"))?;
    let answer = Response::new(200).header("Content-Type", "text/plain");
    Ok(Next::respond(answer.body(format!("result {}", n * n))))
}

/// The pipeline behind a front end, stopped when dropped (the shared [`TestServer`]).
struct Embedded {
    port: u16,
    server: TestServer,
}

impl Embedded {
    fn start(adjust: impl FnOnce(&mut ServerConfig)) -> Embedded {
        let port = free_port();
        let mut config = ServerConfig::http(tcp(port));
        adjust(&mut config);
        let pipeline = Pipeline::new()
            .http_stage("front", 2, front)
            .http_stage("work", 2, work);
        Embedded {
            port,
            server: TestServer::start(pipeline, config),
        }
    }
}

/// Opens a socket with the cookie the front stage wants.
fn open(port: u16, path: &str) -> WsClient {
    WsClient::open_with(port, path, "Cookie: session=ok\r\n")
}

/// The next text message.
fn text(client: &mut WsClient) -> String {
    let frame = client.frame();
    assert_eq!(frame.opcode, 1, "{frame:?}");
    String::from_utf8(frame.payload).expect("UTF-8")
}

#[test]
fn the_upgrade_is_authorised_by_a_stage_and_messages_carry_its_head() {
    let server = Embedded::start(|_| {});
    let refused = WsClient::handshake_raw(server.port, &upgrade_request("/chat", ""));
    assert!(
        refused.handshake.starts_with("HTTP/1.1 401 "),
        "{}",
        refused.handshake
    );
    let extra = "Authorization: Bearer let-me-in\r\nSec-WebSocket-Protocol: other, chat.v1\r\n";
    let mut client = WsClient::handshake_raw(server.port, &upgrade_request("/chat?room=7", extra));
    assert!(
        client.handshake.starts_with("HTTP/1.1 101 "),
        "{}",
        client.handshake
    );
    assert!(
        client
            .handshake
            .contains("Sec-WebSocket-Protocol: chat.v1\r\n"),
        "{}",
        client.handshake
    );
    client.send_text("whoami");
    let who: serde_json::Value = serde_json::from_str(&text(&mut client)).unwrap();
    assert_eq!(who["method"], "POST");
    assert_eq!(who["path"], "/chat");
    assert_eq!(who["query"], serde_json::json!([["room", "7"]]));
    assert_eq!(who["authorization"], "Bearer let-me-in");
    assert_eq!(who["content_type"], "text/plain; charset=utf-8");
    // A stage's error is a message too, and the socket stays open.
    client.send_text("nonsense");
    let error: serde_json::Value = serde_json::from_str(&text(&mut client)).unwrap();
    assert_eq!(error["status"], 400);
    client.send(&client_frame(0x82, &[0, 1, 2]));
    let frame = client.frame();
    assert_eq!((frame.opcode, frame.payload), (2, vec![0, 1, 2]));
}

#[test]
fn answers_and_channel_messages_share_the_socket_in_order() {
    let server = Embedded::start(|_| {});
    let mut client = open(server.port, "/");
    let mut other = open(server.port, "/");
    for n in 1..=5 {
        client.send_text(&format!("work {n}"));
    }
    // Each job's channel message (published by the first stage, to every socket on
    // "news") comes before its answer (from the second stage), and answers keep the
    // order of the messages (channel messages of different jobs need not: the first
    // stage has two workers).
    let mut seen = Vec::new();
    while seen.len() < 10 {
        seen.push(text(&mut client));
    }
    let answers: Vec<&String> = seen.iter().filter(|m| m.starts_with("result")).collect();
    assert_eq!(
        answers,
        ["result 1", "result 4", "result 9", "result 16", "result 25"]
    );
    for n in 1..=5u64 {
        let queued = seen
            .iter()
            .position(|m| *m == format!("queued {n}"))
            .unwrap();
        let result = seen
            .iter()
            .position(|m| *m == format!("result {}", n * n))
            .unwrap();
        assert!(queued < result, "{seen:?}");
    }
    // The other socket on the channel gets the channel messages only (in the order the
    // two workers of the first stage published them).
    let mut queued: Vec<String> = (1..=5).map(|_| text(&mut other)).collect();
    queued.sort();
    assert_eq!(
        queued,
        ["queued 1", "queued 2", "queued 3", "queued 4", "queued 5"]
    );
    // A socket subscribed later by a message's stage gets that channel too.
    other.send_text("subscribe private");
    other.send_text("publish private hello");
    assert_eq!(text(&mut other), "hello");
    assert!(matches!(
        client.read_within(Duration::from_millis(200)),
        Read1::Nothing
    ));
}

#[test]
fn a_close_interrupts_running_work() {
    let server = Embedded::start(|_| {});
    let before = INTERRUPTED.load(Ordering::SeqCst);
    let mut client = open(server.port, "/");
    client.send_text("sleep");
    client.send_text("sleep");
    // Both are running (the first stage has two workers) before the close comes.
    assert_eq!(text(&mut client), "sleeping");
    assert_eq!(text(&mut client), "sleeping");
    client.send(&client_frame(0x88, &1000u16.to_be_bytes()));
    client.expect_close(1000);
    let deadline = Instant::now() + BOUND;
    while INTERRUPTED.load(Ordering::SeqCst) < before + 2 {
        assert!(Instant::now() < deadline, "the work was not interrupted");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_socket_that_does_not_read_is_cut_at_the_output_bound() {
    let server = Embedded::start(|config| config.max_output_bytes = 256 * 1024);
    let mut stalled = open(server.port, "/");
    stalled.send_text("subscribe flood");
    stalled.send_text("whoami");
    text(&mut stalled);
    // The stalled socket reads nothing while 320 messages of 128 KiB (40 MiB) are
    // published to it: more than libzmq, the kernel's buffers and the bound hold. The
    // flood's answer comes after its publishes, so once the publisher has it the
    // front end has handed them all to the stalled socket's output.
    let mut publisher = open(server.port, "/");
    publisher.send_text("flood flood 320");
    assert_eq!(text(&mut publisher), "flooded");
    let mut received = 0;
    loop {
        match stalled.read_within(BOUND) {
            Read1::Frame(frame) if frame.opcode == 2 => received += 1,
            Read1::Frame(frame) => panic!("unexpected {frame:?}"),
            Read1::Closed => break,
            Read1::Nothing => panic!("the stalled socket was not cut ({received} read)"),
        }
    }
    assert!(received < 320, "{received}");
    // The publisher's own socket is unaffected.
    publisher.send_text("whoami");
    assert!(text(&mut publisher).contains("\"path\":\"/\""));
}

#[test]
fn quiet_sockets_are_pinged_and_dropped_when_they_stay_quiet() {
    let server = Embedded::start(|config| {
        config.websocket.ping = Some(Duration::from_millis(300));
    });
    let mut silent = open(server.port, "/");
    let mut lively = open(server.port, "/");
    assert_eq!(silent.frame().opcode, 0x9, "a ping");
    for _ in 0..3 {
        let ping = lively.frame();
        assert_eq!(ping.opcode, 0x9, "{ping:?}");
        lively.send(&client_frame(0x8a, &ping.payload));
    }
    // The socket that never answered is closed; the one that did got ping after ping.
    silent.expect_close(1001);
}

#[test]
fn a_drain_closes_every_socket_with_1001() {
    let server = Embedded::start(|_| {});
    let mut first = open(server.port, "/");
    let mut second = open(server.port, "/");
    server.server.drain();
    first.expect_close(1001);
    second.expect_close(1001);
}

#[test]
fn the_cors_policy_decides_which_origins_may_open_a_socket() {
    let server = Embedded::start(|config| {
        config.cors = Some(CorsConfig::new(["https://app.example"]));
    });
    let refused = WsClient::handshake_raw(
        server.port,
        &upgrade_request(
            "/",
            "Cookie: session=ok\r\nOrigin: https://evil.example\r\n",
        ),
    );
    assert!(
        refused.handshake.starts_with("HTTP/1.1 403 "),
        "{}",
        refused.handshake
    );
    let allowed = WsClient::handshake_raw(
        server.port,
        &upgrade_request("/", "Cookie: session=ok\r\nOrigin: https://app.example\r\n"),
    );
    assert!(
        allowed.handshake.starts_with("HTTP/1.1 101 "),
        "{}",
        allowed.handshake
    );
    assert!(
        allowed
            .handshake
            .contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{}",
        allowed.handshake
    );
    // No Origin: no browser, no CORS.
    open(server.port, "/");
}

/// Runs a Python script with the `websockets` package, the server's URL as its argument.
fn python(script: &str, url: &str) -> String {
    let output = Command::new(tools::python())
        .arg("-c")
        .arg(script)
        .arg(url)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn python_websockets_runs_jobs_and_gets_channel_messages() {
    let server = Embedded::start(|_| {});
    let script = r#"
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], additional_headers={"Cookie": "session=ok"},
             subprotocols=["chat.v1"], open_timeout=10) as ws:
    print(ws.subprotocol)
    ws.send("work 12")
    print(ws.recv(timeout=10))
    print(ws.recv(timeout=10))
    ws.send(bytes([1, 2, 3]))
    print(list(ws.recv(timeout=10)))
    ws.ping(b"are you there").wait(timeout=10)
    print("pong")
print("closed", ws.close_code)
"#;
    let url = format!("ws://127.0.0.1:{}/py", server.port);
    assert_eq!(
        python(script, &url),
        "chat.v1\nqueued 12\nresult 144\n[1, 2, 3]\npong\nclosed 1000\n"
    );
    let refused = r#"
import sys
from websockets.sync.client import connect
from websockets.exceptions import InvalidStatus
try:
    connect(sys.argv[1], open_timeout=10)
except InvalidStatus as e:
    print(e.response.status_code)
"#;
    assert_eq!(python(refused, &url), "401\n");
}

#[test]
fn python_websockets_and_node_ws_interoperate_with_prime_echod() {
    let port = free_port();
    let args: Vec<String> = [tcp(port), "2".into()].into();
    let _echod = Daemon::start_listening("echod-clients", env!("CARGO_BIN_EXE_prime_echod"), &args);
    let url = format!("ws://127.0.0.1:{port}/echo");
    let script = r#"
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], open_timeout=10, max_size=None) as ws:
    for message in ["", "héllo 😀", "x" * 70000, b"", bytes(range(256)) * 300]:
        ws.send(message)
        echo = ws.recv(timeout=10)
        assert echo == message and type(echo) is type(message), (type(echo), len(echo))
    ws.send(["frag", "men", "ted"])
    print(ws.recv(timeout=10))
    ws.close(4000, "done")
print("closed", ws.close_code)
"#;
    assert_eq!(python(script, &url), "fragmented\nclosed 4000\n");

    let node = r#"
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1]);
const seen = [];
const timer = setTimeout(() => { console.log('timeout', seen); process.exit(1); }, 10000);
ws.on('open', () => {
  ws.send('hello from node');
  ws.send(Buffer.from([9, 8, 7]));
  ws.ping('p');
});
ws.on('pong', (data) => seen.push('pong ' + data.toString()));
ws.on('message', (data, isBinary) => {
  seen.push(isBinary ? 'binary ' + Array.from(data).join(',') : 'text ' + data.toString());
  if (seen.filter((s) => !s.startsWith('pong')).length === 2) ws.close(1000, 'bye');
});
ws.on('close', (code) => {
  clearTimeout(timer);
  console.log(JSON.stringify(seen.filter((s) => !s.startsWith('pong')).concat(['close ' + code])));
  console.log(seen.includes('pong p') ? 'ponged' : 'no pong');
});
"#;
    let output = Command::new(tools::program("node", "nodejs"))
        .arg("-e")
        .arg(node)
        .arg(&url)
        .current_dir(tools::node_modules())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "[\"text hello from node\",\"binary 9,8,7\",\"close 1000\"]\nponged\n"
    );
}

#[test]
fn prime_serverd_answers_numbers_sent_on_a_websocket_through_both_stages() {
    let port = free_port();
    let args: Vec<String> = [tcp(port), "2".into()].into();
    let mut serverd =
        Daemon::start_listening("serverd-ws", env!("CARGO_BIN_EXE_prime_serverd"), &args);
    let mut client = WsClient::open(port, "/is_prime");
    for (n, answer) in [
        ("7", r#"{"is_prime":true,"possible_prime":7}"#),
        ("8", r#"{"is_prime":false,"possible_prime":8}"#),
    ] {
        client.send_text(n);
        let frame = client.frame();
        assert_eq!(frame.opcode, 1, "{frame:?}");
        assert_eq!(String::from_utf8(frame.payload).unwrap(), answer);
    }
    // A message that is no number is the parse stage's 400, as its body.
    client.send_text("seven");
    let frame = client.frame();
    assert!(
        String::from_utf8_lossy(&frame.payload).contains("whole number"),
        "{frame:?}"
    );
    let sent_bytes = 2 + 36 + 2 + 37 + 2 + frame.payload.len();
    // The access log: the upgrade's line, then one for the socket when it closes,
    // under the upgrade's request line and id; none per message.
    client.send(&client_frame(0x88, &1000u16.to_be_bytes()));
    client.expect_close(1000);
    let closed = " websocket in=3 out=3 closed-by=client code=1000";
    assert!(serverd.wait_for_log(closed, BOUND), "{}", serverd.stderr());
    let log = serverd.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" access ")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains(r#" "GET /is_prime HTTP/1.1" 101 0B "#),
        "{}",
        lines[0]
    );
    let request = lines[0].rsplit_once(" request=").expect("a request id").1;
    let close = format!(r#" "GET /is_prime HTTP/1.1" 101 {sent_bytes}B "#);
    assert!(lines[1].contains(&close), "{}", lines[1]);
    assert!(
        lines[1].ends_with(&format!(" request={request}{closed}")),
        "{}",
        lines[1]
    );
}

/// The metrics path's exposition.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    stream
        .set_read_timeout(Some(BOUND))
        .expect("a read timeout");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").expect("a body").1.to_string()
}

/// The value of the sample `series` (name and labels, as exposed).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (metric, value) = line.rsplit_once(' ')?;
        (metric == series).then(|| value.trim().parse().ok())?
    })
}

#[test]
fn the_metrics_path_counts_sockets_messages_closes_and_refusals() {
    let server = Embedded::start(|config| config.metrics_path = Some("/metrics".into()));
    // Refused by the front end (version 8) and by the stage (no credentials).
    let old = "GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let refused = WsClient::handshake_raw(server.port, old);
    assert!(
        refused.handshake.starts_with("HTTP/1.1 426 "),
        "{}",
        refused.handshake
    );
    let refused = WsClient::handshake_raw(server.port, &upgrade_request("/chat", ""));
    assert!(
        refused.handshake.starts_with("HTTP/1.1 401 "),
        "{}",
        refused.handshake
    );

    let mut client = open(server.port, "/chat");
    let mut failing = open(server.port, "/chat");
    let open_now = scrape(server.port);
    assert_eq!(
        sample(&open_now, "prime_websockets_open"),
        Some(2.0),
        "{open_now}"
    );
    client.send_text("publish news hello");
    assert_eq!(text(&mut client), "hello");
    assert_eq!(text(&mut failing), "hello");
    client.send(&client_frame(0x82, &[1, 2, 3]));
    assert_eq!(client.frame().payload, vec![1, 2, 3]);
    client.send(&client_frame(0x88, &1000u16.to_be_bytes()));
    client.expect_close(1000);
    failing.send(&client_frame(0x83, b"reserved opcode"));
    failing.expect_close(1002);

    let mut after = String::new();
    for _ in 0..200 {
        after = scrape(server.port);
        if sample(&after, "prime_websockets_open") == Some(0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (series, value) in [
        ("prime_websockets_open", 0.0),
        ("prime_websocket_upgrades_total", 2.0),
        (
            "prime_websocket_upgrades_refused_total{by=\"front_end\"}",
            1.0,
        ),
        ("prime_websocket_upgrades_refused_total{by=\"stage\"}", 1.0),
        (
            "prime_websocket_messages_received_total{kind=\"text\"}",
            1.0,
        ),
        (
            "prime_websocket_messages_received_total{kind=\"binary\"}",
            1.0,
        ),
        // The binary answer and the push to each socket (the 204 sends nothing).
        ("prime_websocket_messages_sent_total", 3.0),
        (
            "prime_websocket_closes_total{by=\"client\",code=\"1000\"}",
            1.0,
        ),
        (
            "prime_websocket_closes_total{by=\"server\",code=\"1002\"}",
            1.0,
        ),
        // Messages' answers are counted by their HTTP status (the 204 and the 200
        // among the scrapes' 2xx), not as other protocols' answers; the two 101s, the
        // 426 and the 401 are the upgrades'.
        ("prime_http_requests_total{class=\"other\"}", 0.0),
        ("prime_http_requests_total{class=\"1xx\"}", 2.0),
        ("prime_http_requests_total{class=\"4xx\"}", 2.0),
    ] {
        assert_eq!(sample(&after, series), Some(value), "{series} in\n{after}");
    }
}
