//! `PUT`, `GET` and `DELETE /subscriptions/{name}` on the control listener: URLs
//! subscribed to a channel (see [`crate::server::subscriptions`] for what is delivered
//! and how).
//!
//! - `PUT` with `{"channel": "...", "url": "https://...", "ttl": SECONDS}` creates
//!   (`201`) or renews (`200`) the subscription `name` and answers its view (as `GET`).
//!   `name` is 1 to 128 of `A-Z a-z 0-9 . _ ~ -`; `ttl` is more than 0 and at most 30
//!   days. A URL whose host is, or resolves to, an address the SSRF guard refuses
//!   (loopback, private, link-local, metadata... unless `--allow-callback-network`
//!   allows its network) is `400`, as is a body that is not this.
//! - `GET` answers `{"name","channel","url","ttl","expires_in","pending","failures"}`,
//!   or `404`.
//! - `DELETE` answers `204`, or `404`.
//!
//! Authorised like a publish: with `--publish-key-file`, without the JWT a `401`.
//! Without a webhook secret (`--webhook-secret` or `--webhook-secret-file`) the server
//! delivers nothing and these answer `404`.

use super::ControlContext;
use crate::http::{Request, Response};
use crate::server::subscriptions::{View, MAX_TTL_SECS};
use std::time::Duration;

/// The path's prefix; the rest is the subscription's name.
pub(super) const PREFIX: &str = "/subscriptions/";

/// Answers `PUT`, `GET` and `DELETE` of a subscription.
pub(super) fn subscription(context: &ControlContext, request: &Request) -> Response {
    if let Some(key) = &context.publish_key {
        if !super::publish::authorised(key, request) {
            return Response::error(
                401,
                "a subscription needs a JWT signed with the publish key",
            )
            .header("WWW-Authenticate", "Bearer");
        }
    }
    let Some(registry) = &context.subscriptions else {
        return Response::error(
            404,
            "this server delivers no subscriptions (it has no --webhook-secret)",
        );
    };
    let name = request.path.strip_prefix(PREFIX).unwrap_or_default();
    if !valid_name(name) {
        return Response::error(
            404,
            "a subscription's name is 1 to 128 of A-Z a-z 0-9 . _ ~ -",
        );
    }
    let stopped = || Response::error(503, "the subscriptions' registry is not running");
    match request.method.as_str() {
        "GET" => match registry.get(name) {
            Ok(Some(view)) => shown(200, &view),
            Ok(None) => Response::error(404, "no such subscription"),
            Err(_) => stopped(),
        },
        "DELETE" => match registry.delete(name) {
            Ok(true) => Response::new(204),
            Ok(false) => Response::error(404, "no such subscription"),
            Err(_) => stopped(),
        },
        _ => {
            let (channel, url, ttl) = match parse(&request.body) {
                Ok(parsed) => parsed,
                Err(why) => return Response::error(400, &why),
            };
            if let Err(refused) = registry.check(&url) {
                return Response::error(400, &format!("the url is refused: {refused}"));
            }
            match registry.put(name, &channel, &url, ttl) {
                Ok((true, view)) => shown(201, &view),
                Ok((false, view)) => shown(200, &view),
                Err(_) => stopped(),
            }
        }
    }
}

/// Whether `name` is a subscription's name.
fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// The body of a `PUT`: its channel, URL and TTL, or why it is not one.
fn parse(body: &[u8]) -> Result<(String, String, Duration), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let channel = value
        .get("channel")
        .and_then(|c| c.as_str())
        .filter(|c| crate::pipeline::channel::valid_channel(c))
        .ok_or("the body needs \"channel\", a channel's name")?;
    let url = value
        .get("url")
        .and_then(|u| u.as_str())
        .ok_or("the body needs \"url\", an http:// or https:// URL")?;
    let ttl = value
        .get("ttl")
        .and_then(|t| t.as_f64())
        .filter(|t| *t > 0.0 && *t <= MAX_TTL_SECS)
        .ok_or("the body needs \"ttl\", seconds, more than 0 and at most 2592000")?;
    Ok((
        channel.to_string(),
        url.to_string(),
        Duration::from_secs_f64(ttl),
    ))
}

/// A subscription's view as JSON.
fn shown(status: u16, view: &View) -> Response {
    Response::new(status)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(view).unwrap_or_default())
}
