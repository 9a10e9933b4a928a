//! Long-polls (`?wait=`, `Prefer: wait=`) and event streams (`/jobs/{id}/events`):
//! who waits for which job, what each is sent when the job changes, and when a wait
//! ends.
//!
//! A job's events are stored, then published on the job's channel (`job:{id}`, see
//! [`crate::pipeline::channel::job_channel`]) as items whose id is the event's sequence
//! number and whose `prev-id` is the one before; the last event (a final state) closes
//! the stream. An event stream is the store's events after the client's
//! `Last-Event-ID`, then a stream hold on that channel in the front end
//! ([`Event::Hold`]): both leave here in one order, after the batch's commit, so the
//! hold is in place before the next event is published.

use super::{Event, ReplyTo, Service};
use crate::http::{sse_response, Response, SseEvent};
use crate::jobs::answers;
use crate::jobs::clock::now_ms;
use crate::jobs::store::{JobEvent, JobRecord, JobState, StoreError, StoredAnswer};
use crate::jobs::tag::job_tag;
use crate::pipeline::channel::{job_channel, Item};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a long-poll waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WaitFor {
    /// `GET /jobs/{id}?wait=`: any change of state; the status at the end of the wait.
    Change,
    /// `Prefer: respond-async, wait=`: the job's answer; the `202` at the end of the wait.
    Answer,
}

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) reply: ReplyTo,
    pub(super) wait_for: WaitFor,
    /// The job's state when the wait began: a change is a state other than this one.
    pub(super) state: JobState,
}

impl Service {
    pub(super) fn add_waiter(
        &mut self,
        record: &JobRecord,
        reply: ReplyTo,
        wait_for: WaitFor,
        wait: Duration,
    ) {
        let number = record.number;
        let id = self.next_waiter;
        self.next_waiter += 1;
        let until = Instant::now() + wait.min(self.config.max_wait);
        self.waiters.entry(number).or_default().push(Waiter {
            id,
            reply,
            wait_for,
            state: record.state,
        });
        self.deadlines.push(Reverse((until, number, id)));
    }

    /// Answers the long-polls a change of state ends: every `Change` wait, and the
    /// `Answer` waits once the job has ended.
    pub(super) fn changed(&mut self, record: &JobRecord, answer: Option<&StoredAnswer>) {
        self.publish_state(record);
        self.wake_waiters(record, answer);
    }

    /// Answers the long-polls of a job that changed (here or, with a shared store, on
    /// another front end): the `Change` waits that began in another state, and the
    /// `Answer` waits once the job has ended.
    pub(super) fn wake_waiters(&mut self, record: &JobRecord, answer: Option<&StoredAnswer>) {
        let Some(waiters) = self.waiters.remove(&record.number) else {
            return;
        };
        let mut still = Vec::new();
        for waiter in waiters {
            let response = match (waiter.wait_for, answer) {
                (WaitFor::Answer, Some(answer)) => answers::result(answer.clone()),
                (WaitFor::Answer, None) if !record.state.is_final() => {
                    still.push(waiter);
                    continue;
                }
                (WaitFor::Change, _) if waiter.state == record.state => {
                    still.push(waiter);
                    continue;
                }
                _ => answers::status(record, &self.config.path),
            };
            self.reply(waiter.reply, &response);
        }
        if !still.is_empty() {
            self.waiters.insert(record.number, still);
        }
    }

    /// Stores a job's `state` event and sends it to the job's event streams (see
    /// [`publish_event`](Self::publish_event)). A plain one (no error, no progress) that
    /// the store keeps with the change it tells of is neither given to the store nor,
    /// while nothing here listens, even written out.
    pub(super) fn publish_state(&mut self, record: &JobRecord) {
        let plain = record.error.is_none() && record.progress.is_none();
        if !(plain && self.store.state_events_from_changes()) {
            self.publish_event(record, "state", &answers::state_event_json(record));
            return;
        }
        let last = record.state.is_final();
        if self.seen_events.contains_key(&record.number) || self.every_event.is_on() {
            let event = JobEvent {
                seq: record.events,
                kind: "state".to_string(),
                data: answers::state_event_json(record),
            };
            self.outbox
                .push(Event::Publish(event_item(&record.id, &event, last)));
        }
        self.watched_to(record.number, record.events, last);
    }

    /// Stores a job's event and sends it to the job's event streams; a state event of a
    /// final state ends them.
    pub(super) fn publish_event(&mut self, record: &JobRecord, kind: &str, data: &str) {
        let event = JobEvent {
            seq: record.events,
            kind: kind.to_string(),
            data: data.to_string(),
        };
        if let Err(e) = self.store.add_event(record.number, &event, now_ms()) {
            log::error!(
                "jobs: job {}: an event was not stored: {e}",
                job_tag(record.id.as_bytes())
            );
            return;
        }
        let last = kind == "state" && record.state.is_final();
        // An event no stream here watches reaches no one on the job's channel (unless
        // the front end says something else listens there): it is not sent, which
        // spares its framing here and its delivery there. A stream that opens later
        // reads it from the store.
        let watched = self.seen_events.contains_key(&record.number);
        if watched || self.every_event.is_on() {
            self.outbox
                .push(Event::Publish(event_item(&record.id, &event, last)));
        }
        self.watched_to(record.number, event.seq, last);
    }

    /// Notes that a job's events up to `seq` are on its channel here, for a job with an
    /// event stream held on this front end (see [`Service::remote`](super::Service)):
    /// with a shared store, another front end's events of the job are read from the
    /// store and published here after it. `last`: the job has ended, forget it.
    pub(super) fn watched_to(&mut self, number: u64, seq: u64, last: bool) {
        if last {
            self.seen_events.remove(&number);
        } else if let Some(seen) = self.seen_events.get_mut(&number) {
            *seen = (*seen).max(seq);
        }
    }

    pub(super) fn stream_piece(&mut self, to: ReplyTo, bytes: &[u8]) {
        if to.head {
            return;
        }
        self.outbox.push(Event::StreamPart {
            to,
            bytes: Response::chunk(to.minor_version, bytes),
            start: false,
        });
    }

    pub(super) fn stream_end(&mut self, to: ReplyTo) {
        let last = if to.head {
            Vec::new()
        } else {
            Response::last_chunk(to.minor_version).to_vec()
        };
        self.outbox.push(Event::StreamEnd { to, last });
    }

    /// Records a job's progress, and sends it to the job's event streams.
    pub(super) fn progress(
        &mut self,
        number: u64,
        fraction: f32,
        message: &str,
    ) -> Result<(), StoreError> {
        let Some(record) =
            self.store
                .set_progress(number, f64::from(fraction), message, now_ms())?
        else {
            return Ok(());
        };
        // Its record now has progress: its end tells of it (see `ends`).
        if let Some(quiet) = self.running.get_mut(&number) {
            *quiet = false;
        }
        let data = serde_json::json!({ "fraction": fraction, "message": message }).to_string();
        self.publish_event(&record, "progress", &data);
        Ok(())
    }

    /// Opens an event stream on a job: the events after `after`, then the live ones
    /// until the job ends.
    pub(super) fn watch(&mut self, reply: ReplyTo, id: &str, after: u64) -> Result<(), StoreError> {
        let record = match self.find(id)? {
            Ok(record) => record,
            Err(response) => {
                self.reply(reply, &response);
                return Ok(());
            }
        };
        let missed = self.store.events_after(record.number, after)?;
        let head = sse_response().stream_head(reply.minor_version, reply.keep_alive);
        if !record.state.is_final() {
            let seen = self.seen_events.entry(record.number).or_insert(0);
            *seen = (*seen).max(record.events);
            self.outbox.push(Event::Hold {
                to: reply,
                channel: job_channel(&record.id),
                head,
                missed: missed.iter().map(sse_bytes).collect(),
            });
            return Ok(());
        }
        self.outbox.push(Event::StreamPart {
            to: reply,
            bytes: head,
            start: true,
        });
        for event in &missed {
            self.stream_piece(reply, &sse_bytes(event));
        }
        self.stream_end(reply);
        Ok(())
    }

    /// Forgets the long-polls of a request whose client has gone (its event stream is
    /// a hold, which the front end frees itself).
    pub(super) fn forget(&mut self, connection: u64, request_id: u64) {
        let gone = |to: &ReplyTo| to.connection == connection && to.request_id == request_id;
        self.waiters.retain(|_, waiters| {
            waiters.retain(|w| !gone(&w.reply));
            !waiters.is_empty()
        });
    }

    /// Answers the long-polls for which `ends` holds, as at the end of their wait.
    pub(super) fn end_waits(&mut self, mut ends: impl FnMut(&(Instant, u64, u64)) -> bool) {
        let mut kept = BinaryHeap::new();
        let deadlines = std::mem::take(&mut self.deadlines);
        let mut ending = Vec::new();
        for Reverse(deadline) in deadlines {
            if ends(&deadline) {
                ending.push(deadline);
            } else {
                kept.push(Reverse(deadline));
            }
        }
        self.deadlines = kept;
        for (_, number, waiter_id) in ending {
            self.end_wait(number, waiter_id);
        }
    }

    pub(super) fn end_wait(&mut self, number: u64, waiter_id: u64) {
        let Some(waiters) = self.waiters.get_mut(&number) else {
            return;
        };
        let Some(at) = waiters.iter().position(|w| w.id == waiter_id) else {
            return;
        };
        let waiter = waiters.swap_remove(at);
        if waiters.is_empty() {
            self.waiters.remove(&number);
        }
        let response = match self.store.by_number(number) {
            Ok(Some(record)) => match waiter.wait_for {
                WaitFor::Change => answers::status(&record, &self.config.path),
                WaitFor::Answer => answers::accepted(&record, &self.config.path),
            },
            Ok(None) => answers::unknown_job(),
            Err(e) => {
                log::error!("jobs: {e}");
                answers::store_failed()
            }
        };
        self.reply(waiter.reply, &response);
    }
}

/// A job's event as a message on the job's channel: its id the event's sequence
/// number, its `prev-id` the one before; `last` (the job's final state) closes the
/// streams held on it.
pub(super) fn event_item(id: &str, event: &JobEvent, last: bool) -> Item {
    let prev_id = (event.seq > 1).then(|| (event.seq - 1).to_string());
    let mut item =
        Item::stream(job_channel(id), sse_bytes(event)).id(event.seq.to_string(), prev_id);
    if let Some(stream) = &mut item.stream {
        stream.close = last;
    }
    item
}

/// A job's event in the `text/event-stream` format.
fn sse_bytes(event: &JobEvent) -> Vec<u8> {
    SseEvent::new(event.data.as_str())
        .id(event.seq.to_string())
        .event(event.kind.as_str())
        .to_bytes()
}

/// The switch that makes the job service send the front end every job's events
/// ([`Event::Publish`]), not only those of jobs an event stream watches here (`GET
/// /jobs/{id}/events`, the default). The front end turns it on, for good, the moment
/// something else may listen on a job's channel: a hold a stage or a WebSocket makes on
/// one, or a URL subscription to one. It is turned on before that hold or subscription
/// exists, so no event published after it is skipped. A job's events are stored either
/// way, and an event stream reads those it missed from the store.
#[derive(Clone, Debug)]
pub struct EventSwitch(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl EventSwitch {
    pub(super) fn new() -> Self {
        EventSwitch(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            false,
        )))
    }

    /// Every job's events go to the front end from now on.
    pub fn turn_on(&self) {
        use std::sync::atomic::Ordering;
        if !self.0.load(Ordering::Acquire) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl super::JobsHandle {
    /// The service's [`EventSwitch`], for the front end's channels.
    pub fn event_switch(&self) -> EventSwitch {
        self.every_event.clone()
    }
}
