//! The front end's side of asynchronous jobs (see [`crate::jobs`]): it recognises job
//! requests, hands them to the job service, dispatches the runs the service starts,
//! takes their answers off the loopback, and enforces the job timeout.
//!
//! Everything that touches the disk happens on the service's thread; here only channel
//! sends and socket I/O happen, so the loop never waits on the store.

use super::answers::mark_dirty;
use super::connection::Label;
use super::job_reads::{read_deadline, PendingReads};
use super::output::AnswerBytes;
use super::requests::http_protocol;
use super::Server;
use crate::base::error::{Error, Result};
use crate::base::sockets;
use crate::http::field_text;
use crate::http::{Method, ParsedRequest, Response};
use crate::jobs::service::{Command, Event, ReplyTo, RunAnswer};
use crate::jobs::{AsyncPreference, JobRoute, JobsConfig, JobsHandle};
use crate::pipeline::envelope::{Envelope, InterruptReason, Protocol};
use crate::pipeline::loopback::render_failure;
use crate::pipeline::loopback::{Answer, Failure, FailureKind};
use std::collections::HashMap;
use std::time::Instant;

/// A job's run in the pipeline.
struct JobRun {
    /// The request id its envelope carries (interrupts name it).
    request_id: u64,
    /// When it fails with 504.
    deadline: Instant,
}

/// The front end's link to the job service.
pub(super) struct JobLink {
    handle: JobsHandle,
    /// Rung by the service when it has events.
    pub(super) doorbell: zmq::Socket,
    /// Runs in the pipeline, by job number.
    in_flight: HashMap<u64, JobRun>,
    /// Reads waiting for the service, with their deadlines.
    pub(super) reads: PendingReads,
    scratch: zmq::Message,
}

impl JobLink {
    /// Opens the store and starts the service, with a doorbell over `inproc://`.
    pub(super) fn start(ctx: &zmq::Context, config: JobsConfig, nonce: u64) -> Result<JobLink> {
        let endpoint = format!("inproc://prime-jobs-doorbell-{nonce:x}");
        let doorbell = sockets::socket(ctx, zmq::PAIR)?;
        sockets::bind(&doorbell, &endpoint)?;
        let ringer = sockets::socket(ctx, zmq::PAIR)?;
        ringer
            .connect(&endpoint)
            .map_err(|e| Error::zmq(format!("connecting {endpoint}"), e))?;
        let handle = JobsHandle::start(config, ringer).map_err(|e| Error::Jobs(Box::new(e)))?;
        Ok(JobLink {
            handle,
            doorbell,
            in_flight: HashMap::new(),
            reads: PendingReads::default(),
            scratch: zmq::Message::new(),
        })
    }
}

impl JobLink {
    /// A handle for the control listener's admin API.
    pub(super) fn admin_link(&self) -> Option<crate::jobs::service::admin::AdminLink> {
        self.handle.admin_link()
    }

    /// The job service's switch for the events of jobs no event stream watches.
    pub(super) fn event_switch(&self) -> crate::jobs::service::EventSwitch {
        self.handle.event_switch()
    }
}

/// The client's HTTP facts, for an answer the job service writes.
fn reply_to(connection: u64, request_id: u64, protocol: Protocol) -> ReplyTo {
    let (minor_version, keep_alive, head) = match protocol {
        Protocol::Http {
            minor_version,
            keep_alive,
            head,
        } => (minor_version, keep_alive, head),
        Protocol::Netstring | Protocol::Raw => (1, false, false),
    };
    ReplyTo {
        connection,
        request_id,
        minor_version,
        keep_alive,
        head,
    }
}

impl Server {
    /// Whether the job service takes this request: a job resource, or a request that
    /// prefers an asynchronous answer.
    pub(super) fn is_job_request(&self, request: &ParsedRequest) -> bool {
        let Some(link) = &self.jobs else {
            return false;
        };
        let path = request.path_str();
        let prefix = &link.handle.config().path;
        let under_prefix = path
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        under_prefix
            || (request.has_prefer && AsyncPreference::from_head(&request.head).respond_async)
    }

    /// Hands a job request to the service, keeping its place in the answer order; or
    /// answers at once what needs no store (wrong method, unknown path).
    pub(super) fn on_job_request(
        &mut self,
        id: u64,
        request: ParsedRequest,
        close_after: bool,
        label: Option<Label>,
    ) {
        let Some(link) = &self.jobs else {
            return;
        };
        let route = JobRoute::parse(&link.handle.config().path, request.target_str());
        let immediate = match (&route, request.method) {
            (None, _) => None,
            (Some(JobRoute::Job { .. }), Method::Get | Method::Head | Method::Delete) => None,
            (
                Some(JobRoute::Result { .. } | JobRoute::Events { .. }),
                Method::Get | Method::Head,
            ) => None,
            (Some(JobRoute::Job { .. }), _) => Some(
                Response::error(405, "a job allows GET, HEAD and DELETE")
                    .header("Allow", "GET, HEAD, DELETE"),
            ),
            (Some(JobRoute::Result { .. } | JobRoute::Events { .. }), _) => Some(
                Response::error(405, "a job's result and events allow GET and HEAD")
                    .header("Allow", "GET, HEAD"),
            ),
            (Some(JobRoute::Unknown), _) => Some(Response::error(
                404,
                "job resources are /jobs/{id}, /jobs/{id}/result and /jobs/{id}/events",
            )),
        };
        if let Some(response) = immediate {
            self.answer_response(id, &request, &response, close_after, label);
            return;
        }
        // A new job is routed by the task table like a request the client waits for:
        // an unknown task name is refused before anything is stored.
        if route.is_none() {
            if let Err(refusal) = self.front.entry_for(&request.head) {
                log::info!("connection {id}: refused a job by the task table: {refusal}");
                let response = Response::error(400, &refusal.to_string());
                self.answer_response(id, &request, &response, close_after, label);
                return;
            }
        }
        let protocol = http_protocol(&request);
        let Some(request_id) = self.hold_slot(id, protocol, close_after, label) else {
            return;
        };
        let reply = reply_to(id, request_id, protocol);
        let client = self.connections.get(&id).and_then(|c| c.client);
        // A drain does not wait for long-polls.
        let draining = self.draining_since.is_some();
        let command = match route {
            Some(JobRoute::Job { id, wait }) if request.method != Method::Delete => {
                Command::Status {
                    reply,
                    id,
                    wait: wait.filter(|_| !draining),
                }
            }
            Some(JobRoute::Job { id, .. }) => Command::Cancel { reply, id },
            Some(JobRoute::Result { id }) => Command::Result { reply, id },
            Some(JobRoute::Events { id }) => Command::Watch {
                reply,
                id,
                last_event_id: field_text(&request.head, "last-event-id")
                    .and_then(|v| v.trim().parse().ok()),
            },
            Some(JobRoute::Unknown) | None => {
                let preference = AsyncPreference::from_head(&request.head);
                Command::Submit {
                    reply,
                    head: request.head,
                    body: request.body,
                    wait: preference.wait.filter(|_| !draining),
                    client,
                }
            }
        };
        if let (Some(wait), Some(link)) = (read_wait(&command), &mut self.jobs) {
            let wait = wait.map(|w| w.min(link.handle.config().max_wait));
            let deadline = read_deadline(Instant::now(), self.config.request_timeout, wait);
            link.reads.expect(reply, deadline);
        }
        self.send_job_command(command);
    }

    pub(super) fn send_job_command(&self, command: Command) {
        if let Some(link) = &self.jobs {
            link.handle.send(command);
        }
    }

    /// A stage answered `Next::later()` for a synchronous request: store it as a job;
    /// the service answers the client's slot with the `202`.
    pub(super) fn answer_later(
        &mut self,
        connection: u64,
        envelope: &Envelope,
        head: zmq::Message,
        body: zmq::Message,
    ) -> Option<Vec<u8>> {
        let refusal = match (&self.jobs, envelope.protocol) {
            (None, _) => "a stage asked to answer later, but this server keeps no jobs (--jobs-db)",
            (Some(_), Protocol::Http { .. }) => {
                let reply = reply_to(connection, envelope.request_id, envelope.protocol);
                self.send_job_command(Command::Submit {
                    reply,
                    head: head.to_vec(),
                    body: body.to_vec(),
                    wait: None,
                    client: envelope.client,
                });
                return None;
            }
            (Some(_), _) => "only HTTP requests can be answered later",
        };
        log::error!("request {}: {refusal}", envelope.request_id);
        let failure = Failure::new(FailureKind::WorkerPanicked, refusal);
        Some(render_failure(envelope.protocol, &failure, true))
    }

    /// A job's run came back on the loopback: the service stores the answer.
    pub(super) fn on_job_answer(&mut self, number: u64, answer: Answer) {
        let Some(link) = &mut self.jobs else {
            log::warn!("job number {number}: an answer, but this server keeps no jobs");
            return;
        };
        let answer = match answer {
            Answer::Progress { fraction, message } => {
                link.handle.send(Command::Progress {
                    number,
                    fraction,
                    message,
                });
                return;
            }
            // A probe is never a job: nothing to store; a publish is no answer.
            Answer::SelfTest(_) | Answer::Publish(_) => return,
            Answer::Notify(channel) => {
                // A job's own channel takes only the job service's events.
                if crate::pipeline::channel::reserved_channel(&channel) {
                    log::warn!("job number {number}: a stage named a job's channel; ignored");
                } else {
                    link.handle.send(Command::Notify { number, channel });
                }
                return;
            }
            // A stage answers a job's hold with the hold's own answer (see
            // `stages::Next::Hold`); one that came anyway is stored as that answer.
            Answer::Hold { answer, .. } => RunAnswer::Response(answer.into()),
            Answer::Response(bytes) => RunAnswer::Response(bytes),
            Answer::Failure(failure) => RunAnswer::Failure(failure),
            Answer::Later { .. } => RunAnswer::Failure(Failure::new(
                FailureKind::WorkerPanicked,
                "a stage asked to answer later a job that already is asynchronous",
            )),
            Answer::StreamAbort => RunAnswer::Failure(Failure::new(
                FailureKind::WorkerPanicked,
                "the stage stopped its answer midway",
            )),
            Answer::StreamStart(_) | Answer::StreamPiece(_) | Answer::StreamEnd(_) => {
                RunAnswer::Failure(Failure::new(
                    FailureKind::WorkerPanicked,
                    "a job's answer came in pieces, which the job store cannot keep",
                ))
            }
        };
        link.in_flight.remove(&number);
        link.handle.send(Command::Answered { number, answer });
    }

    /// Reads what the job service has sent: answers, runs to dispatch, interrupts.
    pub(super) fn drain_jobs(&mut self) {
        let Some(link) = &mut self.jobs else {
            return;
        };
        while link.doorbell.recv(&mut link.scratch, zmq::DONTWAIT).is_ok() {}
        while let Some(event) = self.jobs.as_ref().and_then(|l| l.handle.try_event()) {
            match event {
                Event::Reply { to, bytes } => {
                    if let Some(link) = &mut self.jobs {
                        link.reads.answered(to.request_id);
                    }
                    self.fill(to.connection, to.request_id, AnswerBytes::Owned(bytes))
                }
                Event::Dispatch {
                    number,
                    head,
                    body,
                    client,
                } => self.dispatch_job(number, head, body, client),
                Event::StreamPart { to, bytes, start } => {
                    if let Some(link) = &mut self.jobs {
                        link.reads.answered(to.request_id);
                    }
                    let close_delimited = start && to.minor_version == 0;
                    let id = to.connection;
                    if let Some(conn) = self.connections.get_mut(&id) {
                        let part = AnswerBytes::Owned(bytes);
                        if conn
                            .stream_part(to.request_id, part, close_delimited)
                            .is_some()
                        {
                            mark_dirty(&mut self.dirty, conn, id);
                        }
                    }
                }
                Event::StreamEnd { to, last } => {
                    let id = to.connection;
                    if let Some(conn) = self.connections.get_mut(&id) {
                        let last = Some(AnswerBytes::Owned(last));
                        if conn.end_stream(to.request_id, last) {
                            mark_dirty(&mut self.dirty, conn, id);
                        }
                    }
                }
                Event::Hold {
                    to,
                    channel,
                    head,
                    missed,
                } => {
                    let Some(link) = &mut self.jobs else {
                        continue;
                    };
                    link.reads.answered(to.request_id);
                    let keep_alive = link.handle.config().sse_keepalive;
                    self.hold_job_stream(to, channel, head, missed, keep_alive);
                }
                Event::Publish(item) => self.publish_job_event(item),
                Event::SelfTest { token, result } => self.on_store_checked(token, result),
                Event::Notify { channels, document } => {
                    let data = document.to_string();
                    let stream = crate::http::SseEvent::new(data.as_str())
                        .event("job")
                        .to_bytes();
                    let response = crate::http::Response::json(200, &document);
                    for channel in channels {
                        let item = crate::pipeline::channel::Item::stream(channel, stream.clone())
                            .with_response(&response);
                        self.publish_item(item);
                    }
                }
                Event::Interrupt { number } => {
                    let run = self.jobs.as_mut().and_then(|l| l.in_flight.remove(&number));
                    if let Some(run) = run {
                        self.publish(self.nonce, run.request_id, InterruptReason::Cancelled);
                        self.forget_batch(run.request_id);
                    }
                }
            }
        }
    }

    /// Sends a job's run into the pipeline, as a job with the job timeout.
    fn dispatch_job(
        &mut self,
        number: u64,
        head: Vec<u8>,
        body: Vec<u8>,
        client: Option<std::net::SocketAddr>,
    ) {
        if self.is_jsonrpc_job(&head) {
            return self.dispatch_jsonrpc_job(number, head, body, client);
        }
        // Routed like a request sent while the client waits (the table is checked at
        // submission; a job stored before the table changed may be refused here).
        let entry = self.front.entry_for(&head);
        let Some(link) = &mut self.jobs else {
            return;
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(refusal) => {
                log::info!("job number {number}: refused by the task table: {refusal}");
                link.handle.send(Command::Answered {
                    number,
                    answer: RunAnswer::Failure(Failure::rejected(400, refusal.to_string())),
                });
                return;
            }
        };
        let request_id = self.next_request;
        self.next_request += 1;
        let timeout = link.handle.config().job_timeout;
        let now = Instant::now();
        let envelope = Envelope::for_job(request_id, number, self.nonce)
            .at_front_end(self.front.front_end)
            .with_timeout(timeout)
            .with_client(client);
        let lead = crate::pipeline::envelope::lead_frame(&envelope.encode(), &head);
        let body = (!body.is_empty()).then(|| zmq::Message::from(body));
        let frames = std::iter::once(lead).chain(body);
        match sockets::send_frames(self.front.entry_socket(entry), frames, zmq::DONTWAIT) {
            Ok(()) => {
                link.in_flight.insert(
                    number,
                    JobRun {
                        request_id,
                        deadline: now + timeout,
                    },
                );
            }
            Err(e) => {
                if self.refusals.allow() {
                    log::warn!("job number {number}: the pipeline is not taking requests: {e}");
                }
                let failure = Failure::new(
                    FailureKind::QueueFull,
                    "the pipeline is not taking requests",
                );
                link.handle.send(Command::Answered {
                    number,
                    answer: RunAnswer::Failure(failure),
                });
            }
        }
    }

    /// Runs a job submitted to the JSON-RPC path: its calls go into the pipeline, and
    /// their gathered answer ends the run (see `jsonrpc`).
    fn dispatch_jsonrpc_job(
        &mut self,
        number: u64,
        head: Vec<u8>,
        body: Vec<u8>,
        client: Option<std::net::SocketAddr>,
    ) {
        let Some(link) = &mut self.jobs else {
            return;
        };
        let request_id = self.next_request;
        self.next_request += 1;
        let timeout = link.handle.config().job_timeout;
        link.in_flight.insert(
            number,
            JobRun {
                request_id,
                deadline: Instant::now() + timeout,
            },
        );
        self.run_jsonrpc_job((number, request_id), &head, &body, client, timeout);
    }

    /// Ends a run with a whole answer the front end gathered (a JSON-RPC batch's), if
    /// the run is still in flight (not timed out or cancelled meanwhile).
    pub(super) fn end_job_run(&mut self, number: u64, bytes: Vec<u8>) {
        if let Some(link) = &mut self.jobs {
            if link.in_flight.remove(&number).is_some() {
                let payload = crate::pipeline::loopback::Payload::from(zmq::Message::from(bytes));
                link.handle.send(Command::Answered {
                    number,
                    answer: RunAnswer::Response(payload),
                });
            }
        }
    }

    /// Fails the runs past the job timeout with 504 and interrupts their work.
    pub(super) fn sweep_jobs(&mut self, now: Instant) {
        let Some(link) = &mut self.jobs else {
            return;
        };
        let job_timeout = link.handle.config().job_timeout;
        let late: Vec<(u64, u64)> = link
            .in_flight
            .iter()
            .filter(|(_, run)| run.deadline <= now)
            .map(|(number, run)| (*number, run.request_id))
            .collect();
        for (number, _) in &late {
            link.in_flight.remove(number);
        }
        for (number, request_id) in late {
            log::info!("job number {number}: run {request_id} timed out");
            let failure = Failure::deadline("job timeout", job_timeout);
            self.send_job_command(Command::Answered {
                number,
                answer: RunAnswer::Failure(failure),
            });
            self.publish(self.nonce, request_id, InterruptReason::DeadlinePassed);
            self.forget_batch(request_id);
        }
    }

    /// The runs in the pipeline: (request id, job number), for a census.
    /// A JSON-RPC batch's run is no request in a pool (its calls are asked about as
    /// requests), so it is left out.
    pub(super) fn job_runs(&self) -> Vec<(u64, u64)> {
        self.jobs.as_ref().map_or_else(Vec::new, |link| {
            link.in_flight
                .iter()
                .filter(|(_, run)| !self.is_jsonrpc_batch(run.request_id))
                .map(|(number, run)| (run.request_id, *number))
                .collect()
        })
    }

    /// Ends a run that will not answer (lost with a proxy) with `failure`; the service
    /// runs the job again if the failure is transient.
    pub(super) fn fail_job_run(&mut self, number: u64, failure: Failure) {
        if let Some(link) = &mut self.jobs {
            if link.in_flight.remove(&number).is_some() {
                link.handle.send(Command::Answered {
                    number,
                    answer: RunAnswer::Failure(failure),
                });
            }
        }
    }

    /// Tells the service a connection closed while it held requests of it (long-polls,
    /// event streams).
    pub(super) fn forget_job_requests(&self, connection: u64, request_ids: &[u64]) {
        for &request_id in request_ids {
            self.send_job_command(Command::Gone {
                connection,
                request_id,
            });
        }
    }

    /// Tells the service the front end drains: long-polls are answered now.
    pub(super) fn drain_job_waits(&self) {
        self.send_job_command(Command::Drain);
    }

    /// How many job runs are in the pipeline: a drain waits for them (bounded by its
    /// timeout), so that a run that can end does not run again after the restart.
    pub(super) fn job_runs_in_flight(&self) -> usize {
        self.jobs.as_ref().map_or(0, |link| link.in_flight.len())
    }

    /// Stops the service once it has committed what it holds.
    pub(super) fn stop_jobs(&mut self) {
        if let Some(link) = &mut self.jobs {
            link.handle.stop();
        }
    }

    /// The job figures for the status document, if jobs are kept.
    pub(super) fn job_stats_json(&self) -> Option<serde_json::Value> {
        let link = self.jobs.as_ref()?;
        let mut stats = link.handle.stats().to_json();
        stats["in_pipeline"] = serde_json::json!(link.in_flight.len());
        Some(stats)
    }

    /// The job figures for a metrics scrape, if jobs are kept: `prime_jobs` by state,
    /// `prime_jobs_in_pipeline`, `prime_job_store_commit_seconds` and
    /// `prime_webhook_attempts_total` by outcome.
    pub(super) fn expose_jobs(&self, out: &mut crate::base::metrics::Exposition) {
        let Some(link) = &self.jobs else {
            return;
        };
        let stats = link.handle.stats();
        let c = stats.counts;
        let help = "Jobs in the store, by state.";
        for (state, count) in [
            ("queued", c.queued),
            ("running", c.running),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
            ("expired", c.expired),
        ] {
            out.gauge("prime_jobs", help, &[("state", state)], count as i64);
        }
        out.gauge(
            "prime_jobs_in_pipeline",
            "Runs of jobs in the pipeline now.",
            &[],
            link.in_flight.len() as i64,
        );
        out.histogram(
            "prime_job_store_commit_seconds",
            "Time each group commit of the job store took.",
            &[],
            &stats.commit_seconds,
        );
        let w = stats.webhooks;
        let help = "Webhook attempts, by what followed: delivered (2xx), gone (410), retrying (failed, another attempt later), given_up (failed, the last).";
        for (outcome, count) in [
            ("delivered", w.delivered),
            ("gone", w.gone),
            ("retrying", w.retrying),
            ("given_up", w.given_up),
        ] {
            out.counter(
                "prime_webhook_attempts",
                help,
                &[("outcome", outcome)],
                count,
            );
        }
    }

    /// The job figures for the summary line ("" if jobs are not kept).
    pub(super) fn job_summary(&self) -> String {
        let Some(link) = &self.jobs else {
            return String::new();
        };
        let stats = link.handle.stats();
        let c = stats.counts;
        format!(
            "; jobs: {} scheduled, {} queued, {} running, {} succeeded, {} failed, {} cancelled, oldest queued {} ms, commit {} us (average {} us, max {} us)",
            c.scheduled,
            c.queued,
            c.running,
            c.succeeded,
            c.failed,
            c.cancelled,
            stats.oldest_queued_ms.unwrap_or(0),
            stats.commit_last_us,
            stats.commit_average_us,
            stats.commit_max_us
        )
    }
}

/// Whether `command` is a read bounded by the request's deadline, and the wait it
/// asked for: a job's status (a long-poll's `wait` added), its result, the head of its
/// event stream. Submits and cancels write: they are answered once committed.
fn read_wait(command: &Command) -> Option<Option<std::time::Duration>> {
    match command {
        Command::Status { wait, .. } => Some(*wait),
        Command::Result { .. } | Command::Watch { .. } => Some(None),
        _ => None,
    }
}
