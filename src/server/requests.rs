//! What a parsed request becomes: the front end's own answers (health, status,
//! self-test, CORS preflight, refusals), a job resource, or a request sent into the
//! pipeline through the entry its task names, with its place kept in the connection's
//! answer order.

use super::answers::mark_dirty;
use super::connection::{Decoder, Label, Slot};
use super::cors;
use super::front::EntryIndex;
use super::output::AnswerBytes;
use super::websocket::UpgradeCheck;
use super::{InFlight, Server};
use crate::base::sockets;
use crate::http::websocket::MessageKind;
use crate::http::{Event, Method, ParsedRequest, Response, CONTINUE_RESPONSE};
use crate::netstring;
use crate::pipeline::envelope::{lead_frame_of, Envelope, Protocol};
use crate::pipeline::loopback::{render_failure, Failure, FailureKind};
use std::time::Instant;

impl Server {
    pub(super) fn on_input(&mut self, id: u64) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        conn.last_active = now;
        if conn.closing {
            return;
        }
        match &mut conn.decoder {
            Decoder::Http(parser) => parser.feed(&self.frame_data),
            Decoder::Netstring(decoder) => decoder.feed(&self.frame_data),
            Decoder::WebSocket(ws) => ws.decoder.feed(&self.frame_data),
        }
        self.read_requests(id);
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.track_head(now);
        }
    }

    /// Takes every complete request out of a connection's decoder.
    pub(super) fn read_requests(&mut self, id: u64) {
        // The head of the request just sent on, for the parser to copy the next into.
        let mut spare_head = None;
        loop {
            let Some(conn) = self.connections.get_mut(&id) else {
                return;
            };
            if conn.closing {
                return;
            }
            match &mut conn.decoder {
                Decoder::Http(parser) => match parser.next_event() {
                    Ok(None) => {
                        if let Some(head) = spare_head {
                            parser.recycle_head(head);
                        }
                        return;
                    }
                    Ok(Some(Event::Continue)) => {
                        self.answer_now(id, CONTINUE_RESPONSE.to_vec(), false, None)
                    }
                    Ok(Some(Event::Request(request))) => {
                        if let Some(head) = spare_head.take() {
                            parser.recycle_head(head);
                        }
                        spare_head = self.on_http_request(id, request);
                    }
                    Err(e) => {
                        log::info!("connection {id}: rejected a request: {e}");
                        let head = parser.rejected_head();
                        self.cors_fields =
                            cors::refusal_fields(self.config.cors.as_ref(), parser.origin());
                        let bytes =
                            Response::error(e.status(), &e.to_string()).to_bytes(1, false, head);
                        self.answer_now(id, bytes, true, None);
                    }
                },
                Decoder::Netstring(decoder) => match decoder.next_message() {
                    Ok(None) => return,
                    Ok(Some(payload)) => {
                        let entry = EntryIndex::Main;
                        let request = (&payload[..], None);
                        self.forward(id, Protocol::Netstring, request, entry, false, None);
                    }
                    Err(e) => {
                        log::info!("connection {id}: rejected a netstring: {e}");
                        let body = serde_json::json!({"error": e.to_string(), "status": 400});
                        let bytes = netstring::encode(body.to_string().as_bytes());
                        self.answer_now(id, bytes, true, None);
                    }
                },
                Decoder::WebSocket(_) => return self.read_messages(id),
            }
        }
    }

    /// Answers or forwards a request; gives back its head's vector when nothing kept
    /// it (see [`RequestParser::recycle_head`](crate::http::RequestParser::recycle_head)).
    pub(super) fn on_http_request(&mut self, id: u64, request: ParsedRequest) -> Option<Vec<u8>> {
        if (self.config.cors.is_some() || request.method == Method::Options)
            && self.answer_cors(id, &request)
        {
            return None;
        }
        let head = self.route_http_request(id, request);
        self.cors_fields = None;
        head
    }

    /// [`on_http_request`](Self::on_http_request) past CORS.
    pub(super) fn route_http_request(
        &mut self,
        id: u64,
        request: ParsedRequest,
    ) -> Option<Vec<u8>> {
        let label = self.access.enabled().then(|| request.request_line().into());
        let close_after = !request.keep_alive;
        // The path is compared as bytes (equal bytes are equal text): its UTF-8 check
        // only where it is needed as text.
        let path = request.path_bytes();
        let is_path = |own: &Option<String>| own.as_deref().map(str::as_bytes) == Some(path);
        let own_path = [
            &self.config.health_path,
            &self.config.status_path,
            &self.config.selftest_path,
            &self.config.ready_path,
            &self.config.metrics_path,
        ]
        .iter()
        .any(|own| is_path(own));
        let local = if own_path && !matches!(request.method, Method::Get | Method::Head) {
            let path = request.path_str();
            let response = Response::error(405, &format!("{path} answers GET and HEAD only"));
            Some((response.header("Allow", "GET, HEAD"), close_after))
        } else if own_path && self.is_selftest(request.path_str(), request.target_str()) {
            self.start_selftest(id, &request, close_after, label, false);
            return None;
        } else if own_path && is_path(&self.config.ready_path) {
            self.start_selftest(id, &request, close_after, label, true);
            return None;
        } else if is_path(&self.config.health_path) {
            Some((self.health(), close_after))
        } else if is_path(&self.config.metrics_path) {
            Some((self.metrics_response(), close_after))
        } else if is_path(&self.config.status_path) {
            match Self::wants_status_page(&request) {
                Some(true) => Some((Self::status_page(), close_after)),
                Some(false) if !request.is_head => {
                    self.open_status_stream(id, &request, label);
                    return None;
                }
                _ => Some((self.status_document(), close_after)),
            }
        } else if self.draining_since.is_some() && self.config.drain_rejects {
            Some((Response::error(503, "the server is shutting down"), true))
        } else {
            None
        };
        if let Some((response, close_after)) = local {
            self.answer_response(id, &request, &response, close_after, label);
            return None;
        }
        if self.is_jsonrpc_path(path) && !self.is_job_request(&request) {
            self.on_jsonrpc(id, request, close_after, label);
            return None;
        }
        if self.is_job_request(&request) {
            self.on_job_request(id, request, close_after, label);
            return None;
        }
        let entry = match self.front.entry_for(&request.head) {
            Ok(entry) => entry,
            Err(refusal) => {
                log::info!("connection {id}: refused a request by the task table: {refusal}");
                let response = Response::error(400, &refusal.to_string());
                self.answer_response(id, &request, &response, close_after, label);
                return None;
            }
        };
        let upgrade = if request.has_upgrade {
            match super::websocket::check_upgrade(&request, self.config.cors.as_ref(), entry) {
                UpgradeCheck::NotWebSocket => None,
                UpgradeCheck::Refuse(response) => {
                    log::info!("connection {id}: refused a WebSocket upgrade");
                    self.websocket.stats.refused_front_end += 1;
                    self.answer_response(id, &request, &response, true, label);
                    return None;
                }
                UpgradeCheck::Upgrade(pending) => Some(pending),
            }
        } else {
            None
        };
        let protocol = http_protocol(&request);
        // No body, no body frame: a frame fewer at every socket the request crosses.
        let body = (!request.body.is_empty()).then(|| zmq::Message::from(request.body));
        self.forward(
            id,
            protocol,
            (&request.head[..], body),
            entry,
            close_after,
            label,
        );
        if let Some(pending) = upgrade {
            self.upgrade_sent(id, pending);
        }
        Some(request.head)
    }

    /// Sends a request into the pipeline through `entry` (the first stage's, or a
    /// routed stage's) and keeps its place in the answer order. The request is its
    /// first frame, which travels in the lead frame behind the envelope, and its
    /// second frame if any (an HTTP request's body, when it has one).
    pub(super) fn forward(
        &mut self,
        id: u64,
        protocol: Protocol,
        request: (&[u8], Option<zmq::Message>),
        entry: EntryIndex,
        close_after: bool,
        label: Option<Label>,
    ) {
        let (first, rest) = request;
        self.forward_as(
            id,
            protocol,
            (&[first], rest),
            entry,
            (close_after, label),
            None,
        );
    }

    /// [`forward`](Self::forward), for a WebSocket message when `websocket` says which
    /// kind (its envelope is flagged so, and its slot's answer leaves as a frame).
    pub(super) fn forward_as(
        &mut self,
        id: u64,
        protocol: Protocol,
        (first, rest): (&[&[u8]], Option<zmq::Message>),
        entry: EntryIndex,
        (close_after, label): (bool, Option<Label>),
        websocket: Option<MessageKind>,
    ) {
        let Some(request_id) = self.hold_slot(id, protocol, close_after, label) else {
            return;
        };
        // The slot just held learns its entry, for the access log; its arrival (taken
        // before the envelope's arrival time, so the front end's deadline is not later
        // than the one workers read from the envelope) starts the deadline.
        let mut now = None;
        let client = self.connections.get_mut(&id).and_then(|conn| {
            if let Some(slot) = conn.slots.back_mut() {
                slot.upstream = Some(entry);
                now = Some(slot.arrived);
                if websocket.is_some() {
                    slot.websocket = true;
                    slot.interim = false;
                }
            }
            conn.client
        });
        let now = now.unwrap_or_else(Instant::now);
        let mut envelope = Envelope::new(request_id, id, self.nonce, protocol)
            .at_front_end(self.front.front_end)
            .with_timeout(self.config.request_timeout)
            .with_client(client);
        envelope.websocket = websocket;
        let message = std::iter::once(lead_frame_of(&envelope.encode(), first)).chain(rest);
        let socket = self.front.entry_socket(entry);
        if let Err(e) = sockets::send_frames(socket, message, zmq::DONTWAIT) {
            if self.refusals.allow() {
                log::warn!("request {request_id}: the pipeline is not taking requests: {e}");
            }
            let failure = Failure::new(FailureKind::QueueFull, "the server is overloaded");
            let bytes = render_failure(protocol, &failure, false);
            self.fill(id, request_id, AnswerBytes::Owned(bytes));
            return;
        }
        self.stats.forwarded += 1;
        self.metrics.forwarded(entry);
        self.requests.insert(
            request_id,
            InFlight {
                connection: id,
                deadline: now + self.config.request_timeout,
                protocol,
            },
        );
    }

    /// Keeps a place in the connection's answer order for a request answered later (by
    /// the pipeline or the job service); returns its request id. A connection with
    /// `max_pipelined` unanswered requests is answered 503 and closed instead.
    pub(super) fn hold_slot(
        &mut self,
        id: u64,
        protocol: Protocol,
        close_after: bool,
        label: Option<Label>,
    ) -> Option<u64> {
        let conn = self.connections.get_mut(&id)?;
        if conn.slots.len() >= self.config.max_pipelined {
            let detail = "too many unanswered requests on this connection";
            let failure = Failure::new(FailureKind::QueueFull, detail);
            let bytes = render_failure(protocol, &failure, false);
            self.answer_now(id, bytes, true, label);
            return None;
        }
        let request_id = self.next_request;
        self.next_request += 1;
        conn.slots.push_back(Slot {
            request_id,
            answer: None,
            stream: None,
            close_after,
            arrived: Instant::now(),
            label,
            cors: self.cors_fields.take(),
            interim: matches!(
                protocol,
                Protocol::Http {
                    minor_version: 1..,
                    ..
                }
            ),
            upstream: None,
            websocket: false,
        });
        if close_after {
            conn.closing = true;
        }
        Some(request_id)
    }

    /// Queues `response`, made by the front end itself, as the answer to `request`.
    pub(super) fn answer_response(
        &mut self,
        id: u64,
        request: &ParsedRequest,
        response: &Response,
        close_after: bool,
        label: Option<Label>,
    ) {
        let bytes = response.to_bytes(request.minor_version, !close_after, request.is_head);
        self.answer_now(id, bytes, close_after, label);
    }

    /// Queues an answer the front end made itself, in request order.
    pub(super) fn answer_now(
        &mut self,
        id: u64,
        bytes: Vec<u8>,
        close_after: bool,
        label: Option<Label>,
    ) {
        let request_id = self.next_request;
        self.next_request += 1;
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        conn.slots.push_back(Slot {
            request_id,
            answer: Some(AnswerBytes::Owned(bytes)),
            stream: None,
            close_after,
            arrived: Instant::now(),
            label,
            cors: self.cors_fields.take(),
            interim: false,
            upstream: None,
            websocket: false,
        });
        if close_after {
            conn.closing = true;
        }
        mark_dirty(&mut self.dirty, conn, id);
    }

    /// The health check: 200 while the first proxy reports a worker and no drain is under
    /// way, 503 otherwise.
    pub(super) fn health(&self) -> Response {
        let (status, body) = match self.upstream.fresh(Instant::now()) {
            _ if self.draining_since.is_some() => (503, serde_json::json!({"status": "draining"})),
            Some(s) if s.workers > 0 => (
                200,
                serde_json::json!({"status": "ok", "workers": s.workers}),
            ),
            Some(_) => (503, serde_json::json!({"status": "no workers"})),
            None => (
                503,
                serde_json::json!({"status": "the first proxy does not answer"}),
            ),
        };
        Response::json(status, &body)
    }

    /// The status document: the topology as the front end sees it.
    pub(super) fn status_document(&self) -> Response {
        let now = Instant::now();
        let proxy = self.upstream.fresh(now).map(|s| s.to_json());
        let mut body = serde_json::json!({
            "listening": self.listeners.iter().map(|l| &l.endpoint).collect::<Vec<_>>(),
            "draining": self.draining_since.is_some(),
            "connections": self.connections.len(),
            "in_flight": self.requests.len(),
            "forwarded": self.stats.forwarded,
            "answered": self.stats.answered,
            "errors": self.stats.errors,
            "timed_out": self.stats.timed_out,
            "half_closed_gone": self.stats.half_closed_gone,
            "loopback": self.front.loopback_endpoint,
            "interrupt": self.front.interrupt_endpoint,
            "first_proxy": {
                "endpoint": self.front.entry_endpoint,
                "reachable": proxy.is_some(),
                "last_seen_ms": self.upstream.last_seen.map(|t| now.duration_since(t).as_millis() as u64),
                "status": proxy,
            },
            "routed": self.front.routed.iter().map(|r| serde_json::json!({
                "stage": r.stage,
                "endpoint": r.endpoint,
            })).collect::<Vec<_>>(),
        });
        if let Some(jobs) = self.job_stats_json() {
            body["jobs"] = jobs;
        }
        body["channels"] = self.channels_json();
        Response::json(200, &body)
    }
}

/// The HTTP facts of a request, as its envelope carries them.
pub(super) fn http_protocol(request: &ParsedRequest) -> Protocol {
    Protocol::Http {
        minor_version: request.minor_version,
        keep_alive: request.keep_alive,
        head: request.is_head,
    }
}
