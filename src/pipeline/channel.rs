//! Channels as the pipeline carries them: a [`Hold`] (a stage asks the front end to keep
//! the client's connection on named channels) and an [`Item`] (a message published on a
//! channel, in GRIP's publish format), with the bus's topic framing.
//!
//! Both travel on the loopback (see [`crate::pipeline::loopback`]): a hold as
//! `[envelope‖H, hold JSON, answer bytes]`, a stage's publish as `[envelope‖B, item
//! JSON]`. Items travel between front ends on the bus ([`crate::pipeline::bus`]) as
//! `[topic, item JSON]`, where the topic is the channel's name followed by a NUL byte, so
//! that a subscription to `a` (`a\0`) never matches channel `ab` (`ab\0`): ZeroMQ
//! matches subscriptions as prefixes.
//!
//! The names are GRIP's (Generic Realtime Intermediary Protocol, as Pushpin and Fanout
//! define it): a hold's mode is `response` (long-poll) or `stream`; an item has a
//! `channel`, an `id`, a `prev-id` and `formats` (`http-response`, `http-stream`,
//! `ws-message`).

use crate::http::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 256;

/// The hold timeout when a stage gives none, in seconds (GRIP's `Grip-Timeout`
/// default).
pub const DEFAULT_HOLD_TIMEOUT: u32 = 55;

/// Whether `name` can be a channel's name: 1 to [`MAX_CHANNEL_LEN`] bytes, no NUL (the
/// bus's topic separator) and no control character.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_LEN && !name.chars().any(char::is_control)
}

/// The prefix of a job's channel, `job:{id}`: the job service publishes the job's
/// events there, and `GET /jobs/{id}/events` holds on it. Only the job service and the
/// control listener (with its key) publish on such a channel; a stage may not
/// ([`reserved_channel`]). The name holds the job's id, a secret: it is never logged.
pub const JOB_CHANNEL_PREFIX: &str = "job:";

/// The channel of the job `id` (see [`JOB_CHANNEL_PREFIX`]).
pub fn job_channel(id: &str) -> String {
    format!("{JOB_CHANNEL_PREFIX}{id}")
}

/// Whether `name` is a job's channel, where stages and clients may not publish.
pub fn reserved_channel(name: &str) -> bool {
    name.starts_with(JOB_CHANNEL_PREFIX)
}

/// The bus topic of a channel: its name and a NUL byte (see the module's notes).
pub fn topic(channel: &str) -> Vec<u8> {
    let mut topic = Vec::with_capacity(channel.len() + 1);
    topic.extend_from_slice(channel.as_bytes());
    topic.push(0);
    topic
}

/// The channel of a bus topic, if it is one.
pub fn channel_of_topic(topic: &[u8]) -> Option<&str> {
    let name = topic.strip_suffix(&[0])?;
    std::str::from_utf8(name).ok().filter(|n| valid_channel(n))
}

/// How a held request is answered (GRIP's `Grip-Hold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldMode {
    /// Long-poll: the first published message with an `http-response` format answers
    /// the request; at the timeout the hold's own answer is sent.
    Response,
    /// The hold's answer (head and body) goes out at once and the connection stays
    /// open; each `http-stream` message appends its content.
    Stream,
}

/// One channel of a hold, with the id of the last message the client has seen (GRIP's
/// `Grip-Channel: name; prev-id=17`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldChannel {
    /// The channel's name.
    pub name: String,
    /// The id of the last message the client saw on it: the messages after it that the
    /// front end still has are sent first.
    #[serde(rename = "prev-id", default, skip_serializing_if = "Option::is_none")]
    pub prev_id: Option<String>,
}

/// What a stream hold sends while nothing is published (GRIP's `Grip-Keep-Alive`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {
    /// The bytes to append (e.g. `:\n\n`, an SSE comment).
    pub content: Vec<u8>,
    /// After how many idle seconds they are sent (at least 1).
    pub interval: u32,
}

/// A stage's request to hold the client's connection on channels, with the answer it
/// would have given: sent at the timeout for [`HoldMode::Response`], sent at once (head
/// and body) for [`HoldMode::Stream`]. Returned from a stage as
/// [`Next::Hold`](crate::stages::Next::Hold).
///
/// ```
/// use prime_server::http::Response;
/// use prime_server::pipeline::channel::{Hold, HoldMode};
/// let hold = Hold::response(["account:42"]).timeout(20).answer(Response::new(204));
/// assert_eq!(hold.mode, HoldMode::Response);
/// assert_eq!(hold.timeout, 20);
/// let stream = Hold::stream(["a", "b"]).prev_id("a", "17").keep_alive(":\n\n", 15);
/// assert_eq!(stream.channels[0].prev_id.as_deref(), Some("17"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Long-poll or stream.
    pub mode: HoldMode,
    /// The channels held on (at least one).
    pub channels: Vec<HoldChannel>,
    /// Seconds until a response hold is answered with [`answer`](Self::answer) (55 by
    /// default); a stream hold has no timeout.
    pub timeout: u32,
    /// What a stream hold sends while idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    /// The stage's own answer (not serialized: it travels in the client's protocol in a
    /// frame of its own). By default `204 No Content` for a response hold and `200` with
    /// `Content-Type: text/event-stream` for a stream hold.
    #[serde(skip)]
    pub answer: Option<Response>,
}

impl Hold {
    fn new<I, S>(mode: HoldMode, channels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Hold {
            mode,
            channels: channels
                .into_iter()
                .map(|name| HoldChannel {
                    name: name.into(),
                    prev_id: None,
                })
                .collect(),
            timeout: DEFAULT_HOLD_TIMEOUT,
            keep_alive: None,
            answer: None,
        }
    }

    /// A long-poll on `channels`.
    pub fn response<I, S>(channels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(HoldMode::Response, channels)
    }

    /// A stream on `channels`.
    pub fn stream<I, S>(channels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(HoldMode::Stream, channels)
    }

    /// Seconds a response hold waits before it is answered with its own answer (at
    /// least 1).
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = seconds.max(1);
        self
    }

    /// The id of the last message the client saw on `channel`.
    pub fn prev_id(mut self, channel: &str, id: impl Into<String>) -> Self {
        let id = id.into();
        for held in self.channels.iter_mut().filter(|c| c.name == channel) {
            held.prev_id = Some(id.clone());
        }
        self
    }

    /// What a stream hold sends after `interval` idle seconds (at least 1).
    pub fn keep_alive(mut self, content: impl Into<Vec<u8>>, interval: u32) -> Self {
        self.keep_alive = Some(KeepAlive {
            content: content.into(),
            interval: interval.max(1),
        });
        self
    }

    /// The stage's own answer (see the field [`answer`](Self::answer)).
    pub fn answer(mut self, response: Response) -> Self {
        self.answer = Some(response);
        self
    }

    /// The answer to send, the default one if none was given.
    pub fn answer_or_default(&self) -> Response {
        match (&self.answer, self.mode) {
            (Some(answer), _) => answer.clone(),
            (None, HoldMode::Response) => Response::new(204),
            (None, HoldMode::Stream) => Response::new(200)
                .header("Content-Type", "text/event-stream")
                .header("Cache-Control", "no-cache"),
        }
    }

    /// Why the hold cannot be kept, if it cannot: no channel, or a bad channel name.
    pub fn check(&self) -> Result<(), ChannelError> {
        if self.channels.is_empty() {
            return Err(ChannelError("a hold needs at least one channel".into()));
        }
        match self.channels.iter().find(|c| !valid_channel(&c.name)) {
            Some(bad) => Err(ChannelError(format!(
                "{:?} is not a channel name (1 to {MAX_CHANNEL_LEN} bytes, no control characters)",
                bad.name
            ))),
            None => Ok(()),
        }
    }
}

/// A hold or an item that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelError(pub String);

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChannelError {}

/// GRIP's `http-response` format: the answer a response hold gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponseFormat {
    /// The status (200 when not given).
    pub code: u16,
    /// The reason phrase, if not the status's usual one (kept for GRIP; the front end
    /// writes the usual phrase).
    pub reason: Option<String>,
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`body` as text or `body-bin` as base64 in JSON).
    pub body: Vec<u8>,
}

/// GRIP's `http-stream` format: bytes a stream hold appends, or its close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpStreamFormat {
    /// The bytes (`content` as text or `content-bin` as base64 in JSON).
    pub content: Vec<u8>,
    /// `"action": "close"`: end the stream after the content.
    pub close: bool,
}

/// GRIP's `ws-message` format: a message sent to WebSockets held on the channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WsMessageFormat {
    /// The payload (`content` as text, sent as a text message; `content-bin` as base64
    /// in JSON, sent as a binary message).
    pub content: Vec<u8>,
    /// Sent as a binary message (it came as `content-bin`).
    pub binary: bool,
    /// `"action": "close"`: close the WebSocket with this status code (1000 unless
    /// `code` says otherwise) instead of sending a message.
    pub close: Option<u16>,
}

/// One published message (a GRIP publish item).
///
/// ```
/// use prime_server::pipeline::channel::Item;
/// let item = Item::parse(br#"{"channel":"a","id":"2","prev-id":"1",
///     "formats":{"http-stream":{"content":"data: hi\n\n"},
///                "http-response":{"code":200,"headers":{"Content-Type":"text/plain"},"body":"hi"}}}"#).unwrap();
/// assert_eq!(item.channel, "a");
/// assert_eq!(item.stream.as_ref().unwrap().content, b"data: hi\n\n");
/// assert_eq!(item.response.as_ref().unwrap().body, b"hi");
/// let again = Item::parse(&item.to_json()).unwrap();
/// assert_eq!(again, item);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Item {
    /// The channel it is published on.
    pub channel: String,
    /// Its id, for `prev-id` positions (optional).
    pub id: Option<String>,
    /// The id of the message published before it on the channel (optional): a front end
    /// that did not see that one knows it missed something.
    pub prev_id: Option<String>,
    /// The answer for response holds.
    pub response: Option<HttpResponseFormat>,
    /// The content for stream holds.
    pub stream: Option<HttpStreamFormat>,
    /// The message for WebSockets.
    pub ws_message: Option<WsMessageFormat>,
}

/// The JSON forms, as GRIP writes them.
mod wire {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub(super) struct Item {
        pub(super) channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) id: Option<String>,
        #[serde(rename = "prev-id", default, skip_serializing_if = "Option::is_none")]
        pub(super) prev_id: Option<String>,
        #[serde(default)]
        pub(super) formats: Formats,
        /// The formats as keys of the item itself, as EPCP publishers (`pubcontrol`,
        /// under `gripcontrol`) send them; `formats` wins where both are given.
        #[serde(flatten, default)]
        pub(super) top: Formats,
    }

    #[derive(Serialize, Deserialize, Default)]
    pub(super) struct Formats {
        #[serde(
            rename = "http-response",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub(super) http_response: Option<HttpResponse>,
        #[serde(
            rename = "http-stream",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub(super) http_stream: Option<HttpStream>,
        #[serde(
            rename = "ws-message",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub(super) ws_message: Option<WsMessage>,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct WsMessage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) content: Option<String>,
        #[serde(
            rename = "content-bin",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub(super) content_bin: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) action: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) code: Option<u16>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    pub(super) enum Headers {
        Object(serde_json::Map<String, serde_json::Value>),
        Pairs(Vec<(String, String)>),
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct HttpResponse {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) code: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) headers: Option<Headers>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) body: Option<String>,
        #[serde(rename = "body-bin", default, skip_serializing_if = "Option::is_none")]
        pub(super) body_bin: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct HttpStream {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) content: Option<String>,
        #[serde(
            rename = "content-bin",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub(super) content_bin: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) action: Option<String>,
    }
}

/// Text as it is, or base64 for bytes that are not UTF-8.
fn text_or_bin(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

fn bytes_of(
    text: Option<String>,
    bin: Option<String>,
    what: &str,
) -> Result<Vec<u8>, ChannelError> {
    match (text, bin) {
        (_, Some(bin)) => base64::engine::general_purpose::STANDARD
            .decode(bin.as_bytes())
            .map_err(|e| ChannelError(format!("{what}-bin is not base64: {e}"))),
        (Some(text), None) => Ok(text.into_bytes()),
        (None, None) => Ok(Vec::new()),
    }
}

impl Item {
    /// A message for stream holds on `channel`: `content` is appended as it is.
    pub fn stream(channel: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        Item {
            channel: channel.into(),
            stream: Some(HttpStreamFormat {
                content: content.into(),
                close: false,
            }),
            ..Item::default()
        }
    }

    /// A message for WebSockets held on `channel`: `content` goes as a text message
    /// (`binary`: a binary one).
    pub fn ws_message(
        channel: impl Into<String>,
        content: impl Into<Vec<u8>>,
        binary: bool,
    ) -> Self {
        Item {
            channel: channel.into(),
            ws_message: Some(WsMessageFormat {
                content: content.into(),
                binary,
                close: None,
            }),
            ..Item::default()
        }
    }

    /// Adds the `ws-message` format: `content` goes to WebSockets held on the channel
    /// as a text message (`binary`: a binary one).
    pub fn with_ws_message(mut self, content: impl Into<Vec<u8>>, binary: bool) -> Self {
        self.ws_message = Some(WsMessageFormat {
            content: content.into(),
            binary,
            close: None,
        });
        self
    }

    /// Adds the `http-response` format: `response` answers response holds.
    pub fn with_response(mut self, response: &Response) -> Self {
        self.response = Some(HttpResponseFormat {
            code: response.status,
            reason: None,
            headers: response.headers.clone(),
            body: response.body.clone(),
        });
        self
    }

    /// Sets the id (and the previous id, if given).
    pub fn id(mut self, id: impl Into<String>, prev_id: Option<String>) -> Self {
        self.id = Some(id.into());
        self.prev_id = prev_id;
        self
    }

    /// Reads one item from its JSON (GRIP's publish item); the channel name is checked.
    pub fn parse(json: &[u8]) -> Result<Item, ChannelError> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| ChannelError(format!("the item is not JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Reads one item from a JSON value (GRIP's publish item); the channel name is
    /// checked.
    pub fn from_value(value: serde_json::Value) -> Result<Item, ChannelError> {
        let item: wire::Item = serde_json::from_value(value)
            .map_err(|e| ChannelError(format!("the item is not a GRIP publish item: {e}")))?;
        Self::from_wire(item)
    }

    /// The items of a GRIP publish body, `{"items": [...]}`, read straight from its
    /// bytes, without a JSON tree first (the tree and the items made from it were most
    /// of what a publish cost the front end); `None` unless every item is good, for the
    /// caller to read the body with [`from_value`](Self::from_value) item by item,
    /// which names what is wrong.
    pub fn parse_publish(body: &[u8]) -> Option<Vec<Item>> {
        #[derive(Deserialize)]
        struct Publish {
            items: Vec<wire::Item>,
        }
        let publish: Publish = serde_json::from_slice(body).ok()?;
        publish
            .items
            .into_iter()
            .map(|item| Self::from_wire(item).ok())
            .collect()
    }

    /// An item read as GRIP writes it, checked: its channel's name, its formats (those
    /// under `formats` before those given as the item's own keys).
    fn from_wire(item: wire::Item) -> Result<Item, ChannelError> {
        if !valid_channel(&item.channel) {
            return Err(ChannelError(format!(
                "{:?} is not a channel name",
                item.channel
            )));
        }
        let item = wire::Item {
            formats: wire::Formats {
                http_response: item.formats.http_response.or(item.top.http_response),
                http_stream: item.formats.http_stream.or(item.top.http_stream),
                ws_message: item.formats.ws_message.or(item.top.ws_message),
            },
            top: wire::Formats::default(),
            ..item
        };
        let response = match item.formats.http_response {
            None => None,
            Some(r) => {
                let headers = match r.headers {
                    None => Vec::new(),
                    Some(wire::Headers::Pairs(pairs)) => pairs,
                    Some(wire::Headers::Object(map)) => map
                        .into_iter()
                        .map(|(name, value)| {
                            let value = match value {
                                serde_json::Value::String(s) => s,
                                other => other.to_string(),
                            };
                            (name, value)
                        })
                        .collect(),
                };
                if headers
                    .iter()
                    .any(|(n, v)| n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']))
                {
                    return Err(ChannelError(
                        "a header field holds CR, LF or a colon".into(),
                    ));
                }
                Some(HttpResponseFormat {
                    code: r.code.unwrap_or(200),
                    reason: r.reason,
                    headers,
                    body: bytes_of(r.body, r.body_bin, "body")?,
                })
            }
        };
        if response
            .as_ref()
            .is_some_and(|r| !(100..=999).contains(&r.code))
        {
            return Err(ChannelError(
                "the http-response code is not a status".into(),
            ));
        }
        let stream = match item.formats.http_stream {
            None => None,
            Some(s) => Some(HttpStreamFormat {
                close: s.action.as_deref() == Some("close"),
                content: bytes_of(s.content, s.content_bin, "content")?,
            }),
        };
        let ws_message = match item.formats.ws_message {
            None => None,
            Some(m) => Some(WsMessageFormat {
                binary: m.content_bin.is_some(),
                close: (m.action.as_deref() == Some("close")).then(|| m.code.unwrap_or(1000)),
                content: bytes_of(m.content, m.content_bin, "content")?,
            }),
        };
        Ok(Item {
            channel: item.channel,
            id: item.id,
            prev_id: item.prev_id,
            response,
            stream,
            ws_message,
        })
    }

    /// The item as GRIP's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let http_response = self.response.as_ref().map(|r| {
            let (body, body_bin) = text_or_bin(&r.body);
            wire::HttpResponse {
                code: Some(r.code),
                reason: r.reason.clone(),
                headers: Some(wire::Headers::Pairs(r.headers.clone())),
                body,
                body_bin,
            }
        });
        let http_stream = self.stream.as_ref().map(|s| {
            let (content, content_bin) = text_or_bin(&s.content);
            wire::HttpStream {
                content,
                content_bin,
                action: s.close.then(|| "close".to_string()),
            }
        });
        let ws_message = self.ws_message.as_ref().map(|m| {
            let (content, content_bin) = if m.binary {
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&m.content)),
                )
            } else {
                text_or_bin(&m.content)
            };
            wire::WsMessage {
                content,
                content_bin,
                action: m.close.map(|_| "close".to_string()),
                code: m.close,
            }
        });
        let item = wire::Item {
            channel: self.channel.clone(),
            id: self.id.clone(),
            prev_id: self.prev_id.clone(),
            formats: wire::Formats {
                http_response,
                http_stream,
                ws_message,
            },
            top: wire::Formats::default(),
        };
        serde_json::to_vec(&item).unwrap_or_default()
    }

    /// The `http-response` format as a response.
    pub fn response(&self) -> Option<Response> {
        let format = self.response.as_ref()?;
        Some(Response {
            status: format.code,
            headers: format.headers.clone(),
            body: format.body.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_publish_body_read_straight_gives_the_items_read_one_by_one() {
        let bodies = [
            r#"{"items": [{"channel": "a", "id": "2", "prev-id": "1",
                "formats": {"http-stream": {"content": "data: x\n\n"}}}]}"#,
            r#"{"items": [{"channel": "a", "http-stream": {"content-bin": "eHk=", "action": "close"}},
                {"channel": "b", "formats": {"http-response": {"code": 201, "reason": "Made",
                "headers": {"X-A": "1", "X-N": 2}, "body": "ok"}}},
                {"channel": "c", "formats": {"http-response": {"headers": [["X-B", "2"]],
                "body-bin": "b2s="}, "ws-message": {"content": "hi"}}}], "other": 1}"#,
            r#"{"items": []}"#,
        ];
        for body in bodies {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            let one_by_one: Vec<super::Item> = value["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| super::Item::from_value(item.clone()).unwrap())
                .collect();
            assert_eq!(
                super::Item::parse_publish(body.as_bytes()),
                Some(one_by_one),
                "{body}"
            );
        }
        for bad in [
            "not json",
            r#"{"items": 3}"#,
            r#"{"items": [{"channel": "", "formats": {}}]}"#,
            r#"{"items": [{"channel": "a", "formats": {"http-response": {"code": 7}}}]}"#,
        ] {
            assert_eq!(super::Item::parse_publish(bad.as_bytes()), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn only_a_job_s_channel_is_reserved() {
        assert_eq!(job_channel("abc"), "job:abc");
        assert!(reserved_channel(&job_channel("abc")));
        assert!(!reserved_channel("jobs"));
        assert!(!reserved_channel("account:job:1"));
    }

    #[test]
    fn topics_match_whole_names_only() {
        assert_eq!(topic("a"), b"a\0");
        assert!(!topic("ab").starts_with(&topic("a")));
        assert_eq!(channel_of_topic(b"ab\0"), Some("ab"));
        assert_eq!(channel_of_topic(b"ab"), None);
        assert!(!valid_channel("") && !valid_channel("a\0b") && valid_channel("job:1"));
    }

    #[test]
    fn items_read_grip_forms_and_refuse_bad_ones() {
        let item = Item::parse(
            br#"{"channel":"c","formats":{"http-stream":{"content-bin":"AAE=","action":"close"},
                "http-response":{"headers":[["X-A","1"]],"body-bin":"/w=="}}}"#,
        )
        .unwrap();
        assert_eq!(item.stream.as_ref().unwrap().content, [0, 1]);
        assert!(item.stream.as_ref().unwrap().close);
        let response = item.response().unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &[0xff][..])
        );
        assert_eq!(Item::parse(&item.to_json()).unwrap(), item);
        for bad in [
            &br#"{"formats":{}}"#[..],
            br#"{"channel":"","formats":{}}"#,
            br#"{"channel":"c","formats":{"http-response":{"code":7}}}"#,
            br#"{"channel":"c","formats":{"http-response":{"headers":{"A":"x\r\ny"}}}}"#,
            br#"{"channel":"c","formats":{"http-stream":{"content-bin":"!!"}}}"#,
            b"nope",
        ] {
            assert!(
                Item::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn ws_message_formats_read_text_binary_and_close() {
        let item =
            Item::parse(br#"{"channel":"c","formats":{"ws-message":{"content":"hi"}}}"#).unwrap();
        let format = item.ws_message.clone().unwrap();
        assert_eq!(
            (format.content.as_slice(), format.binary, format.close),
            (&b"hi"[..], false, None)
        );
        assert_eq!(Item::parse(&item.to_json()).unwrap(), item);
        let binary =
            Item::parse(br#"{"channel":"c","ws-message":{"content-bin":"AAE="}}"#).unwrap();
        let format = binary.ws_message.clone().unwrap();
        assert_eq!(
            (format.content.as_slice(), format.binary),
            (&[0u8, 1][..], true)
        );
        assert_eq!(Item::parse(&binary.to_json()).unwrap(), binary);
        let close = Item::parse(
            br#"{"channel":"c","formats":{"ws-message":{"action":"close","code":4000}}}"#,
        )
        .unwrap();
        assert_eq!(close.ws_message.unwrap().close, Some(4000));
        assert!(Item::ws_message("c", "x", true).ws_message.unwrap().binary);
    }

    #[test]
    fn holds_check_their_channels() {
        assert!(Hold::response(Vec::<String>::new()).check().is_err());
        assert!(Hold::stream(["ok", "bad\n"]).check().is_err());
        assert!(Hold::stream(["ok"]).check().is_ok());
        assert_eq!(Hold::response(["a"]).answer_or_default().status, 204);
    }

    #[test]
    fn formats_may_be_keys_of_the_item_as_pubcontrol_sends_them() {
        let item = Item::parse(br#"{"http-response": {"body": "hi\n"}, "channel": "c"}"#).unwrap();
        assert_eq!(item.response().unwrap().body, b"hi\n");
        let item = Item::parse(br#"{"channel": "c", "http-stream": {"content": "m"}}"#).unwrap();
        assert_eq!(item.stream.unwrap().content, b"m");
        let both = br#"{"channel": "c", "http-stream": {"content": "top"}, "formats": {"http-stream": {"content": "inner"}}}"#;
        assert_eq!(Item::parse(both).unwrap().stream.unwrap().content, b"inner");
    }
}
