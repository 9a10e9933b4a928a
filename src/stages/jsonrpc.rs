//! JSON-RPC 2.0 (<https://www.jsonrpc.org/specification>) as the front end and the
//! stages speak it: reading a request body into calls (§4, §6), the error codes (§5.1),
//! the response objects (§5), and how a stage's HTTP answer becomes a `result` or an
//! `error`.
//!
//! The front end (see `server::jsonrpc`) answers a `POST` to its JSON-RPC path. Each
//! call becomes a request of its own through the pipeline: `POST <path> HTTP/1.1` with
//! the method in `X-Task-Name` (so the task table picks its stage, by the same rules as
//! for any request), the call's `params` as the JSON body, and the envelope's
//! [`jsonrpc`](crate::pipeline::envelope::Envelope::jsonrpc) flag set. A stage reads them
//! with [`HttpJob::jsonrpc_method`](crate::stages::HttpJob::jsonrpc_method) and
//! [`HttpJob::jsonrpc_params`](crate::stages::HttpJob::jsonrpc_params) (or, for a raw
//! [`Job`](crate::Job), [`method_of`] and [`params_of`]), and answers as it answers
//! any request:
//! - a `2xx` answer is the `result`: its body parsed as JSON when its `Content-Type` is
//!   JSON, else its body as a JSON string (it must then be UTF-8), `null` when empty;
//! - any other answer is the `error` ([`ErrorObject::from_status`]): `400` is `-32602`
//!   (invalid params), `404` is `-32601` (method not found), `500` is `-32603` (internal
//!   error), and every other status is `-32000` (server error) with `{"status": N}` in
//!   `data`; the message is the `error` of the body `StageError` writes, if there is one.

use serde_json::{json, Map, Value};

/// The header field of the request a call becomes that names its method: the task
/// table's own (`tasks::TASK_HEADER`), so that the method picks the stage.
pub const METHOD_HEADER: &str = "X-Task-Name";

/// The protocol version every request and response object names (§4, §5).
pub const VERSION: &str = "2.0";
/// Invalid JSON was received (§5.1).
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object (§5.1).
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available (§5.1).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (§5.1).
pub const INVALID_PARAMS: i64 = -32602;
/// An internal JSON-RPC error (§5.1).
pub const INTERNAL_ERROR: i64 = -32603;
/// The first of the codes reserved for implementation-defined server errors
/// (`-32000` to `-32099`, §5.1): a stage's answer with any other failing status, whose
/// status is in the error's `data`.
pub const SERVER_ERROR: i64 = -32000;

/// The `error` member of a response object (§5.1).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorObject {
    /// The error code: one of this module's constants.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// More about the error, if anything.
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error without `data`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// `-32700`, "Parse error" (§5.1).
    pub fn parse_error() -> Self {
        Self::new(PARSE_ERROR, "Parse error")
    }

    /// `-32600`, "Invalid Request" (§5.1).
    pub fn invalid_request() -> Self {
        Self::new(INVALID_REQUEST, "Invalid Request")
    }

    /// `-32601`, "Method not found" (§5.1).
    pub fn method_not_found() -> Self {
        Self::new(METHOD_NOT_FOUND, "Method not found")
    }

    /// The error for a stage's failing answer with HTTP status `status`, and `message`
    /// if the answer said one (see the module's documentation for the codes).
    ///
    /// ```
    /// use prime_server::stages::jsonrpc::{ErrorObject, INVALID_PARAMS, SERVER_ERROR};
    /// assert_eq!(ErrorObject::from_status(400, Some("n must be a number")).code, INVALID_PARAMS);
    /// let busy = ErrorObject::from_status(503, None);
    /// assert_eq!((busy.code, busy.data), (SERVER_ERROR, Some(serde_json::json!({"status": 503}))));
    /// ```
    pub fn from_status(status: u16, message: Option<&str>) -> Self {
        let (code, standard) = match status {
            400 => (INVALID_PARAMS, "Invalid params"),
            404 => (METHOD_NOT_FOUND, "Method not found"),
            500 => (INTERNAL_ERROR, "Internal error"),
            _ => (SERVER_ERROR, "Server error"),
        };
        ErrorObject {
            code,
            message: message.unwrap_or(standard).to_string(),
            data: (code == SERVER_ERROR).then(|| json!({ "status": status })),
        }
    }

    /// The object as JSON.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("code".into(), self.code.into());
        object.insert("message".into(), self.message.clone().into());
        if let Some(data) = &self.data {
            object.insert("data".into(), data.clone());
        }
        Value::Object(object)
    }
}

/// One member of a request: a call, or something that is not a request object.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// A request object (§4).
    Valid {
        /// Its `id`; `None` for a notification (no `id` member at all), which is run
        /// and never answered (§4.1). A `null` id is a call, answered with `null`.
        id: Option<Value>,
        /// The method to run.
        method: String,
        /// Its `params`: an array or an object, if any.
        params: Option<Value>,
    },
    /// Not a valid request object: answered `-32600` with a `null` id (§5).
    Invalid,
}

/// What a request body holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// One request object (or something that should have been one).
    Single(Call),
    /// A batch (§6): a non-empty array, each member read on its own.
    Batch(Vec<Call>),
}

/// Reads a request body: one call or a batch. An error is the answer to the whole
/// body: `-32700` for JSON that does not parse, `-32600` for an empty batch (§7).
///
/// ```
/// use prime_server::stages::jsonrpc::{read_body, Body, Call};
/// let body = br#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#;
/// let Ok(Body::Single(Call::Valid { id, method, .. })) = read_body(body) else { panic!() };
/// assert_eq!((id, method.as_str()), (None, "update"));
/// assert_eq!(read_body(b"[]").unwrap_err().code, -32600);
/// assert_eq!(read_body(b"[1,2").unwrap_err().code, -32700);
/// ```
pub fn read_body(body: &[u8]) -> Result<Body, ErrorObject> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ErrorObject::parse_error())?;
    match value {
        Value::Array(members) if members.is_empty() => Err(ErrorObject::invalid_request()),
        Value::Array(members) => Ok(Body::Batch(members.into_iter().map(read_call).collect())),
        other => Ok(Body::Single(read_call(other))),
    }
}

/// Reads one request object (§4).
fn read_call(value: Value) -> Call {
    let Value::Object(mut object) = value else {
        return Call::Invalid;
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some(VERSION) {
        return Call::Invalid;
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Call::Invalid;
    };
    let params = match object.remove("params") {
        None => None,
        Some(params @ (Value::Array(_) | Value::Object(_))) => Some(params),
        Some(_) => return Call::Invalid,
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => return Call::Invalid,
    };
    Call::Valid { id, method, params }
}

/// A response object (§5): `result` on success, `error` otherwise, with the call's
/// `id`.
///
/// ```
/// use prime_server::stages::jsonrpc::response;
/// use serde_json::json;
/// assert_eq!(
///     response(&json!(1), Ok(json!(19))),
///     json!({"jsonrpc": "2.0", "result": 19, "id": 1})
/// );
/// ```
pub fn response(id: &Value, outcome: Result<Value, ErrorObject>) -> Value {
    let mut object = Map::new();
    object.insert("jsonrpc".into(), VERSION.into());
    match outcome {
        Ok(result) => object.insert("result".into(), result),
        Err(error) => object.insert("error".into(), error.to_json()),
    };
    object.insert("id".into(), id.clone());
    Value::Object(object)
}

/// The outcome of a call whose stage answered with HTTP status `status`, a `Content-Type`
/// that is JSON or not (`json`), and `body` (see the module's documentation).
///
/// ```
/// use prime_server::stages::jsonrpc::{outcome_of_answer, INVALID_PARAMS};
/// use serde_json::json;
/// assert_eq!(outcome_of_answer(200, true, br#"{"a":1}"#), Ok(json!({"a": 1})));
/// assert_eq!(outcome_of_answer(200, false, b"plain"), Ok(json!("plain")));
/// let refused = outcome_of_answer(400, true, br#"{"error":"n is missing","status":400}"#);
/// assert_eq!(refused.unwrap_err().message, "n is missing");
/// assert_eq!(outcome_of_answer(400, false, b"").unwrap_err().code, INVALID_PARAMS);
/// ```
pub fn outcome_of_answer(status: u16, json: bool, body: &[u8]) -> Result<Value, ErrorObject> {
    if !(200..300).contains(&status) {
        let said: Option<Value> = if json {
            serde_json::from_slice(body).ok()
        } else {
            None
        };
        let message = said
            .as_ref()
            .and_then(|body| body.get("error"))
            .and_then(Value::as_str);
        return Err(ErrorObject::from_status(status, message));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if json {
        return serde_json::from_slice(body).map_err(|_| {
            ErrorObject::new(INTERNAL_ERROR, "the method's JSON answer does not parse")
        });
    }
    match std::str::from_utf8(body) {
        Ok(text) => Ok(Value::String(text.to_string())),
        Err(_) => Err(ErrorObject::new(
            INTERNAL_ERROR,
            "the method answered bytes that are neither JSON nor UTF-8 text",
        )),
    }
}

/// Whether a `Content-Type` value names JSON (`application/json`, or any `+json`
/// type), parameters aside.
pub fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The method of a call, from the head the front end wrote for it (its `X-Task-Name`);
/// `None` when the head has none. Only meaningful when the envelope's `jsonrpc` flag
/// is set: see [`HttpJob::jsonrpc_method`](crate::stages::HttpJob::jsonrpc_method).
pub fn method_of(head: &[u8]) -> Option<&str> {
    crate::http::field_text(head, METHOD_HEADER)
}

/// The `params` of a call, from the body the front end wrote for it: `None` when the
/// call had none, or the body is not JSON.
pub fn params_of(body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_that_are_not_request_objects_are_invalid() {
        for member in [
            json!(1),
            json!({"foo": "boo"}),
            json!({"jsonrpc": "2.0", "method": 1, "params": "bar"}),
            json!({"jsonrpc": "1.0", "method": "a"}),
            json!({"jsonrpc": "2.0", "method": "a", "params": 3}),
            json!({"jsonrpc": "2.0", "method": "a", "id": [1]}),
        ] {
            assert_eq!(read_call(member.clone()), Call::Invalid, "{member}");
        }
        let call = read_call(json!({"jsonrpc": "2.0", "method": "a", "id": null}));
        assert!(matches!(
            call,
            Call::Valid {
                id: Some(Value::Null),
                ..
            }
        ));
    }

    #[test]
    fn statuses_become_codes() {
        assert_eq!(ErrorObject::from_status(404, None).code, METHOD_NOT_FOUND);
        assert_eq!(ErrorObject::from_status(500, None).code, INTERNAL_ERROR);
        let timeout = ErrorObject::from_status(504, Some("deadline passed"));
        assert_eq!(timeout.data, Some(json!({"status": 504})));
        assert_eq!(timeout.message, "deadline passed");
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/plain"));
    }
}
