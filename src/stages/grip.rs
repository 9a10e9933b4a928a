//! GRIP instructions in a gateway backend's answer, and the gateway's `Grip-Sig`.
//!
//! A backend behind the gateway holds its client's request on channels the way it
//! would behind Pushpin (the GRIP specification, <https://pushpin.org/docs/protocols/grip/>):
//!
//! - with headers: `Grip-Hold: response` or `stream`; `Grip-Channel: name; prev-id=17,
//!   other` (several channels, comma-separated or in repeated fields; the `prev-id`
//!   parameter is taken, others such as `filter` are ignored); `Grip-Timeout: S` (a
//!   response hold's seconds); `Grip-Keep-Alive: content; format=raw|cstring|base64;
//!   timeout=S` (a stream hold's idle message, every 55 s unless `timeout` says
//!   otherwise); `Grip-Status: CODE` (the held answer's status). The rest of the answer
//!   (status, headers without any `Grip-*`, body) is the hold's own answer: sent at a
//!   response hold's timeout, sent at once by a stream hold;
//! - or with a body of type `application/grip-instruct`: `{"hold": {"mode", "channels":
//!   [{"name", "prev-id"}], "timeout", "keep-alive": {"content" | "content-bin",
//!   "timeout"}}, "response": {"code", "headers", "body" | "body-bin"}}`, whose
//!   `response` (by default `200` with no body) is the hold's own answer.
//!
//! Every `Grip-*` field of a backend's answer is removed before the client sees it,
//! held or not. An answer without `Grip-Hold` and not `application/grip-instruct` is
//! passed on as it is. Instructions that cannot be followed (an unknown mode, no
//! channel, a bad number, malformed JSON) are the backend's error: the gateway answers
//! `502` ([`GripError`]).

use crate::http::Response;
use crate::pipeline::channel::{Hold, HoldChannel, HoldMode, KeepAlive};
use base64::Engine;
use serde::Deserialize;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The request header carrying the gateway's signature (GRIP's `Grip-Sig`).
pub const GRIP_SIG: &str = "Grip-Sig";

/// The `iss` claim of the gateway's `Grip-Sig`.
pub const GRIP_ISSUER: &str = "prime_server";

/// How long a `Grip-Sig` is valid: its `exp` is this many seconds after it is made (an
/// hour, as Pushpin's).
pub const GRIP_SIG_LIFETIME: u64 = 3600;

/// The media type of a body of GRIP instructions.
pub const GRIP_INSTRUCT: &str = "application/grip-instruct";

/// How often a stream hold sends its keep-alive when `Grip-Keep-Alive` names no
/// `timeout` (seconds).
const DEFAULT_KEEP_ALIVE: u32 = 55;

/// GRIP instructions that cannot be followed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GripError(pub String);

impl fmt::Display for GripError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the backend's GRIP instructions cannot be followed: {}",
            self.0
        )
    }
}

impl std::error::Error for GripError {}

/// What a backend's answer asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Instruction {
    /// Pass this answer on (its `Grip-*` fields removed).
    Respond(Response),
    /// Hold the client's request; the hold's `answer` is the backend's own.
    Hold(Hold),
}

/// A `Grip-Sig` value: a JWT (HS256, made with `key`) with the claims `iss`
/// ([`GRIP_ISSUER`]) and `exp` (`now_unix` plus [`GRIP_SIG_LIFETIME`]), which GRIP
/// libraries check (`gripcontrol.validate_sig`).
pub fn grip_sig(key: &[u8], now_unix: u64) -> Result<String, GripError> {
    let claims = serde_json::json!({"iss": GRIP_ISSUER, "exp": now_unix + GRIP_SIG_LIFETIME});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .map_err(|e| GripError(format!("Grip-Sig could not be made: {e}")))
}

/// A `Grip-Sig` made now (see [`grip_sig`]).
pub fn grip_sig_now(key: &[u8]) -> Result<String, GripError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    grip_sig(key, now)
}

fn is_grip_field(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("grip-"))
}

/// Reads the GRIP instructions of a backend's answer (see the module docs).
pub fn instruction(mut answer: Response) -> Result<Instruction, GripError> {
    let instruct = answer.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("content-type")
            && v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(GRIP_INSTRUCT))
    });
    if instruct {
        return instruct_body(&answer.body).map(Instruction::Hold);
    }
    let values = |name: &str| -> Vec<String> {
        answer
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mode = values("grip-hold");
    let channels = values("grip-channel");
    let timeout = values("grip-timeout");
    let keep_alive = values("grip-keep-alive");
    let status = values("grip-status");
    answer.headers.retain(|(n, _)| !is_grip_field(n));
    let Some(mode) = mode.first() else {
        return Ok(Instruction::Respond(answer));
    };
    let mode = match mode.trim().to_ascii_lowercase().as_str() {
        "response" => HoldMode::Response,
        "stream" => HoldMode::Stream,
        other => {
            return Err(GripError(format!(
                "Grip-Hold {other:?} is not response or stream"
            )))
        }
    };
    let mut hold = match mode {
        HoldMode::Response => Hold::response(Vec::<String>::new()),
        HoldMode::Stream => Hold::stream(Vec::<String>::new()),
    };
    for value in &channels {
        hold.channels.extend(channel_field(value)?);
    }
    if let Some(seconds) = timeout.first() {
        hold = hold.timeout(seconds_of("Grip-Timeout", seconds)?);
    }
    if let Some(value) = keep_alive.first() {
        hold.keep_alive = Some(keep_alive_field(value)?);
    }
    if let Some(code) = status.first() {
        let code = code.split_whitespace().next().unwrap_or("");
        answer.status = match code.parse::<u16>() {
            Ok(code) if (200..600).contains(&code) => code,
            _ => {
                return Err(GripError(format!(
                    "Grip-Status {code:?} is not a status code"
                )))
            }
        };
    }
    finish(hold.answer(answer)).map(Instruction::Hold)
}

fn finish(hold: Hold) -> Result<Hold, GripError> {
    hold.check().map_err(|e| GripError(e.0))?;
    Ok(hold)
}

fn seconds_of(field: &str, text: &str) -> Result<u32, GripError> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| GripError(format!("{field} {text:?} is not a number of seconds")))
}

/// A parameter value, its quotes removed.
fn unquoted(value: &str) -> String {
    let value = value.trim();
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_string(),
    }
}

/// The channels of one `Grip-Channel` value: `name; prev-id=17, other`.
fn channel_field(value: &str) -> Result<Vec<HoldChannel>, GripError> {
    let mut channels = Vec::new();
    for element in value.split(',').filter(|e| !e.trim().is_empty()) {
        let mut parts = element.split(';');
        let name = parts.next().unwrap_or("").trim().to_string();
        let mut prev_id = None;
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if key.trim().eq_ignore_ascii_case("prev-id") {
                prev_id = Some(unquoted(value));
            }
        }
        channels.push(HoldChannel { name, prev_id });
    }
    Ok(channels)
}

/// A C string's escapes undone (`\n`, `\r`, `\t`, `\\`, `\"`), as GRIP's `cstring`.
fn cstring(text: &str) -> Result<Vec<u8>, GripError> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        out.push(match chars.next() {
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('t') => b'\t',
            Some('\\') => b'\\',
            Some('"') => b'"',
            other => return Err(GripError(format!("bad escape \\{other:?} in a cstring"))),
        });
    }
    Ok(out)
}

/// A `Grip-Keep-Alive` value: `content; format=raw|cstring|base64; timeout=S`.
fn keep_alive_field(value: &str) -> Result<KeepAlive, GripError> {
    let mut parts = value.split(';');
    let content = unquoted(parts.next().unwrap_or(""));
    let (mut format, mut interval) = ("raw".to_string(), DEFAULT_KEEP_ALIVE);
    for param in parts {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.trim().to_ascii_lowercase().as_str() {
            "format" => format = unquoted(value).to_ascii_lowercase(),
            "timeout" => interval = seconds_of("Grip-Keep-Alive's timeout", &unquoted(value))?,
            _ => {}
        }
    }
    let content = match format.as_str() {
        "raw" => content.into_bytes(),
        "cstring" => cstring(&content)?,
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(content.as_bytes())
            .map_err(|e| GripError(format!("Grip-Keep-Alive's base64 content: {e}")))?,
        other => {
            return Err(GripError(format!(
                "Grip-Keep-Alive format {other:?} is unknown"
            )))
        }
    };
    Ok(KeepAlive {
        content,
        interval: interval.max(1),
    })
}

#[derive(Deserialize)]
struct InstructBody {
    hold: InstructHold,
    #[serde(default)]
    response: Option<InstructResponse>,
}

#[derive(Deserialize)]
struct InstructHold {
    mode: HoldMode,
    channels: Vec<HoldChannel>,
    #[serde(default)]
    timeout: Option<u32>,
    #[serde(default, rename = "keep-alive")]
    keep_alive: Option<InstructKeepAlive>,
}

#[derive(Deserialize)]
struct InstructKeepAlive {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, rename = "content-bin")]
    content_bin: Option<String>,
    #[serde(default)]
    timeout: Option<u32>,
}

#[derive(Deserialize)]
struct InstructResponse {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default, rename = "body-bin")]
    body_bin: Option<String>,
}

fn base64_field(field: &str, text: &str) -> Result<Vec<u8>, GripError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| GripError(format!("{field}: {e}")))
}

/// The hold of an `application/grip-instruct` body.
fn instruct_body(body: &[u8]) -> Result<Hold, GripError> {
    let parsed: InstructBody = serde_json::from_slice(body)
        .map_err(|e| GripError(format!("the grip-instruct body: {e}")))?;
    let mut hold = match parsed.hold.mode {
        HoldMode::Response => Hold::response(Vec::<String>::new()),
        HoldMode::Stream => Hold::stream(Vec::<String>::new()),
    };
    hold.channels = parsed.hold.channels;
    if let Some(seconds) = parsed.hold.timeout {
        hold = hold.timeout(seconds);
    }
    if let Some(keep) = parsed.hold.keep_alive {
        let content = match (keep.content, keep.content_bin) {
            (_, Some(bin)) => base64_field("keep-alive's content-bin", &bin)?,
            (Some(text), None) => text.into_bytes(),
            (None, None) => Vec::new(),
        };
        hold = hold.keep_alive(content, keep.timeout.unwrap_or(DEFAULT_KEEP_ALIVE));
    }
    let given = parsed.response.unwrap_or(InstructResponse {
        code: None,
        headers: Default::default(),
        body: None,
        body_bin: None,
    });
    let code = given.code.unwrap_or(200);
    if !(200..600).contains(&code) {
        return Err(GripError(format!(
            "response code {code} is not a final status"
        )));
    }
    let body = match (given.body, given.body_bin) {
        (_, Some(bin)) => base64_field("response's body-bin", &bin)?,
        (Some(text), None) => text.into_bytes(),
        (None, None) => Vec::new(),
    };
    let mut answer = Response::new(code).body(body);
    for (name, value) in given.headers {
        let value = match value {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        };
        if name.is_empty() || name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
            return Err(GripError(format!(
                "the response header {name:?} is not a field"
            )));
        }
        if !is_grip_field(&name) {
            answer = answer.header(name, value);
        }
    }
    finish(hold.answer(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(answer: Response) -> Hold {
        match instruction(answer).unwrap() {
            Instruction::Hold(hold) => hold,
            Instruction::Respond(r) => panic!("not held: {r:?}"),
        }
    }

    #[test]
    fn headers_make_a_response_hold_with_the_backend_answer() {
        let hold = held(
            Response::new(200)
                .header("Grip-Hold", "response")
                .header("Grip-Channel", "account:42; prev-id=17, news")
                .header("grip-channel", "more; filter=skip-self; prev-id=\"a b\"")
                .header("Grip-Timeout", "20")
                .header("Grip-Link", "</x>; rel=next")
                .header("Content-Type", "text/plain")
                .body("timed out"),
        );
        assert_eq!(hold.mode, HoldMode::Response);
        assert_eq!(hold.timeout, 20);
        let names: Vec<_> = hold
            .channels
            .iter()
            .map(|c| (c.name.as_str(), c.prev_id.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("account:42", Some("17")),
                ("news", None),
                ("more", Some("a b"))
            ]
        );
        let answer = hold.answer.unwrap();
        assert_eq!(
            answer.headers,
            [("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(answer.body, b"timed out");
    }

    #[test]
    fn keep_alive_formats_and_status() {
        let hold = held(
            Response::new(200)
                .header("Grip-Hold", "Stream")
                .header("Grip-Channel", "s")
                .header("Grip-Keep-Alive", ":\\n\\n; format=cstring; timeout=7")
                .header("Grip-Status", "201 Created"),
        );
        assert_eq!(hold.mode, HoldMode::Stream);
        let keep = hold.keep_alive.clone().unwrap();
        assert_eq!((keep.content.as_slice(), keep.interval), (&b":\n\n"[..], 7));
        assert_eq!(hold.answer.unwrap().status, 201);
        let hold = held(
            Response::new(200)
                .header("Grip-Hold", "stream")
                .header("Grip-Channel", "s")
                .header("Grip-Keep-Alive", "OgoK; format=base64"),
        );
        let keep = hold.keep_alive.unwrap();
        assert_eq!(
            (keep.content.as_slice(), keep.interval),
            (&b":\n\n"[..], 55)
        );
    }

    #[test]
    fn an_answer_without_hold_loses_only_its_grip_fields() {
        let answer = Response::new(404)
            .header("Grip-Channel", "x")
            .header("X-A", "1")
            .body("no");
        assert_eq!(
            instruction(answer).unwrap(),
            Instruction::Respond(Response::new(404).header("X-A", "1").body("no"))
        );
    }

    #[test]
    fn bad_instructions_are_errors() {
        let base = || Response::new(200).header("Grip-Channel", "c");
        assert!(instruction(base().header("Grip-Hold", "forever")).is_err());
        assert!(instruction(Response::new(200).header("Grip-Hold", "response")).is_err());
        assert!(instruction(
            base()
                .header("Grip-Hold", "response")
                .header("Grip-Timeout", "soon")
        )
        .is_err());
        let keep = base()
            .header("Grip-Hold", "stream")
            .header("Grip-Keep-Alive", "x; format=rot13");
        assert!(instruction(keep).is_err());
        let json = |body: &str| {
            let answer = Response::new(200).header("Content-Type", GRIP_INSTRUCT);
            instruction(answer.body(body.to_string()))
        };
        assert!(json("{").is_err());
        let hold = r#""hold": {"mode": "response", "channels": [{"name": "c"}]}"#;
        let injected =
            format!(r#"{{{hold}, "response": {{"headers": {{"X-A": "1\r\nSet-Cookie: a=b"}}}}}}"#);
        assert!(json(&injected).is_err());
        let named = format!(r#"{{{hold}, "response": {{"headers": {{"é: x": "1"}}}}}}"#);
        assert!(json(&named).is_err());
        let unicode = format!(r#"{{{hold}, "response": {{"headers": {{"ééé": "1"}}}}}}"#);
        assert!(json(&unicode).is_ok());
    }

    #[test]
    fn a_grip_instruct_body_as_gripcontrol_makes_it() {
        let body = r#"{"hold": {"mode": "response", "channels": [{"name": "a", "prev-id": "3"}, {"name": "b"}], "timeout": 5,
            "keep-alive": {"content-bin": "eA==", "timeout": 9}},
            "response": {"code": 202, "headers": {"X-B": "2", "Grip-Foo": "z"}, "body-bin": "aGk="}}"#;
        let hold = held(
            Response::new(200)
                .header("Content-Type", "application/grip-instruct; charset=utf-8")
                .body(body),
        );
        assert_eq!(hold.timeout, 5);
        assert_eq!(hold.channels[0].prev_id.as_deref(), Some("3"));
        assert_eq!(hold.channels[1].name, "b");
        assert_eq!(hold.keep_alive.clone().unwrap().content, b"x");
        let answer = hold.answer.unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (202, &b"hi"[..]));
        assert_eq!(answer.headers, [("X-B".to_string(), "2".to_string())]);
        let stream = held(
            Response::new(200)
                .header("Content-Type", GRIP_INSTRUCT)
                .body(r#"{"hold": {"mode": "stream", "channels": [{"name": "s"}]}, "response": {"body": "start\n"}}"#),
        );
        assert_eq!(stream.mode, HoldMode::Stream);
        assert_eq!(stream.answer.unwrap(), Response::new(200).body("start\n"));
    }

    #[test]
    fn grip_sig_is_a_jwt_with_iss_and_exp() {
        let token = grip_sig(b"key", 1000).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"key"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(
            claims,
            serde_json::json!({"iss": GRIP_ISSUER, "exp": 1000 + GRIP_SIG_LIFETIME})
        );
    }
}
