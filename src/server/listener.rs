//! The client-facing sockets: a [`Listener`] per bound endpoint, and what the front end
//! does as peers come and go on it: a new connection, a half-close or a disconnect
//! notice, data, and hang-ups libzmq refused and that are tried again.

use super::accept_watch::AcceptWatch;
use super::answers::mark_dirty;
use super::config::ListenProtocol;
use super::connection::{Connection, Decoder, HalfClosed, Stall};
use super::listen_fd;
use super::{Server, RETRY_FIRST, RETRY_LAST};
use crate::base::fast_hash::{FastMap, FastSet};
use crate::http::RequestParser;
use crate::netstring::NetstringDecoder;
use std::time::Instant;

/// How many messages (a routing id and its data) the loop takes from one listener per
/// turn. A flood of new connections or input then cannot hold back the loopback's
/// answers, the jobs and the channels: what is left is read on the next turn, which
/// does not sleep, since the loop asks a listener for its events every turn.
const LISTENER_BATCH: usize = 1024;

/// A listening socket.
pub(crate) struct Listener {
    pub(super) socket: zmq::Socket,
    pub(super) protocol: ListenProtocol,
    pub(super) endpoint: String,
    /// Routing id → connection id, for this socket's peers.
    pub(super) peers: FastMap<Vec<u8>, u64>,
    /// Routing ids of peers we closed whose close frame libzmq refused (their queue was
    /// full), tried again (see `Server::retry_hang_ups`) until libzmq takes it or the
    /// peer leaves. Their
    /// connections are already forgotten; libzmq never gives a routing id twice on one
    /// socket, so no new peer is mistaken for one of these.
    pub(super) hang_ups: FastSet<Vec<u8>>,
    /// Accepts that failed (out of descriptors), for a warning.
    pub(super) accept_watch: AcceptWatch,
    /// The listening descriptor, when the front end opened it: a drain shuts it down.
    pub(super) listen_fd: Option<listen_fd::ListenFd>,
    /// A peer of `hang_ups` whose first notice just came: its second, if libzmq sends
    /// one (see `Server::on_peer_notice`), follows at once and is not a new peer.
    pub(super) gone_echo: Option<Vec<u8>>,
}

impl Listener {
    /// Closes a peer's TCP connection, now or, if libzmq refuses, at a later try.
    pub(super) fn hang_up(&mut self, routing_id: &[u8]) {
        match send_close(&self.socket, routing_id) {
            // EHOSTUNREACH: it is gone already.
            Ok(()) | Err(zmq::Error::EHOSTUNREACH) => {}
            Err(zmq::Error::EAGAIN) => {
                self.hang_ups.insert(routing_id.to_vec());
            }
            Err(e) => log::debug!("a close not sent: {e}"),
        }
    }

    /// Tries again every hang-up libzmq refused.
    pub(super) fn retry_hang_ups(&mut self) {
        let socket = &self.socket;
        self.hang_ups
            .retain(|id| matches!(send_close(socket, id), Err(zmq::Error::EAGAIN)));
    }
}

impl Server {
    /// Reads up to [`LISTENER_BATCH`] messages from a listener: new peers, their
    /// notices and their input.
    pub(super) fn drain_listener(&mut self, listener: usize) {
        for _ in 0..LISTENER_BATCH {
            let socket = &self.listeners[listener].socket;
            if socket.recv(&mut self.frame_id, zmq::DONTWAIT).is_err() {
                return;
            }
            if socket.recv(&mut self.frame_data, zmq::DONTWAIT).is_err() {
                return;
            }
            let known = self.listeners[listener]
                .peers
                .get(&self.frame_id[..])
                .copied();
            match (known, self.frame_data.is_empty()) {
                (None, true) => self.new_peer(listener),
                (Some(id), true) => self.on_peer_notice(id),
                (Some(id), false) => self.on_input(id),
                // Data for a connection we already closed.
                (None, false) => {}
            }
        }
    }

    /// `[routing id, empty frame]` from an unknown peer: a new connection, or the
    /// disconnect notice of one we had hung up on while libzmq refused the close.
    pub(super) fn new_peer(&mut self, listener: usize) {
        let listener_ref = &mut self.listeners[listener];
        if listener_ref.hang_ups.remove(&self.frame_id[..]) {
            listener_ref.gone_echo = Some(self.frame_id.to_vec());
            return;
        }
        if listener_ref.gone_echo.as_deref() == Some(&self.frame_id[..]) {
            listener_ref.gone_echo = None;
            return;
        }
        if self.draining_since.is_some() {
            // Turned away before it is served.
            listener_ref.hang_up(&self.frame_id[..]);
        } else {
            self.accept(listener);
        }
    }

    /// `[routing id, empty frame]` from a connected peer. With our libzmq patch
    /// (vendor/zeromq-src/PATCHES.md) the first such notice means the client has
    /// finished sending (a half-close, RFC 9293 §3.6), not that it has gone: every
    /// complete request it sent is answered, then the connection closes. A second
    /// notice means the connection is gone (libzmq sends both at once for a reset).
    pub(super) fn on_peer_notice(&mut self, id: u64) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        if conn.input_ended {
            self.close(id, false);
            return;
        }
        conn.input_ended = true;
        conn.closing = true;
        let held = conn
            .slots
            .front()
            .is_some_and(|front| self.channels.holds.contains_key(&front.request_id));
        if held {
            // A held client never has more to say: its FIN means it left, and its hold
            // is freed now, not at the next sweep.
            log::debug!("connection {id}: a held client half-closed; it has left");
            self.close(id, true);
            return;
        }
        if !conn.slots.is_empty() {
            conn.half_closed = Some(Box::new(HalfClosed {
                since: Instant::now(),
                probed: None,
            }));
            self.walk.half_closed.push(id);
        }
        match conn.slots.back_mut() {
            Some(last) => last.close_after = true,
            None => conn.close_when_written = true,
        }
        mark_dirty(&mut self.dirty, conn, id);
    }

    pub(super) fn accept(&mut self, listener: usize) {
        let id = self.next_connection;
        self.next_connection += 1;
        let decoder = match self.listeners[listener].protocol {
            ListenProtocol::Http => Decoder::Http(RequestParser::new(self.config.limits)),
            ListenProtocol::Netstring => {
                Decoder::Netstring(NetstringDecoder::new(self.config.max_netstring_bytes))
            }
        };
        let routing_id = self.frame_id.to_vec();
        self.listeners[listener]
            .peers
            .insert(routing_id.clone(), id);
        let mut conn = Connection::new(routing_id, listener, decoder);
        let peer = peer_address(&mut self.frame_data);
        conn.client = client_address(&peer);
        if self.access.enabled() {
            conn.peer = peer;
        }
        self.connections.insert(id, Box::new(conn));
        self.stats.connections += 1;
    }

    /// Starts the hang-up retries when a hang-up has been refused.
    pub(super) fn schedule_hang_ups(&mut self) {
        if self.hang_up_retry.is_none() && self.listeners.iter().any(|l| !l.hang_ups.is_empty()) {
            self.hang_up_retry = Some(Stall {
                retry_at: Instant::now() + RETRY_FIRST,
                backoff: RETRY_FIRST,
            });
        }
    }

    /// Tries the refused hang-ups again when their time has come: soon again while some
    /// go through (a client reading the end of its last answer), backing off while none
    /// does (a client that does not read).
    pub(super) fn retry_hang_ups(&mut self, now: Instant) {
        let Some(stall) = self.hang_up_retry else {
            return;
        };
        if now < stall.retry_at {
            return;
        }
        let pending = |listeners: &[Listener]| listeners.iter().map(|l| l.hang_ups.len()).sum();
        let before: usize = pending(&self.listeners);
        for listener in &mut self.listeners {
            listener.retry_hang_ups();
        }
        let after: usize = pending(&self.listeners);
        let backoff = if after < before {
            RETRY_FIRST
        } else {
            (stall.backoff * 2).min(RETRY_LAST)
        };
        self.hang_up_retry = (after > 0).then(|| Stall {
            retry_at: now + backoff,
            backoff,
        });
    }
}

/// Sends `[routing id, empty frame]`, which closes the peer's connection once libzmq has
/// written what it holds for it. libzmq refuses the routing id (`EAGAIN`) while its queue
/// to the peer is full.
pub(super) fn send_close(socket: &zmq::Socket, routing_id: &[u8]) -> zmq::Result<()> {
    socket.send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)?;
    socket.send(zmq::Message::new(), zmq::DONTWAIT)
}

/// The client's address, from the metadata libzmq attaches to a peer's first message.
/// The client's address from libzmq's `Peer-Address` (no port), for the envelope.
pub(super) fn client_address(peer: &str) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = peer.parse().ok()?;
    Some(std::net::SocketAddr::new(ip.to_canonical(), 0))
}

pub(super) fn peer_address(frame: &mut zmq::Message) -> Box<str> {
    frame.gets("Peer-Address").unwrap_or("-").into()
}
