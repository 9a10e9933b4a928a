//! The front end's channels: for each channel something is held on here, the holds on
//! it and its recent history; the link to the bus; the inbox where the control
//! listener's publishes arrive.
//!
//! History: each channel keeps its last `history_len` messages, none older than
//! `history_age` (`--channel-history COUNT,SECONDS`). A front end knows a channel from
//! the moment something is held on it here, and keeps it (and its bus subscription)
//! for `history_age` after the last hold leaves, so that a subscriber who reconnects in
//! that time finds what it missed. A hold with a `prev-id` gets ([`Channel::catch_up`]):
//! - the messages after it, in order, when the history still has that id;
//! - nothing (it is up to date) when the id is the channel's last one, or when this
//!   front end has seen nothing on the channel yet (it cannot know of a gap);
//! - otherwise the recovery signal ([`CatchUp::Lost`]): the position is no longer
//!   here, and the client must fetch the current state again.
//!
//! A message whose `prev-id` is not the last id this front end saw on its channel
//! shows that some messages never arrived (the bus dropped them, or they were published
//! before the subscription reached the publisher): the history before it is forgotten,
//! so nobody is given a gap as if it were complete.

use super::output::AnswerBytes;
use crate::base::error::{Error, Result};
use crate::base::fast_hash::{FastMap, FastSet};
use crate::base::sockets;
use crate::pipeline::bus::BusLink;
use crate::pipeline::channel::{reserved_channel, HoldMode, Item};
use crate::pipeline::envelope::Protocol;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The channels' settings: history bounds, the bus, the control listener.
#[derive(Clone, Debug)]
pub struct ChannelsConfig {
    /// Messages kept per channel (100 by default; 0 keeps none).
    pub history_len: usize,
    /// How long a message is kept, and how long a channel is kept after its last hold
    /// left (120 s by default).
    pub history_age: Duration,
    /// The bus forwarder's XSUB and XPUB endpoints (connected); none for a front end
    /// alone, which hands its publishes to its own holds.
    pub bus: Option<(String, String)>,
    /// The control listener (`POST /publish/`), if any.
    pub control: Option<super::control::ControlConfig>,
    /// URL subscriptions (`PUT /subscriptions/{name}` on the control listener), signed,
    /// checked and retried with these webhook settings; none without a webhook secret.
    pub subscriptions: Option<crate::jobs::webhooks::WebhookConfig>,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            history_len: 100,
            history_age: Duration::from_secs(120),
            bus: None,
            control: None,
            subscriptions: None,
        }
    }
}

/// Counters of the channels, in the status document.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ChannelStats {
    /// Messages published here (control listener and stages).
    pub(super) published: u64,
    /// Messages received from the bus (only channels subscribed here arrive).
    pub(super) bus_received: u64,
    /// Messages written to held connections (one per hold).
    pub(super) delivered: u64,
    /// Holds given the recovery signal: their position was lost.
    pub(super) lost: u64,
}

/// A message kept in a channel's history.
struct Logged {
    at: Instant,
    item: Arc<Item>,
}

/// One channel as this front end knows it.
#[derive(Default)]
pub(super) struct Channel {
    /// The requests held on it.
    pub(super) holders: FastSet<u64>,
    history: VecDeque<Logged>,
    /// The id of the last message seen, if it had one.
    last_id: Option<Box<str>>,
    /// Whether any message has been seen on it here.
    seen: bool,
    /// Since when nothing has been held on it.
    pub(super) quiet_since: Option<Instant>,
}

/// What a hold with a `prev-id` gets first.
pub(super) enum CatchUp {
    /// Nothing missed: live messages only.
    Live,
    /// These messages, in order, then the live ones.
    Missed(Vec<Arc<Item>>),
    /// The position is no longer in the history.
    Lost,
}

impl Channel {
    /// What a subscriber whose last message was `prev_id` missed.
    pub(super) fn catch_up(&self, prev_id: Option<&str>) -> CatchUp {
        let Some(prev_id) = prev_id else {
            return CatchUp::Live;
        };
        if !self.seen || self.last_id.as_deref() == Some(prev_id) {
            return CatchUp::Live;
        }
        match self
            .history
            .iter()
            .position(|logged| logged.item.id.as_deref() == Some(prev_id))
        {
            Some(at) => CatchUp::Missed(
                self.history
                    .iter()
                    .skip(at + 1)
                    .map(|logged| logged.item.clone())
                    .collect(),
            ),
            None => CatchUp::Lost,
        }
    }

    /// Takes a message in: into the history (bounded by `len`), its id as the last.
    fn record(&mut self, item: &Arc<Item>, len: usize, now: Instant) {
        if self.seen && item.prev_id.is_some() && item.prev_id.as_deref() != self.last_id.as_deref()
        {
            // Something between the last message and this one never arrived here.
            self.history.clear();
        }
        self.seen = true;
        self.last_id = item.id.as_deref().map(Into::into);
        if len == 0 {
            return;
        }
        if self.history.len() >= len {
            self.history.pop_front();
        }
        self.history.push_back(Logged {
            at: now,
            item: item.clone(),
        });
    }
}

/// A held request.
pub(super) struct Held {
    /// Its connection.
    pub(super) connection: u64,
    /// Its protocol facts (the HTTP version decides the chunk framing).
    pub(super) protocol: Protocol,
    /// Long-poll or stream.
    pub(super) mode: HoldMode,
    /// The channels it is held on.
    pub(super) channels: Box<[Box<str>]>,
    /// A long-poll's timeout.
    pub(super) expires: Option<Instant>,
    /// A long-poll's own answer, sent at its timeout (boxed: a stream hold, the
    /// common case, keeps 8 bytes here rather than a whole `zmq_msg_t`).
    pub(super) answer: Option<Box<zmq::Message>>,
    /// A stream's keep-alive: its bytes and the idle time before they are sent.
    pub(super) keep_alive: Option<Box<(Vec<u8>, Duration)>>,
    /// When a stream last had something written.
    pub(super) last_sent: Instant,
}

impl Held {
    /// When the sweep next has work for it: a long-poll's timeout, or a stream's
    /// keep-alive after `last_sent`; none for a hold with neither.
    pub(super) fn due(&self) -> Option<Instant> {
        self.expires
            .or_else(|| self.keep_alive.as_ref().map(|k| self.last_sent + k.1))
    }

    /// Where its bytes go, and how they are framed.
    pub(super) fn target(&self) -> Target {
        Target {
            connection: self.connection,
            protocol: self.protocol,
        }
    }
}

/// Where a hold's bytes go: its connection, and the protocol facts that frame them.
#[derive(Clone, Copy)]
pub(super) struct Target {
    /// The connection.
    pub(super) connection: u64,
    /// The request's protocol facts.
    pub(super) protocol: Protocol,
}

impl Target {
    /// The HTTP minor version (1 unless the request was HTTP/1.0).
    pub(super) fn minor_version(&self) -> u8 {
        match self.protocol {
            Protocol::Http { minor_version, .. } => minor_version,
            _ => 1,
        }
    }

    /// Whether the request was a HEAD (its stream has no body).
    pub(super) fn head_only(&self) -> bool {
        matches!(self.protocol, Protocol::Http { head: true, .. })
    }

    /// `content` framed for this stream (a chunk for HTTP/1.1).
    pub(super) fn piece(&self, content: &[u8]) -> AnswerBytes {
        if self.head_only() {
            return AnswerBytes::Owned(Vec::new());
        }
        AnswerBytes::Owned(crate::http::Response::chunk(self.minor_version(), content))
    }
}

/// A message's stream content framed once for every hold it goes to: as a chunk for
/// HTTP/1.1, as it is for HTTP/1.0. Each hold gets these bytes in a message of its own
/// ([`Framed::bytes`]); libzmq keeps up to 33 bytes inside the message itself, so a
/// short message (an SSE event of a few words) costs no allocation per hold, and a
/// longer one a single one (framing it per hold cost four: the hex length, the chunk,
/// its shrinking, libzmq's reference to it). A [`Run`] of messages is framed as one:
/// their chunks one after the other.
pub(super) struct Framed<'a> {
    content: Cow<'a, [u8]>,
    chunk: Vec<u8>,
}

impl<'a> Framed<'a> {
    /// Frames `content`.
    pub(super) fn new(content: &'a [u8]) -> Self {
        Framed {
            content: Cow::Borrowed(content),
            chunk: crate::http::Response::chunk(1, content),
        }
    }

    /// Frames several contents, in order, as one piece (each its own chunk for
    /// HTTP/1.1; an empty one adds nothing, as it would alone).
    pub(super) fn joined<'b>(contents: impl Iterator<Item = &'b [u8]>) -> Framed<'a> {
        let mut content = Vec::new();
        let mut chunk = Vec::new();
        for piece in contents.filter(|piece| !piece.is_empty()) {
            content.extend_from_slice(piece);
            chunk.extend_from_slice(&crate::http::Response::chunk(1, piece));
        }
        Framed {
            content: Cow::Owned(content),
            chunk,
        }
    }

    /// Whether there is nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.content.is_empty()
    }

    /// The bytes for one stream, framed for its protocol (none for a HEAD request).
    pub(super) fn bytes(&self, target: Target) -> &[u8] {
        if target.head_only() {
            &[]
        } else if target.minor_version() == 0 {
            &self.content
        } else {
            &self.chunk
        }
    }
}

/// The most messages delivered together as one [`Run`].
const RUN_ITEMS: usize = 64;

/// The most stream content, in bytes, of the messages delivered together as one
/// [`Run`]: below the output's [`COALESCE_BELOW`](super::output::COALESCE_BELOW), so a
/// run is written as one message, as a short one alone is.
const RUN_BYTES: usize = 16 * 1024;

/// Messages published one after the other on one channel that were found waiting
/// together (the control listener's queue, the bus), delivered as one: each hold gets
/// them in order, and a stream gets their chunks in one write (one pipe write, one
/// `sendto`), not one write each. Nothing waits for a run to fill: it is made of what
/// was already there. A run ends after a message that closes (a stream's or a
/// WebSocket's `close`), at another channel, and at [`RUN_ITEMS`] or [`RUN_BYTES`].
#[derive(Default)]
pub(super) struct Run {
    items: Vec<Item>,
    bytes: usize,
}

impl Run {
    /// Whether `item` may join the run (true for an empty one).
    pub(super) fn takes(&self, item: &Item) -> bool {
        let Some(last) = self.items.last() else {
            return true;
        };
        let closes = last.stream.as_ref().is_some_and(|f| f.close)
            || last.ws_message.as_ref().is_some_and(|f| f.close.is_some());
        !closes
            && last.channel == item.channel
            && self.items.len() < RUN_ITEMS
            && self.bytes + stream_len(item) <= RUN_BYTES
    }

    /// Adds `item` at the end (see [`takes`](Self::takes)).
    pub(super) fn push(&mut self, item: Item) {
        self.bytes += stream_len(&item);
        self.items.push(item);
    }

    /// The messages so far, in order, leaving the run empty.
    pub(super) fn take(&mut self) -> Vec<Item> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

/// The length of an item's stream content.
fn stream_len(item: &Item) -> usize {
    item.stream.as_ref().map_or(0, |f| f.content.len())
}

/// Every channel and hold of a front end, and its links for publishing.
pub(super) struct Channels {
    pub(super) config: ChannelsConfig,
    pub(super) map: FastMap<Box<str>, Channel>,
    pub(super) holds: FastMap<u64, Held>,
    /// No hold is due (see [`Held::due`]) before this: the sweep walks the holds only
    /// from then on. A bound, not the exact time: a write to a stream moves its
    /// keep-alive later without moving this, and a walk then finds nothing to do.
    pub(super) holds_due: Option<Instant>,
    pub(super) bus: Option<BusLink>,
    /// What wakes the front end for the control listener's publishes, and the
    /// subscriptions' requests (PULL, bound in-process).
    pub(super) inbox: zmq::Socket,
    /// The control listener's published items, parsed (read at each wake).
    pub(super) publishes: crossbeam_channel::Receiver<Item>,
    pub(super) stats: ChannelStats,
    /// The control listener's thread, stopped when the front end is dropped.
    pub(super) control: Option<super::control::ControlListener>,
    /// The URL subscriptions' registry, when the control listener has one.
    pub(super) subscriptions: Option<super::subscriptions::Service>,
    /// The job service's switch for the events of jobs no event stream watches, turned
    /// on when a hold other than a job's event stream (a stage's, a WebSocket's) joins
    /// a job's channel (see [`EventSwitch`](crate::jobs::service::EventSwitch)).
    job_events: Option<crate::jobs::service::EventSwitch>,
    /// Who writes a wide run of deliveries (see [`super::fan_out`]).
    pub(super) fan_out: super::fan_out::FanOut,
}

impl Channels {
    /// Binds the inbox, connects the bus (if configured) and starts the control
    /// listener (if configured), with the URL subscriptions' registry (kept in
    /// `jobs_db`, the job store's SQLite file, when there is one). Admin calls of the
    /// control listener go to `admin` (the job service); a hold or URL subscription on
    /// a job's channel turns on `job_events` (the job service's switch). Errors: a
    /// socket, listener or file that cannot be used.
    pub(super) fn start(
        ctx: &zmq::Context,
        config: ChannelsConfig,
        nonce: u64,
        jobs_db: Option<&std::path::Path>,
        admin: Option<crate::jobs::service::admin::AdminLink>,
        job_events: Option<crate::jobs::service::EventSwitch>,
    ) -> Result<Self> {
        let inbox = sockets::socket(ctx, zmq::PULL)?;
        let inbox_endpoint = format!("inproc://prime-channels-{nonce:016x}");
        sockets::bind(&inbox, &inbox_endpoint)?;
        let bus = match &config.bus {
            Some((xsub, xpub)) => Some(BusLink::connect(ctx, xsub, xpub)?),
            None => None,
        };
        let subscriptions = match (&config.control, &config.subscriptions) {
            (Some(_), Some(webhooks)) => Some(super::subscriptions::Service::start(
                ctx,
                webhooks.clone(),
                &inbox_endpoint,
                jobs_db,
                job_events.clone(),
            )?),
            _ => None,
        };
        let (sender, publishes) = crossbeam_channel::bounded(super::control::PUBLISHES_WAITING);
        let control = match &config.control {
            Some(control) => Some(
                super::control::ControlListener::start(
                    ctx,
                    control.clone(),
                    &inbox_endpoint,
                    sender,
                    subscriptions.as_ref().map(|s| s.registry().clone()),
                    admin,
                )
                .map_err(|e| Error::Config(format!("the control listener: {e}")))?,
            ),
            None => None,
        };
        Ok(Channels {
            config,
            map: FastMap::default(),
            holds: FastMap::default(),
            holds_due: None,
            bus,
            inbox,
            publishes,
            stats: ChannelStats::default(),
            control,
            subscriptions,
            job_events,
            fan_out: super::fan_out::FanOut::default(),
        })
    }

    /// Adds a holder to `name`, subscribing on the bus when the channel is new here. A
    /// job's channel turns on the job service's [`EventSwitch`](crate::jobs::service::EventSwitch)
    /// first, so the hold misses no event published from now on.
    pub(super) fn join(&mut self, name: &str, request_id: u64) -> &Channel {
        if reserved_channel(name) {
            if let Some(switch) = &self.job_events {
                switch.turn_on();
            }
        }
        self.join_channel(name, request_id)
    }

    fn join_channel(&mut self, name: &str, request_id: u64) -> &Channel {
        if !self.map.contains_key(name) {
            if let Some(bus) = &self.bus {
                bus.subscribe(name);
            }
            self.map.insert(name.into(), Channel::default());
        }
        let channel = self.map.entry(name.into()).or_default();
        channel.holders.insert(request_id);
        channel.quiet_since = None;
        channel
    }

    /// Keeps a hold: joins its channels and, if it has a timeout or keep-alive,
    /// brings the sweep's next walk forward to it.
    pub(super) fn hold(&mut self, request_id: u64, held: Held) {
        for name in held.channels.iter() {
            self.join(name, request_id);
        }
        self.keep(request_id, held);
    }

    /// [`hold`](Self::hold) for a job's event stream, which the job service knows of
    /// (it sends that job's events): the [`EventSwitch`](crate::jobs::service::EventSwitch)
    /// stays as it is.
    pub(super) fn hold_job_stream(&mut self, request_id: u64, held: Held) {
        for name in held.channels.iter() {
            self.join_channel(name, request_id);
        }
        self.keep(request_id, held);
    }

    fn keep(&mut self, request_id: u64, held: Held) {
        if let Some(due) = held.due() {
            self.holds_due = Some(self.holds_due.map_or(due, |at| at.min(due)));
        }
        self.holds.insert(request_id, held);
    }

    /// Removes a hold from every channel it was on; returns it.
    pub(super) fn leave(&mut self, request_id: u64, now: Instant) -> Option<Held> {
        let held = self.holds.remove(&request_id)?;
        for name in held.channels.iter() {
            if let Some(channel) = self.map.get_mut(&**name) {
                channel.holders.remove(&request_id);
                if channel.holders.is_empty() {
                    channel.quiet_since = Some(now);
                }
            }
        }
        Some(held)
    }

    /// Takes messages of one channel into its history, in order; returns the requests
    /// held on it, or none if the channel is not known here (or `items` is empty).
    pub(super) fn record(&mut self, items: &[Arc<Item>], now: Instant) -> Option<Vec<u64>> {
        let channel = self.map.get_mut(items.first()?.channel.as_str())?;
        for item in items {
            channel.record(item, self.config.history_len, now);
        }
        Some(channel.holders.iter().copied().collect())
    }

    /// Forgets history older than `history_age`, and channels nothing was held on for
    /// that long (unsubscribing from the bus).
    pub(super) fn sweep(&mut self, now: Instant) {
        let age = self.config.history_age;
        let bus = &self.bus;
        self.map.retain(|name, channel| {
            while channel
                .history
                .front()
                .is_some_and(|logged| now.duration_since(logged.at) > age)
            {
                channel.history.pop_front();
            }
            let keep = channel
                .quiet_since
                .is_none_or(|since| now.duration_since(since) <= age);
            if !keep {
                if let Some(bus) = bus {
                    bus.unsubscribe(name);
                }
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, prev_id: Option<&str>) -> Arc<Item> {
        Arc::new(Item::stream("c", id).id(id, prev_id.map(Into::into)))
    }

    fn ids(catch_up: CatchUp) -> Option<Vec<String>> {
        match catch_up {
            CatchUp::Live => Some(Vec::new()),
            CatchUp::Missed(items) => Some(items.iter().filter_map(|i| i.id.clone()).collect()),
            CatchUp::Lost => None,
        }
    }

    #[test]
    fn a_position_in_the_history_gets_what_follows_it_and_one_too_old_is_lost() {
        let now = Instant::now();
        let mut channel = Channel::default();
        assert_eq!(
            ids(channel.catch_up(Some("9"))),
            Some(vec![]),
            "nothing seen yet"
        );
        for id in 1..=4 {
            channel.record(&item(&id.to_string(), None), 3, now);
        }
        assert_eq!(
            ids(channel.catch_up(Some("2"))),
            Some(vec!["3".into(), "4".into()])
        );
        assert_eq!(ids(channel.catch_up(Some("4"))), Some(vec![]));
        assert_eq!(ids(channel.catch_up(None)), Some(vec![]));
        assert_eq!(
            ids(channel.catch_up(Some("1"))),
            None,
            "1 fell out of 3 kept"
        );
        assert_eq!(ids(channel.catch_up(Some("x"))), None);
    }

    #[test]
    fn a_run_ends_at_another_channel_after_a_close_and_at_its_bounds() {
        let stream = |channel: &str, close: bool| {
            let mut item = Item::stream(channel, "data: x\n\n");
            if let Some(format) = item.stream.as_mut() {
                format.close = close;
            }
            item
        };
        let mut run = Run::default();
        assert!(
            run.takes(&stream("a", false)),
            "an empty run takes anything"
        );
        run.push(stream("a", false));
        assert!(run.takes(&stream("a", true)));
        assert!(!run.takes(&stream("b", false)), "another channel");
        run.push(stream("a", true));
        assert!(!run.takes(&stream("a", false)), "after a close");
        assert_eq!(run.take().len(), 2);
        for _ in 0..RUN_ITEMS {
            run.push(stream("a", false));
        }
        assert!(!run.takes(&stream("a", false)), "at RUN_ITEMS");
        run.take();
        let big = Item::stream("a", "x".repeat(RUN_BYTES));
        assert!(run.takes(&big));
        run.push(big);
        assert!(!run.takes(&stream("a", false)), "past RUN_BYTES");
    }

    #[test]
    fn a_run_is_framed_as_its_messages_one_after_the_other() {
        let one = Framed::new(b"data: 1\n\n");
        let joined = Framed::joined([&b"data: 1\n\n"[..], b"", b"data: 2\n\n"].into_iter());
        let http11 = Target {
            connection: 1,
            protocol: Protocol::Http {
                minor_version: 1,
                keep_alive: true,
                head: false,
            },
        };
        let http10 = Target {
            connection: 1,
            protocol: Protocol::Http {
                minor_version: 0,
                keep_alive: false,
                head: false,
            },
        };
        assert_eq!(one.bytes(http11), b"9\r\ndata: 1\n\n\r\n");
        assert_eq!(
            joined.bytes(http11),
            b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n"
        );
        assert_eq!(joined.bytes(http10), b"data: 1\n\ndata: 2\n\n");
    }

    #[test]
    fn a_message_whose_prev_id_is_not_the_last_seen_forgets_the_history_before_it() {
        let now = Instant::now();
        let mut channel = Channel::default();
        channel.record(&item("1", None), 10, now);
        channel.record(&item("2", Some("1")), 10, now);
        assert_eq!(ids(channel.catch_up(Some("1"))), Some(vec!["2".into()]));
        // 3 never arrived here.
        channel.record(&item("4", Some("3")), 10, now);
        assert_eq!(ids(channel.catch_up(Some("2"))), None);
        assert_eq!(ids(channel.catch_up(Some("4"))), Some(vec![]));
    }
}
