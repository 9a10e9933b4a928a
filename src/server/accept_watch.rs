//! Accept failures on a client-facing socket, seen through a libzmq socket monitor.
//!
//! libzmq accepts connections on its own I/O thread and tells its user nothing when an
//! accept fails; only a monitor hears `ZMQ_EVENT_ACCEPT_FAILED`, with the errno. Out of
//! descriptors (`EMFILE`), our patched libzmq stops polling the listener and tries
//! again every 100 ms (vendor/zeromq-src/PATCHES.md), so the new connections wait in the
//! kernel's backlog while open ones are served; this watch turns those failures into a
//! warning at most once a second.

use crate::base::error::{Error, Result};
use crate::base::sockets;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shortest time between two warnings about one listener.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// A monitor on one listening socket.
pub(crate) struct AcceptWatch {
    /// The monitor's PAIR socket, read without waiting.
    events: zmq::Socket,
    /// Failures since the last warning.
    failures: u64,
    /// The errno of the latest failure.
    last_errno: u32,
    /// When the last warning was logged.
    last_warning: Option<Instant>,
}

impl AcceptWatch {
    /// Starts monitoring `socket`'s accept failures.
    pub(crate) fn new(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<Self> {
        static WATCHES: AtomicU64 = AtomicU64::new(0);
        let endpoint = format!(
            "inproc://prime_server-accept-watch-{}-{}",
            std::process::id(),
            WATCHES.fetch_add(1, Ordering::Relaxed)
        );
        socket
            .monitor(&endpoint, zmq::SocketEvent::ACCEPT_FAILED as i32)
            .map_err(|e| Error::zmq("monitoring accept failures", e))?;
        let events = sockets::socket(ctx, zmq::PAIR)?;
        events
            .connect(&endpoint)
            .map_err(|e| Error::zmq(format!("connecting to {endpoint}"), e))?;
        Ok(AcceptWatch {
            events,
            failures: 0,
            last_errno: 0,
            last_warning: None,
        })
    }

    /// Reads the failures reported so far, without waiting, and warns about them if the
    /// last warning is a second old.
    pub(crate) fn check(&mut self, endpoint: &str, now: Instant) {
        while let Ok(frames) = sockets::recv_frames(&self.events, zmq::DONTWAIT) {
            // [event: u16, value: u32] then the endpoint.
            if let Some(value) = frames.first().and_then(|f| f.get(2..6)) {
                let mut errno = [0u8; 4];
                errno.copy_from_slice(value);
                self.last_errno = u32::from_ne_bytes(errno);
                self.failures += 1;
            }
        }
        let due = self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if self.failures == 0 || !due {
            return;
        }
        let reason = i32::try_from(self.last_errno)
            .map(std::io::Error::from_raw_os_error)
            .map_or_else(|_| format!("errno {}", self.last_errno), |e| e.to_string());
        log::warn!(
            "{endpoint}: accepting a connection failed {} times ({reason}); open connections are still served, new ones wait in the backlog until descriptors are free",
            self.failures
        );
        self.failures = 0;
        self.last_warning = Some(now);
    }
}
