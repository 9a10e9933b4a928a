//! What an answer does to a connection: answers come back on the loopback, fill their
//! slots, and leave in request order within the output bound; refused output is tried
//! again on a backoff; a connection closes when asked, when its client has gone or when
//! it does not read.

use super::access_log::{age_us, AccessLog, Entry, SocketSummary, Unanswered};
use super::connection::{Connection, Slot, Stall};
use super::output::{status_of, AnswerBytes};
use super::{cors, Server, RETRY_FIRST, RETRY_LAST};
use crate::pipeline::envelope::{Envelope, Interrupt, InterruptReason, Protocol, StreamWritten};
use crate::pipeline::loopback::{self, render_failure, Answer, Failure};
use crate::pipeline::stream::STREAM_ACK_STEP;
use std::cmp::Reverse;
use std::time::Instant;

impl Server {
    pub(super) fn drain_loopback(&mut self) {
        let now = Instant::now();
        while let Ok(mut frames) = self.spare.recv(&self.front.loopback, zmq::DONTWAIT) {
            if !self.on_census_message(&frames) {
                match loopback::decode(frames.drain(..)) {
                    Ok((envelope, answer)) => self.on_answer(envelope, answer, now),
                    Err(e) => log::warn!("dropped a loopback message: {e}"),
                }
            }
            self.spare.give_back(frames);
        }
    }

    pub(super) fn on_answer(&mut self, envelope: Envelope, answer: Answer, now: Instant) {
        if envelope.probe {
            return self.on_probe_answer(&envelope, answer);
        }
        // A publish answers nothing, whichever request it came with.
        let answer = match answer {
            Answer::Publish(item) => return self.publish_from_stage(envelope.request_id, item),
            // Only a job's end is published so; a worker sends it for jobs only.
            Answer::Notify(_) if envelope.job_number().is_none() => return,
            other => other,
        };
        // Matched by job number, whichever process sent the job.
        if let Some(number) = envelope.job_number() {
            self.on_job_answer(number, answer);
            return;
        }
        if envelope.nonce != self.nonce {
            if envelope.front_end != self.front.front_end {
                misaddressed(envelope.front_end, self.front.front_end);
                return;
            }
            log::debug!(
                "request {}: dropped an answer meant for an earlier run",
                envelope.request_id
            );
            return;
        }
        let answer = match answer {
            // Only jobs keep their progress.
            Answer::Progress { .. } => return,
            Answer::StreamStart(_) | Answer::Later { .. }
                if self.is_jsonrpc_call(envelope.request_id) =>
            {
                let why = "a JSON-RPC call's answer can be neither streamed nor put off";
                return self.refuse_call_answer(&envelope, why);
            }
            Answer::StreamStart(_) | Answer::Later { .. } if envelope.websocket.is_some() => {
                let why = "a WebSocket message's answer can be neither streamed nor put off";
                return self.refuse_call_answer(&envelope, why);
            }
            Answer::StreamStart(part) => return self.on_stream_part(&envelope, part, true),
            Answer::StreamPiece(part) => return self.on_stream_part(&envelope, part, false),
            Answer::StreamEnd(last) => return self.on_stream_end(&envelope, Some(last)),
            Answer::StreamAbort => return self.on_stream_end(&envelope, None),
            Answer::Hold { hold, answer } => return self.on_hold(&envelope, hold, answer),
            whole => whole,
        };
        // Gone when already answered (504, or 503 when a census found it lost) or when
        // its client left.
        let Some(in_flight) = self.requests.remove(&envelope.request_id) else {
            log::debug!(
                "request {}: answered already; a later answer is dropped",
                envelope.request_id
            );
            return;
        };
        if in_flight.deadline <= now {
            // Too late, even if the timeout sweep has not run yet: the client gets the
            // same 504 whenever the answer comes after the deadline.
            log::debug!(
                "request {}: answered after its deadline",
                envelope.request_id
            );
            self.stats.timed_out += 1;
            let bytes =
                AnswerBytes::Owned(timed_out(in_flight.protocol, self.config.request_timeout));
            self.fill(in_flight.connection, envelope.request_id, bytes);
            return;
        }
        let bytes = match answer {
            Answer::Response(message) => AnswerBytes::Message(message),
            Answer::Failure(failure) => {
                log::debug!("request {}: {failure}", envelope.request_id);
                AnswerBytes::Owned(render_failure(envelope.protocol, &failure, true))
            }
            Answer::Later { head, body } => {
                match self.answer_later(in_flight.connection, &envelope, head, body) {
                    // The job service answers the slot once the job is stored.
                    None => return,
                    Some(refusal) => AnswerBytes::Owned(refusal),
                }
            }
            Answer::Progress { .. }
            | Answer::SelfTest(_)
            | Answer::StreamStart(_)
            | Answer::StreamPiece(_)
            | Answer::StreamEnd(_)
            | Answer::Hold { .. }
            | Answer::Publish(_)
            | Answer::Notify(_)
            | Answer::StreamAbort => return,
        };
        self.fill(in_flight.connection, envelope.request_id, bytes);
    }

    /// Puts an answer in its slot. The connection is flushed at the end of the loop
    /// turn, or at once when libzmq refuses its output or the answers filled since its
    /// last flush could take it past `max_output_bytes`: so the bound is checked as
    /// answers come, not after a whole batch of them has piled up.
    pub(super) fn fill(&mut self, id: u64, request_id: u64, bytes: AnswerBytes) {
        if self.take_call_answer(request_id, &bytes) {
            return;
        }
        let bytes = match self.websocket.pending.is_empty() {
            true => bytes,
            false => match self.websocket.pending.remove(&request_id) {
                Some(pending) => self.complete_upgrade(id, request_id, pending, bytes, &[]),
                None => bytes,
            },
        };
        if self.websocket.opened != 0 {
            self.websocket_answered(id, bytes.as_slice());
        }
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let len = bytes.len();
        if !conn.fill(request_id, bytes) {
            return;
        }
        conn.unflushed += len;
        let room = self
            .config
            .max_output_bytes
            .saturating_sub(conn.output.len());
        if conn.stall.is_some() || conn.unflushed > room {
            self.flush(id);
        } else {
            mark_dirty(&mut self.dirty, conn, id);
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        while let Some(id) = self.dirty.pop() {
            if let Some(conn) = self.connections.get_mut(&id) {
                conn.dirty = false;
            }
            self.flush(id);
        }
    }

    /// Writes every answer at the front of the connection's order that is ready.
    ///
    /// Answers are handed over while what waits stays within `max_output_bytes`; past
    /// it, libzmq takes what it can first (and the client is dropped if the rest is
    /// still too much), so a run of answers freed at once (the one they waited behind
    /// has come) never piles up in the output beyond the bound and one answer.
    pub(super) fn flush(&mut self, id: u64) {
        while self.flush_within_bound(id) {}
    }

    /// One pass of [`flush`](Self::flush): true if it stopped at the output bound with
    /// answers still ready, and the client is still there.
    pub(super) fn flush_within_bound(&mut self, id: u64) -> bool {
        let Some(conn) = self.connections.get_mut(&id) else {
            return false;
        };
        conn.unflushed = 0;
        let mut over = false;
        let mut written = false;
        while let Some(front) = conn.slots.front_mut() {
            // The parts of a streamed answer go out as they come.
            if let Some(stream) = &mut front.stream {
                written |= !stream.pieces.is_empty();
                stream.bytes = 0;
                // The first piece is the head: it takes the CORS fields, once.
                let mut cors = if stream.pieces.is_empty() {
                    None
                } else {
                    front.cors.take()
                };
                // Taken, not drained: an idle stream (a hold) keeps no room for
                // pieces between its messages.
                for piece in std::mem::take(&mut stream.pieces) {
                    conn.output
                        .push(cors::decorate(piece, cors.take().as_deref()));
                }
            }
            if front.answer.is_none() {
                break;
            }
            let Some(mut slot) = conn.slots.pop_front() else {
                break;
            };
            let Some(answer) = slot.answer.take() else {
                break;
            };
            written = true;
            // A streamed answer's last bytes are no head (its head took the fields).
            let cors_fields = slot.cors.as_deref().filter(|_| slot.stream.is_none());
            let answer = cors::decorate(answer, cors_fields);
            // A message's answer leaves as a frame: its HTTP status is counted.
            let mut message_status = None;
            let (answer, closes) = match slot.websocket {
                true => {
                    // Nothing to join it with: it goes as a message of its own.
                    let alone = conn.output.is_empty()
                        && !conn
                            .slots
                            .front()
                            .is_some_and(|next| next.answer.is_some() || next.stream.is_some());
                    let ws = conn.websocket();
                    let closed = ws.as_ref().is_none_or(|ws| ws.close_sent);
                    let framed = super::websocket::answer_frame(answer, closed, alone);
                    self.websocket.stats.sent += framed.messages;
                    message_status = framed.status;
                    if let Some(ws) = ws {
                        ws.log.sent += framed.messages;
                        ws.log.sent_bytes += framed.bytes.len() as u64;
                        if framed.close.is_some() {
                            ws.close_code = framed.close;
                        }
                    }
                    (framed.bytes, framed.close.is_some())
                }
                false => (answer, false),
            };
            let bytes = answer.as_slice();
            let status = match (&slot.stream, &message_status) {
                (Some(stream), _) => &stream.status,
                (None, Some(digits)) => std::str::from_utf8(digits).unwrap_or("-"),
                (None, None) => status_of(bytes),
            };
            self.stats.answered += 1;
            if matches!(status.as_bytes().first(), Some(b'4' | b'5')) {
                self.stats.errors += 1;
            }
            // The request's age, worked out once for the metrics and the log.
            let age = age_us(slot.arrived, self.access.turn_now());
            self.metrics
                .answered(slot.request_id, status.as_bytes(), age);
            let entry = || Entry {
                age_us: Some(age),
                ..entry(&conn.peer, &slot)
            };
            match &slot.stream {
                Some(stream) => {
                    self.access
                        .answered_streamed(&entry(), stream.status.as_bytes(), stream.total);
                }
                // A socket's messages are logged together, at its close.
                None if slot.websocket => {}
                None => self.access.answered(&entry(), bytes),
            }
            conn.output.push(answer);
            if closes {
                // The answer ended with a Close (GRIP's CLOSE event): nothing more goes.
                if let Some(ws) = conn.websocket() {
                    ws.close_sent = true;
                }
                conn.closing = true;
                conn.close_when_written = true;
                break;
            }
            if slot.close_after {
                conn.close_when_written = true;
                break;
            }
            if conn.output.queued_behind_front() > self.config.max_output_bytes {
                over = true;
                break;
            }
        }
        if written && conn.slots.is_empty() {
            conn.last_active = Instant::now();
        }
        self.write(id);
        over && self.connections.contains_key(&id)
    }

    /// Hands a connection's output to libzmq, as much as it takes without blocking. Then
    /// closes the connection if it asked to be closed once written; or, when libzmq
    /// refused some, drops it if more than `max_output_bytes` wait, or else schedules
    /// another try.
    pub(super) fn write(&mut self, id: u64) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let socket = &self.listeners[conn.listener].socket;
        let mut wrote = false;
        let mut refused = false;
        while !conn.output.is_empty() {
            match socket.send(&conn.routing_id[..], zmq::SNDMORE | zmq::DONTWAIT) {
                Ok(()) => {
                    // Once the routing id is taken, libzmq takes the data frame too.
                    if let Some(message) = conn.output.take() {
                        if let Err(e) = socket.send(message, zmq::DONTWAIT) {
                            log::warn!("connection {id}: write failed: {e}");
                        }
                    }
                    wrote = true;
                }
                Err(zmq::Error::EAGAIN) => {
                    refused = true;
                    break;
                }
                Err(e) => {
                    // EHOSTUNREACH: the peer is gone; its disconnect notice cleans up.
                    log::debug!("connection {id}: output dropped: {e}");
                    conn.output.clear();
                }
            }
        }
        if !refused {
            // Everything of a stream in progress is with libzmq now: its worker may
            // send more.
            if let Some(front) = conn.slots.front_mut() {
                if let Some(stream) = front.stream.as_deref_mut() {
                    let unacknowledged = stream.total - stream.acknowledged;
                    if front.answer.is_none()
                        && stream.pieces.is_empty()
                        && unacknowledged as u64 >= STREAM_ACK_STEP
                    {
                        stream.acknowledged = stream.total;
                        stream.reminders = 0;
                        let notice = StreamWritten {
                            nonce: self.nonce,
                            request_id: front.request_id,
                            bytes: stream.total as u64,
                        };
                        publish_written(&self.front.interrupt, &notice);
                    }
                }
            }
            // Output that waited counts as written only now, for the idle timeout.
            if conn.stall.take().is_some() && conn.slots.is_empty() {
                conn.last_active = Instant::now();
            }
            if conn.close_when_written {
                self.close(id, true);
            }
            return;
        }
        // The answer being written is not counted: it is in memory whatever we do, and
        // a client that reads gets it however large it is.
        let waiting = conn.output.queued_behind_front();
        self.stats.most_output_waiting = self.stats.most_output_waiting.max(waiting as u64);
        if waiting > self.config.max_output_bytes {
            log::warn!(
                "connection {id}: the client does not read ({} bytes wait); closing",
                conn.output.len()
            );
            self.close(id, true);
            return;
        }
        let now = Instant::now();
        let backoff = match conn.stall {
            // A try between scheduled ones (a new answer) that wrote nothing.
            Some(stall) if !wrote && now < stall.retry_at => return,
            Some(stall) if !wrote => (stall.backoff * 2).min(RETRY_LAST),
            _ => RETRY_FIRST,
        };
        let retry_at = now + backoff;
        conn.stall = Some(Stall { retry_at, backoff });
        self.retries.push(Reverse((retry_at, id)));
    }

    /// Tries again the output of each stalled connection whose time has come.
    pub(super) fn retry_stalled(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.retries.peek() {
            if at > now {
                return;
            }
            self.retries.pop();
            let due = self
                .connections
                .get(&id)
                .and_then(|c| c.stall)
                .is_some_and(|stall| stall.retry_at == at);
            if due {
                self.write(id);
            }
        }
    }

    /// Forgets a connection, interrupting its unanswered requests; `hang_up` also closes
    /// the TCP connection (otherwise the client already has).
    pub(super) fn close(&mut self, id: u64, hang_up: bool) {
        let Some(conn) = self.connections.remove(&id) else {
            return;
        };
        self.trimmer.closed();
        let listener = &mut self.listeners[conn.listener];
        listener.peers.remove(&conn.routing_id);
        if hang_up {
            listener.hang_up(&conn.routing_id);
        }
        let mut held_by_jobs = Vec::new();
        for slot in &conn.slots {
            if !slot.websocket {
                self.access
                    .unanswered(&entry(&conn.peer, slot), Unanswered::ClientGone);
            }
            if slot.answer.is_some() {
                continue;
            }
            if self.forget_batch(slot.request_id) {
                continue;
            }
            if self.requests.remove(&slot.request_id).is_some() {
                self.publish(self.nonce, slot.request_id, InterruptReason::ClientGone);
            } else if self.release_hold(slot.request_id) {
                log::debug!("request {}: its client left; hold freed", slot.request_id);
            } else if self.jobs.is_some() {
                held_by_jobs.push(slot.request_id);
            }
        }
        self.forget_job_requests(id, &held_by_jobs);
        if let super::connection::Decoder::WebSocket(ws) = conn.decoder {
            self.websocket.stats.closed(&ws);
            log_socket_closed(&mut self.access, &conn.peer, &ws);
            self.tell_closed(id, &ws, conn.client);
            self.release_socket(ws.hold);
        }
    }

    pub(super) fn publish(&self, nonce: u64, request_id: u64, reason: InterruptReason) {
        self.metrics.interrupted(reason);
        let interrupt = Interrupt {
            nonce,
            request_id,
            reason,
        };
        if let Err(e) = self
            .front
            .interrupt
            .send(&interrupt.encode()[..], zmq::DONTWAIT)
        {
            log::debug!("request {request_id}: interrupt not published: {e}");
        }
    }
}

/// Publishes how much of a stream was handed on, for the worker that sends it.
pub(super) fn publish_written(interrupt: &zmq::Socket, notice: &StreamWritten) {
    if let Err(e) = interrupt.send(&notice.encode()[..], zmq::DONTWAIT) {
        log::debug!(
            "request {}: stream notice not published: {e}",
            notice.request_id
        );
    }
}

pub(super) fn mark_dirty(dirty: &mut Vec<u64>, conn: &mut Connection, id: u64) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(id);
    }
}

/// The 504 for a request past its deadline, in the client's protocol, naming the limit
/// that fired (the front end's request timeout, `timeout` long).
pub(super) fn timed_out(protocol: Protocol, timeout: std::time::Duration) -> Vec<u8> {
    let failure = Failure::deadline("request timeout", timeout);
    render_failure(protocol, &failure, true)
}

/// Writes a closed WebSocket's line in the access log (see `access_log`): its upgrade
/// request's, with what happened on the socket.
fn log_socket_closed(access: &mut AccessLog, peer: &str, ws: &super::websocket::WsState) {
    if !access.enabled() {
        return;
    }
    let log = &ws.log;
    let (closed_by, code) = ws.closed_by();
    let line = ws.request_line();
    let entry = Entry {
        request_id: log.request_id,
        peer,
        request_line: Some(&line),
        arrived: log.arrived,
        age_us: None,
        upstream: Some(ws.entry),
    };
    let summary = SocketSummary {
        received: log.received,
        sent: log.sent,
        sent_bytes: log.sent_bytes,
        closed_by: closed_by.name(),
        code,
    };
    access.websocket_closed(&entry, &summary);
}

/// What the access log needs of a request.
pub(super) fn entry<'a>(peer: &'a str, slot: &'a Slot) -> Entry<'a> {
    Entry {
        request_id: slot.request_id,
        peer,
        request_line: slot.label.as_deref(),
        arrived: slot.arrived,
        age_us: None,
        upstream: slot.upstream,
    }
}

/// Warns (once per process) that an answer addressed to another front end arrived
/// here: the front ends' numbers and the workers' lists of loopbacks disagree.
#[cold]
fn misaddressed(to: u8, here: u8) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        log::warn!(
            "front end {here}: an answer for front end {to} arrived here; every worker and proxy must list the front ends' loopbacks in the order of their numbers (--front-end, the topology's front_ends)"
        );
    });
}
