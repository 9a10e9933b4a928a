//! The interrupts a worker has heard of: the front end's published notices that a
//! client has gone, a deadline has passed or a front end is shutting down; and, while
//! the worker streams an answer, how much of it the front end has handed on
//! ([`StreamWritten`]).

use crate::base::error::{Error, Result};
use crate::base::fast_hash::FastSet;
use crate::base::shutdown::Shutdown;
use crate::base::sockets;
use crate::pipeline::envelope::{
    Envelope, Interrupt, InterruptReason, StreamWritten, INTERRUPT_VERSION, STREAM_WRITTEN_LEN,
};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

/// How many interrupts a worker remembers; the oldest are forgotten first.
const REMEMBERED_INTERRUPTS: usize = 65_536;

/// The interrupts a worker has heard of, and the socket it hears them on.
pub(crate) struct InterruptWatch {
    pub(super) subscriber: zmq::Socket,
    pub(super) heard: RefCell<InterruptSet>,
    /// When the socket was last read: reading an empty socket costs a system call, so it
    /// is read at most every [`INTERRUPT_READ_INTERVAL`] (microseconds since the Unix
    /// epoch).
    pub(super) last_read: Cell<u64>,
    pub(super) shutdown: Shutdown,
}

/// How stale a worker's knowledge of interrupts may be.
pub(super) const INTERRUPT_READ_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Default)]
pub(super) struct InterruptSet {
    pub(super) requests: FastSet<(u64, u64)>,
    pub(super) order: VecDeque<(u64, u64)>,
    pub(super) nonces_shut: FastSet<u64>,
    /// The stream this worker sends, if any: its (nonce, request id) and the bytes the
    /// front end said it has handed on.
    pub(super) stream: Option<((u64, u64), u64)>,
}

impl InterruptSet {
    pub(super) fn record(&mut self, interrupt: Interrupt) {
        match interrupt.reason {
            InterruptReason::ShuttingDown => {
                self.nonces_shut.insert(interrupt.nonce);
                return;
            }
            // A census call names a census, not a request.
            InterruptReason::Census => return,
            _ => {}
        }
        let key = (interrupt.nonce, interrupt.request_id);
        if self.requests.insert(key) {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED_INTERRUPTS {
            if let Some(old) = self.order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    /// Keeps a stream notice if it is about the stream this worker sends (a notice
    /// about an earlier stream of the same worker may still arrive).
    fn written(&mut self, notice: StreamWritten) {
        if let Some((key, bytes)) = &mut self.stream {
            if *key == (notice.nonce, notice.request_id) {
                *bytes = (*bytes).max(notice.bytes);
            }
        }
    }

    pub(super) fn covers(&self, envelope: &Envelope) -> bool {
        // Nearly always both are empty: no key is hashed then.
        (!self.requests.is_empty()
            && self
                .requests
                .contains(&(envelope.nonce, envelope.request_id)))
            || (!self.nonces_shut.is_empty() && self.nonces_shut.contains(&envelope.nonce))
    }
}

impl InterruptWatch {
    /// Subscribes to the interrupts of every front end in `endpoints` (their
    /// publishers).
    pub(super) fn connect<'a>(
        ctx: &zmq::Context,
        endpoints: impl IntoIterator<Item = &'a str>,
        shutdown: &Shutdown,
    ) -> Result<Self> {
        let subscriber = sockets::socket(ctx, zmq::SUB)?;
        // Every interrupt, but not the census calls (the pool's census watcher hears
        // them) nor other workers' stream notices (each worker subscribes to its own
        // stream's while it sends one).
        for reason in [
            InterruptReason::ClientGone,
            InterruptReason::DeadlinePassed,
            InterruptReason::ShuttingDown,
            InterruptReason::Cancelled,
            InterruptReason::ProxyLost,
        ] {
            subscriber
                .set_subscribe(&[INTERRUPT_VERSION, reason.code()])
                .map_err(|e| Error::zmq("subscribing to interrupts", e))?;
        }
        for endpoint in endpoints {
            sockets::connect(&subscriber, endpoint)?;
        }
        Ok(InterruptWatch {
            subscriber,
            heard: RefCell::default(),
            last_read: Cell::new(crate::pipeline::envelope::now_us()),
            shutdown: shutdown.clone(),
        })
    }

    /// Reads every interrupt waiting on the socket.
    pub(super) fn drain(&self) {
        let mut heard = self.heard.borrow_mut();
        while let Ok(frame) = self.subscriber.recv_msg(zmq::DONTWAIT) {
            if frame.len() == STREAM_WRITTEN_LEN {
                match StreamWritten::decode(&frame) {
                    Ok(notice) => heard.written(notice),
                    Err(e) => log::warn!("ignoring a malformed stream notice: {e}"),
                }
                continue;
            }
            match Interrupt::decode(&frame) {
                Ok(interrupt) => heard.record(interrupt),
                Err(e) => log::warn!("ignoring a malformed interrupt: {e}"),
            }
        }
    }

    pub(crate) fn is_interrupted(&self, envelope: &Envelope) -> bool {
        // One clock read serves both checks (the wall clock, which deadlines use). A
        // clock that stepped back reads at once rather than waiting for it to catch up.
        let now_us = crate::pipeline::envelope::now_us();
        let last = self.last_read.get();
        if now_us < last || now_us - last >= INTERRUPT_READ_INTERVAL.as_micros() as u64 {
            self.last_read.set(now_us);
            self.drain();
        }
        self.shutdown.is_triggered()
            || envelope.is_expired(now_us)
            || self.heard.borrow().covers(envelope)
    }
}

impl InterruptWatch {
    /// Starts hearing how much of `envelope`'s streamed answer the front end hands on.
    pub(crate) fn watch_stream(&self, envelope: &Envelope) {
        let topic = StreamWritten::topic(envelope.nonce, envelope.request_id);
        if let Err(e) = self.subscriber.set_subscribe(&topic) {
            log::warn!(
                "request {}: cannot hear how the stream is written: {e}",
                envelope.request_id
            );
        }
        self.heard.borrow_mut().stream = Some(((envelope.nonce, envelope.request_id), 0));
    }

    /// Stops hearing about `envelope`'s stream.
    pub(crate) fn unwatch_stream(&self, envelope: &Envelope) {
        let topic = StreamWritten::topic(envelope.nonce, envelope.request_id);
        if let Err(e) = self.subscriber.set_unsubscribe(&topic) {
            log::debug!("request {}: unsubscribe: {e}", envelope.request_id);
        }
        self.heard.borrow_mut().stream = None;
    }

    /// How many bytes of the watched stream the front end has said it handed on.
    pub(crate) fn stream_written(&self) -> u64 {
        self.heard.borrow().stream.map_or(0, |(_, bytes)| bytes)
    }

    /// Waits up to `timeout` for anything on the interrupt channel, then reads it all.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut items = [self.subscriber.as_poll_item(zmq::POLLIN)];
        let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = zmq::poll(&mut items, millis) {
            log::debug!("waiting on the interrupt channel: {e}");
        }
        self.last_read.set(crate::pipeline::envelope::now_us());
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_watched_streams_notices_count_and_never_go_back() {
        let mut set = InterruptSet::default();
        let notice = |request_id, bytes| StreamWritten {
            nonce: 1,
            request_id,
            bytes,
        };
        // Nothing is watched: notices are dropped.
        set.written(notice(7, 100));
        assert_eq!(set.stream, None);
        set.stream = Some(((1, 7), 0));
        set.written(notice(8, 500)); // another request's
        set.written(StreamWritten {
            nonce: 2,
            ..notice(7, 600)
        }); // another front end's
        assert_eq!(set.stream, Some(((1, 7), 0)));
        set.written(notice(7, 300));
        set.written(notice(7, 200)); // late and stale
        assert_eq!(set.stream, Some(((1, 7), 300)));
    }
}
