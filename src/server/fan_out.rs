//! Who writes a channel's wide run (a run of messages to more holders than
//! `holds::DIRECT_DELIVERIES`): libzmq's I/O thread alone, or the I/O thread and this
//! thread together.
//!
//! The kernel's work of a delivery (one `sendto`, the loopback receive with it) is most
//! of its cost, so a publish to 1,000 holds written by the I/O thread alone keeps one
//! core busy while the front end's waits. Written together, the first part of the run
//! goes into the connections' pipes for the I/O thread, and this thread writes the rest
//! to the connections itself (libzmq's direct writes, vendor/zeromq-src's PATCHES.md):
//! both cores write. But the I/O thread batches when it falls behind a stream of
//! publishes (it finds several messages in a pipe and writes them in one `sendto`),
//! which a writer that keeps up never does, and the publisher waits for the answer to
//! its publish, which leaves after the deliveries. So a run is split only when
//! ([`FanOut::split`]):
//! - this thread has been free of wide runs for at least four times as long as its
//!   part of the run will take (measured on the last split run): in a stream of
//!   publishes the next one comes sooner, and the run goes all to the I/O thread,
//!   which falls behind and batches, while the publish is answered at once;
//! - and the connections the I/O thread was handed last in the last wide run have
//!   written everything (`zmq_stream_peer_idle`): it is not behind.
//!
//! So a lone publish, or the first of a burst, is written from both cores, and the rest
//! of a burst by the I/O thread, batching. A split run's direct part still writes only
//! to idle connections: a connection the I/O thread has not finished gets its bytes
//! through its pipe, behind the others, as before.

use super::Server;
use std::time::{Duration, Instant};

/// The part of a split run this thread writes itself, in thousandths. Before its own
/// part it hands the I/O thread the rest (a pipe write each), so it takes a little less
/// than half: measured per delivery (1,000 holds, `/proc` CPU times), the I/O thread
/// about 8.7 µs, this thread 2 µs for a pipe write and 8.7-9.3 µs for a direct one.
const DIRECT_SHARE: usize = 450;

/// For how many times as long as its part of a split run would take this thread must
/// have been free of wide runs before it splits one. Once: on the machine's 2 shared
/// cores at load 12, a stream publisher's pauses often exceeded that, and each split
/// delayed its answer (it leaves after the deliveries) by this thread's part, so the
/// stream row fell to 0.80 of the build before (`scripts/bench-channels`, 3 rounds).
const QUIET_FACTOR: u32 = 4;

/// How many of the last connections handed to the I/O thread are asked whether they
/// are written (with two I/O threads, the last ones of each, most likely).
const PROBES: usize = 4;

/// The state of the choice between the two ways (see the module's docs).
#[derive(Debug, Default)]
pub(super) struct FanOut {
    /// When the last wide run ended.
    last_end: Option<Instant>,
    /// What the last split run took this thread per connection it wrote itself.
    per_direct: Option<Duration>,
    /// The requests whose deliveries of the last wide run went last through the pipes.
    probes: Vec<u64>,
}

impl FanOut {
    /// Where a wide run to `holders` holds starting `now` is split: the index from which
    /// this thread writes, or `holders` (all through the I/O thread). `idle` tells
    /// whether a request's connection has written everything.
    pub(super) fn split(
        &self,
        now: Instant,
        holders: usize,
        mut idle: impl FnMut(u64) -> bool,
    ) -> usize {
        let direct = holders * DIRECT_SHARE / 1000;
        // This thread writes its part only if it had been free of wide runs for as
        // long as that part will keep it.
        let busy = match (self.last_end, self.per_direct) {
            (Some(end), Some(per)) => {
                let count = u32::try_from(direct).unwrap_or(u32::MAX);
                now < end + per.saturating_mul(count).saturating_mul(QUIET_FACTOR)
            }
            _ => false,
        };
        if busy || !self.probes.iter().all(|&request_id| idle(request_id)) {
            return holders;
        }
        holders - direct
    }

    /// Notes a wide run: its holders in the order written, where it was split
    /// ([`split`](Self::split)), and when it started and ended.
    pub(super) fn ran(&mut self, holders: &[u64], cut: usize, started: Instant, ended: Instant) {
        self.probes.clear();
        self.probes
            .extend_from_slice(&holders[cut.saturating_sub(PROBES)..cut]);
        self.last_end = Some(ended);
        if let Some(direct) = holders.len().checked_sub(cut).filter(|&d| d > 0) {
            let took = ended.saturating_duration_since(started);
            self.per_direct = Some(took / u32::try_from(direct).unwrap_or(u32::MAX));
        }
    }
}

impl Server {
    /// Whether the connection of the held request `request_id` has written everything
    /// sent to it; true if it is gone or cannot tell.
    pub(super) fn hold_written(&self, request_id: u64) -> bool {
        let Some(held) = self.channels.holds.get(&request_id) else {
            return true;
        };
        let Some(conn) = self.connections.get(&held.connection) else {
            return true;
        };
        self.listeners[conn.listener]
            .socket
            .stream_peer_idle(&conn.routing_id)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_wide_run_is_split_and_a_close_follower_is_not() {
        let mut fan = FanOut::default();
        let start = Instant::now();
        let holders: Vec<u64> = (0..1000).collect();
        let cut = fan.split(start, holders.len(), |_| true);
        assert_eq!(cut, 550);
        // 450 written here in 4.5 ms: 10 µs each.
        let end = start + Duration::from_micros(4500);
        fan.ran(&holders, cut, start, end);
        // Sooner after its end than four times its own part: a burst.
        let quiet = end + Duration::from_millis(18);
        let soon = quiet - Duration::from_millis(1);
        assert_eq!(fan.split(soon, 1000, |_| true), 1000);
        // Later, with the I/O thread's last connections written: split again.
        let later = quiet;
        assert_eq!(fan.split(later, 1000, |_| true), cut);
        // Later, but the I/O thread still writes: all through it.
        assert_eq!(fan.split(later, 1000, |id| id != cut as u64 - 1), 1000);
    }

    #[test]
    fn a_run_all_through_the_io_thread_keeps_the_next_close_one_there() {
        let mut fan = FanOut::default();
        let start = Instant::now();
        let holders: Vec<u64> = (0..100).collect();
        let cut = fan.split(start, holders.len(), |_| true);
        let end = start + Duration::from_micros(450);
        fan.ran(&holders, cut, start, end);
        // A run through the I/O thread alone, 1 ms later, ending at once.
        let second = end + Duration::from_millis(1);
        fan.ran(&holders, holders.len(), second, second);
        assert_eq!(fan.probes, vec![96, 97, 98, 99]);
        // Its end counts: the next run within 4 x 45 x 10 µs of it stays with the I/O
        // thread.
        let quiet = second + Duration::from_micros(1800);
        let soon = quiet - Duration::from_micros(100);
        assert_eq!(fan.split(soon, 100, |_| true), 100);
        assert_eq!(fan.split(quiet, 100, |_| true), cut);
        assert_eq!(fan.split(quiet, 100, |id| id != 99), 100);
    }
}
