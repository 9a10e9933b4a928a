//! Stages written against the `stage` API: routing by stage name (skipping stages and
//! cycling back), typed errors, and forwarding to a stage that does not exist.

use prime_server::pipeline::loopback::FailureKind;
use prime_server::server::AskError;
use prime_server::stages::{HttpJob, Next, StageError};
use prime_server::Pipeline;

/// Starts `pipeline`, asks it one raw request, stops it, and returns the answer.
fn ask_once(pipeline: Pipeline, request: &[u8]) -> Result<Vec<u8>, AskError> {
    let ctx = zmq::Context::new();
    let (running, front) = pipeline.start(&ctx).expect("the pipeline starts");
    let answer = front.ask(request);
    running.stop();
    answer
}

fn text(answer: Result<Vec<u8>, AskError>) -> String {
    String::from_utf8(answer.expect("an answer, not a failure")).expect("UTF-8")
}

#[test]
fn a_stage_can_skip_the_next_stage_by_name() {
    let first = |_: &mut HttpJob| Ok(Next::to("third", "from the first stage"));
    let second = |_: &mut HttpJob| -> Result<Next, StageError> {
        Err(StageError::internal("the second stage must be skipped"))
    };
    let third = |job: &mut HttpJob| {
        let payload = job.intermediate().unwrap_or_default().to_vec();
        Ok(Next::respond(
            prime_server::http::Response::new(200).body(payload),
        ))
    };
    let pipeline = Pipeline::new()
        .http_stage("first", 1, first)
        .http_stage("second", 1, second)
        .http_stage("third", 1, third);
    assert_eq!(text(ask_once(pipeline, b"go")), "from the first stage");
}

#[test]
fn a_stage_can_send_work_back_to_itself_until_it_is_done() {
    let iterate = |job: &mut HttpJob| {
        let rounds: u32 = job.intermediate_json().unwrap_or(0);
        if rounds < 5 {
            return Next::to_json("iterate", &(rounds + 1));
        }
        let body = format!("{rounds} rounds on {:?}", job.request()?.body);
        Ok(Next::respond(
            prime_server::http::Response::new(200).body(body),
        ))
    };
    let pipeline = Pipeline::new().http_stage("iterate", 2, iterate);
    assert_eq!(text(ask_once(pipeline, b"x")), "5 rounds on [120]");
}

#[test]
fn a_stage_error_becomes_its_status_and_a_json_body() {
    let refuse = |_: &mut HttpJob| -> Result<Next, StageError> {
        Err(StageError::method_not_allowed("GET", "only GET here"))
    };
    let body = text(ask_once(
        Pipeline::new().http_stage("refuse", 1, refuse),
        b"x",
    ));
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(json["status"], 405);
    assert_eq!(json["error"], "only GET here");
    let response = StageError::method_not_allowed("GET", "only GET here").to_response();
    assert_eq!(response.status, 405);
    assert!(response
        .headers
        .iter()
        .any(|(name, value)| name == "Allow" && value == "GET"));
}

#[test]
fn forwarding_to_an_unknown_stage_fails_that_request_only() {
    let lost = |job: &mut HttpJob| {
        if job.request()?.body == b"lost" {
            Ok(Next::to("nowhere", "x"))
        } else {
            Ok(Next::respond(
                prime_server::http::Response::new(200).body("found"),
            ))
        }
    };
    let ctx = zmq::Context::new();
    let (running, front) = Pipeline::new()
        .http_stage("lost", 1, lost)
        .start(&ctx)
        .expect("the pipeline starts");
    match front.ask(b"lost") {
        Err(AskError::Failed(failure)) => {
            assert_eq!(failure.kind, FailureKind::WorkerPanicked);
            assert_eq!(failure.status, 500);
            assert!(failure.detail.contains("nowhere"), "{failure:?}");
        }
        other => panic!("expected a 500 failure, got {other:?}"),
    }
    assert_eq!(text(front.ask(b"again")), "found");
    running.stop();
}
