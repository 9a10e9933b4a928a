//! The front end's wait: one `poll(2)` over the notification descriptors of the
//! ZeroMQ sockets it reads, and the raw descriptors of the control listener it serves
//! itself (its listening socket and the connections it keeps, see
//! `control::inline`), with the sockets asked for their events only where their
//! descriptor cannot tell.

use super::Server;
use crate::base::error::{Error, Result};
use std::time::Duration;

impl Server {
    /// Waits for any socket to be readable; `ready` gets one flag per listener, then the
    /// loopback's, the entries' (set when any entry is readable), the job service's
    /// doorbell's, the channels' (the inbox or the bus), and the control listener's
    /// (its listening socket or a connection the front end serves has an event, kept
    /// for [`serve_control`](Self::serve_control)).
    ///
    /// Asking a socket for its events processes its pending commands (a `read(2)` of its
    /// signaler when one was signalled; nothing in the kernel when none was, with our
    /// libzmq's counted mailbox, see `vendor/zeromq-src/PATCHES.md`), so
    /// the sockets are asked only where their descriptor cannot tell: those the loop also sends on are asked every time (a send may take
    /// in the command that made one readable, leaving its descriptor quiet), the others
    /// only when their descriptor says a command came. A socket only read, and always
    /// to `EAGAIN` (the loopback, the doorbell, the inbox), changes only by a command,
    /// and libzmq signals its descriptor for every command that comes after its
    /// mailbox was found empty, which each `EAGAIN` and each asking leaves it.
    pub(super) fn poll(&mut self, ready: &mut [bool], wait: Duration) -> Result<()> {
        // The sockets' own notification descriptors, read once: they never change.
        if self.socket_fds == 0 {
            let mut fds = Vec::new();
            for socket in self.polled_sockets() {
                let fd = socket
                    .get_fd()
                    .map_err(|e| Error::zmq("reading a socket's descriptor", e))?;
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            self.socket_fds = fds.len();
            self.poll_fds = fds;
        }
        // After them, the control listener's descriptors, which change with its
        // connections.
        self.poll_fds.truncate(self.socket_fds);
        if let Some(control) = &self.channels.control {
            control.inline.poll_fds(&mut self.poll_fds);
        }
        ready.iter_mut().for_each(|flag| *flag = false);
        // The sockets sent on first: one with a message waiting needs no sleep.
        let sent_on = self.sent_on();
        let all = std::mem::take(&mut self.ask_all);
        let asked = |index| all || sent_on(index);
        let any = self.mark_readable(ready, asked)?;
        // Then one poll(2) over every descriptor, without a wait if something is
        // readable already, and the sockets whose descriptor was signalled asked.
        let timeout = match any {
            true => 0,
            false => wait.as_millis().min(i32::MAX as u128) as libc::c_int,
        };
        // SAFETY: poll(2) reads and writes exactly `poll_fds.len()` entries of the
        // vector, which outlives the call.
        let woken = unsafe {
            libc::poll(
                self.poll_fds.as_mut_ptr(),
                self.poll_fds.len() as libc::nfds_t,
                timeout,
            )
        };
        if woken < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno != libc::EINTR {
                let e = zmq::Error::from_raw(errno);
                return Err(Error::zmq("waiting for the sockets (poll)", e));
            }
        }
        if woken > 0 {
            let fds = &self.poll_fds;
            self.mark_readable(ready, |index| {
                fds[index].revents != 0 && !(any && asked(index))
            })?;
            if let Some(control) = &mut self.channels.control {
                let events = &self.poll_fds[self.socket_fds..];
                ready[self.listeners.len() + 4] = control.inline.note_events(events);
            }
        }
        Ok(())
    }

    /// Which of [`polled_sockets`](Self::polled_sockets) the loop also sends on (or
    /// sets options on): the listeners, the entries, the bus's subscriber.
    fn sent_on(&self) -> impl Fn(usize) -> bool {
        let listeners = self.listeners.len();
        let entry = listeners + 1;
        let routed_from = entry + 1 + usize::from(self.jobs.is_some());
        let routed_to = routed_from + self.front.routed.len();
        // After the routed entries comes the inbox, then the bus's subscriber, if any.
        let bus = self.channels.bus.as_ref().map(|_| routed_to + 1);
        move |index| {
            index < listeners
                || index == entry
                || (routed_from..routed_to).contains(&index)
                || Some(index) == bus
        }
    }

    /// The sockets the loop waits on, in the order of `ready`'s flags: the listeners,
    /// the loopback, the entry, the job service's doorbell if any, then the routed
    /// entries (whose replies are read with the main entry's), then the channels' inbox
    /// and bus.
    fn polled_sockets(&self) -> impl Iterator<Item = &zmq::Socket> {
        self.listeners
            .iter()
            .map(|l| &l.socket)
            .chain([&self.front.loopback, &self.front.entry])
            .chain(self.jobs.as_ref().map(|jobs| &jobs.doorbell))
            .chain(self.front.routed.iter().map(|routed| &routed.socket))
            .chain([&self.channels.inbox])
            .chain(self.channels.bus.as_ref().map(|bus| &bus.subscriber))
    }

    /// Asks the sockets `which` picks (by their place in
    /// [`polled_sockets`](Self::polled_sockets)) for their events, and sets the flag of
    /// `ready` (see [`poll`](Self::poll)) of each readable one; true if any is readable.
    fn mark_readable(&self, ready: &mut [bool], which: impl Fn(usize) -> bool) -> Result<bool> {
        let entry = self.listeners.len() + 1;
        let routed_from = entry + 1 + usize::from(self.jobs.is_some());
        let channels_from = routed_from + self.front.routed.len();
        let mut any = false;
        for (index, socket) in self.polled_sockets().enumerate() {
            if !which(index) {
                continue;
            }
            let readable = match socket.get_events() {
                Ok(events) => events.contains(zmq::POLLIN),
                Err(zmq::Error::EINTR) => false,
                Err(e) => return Err(Error::zmq("reading a socket's events", e)),
            };
            if readable {
                any = true;
                let flag = if index < routed_from {
                    index
                } else if index < channels_from {
                    entry
                } else {
                    entry + 2
                };
                ready[flag] = true;
            }
        }
        Ok(any)
    }
}
