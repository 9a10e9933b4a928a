//! The job admin API on the control listener, for operators: list jobs by filter with
//! paging, follow the feed of job changes, retry a failed job, cancel jobs by filter.
//!
//! Every route needs `Authorization: Bearer TOKEN`, TOKEN being the content of
//! `--admin-token-file` (a trailing newline ignored), compared in constant time; a
//! missing or wrong token is `401`. Without a token file the routes answer `404`: the
//! API is off. Without a job store they answer `404` too.
//!
//! - `GET /jobs?state=failed&task=NAME&older_than=S&newer_than=S&limit=100&after=CURSOR`:
//!   `{"jobs": [...], "next": CURSOR|null}`, in submission order; `state` may list
//!   several states, comma-separated. A job shows its id, state, task, times,
//!   attempts, status and the first line of its error, never its request.
//! - `GET /jobs/changes?since=N&limit=L`: `{"changes": [{"seq", "id", "state",
//!   "at_ms"}], "last_seq": M}`; with `wait=S` (or `Prefer: wait=S`) a long-poll that
//!   answers as soon as there is a change, or with none after S seconds (at most
//!   [`MAX_WAIT`]); with `Accept: text/event-stream` an event stream, one event per
//!   change with `id:` its sequence number, resumed after `Last-Event-ID`.
//! - `POST /jobs/{id}/retry`: a failed job is queued again (`200`, the job); `409`
//!   for a job in another state (cancelled and expired jobs no longer hold their
//!   request), `404` for an unknown one.
//! - `POST /jobs/cancel?state=queued&task=NAME&older_than=S`: cancels every
//!   unfinished job that passes the filter: `{"cancelled": N}`.

use super::ControlContext;
use crate::http::{Request, Response};
use crate::jobs::service::admin::{AdminAnswer, AdminRequest};
use crate::jobs::store::{JobFilter, JobState};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest long-poll, in seconds.
pub const MAX_WAIT: u64 = 300;
/// How long a call may wait for the job service.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a long-poll or an event stream looks for new changes.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long an event stream stays silent before it sends a comment.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The most changes in one answer.
const MAX_CHANGES: usize = 1000;

/// Whether `given` equals `token`, in time that does not depend on where they differ
/// (both are hashed first, so not on their lengths either).
fn token_matches(token: &[u8], given: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(token), Sha256::digest(given));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The refusal for a request that may not use the admin API, if it may not.
fn refusal(context: &ControlContext, request: &Request) -> Option<Response> {
    let (Some(token), Some(_)) = (&context.admin_token, &context.admin) else {
        return Some(Response::error(404, "no such control resource"));
    };
    let given = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if token_matches(token, given.as_bytes()) => None,
        _ => Some(
            Response::error(
                401,
                "the admin API needs Authorization: Bearer with the admin token",
            )
            .header("WWW-Authenticate", "Bearer"),
        ),
    }
}

fn answer((status, document): AdminAnswer) -> Response {
    Response::json(status, &document)
}

fn call(context: &ControlContext, request: AdminRequest) -> Response {
    match &context.admin {
        Some(link) => answer(link.call(request, CALL_TIMEOUT)),
        None => Response::error(404, "no such control resource"),
    }
}

/// The first value of a query parameter.
fn param<'a>(request: &'a Request, name: &'a str) -> Option<&'a str> {
    request.query_values(name).next()
}

/// A query parameter that is a whole number, if given.
fn number(request: &Request, name: &str) -> Result<Option<u64>, Response> {
    match param(request, name) {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Response::error(400, &format!("{name} is not a whole number"))),
    }
}

/// The filter of `state`, `task`, `older_than` and `newer_than`.
fn filter(request: &Request) -> Result<JobFilter, Response> {
    let mut filter = JobFilter::default();
    for name in param(request, "state")
        .into_iter()
        .flat_map(|s| s.split(','))
    {
        match JobState::parse(name.trim()) {
            Some(state) => filter.states.push(state),
            None => return Err(Response::error(400, &format!("no job state {name:?}"))),
        }
    }
    filter.task = param(request, "task").map(str::to_string);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
    let ago = |s: u64| now.saturating_sub(s.saturating_mul(1000).min(i64::MAX as u64) as i64);
    filter.created_before_ms = number(request, "older_than")?.map(ago);
    filter.created_after_ms = number(request, "newer_than")?.map(ago);
    Ok(filter)
}

/// `GET /jobs`.
pub(super) fn list(context: &ControlContext, request: &Request) -> Response {
    if let Some(refused) = refusal(context, request) {
        return refused;
    }
    let parsed = filter(request).and_then(|filter| {
        Ok((
            filter,
            number(request, "after")?.unwrap_or(0),
            number(request, "limit")?.unwrap_or(100),
        ))
    });
    match parsed {
        Ok((filter, after, limit)) => call(
            context,
            AdminRequest::List {
                filter,
                after,
                limit: limit.min(usize::MAX as u64) as usize,
            },
        ),
        Err(refused) => refused,
    }
}

/// `POST /jobs/cancel`.
pub(super) fn cancel(context: &ControlContext, request: &Request) -> Response {
    if let Some(refused) = refusal(context, request) {
        return refused;
    }
    let mut filter = match filter(request) {
        Ok(filter) => filter,
        Err(refused) => return refused,
    };
    if filter.states.iter().any(|state| state.is_final()) {
        return Response::error(400, "only scheduled, queued and running jobs are cancelled");
    }
    if filter.states.is_empty() {
        filter.states = vec![JobState::Scheduled, JobState::Queued, JobState::Running];
    }
    call(context, AdminRequest::Cancel { filter })
}

/// `POST /jobs/{id}/retry`.
pub(super) fn retry(context: &ControlContext, request: &Request) -> Response {
    if let Some(refused) = refusal(context, request) {
        return refused;
    }
    let id = request
        .path
        .strip_prefix("/jobs/")
        .and_then(|rest| rest.strip_suffix("/retry"))
        .unwrap_or("");
    call(context, AdminRequest::Retry { id: id.into() })
}

/// Where the feed starts (`Last-Event-ID`, else `since`), how many changes an answer
/// holds, and how long a long-poll waits (`wait=S` or `Prefer: wait=S`).
fn feed_params(request: &Request) -> Result<(u64, usize, Option<u64>), Response> {
    let since = match request.header("last-event-id") {
        Some(id) => id
            .trim()
            .parse()
            .map_err(|_| Response::error(400, "Last-Event-ID is not a sequence number"))?,
        None => number(request, "since")?.unwrap_or(0),
    };
    let limit = number(request, "limit")?.unwrap_or(MAX_CHANGES as u64);
    let prefer = request
        .header("prefer")
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|p| p.trim().strip_prefix("wait=").map(str::to_string));
    let wait = match prefer {
        Some(text) => Some(
            text.trim()
                .parse()
                .map_err(|_| Response::error(400, "Prefer: wait= is not a number of seconds"))?,
        ),
        None => number(request, "wait")?,
    };
    let limit = limit.clamp(1, MAX_CHANGES as u64) as usize;
    Ok((since, limit, wait.map(|w: u64| w.min(MAX_WAIT))))
}

/// The changes after `since`: the service's answer, its status and the changes.
fn changes_after(
    context: &ControlContext,
    since: u64,
    limit: usize,
) -> Result<serde_json::Value, Response> {
    let Some(link) = &context.admin else {
        return Err(Response::error(404, "no such control resource"));
    };
    match link.call(AdminRequest::Changes { since, limit }, CALL_TIMEOUT) {
        (200, document) => Ok(document),
        other => Err(answer(other)),
    }
}

fn is_empty(document: &serde_json::Value) -> bool {
    document["changes"].as_array().is_none_or(|c| c.is_empty())
}

/// `GET /jobs/changes` as a normal answer or a long-poll.
pub(super) fn changes(context: &ControlContext, request: &Request) -> Response {
    if let Some(refused) = refusal(context, request) {
        return refused;
    }
    let (since, limit, wait) = match feed_params(request) {
        Ok(params) => params,
        Err(refused) => return refused,
    };
    let deadline = Instant::now() + Duration::from_secs(wait.unwrap_or(0));
    loop {
        let document = match changes_after(context, since, limit) {
            Ok(document) => document,
            Err(refused) => return refused,
        };
        if !is_empty(&document) || Instant::now() >= deadline || context.stop.load(Ordering::SeqCst)
        {
            return Response::json(200, &document);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Whether a request asks for the feed as an event stream.
pub(super) fn wants_stream(request: &Request) -> bool {
    request.method == "GET"
        && request.path == "/jobs/changes"
        && request
            .header("accept")
            .is_some_and(|a| a.contains("text/event-stream"))
}

/// `GET /jobs/changes` with `Accept: text/event-stream`: writes the changes as they
/// come, until the client leaves or the listener stops. The connection closes after.
pub(super) fn stream(context: &ControlContext, request: &Request, out: &mut TcpStream) {
    let refused = refusal(context, request).or_else(|| feed_params(request).err());
    if let Some(refused) = refused {
        let _ = out.write_all(&refused.to_bytes(request.minor_version, false, false));
        return;
    }
    let Ok((mut since, limit, _)) = feed_params(request) else {
        return;
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut quiet_since = Instant::now();
    while !context.stop.load(Ordering::SeqCst) {
        let document = match changes_after(context, since, limit) {
            Ok(document) => document,
            Err(_) => return,
        };
        let mut bytes = Vec::new();
        for change in document["changes"].as_array().into_iter().flatten() {
            let seq = change["seq"].as_u64().unwrap_or(since);
            bytes.extend_from_slice(
                format!("id: {seq}\nevent: change\ndata: {change}\n\n").as_bytes(),
            );
            since = since.max(seq);
        }
        if bytes.is_empty() && quiet_since.elapsed() >= KEEPALIVE {
            bytes.extend_from_slice(b": keep-alive\n\n");
        }
        if !bytes.is_empty() {
            quiet_since = Instant::now();
            if out.write_all(&bytes).is_err() {
                return;
            }
        }
        if is_empty(&document) && client_left(&*out) {
            return;
        }
    }
}

/// Waits [`POLL_EVERY`] for the client to send something or close; whether it closed
/// (or sent anything: a stream takes no more requests).
fn client_left(out: &TcpStream) -> bool {
    let mut fd = libc::pollfd {
        fd: out.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) reads and writes the one entry, which outlives the call.
    let ready = unsafe { libc::poll(&mut fd, 1, POLL_EVERY.as_millis() as i32) };
    ready > 0
}
