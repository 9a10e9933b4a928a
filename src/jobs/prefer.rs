//! Reading what a client asks of the job machinery: the `Prefer` field (RFC 7240), the
//! `Idempotency-Key` field, and the job resources' paths.

use crate::http::field_values;
use std::time::Duration;

/// What a request's `Prefer` fields ask for (RFC 7240 §4.1 and §4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncPreference {
    /// `respond-async`: answer `202 Accepted` and run the request as a job.
    pub respond_async: bool,
    /// `wait=N`: the client would rather wait up to N seconds for the real answer.
    pub wait: Option<Duration>,
}

impl AsyncPreference {
    /// Reads every `Prefer` field of a request head (the request line and header
    /// section as received). Preferences are a comma-separated list of `token[=value]`,
    /// each with optional `;` parameters; names are case-insensitive, values may be
    /// quoted; several `Prefer` fields add up (RFC 7240 §2). The first `wait` counts.
    ///
    /// ```
    /// use prime_server::jobs::AsyncPreference;
    /// use std::time::Duration;
    /// let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nPrefer: handling=lenient, Respond-Async\r\nprefer: wait=\"10\"\r\n\r\n";
    /// let preference = AsyncPreference::from_head(head);
    /// assert!(preference.respond_async);
    /// assert_eq!(preference.wait, Some(Duration::from_secs(10)));
    /// ```
    pub fn from_head(head: &[u8]) -> AsyncPreference {
        let mut preference = AsyncPreference::default();
        for value in field_values(head, "prefer") {
            for item in value.split(|&b| b == b',') {
                let token = item.split(|&b| b == b';').next().unwrap_or_default();
                let (name, value) = match token.iter().position(|&b| b == b'=') {
                    Some(at) => (&token[..at], Some(&token[at + 1..])),
                    None => (token, None),
                };
                let name = name.trim_ascii();
                if name.eq_ignore_ascii_case(b"respond-async") {
                    preference.respond_async = true;
                } else if name.eq_ignore_ascii_case(b"wait") && preference.wait.is_none() {
                    preference.wait = value.and_then(seconds);
                }
            }
        }
        preference
    }
}

/// Reads a delta-seconds value, quoted or not.
fn seconds(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    let text = std::str::from_utf8(value).ok()?;
    text.parse::<u32>()
        .ok()
        .map(|s| Duration::from_secs(u64::from(s)))
}

/// The longest `Idempotency-Key` taken.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`, if it has one: printable ASCII, at most
/// [`MAX_IDEMPOTENCY_KEY`] bytes, quotes removed. `Err` for a key that breaks these
/// rules (answered `400`).
pub fn idempotency_key(head: &[u8]) -> Result<Option<String>, &'static str> {
    let Some(value) = field_values(head, "idempotency-key").next() else {
        return Ok(None);
    };
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY {
        return Err("Idempotency-Key must have 1 to 255 characters");
    }
    if !value.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err("Idempotency-Key must be printable ASCII");
    }
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

/// A request for one of the job resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRoute {
    /// `{path}/{id}`: the job's state (`GET`, `HEAD`) or its cancellation (`DELETE`).
    Job {
        /// The id as given.
        id: String,
        /// `?wait=S`: long-poll up to S seconds for a change of state.
        wait: Option<Duration>,
    },
    /// `{path}/{id}/result`: the stored answer.
    Result {
        /// The id as given.
        id: String,
    },
    /// `{path}/{id}/events`: the job's event stream.
    Events {
        /// The id as given.
        id: String,
    },
    /// Anything else under `{path}`.
    Unknown,
}

impl JobRoute {
    /// Reads a request target under `prefix` (e.g. `/jobs`); `None` when the target is
    /// not under it.
    ///
    /// ```
    /// use prime_server::jobs::JobRoute;
    /// use std::time::Duration;
    /// assert_eq!(
    ///     JobRoute::parse("/jobs", "/jobs/abc?wait=5"),
    ///     Some(JobRoute::Job { id: "abc".into(), wait: Some(Duration::from_secs(5)) })
    /// );
    /// assert_eq!(JobRoute::parse("/jobs", "/jobs/abc/result"), Some(JobRoute::Result { id: "abc".into() }));
    /// assert_eq!(JobRoute::parse("/jobs", "/jobsite"), None);
    /// assert_eq!(JobRoute::parse("/jobs", "/jobs"), Some(JobRoute::Unknown));
    /// ```
    pub fn parse(prefix: &str, target: &str) -> Option<JobRoute> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let rest = path.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        Some(match parts[..] {
            [id] if !id.is_empty() => JobRoute::Job {
                id: id.to_string(),
                wait: form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "wait")
                    .and_then(|(_, value)| seconds(value.as_bytes())),
            },
            [id, "result"] if !id.is_empty() => JobRoute::Result { id: id.to_string() },
            [id, "events"] if !id.is_empty() => JobRoute::Events { id: id.to_string() },
            _ => JobRoute::Unknown,
        })
    }
}
