//! `POST /publish/` on the control listener: GRIP's publish format,
//! `{"items": [{"channel", "id", "prev-id", "formats": {"http-response": {...},
//! "http-stream": {...}}}]}`.
//!
//! With a publish key (`--publish-key-file`), the request needs `Authorization: Bearer
//! <JWT>`, the token signed with the key in HS256 (GRIP's form: `gripcontrol` and its
//! ports sign `{"iss": ..., "exp": ...}` so); an expired token, another key or
//! algorithm, or no token is answered `401`. Items are checked all before any is
//! published: one bad item and the whole request is `400`. The answer (`200`) comes once
//! every item is handed to the front end, for its bus, not once delivered.

use super::{ControlContext, INBOX_TIMEOUT};
use crate::http::{Request, Response};
use crate::pipeline::channel::Item;

/// Answers a publish.
pub(super) fn publish(context: &ControlContext, request: &Request) -> Response {
    if let Some(key) = &context.publish_key {
        if !authorised(key, request) {
            return Response::error(401, "a publish needs a JWT signed with the publish key")
                .header("WWW-Authenticate", "Bearer");
        }
    }
    let body: serde_json::Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(e) => return Response::error(400, &format!("the body is not JSON: {e}")),
    };
    let Some(items) = body.get("items").and_then(|items| items.as_array()) else {
        return Response::error(400, "the body needs \"items\", a list");
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match Item::from_value(item.clone()) {
            Ok(item) => parsed.push(item),
            Err(e) => return Response::error(400, &format!("item {index}: {e}")),
        }
    }
    for item in parsed {
        if let Err(e) = hand_over(context, item) {
            log::warn!("control listener: a publish did not reach the front end: {e}");
            return Response::error(503, "the front end did not take the message");
        }
    }
    // One wake for the request's items (the front end reads them all at each wake).
    if let Err(e) = context.inbox.send(zmq::Message::new(), 0) {
        log::warn!("control listener: a publish did not reach the front end: {e}");
        return Response::error(503, "the front end did not take the message");
    }
    Response::new(200)
        .header("Content-Type", "text/plain")
        .body("Published\n")
}

/// Whether the request carries a JWT (HS256) signed with `key` that has not expired.
pub(super) fn authorised(key: &[u8], request: &Request) -> bool {
    let Some(token) = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(key),
        &validation,
    )
    .is_ok()
}

/// Puts an item on the front end's channel of publishes, parsed already; when it is
/// full, wakes the front end first and waits up to [`INBOX_TIMEOUT`] for room.
fn hand_over(context: &ControlContext, item: Item) -> Result<(), String> {
    use crossbeam_channel::{SendTimeoutError, TrySendError};
    match context.publishes.try_send(item) {
        Ok(()) => Ok(()),
        Err(TrySendError::Disconnected(_)) => Err("the front end stopped".into()),
        Err(TrySendError::Full(item)) => {
            context
                .inbox
                .send(zmq::Message::new(), 0)
                .map_err(|e| e.to_string())?;
            match context.publishes.send_timeout(item, INBOX_TIMEOUT) {
                Ok(()) => Ok(()),
                Err(SendTimeoutError::Timeout(_)) => Err("the front end did not keep up".into()),
                Err(SendTimeoutError::Disconnected(_)) => Err("the front end stopped".into()),
            }
        }
    }
}
