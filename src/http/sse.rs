//! The Server-Sent Events format (WHATWG HTML, "Server-sent events"): the
//! `text/event-stream` events and the response head that starts such a stream. The
//! front end writes it for `GET /jobs/{id}/events`; stages can send it through a
//! streamed answer ([`crate::pipeline::stream::ResponseStream`]).

use super::Response;

/// One event of a `text/event-stream`.
///
/// ```
/// use prime_server::http::SseEvent;
/// let event = SseEvent::new("line one\nline two").id("7").event("progress");
/// assert_eq!(event.to_bytes(), b"id: 7\nevent: progress\ndata: line one\ndata: line two\n\n");
/// assert_eq!(SseEvent::comment("keep-alive"), b": keep-alive\n\n");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`, which a reconnecting client sends back as `Last-Event-ID`.
    pub id: Option<String>,
    /// `event:`, the event's type (`message` when absent).
    pub event: Option<String>,
    /// `data:`, one line per line of the data.
    pub data: String,
    /// `retry:`, the reconnection time the client should use, in milliseconds.
    pub retry_ms: Option<u64>,
}

impl SseEvent {
    /// An event carrying `data`.
    pub fn new(data: impl Into<String>) -> Self {
        SseEvent {
            data: data.into(),
            ..SseEvent::default()
        }
    }

    /// Sets the event's id. CR and LF, which would end the field, are left out.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(one_line(id.into()));
        self
    }

    /// Sets the event's type. CR and LF are left out.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(one_line(event.into()));
        self
    }

    /// The event as it is written to the stream.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.data.len() + 32);
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        if let Some(event) = &self.event {
            out.push_str("event: ");
            out.push_str(event);
            out.push('\n');
        }
        if let Some(retry) = self.retry_ms {
            out.push_str(&format!("retry: {retry}\n"));
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line.strip_suffix('\r').unwrap_or(line));
            out.push('\n');
        }
        out.push('\n');
        out.into_bytes()
    }

    /// A comment line, which clients ignore: sent to keep idle proxies from closing the
    /// stream.
    pub fn comment(text: &str) -> Vec<u8> {
        format!(": {}\n\n", one_line(text.to_string())).into_bytes()
    }
}

fn one_line(text: String) -> String {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], "")
    } else {
        text
    }
}

/// The head of an event stream's response (`text/event-stream`, never cached, never
/// buffered by proxies that honour `X-Accel-Buffering`).
pub fn sse_response() -> Response {
    Response::new(200)
        .header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no")
}
