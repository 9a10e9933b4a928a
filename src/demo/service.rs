//! The demo services: the prime checker's `parse` and `compute` stages behind
//! `prime_serverd` (its HTTP service and its simulation mode) and the `echo` stage behind
//! `prime_echod`.
//!
//! Requests come in three protocols, told apart by the envelope:
//! - HTTP: `GET /is_prime?possible_prime=N` or `POST /is_prime` with N as the body,
//!   answered with JSON such as `{"possible_prime":7,"is_prime":true}`; and, behind a
//!   front end with a JSON-RPC path, the method [`IS_PRIME_METHOD`] (`{"jsonrpc":
//!   "2.0", "method": "is_prime", "params": {"n": 97}, "id": 1}`, or `"params": [97]`),
//!   whose `result` is that same JSON;
//! - netstrings: the payload is N in decimal, the answer the same JSON in a netstring;
//! - raw (the simulation mode): the frame is N in decimal, the answer one byte, `1` for
//!   a prime and `0` otherwise.

use super::channels::{channel_demo, CHANNELS_PATH};
use super::primes::Algorithm;
use crate::base::error::Error;
use crate::base::shutdown::Shutdown;
use crate::http::{decimal, write_response, Query, Request, RequestHead, Response};
use crate::pipeline::envelope::Protocol;
use crate::pipeline::loopback::Failure;
use crate::pipeline::worker::{Job, Outcome, Work};
use crate::pipeline::worker::{WorkerConfig, WorkerPool};
use crate::stages::jsonrpc;
use crate::stages::HttpStage;
use serde_json::json;
use std::cell::RefCell;

/// The answer byte for a prime in the raw protocol.
pub const RAW_PRIME: &[u8] = b"1";
/// The answer byte for a non-prime in the raw protocol.
pub const RAW_NOT_PRIME: &[u8] = b"0";

/// The path of the prime checker.
pub const IS_PRIME_PATH: &str = "/is_prime";
/// The JSON-RPC method of the prime checker (see [`crate::stages::jsonrpc`]).
pub const IS_PRIME_METHOD: &str = "is_prime";
/// The query parameter (or, for POST, the body) holding the number.
pub const PARAMETER: &str = "possible_prime";

/// The first stage: paths under `/channels/` go to the channels demo
/// ([`super::channels`]); for the rest it reads the number out of the request and forwards it (8 bytes LE);
/// answers malformed requests at once, so they never reach the compute stage.
pub fn parse(job: &mut Job<'_>) -> Outcome {
    let number = match job.envelope().protocol {
        Protocol::Raw | Protocol::Netstring => parse_number(job.frame(0).unwrap_or(b"")),
        Protocol::Http { .. } => {
            // Only the request line is read (the front end has read the whole head),
            // once, in place, for both questions: is it the channels demo's, and which
            // N does it ask about.
            let head = RequestHead::parse_request_line(job.frame(0).unwrap_or(b""));
            // The target is split once, for the path and the query alike.
            let (path, query) = match head.as_ref().ok().map(RequestHead::path_and_query) {
                Some((path, query)) => (Some(path), query),
                None => (None, Query::default()),
            };
            if path
                .as_deref()
                .is_some_and(|p| p.starts_with(CHANNELS_PATH))
            {
                return HttpStage(channel_demo).work(job);
            }
            match http_number(job, head, path.as_deref(), query) {
                Ok(n) => Ok(n),
                // A WebSocket opened on /is_prime (so no N in its query): each of its
                // messages is an N (a POST's body), answered through both stages.
                // Checked only on this error path, so a plain request pays nothing.
                Err(_)
                    if path.as_deref() == Some(IS_PRIME_PATH)
                        && job.envelope().websocket.is_none()
                        && crate::http::websocket::asks_upgrade(job.frame(0).unwrap_or(b"")) =>
                {
                    return job.reply(&Response::new(101))
                }
                Err(response) => return job.reply(&response),
            }
        }
    };
    match number {
        // Written once, behind the envelope in the lead frame.
        Ok(n) => job.forward(&n.to_le_bytes()),
        Err(why) if job.envelope().protocol == Protocol::Raw => {
            Outcome::Fail(Failure::rejected(400, why))
        }
        Err(why) => job.reply(&Response::error(400, &why)),
    }
}

/// Finds N in an HTTP request whose head (the job's first frame) read as `head`, with
/// the decoded path `path` and the query `query`; or the response that says what is
/// wrong with it.
fn http_number(
    job: &Job<'_>,
    head: Result<RequestHead<'_>, crate::http::ParseError>,
    path: Option<&str>,
    query: Query<'_>,
) -> Result<u64, Response> {
    if job.envelope().jsonrpc {
        return jsonrpc_number(job);
    }
    // Read in place: only the request line matters here, and no header is copied.
    let request = head.map_err(|e| Response::error(400, &e.to_string()))?;
    if path != Some(IS_PRIME_PATH) {
        let why = format!("no such path; try {IS_PRIME_PATH}?{PARAMETER}=N");
        return Err(Response::error(404, &why));
    }
    let number = match request.method {
        "GET" | "HEAD" => {
            let mut values = query.values(PARAMETER);
            match (values.next(), values.next()) {
                (None, _) => Err(format!("the query parameter {PARAMETER} is missing")),
                (Some(value), None) => parse_number(value.as_bytes()),
                (Some(_), Some(_)) => Err(format!("the query parameter {PARAMETER} is repeated")),
            }
        }
        "POST" => parse_number(job.frame(1).unwrap_or(b"")),
        other => {
            let why = format!("{other} is not allowed on {IS_PRIME_PATH}; use GET or POST");
            return Err(Response::error(405, &why).header("Allow", "GET, HEAD, POST"));
        }
    };
    number.map_err(|why| Response::error(400, &why))
}

/// Finds N in the params of a JSON-RPC call (`{"n": N}` or `[N]`); a method other than
/// [`IS_PRIME_METHOD`] is 404 (the caller's `-32601`), params without N 400 (`-32602`).
fn jsonrpc_number(job: &Job<'_>) -> Result<u64, Response> {
    let method = jsonrpc::method_of(job.frame(0).unwrap_or(b""));
    if method != Some(IS_PRIME_METHOD) {
        return Err(Response::error(404, "Method not found"));
    }
    let params = jsonrpc::params_of(job.frame(1).unwrap_or(b""));
    let n = match &params {
        Some(serde_json::Value::Object(named)) => named.get("n"),
        Some(serde_json::Value::Array(listed)) if listed.len() == 1 => listed.first(),
        _ => None,
    };
    n.and_then(serde_json::Value::as_u64).ok_or_else(|| {
        let why = "is_prime takes {\"n\": N} or [N], N a whole number from 0 to 2^64-1";
        Response::error(400, why)
    })
}

/// Reads N in decimal, with an error message that says what is wrong.
fn parse_number(text: &[u8]) -> Result<u64, String> {
    // The common case in one pass: only digits, at most 19 of them (always below u64::MAX).
    if (1..=19).contains(&text.len()) && text.iter().all(u8::is_ascii_digit) {
        return Ok(text
            .iter()
            .fold(0, |n, &digit| n * 10 + u64::from(digit - b'0')));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| format!("{PARAMETER} must be a whole number, not binary data"))?
        .trim();
    if text.is_empty() {
        return Err(format!("{PARAMETER} is empty"));
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if text.starts_with('-') && digits(&text[1..]) {
        return Err(format!("{PARAMETER} must not be negative"));
    }
    if !digits(text) {
        return Err(format!("{PARAMETER} must be a whole number, not {text:?}"));
    }
    text.parse()
        .map_err(|_| format!("{PARAMETER} must be at most {}", u64::MAX))
}

/// The second stage: decides whether the forwarded number is prime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Compute {
    /// Which primality test to run.
    pub algorithm: Algorithm,
}

impl Work for Compute {
    fn work(&mut self, job: &mut Job<'_>) -> Outcome {
        let Some(n) = job
            .frame(0)
            .and_then(|f| <[u8; 8]>::try_from(f).ok())
            .map(u64::from_le_bytes)
        else {
            return Outcome::Fail(Failure::rejected(400, "compute expects an 8-byte number"));
        };
        let Some(is_prime) = self.algorithm.is_prime(n, &mut || job.interrupted()) else {
            return Outcome::Abandon;
        };
        match job.envelope().protocol {
            Protocol::Raw if is_prime => job.respond(RAW_PRIME),
            Protocol::Raw => job.respond(RAW_NOT_PRIME),
            Protocol::Http {
                minor_version,
                keep_alive,
                head,
            } => {
                let mut json = [0; ANSWER_JSON_MAX];
                let body = answer_json(is_prime, n, &mut json);
                ANSWER.with_borrow_mut(|out| {
                    out.clear();
                    write_response(
                        out,
                        200,
                        &JSON_FIELDS,
                        body,
                        minor_version,
                        keep_alive,
                        head,
                    );
                    // Copied once, behind the envelope: one allocation, the loopback
                    // message's own.
                    job.respond(&out[..])
                })
            }
            Protocol::Netstring => {
                let mut json = [0; ANSWER_JSON_MAX];
                job.reply(&Response::new(200).body(answer_json(is_prime, n, &mut json)))
            }
        }
    }
}

/// The header fields of a JSON answer, as [`Response::json`] sets them.
const JSON_FIELDS: [(&str, &str); 1] = [("Content-Type", "application/json")];

thread_local! {
    /// Each compute worker's buffer for its HTTP answers, reused from job to job.
    static ANSWER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The longest answer body: `{"is_prime":false,"possible_prime":18446744073709551615}`.
const ANSWER_JSON_MAX: usize = 64;

/// The body of a 200 answer, `{"is_prime":B,"possible_prime":N}` (the second key is
/// [`PARAMETER`]), written into `out`: the bytes `serde_json` gives for that object,
/// without its machinery.
fn answer_json(is_prime: bool, n: u64, out: &mut [u8; ANSWER_JSON_MAX]) -> &[u8] {
    let mut digits = [0; 20];
    let parts: [&[u8]; 4] = [
        if is_prime {
            br#"{"is_prime":true,"#
        } else {
            br#"{"is_prime":false,"#
        },
        br#""possible_prime":"#,
        decimal(n, &mut digits),
        b"}",
    ];
    let mut len = 0;
    for part in parts {
        out[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    &out[..len]
}

/// The demo services a worker process can run, by name.
pub const SERVICES: [&str; 3] = ["parse", "compute", "echo"];

/// Starts a pool of `count` workers for the stage named `stage`, running the demo
/// service named `service` (one of [`SERVICES`]); `algorithm` is for `compute`.
pub fn spawn_service(
    ctx: &zmq::Context,
    stage: &str,
    service: &str,
    algorithm: Algorithm,
    config: &WorkerConfig,
    count: usize,
    shutdown: &Shutdown,
) -> crate::Result<WorkerPool> {
    match service {
        "parse" => WorkerPool::spawn(ctx, stage, config, count, parse, shutdown),
        "compute" => WorkerPool::spawn(ctx, stage, config, count, Compute { algorithm }, shutdown),
        "echo" => WorkerPool::spawn(ctx, stage, config, count, echo, shutdown),
        other => Err(Error::Config(format!(
            "no service {other:?}; the services are {SERVICES:?}"
        ))),
    }
}

/// The one stage of `prime_echod`: answers each request with a JSON description of it
/// (method, path, query, headers, body length), for testing the front end by itself.
/// It accepts a WebSocket upgrade on any path and sends each message back unchanged,
/// text as text and binary as binary.
pub fn echo(job: &mut Job<'_>) -> Outcome {
    if let Some(kind) = job.envelope().websocket {
        let content_type = match kind {
            crate::http::websocket::MessageKind::Text => "text/plain; charset=utf-8",
            crate::http::websocket::MessageKind::Binary => "application/octet-stream",
        };
        let body = job.frame(1).unwrap_or(b"").to_vec();
        return job.reply(
            &Response::new(200)
                .header("Content-Type", content_type)
                .body(body),
        );
    }
    if crate::http::websocket::asks_upgrade(job.frame(0).unwrap_or(b"")) {
        return job.reply(&Response::new(101));
    }
    let body = job.frame(1).unwrap_or(b"").to_vec();
    let description = match job.envelope().protocol {
        Protocol::Http { .. } => match Request::from_parts(job.frame(0).unwrap_or(b""), body) {
            Ok(request) => json!({
                "method": request.method,
                "target": request.target,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "body_length": request.body.len(),
                "version": format!("HTTP/1.{}", request.minor_version),
            }),
            Err(e) => return job.reply(&Response::error(400, &e.to_string())),
        },
        Protocol::Netstring | Protocol::Raw => {
            let payload = job.frame(0).unwrap_or(b"");
            json!({ "body_length": payload.len(), "body": String::from_utf8_lossy(payload) })
        }
    };
    job.reply(&Response::json(200, &description))
}

#[cfg(test)]
mod tests {
    use super::{answer_json, parse_number, ANSWER_JSON_MAX};

    #[test]
    fn answers_are_the_json_serde_gives() {
        for n in [0, 1, 7, 10, 1_000_000_007, u64::MAX] {
            for is_prime in [true, false] {
                let mut out = [0; ANSWER_JSON_MAX];
                let expected = serde_json::json!({ "is_prime": is_prime, "possible_prime": n });
                let expected = serde_json::to_vec(&expected).expect("serializable");
                assert_eq!(answer_json(is_prime, n, &mut out), expected);
            }
        }
    }

    #[test]
    fn numbers_are_read_with_clear_errors() {
        assert_eq!(parse_number(b"7"), Ok(7));
        assert_eq!(parse_number(b" 18446744073709551615 "), Ok(u64::MAX));
        assert!(parse_number(b"").unwrap_err().contains("empty"));
        assert!(parse_number(b"-5").unwrap_err().contains("negative"));
        assert!(parse_number(b"abc").unwrap_err().contains("whole number"));
        assert!(parse_number(b"1e3").unwrap_err().contains("whole number"));
        assert!(parse_number(b"+5").unwrap_err().contains("whole number"));
        assert!(parse_number(b"18446744073709551616")
            .unwrap_err()
            .contains("at most"));
    }
}
