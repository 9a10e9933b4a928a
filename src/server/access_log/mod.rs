//! The access log: one line per request, cheap enough for the hot path.
//!
//! Going through `log` and `env_logger` costs about 10,000 instructions a line (a
//! formatter, a timestamp, a locked write each). This log formats its own lines into one
//! buffer with no formatting machinery, formats the timestamp once per second, and
//! writes the buffer to stderr once per turn of the front end's loop (or when it holds
//! [`FLUSH_AT`] bytes).
//!
//! It is on while the `log` target `prime_server::access` is enabled at info (so the
//! default `info` level, and `RUST_LOG=prime_server::access=off` turns it off alone). A
//! line reads:
//!
//! ```text
//! 2026-12-01T02:29:42Z access 127.0.0.1:51234 "GET /is_prime?possible_prime=7 HTTP/1.1" 200 42B 0.3ms request=17
//! ```
//!
//! that is: when the answer was handed to the socket (UTC, whole seconds), the client's
//! address, the request line as received (`-` for a request too malformed to have one),
//! the status (`-` for netstrings), the body bytes, the time from the request's arrival
//! in milliseconds, and the request id that the other log lines about it carry. A
//! request that ends without an answer gets a line too, with `-` for status and size
//! and the reason at the end (`client-gone`); a request past its deadline is logged with
//! the 504 it was answered with.
//!
//! A job id in a target under the jobs' path is a capability, so the line carries its
//! tag instead ([`job_tag`](crate::jobs::tag::job_tag)):
//! `"GET /jobs/~3fa9c2e1/result HTTP/1.1"`. So may be a query's value: the value of
//! every query parameter whose name (in ASCII, any case, as sent: a percent-encoded
//! name is not decoded) contains one of [`SECRET_NAMES`](target::SECRET_NAMES)
//! (`token`, `key`, `secret`, `passw`, `pwd`, `sig`, `auth`, `credential`, `session`)
//! is logged as `REDACTED`: `GET /x?api_key=REDACTED&n=7`. The list errs on the side
//! of hiding (`monkey=` is hidden too). Writing the target so is `target`'s part.
//!
//! With `--access-log-format json` ([`AccessLogFormat::Json`]) each line is a JSON
//! object instead, with the fields nginx users log:
//!
//! ```text
//! {"time":"2026-12-01T02:29:42Z","client":"127.0.0.1","method":"GET","target":"/is_prime?possible_prime=7","protocol":"HTTP/1.1","status":200,"bytes":42,"duration_ms":0.312,"request_id":17,"upstream":"parse"}
//! ```
//!
//! A WebSocket gets two lines: its upgrade's, when the `101` is written, as any
//! request's; and one when it closes, under the upgrade's request line and id, with
//! the socket's life in place of the latency, the bytes of the message frames it was
//! sent in place of the body's, and what happened on it after the status:
//!
//! ```text
//! 2026-12-01T02:29:47Z access 127.0.0.1 "GET /is_prime HTTP/1.1" 101 4560B 5021.3ms request=17 websocket in=120 out=120 closed-by=client code=1000
//! ```
//!
//! `in` and `out` count the text and binary messages received and sent (answers,
//! pushes, a GRIP backend's events), `closed-by` who sent a Close first (`client`,
//! `server`, or `none` when the connection ended without one) and `code` its status
//! code (`-` for none). Its messages get no line each: at tens of thousands a second
//! per front end, a line per message would be most of the log and a good part of the
//! front end's work per message, and each one's request line would be the upgrade's
//! again; the metrics count them (`prime_websocket_messages_*`). In JSON the close's
//! line has the same fields and `"websocket":{"in":120,"out":120,"closed_by":"client","code":1000}`.
//!
//! `method`, `target` and `protocol` are `null` for a request without a request line;
//! `status` and `bytes` are `null` when nothing was answered, and `unanswered` then
//! gives the reason (`"client-gone"`). `upstream` is the stage the request entered the
//! pipeline at (its name where the front end knows it, else `"pipeline"`), or
//! `"front-end"` for what the front end answered itself (health, status, metrics,
//! errors, job resources).

mod head_end;
mod target;

use super::config::AccessLogFormat;
use super::front::EntryIndex;
use crate::base::calendar::{civil_date, put_digits};
use head_end::{HeadEnd, HEAD_END};
use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use target::{logs_as_it_is, put_target};

/// The `log` target whose level turns the access log on and off.
pub const TARGET: &str = "prime_server::access";

/// Lines are written out once the buffer holds this many bytes, even mid-turn.
const FLUSH_AT: usize = 64 * 1024;

/// The request line of a request that had none (rejected before it was read).
const NO_REQUEST_LINE: &[u8] = b"-";

/// How a request ended without an answer being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The client closed its connection (or was dropped) first.
    ClientGone,
}

impl Unanswered {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Unanswered::ClientGone => b"client-gone",
        }
    }
}

/// What a WebSocket's line at its close adds (see the module's documentation).
pub(crate) struct SocketSummary {
    /// Text and binary messages received.
    pub(crate) received: u64,
    /// Text and binary messages sent.
    pub(crate) sent: u64,
    /// The bytes of the frames of the messages sent.
    pub(crate) sent_bytes: u64,
    /// Who sent a Close first: `client`, `server` or `none`.
    pub(crate) closed_by: &'static str,
    /// The status code of that Close, if it had one.
    pub(crate) code: Option<u16>,
}

/// What the log needs to know of one request.
pub(crate) struct Entry<'a> {
    /// The request id.
    pub(crate) request_id: u64,
    /// The client's address, as libzmq reported it.
    pub(crate) peer: &'a str,
    /// The request line as received, if any.
    pub(crate) request_line: Option<&'a [u8]>,
    /// When the request arrived.
    pub(crate) arrived: Instant,
    /// Its age at this loop turn's clock ([`AccessLog::turn_now`]) in microseconds,
    /// when the caller has already worked it out; else the log works it out from
    /// `arrived`.
    pub(crate) age_us: Option<u64>,
    /// Where it entered the pipeline, if it did.
    pub(crate) upstream: Option<EntryIndex>,
}

/// The access log's buffer and clocks.
pub(crate) struct AccessLog {
    enabled: bool,
    buf: Vec<u8>,
    /// The time for the lines of this loop turn, taken at the turn's first line.
    now: Option<(Instant, u64)>,
    /// The monotonic time of this loop turn, for the metrics, taken at the turn's first
    /// answer whether or not lines are written.
    turn: Option<Instant>,
    /// The second the cached timestamp is for, and the timestamp.
    stamp_second: u64,
    stamp: [u8; 20],
    /// Finds the blank line that ends a response's head.
    head_end: HeadEnd,
    /// The jobs' path and a `/` (`/jobs/`), when jobs are kept: the segment after it
    /// is a job id, logged as its tag.
    jobs_prefix: Option<Vec<u8>>,
    /// Text or JSON lines.
    format: AccessLogFormat,
    /// The name of the stage behind each entry, for JSON's `upstream`: the main
    /// entry's, then each routed entry's.
    stages: Vec<String>,
}

impl AccessLog {
    /// An access log, on if its target is enabled at info; `jobs_path` is where job
    /// resources live (`/jobs`), if jobs are kept; `stages` names the stage behind
    /// each entry (the main one first, then the routed ones).
    pub(crate) fn new(
        jobs_path: Option<&str>,
        format: AccessLogFormat,
        stages: Vec<String>,
    ) -> Self {
        AccessLog {
            enabled: log::log_enabled!(target: TARGET, log::Level::Info),
            buf: Vec::new(),
            now: None,
            turn: None,
            stamp_second: u64::MAX,
            stamp: [b' '; 20],
            head_end: HeadEnd::new(),
            jobs_prefix: jobs_path.map(|p| format!("{}/", p.trim_end_matches('/')).into_bytes()),
            format,
            stages,
        }
    }

    /// Whether lines are written at all: when not, callers need not keep request lines.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Logs an answer handed to the client: `response` is its bytes in the client's
    /// protocol.
    pub(crate) fn answered(&mut self, entry: &Entry<'_>, response: &[u8]) {
        if !self.enabled {
            return;
        }
        let (status, body) = match http_status_and_body(response, &self.head_end) {
            Some((status, body)) => (status, body),
            None => (&b"-"[..], response.len()),
        };
        // The answer to `Expect: 100-continue` is not the request's answer.
        if status == b"100" {
            return;
        }
        self.answered_streamed(entry, status, body);
    }

    /// Logs an answer given as `status` and `body` bytes (a streamed answer counts its
    /// head and framing in `body`).
    pub(crate) fn answered_streamed(&mut self, entry: &Entry<'_>, status: &[u8], body: usize) {
        if !self.enabled {
            return;
        }
        if self.format == AccessLogFormat::Json {
            self.json_line(entry, Some(status), Some(body), None, None);
            return;
        }
        self.begin(entry);
        self.buf.extend_from_slice(status);
        self.end(entry, Some(body), None);
    }

    /// Logs a request that ended without an answer.
    pub(crate) fn unanswered(&mut self, entry: &Entry<'_>, why: Unanswered) {
        if !self.enabled {
            return;
        }
        if self.format == AccessLogFormat::Json {
            self.json_line(entry, None, None, Some(why), None);
            return;
        }
        self.begin(entry);
        self.buf.extend_from_slice(b"-");
        self.end(entry, None, Some(why));
    }

    /// Logs a WebSocket's close: `entry` is its upgrade request's (arrival, line, id).
    pub(crate) fn websocket_closed(&mut self, entry: &Entry<'_>, summary: &SocketSummary) {
        if !self.enabled {
            return;
        }
        let bytes = usize::try_from(summary.sent_bytes).unwrap_or(usize::MAX);
        if self.format == AccessLogFormat::Json {
            self.json_line(entry, Some(b"101"), Some(bytes), None, Some(summary));
            return;
        }
        let mut extra = Vec::with_capacity(80);
        let code = summary
            .code
            .map_or("-".to_string(), |code| code.to_string());
        // Writing into a Vec cannot fail.
        let _ = write!(
            extra,
            " websocket in={} out={} closed-by={} code={code}",
            summary.received, summary.sent, summary.closed_by
        );
        self.begin(entry);
        self.buf.extend_from_slice(b"101");
        self.end_with(entry, Some(bytes), None, &extra);
    }

    /// Writes what this turn logged, in one write.
    pub(crate) fn flush(&mut self) {
        self.now = None;
        self.turn = None;
        if self.buf.is_empty() {
            return;
        }
        // A log that cannot be written must not stop the server.
        let _ = std::io::stderr().lock().write_all(&self.buf);
        self.buf.clear();
    }

    /// Everything before the status: time, address, request line.
    fn begin(&mut self, entry: &Entry<'_>) {
        let (_, second) = self.now();
        if second != self.stamp_second {
            self.stamp_second = second;
            self.stamp = rfc3339(second);
        }
        self.buf.extend_from_slice(&self.stamp);
        self.buf.extend_from_slice(b" access ");
        self.buf.extend_from_slice(entry.peer.as_bytes());
        self.buf.extend_from_slice(b" \"");
        self.put_request_line(entry.request_line.unwrap_or(NO_REQUEST_LINE));
        self.buf.extend_from_slice(b"\" ");
    }

    /// The request line, its target made safe to log ([`put_target`]).
    fn put_request_line(&mut self, line: &[u8]) {
        let Some(space) = memchr::memchr(b' ', line) else {
            self.buf.extend_from_slice(line);
            return;
        };
        let rest = &line[space + 1..];
        // The usual target has nothing to hide: the line goes in one copy.
        if logs_as_it_is(rest, self.jobs_prefix.as_deref()) {
            self.buf.extend_from_slice(line);
            return;
        }
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.buf.extend_from_slice(&line[..=space]);
        put_target(&mut self.buf, &rest[..end], self.jobs_prefix.as_deref());
        self.buf.extend_from_slice(&rest[end..]);
    }

    /// A JSON line (see the module's documentation).
    fn json_line(
        &mut self,
        entry: &Entry<'_>,
        status: Option<&[u8]>,
        body: Option<usize>,
        why: Option<Unanswered>,
        websocket: Option<&SocketSummary>,
    ) {
        let (now, second) = self.now();
        if second != self.stamp_second {
            self.stamp_second = second;
            self.stamp = rfc3339(second);
        }
        let micros = entry.age_us.unwrap_or_else(|| age_us(entry.arrived, now));
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut words = entry
            .request_line
            .map(|line| line.splitn(3, |&b| b == b' '));
        let method = words.as_mut().and_then(Iterator::next).map(text);
        let target = words.as_mut().and_then(Iterator::next).map(|target| {
            let mut safe = Vec::with_capacity(target.len());
            put_target(&mut safe, target, self.jobs_prefix.as_deref());
            text(&safe)
        });
        let protocol = words.as_mut().and_then(Iterator::next).map(text);
        let status: Option<u16> = status
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok());
        let upstream = match entry.upstream {
            None => "front-end",
            Some(EntryIndex::Main) => self.stages.first().map_or("pipeline", String::as_str),
            Some(EntryIndex::Routed(index)) => self
                .stages
                .get(index + 1)
                .map_or("pipeline", String::as_str),
        };
        let mut line = serde_json::json!({
            "time": text(&self.stamp),
            "client": entry.peer,
            "method": method,
            "target": target,
            "protocol": protocol,
            "status": status,
            "bytes": body,
            "duration_ms": micros as f64 / 1000.0,
            "request_id": entry.request_id,
            "upstream": upstream,
        });
        if let Some(why) = why {
            line["unanswered"] = serde_json::Value::String(text(why.as_bytes()));
        }
        if let Some(socket) = websocket {
            line["websocket"] = serde_json::json!({
                "in": socket.received,
                "out": socket.sent,
                "closed_by": socket.closed_by,
                "code": socket.code,
            });
        }
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, &line);
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Everything after the status: size (`-` without one), latency, request id,
    /// reason. Written right to left into one small buffer, then appended at once.
    fn end(&mut self, entry: &Entry<'_>, body: Option<usize>, why: Option<Unanswered>) {
        self.end_with(entry, body, why, b"");
    }

    /// [`end`](Self::end), with `extra` before the line feed.
    fn end_with(
        &mut self,
        entry: &Entry<'_>,
        body: Option<usize>,
        why: Option<Unanswered>,
        extra: &[u8],
    ) {
        let micros = self.age_us(entry);
        let mut tail = Tail::new();
        if let Some(why) = why {
            tail.put(why.as_bytes());
            tail.put(b" ");
        }
        tail.decimal(entry.request_id);
        tail.put(b"ms request=");
        tail.decimal(micros % 1000 / 100);
        tail.put(b".");
        tail.decimal(micros / 1000);
        tail.put(b" ");
        match body {
            Some(body) => {
                tail.put(b"B");
                tail.decimal(body as u64);
            }
            None => tail.put(b"-"),
        }
        tail.put(b" ");
        self.buf.extend_from_slice(tail.as_bytes());
        self.buf.extend_from_slice(extra);
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// The time of this loop turn's answers: the monotonic clock is read once per turn.
    pub(crate) fn turn_now(&mut self) -> Instant {
        *self.turn.get_or_insert_with(Instant::now)
    }

    /// `entry`'s age at this turn's clock, in microseconds.
    fn age_us(&mut self, entry: &Entry<'_>) -> u64 {
        match entry.age_us {
            Some(age) => age,
            None => age_us(entry.arrived, self.now().0),
        }
    }

    /// The clock for this turn's lines: read once per turn.
    fn now(&mut self) -> (Instant, u64) {
        let turn = self.turn_now();
        *self.now.get_or_insert_with(|| {
            let second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            (turn, second)
        })
    }
}

/// The end of a line, written from its last byte backwards: numbers come out of
/// division lowest digit first, so they need no reversing or copying.
struct Tail {
    buf: [u8; TAIL_MAX],
    /// Where the written bytes start; they run to the end of `buf`.
    start: usize,
}

/// `00`, `01`, ... `99`: the two digits of each number below 100, side by side.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// The longest tail: ` ` + 20-digit size + `B ` + 20-digit ms + `.` + digit +
/// `ms request=` + 20-digit id + ` ` + the longest reason + a line feed, rounded up.
const TAIL_MAX: usize = 96;

impl Tail {
    fn new() -> Self {
        Tail {
            buf: [0; TAIL_MAX],
            start: TAIL_MAX,
        }
    }

    /// Writes `bytes` before what is written.
    fn put(&mut self, bytes: &[u8]) {
        let start = self.start - bytes.len();
        self.buf[start..self.start].copy_from_slice(bytes);
        self.start = start;
    }

    /// Writes `n` in decimal before what is written: two digits per division, from
    /// [`DIGIT_PAIRS`].
    fn decimal(&mut self, mut n: u64) {
        let mut start = self.start;
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            start -= 2;
            self.buf[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            start -= 2;
            self.buf[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            start -= 1;
            self.buf[start] = b'0' + n as u8;
        }
        self.start = start;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The microseconds from `arrived` to `now` (0 if `now` is earlier), as the access log
/// and the front end's metrics count a request's age.
pub(crate) fn age_us(arrived: Instant, now: Instant) -> u64 {
    let micros = now.saturating_duration_since(arrived).as_micros();
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// The status code and body size of an HTTP response; `None` for other protocols.
fn http_status_and_body<'r>(response: &'r [u8], head_end: &HeadEnd) -> Option<(&'r [u8], usize)> {
    if !response.starts_with(b"HTTP/1.") {
        return None;
    }
    let status = response.get(9..12)?;
    let body_start = head_end.find(response)? + HEAD_END.len();
    Some((status, response.len() - body_start))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a second since the Unix epoch (proleptic Gregorian, UTC).
fn rfc3339(second: u64) -> [u8; 20] {
    let days = (second / 86_400) as i64;
    let in_day = second % 86_400;
    let (year, month, day) = civil_date(days);
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, value: u64| put_digits(&mut out, at, width, value);
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day % 3600 / 60);
    put(17, 2, in_day % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::tag::job_tag;

    #[test]
    fn tail_numbers_are_written_in_decimal() {
        for n in [
            0,
            7,
            9,
            10,
            42,
            99,
            100,
            101,
            999,
            1000,
            12_345,
            99_999,
            u64::MAX,
        ] {
            let mut tail = Tail::new();
            tail.put(b"|");
            tail.decimal(n);
            tail.decimal(n % 100);
            assert_eq!(tail.as_bytes(), format!("{}{n}|", n % 100).as_bytes());
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(&rfc3339(0), b"1970-01-01T00:00:00Z");
        assert_eq!(&rfc3339(951_782_400), b"2000-02-29T00:00:00Z");
        assert_eq!(&rfc3339(1_700_000_000), b"2023-11-14T22:13:20Z");
        assert_eq!(&rfc3339(4_102_444_799), b"2099-12-31T23:59:59Z");
    }

    #[test]
    fn status_and_body_size_come_from_the_response() {
        let finder = HeadEnd::new();
        let response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            http_status_and_body(response, &finder),
            Some((&b"404"[..], 3))
        );
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(http_status_and_body(empty, &finder), Some((&b"204"[..], 0)));
        assert_eq!(http_status_and_body(b"3:abc,", &finder), None);
    }

    #[test]
    fn lines_hold_every_field() {
        let mut log = AccessLog::new(None, AccessLogFormat::Text, Vec::new());
        log.enabled = true;
        let arrived = Instant::now();
        let entry = Entry {
            request_id: 17,
            peer: "127.0.0.1:5000",
            request_line: Some(b"GET /x HTTP/1.1"),
            arrived,
            age_us: None,
            upstream: None,
        };
        log.answered(&entry, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        log.unanswered(&entry, Unanswered::ClientGone);
        let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains(r#" access 127.0.0.1:5000 "GET /x HTTP/1.1" 200 2B "#),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("ms request=17"), "{}", lines[0]);
        assert!(
            lines[1].contains(r#" "GET /x HTTP/1.1" - - "#),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("request=17 client-gone"), "{}", lines[1]);
        // An age the caller worked out is the one written.
        let aged = Entry {
            age_us: Some(12_345),
            ..entry
        };
        log.answered(&aged, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        assert!(text.ends_with(" 2B 12.3ms request=17\n"), "{text}");
    }

    #[test]
    fn a_websocket_close_is_one_line_in_both_formats() {
        let entry = Entry {
            request_id: 4,
            peer: "127.0.0.1",
            request_line: Some(b"GET /is_prime?key=k HTTP/1.1"),
            arrived: Instant::now(),
            age_us: None,
            upstream: None,
        };
        let summary = SocketSummary {
            received: 120,
            sent: 121,
            sent_bytes: 4560,
            closed_by: "client",
            code: Some(1000),
        };
        let mut log = AccessLog::new(None, AccessLogFormat::Text, Vec::new());
        log.enabled = true;
        log.websocket_closed(&entry, &summary);
        let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        assert!(
            text.contains(r#" access 127.0.0.1 "GET /is_prime?key=REDACTED HTTP/1.1" 101 4560B "#),
            "{text}"
        );
        assert!(
            text.ends_with("ms request=4 websocket in=120 out=121 closed-by=client code=1000\n"),
            "{text}"
        );
        let none = SocketSummary {
            closed_by: "none",
            code: None,
            ..summary
        };
        log.websocket_closed(&entry, &none);
        let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        assert!(text.ends_with(" closed-by=none code=-\n"), "{text}");

        let mut log = AccessLog::new(None, AccessLogFormat::Json, Vec::new());
        log.enabled = true;
        log.websocket_closed(&entry, &none);
        let line: serde_json::Value =
            serde_json::from_slice(&std::mem::take(&mut log.buf)).unwrap();
        assert_eq!(line["status"], 101);
        assert_eq!(line["bytes"], 4560);
        assert_eq!(line["request_id"], 4);
        assert_eq!(
            line["websocket"],
            serde_json::json!({"in": 120, "out": 121, "closed_by": "none", "code": null})
        );
    }

    #[test]
    fn a_job_id_in_a_target_is_logged_as_its_tag() {
        let mut log = AccessLog::new(Some("/jobs"), AccessLogFormat::Text, Vec::new());
        log.enabled = true;
        let id = "Yx0rZ2D8Qw9n3hKq1LmN4A";
        let tag = job_tag(id.as_bytes()).to_string();
        for (line, logged) in [
            (
                format!("GET /jobs/{id} HTTP/1.1"),
                format!("GET /jobs/{tag} HTTP/1.1"),
            ),
            (
                format!("GET /jobs/{id}/result HTTP/1.1"),
                format!("GET /jobs/{tag}/result HTTP/1.1"),
            ),
            (
                format!("GET /jobs/{id}?wait=5 HTTP/1.1"),
                format!("GET /jobs/{tag}?wait=5 HTTP/1.1"),
            ),
            (
                "GET /jobs HTTP/1.1".to_string(),
                "GET /jobs HTTP/1.1".to_string(),
            ),
            (
                "GET /x/jobs/a HTTP/1.1".to_string(),
                "GET /x/jobs/a HTTP/1.1".to_string(),
            ),
        ] {
            let entry = Entry {
                request_id: 1,
                peer: "127.0.0.1:5000",
                request_line: Some(line.as_bytes()),
                arrived: Instant::now(),
                age_us: None,
                upstream: None,
            };
            log.answered(&entry, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
            assert!(text.contains(&format!("\"{logged}\"")), "{text}");
            assert!(!text.contains(id), "{text}");
        }
    }

    #[test]
    fn secret_query_values_are_redacted_in_both_formats() {
        let line = b"GET /x?n=7&api_key=abc&Token=t0k&X-Amz-Signature=s1g&password&q=a=b HTTP/1.1";
        let logged =
            "/x?n=7&api_key=REDACTED&Token=REDACTED&X-Amz-Signature=REDACTED&password&q=a=b";
        for format in [AccessLogFormat::Text, AccessLogFormat::Json] {
            let mut log = AccessLog::new(None, format, Vec::new());
            log.enabled = true;
            let entry = Entry {
                request_id: 3,
                peer: "127.0.0.1:5000",
                request_line: Some(line),
                arrived: Instant::now(),
                age_us: None,
                upstream: None,
            };
            log.answered(&entry, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
            assert!(text.contains(logged), "{text}");
            for secret in ["abc", "t0k", "s1g"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn json_lines_hold_every_field() {
        let stages = vec!["parse".to_string(), "report".to_string()];
        let mut log = AccessLog::new(None, AccessLogFormat::Json, stages);
        log.enabled = true;
        let mut entry = Entry {
            request_id: 17,
            peer: "127.0.0.1:5000",
            request_line: Some(b"GET /x?\"y\" HTTP/1.1"),
            arrived: Instant::now(),
            age_us: None,
            upstream: Some(EntryIndex::Routed(0)),
        };
        log.answered(
            &entry,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        );
        entry.upstream = None;
        entry.request_line = None;
        log.unanswered(&entry, Unanswered::ClientGone);
        let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["client"], "127.0.0.1:5000");
        assert_eq!(first["method"], "GET");
        assert_eq!(first["target"], "/x?\"y\"");
        assert_eq!(first["protocol"], "HTTP/1.1");
        assert_eq!(first["status"], 404);
        assert_eq!(first["bytes"], 2);
        assert_eq!(first["request_id"], 17);
        assert_eq!(first["upstream"], "report");
        assert!(first["duration_ms"].is_f64(), "{first}");
        assert_eq!(first["time"].as_str().map(str::len), Some(20), "{first}");
        let second = &lines[1];
        assert_eq!(second["status"], serde_json::Value::Null);
        assert_eq!(second["method"], serde_json::Value::Null);
        assert_eq!(second["upstream"], "front-end");
        assert_eq!(second["unanswered"], "client-gone");
    }
}
