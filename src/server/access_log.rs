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
//! tag instead ([`job_tag`]): `"GET /jobs/~3fa9c2e1/result HTTP/1.1"`.

use crate::jobs::tag::job_tag;
use memchr::memmem::Finder;
use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
}

/// The access log's buffer and clocks.
pub(crate) struct AccessLog {
    enabled: bool,
    buf: Vec<u8>,
    /// The time for the lines of this loop turn, taken at the turn's first line.
    now: Option<(Instant, u64)>,
    /// The second the cached timestamp is for, and the timestamp.
    stamp_second: u64,
    stamp: [u8; 20],
    /// Finds the blank line that ends a response's head.
    head_end: Finder<'static>,
    /// The jobs' path and a `/` (`/jobs/`), when jobs are kept: the segment after it
    /// is a job id, logged as its tag.
    jobs_prefix: Option<Vec<u8>>,
}

impl AccessLog {
    /// An access log, on if its target is enabled at info; `jobs_path` is where job
    /// resources live (`/jobs`), if jobs are kept.
    pub(crate) fn new(jobs_path: Option<&str>) -> Self {
        AccessLog {
            enabled: log::log_enabled!(target: TARGET, log::Level::Info),
            buf: Vec::new(),
            now: None,
            stamp_second: u64::MAX,
            stamp: [b' '; 20],
            head_end: Finder::new(HEAD_END),
            jobs_prefix: jobs_path.map(|p| format!("{}/", p.trim_end_matches('/')).into_bytes()),
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
        self.begin(entry);
        self.buf.extend_from_slice(status);
        self.end(entry, Some(body), None);
    }

    /// Logs a request that ended without an answer.
    pub(crate) fn unanswered(&mut self, entry: &Entry<'_>, why: Unanswered) {
        if !self.enabled {
            return;
        }
        self.begin(entry);
        self.buf.extend_from_slice(b"-");
        self.end(entry, None, Some(why));
    }

    /// Writes what this turn logged, in one write.
    pub(crate) fn flush(&mut self) {
        self.now = None;
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

    /// The request line, with a job id in its target replaced by the id's tag.
    fn put_request_line(&mut self, line: &[u8]) {
        if let Some(prefix) = &self.jobs_prefix {
            let id_start = memchr::memchr(b' ', line)
                .map(|space| space + 1)
                .filter(|&at| line[at..].starts_with(prefix))
                .map(|at| at + prefix.len());
            if let Some(id_start) = id_start {
                let rest = &line[id_start..];
                let id_len = rest
                    .iter()
                    .position(|&b| matches!(b, b'/' | b'?' | b'#' | b' '))
                    .unwrap_or(rest.len());
                if id_len > 0 {
                    self.buf.extend_from_slice(&line[..id_start]);
                    self.buf
                        .extend_from_slice(job_tag(&rest[..id_len]).as_bytes());
                    self.buf.extend_from_slice(&rest[id_len..]);
                    return;
                }
            }
        }
        self.buf.extend_from_slice(line);
    }

    /// Everything after the status: size (`-` without one), latency, request id,
    /// reason. Written right to left into one small buffer, then appended at once.
    fn end(&mut self, entry: &Entry<'_>, body: Option<usize>, why: Option<Unanswered>) {
        let (now, _) = self.now();
        let micros = now.saturating_duration_since(entry.arrived).as_micros() as u64;
        let mut tail = Tail::new();
        tail.put(b"\n");
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
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// The time of this loop turn's answers: the clock is read once per turn.
    pub(crate) fn turn_now(&mut self) -> Instant {
        self.now().0
    }

    /// The clock for this turn's lines: read once per turn.
    fn now(&mut self) -> (Instant, u64) {
        *self.now.get_or_insert_with(|| {
            let second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            (Instant::now(), second)
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

    /// Writes `n` in decimal before what is written.
    fn decimal(&mut self, mut n: u64) {
        loop {
            self.start -= 1;
            self.buf[self.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
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

/// The blank line that ends a response's head.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// The status code and body size of an HTTP response; `None` for other protocols.
/// `head_end` is a finder of [`HEAD_END`].
fn http_status_and_body<'r>(
    response: &'r [u8],
    head_end: &Finder<'_>,
) -> Option<(&'r [u8], usize)> {
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
    // Days to a civil date, counting eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
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

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(&rfc3339(0), b"1970-01-01T00:00:00Z");
        assert_eq!(&rfc3339(951_782_400), b"2000-02-29T00:00:00Z");
        assert_eq!(&rfc3339(1_700_000_000), b"2023-11-14T22:13:20Z");
        assert_eq!(&rfc3339(4_102_444_799), b"2099-12-31T23:59:59Z");
    }

    #[test]
    fn status_and_body_size_come_from_the_response() {
        let finder = Finder::new(HEAD_END);
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
        let mut log = AccessLog::new(None);
        log.enabled = true;
        let arrived = Instant::now();
        let entry = Entry {
            request_id: 17,
            peer: "127.0.0.1:5000",
            request_line: Some(b"GET /x HTTP/1.1"),
            arrived,
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
    }

    #[test]
    fn a_job_id_in_a_target_is_logged_as_its_tag() {
        let mut log = AccessLog::new(Some("/jobs"));
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
            };
            log.answered(&entry, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
            assert!(text.contains(&format!("\"{logged}\"")), "{text}");
            assert!(!text.contains(id), "{text}");
        }
    }
}
