//! The JSON-RPC 2.0 path (`ServerConfig::jsonrpc_path`): a `POST` of one request object
//! or a batch (see [`crate::stages::jsonrpc`] for the protocol and what a stage sees).
//!
//! Each call goes into the pipeline as a request of its own, through the entry the task
//! table gives its method (the same rules as `X-Task-Name`; a name the table does not
//! know is `-32601` here), all of a batch's calls at once, so they run in parallel
//! across the pools. Their answers come back on the loopback like any other and are
//! gathered, in request order, into the one answer of the HTTP request, which holds an
//! ordinary slot in its connection's answer order (so pipelining keeps its order).
//! Every path an answer can take to a slot (a worker's answer, the 504 of the sweep,
//! the 503 of a census or of a drain, a full queue) ends in [`Server::fill`], which
//! hands a call's answer here instead.
//!
//! Notifications run and are never answered: a body of notifications only is answered
//! `204` at once. A client that leaves interrupts its batch's unanswered calls (its
//! notifications run on). Bounds: a batch holds at most `max_pipelined` calls (more is
//! answered with one `-32000` error, `data.status` 413), and the answers it gathers at
//! most `max_output_bytes` (past it the batch is answered with one `-32603` error and
//! its other calls interrupted).
//!
//! With a job store, a `Prefer: respond-async` request to the path is stored as one job
//! (`202`, as any submit); its run sends the calls into the pipeline at once, with the
//! job timeout, and the gathered answer is the job's result (`204` for notifications
//! only). A cancel or the job timeout interrupts the calls still running.

use super::output::AnswerBytes;
use super::requests::http_protocol;
use super::{InFlight, Server};
use crate::base::fast_hash::FastMap;
use crate::base::sockets;
use crate::http::{Method, ParsedRequest, Response};
use crate::pipeline::envelope::{lead_frame, Envelope, InterruptReason, Protocol};
use crate::pipeline::loopback::{render_failure, Failure, FailureKind};
use crate::stages::jsonrpc::{self, Body, Call, ErrorObject, METHOD_HEADER};
use serde_json::Value;
use std::time::Instant;

/// The calls in the pipeline and the batches that wait for them.
#[derive(Default)]
pub(super) struct Batches {
    /// Each call in the pipeline by its request id: where its answer goes.
    calls: FastMap<u64, CallOf>,
    /// Each batch by the request id of its slot.
    batches: FastMap<u64, Batch>,
}

/// Where a call's answer goes.
#[derive(Clone, Copy)]
enum CallOf {
    /// Into answer `index` of the batch whose slot is `batch`.
    Member { batch: u64, index: usize },
    /// Nowhere: a notification.
    Notification,
}

/// A request to the JSON-RPC path waiting for its calls' answers.
struct Batch {
    /// The client's connection (0 for a job's batch).
    connection: u64,
    /// The job whose run this batch is (`Prefer: respond-async`): its answer goes to
    /// the job store, not to a connection.
    job: Option<u64>,
    /// One request object, answered with one response object (not an array).
    single: bool,
    /// The ids of the calls answered, in request order (`null` for invalid members).
    ids: Vec<Value>,
    /// The response objects, in request order; `None` while a call runs.
    answers: Vec<Option<Value>>,
    /// The request id of each running call, by answer index (0 once answered).
    running: Vec<u64>,
    /// How many answers are still awaited.
    pending: usize,
    /// The size of the answers gathered so far, as JSON.
    bytes: usize,
    /// The HTTP request's facts, to write the answer.
    minor_version: u8,
    keep_alive: bool,
}

impl Batch {
    /// Takes the members' plans in request order: the answers known now are placed, the
    /// calls to run are returned with where their answers go (a notification's
    /// nowhere).
    fn place(&mut self, batch_id: u64, plans: Vec<Plan>) -> Vec<(Plan, CallOf)> {
        let mut runs = Vec::new();
        for plan in plans {
            match plan {
                Plan::Answer(call_id, error) => {
                    self.answers
                        .push(Some(jsonrpc::response(&call_id, Err(error))));
                    self.ids.push(call_id);
                    self.running.push(0);
                }
                Plan::Skip => {}
                Plan::Run { id: None, .. } => runs.push((plan, CallOf::Notification)),
                Plan::Run {
                    id: Some(ref call_id),
                    ..
                } => {
                    let index = self.ids.len();
                    self.ids.push(call_id.clone());
                    self.answers.push(None);
                    self.running.push(0);
                    self.pending += 1;
                    let member = CallOf::Member {
                        batch: batch_id,
                        index,
                    };
                    runs.push((plan, member));
                }
            }
        }
        runs
    }
}

/// What becomes of one member of a request.
enum Plan {
    /// Answered without running: an invalid member, or a call of an unknown method.
    Answer(Value, ErrorObject),
    /// Neither run nor answered: a notification of an unknown method.
    Skip,
    /// Sent into the pipeline through `entry`; answered when `id` is `Some`.
    Run {
        id: Option<Value>,
        entry: super::front::EntryIndex,
        head: Vec<u8>,
        params: Vec<u8>,
    },
}

impl Server {
    /// Whether `path` is the JSON-RPC path.
    pub(super) fn is_jsonrpc_path(&self, path: &[u8]) -> bool {
        self.config.jsonrpc_path.as_deref().map(str::as_bytes) == Some(path)
    }

    /// Answers a request to the JSON-RPC path: at once when nothing needs to run (a
    /// parse error, an empty batch, invalid members or unknown methods only,
    /// notifications only), else once every call has answered.
    pub(super) fn on_jsonrpc(
        &mut self,
        id: u64,
        request: ParsedRequest,
        close_after: bool,
        label: Option<super::connection::Label>,
    ) {
        if request.method != Method::Post {
            let path = request.path_str();
            let response = Response::error(405, &format!("{path} answers JSON-RPC 2.0 POSTs"))
                .header("Allow", "POST");
            return self.answer_response(id, &request, &response, close_after, label);
        }
        let (single, calls) = match jsonrpc::read_body(&request.body) {
            Ok(Body::Single(call)) => (true, vec![call]),
            Ok(Body::Batch(calls)) => (false, calls),
            Err(error) => {
                let answer = jsonrpc::response(&Value::Null, Err(error));
                return self.answer_response(
                    id,
                    &request,
                    &json_answer(&answer),
                    close_after,
                    label,
                );
            }
        };
        if calls.len() > self.config.max_pipelined {
            let error = ErrorObject::from_status(
                413,
                Some(&format!(
                    "a batch holds at most {} calls",
                    self.config.max_pipelined
                )),
            );
            let answer = jsonrpc::response(&Value::Null, Err(error));
            return self.answer_response(id, &request, &json_answer(&answer), close_after, label);
        }
        let path = request.path_str().to_string();
        let plans: Vec<Plan> = calls
            .into_iter()
            .map(|call| self.plan_call(&request.head, &path, call))
            .collect();
        let answered = plans
            .iter()
            .filter(|plan| !matches!(plan, Plan::Run { id: None, .. } | Plan::Skip))
            .count();
        if answered == 0 {
            // Notifications only: run, and answered with nothing (§4.1, §6).
            for plan in plans {
                self.run_call(id, plan, CallOf::Notification);
            }
            let response = Response::new(204);
            return self.answer_response(id, &request, &response, close_after, label);
        }
        let Some(batch_id) = self.hold_slot(id, http_protocol(&request), close_after, label) else {
            return;
        };
        let mut batch = Batch {
            connection: id,
            job: None,
            single,
            ids: Vec::with_capacity(answered),
            answers: Vec::with_capacity(answered),
            running: Vec::with_capacity(answered),
            pending: 0,
            bytes: 0,
            minor_version: request.minor_version,
            keep_alive: !close_after,
        };
        let runs = batch.place(batch_id, plans);
        let pending = batch.pending;
        self.rpc.batches.insert(batch_id, batch);
        // Notifications run even when every other member is answered already.
        for (plan, call_of) in runs {
            self.run_call(id, plan, call_of);
        }
        if pending == 0 {
            self.finish_batch(batch_id);
        }
    }

    /// Decides what becomes of one member: its entry and the request it becomes, or its
    /// answer without running.
    fn plan_call(&self, head: &[u8], path: &str, call: Call) -> Plan {
        let Call::Valid { id, method, params } = call else {
            return Plan::Answer(Value::Null, ErrorObject::invalid_request());
        };
        // The method goes into a header: a name that cannot be a field value names no
        // stage.
        let writable = !method.is_empty() && method.bytes().all(|b| b.is_ascii_graphic());
        let params = params
            .map(|p| p.to_string().into_bytes())
            .unwrap_or_default();
        let head = writable.then(|| call_head(head, path, &method, params.len()));
        let entry = head
            .as_deref()
            .and_then(|head| self.front.entry_for(head).ok());
        match (head, entry) {
            (Some(head), Some(entry)) => Plan::Run {
                id,
                entry,
                head,
                params,
            },
            _ => match id {
                Some(id) => Plan::Answer(id, ErrorObject::method_not_found()),
                None => Plan::Skip,
            },
        }
    }

    /// Sends a planned call into the pipeline; its answer goes to `call_of`.
    fn run_call(&mut self, connection: u64, plan: Plan, call_of: CallOf) {
        let client = self.connections.get(&connection).and_then(|c| c.client);
        let timeout = self.config.request_timeout;
        self.send_call(connection, plan, call_of, client, timeout);
    }

    /// Sends a planned call with the client's address and a timeout.
    fn send_call(
        &mut self,
        connection: u64,
        plan: Plan,
        call_of: CallOf,
        client: Option<std::net::SocketAddr>,
        timeout: std::time::Duration,
    ) {
        let Plan::Run {
            entry,
            head,
            params,
            ..
        } = plan
        else {
            return;
        };
        if let CallOf::Member { batch, .. } = call_of {
            if !self.rpc.batches.contains_key(&batch) {
                // Answered already (its answers grew too large): nobody waits.
                return;
            }
        }
        let request_id = self.next_request;
        self.next_request += 1;
        let now = Instant::now();
        let protocol = Protocol::Http {
            minor_version: 1,
            keep_alive: true,
            head: false,
        };
        let envelope = Envelope {
            jsonrpc: true,
            ..Envelope::new(request_id, connection, self.nonce, protocol)
        }
        .at_front_end(self.front.front_end)
        .with_timeout(timeout)
        .with_client(client);
        let body = (!params.is_empty()).then(|| zmq::Message::from(params));
        let message = std::iter::once(lead_frame(&envelope.encode(), &head)).chain(body);
        self.rpc.calls.insert(request_id, call_of);
        if let CallOf::Member { batch, index } = call_of {
            if let Some(slot) = self
                .rpc
                .batches
                .get_mut(&batch)
                .and_then(|b| b.running.get_mut(index))
            {
                *slot = request_id;
            }
        }
        if let Err(e) = sockets::send_frames(self.front.entry_socket(entry), message, zmq::DONTWAIT)
        {
            log::warn!("request {request_id}: the pipeline is not taking JSON-RPC calls: {e}");
            let failure = Failure::new(FailureKind::QueueFull, "the server is overloaded");
            let bytes = render_failure(protocol, &failure, true);
            self.fill(connection, request_id, AnswerBytes::Owned(bytes));
            return;
        }
        log::debug!("request {request_id}: a JSON-RPC call went into the pipeline");
        self.stats.forwarded += 1;
        self.requests.insert(
            request_id,
            InFlight {
                connection,
                deadline: now + timeout,
                protocol,
            },
        );
    }

    /// Whether `request_id` is a JSON-RPC call in the pipeline.
    pub(super) fn is_jsonrpc_call(&self, request_id: u64) -> bool {
        !self.rpc.calls.is_empty() && self.rpc.calls.contains_key(&request_id)
    }

    /// Takes the answer of a call, if `request_id` is one (true then): from a worker or
    /// made by the front end, as HTTP bytes. [`Server::fill`] asks first.
    pub(super) fn take_call_answer(&mut self, request_id: u64, bytes: &AnswerBytes) -> bool {
        if self.rpc.calls.is_empty() {
            return false;
        }
        let Some(call_of) = self.rpc.calls.remove(&request_id) else {
            return false;
        };
        let CallOf::Member { batch, index } = call_of else {
            return true;
        };
        let max_bytes = self.config.max_output_bytes;
        let Some(entry) = self.rpc.batches.get_mut(&batch) else {
            return true;
        };
        let outcome = outcome_of_http(bytes.as_slice());
        if let Err(error) = &outcome {
            log::debug!(
                "request {request_id}: the JSON-RPC call failed: {}",
                error.message
            );
        }
        let Some(call_id) = entry.ids.get(index) else {
            return true;
        };
        let answer = jsonrpc::response(call_id, outcome);
        entry.bytes += answer.to_string().len();
        if let Some(place) = entry.answers.get_mut(index) {
            *place = Some(answer);
        }
        if let Some(running) = entry.running.get_mut(index) {
            *running = 0;
        }
        entry.pending = entry.pending.saturating_sub(1);
        if entry.bytes > max_bytes {
            log::warn!("request {batch}: a JSON-RPC batch's answers passed {max_bytes} bytes");
            self.interrupt_batch(batch);
            if let Some(entry) = self.rpc.batches.get_mut(&batch) {
                let error = ErrorObject::new(
                    jsonrpc::INTERNAL_ERROR,
                    format!("the batch's answers take more than {max_bytes} bytes"),
                );
                entry.single = true;
                entry.answers = vec![Some(jsonrpc::response(&Value::Null, Err(error)))];
                entry.pending = 0;
            }
            self.finish_batch(batch);
        } else if entry.pending == 0 {
            self.finish_batch(batch);
        }
        true
    }

    /// Writes a batch's answer into its slot, once every call has answered.
    fn finish_batch(&mut self, batch_id: u64) {
        let Some(batch) = self.rpc.batches.remove(&batch_id) else {
            return;
        };
        let mut answers: Vec<Value> = batch.answers.into_iter().flatten().collect();
        let answer = if batch.single {
            answers.pop().unwrap_or(Value::Null)
        } else {
            Value::Array(answers)
        };
        let response = match (&answer, batch.job) {
            // A job of notifications only.
            (Value::Array(answers), Some(_)) if answers.is_empty() => Response::new(204),
            _ => json_answer(&answer),
        };
        let bytes = response.to_bytes(batch.minor_version, batch.keep_alive, false);
        match batch.job {
            Some(number) => self.end_job_run(number, bytes),
            None => self.fill(batch.connection, batch_id, AnswerBytes::Owned(bytes)),
        }
    }

    /// Whether a job's stored request is to the JSON-RPC path.
    pub(super) fn is_jsonrpc_job(&self, head: &[u8]) -> bool {
        let Some(path) = &self.config.jsonrpc_path else {
            return false;
        };
        crate::http::RequestHead::parse(head).is_ok_and(|parsed| parsed.path() == *path)
    }

    /// Runs a job submitted to the JSON-RPC path (`Prefer: respond-async`): its calls
    /// go into the pipeline at once, with the job timeout, and the gathered answer
    /// becomes the job's (`204` for notifications only). `batch_id` is the request id
    /// that names the run (for the job timeout and a cancel).
    pub(super) fn run_jsonrpc_job(
        &mut self,
        (number, batch_id): (u64, u64),
        head: &[u8],
        body: &[u8],
        client: Option<std::net::SocketAddr>,
        timeout: std::time::Duration,
    ) {
        let path = self.config.jsonrpc_path.clone().unwrap_or_default();
        let (single, plans) = match jsonrpc::read_body(body) {
            Ok(Body::Single(call)) => (true, vec![self.plan_call(head, &path, call)]),
            Ok(Body::Batch(calls)) if calls.len() > self.config.max_pipelined => {
                let error = ErrorObject::from_status(
                    413,
                    Some(&format!(
                        "a batch holds at most {} calls",
                        self.config.max_pipelined
                    )),
                );
                (true, vec![Plan::Answer(Value::Null, error)])
            }
            Ok(Body::Batch(calls)) => (
                false,
                calls
                    .into_iter()
                    .map(|call| self.plan_call(head, &path, call))
                    .collect(),
            ),
            Err(error) => (true, vec![Plan::Answer(Value::Null, error)]),
        };
        let mut batch = Batch {
            connection: 0,
            job: Some(number),
            single,
            ids: Vec::new(),
            answers: Vec::new(),
            running: Vec::new(),
            pending: 0,
            bytes: 0,
            minor_version: 1,
            keep_alive: true,
        };
        let runs = batch.place(batch_id, plans);
        let pending = batch.pending;
        self.rpc.batches.insert(batch_id, batch);
        for (plan, call_of) in runs {
            self.send_call(0, plan, call_of, client, timeout);
        }
        if pending == 0 {
            self.finish_batch(batch_id);
        }
    }

    /// Whether `request_id` names a batch whose answers are being gathered.
    pub(super) fn is_jsonrpc_batch(&self, request_id: u64) -> bool {
        self.rpc.batches.contains_key(&request_id)
    }

    /// Interrupts the running calls of a batch whose slot is `batch_id` (its client
    /// left, or its answers grew too large: either way nobody waits for them) and
    /// forgets them; true if it was a batch.
    fn interrupt_batch(&mut self, batch_id: u64) -> bool {
        let Some(batch) = self.rpc.batches.get_mut(&batch_id) else {
            return false;
        };
        let running: Vec<u64> = batch.running.iter().copied().filter(|&r| r != 0).collect();
        batch.running.iter_mut().for_each(|r| *r = 0);
        for request_id in running {
            self.rpc.calls.remove(&request_id);
            if self.requests.remove(&request_id).is_some() {
                self.publish(self.nonce, request_id, InterruptReason::ClientGone);
            }
        }
        true
    }

    /// Forgets the batch of a slot whose client left, interrupting its running calls;
    /// true if the slot was a batch's.
    pub(super) fn forget_batch(&mut self, batch_id: u64) -> bool {
        let was = self.interrupt_batch(batch_id);
        self.rpc.batches.remove(&batch_id);
        was
    }

    /// Answers a call whose stage streamed its answer or asked to answer later, which
    /// a JSON-RPC result cannot be: `-32603`, and the stage is told to stop.
    pub(super) fn refuse_call_answer(&mut self, envelope: &Envelope, why: &str) {
        let Some(in_flight) = self.requests.remove(&envelope.request_id) else {
            return;
        };
        log::info!("request {}: {why}", envelope.request_id);
        self.publish(self.nonce, envelope.request_id, InterruptReason::ClientGone);
        let bytes = Response::error(500, why).to_bytes(1, true, false);
        self.fill(
            in_flight.connection,
            envelope.request_id,
            AnswerBytes::Owned(bytes),
        );
    }
}

/// The head of the request a call becomes: `POST` to the JSON-RPC path, the client's
/// own fields (its credentials, its `Origin`...) but those that frame a body or name a
/// task, then the call's method in `X-Task-Name`, a JSON `Content-Type` and the length
/// of the params, `body_len`, when there are any.
fn call_head(request_head: &[u8], path: &str, method: &str, body_len: usize) -> Vec<u8> {
    const DROPPED: [&str; 9] = [
        "content-length",
        "transfer-encoding",
        "content-type",
        "expect",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        METHOD_HEADER,
    ];
    let mut head = Vec::with_capacity(request_head.len() + method.len() + 64);
    crate::http::post_head_without(&mut head, path, request_head, &DROPPED);
    head.extend_from_slice(METHOD_HEADER.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(method.as_bytes());
    head.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
    if body_len > 0 {
        head.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The outcome of a call from its answer's HTTP bytes.
fn outcome_of_http(bytes: &[u8]) -> Result<Value, ErrorObject> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    let unreadable = || {
        ErrorObject::new(
            jsonrpc::INTERNAL_ERROR,
            "the method's answer is not an HTTP response",
        )
    };
    let Ok(httparse::Status::Complete(head_len)) = response.parse(bytes) else {
        return Err(unreadable());
    };
    let status = response.code.ok_or_else(unreadable)?;
    let mut json = false;
    let mut length = None;
    for field in response.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-type") {
            json = std::str::from_utf8(field.value).is_ok_and(jsonrpc::is_json_type);
        } else if field.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let rest = &bytes[head_len..];
    let body = &rest[..length.unwrap_or(rest.len()).min(rest.len())];
    jsonrpc::outcome_of_answer(status, json, body)
}

/// An answer of the JSON-RPC path: `200` with the JSON.
fn json_answer(value: &Value) -> Response {
    Response::json(200, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_answer_becomes_an_outcome() {
        let ok = Response::json(200, &serde_json::json!({"x": 1})).to_bytes(1, true, false);
        assert_eq!(outcome_of_http(&ok), Ok(serde_json::json!({"x": 1})));
        let refused = Response::error(400, "n is missing").to_bytes(1, true, false);
        let error = outcome_of_http(&refused).unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (-32602, "n is missing")
        );
        assert_eq!(outcome_of_http(b"junk").unwrap_err().code, -32603);
    }
}
