//! The front end's WebSocket figures, as plain integers of its own thread, and their
//! part of the Prometheus exposition (`metrics_path`):
//!
//! - `prime_websockets_open` (gauge): sockets open;
//! - `prime_websocket_upgrades_total`: handshakes completed;
//! - `prime_websocket_upgrades_refused_total{by}`: upgrades refused by the front end
//!   (`400`, `426`, `403`) or by a stage (any answer but an accept);
//! - `prime_websocket_messages_received_total{kind}`: text and binary messages from
//!   clients (fragments joined);
//! - `prime_websocket_messages_sent_total`: text and binary messages to clients
//!   (answers, pushes, a GRIP backend's events, keep-alives);
//! - `prime_websocket_closes_total{by, code}`: sockets ended, by who closed first
//!   (`client`, `server`, or `none`: the connection ended without a Close) and the
//!   code (`1000` to `1015` as they are, `3xxx` and `4xxx` for the registered and
//!   private ranges, `none` when the Close had none).

use super::super::Server;
use super::WsState;
use crate::base::metrics::Exposition;
use crate::http::websocket::MessageKind;

/// Who closed a socket first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(in super::super) enum ClosedBy {
    /// The client sent a Close.
    Client,
    /// The server sent a Close (a failure, a ping unanswered, a drain, a push's or a
    /// backend's close).
    Server,
    /// Neither: the connection ended without a Close.
    Nobody,
}

impl ClosedBy {
    /// Its name in the access log and the exposition.
    pub(in super::super) fn name(self) -> &'static str {
        match self {
            ClosedBy::Client => "client",
            ClosedBy::Server => "server",
            ClosedBy::Nobody => "none",
        }
    }
}

impl WsState {
    /// Who closed the socket first, and the status code of that Close, if it had one.
    pub(in super::super) fn closed_by(&self) -> (ClosedBy, Option<u16>) {
        match (&self.client_close, self.close_sent) {
            (Some(code), _) => {
                let code = (code.len() == 2).then(|| u16::from_be_bytes([code[0], code[1]]));
                (ClosedBy::Client, code)
            }
            (None, true) => (ClosedBy::Server, self.close_code),
            (None, false) => (ClosedBy::Nobody, None),
        }
    }
}

/// The front end's WebSocket counts.
#[derive(Default)]
pub(in super::super) struct WsStats {
    /// Sockets open now.
    pub(in super::super) open: u64,
    /// Upgrades the front end refused itself.
    pub(in super::super) refused_front_end: u64,
    /// Upgrades a stage refused.
    pub(in super::super) refused_stage: u64,
    /// Messages received: text, binary.
    received: [u64; 2],
    /// Messages sent.
    pub(in super::super) sent: u64,
    /// Sockets ended, by who closed first and the code's label (see [`code_label`]);
    /// a short list, as the labels are few.
    closes: Vec<((ClosedBy, u16), u64)>,
}

/// The code a close is counted under: `1000..=1015` as it is, `3000` for the
/// registered range, `4000` for the private range, `0` for anything else or none.
fn code_key(code: Option<u16>) -> u16 {
    match code {
        Some(code @ 1000..=1015) => code,
        Some(3000..=3999) => 3000,
        Some(4000..=4999) => 4000,
        _ => 0,
    }
}

/// A close code's label in the exposition.
fn code_label(key: u16) -> String {
    match key {
        0 => "none".to_string(),
        3000 => "3xxx".to_string(),
        4000 => "4xxx".to_string(),
        code => code.to_string(),
    }
}

impl WsStats {
    /// Counts a message received.
    pub(in super::super) fn received(&mut self, kind: MessageKind) {
        self.received[usize::from(kind == MessageKind::Binary)] += 1;
    }

    /// Counts a socket that ended, as its state tells.
    pub(in super::super) fn closed(&mut self, ws: &WsState) {
        self.open = self.open.saturating_sub(1);
        let (by, code) = ws.closed_by();
        let key = (by, code_key(code));
        match self.closes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += 1,
            None => self.closes.push((key, 1)),
        }
    }
}

impl Server {
    /// The WebSocket part of the exposition.
    pub(in super::super) fn expose_websockets(&self, out: &mut Exposition) {
        let stats = &self.websocket.stats;
        out.gauge(
            "prime_websockets_open",
            "WebSockets open on this front end.",
            &[],
            stats.open as i64,
        );
        out.counter(
            "prime_websocket_upgrades",
            "WebSocket handshakes completed.",
            &[],
            self.websocket.opened,
        );
        let help = "WebSocket upgrades refused, by the front end's checks or by a stage's answer.";
        for (by, count) in [
            ("front_end", stats.refused_front_end),
            ("stage", stats.refused_stage),
        ] {
            out.counter(
                "prime_websocket_upgrades_refused",
                help,
                &[("by", by)],
                count,
            );
        }
        let help = "WebSocket messages received from clients, by kind.";
        for (kind, count) in ["text", "binary"].iter().zip(stats.received) {
            out.counter(
                "prime_websocket_messages_received",
                help,
                &[("kind", kind)],
                count,
            );
        }
        out.counter(
            "prime_websocket_messages_sent",
            "WebSocket messages sent to clients: answers, pushes, a backend's events, keep-alives.",
            &[],
            stats.sent,
        );
        let help = "WebSockets ended, by who closed first (none: no Close) and the close code.";
        let mut closes = stats.closes.clone();
        closes.sort();
        for ((by, key), count) in closes {
            let code = code_label(key);
            out.counter(
                "prime_websocket_closes",
                help,
                &[("by", by.name()), ("code", &code)],
                count,
            );
        }
    }
}
