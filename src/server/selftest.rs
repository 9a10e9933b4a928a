//! The front end's side of the self-test (see [`crate::pipeline::selftest`]):
//! `GET <status_path>?selftest=1`, or `GET <selftest_path>`.
//!
//! It sends one probe to the first proxy and, when a job store is kept, asks the job
//! service to check the store; then it gathers what comes back, without blocking the
//! loop: the self-test holds its place in the connection's answer order like any
//! request and is answered once every part has answered, or at its deadline
//! (`selftest_timeout`, 2 s by default) with what it has.
//!
//! Which stages it waits for: those the front end knows (the pipeline builder's, a
//! topology file's), and every stage a worker says it sent the probe to. A worker that
//! sent it to a next stage it knows by endpoint only (`prime_workerd --downstream`
//! without a route naming it) says so, and the front end waits for a report that came
//! that way. So a bare `prime_httpd` still names the stage after which nothing answered.
//!
//! The answer is `200` when every part passed, `503` otherwise, with a document like
//!
//! ```text
//! {"status": "failed", "took_ms": 2003, "parts": [
//!   {"part": "store", "ok": true},
//!   {"part": "stage", "stage": "parse", "ok": true, "workers": ["parse-…-0"]},
//!   {"part": "stage", "stage": "compute", "ok": false,
//!    "error": "no worker of stage `compute` answered the probe within 2s"}]}
//! ```
//!
//! where a part is the job store (`"part": "store"`), a stage (`"part": "stage"`, with
//! its name where known and, for an unnamed one, `"after"`: the stage whose next stage
//! it is), or the pipeline itself (`"part": "pipeline"`: a proxy that answered the
//! probe with a failure, or a first proxy that did not take it).

use super::connection::Label;
use super::output::AnswerBytes;
use super::requests::http_protocol;
use super::Server;
use crate::base::fast_hash::FastMap;
use crate::base::sockets;
use crate::http::{ParsedRequest, Response};
use crate::jobs::service::Command;
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::loopback::Answer;
use crate::pipeline::selftest::{ProbePath, StageReport};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The self-tests under way, by the request id of their slot (which their probe's
/// envelope carries).
#[derive(Default)]
pub(super) struct SelfTests {
    pending: FastMap<u64, Pending>,
}

/// One self-test under way.
struct Pending {
    /// The client connection waiting for it.
    connection: u64,
    /// How to write the answer.
    protocol: Protocol,
    started: Instant,
    deadline: Instant,
    /// Every worker report so far, in arrival order.
    reports: Vec<StageReport>,
    /// Failures the pipeline answered the probe with, or the probe's refusal.
    failures: Vec<String>,
    store: StoreCheck,
    /// Asked by the ready path: answered as readiness (see [`Pending::readiness`]).
    readiness: bool,
}

/// The job store's part.
enum StoreCheck {
    /// No store is kept: not a part.
    Absent,
    /// Asked, no answer yet.
    Waiting,
    /// Answered.
    Done(Result<(), String>),
}

impl Server {
    /// Whether `target` (path `path`) asks for the self-test.
    pub(super) fn is_selftest(&self, path: &str, target: &str) -> bool {
        if self.config.selftest_path.as_deref() == Some(path) {
            return true;
        }
        self.config.status_path.as_deref() == Some(path)
            && target
                .split_once('?')
                .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "selftest=1"))
    }

    /// Starts a self-test for `request`: holds its slot, sends the probe, asks the store.
    /// With `readiness`, the answer is the ready path's.
    pub(super) fn start_selftest(
        &mut self,
        id: u64,
        request: &ParsedRequest,
        close_after: bool,
        label: Option<Label>,
        readiness: bool,
    ) {
        let protocol = http_protocol(request);
        let Some(request_id) = self.hold_slot(id, protocol, close_after, label) else {
            return;
        };
        let timeout = self.config.selftest_timeout;
        let now = Instant::now();
        let envelope =
            Envelope::for_probe(request_id, self.nonce, timeout).at_front_end(self.front.front_end);
        let frames = [crate::pipeline::envelope::lead_frame(
            &envelope.encode(),
            &ProbePath::default().encode(),
        )];
        let mut failures = Vec::new();
        // Into every entry: each stage the front end routes to straight is tested too.
        for (index, (socket, endpoint)) in self.front.entries().enumerate() {
            let frames = frames.iter().map(|frame| zmq::Message::from(&frame[..]));
            if let Err(e) = sockets::send_frames(socket, frames, zmq::DONTWAIT) {
                let which = if index == 0 {
                    "the first proxy"
                } else {
                    "a routed stage's proxy"
                };
                failures.push(format!("{which} ({endpoint}) does not take the probe: {e}"));
            }
        }
        let store = if self.jobs.is_some() {
            self.send_job_command(Command::SelfTest { token: request_id });
            StoreCheck::Waiting
        } else {
            StoreCheck::Absent
        };
        log::debug!("request {request_id}: self-test started");
        self.selftests.pending.insert(
            request_id,
            Pending {
                connection: id,
                protocol,
                started: now,
                deadline: now + timeout,
                reports: Vec::new(),
                failures,
                store,
                readiness,
            },
        );
    }

    /// A loopback answer to a probe.
    pub(super) fn on_probe_answer(&mut self, envelope: &Envelope, answer: Answer) {
        if envelope.nonce != self.nonce {
            return;
        }
        let Some(pending) = self.selftests.pending.get_mut(&envelope.request_id) else {
            log::debug!(
                "request {}: a probe's answer after its self-test ended",
                envelope.request_id
            );
            return;
        };
        match answer {
            Answer::SelfTest(report) => pending.reports.push(report),
            Answer::Failure(failure) => pending.failures.push(format!(
                "the pipeline answered the probe: {}",
                failure.detail
            )),
            _ => return,
        }
        self.finish_selftest_if_complete(envelope.request_id);
    }

    /// The job service's answer to a self-test's store check.
    pub(super) fn on_store_checked(&mut self, token: u64, result: Result<(), String>) {
        if let Some(pending) = self.selftests.pending.get_mut(&token) {
            pending.store = StoreCheck::Done(result);
            self.finish_selftest_if_complete(token);
        }
    }

    /// Answers the self-tests whose deadline has passed, with what they have.
    pub(super) fn sweep_selftests(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .selftests
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for request_id in late {
            self.finish_selftest(request_id);
        }
    }

    fn finish_selftest_if_complete(&mut self, request_id: u64) {
        let complete = self
            .selftests
            .pending
            .get(&request_id)
            .is_some_and(|p| p.is_complete(&self.front.stages));
        if complete {
            self.finish_selftest(request_id);
        }
    }

    fn finish_selftest(&mut self, request_id: u64) {
        let Some(pending) = self.selftests.pending.remove(&request_id) else {
            return;
        };
        let response = pending.document(
            &self.front.stages,
            self.config.selftest_timeout,
            &self.front.entry_endpoint,
        );
        let response = match pending.readiness {
            true => readiness(&response, self.draining_since.is_some()),
            false => response,
        };
        log::debug!(
            "request {request_id}: self-test answered {}",
            response.status
        );
        let bytes = crate::pipeline::loopback::render(pending.protocol, &response);
        self.fill(pending.connection, request_id, AnswerBytes::Owned(bytes));
    }
}

impl Pending {
    /// Whether every part that will answer has: the store, every stage expected, every
    /// stage a worker sent the probe to, the next stage of every worker that sent it to
    /// one it knows by endpoint only, and every stage that sent the probe on (its report
    /// goes out after the probe, so a later stage's can arrive first).
    fn is_complete(&self, expected: &[String]) -> bool {
        if matches!(self.store, StoreCheck::Waiting) || self.reports.is_empty() {
            return false;
        }
        let reported = |name: &str| self.reports.iter().any(|r| r.stage == name);
        expected.iter().all(|name| reported(name))
            && self.reports.iter().all(|r| {
                r.forwarded.iter().all(|name| reported(name))
                    && (!r.next || self.after(&r.stage).is_some())
                    && r.from.as_deref().is_none_or(reported)
            })
    }

    /// A report that came through `stage`'s unnamed next stage.
    fn after(&self, stage: &str) -> Option<&StageReport> {
        self.reports
            .iter()
            .find(|r| r.via_next && r.from.as_deref() == Some(stage))
    }

    /// The answer: every part with its outcome.
    fn document(&self, expected: &[String], timeout: Duration, entry: &str) -> Response {
        let within = humantime::format_duration(timeout);
        let mut parts = Vec::new();
        match &self.store {
            StoreCheck::Absent => {}
            StoreCheck::Waiting => parts.push(failed(
                json!({"part": "store"}),
                format!("the job store did not answer within {within}"),
            )),
            StoreCheck::Done(Ok(())) => parts.push(json!({"part": "store", "ok": true})),
            StoreCheck::Done(Err(e)) => parts.push(failed(json!({"part": "store"}), e.clone())),
        }
        // The stages: those expected in pipeline order, then the others as they came.
        let mut names: Vec<&str> = expected.iter().map(String::as_str).collect();
        for report in &self.reports {
            let forwarded = report.forwarded.iter().map(String::as_str);
            for name in std::iter::once(report.stage.as_str()).chain(forwarded) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        for name in names {
            parts.push(self.stage_part(name, &within));
        }
        for report in self.reports.iter().filter(|r| r.next) {
            if self.after(&report.stage).is_none() {
                let error = format!(
                    "stage `{}` sent the probe on to its next stage, and no worker there answered it within {within}",
                    report.stage
                );
                parts.push(failed(
                    json!({"part": "stage", "after": report.stage}),
                    error,
                ));
            }
        }
        if self.reports.is_empty() && expected.is_empty() {
            let error = format!(
                "no worker answered the probe sent to the first proxy ({entry}) within {within}"
            );
            parts.push(failed(json!({"part": "stage", "after": null}), error));
        }
        for failure in &self.failures {
            parts.push(failed(json!({"part": "pipeline"}), failure.clone()));
        }
        let ok = parts.iter().all(|p| p["ok"] == true);
        let body = json!({
            "status": if ok { "ok" } else { "failed" },
            "took_ms": self.started.elapsed().as_millis() as u64,
            "parts": parts,
        });
        Response::json(if ok { 200 } else { 503 }, &body)
    }

    /// The part of the stage named `name`: passed if every worker that answered passed.
    fn stage_part(&self, name: &str, within: &humantime::FormattedDuration) -> Value {
        let reports: Vec<&StageReport> = self.reports.iter().filter(|r| r.stage == name).collect();
        let workers: Vec<&str> = reports.iter().map(|r| r.worker.as_str()).collect();
        if reports.is_empty() {
            let error = format!("no worker of stage `{name}` answered the probe within {within}");
            return failed(json!({"part": "stage", "stage": name}), error);
        }
        match reports.iter().find_map(|r| r.error.as_ref()) {
            Some(error) => failed(
                json!({"part": "stage", "stage": name, "workers": workers}),
                error.clone(),
            ),
            None => json!({"part": "stage", "stage": name, "ok": true, "workers": workers}),
        }
    }
}

/// The ready path's answer from the self-test's `document`: `200 {"status": "ready"}`,
/// or `503 {"status": "not ready", "missing": [...]}` naming each failed part (a stage
/// without a live worker, a store that cannot write) or the drain; `parts` as the
/// self-test gives them.
fn readiness(document: &Response, draining: bool) -> Response {
    let parts: Value = serde_json::from_slice::<Value>(&document.body)
        .ok()
        .and_then(|mut body| body.get_mut("parts").map(Value::take))
        .unwrap_or_else(|| json!([]));
    let mut missing: Vec<Value> = parts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|part| part["ok"] != true)
        .map(|part| part["error"].clone())
        .collect();
    if draining {
        missing.push(json!("the server is draining"));
    }
    if missing.is_empty() && document.status == 200 {
        Response::json(200, &json!({"status": "ready", "parts": parts}))
    } else {
        let body = json!({"status": "not ready", "missing": missing, "parts": parts});
        Response::json(503, &body)
    }
}

/// `part` marked failed, with `error`.
fn failed(mut part: Value, error: String) -> Value {
    part["ok"] = Value::Bool(false);
    part["error"] = Value::String(error);
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stage: &str, from: Option<&str>, next: bool) -> StageReport {
        StageReport {
            stage: stage.to_string(),
            worker: format!("{stage}-0"),
            ok: true,
            error: None,
            from: from.map(str::to_string),
            via_next: from.is_some(),
            forwarded: Vec::new(),
            next,
        }
    }

    fn pending(reports: Vec<StageReport>) -> Pending {
        Pending {
            connection: 1,
            protocol: Protocol::Raw,
            started: Instant::now(),
            deadline: Instant::now(),
            reports,
            failures: Vec::new(),
            store: StoreCheck::Absent,
            readiness: false,
        }
    }

    #[test]
    fn a_later_stage_reporting_first_does_not_complete_the_selftest() {
        // `parse` sends the probe on, then its own report: `compute`'s can come first.
        let compute = report("compute", Some("parse"), false);
        assert!(!pending(vec![compute.clone()]).is_complete(&[]));
        let parse = report("parse", None, true);
        assert!(pending(vec![compute, parse]).is_complete(&[]));
    }
}
