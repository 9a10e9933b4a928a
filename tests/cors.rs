//! CORS over real sockets: preflights answered by the front end, CORS fields added to
//! answers whoever made them (a worker, the job service), nothing changed when CORS is
//! not configured, and `OPTIONS *`.

#[path = "http_common/mod.rs"]
mod common;

use common::{http_config, request, Client, HttpResponse, TestServer};
use prime_server::jobs::JobsConfig;
use prime_server::server::{CorsConfig, ServerConfig};

const APP: &str = "http://app.test";

fn cors_config(origins: &[&str], credentials: bool) -> ServerConfig {
    let mut cors = CorsConfig::new(origins.iter().copied());
    cors.credentials = credentials;
    let mut config = http_config();
    config.cors = Some(cors);
    config
}

fn preflight(client: &mut Client, origin: &str) -> HttpResponse {
    request(
        client,
        "OPTIONS",
        "/hello",
        &[
            &format!("Origin: {origin}"),
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: prefer, content-type",
        ],
    )
}

fn assert_no_cors(response: &HttpResponse) {
    for name in [
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Access-Control-Allow-Credentials",
        "Access-Control-Expose-Headers",
        "Access-Control-Max-Age",
    ] {
        assert_eq!(response.header(name), None, "{name} in {response:?}");
    }
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_by_the_front_end() {
    let server = TestServer::echo(cors_config(&[APP, "http://other.test"], false));
    let mut client = server.connect();
    let response = preflight(&mut client, APP);
    assert_eq!(response.status, 204, "{response:?}");
    assert_eq!(response.header("Access-Control-Allow-Origin"), Some(APP));
    let methods = response.header("Access-Control-Allow-Methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = response.header("Access-Control-Allow-Headers").unwrap();
    assert!(
        headers.contains("Prefer") && headers.contains("Content-Type"),
        "{headers}"
    );
    assert_eq!(response.header("Access-Control-Max-Age"), Some("600"));
    assert_eq!(response.header("Access-Control-Allow-Credentials"), None);
    assert_eq!(response.header("Vary"), Some("Origin"));
    // The connection goes on.
    let after = request(&mut client, "GET", "/hello", &[]);
    assert_eq!(after.status, 200);
}

#[test]
fn a_preflight_from_another_origin_gets_no_cors_fields() {
    let server = TestServer::echo(cors_config(&[APP], false));
    let mut client = server.connect();
    let response = preflight(&mut client, "http://evil.test");
    assert_eq!(response.status, 204, "{response:?}");
    assert_no_cors(&response);
}

#[test]
fn pipeline_answers_for_an_allowed_origin_carry_the_cors_fields() {
    let server = TestServer::echo(cors_config(&[APP], false));
    let mut client = server.connect();
    // Three pipelined requests in one write: allowed origin, no origin, another origin.
    client.send(format!(
        "GET /a HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\nGET /c HTTP/1.1\r\nHost: t\r\nOrigin: http://evil.test\r\n\r\n"
    ));
    let allowed = client.read_response();
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(allowed.header("Vary"), Some("Origin"));
    assert_eq!(
        allowed.header("Access-Control-Expose-Headers"),
        Some("Location, Retry-After")
    );
    // The worker's answer is otherwise whole.
    assert_eq!(allowed.json()["path"], "/a");
    assert_eq!(allowed.header("Content-Type"), Some("application/json"));
    let plain = client.read_response();
    assert_eq!(plain.json()["path"], "/b");
    assert_no_cors(&plain);
    let other = client.read_response();
    assert_eq!(other.json()["path"], "/c");
    assert_no_cors(&other);
}

#[test]
fn a_job_accepted_for_an_allowed_origin_exposes_its_location() {
    let dir = common::scratch_dir("cors", "job");
    let mut config = cors_config(&[APP], false);
    config.jobs = Some(JobsConfig::new(dir.join("jobs.sqlite")));
    let server = TestServer::echo(config);
    let mut client = server.connect();
    let origin = format!("Origin: {APP}");
    let accepted = request(
        &mut client,
        "POST",
        "/hello",
        &["Prefer: respond-async", &origin, "Content-Length: 0"],
    );
    assert_eq!(accepted.status, 202, "{accepted:?}");
    assert_eq!(accepted.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(
        accepted.header("Access-Control-Expose-Headers"),
        Some("Location, Retry-After")
    );
    let location = accepted.header("Location").unwrap().to_string();
    let status = request(&mut client, "GET", &location, &[&origin]);
    assert!(matches!(status.status, 200 | 303), "{status:?}");
    assert_eq!(status.header("Access-Control-Allow-Origin"), Some(APP));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_credentials_a_listed_origin_is_echoed_and_without_any_origin_is_a_star() {
    let server = TestServer::echo(cors_config(&[APP], true));
    let mut client = server.connect();
    let response = request(&mut client, "GET", "/x", &[&format!("Origin: {APP}")]);
    assert_eq!(response.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(
        response.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    let preflight = preflight(&mut client, APP);
    assert_eq!(preflight.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(
        preflight.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    drop(client);
    drop(server);
    let origin = "http://anywhere.test";
    let server = TestServer::echo(cors_config(&["*"], false));
    let mut client = server.connect();
    let response = request(&mut client, "GET", "/x", &[&format!("Origin: {origin}")]);
    assert_eq!(response.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(response.header("Access-Control-Allow-Credentials"), None);
}

#[test]
fn any_origin_with_credentials_is_refused_at_start() {
    // The Fetch standard forbids `*` with credentials; echoing every origin instead
    // would hand every site the user's cookies.
    let ctx = zmq::Context::new();
    let refused = prime_server::Pipeline::new()
        .stage("echo", 1, prime_server::demo::echo)
        .bind_server(&ctx, cors_config(&["*"], true));
    let Err(error) = refused else {
        panic!("a front end started with `*` and credentials");
    };
    let message = error.to_string();
    assert!(
        message.contains("credentials") && message.contains('*'),
        "{message}"
    );
}

/// The front end's own refusals, each after an `Origin` line (a refusal the front end
/// makes before or after reading the whole head).
fn own_refusals(origin: &str) -> Vec<(String, u16)> {
    let many: String = (0..120).map(|i| format!("X-F{i}: v\r\n")).collect();
    vec![
        // A malformed header line after the Origin: the head is never parsed.
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nBad Line\r\n\r\n"),
            400,
        ),
        // A chunk-size line the decoder refuses, in the body.
        (
            format!("POST / HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400,
        ),
        // A declared body over the limit.
        (
            format!("POST / HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nContent-Length: 999999999999\r\n\r\n"),
            413,
        ),
        // More header fields than the limit (100), the Origin among the first.
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n{many}\r\n"),
            431,
        ),
    ]
}

#[test]
fn the_front_ends_own_refusals_to_an_allowed_origin_carry_the_cors_fields() {
    let server = TestServer::echo(cors_config(&[APP], false));
    for (bad, status) in own_refusals(APP) {
        let mut client = server.connect();
        client.send(&bad);
        let response = client.read_response();
        assert_eq!(response.status, status, "{response:?}");
        response.assert_error(status);
        assert_eq!(
            response.header("Access-Control-Allow-Origin"),
            Some(APP),
            "{status}: {response:?}"
        );
        assert_eq!(response.header("Vary"), Some("Origin"), "{response:?}");
        assert_eq!(
            response.header("Access-Control-Expose-Headers"),
            Some("Location, Retry-After")
        );
    }
    // From another origin the same refusals carry `Vary: Origin` and nothing else.
    for (bad, status) in own_refusals("http://evil.test") {
        let mut client = server.connect();
        client.send(&bad);
        let response = client.read_response();
        assert_eq!(response.status, status, "{response:?}");
        assert_no_cors(&response);
        assert_eq!(response.header("Vary"), Some("Origin"), "{response:?}");
    }
}

#[test]
fn a_408_for_a_slow_head_from_an_allowed_origin_carries_the_cors_fields() {
    let mut config = cors_config(&[APP], false);
    config.header_timeout = std::time::Duration::from_millis(300);
    let server = TestServer::echo(config);
    let mut client = server.connect();
    // The head never ends.
    client.send(format!("GET / HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\n"));
    let response = client.read_response();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(response.header("Vary"), Some("Origin"));
}

#[test]
fn a_503_for_too_many_pipelined_requests_carries_the_cors_fields() {
    use common::{text_reply, Latch, WAIT};
    let release = Latch::default();
    let held = release.clone();
    let pipeline =
        prime_server::Pipeline::new().stage("held", 1, move |job: &mut prime_server::Job<'_>| {
            held.wait(WAIT);
            text_reply(job, "done")
        });
    let mut config = cors_config(&[APP], false);
    config.max_pipelined = 1;
    let server = TestServer::start(pipeline, config);
    let mut client = server.connect();
    let one = format!("GET /a HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\n\r\n");
    client.send(format!("{one}{one}"));
    release.open();
    let first = client.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("Access-Control-Allow-Origin"), Some(APP));
    let refused = client.read_response();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(refused.header("Vary"), Some("Origin"));
}

#[test]
fn with_cors_configured_every_answer_varies_on_origin() {
    let mut config = cors_config(&[APP], false);
    config.health_path = Some("/health".into());
    let server = TestServer::echo(config);
    let mut client = server.connect();
    let cases: [(&str, &str, &[&str]); 5] = [
        ("GET", "/no-origin", &[]),
        ("GET", "/other", &["Origin: http://evil.test"]),
        ("GET", "/health", &[]),
        ("OPTIONS", "*", &[]),
        ("GET", "/allowed", &["Origin: http://app.test"]),
    ];
    for (method, target, headers) in cases {
        let response = request(&mut client, method, target, headers);
        assert_eq!(response.status, 200, "{target}: {response:?}");
        assert_eq!(
            response.header("Vary"),
            Some("Origin"),
            "{target}: {response:?}"
        );
    }
    let preflight = preflight(&mut client, "http://evil.test");
    assert_eq!(preflight.header("Vary"), Some("Origin"));
    // A refusal without any Origin.
    let mut client = server.connect();
    client.send("GET / HTTP/1.1\r\nHost: t\r\nBad Line\r\n\r\n");
    let response = client.read_response();
    response.assert_error(400);
    assert_eq!(response.header("Vary"), Some("Origin"));
}

#[test]
fn unconfigured_nothing_changes() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    // A preflight goes to the pipeline like any request.
    let response = preflight(&mut client, APP);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["method"], "OPTIONS");
    assert_no_cors(&response);
    let response = request(&mut client, "GET", "/x", &[&format!("Origin: {APP}")]);
    assert_eq!(response.status, 200);
    assert_no_cors(&response);
    assert_eq!(response.header("Vary"), None);
}

#[test]
fn options_star_is_answered_by_the_front_end_with_the_methods() {
    for config in [http_config(), cors_config(&[APP], false)] {
        let server = TestServer::echo(config);
        let mut client = server.connect();
        let response = request(&mut client, "OPTIONS", "*", &[]);
        assert_eq!(response.status, 200, "{response:?}");
        let allow = response.header("Allow").expect("an Allow field");
        for method in ["GET", "HEAD", "POST", "DELETE", "OPTIONS"] {
            assert!(allow.contains(method), "{allow}");
        }
        assert_eq!(response.header("Content-Length"), Some("0"));
        assert!(response.body.is_empty());
    }
}

#[test]
fn a_streamed_answer_for_an_allowed_origin_carries_the_cors_fields_in_its_head() {
    use prime_server::stages::{HttpJob, Next, StageError};
    use std::io::{Read, Write};
    let pipeline = prime_server::Pipeline::new().http_stage("stream", 1, |job: &mut HttpJob| {
        let fail =
            |e: prime_server::pipeline::stream::StreamError| StageError::internal(e.to_string());
        let mut stream = job
            .stream(&prime_server::http::Response::new(200).header("Content-Type", "text/plain"))
            .map_err(fail)?;
        stream.send(b"one\n").map_err(fail)?;
        stream.send(b"two\n").map_err(fail)?;
        stream.finish().map_err(fail)?;
        Ok(Next::Abandon)
    });
    let server = TestServer::start(pipeline, cors_config(&[APP], false));
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    stream
        .write_all(format!("GET /s HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\n\r\n").as_bytes())
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while common::find(&bytes, b"0\r\n\r\n").is_none() {
        let n = stream.read(&mut buf).expect("the streamed answer");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&bytes);
    let head_end = text.find("\r\n\r\n").unwrap();
    let head = &text[..head_end];
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        head.contains(&format!("Access-Control-Allow-Origin: {APP}")),
        "{text}"
    );
    assert!(
        text[head_end..].contains("one\n") && text.contains("two\n"),
        "{text}"
    );
}
