//! The JSON-RPC 2.0 path over real sockets: every example of the specification's §7
//! as a test vector, a batch whose calls run in parallel, answer order with
//! pipelining, interrupts when the client leaves, stage errors as error codes, the
//! prime demo's `is_prime`, and a Python client library from the package index.

#[path = "http_common/mod.rs"]
mod common;
#[path = "tools/mod.rs"]
mod tools;

use common::{http_config, primes_pipeline, Client, HttpResponse, Latch, TestServer};
use prime_server::http::Response;
use prime_server::jobs::JobsConfig;
use prime_server::server::ServerConfig;
use prime_server::stages::tasks::TaskRouter;
use prime_server::stages::{HttpJob, HttpWork, Next, StageError};
use prime_server::Pipeline;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How many calls of `meet` a batch sends: each waits until all have arrived.
const MEETING: usize = 4;

/// The test stage: the methods of the specification's examples, and a few that show
/// parallelism, order and interrupts.
#[derive(Clone, Default)]
struct Methods {
    /// Notifications run (`update`, `notify_hello`, `notify_sum`).
    notified: Arc<AtomicUsize>,
    /// `meet` calls arrived so far, and the wait for the rest.
    meeting: Arc<(Mutex<usize>, Condvar)>,
    /// `wait_latch` waits until `open_latch` opens it.
    latch: Latch,
    /// Set by `until_interrupted` when it starts, and when it sees its interrupt.
    started: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
}

impl Methods {
    /// Arrives at the meeting and waits (bounded) for all [`MEETING`] calls: true only
    /// if they all ran at once.
    fn meet(&self) -> bool {
        let (lock, all_here) = &*self.meeting;
        let mut here = lock.lock().unwrap_or_else(|e| e.into_inner());
        *here += 1;
        all_here.notify_all();
        let (here, _) = all_here
            .wait_timeout_while(here, Duration::from_secs(5), |here| *here < MEETING)
            .unwrap_or_else(|e| e.into_inner());
        *here >= MEETING
    }
}

fn numbers(params: &Option<Value>) -> Result<Vec<i64>, StageError> {
    match params {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| StageError::bad_request("numbers only"))
            })
            .collect(),
        _ => Err(StageError::bad_request("give a list of numbers")),
    }
}

impl HttpWork for Methods {
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        let method = job
            .jsonrpc_method()
            .ok_or_else(|| StageError::bad_request("not a JSON-RPC call"))?
            .to_string();
        let params = job.jsonrpc_params();
        let result = match method.as_str() {
            "subtract" => match &params {
                Some(Value::Object(named)) => {
                    let minuend = named.get("minuend").and_then(Value::as_i64);
                    let subtrahend = named.get("subtrahend").and_then(Value::as_i64);
                    match (minuend, subtrahend) {
                        (Some(m), Some(s)) => json!(m - s),
                        _ => return Err(StageError::bad_request("minuend and subtrahend")),
                    }
                }
                _ => match numbers(&params)?[..] {
                    [m, s] => json!(m - s),
                    _ => return Err(StageError::bad_request("two numbers")),
                },
            },
            "sum" => json!(numbers(&params)?.iter().sum::<i64>()),
            "get_data" => json!(["hello", 5]),
            "update" | "notify_hello" | "notify_sum" => {
                self.notified.fetch_add(1, Ordering::SeqCst);
                Value::Null
            }
            "meet" => json!(self.meet()),
            "wait_latch" => json!(self.latch.wait(Duration::from_secs(10))),
            "open_latch" => {
                self.latch.open();
                json!("opened")
            }
            "until_interrupted" => {
                self.started.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !job.interrupted() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.interrupted.store(job.interrupted(), Ordering::SeqCst);
                return Ok(Next::Abandon);
            }
            "fail" => {
                let status = params
                    .as_ref()
                    .and_then(|p| p.get("status"))
                    .and_then(Value::as_u64)
                    .unwrap_or(500) as u16;
                return Err(StageError::new(status, "failed on purpose"));
            }
            "text" => return Ok(Next::respond(Response::new(200).body("plain words"))),
            _ => return Err(StageError::not_found("no such method here")),
        };
        Ok(Next::respond(Response::json(200, &result)))
    }
}

const METHODS: [&str; 12] = [
    "subtract",
    "sum",
    "get_data",
    "update",
    "notify_hello",
    "notify_sum",
    "meet",
    "wait_latch",
    "open_latch",
    "until_interrupted",
    "fail",
    "text",
];

/// A front end with `/rpc`, whose task table sends every method of [`METHODS`] to the
/// `rpc` stage (of [`MEETING`] workers); other names are unknown.
fn server(methods: &Methods) -> TestServer {
    server_with(methods, http_config())
}

/// [`server`] with `config` (its JSON-RPC path set to `/rpc`).
fn server_with(methods: &Methods, mut config: ServerConfig) -> TestServer {
    let router = METHODS
        .iter()
        .fold(TaskRouter::new(), |router, m| router.task(m, "rpc"));
    let pipeline = Pipeline::new()
        .http_stage("rpc", MEETING, methods.clone())
        .route_tasks(router);
    config.jsonrpc_path = Some("/rpc".into());
    TestServer::start(pipeline, config)
}

/// POSTs `body` to `/rpc` and reads the answer.
fn post(client: &mut Client, body: &str) -> HttpResponse {
    client.send(post_bytes(body));
    client.read_response()
}

fn post_bytes(body: &str) -> String {
    format!(
        "POST /rpc HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Asserts that `body` is answered with `expected` (JSON), or with nothing (`None`:
/// `204`, no body).
fn vector(client: &mut Client, body: &str, expected: Option<&str>) {
    let response = post(client, body);
    match expected {
        Some(expected) => {
            assert_eq!(response.status, 200, "{body}: {response:?}");
            let expected: Value = serde_json::from_str(expected).expect("expected JSON");
            assert_eq!(response.json(), expected, "{body}");
        }
        None => {
            assert_eq!(response.status, 204, "{body}: {response:?}");
            assert!(response.body.is_empty(), "{body}: {response:?}");
        }
    }
}

#[test]
fn every_example_of_the_specification() {
    let methods = Methods::default();
    let server = server(&methods);
    let mut client = server.connect();
    // rpc call with positional parameters
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#,
        Some(r#"{"jsonrpc": "2.0", "result": 19, "id": 1}"#),
    );
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#,
        Some(r#"{"jsonrpc": "2.0", "result": -19, "id": 2}"#),
    );
    // rpc call with named parameters
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#,
        Some(r#"{"jsonrpc": "2.0", "result": 19, "id": 3}"#),
    );
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#,
        Some(r#"{"jsonrpc": "2.0", "result": 19, "id": 4}"#),
    );
    // a Notification
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#,
        None,
    );
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "foobar"}"#,
        None,
    );
    // rpc call of non-existent method
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#,
        Some(
            r#"{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}"#,
        ),
    );
    // rpc call with invalid JSON
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
        Some(
            r#"{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}"#,
        ),
    );
    // rpc call with invalid Request object
    vector(
        &mut client,
        r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
        Some(
            r#"{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}"#,
        ),
    );
    // rpc call Batch, invalid JSON
    vector(
        &mut client,
        r#"[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]"#,
        Some(
            r#"{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}"#,
        ),
    );
    // rpc call with an empty Array
    vector(
        &mut client,
        "[]",
        Some(
            r#"{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}"#,
        ),
    );
    // rpc call with an invalid Batch (but not empty)
    vector(
        &mut client,
        "[1]",
        Some(
            r#"[{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}]"#,
        ),
    );
    // rpc call with invalid Batch
    vector(
        &mut client,
        "[1,2,3]",
        Some(
            r#"[
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}
]"#,
        ),
    );
    // rpc call Batch
    vector(
        &mut client,
        r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#,
        Some(
            r#"[
        {"jsonrpc": "2.0", "result": 7, "id": "1"},
        {"jsonrpc": "2.0", "result": 19, "id": "2"},
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
        {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    ]"#,
        ),
    );
    // rpc call Batch (all notifications)
    vector(
        &mut client,
        r#"[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]"#,
        None,
    );
    // The notifications ran, though nobody heard of them: update, notify_hello twice,
    // notify_sum (foobar names no stage).
    assert!(
        common::wait_for(|| methods.notified.load(Ordering::SeqCst) == 4),
        "{} notifications ran",
        methods.notified.load(Ordering::SeqCst)
    );
}

#[test]
fn the_calls_of_a_batch_run_at_once() {
    let methods = Methods::default();
    let server = server(&methods);
    let calls: Vec<Value> = (0..MEETING)
        .map(|id| json!({"jsonrpc": "2.0", "method": "meet", "id": id}))
        .collect();
    let response = post(&mut server.connect(), &Value::Array(calls).to_string());
    assert_eq!(response.status, 200, "{response:?}");
    // Each call waited for all the others to arrive: only calls running at the same
    // time, on different workers, all see the meeting complete.
    let expected: Vec<Value> = (0..MEETING)
        .map(|id| json!({"jsonrpc": "2.0", "result": true, "id": id}))
        .collect();
    assert_eq!(response.json(), Value::Array(expected));
}

#[test]
fn a_batch_submitted_as_a_job_has_the_gathered_array_as_its_result() {
    let methods = Methods::default();
    let mut config = http_config();
    let db = common::scratch_dir("jsonrpc", "async").join("jobs.sqlite");
    config.jobs = Some(JobsConfig::new(db));
    let server = server_with(&methods, config);
    let mut client = server.connect();
    let mut calls: Vec<Value> = (0..MEETING)
        .map(|id| json!({"jsonrpc": "2.0", "method": "meet", "id": id}))
        .collect();
    calls.push(json!({"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": "s"}));
    calls.push(json!({"jsonrpc": "2.0", "method": "notify_hello"}));
    calls.push(json!({"foo": "boo"}));
    let body = Value::Array(calls).to_string();
    client.send(format!(
        "POST /rpc HTTP/1.1\r\nHost: test\r\nPrefer: respond-async\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let accepted = client.read_response();
    assert_eq!(accepted.status, 202, "{}", accepted.body_str());
    let location = accepted.header("Location").expect("a Location").to_string();
    let deadline = Instant::now() + common::WAIT;
    loop {
        client.send(format!(
            "GET {location}?wait=5 HTTP/1.1\r\nHost: test\r\n\r\n"
        ));
        let status = client.read_response();
        if status.status == 303 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ended: {}",
            status.body_str()
        );
    }
    client.send(format!(
        "GET {location}/result HTTP/1.1\r\nHost: test\r\n\r\n"
    ));
    let result = client.read_response();
    assert_eq!(result.status, 200, "{}", result.body_str());
    // The calls ran at once as in a synchronous batch (each met all the others), and
    // the job's result is the gathered array in request order.
    let mut expected: Vec<Value> = (0..MEETING)
        .map(|id| json!({"jsonrpc": "2.0", "result": true, "id": id}))
        .collect();
    expected.push(json!({"jsonrpc": "2.0", "result": 3, "id": "s"}));
    expected.push(json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}));
    assert_eq!(result.json(), Value::Array(expected));
}

#[test]
fn cancelling_a_batch_job_interrupts_its_calls() {
    let methods = Methods::default();
    let mut config = http_config();
    let db = common::scratch_dir("jsonrpc", "cancel").join("jobs.sqlite");
    config.jobs = Some(JobsConfig::new(db));
    let server = server_with(&methods, config);
    let mut client = server.connect();
    let body = r#"[{"jsonrpc": "2.0", "method": "until_interrupted", "id": 1}]"#;
    client.send(format!(
        "POST /rpc HTTP/1.1\r\nHost: test\r\nPrefer: respond-async\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let accepted = client.read_response();
    assert_eq!(accepted.status, 202, "{}", accepted.body_str());
    let location = accepted.header("Location").expect("a Location").to_string();
    assert!(common::wait_for(|| methods.started.load(Ordering::SeqCst)));
    client.send(format!("DELETE {location} HTTP/1.1\r\nHost: test\r\n\r\n"));
    assert_eq!(client.read_response().json()["state"], "cancelled");
    assert!(
        common::wait_for(|| methods.interrupted.load(Ordering::SeqCst)),
        "the call never heard its job was cancelled"
    );
}

#[test]
fn pipelined_batches_are_answered_in_request_order() {
    let methods = Methods::default();
    let server = server(&methods);
    let mut client = server.connect();
    // The first call can only end once the second request's call has run: answers
    // come back out of order, and leave in order.
    let first = r#"[{"jsonrpc": "2.0", "method": "wait_latch", "id": "first"}]"#;
    let second = r#"{"jsonrpc": "2.0", "method": "open_latch", "id": "second"}"#;
    client.send(format!("{}{}", post_bytes(first), post_bytes(second)));
    assert_eq!(
        client.read_response().json(),
        json!([{"jsonrpc": "2.0", "result": true, "id": "first"}])
    );
    assert_eq!(
        client.read_response().json(),
        json!({"jsonrpc": "2.0", "result": "opened", "id": "second"})
    );
}

#[test]
fn a_client_that_leaves_interrupts_its_calls() {
    let methods = Methods::default();
    let server = server(&methods);
    let mut client = server.connect();
    client.send(post_bytes(
        r#"[{"jsonrpc": "2.0", "method": "until_interrupted", "id": 1}, {"jsonrpc": "2.0", "method": "get_data", "id": 2}]"#,
    ));
    assert!(common::wait_for(|| methods.started.load(Ordering::SeqCst)));
    client.reset();
    assert!(
        common::wait_for(|| methods.interrupted.load(Ordering::SeqCst)),
        "the call never heard its client had gone"
    );
}

#[test]
fn stage_answers_become_results_and_errors() {
    let methods = Methods::default();
    let server = server(&methods);
    let mut client = server.connect();
    let batch = json!([
        {"jsonrpc": "2.0", "method": "subtract", "params": ["a"], "id": 1},
        {"jsonrpc": "2.0", "method": "fail", "params": {"status": 503}, "id": 2},
        {"jsonrpc": "2.0", "method": "fail", "params": {"status": 500}, "id": 3},
        {"jsonrpc": "2.0", "method": "fail", "params": {"status": 404}, "id": 4},
        {"jsonrpc": "2.0", "method": "text", "id": null},
        {"jsonrpc": "2.0", "method": "bad\u{1}name", "id": 6},
    ]);
    let answers = post(&mut client, &batch.to_string()).json();
    assert_eq!(
        answers,
        json!([
            {"jsonrpc": "2.0", "error": {"code": -32602, "message": "numbers only"}, "id": 1},
            {"jsonrpc": "2.0", "error": {"code": -32000, "message": "failed on purpose", "data": {"status": 503}}, "id": 2},
            {"jsonrpc": "2.0", "error": {"code": -32603, "message": "failed on purpose"}, "id": 3},
            {"jsonrpc": "2.0", "error": {"code": -32601, "message": "failed on purpose"}, "id": 4},
            {"jsonrpc": "2.0", "result": "plain words", "id": null},
            {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 6},
        ])
    );
    // A notification runs beside members answered at once.
    let answers = post(
        &mut client,
        r#"[{"foo": "boo"}, {"jsonrpc": "2.0", "method": "notify_hello"}]"#,
    )
    .json();
    assert_eq!(
        answers,
        json!([{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}])
    );
    assert!(common::wait_for(
        || methods.notified.load(Ordering::SeqCst) == 1
    ));
    // Only POST.
    client.send("GET /rpc HTTP/1.1\r\nHost: test\r\n\r\n");
    let refused = client.read_response();
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("Allow"), Some("POST"));
}

#[test]
fn a_batch_holds_at_most_max_pipelined_calls() {
    let methods = Methods::default();
    let mut config = http_config();
    config.max_pipelined = 4;
    let server = server_with(&methods, config);
    let calls: Vec<Value> = (0..5)
        .map(|id| json!({"jsonrpc": "2.0", "method": "get_data", "id": id}))
        .collect();
    let answer = post(&mut server.connect(), &Value::Array(calls).to_string()).json();
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    assert_eq!(answer["error"]["data"], json!({"status": 413}), "{answer}");
    assert_eq!(answer["id"], Value::Null);
}

#[test]
fn a_batch_whose_answers_pass_the_output_bound_is_answered_with_one_error() {
    let methods = Methods::default();
    let mut config = http_config();
    config.max_output_bytes = 300;
    let server = server_with(&methods, config);
    // Each answer is about 50 bytes: 10 of them pass 300.
    let calls: Vec<Value> = (0..10)
        .map(|id| json!({"jsonrpc": "2.0", "method": "get_data", "id": id}))
        .collect();
    let answer = post(&mut server.connect(), &Value::Array(calls).to_string()).json();
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("300 bytes")),
        "{answer}"
    );
}

#[test]
fn the_prime_demo_answers_is_prime() {
    let mut config = http_config();
    config.jsonrpc_path = Some("/rpc".into());
    let server = TestServer::start(primes_pipeline(), config);
    let mut client = server.connect();
    vector(
        &mut client,
        r#"{"jsonrpc":"2.0","method":"is_prime","params":{"n":97},"id":1}"#,
        Some(r#"{"jsonrpc":"2.0","result":{"is_prime":true,"possible_prime":97},"id":1}"#),
    );
    let answers = post(
        &mut client,
        r#"[{"jsonrpc":"2.0","method":"is_prime","params":[91],"id":"a"},
            {"jsonrpc":"2.0","method":"is_prime","params":{"n":-1},"id":"b"},
            {"jsonrpc":"2.0","method":"is_odd","params":[3],"id":"c"}]"#,
    )
    .json();
    assert_eq!(
        answers[0]["result"],
        json!({"is_prime": false, "possible_prime": 91})
    );
    assert_eq!(answers[1]["error"]["code"], -32602, "{answers}");
    assert_eq!(answers[2]["error"]["code"], -32601, "{answers}");
    // Beside its HTTP route.
    assert_eq!(client.get("/is_prime?possible_prime=97").status, 200);
}

#[test]
fn a_python_client_library_talks_to_it() {
    let mut config = http_config();
    config.jsonrpc_path = Some("/rpc".into());
    let server = TestServer::start(primes_pipeline(), config);
    let script = r#"
import sys, requests
from jsonrpcclient import request, parse, Ok, Error
url = sys.argv[1]
answer = parse(requests.post(url, json=request("is_prime", params={"n": 97}), timeout=20).json())
assert isinstance(answer, Ok), answer
print("97", answer.result["is_prime"])
answer = parse(requests.post(url, json=request("is_prime", params=[91]), timeout=20).json())
print("91", answer.result["is_prime"])
answer = parse(requests.post(url, json=request("no_such_method"), timeout=20).json())
assert isinstance(answer, Error), answer
print("error", answer.code)
batch = [request("is_prime", params=[n]) for n in (2, 4, 7)]
answers = parse(requests.post(url, json=batch, timeout=20).json())
print("batch", [a.result["is_prime"] for a in answers])
"#;
    let output = std::process::Command::new(tools::python())
        .arg("-c")
        .arg(script)
        .arg(format!("http://{}/rpc", server.addr()))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "97 True\n91 False\nerror -32601\nbatch [True, False, True]\n"
    );
}
