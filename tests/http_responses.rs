//! What every response carries, whoever made it: Content-Length, Date and Server; and a
//! JSON body for errors.

#[path = "http_common/mod.rs"]
mod common;

use common::{get, http_config, request_of, text_reply, HttpResponse, TestServer, WAIT};
use prime_server::{Job, Pipeline};
use std::time::{Duration, Instant};

#[test]
fn worker_responses_carry_the_standard_headers() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    let response = client.get("/x");
    assert_eq!(response.status, 200);
    response.assert_standard_headers();
    client.send("GET /x HTTP/1.0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.version, "HTTP/1.0");
    response.assert_standard_headers();
}

#[test]
fn front_end_responses_carry_the_standard_headers_and_json_errors() {
    let mut config = http_config();
    config.health_path = Some("/health".into());
    config.limits.max_body = 10;
    let server = TestServer::echo(config);
    let cases: [(&str, u16); 6] = [
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n",
            413,
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: br, chunked\r\n\r\n",
            501,
        ),
        ("GET / HTTP/1.1\r\nHost: t\r\nX: \x7f\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX-Long: 1\r\n\r\n", 0),
    ];
    for (request, status) in cases {
        let mut client = server.connect();
        client.send(request);
        let response = client.read_response();
        if status == 0 {
            assert_eq!(response.status, 200, "{response:?}");
            response.assert_standard_headers();
        } else {
            response.assert_error(status);
        }
    }
    let response = server.connect().get("/health");
    assert_eq!(response.status, 200);
    response.assert_standard_headers();
    assert_eq!(response.json()["status"], "ok");
}

#[test]
fn timeouts_and_panics_carry_the_standard_headers_and_json_errors() {
    let stage = |job: &mut Job<'_>| {
        let path = request_of(job).path;
        match path.as_str() {
            "/panic" => panic!("a stage that fails (expected in this test)"),
            "/sleep" => {
                let give_up = Instant::now() + WAIT;
                while !job.interrupted() && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(5));
                }
                text_reply(job, "late")
            }
            _ => text_reply(job, path),
        }
    };
    let mut config = http_config();
    config.request_timeout = Duration::from_secs(1);
    config.header_timeout = Duration::from_secs(1);
    let server = TestServer::start(Pipeline::new().stage("odd", 2, stage), config);
    let mut client = server.connect();
    let response = client.get("/panic");
    response.assert_error(500);
    let response = client.get("/sleep");
    response.assert_error(504);
    let response = client.get("/fine");
    assert_eq!(response.status, 200);
    response.assert_standard_headers();
    // 408 for a head that never ends.
    let mut slow = server.connect();
    slow.send("GET / HTTP/1.1\r\nHo");
    slow.read_response().assert_error(408);
}

#[test]
fn head_responses_carry_the_standard_headers() {
    let server = TestServer::echo(http_config());
    let mut client = server.connect();
    client.send(format!(
        "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n{}",
        get("/after")
    ));
    let response: HttpResponse = client.read_head_response();
    response.assert_standard_headers();
    assert_eq!(client.read_response().json()["target"], "/after");
}

#[test]
fn the_health_and_status_paths_answer_get_and_head_only() {
    let mut config = http_config();
    config.health_path = Some("/health".into());
    config.status_path = Some("/status".into());
    let server = TestServer::echo(config);
    let mut client = server.connect();
    for path in ["/health", "/status"] {
        assert_eq!(client.get(path).status, 200, "GET {path}");
        client.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!(client.read_head_response().status, 200, "HEAD {path}");
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PURGE"] {
            client.send(format!(
                "{method} {path}?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
            ));
            let response = client.read_response();
            response.assert_error(405);
            assert_eq!(
                response.header("Allow"),
                Some("GET, HEAD"),
                "{method} {path}"
            );
            assert!(!response.says_close(), "{method} {path}: {response:?}");
        }
    }
    // Other paths still reach the stage, whatever the method.
    client.send("POST /healthy HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(client.read_response().json()["method"], "POST");
}
