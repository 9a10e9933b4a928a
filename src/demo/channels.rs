//! The channels demo behind `prime_serverd`: hold on a channel, publish to it, with
//! nothing but curl.
//!
//! - `GET /channels/NAME`: a stream of Server-Sent Events on channel NAME (a comment
//!   every 20 s while idle); reconnect with `Last-Event-ID: 3` to get what came after
//!   message 3;
//! - `GET /channels/NAME?mode=response&timeout=S`: a long-poll, answered by the next
//!   message (or `204 No Content` after S seconds, 30 by default);
//! - `POST /channels/NAME?id=ID` with a text body: publishes the text to the channel's
//!   holds (a `data:` event for streams, a `text/plain` answer for long-polls), with id
//!   ID if given (the previous message's id is unknown to this stateless stage, so
//!   `prev-id` is left out). Answered `202 Accepted` once on its way; `403` on a job's
//!   channel (`job:{id}`), where only the job service and the control listener publish.

use crate::http::{Response, SseEvent};
use crate::pipeline::channel::{valid_channel, Hold, Item};
use crate::stages::{HttpJob, Next, StageError};

/// Where the channels demo answers.
pub const CHANNELS_PATH: &str = "/channels/";

/// The demo's stage function for paths under [`CHANNELS_PATH`].
pub fn channel_demo(job: &mut HttpJob) -> Result<Next, StageError> {
    let request = job.request()?;
    let name = request
        .path
        .strip_prefix(CHANNELS_PATH)
        .filter(|name| valid_channel(name))
        .ok_or_else(|| StageError::not_found("try /channels/NAME"))?
        .to_string();
    match request.method.as_str() {
        "GET" => {
            let mode = request.query_values("mode").next().unwrap_or("stream");
            match mode {
                "stream" => {
                    let head = Response::new(200)
                        .header("Content-Type", "text/event-stream")
                        .header("Cache-Control", "no-cache")
                        .body(SseEvent::comment(&format!("held on channel {name}")));
                    Ok(Next::hold(
                        Hold::stream([name])
                            .keep_alive(SseEvent::comment("keep-alive"), 20)
                            .answer(head),
                    ))
                }
                "response" => {
                    let timeout = match request.query_values("timeout").next() {
                        None => 30,
                        Some(text) => text.parse().map_err(|_| {
                            StageError::bad_request("timeout is a whole number of seconds")
                        })?,
                    };
                    Ok(Next::hold(Hold::response([name]).timeout(timeout)))
                }
                _ => Err(StageError::bad_request("mode is stream or response")),
            }
        }
        "POST" => {
            let text = String::from_utf8_lossy(&request.body).into_owned();
            let id = request.query_values("id").next().map(str::to_string);
            let mut event = SseEvent::new(text.clone());
            if let Some(id) = &id {
                event = event.id(id.clone());
            }
            let mut item = Item::stream(name.clone(), event.to_bytes()).with_response(
                &Response::new(200)
                    .header("Content-Type", "text/plain")
                    .body(text),
            );
            item.id = id;
            job.publish(&name, item)?;
            Ok(Next::respond(Response::json(
                202,
                &serde_json::json!({ "published": name }),
            )))
        }
        other => Err(StageError::method_not_allowed(
            "GET, POST",
            format!("{other} is not allowed on a channel; GET holds, POST publishes"),
        )),
    }
}
