//! The bus: how a message published on one front end reaches the holds of every front
//! end of a deployment.
//!
//! It is the zguide's many-to-many publish–subscribe: one [`Forwarder`] binds an XSUB
//! socket (where publishers connect) and an XPUB socket (where subscribers connect) and
//! copies messages from the first to the second, and subscriptions from the second to
//! the first. Every front end connects a PUB to the XSUB and a SUB to the XPUB
//! ([`BusLink`]), and subscribes only to the channels it holds something on (the topic
//! framing of [`crate::pipeline::channel::topic`] makes a subscription match one channel
//! exactly). The XPUB passes those subscriptions up to the publishers, so a message on a
//! channel nobody holds anywhere is dropped at its publisher, and a front end receives
//! only the channels it subscribed to.
//!
//! Messages are `[topic, item JSON, origin]` (see [`crate::pipeline::channel::Item`]);
//! the origin is the publishing front end's nonce, 8 bytes big-endian. A front end
//! delivers its own publishes to its own holds at once and drops them when they come
//! back from the forwarder ([`BusLink::is_own`]): a hold placed just before a publish
//! gets it even if its subscription has not yet reached the publisher (ZeroMQ's slow
//! joiner), and a front end's own messages reach it in the order it published them.
//! The bus gives no delivery guarantee (a PUB drops what a slow subscriber cannot take, and a
//! subscription takes a moment to reach the publishers): the channels' history and the
//! items' `prev-id` are what lets a subscriber know it missed something.
//!
//! A front end without a bus (one process, `prime_serverd`) delivers its publishes to
//! its own holds directly.

use crate::base::error::{Error, Result};
use crate::base::shutdown::{Shutdown, POLL_CAP};
use crate::base::sockets;
use crate::pipeline::channel::{topic, Item};

/// A front end's two sockets on the bus.
pub struct BusLink {
    /// Connected to the forwarder's XSUB: publishes go out here.
    pub publisher: zmq::Socket,
    /// Connected to the forwarder's XPUB: the channels held here come in here.
    pub subscriber: zmq::Socket,
}

impl BusLink {
    /// Connects to the forwarder's `xsub` (for publishing) and `xpub` (for receiving)
    /// endpoints. Errors: a socket libzmq cannot make or connect.
    pub fn connect(ctx: &zmq::Context, xsub: &str, xpub: &str) -> Result<BusLink> {
        let publisher = sockets::socket(ctx, zmq::PUB)?;
        sockets::connect(&publisher, xsub)?;
        let subscriber = sockets::socket(ctx, zmq::SUB)?;
        sockets::connect(&subscriber, xpub)?;
        Ok(BusLink {
            publisher,
            subscriber,
        })
    }

    /// Puts `item` on the bus from the front end `origin` (its nonce), without waiting:
    /// a PUB never blocks, it drops instead.
    pub fn publish(&self, item: &Item, origin: u64) -> zmq::Result<()> {
        sockets::send_frames(
            &self.publisher,
            [
                zmq::Message::from(topic(&item.channel)),
                zmq::Message::from(item.to_json()),
                zmq::Message::from(&origin.to_be_bytes()[..]),
            ],
            zmq::DONTWAIT,
        )
    }

    /// Whether a message received from the bus (its frames) was published by the front
    /// end `origin` (which delivered it already).
    pub fn is_own(frames: &[zmq::Message], origin: u64) -> bool {
        frames
            .get(2)
            .is_some_and(|frame| **frame == origin.to_be_bytes()[..])
    }

    /// Starts receiving `channel`'s messages.
    pub fn subscribe(&self, channel: &str) {
        if let Err(e) = self.subscriber.set_subscribe(&topic(channel)) {
            log::warn!("the bus subscription to a channel failed: {e}");
        }
    }

    /// Stops receiving `channel`'s messages.
    pub fn unsubscribe(&self, channel: &str) {
        if let Err(e) = self.subscriber.set_unsubscribe(&topic(channel)) {
            log::warn!("the bus unsubscription from a channel failed: {e}");
        }
    }
}

/// Counters a forwarder keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Messages passed from publishers to subscribers.
    pub messages: u64,
    /// Subscription changes passed from subscribers to publishers.
    pub subscriptions: u64,
}

impl std::fmt::Display for ForwarderStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages forwarded, {} subscription changes",
            self.messages, self.subscriptions
        )
    }
}

/// The bus's XSUB/XPUB forwarder (`prime_proxyd --bus XSUB_ENDPOINT XPUB_ENDPOINT`).
pub struct Forwarder {
    xsub: zmq::Socket,
    xpub: zmq::Socket,
    endpoints: (String, String),
}

impl Forwarder {
    /// Binds the XSUB (publishers connect) and XPUB (subscribers connect) endpoints.
    /// Errors: an endpoint libzmq cannot bind.
    pub fn bind(ctx: &zmq::Context, xsub: &str, xpub: &str) -> Result<Forwarder> {
        let xsub_socket = sockets::socket(ctx, zmq::XSUB)?;
        sockets::bind(&xsub_socket, xsub)?;
        let xpub_socket = sockets::socket(ctx, zmq::XPUB)?;
        sockets::bind(&xpub_socket, xpub)?;
        let endpoints = (
            sockets::last_endpoint(&xsub_socket)?,
            sockets::last_endpoint(&xpub_socket)?,
        );
        Ok(Forwarder {
            xsub: xsub_socket,
            xpub: xpub_socket,
            endpoints,
        })
    }

    /// The endpoints bound (XSUB, XPUB), with the ports picked for port 0.
    pub fn endpoints(&self) -> (&str, &str) {
        (&self.endpoints.0, &self.endpoints.1)
    }

    /// Forwards until `shutdown` is triggered; returns the counters.
    pub fn run(self, shutdown: &Shutdown) -> Result<ForwarderStats> {
        let mut stats = ForwarderStats::default();
        log::info!(
            "bus forwarder: publishers connect to {}, subscribers to {}",
            self.endpoints.0,
            self.endpoints.1
        );
        while !shutdown.is_triggered() {
            let mut items = [
                self.xsub.as_poll_item(zmq::POLLIN),
                self.xpub.as_poll_item(zmq::POLLIN),
            ];
            sockets::poll(&mut items, POLL_CAP)?;
            let (from_publishers, from_subscribers) =
                (items[0].is_readable(), items[1].is_readable());
            if from_publishers {
                while let Ok(frames) = sockets::recv_frames(&self.xsub, zmq::DONTWAIT) {
                    stats.messages += 1;
                    sockets::send_frames(&self.xpub, frames, zmq::DONTWAIT)
                        .map_err(|e| Error::zmq("forwarding a bus message", e))?;
                }
            }
            if from_subscribers {
                while let Ok(frames) = sockets::recv_frames(&self.xpub, zmq::DONTWAIT) {
                    stats.subscriptions += 1;
                    sockets::send_frames(&self.xsub, frames, zmq::DONTWAIT)
                        .map_err(|e| Error::zmq("forwarding a bus subscription", e))?;
                }
            }
        }
        Ok(stats)
    }
}
