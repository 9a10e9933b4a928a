//! Jobs that run later: the `Job-Delay` and `Job-Not-Before` fields of a submit (as
//! Celery's `countdown` and `eta`), read into the time a job may start.
//!
//! `Job-Delay: SECONDS` (a non-negative decimal number, `2` or `0.5`) counts from the
//! submit; `Job-Not-Before: <HTTP-date>` (RFC 9110 §5.6.7, e.g. `Sun, 06 Dec 2026
//! 08:00:00 GMT`) names the time. A time not in the future runs the job at once. Values
//! that do not read, both fields at once, a field given twice, or a time more than the
//! jobs' time to live ahead (`--jobs-ttl`) are refused ([`ScheduleError`], answered
//! `400`). The fields matter only on a `Prefer: respond-async` submit.

use crate::http::field_values;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

/// The field that delays a job by a number of seconds.
pub const JOB_DELAY: &str = "Job-Delay";
/// The field that names the time before which a job does not start.
pub const JOB_NOT_BEFORE: &str = "Job-Not-Before";

/// Why a submit's schedule is refused (answered `400` with this message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// Both `Job-Delay` and `Job-Not-Before`.
    Both,
    /// A field given more than once.
    Repeated(&'static str),
    /// `Job-Delay` is not a non-negative number of seconds.
    BadDelay(String),
    /// `Job-Not-Before` is not an HTTP-date.
    BadDate(String),
    /// The time is further ahead than the jobs' time to live.
    TooFar {
        /// The time to live.
        ttl: Duration,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Both => write!(
                f,
                "give {JOB_DELAY} or {JOB_NOT_BEFORE}, not both"
            ),
            ScheduleError::Repeated(field) => write!(f, "{field} is given more than once"),
            ScheduleError::BadDelay(value) => write!(
                f,
                "{JOB_DELAY} takes a number of seconds such as 30 or 2.5, not {value:?}"
            ),
            ScheduleError::BadDate(value) => write!(
                f,
                "{JOB_NOT_BEFORE} takes an HTTP-date such as \"Sun, 06 Dec 2026 08:00:00 GMT\", not {value:?}"
            ),
            ScheduleError::TooFar { ttl } => write!(
                f,
                "a job may be put off by at most the jobs' time to live, {}s",
                ttl.as_secs()
            ),
        }
    }
}

impl std::error::Error for ScheduleError {}

/// The time a submit's job may start, in milliseconds since the Unix epoch, from its
/// head's `Job-Delay` or `Job-Not-Before` (see the module's documentation); `None` to
/// run it at once. `now_ms` is the submit's time, `ttl` the jobs' time to live.
///
/// ```
/// use prime_server::jobs::schedule::not_before;
/// use std::time::Duration;
/// let day = Duration::from_secs(86_400);
/// let head = b"POST /x HTTP/1.1\r\nJob-Delay: 2.5\r\n\r\n";
/// assert_eq!(not_before(head, 1_000, day), Ok(Some(3_500)));
/// assert_eq!(not_before(b"POST /x HTTP/1.1\r\n\r\n", 1_000, day), Ok(None));
/// assert!(not_before(b"POST /x HTTP/1.1\r\nJob-Delay: soon\r\n\r\n", 0, day).is_err());
/// ```
pub fn not_before(head: &[u8], now_ms: i64, ttl: Duration) -> Result<Option<i64>, ScheduleError> {
    let delay = single(head, JOB_DELAY)?;
    let date = single(head, JOB_NOT_BEFORE)?;
    let at_ms = match (delay, date) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(ScheduleError::Both),
        (Some(delay), None) => {
            let ms = delay_ms(delay).ok_or_else(|| ScheduleError::BadDelay(text(delay)))?;
            now_ms.saturating_add(ms)
        }
        (None, Some(date)) => {
            let time = std::str::from_utf8(date)
                .ok()
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .ok_or_else(|| ScheduleError::BadDate(text(date)))?;
            time.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
                .unwrap_or(0)
        }
    };
    let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
    if at_ms.saturating_sub(now_ms) > ttl_ms {
        return Err(ScheduleError::TooFar { ttl });
    }
    Ok((at_ms > now_ms).then_some(at_ms))
}

/// The one value of `name` in `head`, if any.
fn single<'h>(head: &'h [u8], name: &'static str) -> Result<Option<&'h [u8]>, ScheduleError> {
    let mut values = field_values(head, name);
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(ScheduleError::Repeated(name)),
        (value, _) => Ok(value),
    }
}

/// A delay in seconds (`30`, `2.5`) as milliseconds, rounded; `None` unless it is
/// digits with at most one decimal point, and at most 12 digits before it.
fn delay_ms(value: &[u8]) -> Option<i64> {
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &b""[..]),
    };
    let digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
    if whole.is_empty() || whole.len() > 12 || !digits(whole) || !digits(fraction) {
        return None;
    }
    if value.ends_with(b".") {
        return None;
    }
    let seconds: f64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    Some((seconds * 1000.0).round() as i64)
}

/// A field value for a message: as text, cut short.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn head(fields: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn delays_and_dates_become_a_start_time() {
        assert_eq!(
            not_before(&head("Job-Delay: 2\r\n"), 10, DAY),
            Ok(Some(2_010))
        );
        assert_eq!(not_before(&head("job-delay: 0\r\n"), 10, DAY), Ok(None));
        let date = "Job-Not-Before: Thu, 01 Jan 1970 00:00:05 GMT\r\n";
        assert_eq!(not_before(&head(date), 1_000, DAY), Ok(Some(5_000)));
        assert_eq!(not_before(&head(date), 9_000, DAY), Ok(None), "past: now");
    }

    #[test]
    fn malformed_repeated_both_or_too_far_are_refused() {
        for value in ["-1", "soon", "1e3", "", "1.", ".5", "1.2.3", "0x10"] {
            let refused = not_before(&head(&format!("Job-Delay: {value}\r\n")), 0, DAY);
            assert!(
                matches!(refused, Err(ScheduleError::BadDelay(_))),
                "{value:?}"
            );
        }
        let bad_date = not_before(&head("Job-Not-Before: tomorrow\r\n"), 0, DAY);
        assert!(matches!(bad_date, Err(ScheduleError::BadDate(_))));
        let both = "Job-Delay: 1\r\nJob-Not-Before: Thu, 01 Jan 1970 00:00:05 GMT\r\n";
        assert_eq!(not_before(&head(both), 0, DAY), Err(ScheduleError::Both));
        let twice = "Job-Delay: 1\r\nJob-Delay: 2\r\n";
        assert_eq!(
            not_before(&head(twice), 0, DAY),
            Err(ScheduleError::Repeated(JOB_DELAY))
        );
        let far = not_before(&head("Job-Delay: 86401\r\n"), 0, DAY);
        assert_eq!(far, Err(ScheduleError::TooFar { ttl: DAY }));
        assert!(far.unwrap_err().to_string().contains("86400s"));
    }
}
