//! The interrupts a worker has heard of: the front end's published notices that a
//! client has gone, a deadline has passed or a front end is shutting down.

use crate::base::error::{Error, Result};
use crate::base::fast_hash::FastSet;
use crate::base::shutdown::Shutdown;
use crate::base::sockets;
use crate::pipeline::envelope::{Envelope, Interrupt, InterruptReason};
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

    pub(super) fn covers(&self, envelope: &Envelope) -> bool {
        self.requests
            .contains(&(envelope.nonce, envelope.request_id))
            || self.nonces_shut.contains(&envelope.nonce)
    }
}

impl InterruptWatch {
    pub(super) fn connect(ctx: &zmq::Context, endpoint: &str, shutdown: &Shutdown) -> Result<Self> {
        let subscriber = sockets::socket(ctx, zmq::SUB)?;
        subscriber
            .set_subscribe(b"")
            .map_err(|e| Error::zmq("subscribing to interrupts", e))?;
        sockets::connect(&subscriber, endpoint)?;
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
            match Interrupt::decode(&frame) {
                Ok(interrupt) => heard.record(interrupt),
                Err(e) => log::warn!("ignoring a malformed interrupt: {e}"),
            }
        }
    }

    pub(super) fn is_interrupted(&self, envelope: &Envelope) -> bool {
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
