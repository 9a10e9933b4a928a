//! `POST /publish/` on the control listener: GRIP's publish format,
//! `{"items": [{"channel", "id", "prev-id", "formats": {"http-response": {...},
//! "http-stream": {...}}}]}`.
//!
//! With a publish key (`--publish-key-file`), the request needs `Authorization: Bearer
//! <JWT>`, the token signed with the key in HS256 (GRIP's form: `gripcontrol` and its
//! ports sign `{"iss": ..., "exp": ...}` so); an expired token, another key or
//! algorithm, or no token is answered `401`. Items are checked all before any is
//! published: one bad item and the whole request is `400`. The answer (`200`) comes once
//! every item is handed to the front end, for its bus, not once delivered: on the
//! front end's loop (`inline`), once it has put them on the bus and written them to its
//! own holds; on a control thread, once they are on the front end's channel.

use super::{ControlContext, INBOX_TIMEOUT};
use crate::http::{Request, Response};
use crate::pipeline::channel::Item;

/// Answers a publish handed to a control thread: its items go to the front end over
/// its channel of publishes, with one wake for them all.
pub(super) fn publish(context: &ControlContext, request: &Request) -> Response {
    let key = context.publish_key.as_deref();
    let parsed = match checked_items(key, request.header("authorization"), &request.body) {
        Ok(items) => items,
        Err(refusal) => return refusal,
    };
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
    published()
}

/// The answer to a publish whose items were all handed on.
pub(super) fn published() -> Response {
    Response::new(200)
        .header("Content-Type", "text/plain")
        .body("Published\n")
}

/// A publish's items, all checked: `Err` with the refusal when the key is set and the
/// request's `Authorization` field is not a token signed with it (`401`), or when the
/// body or any item is malformed (`400`, naming the first bad item).
pub(super) fn checked_items(
    key: Option<&[u8]>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Vec<Item>, Response> {
    if let Some(key) = key {
        if !signed(key, authorization) {
            return Err(
                Response::error(401, "a publish needs a JWT signed with the publish key")
                    .header("WWW-Authenticate", "Bearer"),
            );
        }
    }
    if let Some(items) = Item::parse_publish(body) {
        return Ok(items);
    }
    // Something is wrong with it: read it again item by item, to say what.
    let mut body: serde_json::Value = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(e) => return Err(Response::error(400, &format!("the body is not JSON: {e}"))),
    };
    let Some(items) = body.get_mut("items").and_then(|items| items.as_array_mut()) else {
        return Err(Response::error(400, "the body needs \"items\", a list"));
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in std::mem::take(items).into_iter().enumerate() {
        match Item::from_value(item) {
            Ok(item) => parsed.push(item),
            Err(e) => return Err(Response::error(400, &format!("item {index}: {e}"))),
        }
    }
    Ok(parsed)
}

/// Whether the request carries a JWT (HS256) signed with `key` that has not expired.
pub(super) fn authorised(key: &[u8], request: &Request) -> bool {
    signed(key, request.header("authorization"))
}

/// Whether an `Authorization` field's value is `Bearer` and a JWT (HS256) signed with
/// `key` that has not expired.
fn signed(key: &[u8], authorization: Option<&str>) -> bool {
    let Some(token) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else {
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
