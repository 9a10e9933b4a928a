//! Half-closed connections whose client may have gone.
//!
//! A client that sends its requests and then half-closes (FIN, RFC 9293 §3.6; `nc -N`)
//! is answered; one that closes its socket altogether sends the same FIN, and only a
//! write to it tells the two apart: a closed socket answers it with a reset, which our
//! libzmq reports as the peer's second notice (see `Server::on_peer_notice`), and its
//! unanswered requests are then interrupted. So while the next answer of a half-closed
//! HTTP/1.1 connection is not ready, it is sent an interim `102 Processing` every
//! `half_closed_probe` (RFC 9110 §15.2: a client accepts a 1xx it did not expect), only
//! where it cannot split another response: nothing else is being written and the front
//! answer has not begun. HTTP/1.0 and netstrings allow no interim response: a
//! half-closed connection's requests may run `half_closed_timeout` after the FIN, and the
//! client is then taken as gone. A held request (see `holds`) is different: its client
//! never has more to say, so its FIN is taken as its leaving, and the hold is freed at
//! once (`Server::on_peer_notice`; here too, for a request held after its client's
//! FIN). Connections that never half-close cost nothing here.

use super::answers::mark_dirty;
use super::output::AnswerBytes;
use super::Server;
use std::time::Instant;

/// The interim response that probes a half-closed HTTP/1.1 client (RFC 9110 §15.2.2,
/// registered by RFC 2518).
pub(super) const PROCESSING_RESPONSE: &[u8] = b"HTTP/1.1 102 Processing\r\n\r\n";

/// What a half-closed connection needs now.
enum Step {
    /// Nothing (its answers are under way, or the next probe is not due).
    Wait,
    /// Write a `102 Processing`.
    Probe,
    /// Its client is taken as gone: interrupt its requests and close.
    Gone,
    /// A held request's client left: close, freeing the hold.
    Left,
}

impl Server {
    /// Probes or gives up on each half-closed connection in `ids` (see the module's
    /// doc), at `now`.
    pub(super) fn check_half_closed(&mut self, ids: &[u64], now: Instant) {
        for &id in ids {
            let Some(conn) = self.connections.get_mut(&id) else {
                continue;
            };
            let Some(half) = conn.half_closed.as_deref_mut() else {
                continue;
            };
            let step = match conn.slots.front() {
                // Every answer went out; the connection closes once written.
                None => {
                    conn.half_closed = None;
                    continue;
                }
                // A held request's client never has more to say: its FIN means it left
                // (browsers and curl close so), and its hold is freed now.
                Some(front) if self.channels.holds.contains_key(&front.request_id) => Step::Left,
                Some(front) if front.interim => {
                    let ready = front.answer.is_some() || front.stream.is_some();
                    let due = half
                        .probed
                        .is_none_or(|at| now.duration_since(at) >= self.config.half_closed_probe);
                    if !ready && due && conn.output.is_empty() {
                        half.probed = Some(now);
                        Step::Probe
                    } else {
                        Step::Wait
                    }
                }
                Some(_) if now.duration_since(half.since) >= self.config.half_closed_timeout => {
                    Step::Gone
                }
                Some(_) => Step::Wait,
            };
            match step {
                Step::Wait => {}
                Step::Probe => {
                    conn.output
                        .push(AnswerBytes::Owned(PROCESSING_RESPONSE.to_vec()));
                    mark_dirty(&mut self.dirty, conn, id);
                }
                Step::Left => {
                    log::debug!("connection {id}: a held client half-closed; it has left");
                    self.close(id, true);
                }
                Step::Gone => {
                    log::info!(
                        "connection {id}: half-closed for {:?} with requests unanswered; \
                         taking the client as gone",
                        self.config.half_closed_timeout
                    );
                    self.stats.half_closed_gone += 1;
                    self.close(id, true);
                }
            }
        }
    }
}
