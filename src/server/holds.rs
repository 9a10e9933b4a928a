//! Held requests (see [`crate::pipeline::channel`]): a stage's hold comes back on the
//! loopback, the front end keeps the connection on the hold's channels, and writes to
//! it what is published there.
//!
//! - A long-poll (`response`) is answered by the first message with an `http-response`
//!   format, or by the stage's own answer at the hold's timeout.
//! - A stream's head and body go out at once; each `http-stream` message appends its
//!   content (a chunk for HTTP/1.1), its keep-alive content goes out when it is idle, and
//!   `"action": "close"` ends it.
//!
//! A hold sits in its request's slot, so pipelined requests behind it wait, its bytes
//! count against the output bound (a stream subscriber that does not read is dropped at
//! `max_output_bytes`, like any client), and it gets the CORS fields and the access-log
//! line of any answer. A client that leaves frees its hold at once ([`Server::close`]).
//!
//! A drain answers every hold at once (long-polls with their own answer, streams end)
//! and holds nothing new; a HEAD request is answered as if its hold ended at once.
//!
//! Recovery: a hold whose `prev-id` is no longer in its channel's history (see
//! `channels`) is told so: a long-poll is answered `409 Conflict` with a JSON body
//! (`{"error": ..., "channel": ..., "prev-id": ...}`); a stream gets, after its head, the
//! event `event: stream-error` with `data: {"condition":"lost-position","channel":
//! ...,"prev-id":...}`, then the live messages.

use super::answers::mark_dirty;
use super::channels::{CatchUp, Framed, Held, Run, Target};
use super::connection::Decoder;
use super::output::AnswerBytes;
use super::Server;
use crate::http::{Response, SseEvent};
use crate::jobs::service::ReplyTo;
use crate::pipeline::bus::BusLink;
use crate::pipeline::channel::{reserved_channel, Hold, HoldMode, Item};
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::loopback::render;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Up to how many holders of a channel this thread writes a run of messages to itself,
/// when their connections are idle (libzmq's direct writes, vendor/zeromq-src's
/// PATCHES.md); a run to more holders is shared with libzmq's I/O thread when it comes
/// alone, and goes all through the I/O thread in a burst (see `fan_out`). A
/// direct write spares a delivery the wake-up of the I/O thread, but costs this thread
/// the `sendto`; and the I/O thread, when it falls behind a stream of publishes, writes
/// several messages to a connection at once while this thread goes on. Written all
/// here, a stream of publishes to 1,000 or 10,000 holds was delivered at a third of the
/// rate (`scripts/bench-channels`, 0.33x and 0.37x of the build before; a lone publish
/// reached them all 1.4-1.9 times sooner), and with the first 32 of every run written
/// here and the rest by the I/O thread at about 0.8x.
const DIRECT_DELIVERIES: usize = 32;

impl Server {
    /// A stage asked to hold this request.
    pub(super) fn on_hold(&mut self, envelope: &Envelope, hold: Hold, answer: zmq::Message) {
        let mut answer = Some(answer);
        if self.on_websocket_hold(envelope, &hold, &mut answer) {
            return;
        }
        let request_id = envelope.request_id;
        let Some(in_flight) = self.requests.remove(&request_id) else {
            return;
        };
        let now = Instant::now();
        let id = in_flight.connection;
        let mut held = Held {
            connection: id,
            protocol: in_flight.protocol,
            mode: hold.mode,
            channels: hold
                .channels
                .iter()
                .map(|c| c.name.as_str().into())
                .collect(),
            expires: (hold.mode == HoldMode::Response)
                .then(|| now + Duration::from_secs(u64::from(hold.timeout))),
            answer: None,
            keep_alive: hold
                .keep_alive
                .filter(|k| hold.mode == HoldMode::Stream && !k.content.is_empty())
                .map(|k| Box::new((k.content, Duration::from_secs(u64::from(k.interval))))),
            last_sent: now,
        };
        // What each channel's history owes the client, before the hold joins the live.
        let mut missed: Vec<Arc<Item>> = Vec::new();
        let mut lost = None;
        for channel in &hold.channels {
            let catch_up = match self.channels.map.get(channel.name.as_str()) {
                Some(known) => known.catch_up(channel.prev_id.as_deref()),
                None => CatchUp::Live,
            };
            match catch_up {
                CatchUp::Live => {}
                CatchUp::Missed(items) => missed.extend(items),
                CatchUp::Lost => lost = Some(channel),
            }
        }
        if let Some(channel) = lost {
            self.channels.stats.lost += 1;
            log::debug!("request {request_id}: its position on a channel is lost");
            let detail = serde_json::json!({
                "condition": "lost-position",
                "channel": channel.name,
                "prev-id": channel.prev_id,
            });
            if hold.mode == HoldMode::Response {
                let body = serde_json::json!({
                    "error": "the messages after prev-id are no longer kept; fetch the current state again",
                    "channel": channel.name,
                    "prev-id": channel.prev_id,
                });
                let bytes = render(held.protocol, &Response::json(409, &body));
                self.fill(id, request_id, AnswerBytes::Owned(bytes));
                return;
            }
            let event = format!("event: stream-error\ndata: {detail}\n\n");
            self.start_stream(
                request_id,
                &held,
                answer.take().unwrap_or_else(zmq::Message::new),
            );
            let piece = held.target().piece(event.as_bytes());
            self.append(request_id, id, piece);
        } else if hold.mode == HoldMode::Response {
            if let Some(response) = missed.iter().find_map(|item| item.response()) {
                self.channels.stats.delivered += 1;
                let bytes = render(held.protocol, &response);
                self.fill(id, request_id, AnswerBytes::Owned(bytes));
                return;
            }
        } else {
            self.start_stream(
                request_id,
                &held,
                answer.take().unwrap_or_else(zmq::Message::new),
            );
            for item in &missed {
                if !self.stream_item(request_id, held.target(), item) {
                    return;
                }
            }
        }
        if self.draining_since.is_some() || held.target().head_only() {
            // A drain holds nothing new: the stage's own answer now, or the stream's
            // end; a HEAD request's stream has no body to wait for.
            match answer {
                Some(answer) => self.fill(id, request_id, AnswerBytes::Message(answer.into())),
                None => self.end_stream_hold(request_id, held.target()),
            }
            return;
        }
        if held.mode == HoldMode::Response {
            held.answer = answer.map(Box::new);
        }
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        if let Decoder::Http(parser) = &mut conn.decoder {
            parser.release_buffer();
        }
        self.channels.hold(request_id, held);
    }

    /// An event stream of a job not yet ended (`GET /jobs/{id}/events`): its head and
    /// the events the client missed now, then a stream hold on the job's channel, where
    /// the job service publishes the next events; its last event ends the stream. A
    /// comment is sent after each `keep_alive` of silence.
    pub(super) fn hold_job_stream(
        &mut self,
        to: ReplyTo,
        channel: String,
        head: Vec<u8>,
        missed: Vec<Vec<u8>>,
        keep_alive: Duration,
    ) {
        let request_id = to.request_id;
        let now = Instant::now();
        let held = Held {
            connection: to.connection,
            protocol: Protocol::Http {
                minor_version: to.minor_version,
                keep_alive: to.keep_alive,
                head: to.head,
            },
            mode: HoldMode::Stream,
            channels: Box::new([channel.into()]),
            expires: None,
            answer: None,
            keep_alive: Some(Box::new((SseEvent::comment("keep-alive"), keep_alive))),
            last_sent: now,
        };
        self.start_stream(request_id, &held, zmq::Message::from(head));
        for event in &missed {
            if !self.append(request_id, to.connection, held.target().piece(event)) {
                return;
            }
        }
        if self.draining_since.is_some() || held.target().head_only() {
            self.end_stream_hold(request_id, held.target());
            return;
        }
        let Some(conn) = self.connections.get_mut(&to.connection) else {
            return;
        };
        if let Decoder::Http(parser) = &mut conn.decoder {
            parser.release_buffer();
        }
        self.channels.hold_job_stream(request_id, held);
    }

    /// The head and first bytes of a stream hold.
    fn start_stream(&mut self, request_id: u64, held: &Held, head: zmq::Message) {
        let close_delimited = held.target().minor_version() == 0;
        let Some(conn) = self.connections.get_mut(&held.connection) else {
            return;
        };
        conn.stream_part(
            request_id,
            AnswerBytes::Message(head.into()),
            close_delimited,
        );
        mark_dirty(&mut self.dirty, conn, held.connection);
    }

    /// Appends bytes to a stream hold; false if its client was dropped for not reading.
    fn append(&mut self, request_id: u64, id: u64, piece: AnswerBytes) -> bool {
        if piece.as_slice().is_empty() {
            return self.connections.contains_key(&id);
        }
        let Some(conn) = self.connections.get_mut(&id) else {
            return false;
        };
        let Some(waiting) = conn.hold_part(request_id, piece) else {
            return false;
        };
        // At the front of the answer order, the bytes go to the output at once, where
        // the output bound applies at the write; behind an earlier answer, they wait
        // here, bound alike.
        let behind = conn
            .slots
            .front()
            .is_some_and(|s| s.request_id != request_id);
        if behind && waiting > self.config.max_output_bytes {
            log::warn!("connection {id}: {waiting} bytes of a held stream wait; closing");
            self.close(id, true);
            return false;
        }
        mark_dirty(&mut self.dirty, conn, id);
        true
    }

    /// Appends bytes to a stream hold as [`append`](Self::append) does, but hands them
    /// straight to libzmq when nothing is ahead of them on the connection
    /// ([`Connection::writes_through`](super::connection::Connection::writes_through)):
    /// what a delivery to an idle subscriber, nearly every one, costs is then one call
    /// into libzmq (`send_to_peer`: the routing id and the bytes together), without the
    /// output's queue, the list of connections to flush and the flush. When libzmq refuses them (its high-water mark for the peer is
    /// reached), they are queued as by `append`, where the output bound and the retries
    /// apply; so are bytes longer than one of the output's messages, which it cuts to
    /// size. False if the client was dropped for not reading.
    fn append_bytes(&mut self, request_id: u64, id: u64, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return self.connections.contains_key(&id);
        }
        let Some(conn) = self.connections.get_mut(&id) else {
            return false;
        };
        // A piece longer than a message of the output is cut by it (see `output::CHUNK`):
        // libzmq bounds what it holds per client in messages, not bytes.
        if bytes.len() <= super::output::CHUNK && conn.writes_through(request_id) {
            let socket = &self.listeners[conn.listener].socket;
            // The routing id and the bytes in one call (vendor/zmq/PATCHES.md).
            match socket.send_to_peer(&conn.routing_id, bytes) {
                Ok(()) => {
                    conn.wrote_through(bytes.len());
                    return true;
                }
                // Full: queued below, and tried again as any refused output.
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => {
                    // EHOSTUNREACH: the peer is gone; its disconnect notice cleans up.
                    log::debug!("connection {id}: output dropped: {e}");
                    return true;
                }
            }
        }
        let piece = AnswerBytes::Message(zmq::Message::from(bytes).into());
        self.append(request_id, id, piece)
    }

    /// Writes an item's `http-stream` format to a stream hold; false once the stream
    /// ended (closed by the item, or its client dropped).
    fn stream_item(&mut self, request_id: u64, target: Target, item: &Item) -> bool {
        let Some(format) = &item.stream else {
            return true;
        };
        self.stream_framed(
            request_id,
            target,
            &Framed::new(&format.content),
            format.close,
        )
    }

    /// Writes a message's stream content, framed already, to a stream hold, and ends
    /// the stream if `close`; false once the stream ended (so, or its client dropped).
    fn stream_framed(
        &mut self,
        request_id: u64,
        target: Target,
        framed: &Framed,
        close: bool,
    ) -> bool {
        self.channels.stats.delivered += 1;
        if !framed.is_empty()
            && !self.append_bytes(request_id, target.connection, framed.bytes(target))
        {
            return false;
        }
        if close {
            self.end_stream_hold(request_id, target);
            return false;
        }
        true
    }

    /// Ends a stream hold with its last chunk.
    fn end_stream_hold(&mut self, request_id: u64, target: Target) {
        let last = if target.head_only() {
            Vec::new()
        } else {
            Response::last_chunk(target.minor_version()).to_vec()
        };
        if let Some(conn) = self.connections.get_mut(&target.connection) {
            if conn.end_stream(request_id, Some(AnswerBytes::Owned(last))) {
                mark_dirty(&mut self.dirty, conn, target.connection);
            }
        }
    }

    /// A message published here (by the control listener, a stage or the job
    /// service): onto the bus, if there is one, and to this front end's own holds at
    /// once (its copy coming back from the bus is dropped, see
    /// [`crate::pipeline::bus`]).
    pub(super) fn publish_item(&mut self, item: Item) {
        self.publish_to_bus(&item);
        self.deliver(item);
    }

    /// Messages published here together (the items of one publish, or those found
    /// waiting), in order: each onto the bus, and those of one channel to this front
    /// end's holds as a [`Run`].
    pub(super) fn publish_items(&mut self, items: Vec<Item>) {
        let mut run = Run::default();
        for item in items {
            self.publish_to_bus(&item);
            if !run.takes(&item) {
                self.deliver_run(run.take());
            }
            run.push(item);
        }
        self.deliver_run(run.take());
    }

    /// Counts a message published here and puts it on the bus, if there is one.
    fn publish_to_bus(&mut self, item: &Item) {
        self.channels.stats.published += 1;
        if let Some(bus) = &self.channels.bus {
            if let Err(e) = bus.publish(item, self.nonce) {
                log::warn!("a message was not put on the bus: {e}");
            }
        }
    }

    /// A job's event from the job service, on the job's channel: delivered to this
    /// front end's holds only. Other front ends that share the job store hear of the
    /// change from the store itself (PostgreSQL's notices) and publish the event on
    /// their own, so a bus copy would reach their holds twice.
    pub(super) fn publish_job_event(&mut self, item: Item) {
        self.channels.stats.published += 1;
        self.deliver(item);
    }

    /// A message a stage published (`job.publish`): refused on a job's channel, where
    /// only the job service and the control listener publish.
    pub(super) fn publish_from_stage(&mut self, request_id: u64, item: Item) {
        if reserved_channel(&item.channel) {
            log::warn!("request {request_id}: a stage published on a job's channel; dropped");
            return;
        }
        self.publish_item(item);
    }

    /// Reads the control listener's publishes and the bus's messages.
    pub(super) fn drain_channels(&mut self) {
        while let Ok(frames) =
            crate::base::sockets::recv_frames(&self.channels.inbox, zmq::DONTWAIT)
        {
            if let [verb, channel] = frames.as_slice() {
                // The subscriptions' registry asks for a channel on the bus.
                if let (Some(bus), Some(channel)) = (&self.channels.bus, channel.as_str()) {
                    match &**verb {
                        b"subscribe" => bus.subscribe(channel),
                        b"unsubscribe" => bus.unsubscribe(channel),
                        _ => log::warn!("dropped a malformed request from the subscriptions"),
                    }
                }
                continue;
            }
            if !matches!(frames.as_slice(), [wake] if wake.is_empty()) {
                log::warn!("dropped a malformed message on the channels' inbox");
            }
        }
        // The control listener's items, in the order they were published.
        let waiting: Vec<Item> = self.channels.publishes.try_iter().collect();
        self.publish_items(waiting);
        let mut run = Run::default();
        while let Some(bus) = &self.channels.bus {
            let Ok(frames) = crate::base::sockets::recv_frames(&bus.subscriber, zmq::DONTWAIT)
            else {
                break;
            };
            self.channels.stats.bus_received += 1;
            if BusLink::is_own(&frames, self.nonce) {
                continue;
            }
            match frames.get(1).map(|f| Item::parse(f)) {
                Some(Ok(item)) => {
                    if !run.takes(&item) {
                        self.deliver_run(run.take());
                    }
                    run.push(item);
                }
                _ => log::warn!("dropped a malformed message from the bus"),
            }
        }
        self.deliver_run(run.take());
    }

    /// Hands a message to every hold on its channel here.
    pub(super) fn deliver(&mut self, item: Item) {
        self.deliver_run(vec![item]);
    }

    /// Hands messages of one channel (a [`Run`]), in order, to every hold on it here:
    /// a long-poll is answered by the first with an `http-response` format, a socket
    /// gets each, a stream gets their contents in one write.
    fn deliver_run(&mut self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let now = Instant::now();
        let items: Vec<Arc<Item>> = items.into_iter().map(Arc::new).collect();
        if let Some(subscriptions) = &self.channels.subscriptions {
            if subscriptions.registry().active() {
                for item in &items {
                    subscriptions.registry().offer(item);
                }
            }
        }
        let Some(holders) = self.channels.record(&items, now) else {
            return;
        };
        // Framed once for all the streams held on the channel, rendered once per
        // message and protocol for its long-polls.
        let streamed = items.iter().filter(|item| item.stream.is_some()).count();
        let contents = items.iter().filter_map(|item| item.stream.as_ref());
        let framed = match items.as_slice() {
            [item] => item.stream.as_ref().map(|f| Framed::new(&f.content)),
            _ if streamed > 0 => Some(Framed::joined(contents.map(|f| &f.content[..]))),
            _ => None,
        };
        // Only the last message of a run may close (see `Run`).
        let close = items
            .last()
            .and_then(|item| item.stream.as_ref())
            .is_some_and(|f| f.close);
        let mut responses: Vec<Option<Option<Response>>> = vec![None; items.len()];
        let mut rendered: Vec<(usize, Protocol, Vec<u8>)> = Vec::new();
        let sockets = !self.websocket.holds.is_empty();
        // Written by this thread to idle connections (libzmq's direct writes), all of a
        // run to a few holders (see DIRECT_DELIVERIES); a wide run's first part through libzmq's I/O thread, and the rest, if it
        // does not follow another closely, written here (see `fan_out`).
        let wide = holders.len() > DIRECT_DELIVERIES;
        let cut = if wide {
            let cut = self
                .channels
                .fan_out
                .split(now, holders.len(), |id| self.hold_written(id));
            self.direct_writes(cut == 0);
            cut
        } else {
            usize::MAX
        };
        for (at, &request_id) in holders.iter().enumerate() {
            if at == cut && at > 0 {
                self.direct_writes(true);
            }
            if sockets {
                let mut socket = false;
                for item in &items {
                    socket = self.deliver_to_socket(request_id, item);
                    if !socket {
                        break;
                    }
                }
                if socket {
                    continue;
                }
            }
            let Some(held) = self.channels.holds.get_mut(&request_id) else {
                continue;
            };
            match held.mode {
                HoldMode::Response => {
                    for (at, item) in items.iter().enumerate() {
                        let Some(response) = responses[at].get_or_insert_with(|| item.response())
                        else {
                            continue;
                        };
                        let protocol = held.protocol;
                        let Some(held) = self.channels.leave(request_id, now) else {
                            break;
                        };
                        self.channels.stats.delivered += 1;
                        let bytes =
                            match rendered.iter().find(|(i, p, _)| *i == at && *p == protocol) {
                                Some((_, _, bytes)) => bytes.clone(),
                                None => {
                                    let bytes = render(protocol, response);
                                    rendered.push((at, protocol, bytes.clone()));
                                    bytes
                                }
                            };
                        self.fill(held.connection, request_id, AnswerBytes::Owned(bytes));
                        break;
                    }
                }
                HoldMode::Stream => {
                    let Some(framed) = &framed else {
                        continue;
                    };
                    held.last_sent = now;
                    let target = held.target();
                    self.channels.stats.delivered += streamed as u64 - 1;
                    if !self.stream_framed(request_id, target, framed, close) {
                        // Ended by the run (or its client dropped, which freed it).
                        self.channels.leave(request_id, now);
                    }
                }
            }
        }
        if wide {
            if cut == holders.len() {
                self.direct_writes(true);
            }
            self.channels
                .fan_out
                .ran(&holders, cut, now, Instant::now());
        }
    }

    /// Turns libzmq's direct writes to idle connections on or off on every listener
    /// (`ZMQ_STREAM_DIRECT_WRITE`, vendor/zeromq-src's PATCHES.md). Off, a message goes
    /// through the connection's pipe and libzmq's I/O thread, as before that patch.
    fn direct_writes(&self, on: bool) {
        for listener in &self.listeners {
            if let Err(e) = listener.socket.set_stream_direct_write(on) {
                log::debug!("direct writes {on}: {e}");
            }
        }
    }

    /// Frees the hold of a request whose client left; true if it was held.
    pub(super) fn release_hold(&mut self, request_id: u64) -> bool {
        self.channels.leave(request_id, Instant::now()).is_some()
    }

    /// Timeouts of long-polls, keep-alives of idle streams, old history.
    pub(super) fn sweep_holds(&mut self, now: Instant) {
        self.channels.sweep(now);
        // Only once some hold may be due: with thousands of streams held, a walk at
        // every sweep was most of an idle front end's work.
        if self.channels.holds_due.is_none_or(|due| due > now) {
            return;
        }
        let mut expired = Vec::new();
        let mut idle = Vec::new();
        let mut next: Option<Instant> = None;
        for (request_id, held) in &self.channels.holds {
            let due = match held.due() {
                Some(due) if due <= now => {
                    if held.expires.is_some() {
                        expired.push(*request_id);
                        continue;
                    }
                    idle.push(*request_id);
                    // Its keep-alive goes out now, so the next is one interval on.
                    held.keep_alive.as_ref().map(|k| now + k.1)
                }
                due => due,
            };
            if let Some(due) = due {
                next = Some(next.map_or(due, |at| at.min(due)));
            }
        }
        self.channels.holds_due = next;
        for request_id in expired {
            if let Some(mut held) = self.channels.leave(request_id, now) {
                let answer = held.answer.take().map_or_else(zmq::Message::new, |a| *a);
                self.fill(
                    held.connection,
                    request_id,
                    AnswerBytes::Message(answer.into()),
                );
            }
        }
        for request_id in idle {
            let Some(held) = self.channels.holds.get_mut(&request_id) else {
                continue;
            };
            held.last_sent = now;
            let (id, piece) = match &held.keep_alive {
                Some(keep_alive) => (held.connection, held.target().piece(&keep_alive.0)),
                None => continue,
            };
            if !self.append(request_id, id, piece) {
                self.channels.leave(request_id, now);
            }
        }
    }

    /// At a drain: long-polls get their own answer now, streams end.
    pub(super) fn end_all_holds(&mut self) {
        let now = Instant::now();
        let ids: Vec<u64> = self.channels.holds.keys().copied().collect();
        for request_id in ids {
            let Some(mut held) = self.channels.leave(request_id, now) else {
                continue;
            };
            match held.answer.take() {
                Some(answer) => self.fill(
                    held.connection,
                    request_id,
                    AnswerBytes::Message((*answer).into()),
                ),
                None => self.end_stream_hold(request_id, held.target()),
            }
        }
    }

    /// The channels' part of the status document.
    pub(super) fn channels_json(&self) -> serde_json::Value {
        let stats = &self.channels.stats;
        serde_json::json!({
            "holds": self.channels.holds.len(),
            "channels": self.channels.map.len(),
            "published": stats.published,
            "bus_received": stats.bus_received,
            "delivered": stats.delivered,
            "lost_positions": stats.lost,
            "bus": self.channels.config.bus.as_ref().map(|(xsub, xpub)| serde_json::json!({"xsub": xsub, "xpub": xpub})),
            "control": self.channels.control.as_ref().map(|c| c.endpoint.clone()),
            "url_subscriptions": self.channels.subscriptions.as_ref().map(|s| s.registry().len()),
        })
    }
}
