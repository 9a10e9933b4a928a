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
//! - `[K, A, census id, pool]`: a pool heard the census call `census id` (the front
//!   end's nonce then the census number, u64 LE each) and will answer once its proxy
//!   has: the front end waits for that answer (up to a bound).
//! - `[K, C, census id, held, pool]`: a pool's answer; `held` lists the requests its
//!   workers run and its proxy holds, 16 bytes each: nonce then request id, u64 LE each.
//!
//! The `CENSUS` message into a proxy is `[CENSUS, census id]`; the proxy answers the
//! sender `[CENSUS, census id, held]` with the requests waiting in its queue and those
//! its workers hold (which covers jobs on their way to a worker). A live proxy answers
//! after every message queued before the call, however far behind it is, which is why
//! pools relay its answer and the front end waits for it rather than for a fixed time.
//! A pool sends the call on the same socket as the jobs it hands back, after them, so a
//! job handed back before the census is counted by the proxy. The front end asks the
//! first proxy itself, on its entry socket.

use crate::base::error::{Error, Result};
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::envelope::{
    Envelope, Interrupt, InterruptReason, INTERRUPT_LEN, INTERRUPT_VERSION,
};
use crate::pipeline::front_ends::{FrontEndLink, Loopbacks};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first frame of a census message on the loopback.
pub const TAG: &[u8] = b"K";
/// The second frame of a loss notice.
const LOST: &[u8] = b"L";
/// The second frame of a census answer.
const COUNTED: &[u8] = b"C";
/// The second frame of a pool's acknowledgement of a call.
const HEARD: &[u8] = b"A";
/// The size of a census id: the front end's nonce and the census number.
pub const CENSUS_ID_LEN: usize = 16;

/// A request as a census names it: the front end's nonce and the request id.
pub type Held = (u64, u64);
/// A census as it is read: the front end's nonce and the census number.
pub type Census = (u64, u64);

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

/// How long a pool waits for its proxy's census answer before it answers without it.
const PROXY_ANSWER_BOUND: Duration = Duration::from_secs(5);

/// The (nonce, request id) of an encoded envelope or of a lead frame that starts with
/// one (see [`crate::pipeline::envelope::lead_frame`]); `None` if the frame is neither.
pub fn held_by(envelope: &[u8]) -> Option<(u64, u64)> {
    let (envelope, _) = Envelope::decode_lead(envelope).ok()?;
    Some((envelope.nonce, envelope.request_id))
}

/// The list of held requests as it travels: 16 bytes each.
pub fn held_list(held: impl IntoIterator<Item = (u64, u64)>) -> Vec<u8> {
    let mut list = Vec::new();
    for (nonce, request_id) in held {
        list.extend_from_slice(&nonce.to_le_bytes());
        list.extend_from_slice(&request_id.to_le_bytes());
    }
    list
}

/// Reads a list written by [`held_list`]; `None` if it is not one.
pub fn read_held_list(list: &[u8]) -> Option<Vec<(u64, u64)>> {
    list.len().is_multiple_of(16).then(|| {
        list.chunks_exact(16)
            .map(|pair| (u64_le(&pair[..8]), u64_le(&pair[8..])))
            .collect()
    })
}

/// The frames of a pool's census answer.
pub fn answer_frames(census: &[u8], held: &[u8], pool: &str) -> [zmq::Message; 5] {
    [
        TAG.into(),
        COUNTED.into(),
        census.into(),
        held.into(),
        pool.as_bytes().into(),
    ]
}

/// The frames of a pool's acknowledgement of a call.
pub fn heard_frames(census: &[u8], pool: &str) -> [zmq::Message; 4] {
    [
        TAG.into(),
        HEARD.into(),
        census.into(),
        pool.as_bytes().into(),
    ]
}

/// The frames of a loss notice.
pub fn lost_frames(who: &str) -> [zmq::Message; 3] {
    [TAG.into(), LOST.into(), who.as_bytes().into()]
}

/// Reads a proxy's census answer `[CENSUS, census id, held]` (as a DEALER receives it):
/// the census (nonce, number) and the list; `None` if the frames are not one.
pub fn read_proxy_answer(frames: &[zmq::Message]) -> Option<(Census, Vec<Held>)> {
    match frames {
        [tag, census, list] if &tag[..] == crate::pipeline::wire::CENSUS => {
            Some((read_census_id(census)?, read_held_list(list)?))
        }
        _ => None,
    }
}

/// A census message read off the loopback.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A pool lost its proxy: who saw it, and which proxy.
    Lost(String),
    /// A pool heard a census call and will answer once its proxy has.
    Heard {
        /// The front end's nonce and the census number.
        census: (u64, u64),
        /// The pool.
        pool: String,
    },
    /// A pool's answer to a census: the (nonce, request id) of every request it and its
    /// proxy hold.
    Counted {
        /// The front end's nonce and the census number.
        census: (u64, u64),
        /// What the pool and its proxy hold.
        held: Vec<(u64, u64)>,
        /// The pool.
        pool: String,
    },
}

/// Reads a loopback message if it is a census message: `None` if it is not one
/// (an answer with an envelope, or any message of one frame: a census message has
/// three or more), `Some(Err(()))` if it is a malformed one.
pub fn decode(frames: &[zmq::Message]) -> Option<std::result::Result<Message, ()>> {
    // The most common loopback message, a whole response, is one frame: told apart
    // without reading its bytes.
    if frames.len() < 2 {
        return None;
    }
    // The length first: it is one call into libzmq, the bytes two (and a loopback
    // answer, which this is nearly always asked about, is longer than the tag).
    if frames
        .first()
        .map(|f| f.len() == TAG.len() && &f[..] == TAG)
        != Some(true)
    {
        return None;
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Some(match frames {
        [_, kind, who] if &kind[..] == LOST => Ok(Message::Lost(text(who))),
        [_, kind, census, pool] if &kind[..] == HEARD => match read_census_id(census) {
            Some(census) => Ok(Message::Heard {
                census,
                pool: text(pool),
            }),
            None => Err(()),
        },
        [_, kind, census, list, pool] if &kind[..] == COUNTED => {
            match (read_census_id(census), read_held_list(list)) {
                (Some(census), Some(held)) => Ok(Message::Counted {
                    census,
                    held,
                    pool: text(pool),
                }),
                _ => Err(()),
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

/// libzmq's monitor event for a connection made.
const EVENT_CONNECTED: u16 = zmq_sys::ZMQ_EVENT_CONNECTED as u16;
/// libzmq's monitor event for a connection broken (a ZMTP heartbeat timeout raises it
/// too).
const EVENT_DISCONNECTED: u16 = zmq_sys::ZMQ_EVENT_DISCONNECTED as u16;

/// A socket monitor that says when a connection of the watched socket is made or breaks.
pub struct LossMonitor {
    pair: zmq::Socket,
}

impl LossMonitor {
    /// Monitors `socket`'s disconnections over `inproc://` (`socket` must belong to
    /// `ctx`); `name` makes the monitor's endpoint unique.
    pub fn attach(ctx: &zmq::Context, socket: &zmq::Socket, name: &str) -> Result<LossMonitor> {
        let endpoint = format!(
            "inproc://prime-census-monitor-{name}-{:016x}",
            crate::pipeline::envelope::random_u64()
        );
        socket
            .monitor(&endpoint, i32::from(EVENT_CONNECTED | EVENT_DISCONNECTED))
            .map_err(|e| Error::zmq("monitoring a proxy connection", e))?;
        let pair = sockets::socket(ctx, zmq::PAIR)?;
        sockets::connect(&pair, &endpoint)?;
        Ok(LossMonitor { pair })
    }

    /// The monitor's socket, for `zmq_poll`.
    pub fn socket(&self) -> &zmq::Socket {
        &self.pair
    }

    /// Reads every event waiting, in order: (whether the connection is made or broke,
    /// the endpoint).
    pub fn events(&self) -> Vec<(bool, String)> {
        let mut events = Vec::new();
        while let Ok(frames) = sockets::recv_frames(&self.pair, zmq::DONTWAIT) {
            let event = frames
                .first()
                .and_then(|f| f.get(..2))
                .map(|b| u16::from_le_bytes([b[0], b[1]]));
            let endpoint = frames
                .get(1)
                .map(|f| String::from_utf8_lossy(f).into_owned());
            match event {
                Some(EVENT_CONNECTED) => events.push((true, endpoint.unwrap_or_default())),
                Some(EVENT_DISCONNECTED) => events.push((false, endpoint.unwrap_or_default())),
                _ => {}
            }
        }
        events
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
    /// Every front end's loopback: census messages go to all of them.
    loopback: Loopbacks,
    proxy: String,
    pool: String,
    holdings: Holdings,
    /// Whether the connection to the proxy is up.
    connected: bool,
    /// Calls answered but for the proxy's part, oldest first.
    pending: VecDeque<Pending>,
}

/// A call the pool waits for its proxy to answer.
struct Pending {
    census: [u8; CENSUS_ID_LEN],
    /// The pool's own part: what its workers ran when the call came.
    running: Vec<(u64, u64)>,
    /// When the pool stops waiting for the proxy.
    until: Instant,
}

impl ProxyWatch {
    /// Connects to the proxy (`proxy`, the stage proxy's downstream endpoint), the front
    /// ends' interrupt publishers and their loopbacks (see
    /// [`crate::pipeline::front_ends`]): a loss is told to every front end, and so is a
    /// census answer (each front end keeps those of its own censuses).
    pub fn connect(
        ctx: &zmq::Context,
        pool: &str,
        proxy: &str,
        front_ends: &[FrontEndLink],
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
            .set_subscribe(&[INTERRUPT_VERSION, InterruptReason::Census.code()])
            .map_err(|e| Error::zmq("subscribing to census calls", e))?;
        for front_end in front_ends {
            sockets::connect(&calls, &front_end.interrupt)?;
        }
        let push = Loopbacks::connect(ctx, front_ends.iter().map(|f| f.loopback.as_str()))?;
        Ok(ProxyWatch {
            dealer,
            monitor,
            calls,
            loopback: push,
            proxy: proxy.to_string(),
            pool: pool.to_string(),
            holdings,
            connected: false,
            pending: VecDeque::new(),
        })
    }

    /// Watches until `is_over` says so (checked at least every [`POLL_CAP`]).
    pub fn run(mut self, shutdown: &Shutdown, is_over: impl Fn() -> bool) {
        while !shutdown.is_triggered() && !is_over() {
            let mut items = [
                self.monitor.socket().as_poll_item(zmq::POLLIN),
                self.calls.as_poll_item(zmq::POLLIN),
                self.dealer.as_poll_item(zmq::POLLIN),
            ];
            if sockets::poll(&mut items, POLL_CAP).is_err() {
                return;
            }
            let ready = [0, 1, 2].map(|i| items[i].is_readable());
            if ready[0] {
                self.on_connection_events();
            }
            if ready[2] {
                self.on_proxy_answers();
            }
            if ready[1] {
                self.answer_calls();
            }
            let now = Instant::now();
            while self.pending.front().is_some_and(|p| p.until <= now) {
                log::warn!(
                    "pool {}: its proxy {} did not answer a census in {PROXY_ANSWER_BOUND:?}",
                    self.pool,
                    self.proxy
                );
                self.answer_without_proxy();
            }
        }
    }

    /// Follows the connection to the proxy; tells the front end when it breaks.
    fn on_connection_events(&mut self) {
        for (connected, endpoint) in self.monitor.events() {
            self.connected = connected;
            if connected {
                continue;
            }
            log::warn!(
                "pool {}: lost the connection to its proxy {endpoint}; telling the front end",
                self.pool
            );
            let who = format!("proxy {} (seen by pool {})", self.proxy, self.pool);
            self.send_loopback(lost_frames(&who));
            // The proxy will not answer the calls it had.
            while !self.pending.is_empty() {
                self.answer_without_proxy();
            }
        }
    }

    /// Answers the oldest pending call with the pool's part alone.
    fn answer_without_proxy(&mut self) {
        if let Some(pending) = self.pending.pop_front() {
            let held = held_list(pending.running);
            self.send_loopback(answer_frames(&pending.census, &held, &self.pool));
        }
    }

    /// Relays the proxy's census answers, each with the pool's part.
    fn on_proxy_answers(&mut self) {
        while let Ok(frames) = sockets::recv_frames(&self.dealer, zmq::DONTWAIT) {
            let Some((census, from_proxy)) = read_proxy_answer(&frames) else {
                continue;
            };
            let census = census_id(census.0, census.1);
            let Some(at) = self.pending.iter().position(|p| p.census == census) else {
                continue;
            };
            let pending = self.pending.remove(at).expect("a position in the deque");
            let held = held_list(pending.running.into_iter().chain(from_proxy));
            self.send_loopback(answer_frames(&census, &held, &self.pool));
        }
    }

    /// Takes every census call waiting: notes what the pool's workers run and asks the
    /// proxy, telling the front end to wait for the answer; or, with no connection to
    /// the proxy, answers at once.
    fn answer_calls(&mut self) {
        while let Ok(frame) = self.calls.recv_bytes(zmq::DONTWAIT) {
            let call = match Interrupt::decode(&frame) {
                Ok(call) if call.reason == InterruptReason::Census => call,
                _ => continue,
            };
            let census = census_id(call.nonce, call.request_id);
            let running = (self.holdings)();
            log::debug!(
                "pool {}: census {}: {} jobs running",
                self.pool,
                call.request_id,
                running.len()
            );
            let ask = [
                zmq::Message::from(crate::pipeline::wire::CENSUS),
                census[..].into(),
            ];
            let asked =
                self.connected && sockets::send_frames(&self.dealer, ask, zmq::DONTWAIT).is_ok();
            if asked {
                self.send_loopback(heard_frames(&census, &self.pool));
                self.pending.push_back(Pending {
                    census,
                    running,
                    until: Instant::now() + PROXY_ANSWER_BOUND,
                });
            } else {
                let held = held_list(running);
                self.send_loopback(answer_frames(&census, &held, &self.pool));
            }
        }
    }

    fn send_loopback<const N: usize>(&self, frames: [zmq::Message; N]) {
        let frames = frames.each_ref().map(|frame| &frame[..]);
        if let Err(e) = self.loopback.broadcast(&frames) {
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
        let frames = answer_frames(&census, &held_list([(7, 10), (8, 11)]), "pool");
        assert_eq!(
            decode(&frames),
            Some(Ok(Message::Counted {
                census: (7, 3),
                held: vec![(7, 10), (8, 11)],
                pool: "pool".into(),
            }))
        );
        let frames = heard_frames(&census, "pool");
        assert_eq!(
            decode(&frames),
            Some(Ok(Message::Heard {
                census: (7, 3),
                pool: "pool".into()
            }))
        );
        let frames = lost_frames("proxy x");
        assert_eq!(decode(&frames), Some(Ok(Message::Lost("proxy x".into()))));
        let from_proxy = [
            zmq::Message::from(crate::pipeline::wire::CENSUS),
            zmq::Message::from(&census[..]),
            zmq::Message::from(held_list([(7, 12)])),
        ];
        assert_eq!(
            read_proxy_answer(&from_proxy),
            Some(((7, 3), vec![(7, 12)]))
        );
    }

    #[test]
    fn other_loopback_messages_are_not_census_messages() {
        let envelope = Envelope::new(1, 2, 3, crate::pipeline::envelope::Protocol::Raw);
        let frames = crate::pipeline::loopback::response_frames(&envelope.encode(), b"yes");
        assert_eq!(decode(&frames), None);
        let bad = [zmq::Message::from(TAG), zmq::Message::from(COUNTED)];
        assert_eq!(decode(&bad), Some(Err(())));
        // A census message has three frames or more: a lone frame, whatever it holds,
        // is left to the loopback's decoder (which refuses this one).
        let lone = [zmq::Message::from(TAG)];
        assert_eq!(decode(&lone), None);
        assert!(crate::pipeline::loopback::decode(lone).is_err());
        let short = answer_frames(&census_id(1, 1), &[], "pool");
        let mut short: Vec<zmq::Message> = short.into();
        short[3] = zmq::Message::from(&[0u8; 15][..]);
        assert_eq!(decode(&short), Some(Err(())));
    }
}
