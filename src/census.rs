//! Finding the requests a lost proxy took with it: the census.
//!
//! A proxy that dies holds the jobs waiting in its queue, and nothing else knows which
//! they were. The front end knows every request it is waiting for; everything else
//! knows what it holds. So when a proxy is lost, the front end takes a census: it asks
//! every worker pool (over the interrupt channel, [`InterruptReason::Census`]) and every
//! live proxy (a `CENSUS` message into it) which of its requests they hold, and a request
//! nobody reports has gone with the proxy: the front end answers it 503 and interrupts
//! it, so it is never run (and answered) later. See `server::census` for the rounds.
//!
//! A loss is detectable where a connection to the proxy breaks (the process died and
//! its host closed its sockets) or goes silent (ZMTP heartbeats on the watching socket
//! time out after [`WATCH_HEARTBEAT_TIMEOUT`]): at the front end's entry socket for the
//! first proxy, and at each pool's [`ProxyWatch`] for the proxy it takes jobs from. The
//! pool then tells the front end over the loopback.
//!
//! Loopback messages of the census (they carry no envelope, so their first frame is the
//! one-byte tag `K`, which no envelope can be):
//! - `[K, L, who]`: a pool lost its proxy; `who` names the proxy and the pool (UTF-8).
//! - `[K, C, census id, held]`: an answer to the census `census id` (the front end's
//!   nonce then the census number, u64 LE each); `held` lists the requests the sender
//!   holds, 16 bytes each: nonce then request id, u64 LE each.
//!
//! The `CENSUS` message into a proxy is `[CENSUS, census id]`; the proxy answers it once
//! per census id on its loopback with the requests waiting in its queue and those its
//! workers hold (which covers jobs on their way to a worker). A pool sends it on the
//! same socket as the jobs it hands back, after them, so a job handed back before the
//! census is counted by the proxy.

use crate::envelope::{Envelope, Interrupt, InterruptReason, ENVELOPE_VERSION, INTERRUPT_LEN};
use crate::error::{Error, Result};
use crate::shutdown::{Shutdown, POLL_CAP};
use crate::sockets;
use std::sync::Arc;
use std::time::Duration;

/// The first frame of a census message on the loopback.
pub const TAG: &[u8] = b"K";
/// The second frame of a loss notice.
const LOST: &[u8] = b"L";
/// The second frame of a census answer.
const COUNTED: &[u8] = b"C";
/// The size of a census id: the front end's nonce and the census number.
pub const CENSUS_ID_LEN: usize = 16;

/// How often the watching socket sends a ZMTP heartbeat to the proxy.
const WATCH_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// How long the proxy may leave the heartbeats unanswered before the watch takes it for
/// lost (the proxy's own default for its workers).
pub const WATCH_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The census id (front end nonce, census number) as it travels.
pub fn census_id(nonce: u64, number: u64) -> [u8; CENSUS_ID_LEN] {
    let mut id = [0u8; CENSUS_ID_LEN];
    id[..8].copy_from_slice(&nonce.to_le_bytes());
    id[8..].copy_from_slice(&number.to_le_bytes());
    id
}

/// Reads a census id; `None` if the frame is not one.
pub fn read_census_id(frame: &[u8]) -> Option<(u64, u64)> {
    let nonce = frame.get(..8)?.try_into().ok()?;
    let number = frame.get(8..CENSUS_ID_LEN)?.try_into().ok()?;
    (frame.len() == CENSUS_ID_LEN).then(|| (u64::from_le_bytes(nonce), u64::from_le_bytes(number)))
}

/// The (nonce, request id) of an encoded envelope, without decoding the rest; `None` if
/// the frame is not one.
pub fn held_by(envelope: &[u8]) -> Option<(u64, u64)> {
    let envelope = Envelope::decode(envelope).ok()?;
    Some((envelope.nonce, envelope.request_id))
}

/// The frames of a census answer.
pub fn answer_frames(
    census: &[u8],
    held: impl IntoIterator<Item = (u64, u64)>,
) -> [zmq::Message; 4] {
    let mut list = Vec::new();
    for (nonce, request_id) in held {
        list.extend_from_slice(&nonce.to_le_bytes());
        list.extend_from_slice(&request_id.to_le_bytes());
    }
    [TAG.into(), COUNTED.into(), census.into(), list.into()]
}

/// The frames of a loss notice.
pub fn lost_frames(who: &str) -> [zmq::Message; 3] {
    [TAG.into(), LOST.into(), who.as_bytes().into()]
}

/// A census message read off the loopback.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A pool lost its proxy: who saw it, and which proxy.
    Lost(String),
    /// An answer to a census: the census (nonce, number), and the (nonce, request id)
    /// of every request the sender holds.
    Counted {
        /// The front end's nonce and the census number.
        census: (u64, u64),
        /// What the sender holds.
        held: Vec<(u64, u64)>,
    },
}

/// Reads a loopback message if it is a census message: `None` if it is not one
/// (an answer with an envelope), `Some(Err(()))` if it is a malformed one.
pub fn decode(frames: &[zmq::Message]) -> Option<std::result::Result<Message, ()>> {
    if frames.first().map(|f| &f[..]) != Some(TAG) {
        return None;
    }
    Some(match frames {
        [_, kind, who] if &kind[..] == LOST => {
            Ok(Message::Lost(String::from_utf8_lossy(who).into_owned()))
        }
        [_, kind, census, list] if &kind[..] == COUNTED && list.len() % 16 == 0 => {
            match read_census_id(census) {
                Some(census) => Ok(Message::Counted {
                    census,
                    held: list
                        .chunks_exact(16)
                        .map(|pair| (u64_le(&pair[..8]), u64_le(&pair[8..])))
                        .collect(),
                }),
                None => Err(()),
            }
        }
        _ => Err(()),
    })
}

fn u64_le(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    u64::from_le_bytes(out)
}

/// Which of libzmq's monitor events means a connection broke (`ZMQ_EVENT_DISCONNECTED`,
/// which a ZMTP heartbeat timeout raises too).
const EVENT_DISCONNECTED: u16 = zmq_sys::ZMQ_EVENT_DISCONNECTED as u16;

/// A socket monitor that says when a connection of the watched socket breaks.
pub struct LossMonitor {
    pair: zmq::Socket,
}

impl LossMonitor {
    /// Monitors `socket`'s disconnections over `inproc://` (`socket` must belong to
    /// `ctx`); `name` makes the monitor's endpoint unique.
    pub fn attach(ctx: &zmq::Context, socket: &zmq::Socket, name: &str) -> Result<LossMonitor> {
        let endpoint = format!(
            "inproc://prime-census-monitor-{name}-{:016x}",
            crate::envelope::random_u64()
        );
        socket
            .monitor(&endpoint, i32::from(EVENT_DISCONNECTED))
            .map_err(|e| Error::zmq("monitoring a proxy connection", e))?;
        let pair = sockets::socket(ctx, zmq::PAIR)?;
        sockets::connect(&pair, &endpoint)?;
        Ok(LossMonitor { pair })
    }

    /// The monitor's socket, for `zmq_poll`.
    pub fn socket(&self) -> &zmq::Socket {
        &self.pair
    }

    /// Reads every event waiting; returns the endpoints whose connection broke.
    pub fn losses(&self) -> Vec<String> {
        let mut lost = Vec::new();
        while let Ok(frames) = sockets::recv_frames(&self.pair, zmq::DONTWAIT) {
            let event = frames
                .first()
                .and_then(|f| f.get(..2))
                .map(|b| u16::from_le_bytes([b[0], b[1]]));
            if event == Some(EVENT_DISCONNECTED) {
                let endpoint = frames
                    .get(1)
                    .map(|f| String::from_utf8_lossy(f).into_owned());
                lost.push(endpoint.unwrap_or_default());
            }
        }
        lost
    }
}

/// What a pool holds, for a census: the (nonce, request id) of each job its workers run.
pub type Holdings = Arc<dyn Fn() -> Vec<(u64, u64)> + Send + Sync>;

/// A pool's watch over its proxy, on a thread of its own: it tells the front end when
/// the connection to the proxy breaks or goes silent, and answers the front end's
/// censuses with the jobs the pool's workers run (asking the proxy to answer too).
pub struct ProxyWatch {
    /// Connected to the proxy: watched, and carries `CENSUS` to it.
    dealer: zmq::Socket,
    monitor: LossMonitor,
    /// The front end's interrupts, census calls only.
    calls: zmq::Socket,
    loopback: zmq::Socket,
    proxy: String,
    pool: String,
    holdings: Holdings,
}

impl ProxyWatch {
    /// Connects to the proxy (`proxy`, the stage proxy's downstream endpoint), the front
    /// end's interrupt publisher and its loopback.
    pub fn connect(
        ctx: &zmq::Context,
        pool: &str,
        proxy: &str,
        interrupt: &str,
        loopback: &str,
        holdings: Holdings,
    ) -> Result<ProxyWatch> {
        let dealer = sockets::socket(ctx, zmq::DEALER)?;
        let millis = |d: Duration| d.as_millis() as i32;
        dealer
            .set_heartbeat_ivl(millis(WATCH_HEARTBEAT_INTERVAL))
            .and_then(|()| dealer.set_heartbeat_timeout(millis(WATCH_HEARTBEAT_TIMEOUT)))
            .map_err(|e| Error::zmq("setting heartbeats towards the proxy", e))?;
        let monitor = LossMonitor::attach(ctx, &dealer, pool)?;
        sockets::connect(&dealer, proxy)?;
        let calls = sockets::socket(ctx, zmq::SUB)?;
        calls
            .set_subscribe(&[ENVELOPE_VERSION, InterruptReason::Census.code()])
            .map_err(|e| Error::zmq("subscribing to census calls", e))?;
        sockets::connect(&calls, interrupt)?;
        let push = sockets::socket(ctx, zmq::PUSH)?;
        push.set_sndhwm(0)
            .map_err(|e| Error::zmq("lifting the loopback's high-water mark", e))?;
        sockets::connect(&push, loopback)?;
        Ok(ProxyWatch {
            dealer,
            monitor,
            calls,
            loopback: push,
            proxy: proxy.to_string(),
            pool: pool.to_string(),
            holdings,
        })
    }

    /// Watches until `is_over` says so (checked at least every [`POLL_CAP`]).
    pub fn run(self, shutdown: &Shutdown, is_over: impl Fn() -> bool) {
        while !shutdown.is_triggered() && !is_over() {
            let mut items = [
                self.monitor.socket().as_poll_item(zmq::POLLIN),
                self.calls.as_poll_item(zmq::POLLIN),
            ];
            if sockets::poll(&mut items, POLL_CAP).is_err() {
                return;
            }
            let (lost, called) = (items[0].is_readable(), items[1].is_readable());
            if lost {
                for endpoint in self.monitor.losses() {
                    log::warn!(
                        "pool {}: lost the connection to its proxy {endpoint}; telling the front end",
                        self.pool
                    );
                    let who = format!("proxy {} (seen by pool {})", self.proxy, self.pool);
                    self.send_loopback(lost_frames(&who));
                }
            }
            if called {
                self.answer_calls();
            }
        }
    }

    /// Answers every census call waiting: asks the proxy to answer too, then lists the
    /// jobs the pool's workers run.
    fn answer_calls(&self) {
        while let Ok(frame) = self.calls.recv_bytes(zmq::DONTWAIT) {
            let call = match Interrupt::decode(&frame) {
                Ok(call) if call.reason == InterruptReason::Census => call,
                _ => continue,
            };
            let census = census_id(call.nonce, call.request_id);
            let ask = [zmq::Message::from(crate::proxy::CENSUS), census[..].into()];
            if let Err(e) = sockets::send_frames(&self.dealer, ask, zmq::DONTWAIT) {
                log::debug!("pool {}: census not passed to the proxy: {e}", self.pool);
            }
            let held = (self.holdings)();
            log::debug!(
                "pool {}: census {}: {} jobs running",
                self.pool,
                call.request_id,
                held.len()
            );
            self.send_loopback(answer_frames(&census, held));
        }
    }

    fn send_loopback<const N: usize>(&self, frames: [zmq::Message; N]) {
        if let Err(e) = sockets::send_frames(&self.loopback, frames, zmq::DONTWAIT) {
            log::warn!("pool {}: census message not sent: {e}", self.pool);
        }
    }
}

/// The census call published on the interrupt channel.
pub fn call(nonce: u64, number: u64) -> [u8; INTERRUPT_LEN] {
    Interrupt {
        nonce,
        request_id: number,
        reason: InterruptReason::Census,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn census_messages_round_trip() {
        let census = census_id(7, 3);
        let frames = answer_frames(&census, [(7, 10), (8, 11)]);
        assert_eq!(
            decode(&frames),
            Some(Ok(Message::Counted {
                census: (7, 3),
                held: vec![(7, 10), (8, 11)]
            }))
        );
        let frames = lost_frames("proxy x");
        assert_eq!(decode(&frames), Some(Ok(Message::Lost("proxy x".into()))));
    }

    #[test]
    fn other_loopback_messages_are_not_census_messages() {
        let envelope = Envelope::new(1, 2, 3, crate::envelope::Protocol::Raw).encode();
        let frames = [zmq::Message::from(&envelope[..]), zmq::Message::from("R")];
        assert_eq!(decode(&frames), None);
        let bad = [zmq::Message::from(TAG), zmq::Message::from(COUNTED)];
        assert_eq!(decode(&bad), Some(Err(())));
        let short = answer_frames(&census_id(1, 1), []);
        let mut short: Vec<zmq::Message> = short.into();
        short[3] = zmq::Message::from(&[0u8; 15][..]);
        assert_eq!(decode(&short), Some(Err(())));
    }
}
