//! The HTTP answers of the job resources, and the translation between a stage's answer
//! and the stored form of it.

use super::clock::{rfc3339, rfc3339_bytes};
use super::store::{plain_state_data, JobRecord, JobState, StoredAnswer};
use crate::http::Response;
use crate::pipeline::loopback::Failure;
use serde::Serialize;

/// Header fields that [`Response::to_bytes`] writes for each connection: not stored with
/// an answer, written anew for whoever fetches it.
const PER_CONNECTION: [&str; 5] = [
    "content-length",
    "date",
    "connection",
    "keep-alive",
    "transfer-encoding",
];

/// The JSON description of a job (`GET /jobs/{id}`, and the body of a `202`).
#[derive(Serialize)]
struct JobDocument<'a> {
    id: &'a str,
    state: &'a str,
    created: String,
    updated: String,
    /// For a job submitted to run later: the time it may start.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<String>,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDocument<'a>>,
    location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressDocument<'a>>,
}

#[derive(Serialize)]
struct ProgressDocument<'a> {
    fraction: f64,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorDocument<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    detail: &'a str,
}

/// Where the job's resources are, under the jobs path.
fn location(path: &str, id: &str) -> String {
    format!("{path}/{id}")
}

/// The job's status document (as `GET /jobs/{id}` shows it) as JSON: what a job's
/// end publishes on the channels a stage named with `HttpJob::notify`.
pub fn status_json(record: &JobRecord, path: &str) -> serde_json::Value {
    serde_json::to_value(document(record, path)).unwrap_or_default()
}

fn document<'a>(record: &'a JobRecord, path: &str) -> JobDocument<'a> {
    let location = location(path, &record.id);
    JobDocument {
        id: &record.id,
        state: record.state.as_str(),
        created: rfc3339(record.created_ms),
        updated: rfc3339(record.updated_ms),
        not_before: record.not_before_ms.map(rfc3339),
        attempts: record.attempts,
        error: error_document(record),
        result: record
            .state
            .has_result()
            .then(|| format!("{location}/result")),
        location,
        progress: progress_document(record),
    }
}

/// A response whose body is the job's document: [`Response::json`] of [`document`],
/// written out by hand for a job with neither error nor progress (every `202`, and
/// most status reads), the same bytes for a tenth of serde's and the timestamps'
/// formatting work.
fn document_response(status: u16, record: &JobRecord, path: &str) -> Response {
    match plain_document(record, path) {
        Some(body) => Response::new(status)
            .header("Content-Type", "application/json")
            .body(body),
        None => Response::json(status, &document(record, path)),
    }
}

/// [`document`] serialized, for a job with no error and no progress; `None` for
/// another one or a timestamp past the year 9999 (serde writes those).
fn plain_document(record: &JobRecord, path: &str) -> Option<Vec<u8>> {
    if record.error.is_some() || record.progress.is_some() {
        return None;
    }
    let created = rfc3339_bytes(record.created_ms)?;
    let updated = rfc3339_bytes(record.updated_ms)?;
    let not_before = match record.not_before_ms {
        Some(ms) => Some(rfc3339_bytes(ms)?),
        None => None,
    };
    let mut out = Vec::with_capacity(192 + 2 * path.len());
    out.extend_from_slice(b"{\"id\":");
    json_string(&mut out, &record.id);
    out.extend_from_slice(b",\"state\":");
    json_string(&mut out, record.state.as_str());
    out.extend_from_slice(b",\"created\":\"");
    out.extend_from_slice(&created);
    out.extend_from_slice(b"\",\"updated\":\"");
    out.extend_from_slice(&updated);
    if let Some(not_before) = not_before {
        out.extend_from_slice(b"\",\"not_before\":\"");
        out.extend_from_slice(&not_before);
    }
    out.extend_from_slice(b"\",\"attempts\":");
    out.extend_from_slice(record.attempts.to_string().as_bytes());
    let location = location(path, &record.id);
    out.extend_from_slice(b",\"location\":");
    json_string(&mut out, &location);
    if record.state.has_result() {
        out.extend_from_slice(b",\"result\":");
        json_string(&mut out, &format!("{location}/result"));
    }
    out.push(b'}');
    Some(out)
}

/// `text` as a JSON string, as serde_json writes it: quoted, with `"`, `\` and control
/// characters escaped (serde_json itself writes a text that has any).
fn json_string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

fn error_document(record: &JobRecord) -> Option<ErrorDocument<'_>> {
    record.error.as_deref().map(|detail| ErrorDocument {
        status: record.status.filter(|_| record.state == JobState::Failed),
        detail,
    })
}

fn progress_document(record: &JobRecord) -> Option<ProgressDocument<'_>> {
    record
        .progress
        .as_ref()
        .map(|(fraction, message)| ProgressDocument {
            fraction: *fraction,
            message,
        })
}

/// The data of a job's `state` event: its state, attempts, time of the change, error
/// and progress (the full description is one `GET` away, at the job's location).
pub fn state_event_json(record: &JobRecord) -> String {
    if record.error.is_none() && record.progress.is_none() {
        // The same bytes a store that derives such events from its changes reads back.
        return plain_state_data(record.state, record.attempts, record.updated_ms);
    }
    let document = StateEvent {
        state: record.state.as_str(),
        attempts: record.attempts,
        updated: rfc3339(record.updated_ms),
        error: error_document(record),
        progress: progress_document(record),
    };
    serde_json::to_string(&document).unwrap_or_default()
}

/// The data of a `state` event.
#[derive(Serialize)]
struct StateEvent<'a> {
    state: &'a str,
    attempts: u32,
    updated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDocument<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressDocument<'a>>,
}

/// `202 Accepted` for a job taken (RFC 7240 §4.1): `Location`, `Preference-Applied`,
/// `Retry-After`, and the job's description.
pub fn accepted(record: &JobRecord, path: &str) -> Response {
    document_response(202, record, path)
        .header("Location", location(path, &record.id))
        .header("Preference-Applied", "respond-async")
        .header("Retry-After", retry_after(record))
        .header("Cache-Control", "no-store")
}

/// When to ask about an unfinished job again, in seconds: for a scheduled one, at its
/// time; else in a second.
fn retry_after(record: &JobRecord) -> String {
    let wait_ms = match (record.state, record.not_before_ms) {
        (JobState::Scheduled, Some(at)) => at.saturating_sub(super::clock::now_ms()),
        _ => 0,
    };
    (wait_ms.saturating_add(999) / 1000).max(1).to_string()
}

/// `GET /jobs/{id}`: `200` with the job's description while it is unfinished (or
/// cancelled), `303 See Other` to its result once it has one.
pub fn status(record: &JobRecord, path: &str) -> Response {
    if record.state.has_result() {
        let result = format!("{}/result", location(path, &record.id));
        return document_response(303, record, path)
            .header("Location", result)
            .header("Cache-Control", "no-store");
    }
    let response = document_response(200, record, path).header("Cache-Control", "no-store");
    if record.state.is_final() {
        response
    } else {
        response.header("Retry-After", retry_after(record))
    }
}

/// `GET /jobs/{id}/result` before the job has a result: `404` pointing to its status.
pub fn no_result_yet(record: &JobRecord, path: &str) -> Response {
    let message = match record.state {
        JobState::Cancelled => "the job was cancelled; it has no result",
        _ => "the job has not finished yet",
    };
    let body = serde_json::json!({
        "error": message,
        "status": 404,
        "state": record.state.as_str(),
        "job": location(path, &record.id),
    });
    Response::json(404, &body).header("Cache-Control", "no-store")
}

/// A stored answer, as it is written to whoever fetches it.
pub fn result(answer: StoredAnswer) -> Response {
    Response {
        status: answer.status,
        headers: answer.headers,
        body: answer.body,
    }
}

/// `404` for an id the store does not know.
pub fn unknown_job() -> Response {
    Response::error(404, "no job has this id")
}

/// `410 Gone` for a job removed after its time to live.
pub fn expired_job() -> Response {
    Response::error(410, "this job has expired and its result was removed")
}

/// `409 Conflict` for cancelling a job that has ended.
pub fn already_ended(record: &JobRecord, path: &str) -> Response {
    let body = serde_json::json!({
        "error": "the job has already ended; it cannot be cancelled",
        "status": 409,
        "state": record.state.as_str(),
        "job": location(path, &record.id),
    });
    Response::json(409, &body)
}

/// `422` for an `Idempotency-Key` already used by a different request.
pub fn key_reused() -> Response {
    Response::error(422, "this Idempotency-Key was used for a different request")
}

/// `503` with `Retry-After` when the store holds as many unfinished jobs as it may.
pub fn store_full() -> Response {
    Response::error(503, "too many jobs are waiting; try again later").header("Retry-After", "5")
}

/// `503` when the store cannot take a job (its disk failed).
pub fn store_failed() -> Response {
    Response::error(503, "the job store is not working").header("Retry-After", "5")
}

/// A stage's HTTP answer, as stored: the status, the fields the stage set (not those
/// written per connection), and the body. `None` if the bytes are not an HTTP response.
///
/// Any number of fields is kept: whatever a stage can send synchronously, a job stores.
pub fn stored_from_http(bytes: &[u8]) -> Option<StoredAnswer> {
    // Every field takes a line of the head, so its lines bound the slots needed.
    let head_end = memchr::memmem::find(bytes, b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
    let lines = memchr::memchr_iter(b'\n', &bytes[..head_end]).count();
    let mut fields = vec![httparse::EMPTY_HEADER; lines.max(1)];
    let mut response = httparse::Response::new(&mut fields);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    let status = response.code?;
    let mut length = None;
    let mut headers = Vec::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
        let per_connection = PER_CONNECTION
            .iter()
            .any(|name| field.name.eq_ignore_ascii_case(name));
        let default_server =
            field.name.eq_ignore_ascii_case("server") && field.value == b"prime_server";
        if !per_connection && !default_server {
            let value = String::from_utf8_lossy(field.value).into_owned();
            headers.push((field.name.to_string(), value));
        }
    }
    let rest = &bytes[head_len..];
    let body = match length {
        Some(n) => rest.get(..n)?,
        None => rest,
    };
    Some(StoredAnswer {
        status,
        headers,
        body: body.to_vec(),
    })
}

/// A typed failure, stored as the response the front end would have rendered for it.
pub fn stored_from_failure(failure: &Failure) -> StoredAnswer {
    let response = Response::error(failure.status, &failure.detail);
    StoredAnswer {
        status: response.status,
        headers: response.headers,
        body: response.body,
    }
}

/// What an ended job's record says went wrong, for an answer of status 400 or above:
/// the `error` member of a JSON body if it has one, else the reason phrase.
pub fn error_of(answer: &StoredAnswer) -> Option<String> {
    if answer.status < 400 {
        return None;
    }
    let from_body = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    Some(from_body.unwrap_or_else(|| crate::http::reason_phrase(answer.status).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_state_event_reads_as_the_json_of_its_fields() {
        for (state, attempts, at) in [
            (JobState::Queued, 0, 0),
            (JobState::Succeeded, 7, 1_765_000_123_456),
        ] {
            let document = StateEvent {
                state: state.as_str(),
                attempts,
                updated: rfc3339(at),
                error: None,
                progress: None,
            };
            let json = serde_json::to_string(&document).expect("json");
            assert_eq!(plain_state_data(state, attempts, at), json);
        }
    }

    #[test]
    fn a_plain_document_is_serde_s_to_the_byte() {
        let states = [
            JobState::Queued,
            JobState::Scheduled,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ];
        for (i, state) in states.into_iter().enumerate() {
            for path in ["/jobs", "/a\"b\\c/\u{1}é"] {
                let record = JobRecord {
                    number: 9,
                    id: "AbCdEfGhIjKlMnOpQrSt-_".into(),
                    state,
                    created_ms: 1_765_000_000_123,
                    updated_ms: 1_765_000_001_000 + i as i64,
                    attempts: i as u32 * 7,
                    status: Some(200),
                    error: None,
                    progress: None,
                    events: 3,
                    not_before_ms: (i % 2 == 1).then_some(1_765_000_100_000),
                };
                let serde = serde_json::to_vec(&document(&record, path)).expect("json");
                assert_eq!(
                    String::from_utf8(plain_document(&record, path).expect("plain")),
                    String::from_utf8(serde),
                    "{state:?} {path}"
                );
            }
        }
    }

    #[test]
    fn a_stored_answer_renders_as_the_original_did() {
        let original = Response::json(200, &serde_json::json!({"is_prime": true}))
            .header("X-Stage", "compute");
        let bytes = original.to_bytes(1, true, false);
        let stored = stored_from_http(&bytes).expect("an HTTP response");
        assert_eq!(stored.status, 200);
        let again = result(stored).to_bytes(1, true, false);
        let without_date = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| !l.starts_with("Date:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_date(&again), without_date(&bytes));
    }

    #[test]
    fn an_answer_with_many_fields_is_stored_whole() {
        let mut original = Response::new(200).body("ok");
        for i in 0..300 {
            original = original.header(format!("X-Field-{i}"), i.to_string());
        }
        let stored = stored_from_http(&original.to_bytes(1, true, false)).expect("stored");
        let kept = stored
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("X-Field-"));
        assert_eq!(kept.count(), 300);
        assert_eq!(stored.body, b"ok");
    }

    #[test]
    fn errors_come_from_the_json_body_or_the_reason_phrase() {
        let stored =
            stored_from_http(&Response::error(400, "n must be a number").to_bytes(1, true, false))
                .expect("an HTTP response");
        assert_eq!(error_of(&stored).as_deref(), Some("n must be a number"));
        let plain = StoredAnswer {
            status: 502,
            headers: Vec::new(),
            body: b"<html>".to_vec(),
        };
        assert_eq!(error_of(&plain).as_deref(), Some("Bad Gateway"));
        let fine = StoredAnswer {
            status: 200,
            ..plain
        };
        assert_eq!(error_of(&fine), None);
    }
}
