//! Responses built by workers and serialized to bytes for the front end.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the front end writes when a request expects `100-continue`.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An HTTP response. `Content-Length`, `Date`, `Server` and `Connection` are
/// added by [`to_bytes`](Self::to_bytes) unless set here.
///
/// ```
/// # use prime_server::http::Response;
/// let bytes = Response::new(200)
///     .header("Content-Type", "text/plain")
///     .body("7 is prime")
///     .to_bytes(1, true, false);
/// let text = String::from_utf8(bytes).unwrap();
/// assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"));
/// assert!(text.ends_with("\r\n\r\n7 is prime"));
///
/// let error = Response::error(404, "no such page");
/// assert_eq!(error.body, br#"{"error":"no such page","status":404}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Three-digit status code.
    pub status: u16,
    /// Header fields in order. Names and values must not contain CR or LF.
    pub headers: Vec<(String, String)>,
    /// The body; never sent for HEAD requests, 1xx, 204 or 304.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        debug_assert!(
            !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']),
            "CR or LF in a header would split the response"
        );
        self.headers.push((name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON response with `value` serialized as its body: a `serde_json::Value`, or
    /// any `Serialize` type (a struct serializes without building a map first). A value
    /// that cannot be serialized (a map with non-string keys) gives a 500 instead.
    ///
    /// ```
    /// let response = prime_server::http::Response::json(200, &serde_json::json!({"ok": true}));
    /// assert_eq!(response.body, br#"{"ok":true}"#);
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status)
                .header("Content-Type", "application/json")
                .body(body),
            Err(e) => {
                log::error!("a JSON response could not be serialized: {e}");
                Response::error(500, "the response could not be serialized")
            }
        }
    }

    /// A JSON error response: `{"error":"message","status":N}`.
    pub fn error(status: u16, message: &str) -> Self {
        Response::json(
            status,
            &serde_json::json!({ "error": message, "status": status }),
        )
    }

    /// Serializes the response for a client speaking HTTP/1.`minor_version`.
    /// With `head_only` the body is left out but `Content-Length` still
    /// gives its length, as for the matching GET.
    pub fn to_bytes(&self, minor_version: u8, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::new();
        write_response(
            &mut out,
            self.status,
            &self.headers,
            &self.body,
            minor_version,
            keep_alive,
            head_only,
        );
        out
    }

    /// The head of a response whose body follows in pieces (see
    /// [`chunk`](Self::chunk)): `Transfer-Encoding: chunked` for HTTP/1.1 (RFC 9112
    /// §7.1), and for HTTP/1.0, which has no chunked coding, a body delimited by the
    /// connection's close (RFC 9112 §6.3), so `Connection: close`. The response's own
    /// body and any `Content-Length` it sets are left out.
    ///
    /// ```
    /// # use prime_server::http::Response;
    /// let head = Response::new(200).header("Content-Type", "text/event-stream").stream_head(1, true);
    /// let text = String::from_utf8(head).unwrap();
    /// assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"));
    /// assert!(!text.contains("Content-Length"));
    /// ```
    pub fn stream_head(&self, minor_version: u8, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(head_capacity(&self.headers));
        let (framing, keep_alive) = if minor_version == 0 {
            (BodyFraming::CloseDelimited, false)
        } else {
            (BodyFraming::Chunked, keep_alive)
        };
        let own = OwnFields::of(&self.headers);
        write_head(
            &mut out,
            self.status,
            &self.headers,
            own,
            minor_version,
            keep_alive,
            framing,
        );
        out
    }

    /// The head of a response whose body of `length` bytes follows in pieces sent as
    /// they are: `Content-Length: length` (RFC 9110 §8.6), no chunked coding. For
    /// HTTP/1.0 the connection closes after it (`Connection: close`). The response's
    /// own body and any `Content-Length` it sets are left out.
    ///
    /// ```
    /// # use prime_server::http::Response;
    /// let head = Response::new(200).header("Content-Length", "1").sized_stream_head(1, true, 5);
    /// let text = String::from_utf8(head).unwrap();
    /// assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"));
    /// assert!(!text.contains("chunked") && !text.contains("Content-Length: 1"));
    /// ```
    pub fn sized_stream_head(&self, minor_version: u8, keep_alive: bool, length: u64) -> Vec<u8> {
        let fields: Vec<&(String, String)> = self
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
            .collect();
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut out = Vec::with_capacity(head_capacity(&fields));
        let own = OwnFields::of(&fields);
        let keep_alive = keep_alive && minor_version != 0;
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        write_head(
            &mut out,
            self.status,
            &fields,
            own,
            minor_version,
            keep_alive,
            BodyFraming::Length(length),
        );
        out
    }

    /// A piece of a streamed body, framed for HTTP/1.`minor_version`: a chunk for 1.1,
    /// the bytes as they are for 1.0. An empty piece is nothing (an empty chunk would end
    /// the body).
    pub fn chunk(minor_version: u8, piece: &[u8]) -> Vec<u8> {
        if minor_version == 0 || piece.is_empty() {
            return piece.to_vec();
        }
        let mut out = Vec::with_capacity(piece.len() + 12);
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The end of a streamed body: the last chunk for 1.1, nothing for 1.0 (the
    /// connection's close ends it).
    pub fn last_chunk(minor_version: u8) -> &'static [u8] {
        if minor_version == 0 {
            b""
        } else {
            b"0\r\n\r\n"
        }
    }
}

/// Serializes a whole response into `out` (appended), for a client speaking
/// HTTP/1.`minor_version`, as [`Response::to_bytes`] does for a response with this
/// status, these header fields and this body, without building one: the head and the
/// body land in one buffer reserved once. `head_only` leaves the body out (a HEAD
/// request) while `Content-Length` still gives its length.
///
/// ```
/// # use prime_server::http::{write_response, Response};
/// let mut out = Vec::new();
/// let fields = [("Content-Type", "text/plain")];
/// write_response(&mut out, 200, &fields, b"7 is prime", 1, true, false);
/// let response = Response::new(200).header("Content-Type", "text/plain").body("7 is prime");
/// let (a, b) = (String::from_utf8(out).unwrap(), String::from_utf8(response.to_bytes(1, true, false)).unwrap());
/// // The same bytes, but for the Date field, which may have ticked in between.
/// let without_date = |t: &str| t.lines().filter(|l| !l.starts_with("Date: ")).collect::<Vec<_>>().join("\n");
/// assert_eq!(without_date(&a), without_date(&b));
/// ```
pub fn write_response<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    status: u16,
    fields: &[(N, V)],
    body: &[u8],
    minor_version: u8,
    keep_alive: bool,
    head_only: bool,
) {
    let bodiless = has_no_body(status);
    let send_body = !head_only && !bodiless;
    out.reserve(head_capacity(fields) + if send_body { body.len() } else { 0 });
    let own = OwnFields::of(fields);
    let framing = if !bodiless && !own.content_length {
        BodyFraming::Length(body.len())
    } else {
        BodyFraming::AsSet
    };
    write_head(out, status, fields, own, minor_version, keep_alive, framing);
    if send_body {
        out.extend_from_slice(body);
    }
}

/// Room for a head with these fields: the status line, the fields, and the ones added.
fn head_capacity<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &[(N, V)]) -> usize {
    let fields: usize = fields
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 4)
        .sum();
    160 + fields
}

/// Which of the fields a head adds by itself the response has set: those it keeps.
#[derive(Clone, Copy, Default)]
struct OwnFields {
    content_length: bool,
    date: bool,
    server: bool,
    connection: bool,
}

impl OwnFields {
    /// One pass over the fields, names matched case-insensitively.
    fn of<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &[(N, V)]) -> Self {
        let mut own = OwnFields::default();
        for (name, _) in fields {
            let name = name.as_ref();
            // The length rules out most names before any comparison.
            let (flag, expected): (_, &[u8]) = match name.len() {
                4 => (&mut own.date, b"date"),
                6 => (&mut own.server, b"server"),
                10 => (&mut own.connection, b"connection"),
                14 => (&mut own.content_length, b"content-length"),
                _ => continue,
            };
            *flag |= name.eq_ignore_ascii_case(expected);
        }
        own
    }
}

/// The status line, the fields, and the fields the head adds unless set (`own`):
/// framing, `Date`, `Server` and `Connection`, then the blank line.
fn write_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    status: u16,
    fields: &[(N, V)],
    own: OwnFields,
    minor_version: u8,
    keep_alive: bool,
    framing: BodyFraming,
) {
    out.extend_from_slice(if minor_version == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let streamed = matches!(framing, BodyFraming::Chunked | BodyFraming::CloseDelimited);
    for (name, value) in fields {
        let name = name.as_ref();
        if streamed && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        push_field(out, name, value.as_ref());
    }
    match framing {
        BodyFraming::Length(length) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, length as u64);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::CloseDelimited | BodyFraming::AsSet => {}
    }
    if !own.date {
        push_date(out);
    }
    if !own.server {
        out.extend_from_slice(b"Server: prime_server\r\n");
    }
    if !own.connection {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited.
#[derive(Clone, Copy)]
enum BodyFraming {
    /// `Content-Length` of this many bytes.
    Length(usize),
    /// As the response's own fields say (no body, or its own `Content-Length`).
    AsSet,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// By the close of the connection (HTTP/1.0).
    CloseDelimited,
}

/// RFC 9110 §6.4.1: these statuses never carry content.
fn has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(n, &mut digits));
}

/// `n` in decimal, written at the end of `digits`.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}

/// Appends a status code: three digits (RFC 9110 §15), whatever the number.
fn push_status(out: &mut Vec<u8>, status: u16) {
    if (100..1000).contains(&status) {
        let digit = |d: u16| b'0' + (d % 10) as u8;
        out.extend_from_slice(&[digit(status / 100), digit(status / 10), digit(status)]);
    } else {
        push_decimal(out, u64::from(status));
    }
}

/// `Date: <IMF-fixdate>\r\n`, 37 bytes.
const DATE_FIELD_LEN: usize = 37;

/// The `Date` field line of one second: `from` (the second's start) until `until`.
#[derive(Clone, Copy)]
struct DateLine {
    from: SystemTime,
    until: SystemTime,
    line: [u8; DATE_FIELD_LEN],
}

thread_local! {
    /// Formatting a date costs more than the rest of a small response, and it only
    /// changes once a second. Checking that the clock is still within the cached
    /// second is two comparisons, no arithmetic.
    static DATE: Cell<DateLine> = const {
        Cell::new(DateLine { from: UNIX_EPOCH, until: UNIX_EPOCH, line: [0; DATE_FIELD_LEN] })
    };
}

/// Appends the `Date` field for the current second.
fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let cached = DATE.get();
    if cached.from <= now && now < cached.until {
        return out.extend_from_slice(&cached.line);
    }
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let from = UNIX_EPOCH + Duration::from_secs(second);
    let date = httpdate::fmt_http_date(from);
    let mut fresh = Vec::with_capacity(DATE_FIELD_LEN);
    push_field(&mut fresh, b"Date", date.as_bytes());
    // An IMF-fixdate is always 29 bytes; should a year past 9999 make it longer, it is
    // written as it is, uncached.
    if let Ok(line) = <[u8; DATE_FIELD_LEN]>::try_from(fresh.as_slice()) {
        let until = from + Duration::from_secs(1);
        DATE.set(DateLine { from, until, line });
    }
    out.extend_from_slice(&fresh);
}

/// The standard reason phrase for a status code, or `""` for an unknown one
/// (the reason phrase is optional in a status line).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &Response, minor: u8, keep_alive: bool, head_only: bool) -> String {
        String::from_utf8(response.to_bytes(minor, keep_alive, head_only)).expect("ascii")
    }

    fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    #[test]
    fn head_only_keeps_length_and_drops_body() {
        let r = Response::new(200).body("12345");
        let t = text(&r, 1, true, true);
        assert!(t.ends_with("\r\n\r\n"), "{t}");
        assert_eq!(field(&t, "Content-Length"), Some("5"));
        assert!(text(&r, 1, true, false).ends_with("\r\n\r\n12345"));
    }

    #[test]
    fn connection_header_per_version_and_keep_alive() {
        let r = Response::new(200);
        assert_eq!(field(&text(&r, 1, true, false), "Connection"), None);
        assert_eq!(
            field(&text(&r, 1, false, false), "Connection"),
            Some("close")
        );
        assert_eq!(
            field(&text(&r, 0, true, false), "Connection"),
            Some("keep-alive")
        );
        assert_eq!(
            field(&text(&r, 0, false, false), "Connection"),
            Some("close")
        );
        assert!(text(&r, 0, false, false).starts_with("HTTP/1.0 200 OK\r\n"));
    }

    #[test]
    fn date_and_server_are_present_and_well_formed() {
        let t = text(&Response::new(204), 1, true, false);
        let date = field(&t, "Date").expect("Date header");
        let parsed = httpdate::parse_http_date(date).expect("IMF-fixdate");
        let age = SystemTime::now()
            .duration_since(parsed)
            .map_or(0, |d| d.as_secs());
        assert!(age < 5);
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        assert_eq!(field(&t, "Server"), Some("prime_server"));
    }

    #[test]
    fn user_headers_win_and_bodiless_statuses_have_no_length() {
        let r = Response::new(200)
            .header("content-length", "3")
            .header("Date", "x")
            .header("Server", "y")
            .header("Connection", "upgrade")
            .body("abc");
        let t = text(&r, 1, false, false).to_ascii_lowercase();
        for name in ["content-length", "date", "server", "connection"] {
            assert_eq!(
                t.matches(&format!("\r\n{name}: ")).count(),
                1,
                "{name} in {t}"
            );
        }
        let t = text(&Response::new(204).body("x"), 1, true, false);
        assert_eq!(field(&t, "Content-Length"), None);
        assert!(t.ends_with("\r\n\r\n"));
    }

    #[test]
    fn error_and_json_bodies() {
        let r = Response::error(413, "too \"big\"");
        assert_eq!(r.status, 413);
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"error": "too \"big\"", "status": 413})
        );
        let t = text(&r, 1, false, false);
        assert!(t.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
        assert_eq!(field(&t, "Content-Type"), Some("application/json"));
        assert_eq!(
            field(&t, "Content-Length"),
            Some(r.body.len().to_string().as_str())
        );
    }

    #[test]
    fn decimals_and_reasons() {
        for n in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert_eq!(reason_phrase(404), "Not Found");
        assert!(text(&Response::new(599), 1, true, false).starts_with("HTTP/1.1 599 \r\n"));
    }
}
