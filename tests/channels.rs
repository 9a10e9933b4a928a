//! Channels over real sockets and processes: holds (long-poll and stream) answered by a
//! stage's publish and by the control listener's `POST /publish/` (with and without the
//! publish key, more items at once than the front end queues, and several items of one
//! publish written to a stream together, in order, up to a close), history and recovery
//! with `Last-Event-ID`, a stalled stream subscriber dropped at the output bound while
//! another keeps receiving (and, in the middle of a fan-out, while the subscribers
//! before and after it, one of them late to read, get every message whole and in
//! order; and, of messages of 4 MiB, within what libzmq and the output may hold), a
//! client that leaves freeing its hold, two `prime_serverd` processes on one bus
//! (`prime_proxyd --bus`), and holds spread over two of libzmq's I/O threads past the
//! spill load (each epoll's registered descriptors, from `/proc/self/fdinfo`) or kept on
//! one below it, and a fan-out wider than the front end writes alone, lone and in a
//! burst.
//!
//! Every wait is bounded; nothing asserts on elapsed time.

mod daemons;

use daemons::*;
use prime_server::demo::channels::channel_demo;
use prime_server::server::{ChannelsConfig, ControlConfig, ServerConfig};
use prime_server::stages::{HttpJob, Next, StageError};
use prime_server::{Pipeline, RunningPipeline, Shutdown};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const BOUND: Duration = Duration::from_secs(15);

/// A raw client connection (`daemons::Peer`) made by sending a whole request.
type Client = Peer;

impl Client {
    /// Connects to `port` and sends `request` (a whole request, head and body).
    fn send(port: u16, request: &str) -> Client {
        let mut client = Peer::connect(port);
        client.write_text(request);
        client
    }

    /// `GET path` over HTTP/1.1 with extra header lines.
    fn get(port: u16, path: &str, extra: &str) -> Client {
        Client::send(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
        )
    }
}

/// One whole exchange with `Connection: close`: the answer.
fn exchange(port: u16, request: &str) -> String {
    Client::send(port, request).read_to_close()
}

/// `POST path` with `body`, and extra header lines.
fn post(port: u16, path: &str, extra: &str, body: &str) -> String {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        ),
    )
}

/// The front end's status document's `channels` part.
fn channels_status(port: u16) -> serde_json::Value {
    let answer = exchange(
        port,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let status: serde_json::Value = serde_json::from_str(body).expect("JSON status");
    status["channels"].clone()
}

/// Waits until the status says `holds` requests are held.
fn wait_holds(port: u16, holds: u64) {
    let reached = poll_until(BOUND, || {
        (channels_status(port)["holds"].as_u64() == Some(holds)).then_some(())
    });
    assert!(
        reached.is_some(),
        "holds never {holds}: {}",
        channels_status(port)
    );
}

/// A GRIP publish body of one stream item.
fn stream_item(channel: &str, id: &str, content: &str) -> String {
    serde_json::json!({"items": [{"channel": channel, "id": id,
        "formats": {"http-stream": {"content": content}}}]})
    .to_string()
}

/// `POST /publish/` on a control listener, with an `Authorization` line or none.
fn publish(control: u16, body: &str, authorization: Option<&str>) -> String {
    let extra = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    post(control, "/publish/", &extra, body)
}

type Stage = fn(&mut HttpJob<'_, '_>) -> Result<Next, StageError>;

/// A server in this process running the channels demo stage, with a status path and a
/// control listener on `control`.
struct Embedded {
    port: u16,
    control: u16,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
    pipeline: Option<RunningPipeline>,
}

impl Embedded {
    fn start(adjust: impl FnOnce(&mut ServerConfig)) -> Embedded {
        Self::start_with(channel_demo, adjust)
    }

    fn start_with(stage: Stage, adjust: impl FnOnce(&mut ServerConfig)) -> Embedded {
        let (port, control) = (free_port(), free_port());
        let mut config = ServerConfig::http(tcp(port));
        config.status_path = Some("/status".into());
        config.channels = ChannelsConfig {
            control: Some(ControlConfig {
                listen: tcp(control),
                allow_remote: false,
                publish_key: None,
                admin_token: None,
            }),
            ..ChannelsConfig::default()
        };
        adjust(&mut config);
        let ctx = zmq::Context::new();
        let (pipeline, server) = Pipeline::new()
            .http_stage("channels", 2, stage)
            .bind_server(&ctx, config)
            .expect("bind the server");
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            server.run(&stop).expect("the front end runs");
        });
        Embedded {
            port,
            control,
            shutdown,
            thread: Some(thread),
            pipeline: Some(pipeline),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop();
        }
    }
}

#[test]
fn a_stage_publish_answers_a_long_poll_and_extends_a_stream_until_closed() {
    let server = Embedded::start(|_| {});
    let mut stream = Client::get(server.port, "/channels/news", "");
    let head = stream.wait_for(": held on channel news");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    let mut poll = Client::get(server.port, "/channels/news?mode=response", "");
    wait_holds(server.port, 2);

    let published = post(server.port, "/channels/news?id=1", "", "hello");
    assert!(published.starts_with("HTTP/1.1 202"), "{published}");
    let answer = poll.wait_for("hello");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Type: text/plain"), "{answer}");
    stream.wait_for("id: 1\ndata: hello\n\n");

    // The control listener's publish, with the close action: the stream ends properly.
    let body = serde_json::json!({"items": [{"channel": "news", "id": "2",
        "formats": {"http-stream": {"content": "data: bye\n\n", "action": "close"}}}]});
    let answer = publish(server.control, &body.to_string(), None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let text = stream.wait_for("0\r\n\r\n");
    assert!(text.ends_with("data: bye\n\n\r\n0\r\n\r\n"), "{text:?}");
    wait_holds(server.port, 0);

    // A long-poll that nobody answers gets the stage's own answer at its timeout.
    let mut lonely = Client::get(server.port, "/channels/quiet?mode=response&timeout=1", "");
    let answer = lonely.wait_for("\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer}"
    );
    let status = channels_status(server.port);
    assert_eq!(status["delivered"], 3, "{status}");
}

/// One publish, framed once for every stream and rendered once per protocol for the
/// long-polls: each hold still gets the bytes of its own request's protocol.
#[test]
fn one_publish_reaches_each_hold_in_its_own_protocol() {
    let server = Embedded::start(|_| {});
    let get = |path: &str, version: &str, extra: &str| {
        Client::send(
            server.port,
            &format!("GET {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n"),
        )
    };
    let mut streams: Vec<Client> = (0..3).map(|_| get("/channels/mix", "1.1", "")).collect();
    let mut old_stream = get("/channels/mix", "1.0", "");
    let mut polls: Vec<Client> = (0..2)
        .map(|_| get("/channels/mix?mode=response", "1.1", ""))
        .collect();
    let mut closing_poll = get(
        "/channels/mix?mode=response",
        "1.1",
        "Connection: close\r\n",
    );
    let mut old_poll = get("/channels/mix?mode=response", "1.0", "");
    for client in streams.iter_mut().chain([&mut old_stream]) {
        client.wait_for(": held on channel mix");
    }
    wait_holds(server.port, 8);

    let content = "data: a message longer than the thirty-three bytes a small message holds\n\n";
    let answer = publish(server.control, &stream_item("mix", "1", content), None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let chunk = format!("{:x}\r\n{content}\r\n", content.len());
    for client in &mut streams {
        let text = client.wait_for(&chunk);
        assert_eq!(text.matches(content).count(), 1, "{text:?}");
    }
    // HTTP/1.0: no chunks, the content as it is, the connection's close ends it.
    let text = old_stream.wait_for(content);
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(!text.contains(&chunk), "{text:?}");

    // The long-polls: answered by the next message with an `http-response` format.
    let body = serde_json::json!({"items": [{"channel": "mix", "id": "2",
        "formats": {"http-response": {"body": "done\n"}}}]});
    let answer = publish(server.control, &body.to_string(), None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for poll in &mut polls {
        let text = poll.wait_for("done\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(!text.contains("Connection: close"), "{text}");
    }
    // A connection whose long-poll was answered reads its next request as any other.
    let poll = &mut polls[0];
    poll.stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let text = poll.wait_for("\"holds\"");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    let text = closing_poll.read_to_close();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.ends_with("done\n"), "{text:?}");
    let text = old_poll.read_to_close();
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(text.ends_with("done\n"), "{text:?}");
    wait_holds(server.port, 4);
    let status = channels_status(server.port);
    assert_eq!(status["delivered"], 4 + 4, "{status}");
}

#[test]
fn a_client_that_leaves_frees_its_hold_and_the_requests_behind_a_hold_wait() {
    let server = Embedded::start(|_| {});
    let stream = Client::get(server.port, "/channels/a", "");
    // A long-poll with a request pipelined behind it: its answer waits for the hold's.
    let mut pipelined = Client::send(
        server.port,
        "GET /channels/a?mode=response HTTP/1.1\r\nHost: x\r\n\r\nGET /channels/b?mode=nope HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    wait_holds(server.port, 2);
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 1024];
    assert!(
        !matches!(pipelined.stream.read(&mut buf), Ok(n) if n > 0),
        "an answer overtook the hold"
    );
    post(server.port, "/channels/a", "", "first");
    let text = pipelined.wait_for("mode is stream or response");
    let first = text.find("first").expect("the hold's answer");
    assert!(first < text.find("400 Bad Request").unwrap(), "{text}");

    drop(stream);
    wait_holds(server.port, 0);
    let status = channels_status(server.port);
    assert_eq!(status["holds"], 0, "{status}");
}

#[test]
fn publishing_needs_the_key_when_one_is_set() {
    let key = b"publish-secret".to_vec();
    let server = Embedded::start(|config| {
        if let Some(control) = &mut config.channels.control {
            control.publish_key = Some(key.clone());
        }
    });
    let mut stream = Client::get(server.port, "/channels/k", "");
    stream.wait_for("held on channel k");
    wait_holds(server.port, 1);
    let body = stream_item("k", "1", "data: signed\n\n");
    let sign = |secret: &[u8], exp: i64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"iss": "tests", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for authorization in [
        None,
        Some(format!("Bearer {}", sign(b"another key", now + 600))),
        Some(format!("Bearer {}", sign(&key, now - 600))),
        Some("Basic dGVzdHM6cHVibGlzaC1zZWNyZXQ=".to_string()),
    ] {
        let answer = publish(server.control, &body, authorization.as_deref());
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{authorization:?}: {answer}"
        );
    }
    let good = format!("Bearer {}", sign(&key, now + 600));
    let answer = publish(server.control, &body, Some(&good));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream.wait_for("data: signed\n\n");
    assert_eq!(stream.text().matches("signed").count(), 1);
    // Malformed publishes are refused whole, whoever sends them.
    for bad in [
        "not json",
        r#"{"items": 3}"#,
        r#"{"items": [{"channel": "", "formats": {}}]}"#,
    ] {
        let answer = publish(server.control, bad, Some(&good));
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
    }
    let answer = post(server.control, "/nothing", "", "");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[test]
fn a_publish_of_more_items_than_the_front_end_queues_arrives_whole_and_in_order() {
    // 2,500 items in one request: more than the control listener may queue for the
    // front end at once (1,000), so the publish waits for room and wakes it.
    let server = Embedded::start(|_| {});
    let mut stream = Client::get(server.port, "/channels/many", "");
    stream.wait_for("held on channel many");
    wait_holds(server.port, 1);
    let items: Vec<serde_json::Value> = (0..2500)
        .map(|i| {
            serde_json::json!({"channel": "many",
                "formats": {"http-stream": {"content": format!("data: n{i}\n\n")}}})
        })
        .collect();
    let body = serde_json::json!({ "items": items }).to_string();
    let answer = publish(server.control, &body, None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let text = stream.wait_for("data: n2499\n\n");
    let mut from = 0;
    for i in 0..2500 {
        let needle = format!("data: n{i}\n\n");
        let at = text[from..]
            .find(&needle)
            .unwrap_or_else(|| panic!("item {i} missing or out of order"));
        from += at + needle.len();
    }
    assert_eq!(text.matches("data: n").count(), 2500, "each item once");
}

/// The items of one publish on one channel are written to a stream together (a run):
/// each hold still gets them in order, in its own protocol, a long-poll the first with
/// an `http-response` format, and a close among them ends a stream after it.
#[test]
fn the_items_of_one_publish_reach_each_hold_in_order_and_a_close_among_them_ends_the_stream() {
    let server = Embedded::start(|_| {});
    let mut stream = Client::get(server.port, "/channels/run", "");
    let mut old_stream = Client::send(server.port, "GET /channels/run HTTP/1.0\r\n\r\n");
    let mut other = Client::get(server.port, "/channels/other", "");
    let mut poll = Client::get(server.port, "/channels/run?mode=response", "");
    for client in [&mut stream, &mut old_stream, &mut other] {
        client.wait_for(": held on channel");
    }
    wait_holds(server.port, 4);

    let content = |n: u32| format!("data: a{n}\n\n");
    let stream_format = |n: u32| serde_json::json!({"content": content(n)});
    let body = serde_json::json!({"items": [
        {"channel": "run", "formats": {"http-stream": stream_format(1)}},
        {"channel": "run", "formats": {"http-response": {"body": "first\n"}}},
        {"channel": "run", "formats": {"http-stream": stream_format(2),
            "http-response": {"body": "second\n"}}},
        {"channel": "other", "formats": {"http-stream": stream_format(3)}},
        {"channel": "run", "formats": {"http-stream":
            {"content": content(4), "action": "close"}}},
        {"channel": "run", "formats": {"http-stream": stream_format(5)}},
    ]});
    let answer = publish(server.control, &body.to_string(), None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let chunk = |n: u32| format!("{:x}\r\n{}\r\n", content(n).len(), content(n));
    let text = stream.wait_for("0\r\n\r\n");
    let expected = format!("{}{}{}0\r\n\r\n", chunk(1), chunk(2), chunk(4));
    assert!(text.ends_with(&expected), "{text:?}");
    let text = old_stream.read_to_close();
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    let expected = format!("{}{}{}", content(1), content(2), content(4));
    assert!(text.ends_with(&expected), "{text:?}");
    let text = poll.wait_for("first\n");
    assert!(!text.contains("second"), "{text}");
    let text = other.wait_for(&chunk(3));
    assert!(!text.contains("data: a5"), "{text:?}");
    wait_holds(server.port, 1);
    let status = channels_status(server.port);
    assert_eq!(status["delivered"], 3 + 3 + 1 + 1, "{status}");
}

#[test]
fn a_subscriber_that_comes_back_gets_exactly_what_it_missed_or_is_told_it_lost_its_place() {
    let server = Embedded::start(|config| {
        config.channels.history_len = 3;
    });
    let port = server.port;
    let mut first = Client::get(port, "/channels/h", "");
    first.wait_for("held on channel h");
    wait_holds(port, 1);
    for id in 1..=2 {
        post(port, &format!("/channels/h?id={id}"), "", &format!("m{id}"));
    }
    first.wait_for("data: m2\n\n");
    drop(first);
    wait_holds(port, 0);
    for id in 3..=4 {
        post(port, &format!("/channels/h?id={id}"), "", &format!("m{id}"));
    }
    // Back with Last-Event-ID 2: exactly 3 and 4, in order, then the live 5.
    let mut back = Client::get(port, "/channels/h", "Last-Event-ID: 2\r\n");
    back.wait_for("data: m4\n\n");
    wait_holds(port, 1);
    post(port, "/channels/h?id=5", "", "m5");
    let text = back.wait_for("data: m5\n\n");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(events, ["m3", "m4", "m5"], "{text}");
    drop(back);
    wait_holds(port, 0);

    // A long-poll one message behind is answered at once with the next one.
    let answer = Client::get(port, "/channels/h?mode=response", "Last-Event-ID: 4\r\n")
        .wait_for("m5")
        .to_string();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // Too far behind: the history keeps 3 (6, 7, 8), the client last saw 5.
    for id in 6..=8 {
        post(port, &format!("/channels/h?id={id}"), "", &format!("m{id}"));
    }
    let mut late = Client::get(port, "/channels/h", "Last-Event-ID: 2\r\n");
    let text = late.wait_for("event: stream-error\n");
    assert!(text.contains(r#""condition":"lost-position""#), "{text}");
    assert!(
        !text.contains("data: m6"),
        "a gap given as if complete: {text}"
    );
    let mut late_poll = Client::get(port, "/channels/h?mode=response", "Last-Event-ID: 2\r\n");
    let answer = late_poll.wait_for("}");
    assert!(answer.starts_with("HTTP/1.1 409 Conflict"), "{answer}");
    assert!(answer.contains(r#""prev-id":"2""#), "{answer}");
    // The one that was told goes on with the live messages.
    wait_holds(port, 1);
    post(port, "/channels/h?id=9", "", "m9");
    late.wait_for("data: m9\n\n");
    assert!(channels_status(port)["lost_positions"].as_u64() >= Some(2));
}

#[test]
fn a_stalled_stream_subscriber_is_dropped_at_the_output_bound_and_the_other_keeps_receiving() {
    let server = Embedded::start(|config| {
        config.max_output_bytes = 256 * 1024;
    });
    let port = server.port;
    // The stalled client asks for a small receive buffer and never reads again.
    let stalled = small_buffer_subscriber(port, "big");
    let mut reader = Client::get(port, "/channels/big", "");
    reader.wait_for("held on channel big");
    wait_holds(port, 2);
    let piece = "x".repeat(1024 * 1024);
    let mut dropped = false;
    for id in 0..64 {
        let body = stream_item("big", &id.to_string(), &format!("{piece}{id}.\n"));
        let answer = publish(server.control, &body, None);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The reader keeps up: it reads each message whole.
        reader.wait_for(&format!("x{id}.\n"));
        reader.seen.clear();
        if channels_status(port)["holds"] == 1 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled subscriber was never dropped");
    post(port, "/channels/big?id=last", "", "still here");
    reader.wait_for("data: still here\n\n");
    drop(stalled);
}

#[test]
fn a_stalled_subscriber_of_large_messages_is_dropped_within_what_libzmq_and_the_output_may_hold() {
    let server = Embedded::start(|config| {
        config.max_output_bytes = 1024 * 1024;
    });
    let port = server.port;
    let stalled = small_buffer_subscriber(port, "large");
    let mut reader = Client::get(port, "/channels/large", "");
    reader.wait_for("held on channel large");
    wait_holds(port, 2);
    // libzmq holds at most 17 messages of 256 KiB per client (4.25 MiB), the output
    // 1 MiB more, the kernel's buffers at most about 4 MiB: the stalled client is gone
    // by the fourth message of 4 MiB. Were a message handed to libzmq whole, it would
    // hold 16 of them (64 MiB) first.
    let piece = "x".repeat(4 * 1024 * 1024);
    let mut dropped_after = None;
    for id in 0..6 {
        let body = stream_item("large", &id.to_string(), &format!("<{id}:{piece}:{id}>\n"));
        assert!(publish(server.control, &body, None).starts_with("HTTP/1.1 200"));
        next_message(&mut reader, id);
        if channels_status(port)["holds"] == 1 {
            dropped_after = Some(id);
            break;
        }
    }
    assert!(
        dropped_after.is_some(),
        "6 messages of 4 MiB went to a client that reads nothing, and it is still held"
    );
    drop(stalled);
}

/// A client with a small receive buffer (see [`socket2_like_small_buffer`]) held on
/// `channel`'s stream.
fn small_buffer_subscriber(port: u16, channel: &str) -> Client {
    let socket = socket2_like_small_buffer();
    socket.connect(("127.0.0.1", port)).expect("connect");
    let mut client = Client {
        stream: socket.into_stream(),
        seen: Vec::new(),
    };
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    client.write_text(&format!(
        "GET /channels/{channel} HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    client.wait_for(&format!("held on channel {channel}"));
    client
}

/// Reads a stream subscriber's next message, which must be the one numbered `id`
/// (its content is `<id:...:id>`): nothing of another message comes before its end.
fn next_message(reader: &mut Client, id: usize) {
    let end = format!(":{id}>");
    reader.wait_for(&end);
    let text = reader.text();
    let at = text.find(&end).expect("seen") + end.len();
    let upto = &text[..at];
    assert_eq!(
        upto.matches('<').count(),
        1,
        "message {id} is not alone or not next"
    );
    assert!(upto.contains(&format!("<{id}:")), "message {id} is cut");
    reader.seen.drain(..at);
}

#[test]
fn a_fan_out_past_a_stalled_subscriber_in_the_middle_reaches_the_others_whole_and_in_order() {
    let server = Embedded::start(|config| {
        config.max_output_bytes = 2 * 1024 * 1024;
    });
    let port = server.port;
    // Held in this order: a reader, one that reads nothing until the fifth message
    // (its messages wait in libzmq and the front end meanwhile), one that never reads,
    // and a last reader.
    let mut readers = Vec::new();
    let mut first = Client::get(port, "/channels/fan", "");
    first.wait_for("held on channel fan");
    readers.push(first);
    readers.push(small_buffer_subscriber(port, "fan"));
    let stalled = small_buffer_subscriber(port, "fan");
    let mut last = Client::get(port, "/channels/fan", "");
    last.wait_for("held on channel fan");
    readers.push(last);
    wait_holds(port, 4);
    const LATE: usize = 1;
    const LATE_FROM: usize = 4;
    let piece = "x".repeat(1024 * 1024);
    let mut dropped = false;
    for id in 0..64 {
        let body = stream_item("fan", &id.to_string(), &format!("<{id}:{piece}:{id}>\n"));
        let answer = publish(server.control, &body, None);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        for (index, reader) in readers.iter_mut().enumerate() {
            if index == LATE && id < LATE_FROM {
                continue;
            }
            if index == LATE && id == LATE_FROM {
                for earlier in 0..LATE_FROM {
                    next_message(reader, earlier);
                }
            }
            next_message(reader, id);
        }
        if channels_status(port)["holds"] == 3 {
            dropped = id >= LATE_FROM;
            break;
        }
    }
    assert!(
        dropped,
        "the stalled subscriber was not dropped after the late one read"
    );
    let body = stream_item("fan", "end", "<end:still here:end>\n");
    assert!(publish(server.control, &body, None).starts_with("HTTP/1.1 200"));
    for reader in &mut readers {
        reader.wait_for("<end:still here:end>");
    }
    drop(stalled);
}

/// A TCP socket with a small receive buffer, set before it connects (so the window it
/// offers stays small).
fn socket2_like_small_buffer() -> SmallSocket {
    // SAFETY: plain socket(2) and setsockopt(2) calls on a descriptor this owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        SmallSocket(fd)
    }
}

struct SmallSocket(libc::c_int);

impl SmallSocket {
    fn connect(&self, (host, port): (&str, u16)) -> std::io::Result<()> {
        let ip: std::net::Ipv4Addr = host.parse().unwrap();
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: connect(2) reads the address, which outlives the call.
        let done = unsafe {
            libc::connect(
                self.0,
                &address as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn into_stream(self) -> TcpStream {
        use std::os::fd::FromRawFd;
        let fd = self.0;
        std::mem::forget(self);
        // SAFETY: the descriptor is a connected TCP socket this owned alone.
        unsafe { TcpStream::from_raw_fd(fd) }
    }
}

impl Drop for SmallSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this one's own.
        unsafe { libc::close(self.0) };
    }
}

/// A `prime_serverd` on the bus, with a status path and a control listener.
fn serverd_on_bus(name: &str, xsub: &str, xpub: &str) -> (Daemon, u16, u16) {
    let (port, control) = (free_port(), free_port());
    let daemon = Daemon::start_listening(
        name,
        SERVERD,
        &args(&[
            &tcp(port),
            "1",
            "--status-path",
            "/status",
            "--control-listen",
            &tcp(control),
            "--bus",
            xsub,
            xpub,
        ]),
    );
    (daemon, port, control)
}

#[test]
fn two_front_ends_on_one_bus_each_get_only_the_channels_they_hold() {
    let (xsub, xpub) = (tcp(free_port()), tcp(free_port()));
    let mut bus = Daemon::start("bus", PROXYD, &args(&["--bus", &xsub, &xpub]));
    assert!(bus.wait_for_log("bus forwarder", BOUND), "{}", bus.stderr());
    let (_a, a_port, a_control) = serverd_on_bus("front-a", &xsub, &xpub);
    let (_b, b_port, _b_control) = serverd_on_bus("front-b", &xsub, &xpub);

    let mut on_a = Client::get(a_port, "/channels/shared", "");
    let mut on_b = Client::get(b_port, "/channels/shared", "");
    let mut other_on_a = Client::get(a_port, "/channels/other", "");
    for client in [&mut on_a, &mut on_b] {
        client.wait_for("held on channel shared");
    }
    other_on_a.wait_for("held on channel other");
    wait_holds(a_port, 2);
    wait_holds(b_port, 1);
    // A subscription takes a moment to reach the publishers: ping until both front
    // ends' holds hear the channel.
    let heard = poll_until(BOUND, || {
        publish(
            a_control,
            &stream_item("shared", "ping", "data: ping\n\n"),
            None,
        );
        publish(
            a_control,
            &stream_item("other", "ping", "data: ping\n\n"),
            None,
        );
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 4096];
        for client in [&mut on_a, &mut on_b, &mut other_on_a] {
            if let Ok(n) = client.stream.read(&mut buf) {
                client.seen.extend_from_slice(&buf[..n]);
            }
        }
        [&on_a, &on_b, &other_on_a]
            .iter()
            .all(|c| c.text().contains("data: ping"))
            .then_some(())
    });
    assert!(heard.is_some(), "the bus never carried the pings");

    // A message published on A reaches the holds on A and on B.
    let answer = publish(
        a_control,
        &stream_item("shared", "1", "data: to all\n\n"),
        None,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    on_a.wait_for("data: to all\n\n");
    on_b.wait_for("data: to all\n\n");

    // B holds nothing on `other`: none of its traffic reaches B. A marker on `shared`
    // published after it comes through the same forwarder in order, so once B has the
    // marker, it would have had the rest.
    let before = channels_status(b_port)["bus_received"].as_u64().unwrap();
    for id in 0..5 {
        publish(
            a_control,
            &stream_item("other", &format!("o{id}"), "data: other\n\n"),
            None,
        );
    }
    publish(
        a_control,
        &stream_item("shared", "marker", "data: marker\n\n"),
        None,
    );
    on_b.wait_for("data: marker\n\n");
    other_on_a.wait_for("data: other\n\n");
    let all_five = poll_until(BOUND, || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = other_on_a.stream.read(&mut buf) {
            other_on_a.seen.extend_from_slice(&buf[..n]);
        }
        (other_on_a.text().matches("data: other").count() == 5).then_some(())
    });
    assert!(all_five.is_some(), "{}", other_on_a.text());
    let after = channels_status(b_port)["bus_received"].as_u64().unwrap();
    assert_eq!(
        after,
        before + 1,
        "B received traffic of a channel it holds nothing on"
    );

    // A stage's publish on B goes on the bus too, and reaches A.
    post(b_port, "/channels/shared?id=2", "", "from b");
    on_a.wait_for("data: from b\n\n");
    on_b.wait_for("data: from b\n\n");
}

/// The demo's channels, and `POST /work`: put off as an asynchronous job, whose run asks
/// that its end be published on `account:42`.
fn work_or_channels(job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
    if job.request()?.path != "/work" {
        return channel_demo(job);
    }
    if !job.is_async() {
        return Ok(Next::later());
    }
    job.notify("account:42")?;
    Ok(Next::respond(
        prime_server::http::Response::new(200).body("worked"),
    ))
}

#[test]
fn a_job_a_stage_names_a_channel_for_publishes_its_end_there() {
    let db = scratch_path("channels-jobs", "sqlite");
    let server = Embedded::start_with(work_or_channels, |config| {
        config.jobs = Some(prime_server::jobs::JobsConfig::new(&db));
    });
    let mut stream = Client::get(server.port, "/channels/account:42", "");
    stream.wait_for("held on channel account:42");
    wait_holds(server.port, 1);
    let accepted = post(server.port, "/work", "", "");
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    let location = accepted
        .lines()
        .find_map(|line| line.strip_prefix("Location: "))
        .expect("a Location")
        .to_string();
    let text = stream.wait_for(r#""state":"succeeded""#);
    assert!(text.contains("event: job\ndata: {"), "{text}");
    assert!(
        text.contains(&format!(r#""location":"{location}""#)),
        "{text}"
    );
}

/// The value of the sample `name` (no labels) in a Prometheus text exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

fn scrape(port: u16) -> String {
    let answer = exchange(
        port,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").expect("a body").1.to_string()
}

#[test]
fn the_metrics_path_counts_held_connections_and_channel_messages() {
    let server = Embedded::start(|config| config.metrics_path = Some("/metrics".into()));
    let before = scrape(server.port);
    assert_eq!(
        sample(&before, "prime_held_connections"),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "prime_channel_messages_delivered_total"),
        Some(0.0),
        "{before}"
    );
    let mut first = Client::get(server.port, "/channels/m", "");
    first.wait_for(": held on channel m");
    let mut second = Client::get(server.port, "/channels/m", "");
    second.wait_for(": held on channel m");
    wait_holds(server.port, 2);
    let held = scrape(server.port);
    assert_eq!(sample(&held, "prime_held_connections"), Some(2.0), "{held}");

    let answer = publish(server.control, &stream_item("m", "1", "data: x\n\n"), None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    first.wait_for("data: x\n\n");
    second.wait_for("data: x\n\n");
    let after = scrape(server.port);
    assert_eq!(
        sample(&after, "prime_channel_messages_published_total"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "prime_channel_messages_delivered_total"),
        Some(2.0),
        "{after}"
    );
    drop((first, second));
    wait_holds(server.port, 0);
    let gone = scrape(server.port);
    assert_eq!(sample(&gone, "prime_held_connections"), Some(0.0), "{gone}");
}

/// Lets the run of `POST /slow` end.
static SLOW_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The demo's channels, and `POST /slow`: put off as an asynchronous job whose run ends
/// once `released` is set (or after [`BOUND`]).
fn slow_until(
    released: &std::sync::atomic::AtomicBool,
    job: &mut HttpJob<'_, '_>,
) -> Result<Next, StageError> {
    if job.request()?.path != "/slow" {
        return channel_demo(job);
    }
    if !job.is_async() {
        return Ok(Next::later());
    }
    let end = Instant::now() + BOUND;
    while !released.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Next::respond(
        prime_server::http::Response::new(200).body("slow done"),
    ))
}

/// [`slow_until`] on [`SLOW_RELEASED`].
fn slow_or_channels(job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
    slow_until(&SLOW_RELEASED, job)
}

#[test]
fn a_job_s_event_stream_is_a_hold_on_its_channel_where_stages_cannot_publish() {
    let db = scratch_path("channels-job-events", "sqlite");
    let server = Embedded::start_with(slow_or_channels, |config| {
        config.jobs = Some(prime_server::jobs::JobsConfig::new(&db));
    });
    let accepted = post(server.port, "/slow", "", "");
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    let location = accepted
        .lines()
        .find_map(|line| line.strip_prefix("Location: "))
        .expect("a Location")
        .to_string();
    let id = location.rsplit('/').next().expect("an id").to_string();
    let mut events = Client::get(server.port, &format!("{location}/events"), "");
    events.wait_for("id: 2\nevent: state\n");
    // The stream is a hold on the job's channel.
    wait_holds(server.port, 1);

    // A client cannot publish there through a stage (the demo's POST)...
    let refused = post(
        server.port,
        &format!("/channels/job:{id}?id=9"),
        "",
        "forged",
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // ...the control listener can.
    let item = stream_item(
        &format!("job:{id}"),
        "note",
        "event: note\ndata: from the operator\n\n",
    );
    let answer = publish(server.control, &item, None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    events.wait_for("data: from the operator\n\n");

    // The job's last event ends the stream, and frees the hold.
    SLOW_RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
    let text = events.wait_for("0\r\n\r\n");
    assert!(text.contains(r#""state":"succeeded""#), "{text}");
    assert!(!text.contains("forged"), "{text}");
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["1", "2", "3"], "{text}");
    wait_holds(server.port, 0);
}

/// Lets the run of `POST /slow` of [`held_or_channels`] end (a flag of its own: the
/// tests of one file run at once).
static HELD_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`slow_until`] on [`HELD_RELEASED`].
fn held_or_channels(job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
    slow_until(&HELD_RELEASED, job)
}

#[test]
fn a_stage_s_hold_on_a_job_s_channel_gets_the_job_s_end_with_no_event_stream_open() {
    // The job service sends the events of jobs no event stream watches only once
    // something else may listen on jobs' channels: the first such hold of this server
    // must not miss the end of the job it waits for.
    let db = scratch_path("channels-job-hold", "sqlite");
    let server = Embedded::start_with(held_or_channels, |config| {
        config.jobs = Some(prime_server::jobs::JobsConfig::new(&db));
    });
    let accepted = post(server.port, "/slow", "", "");
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    let id = accepted
        .lines()
        .find_map(|line| line.strip_prefix("Location: "))
        .and_then(|location| location.rsplit('/').next())
        .expect("a Location with an id")
        .to_string();
    let channel = format!("job:{id}");
    let mut hold = Client::get(server.port, &format!("/channels/{channel}"), "");
    hold.wait_for(&format!("held on channel {channel}"));
    wait_holds(server.port, 1);
    HELD_RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
    let text = hold.wait_for(r#""state":"succeeded""#);
    assert!(text.contains("event: state"), "{text}");
}

#[test]
fn a_publish_right_after_a_hold_reaches_it_on_a_front_end_on_a_bus() {
    let (xsub, xpub) = (tcp(free_port()), tcp(free_port()));
    let mut bus = Daemon::start("bus", PROXYD, &args(&["--bus", &xsub, &xpub]));
    assert!(bus.wait_for_log("bus forwarder", BOUND), "{}", bus.stderr());
    let (_front, port, control) = serverd_on_bus("front", &xsub, &xpub);
    // Each hold on a new channel, then at once one publish: its subscription may not
    // have reached the publisher yet, but the front end's own publish reaches its holds.
    for n in 0..5 {
        let channel = format!("fresh{n}");
        let mut hold = Client::get(port, &format!("/channels/{channel}"), "");
        hold.wait_for(&format!("held on channel {channel}"));
        let answer = publish(
            control,
            &stream_item(&channel, "1", "data: first\n\n"),
            None,
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        hold.wait_for("data: first\n\n");
        // Once, not twice: its copy back from the bus is dropped.
        post(port, &format!("/channels/{channel}?id=2"), "", "second");
        let text = hold.wait_for("data: second\n\n");
        assert_eq!(text.matches("data: first").count(), 1, "{text}");
    }
}

/// The inodes of the server side of every established TCP connection to `port` on
/// 127.0.0.1 (`/proc/net/tcp`: local address, state `01`, inode).
fn server_side_inodes(port: u16) -> std::collections::HashSet<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 9 && fields[1] == local && fields[3] == "01")
                .then(|| fields[9].parse().ok())
                .flatten()
        })
        .collect()
}

/// For each epoll instance of this process that polls some of `port`'s server-side
/// connections (libzmq's I/O threads: one epoll each), how many it polls, largest first.
fn connections_per_io_thread(port: u16) -> Vec<usize> {
    let inodes = server_side_inodes(port);
    let mut socket_of_fd = std::collections::HashMap::new();
    let mut epolls = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let name = entry.file_name().to_string_lossy().into_owned();
        if target == "anon_inode:[eventpoll]" {
            epolls.push(name);
        } else if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|inode| inode.parse::<u64>().ok())
        {
            socket_of_fd.insert(name, inode);
        }
    }
    let mut counts: Vec<usize> = epolls
        .iter()
        .filter_map(|epoll| std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}")).ok())
        .map(|info| {
            info.lines()
                .filter_map(|line| line.strip_prefix("tfd:"))
                .filter_map(|rest| rest.split_whitespace().next())
                .filter(|fd| {
                    socket_of_fd
                        .get(*fd)
                        .is_some_and(|inode| inodes.contains(inode))
                })
                .count()
        })
        .filter(|&count| count > 0)
        .collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

#[test]
fn holds_spread_over_two_io_threads_each_get_every_message_in_order_and_a_stalled_one_is_dropped() {
    // Past 8 pollers (its mailbox, the listeners, connections) the first I/O thread
    // hands new connections to the second.
    let server = Embedded::start(|config| {
        config.io_threads = 2;
        config.io_thread_spill = 8;
        config.max_output_bytes = 2 * 1024 * 1024;
    });
    let port = server.port;
    // Eleven readers and, held in the middle, one that never reads.
    let (mut readers, mut stalled) = (Vec::new(), None);
    for index in 0..12 {
        if index == 6 {
            stalled = Some(small_buffer_subscriber(port, "spread"));
            continue;
        }
        let mut reader = Client::get(port, "/channels/spread", "");
        reader.wait_for("held on channel spread");
        readers.push(reader);
    }
    wait_holds(port, 12);
    let spread = connections_per_io_thread(port);
    assert_eq!(
        spread.len(),
        2,
        "12 holds past a spill load of 8: {spread:?}"
    );
    assert!(
        spread[1] >= 3,
        "the second I/O thread holds too few: {spread:?}"
    );
    let piece = "x".repeat(1024 * 1024);
    let mut dropped = false;
    for id in 0..64 {
        let body = stream_item("spread", &id.to_string(), &format!("<{id}:{piece}:{id}>\n"));
        let answer = publish(server.control, &body, None);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        for reader in &mut readers {
            next_message(reader, id);
        }
        if channels_status(port)["holds"] == 11 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled subscriber was never dropped");
    let body = stream_item("spread", "end", "<end:still here:end>\n");
    assert!(publish(server.control, &body, None).starts_with("HTTP/1.1 200"));
    for reader in &mut readers {
        reader.wait_for("<end:still here:end>");
    }
    drop(stalled);
}

#[test]
fn holds_below_the_default_spill_load_share_one_io_thread_of_the_default_two() {
    let server = Embedded::start(|config| {
        assert_eq!((config.io_threads, config.io_thread_spill), (2, 4096));
    });
    let port = server.port;
    let mut readers = Vec::new();
    for _ in 0..10 {
        let mut reader = Client::get(port, "/channels/one", "");
        reader.wait_for("held on channel one");
        readers.push(reader);
    }
    wait_holds(port, 10);
    assert_eq!(connections_per_io_thread(port), vec![10]);
    let body = stream_item("one", "1", "<1:one thread:1>\n");
    assert!(publish(server.control, &body, None).starts_with("HTTP/1.1 200"));
    for reader in &mut readers {
        next_message(reader, 1);
    }
}

/// A run to more holds than the front end writes alone (`holds::DIRECT_DELIVERIES`)
/// is split between libzmq's I/O thread and the front end when it comes alone, and
/// goes through the I/O thread when it follows another closely (`server::fan_out`).
/// Either way every hold gets every message whole and in order: after a lone publish,
/// through a burst (one of them reading only after it, so its connection still has
/// bytes to write when the next messages come), and after a client left, whose hold is
/// freed.
#[test]
fn a_wide_fan_out_alone_and_in_a_burst_reaches_every_hold_whole_and_in_order() {
    const HOLDS: usize = 40;
    const BURST: usize = 30;
    let server = Embedded::start(|_| {});
    let port = server.port;
    let mut readers = Vec::new();
    for index in 0..HOLDS {
        let reader = if index == HOLDS / 2 {
            small_buffer_subscriber(port, "wide")
        } else {
            let mut reader = Client::get(port, "/channels/wide", "");
            reader.wait_for("held on channel wide");
            reader
        };
        readers.push(reader);
    }
    wait_holds(port, HOLDS as u64);
    let piece = "y".repeat(16 * 1024);
    let send = |id: usize| {
        let body = stream_item("wide", &id.to_string(), &format!("<{id}:{piece}:{id}>\n"));
        let answer = publish(server.control, &body, None);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    };
    send(0);
    for reader in &mut readers {
        next_message(reader, 0);
    }
    for id in 1..=BURST {
        send(id);
    }
    for reader in &mut readers {
        for id in 1..=BURST {
            next_message(reader, id);
        }
    }
    drop(readers.pop());
    wait_holds(port, HOLDS as u64 - 1);
    send(BURST + 1);
    for reader in &mut readers {
        next_message(reader, BURST + 1);
    }
}
