//! Job reads bounded by the request's deadline. The job service answers reads (a job's
//! status, its result, the head of its event stream) from the store on its own thread;
//! while the disk stalls, that thread waits, and so would every reader. A read the
//! service has not answered by its deadline (the request timeout, plus the wait a
//! long-poll asked for) is answered here `503` with `Retry-After`; the service's late
//! answer then finds its slot answered and is dropped.

use super::output::AnswerBytes;
use super::Server;
use crate::base::fast_hash::FastMap;
use crate::http::Response;
use crate::jobs::service::ReplyTo;
use std::time::{Duration, Instant};

/// How long a client is told to wait before asking again (seconds).
const RETRY_AFTER: &str = "5";

/// Reads waiting for the job service, by request id.
#[derive(Default)]
pub(super) struct PendingReads {
    waiting: FastMap<u64, (ReplyTo, Instant)>,
}

impl PendingReads {
    /// A read sent to the service, to be answered by `deadline`.
    pub(super) fn expect(&mut self, reply: ReplyTo, deadline: Instant) {
        self.waiting.insert(reply.request_id, (reply, deadline));
    }

    /// The service has answered the read (or begun its event stream).
    pub(super) fn answered(&mut self, request_id: u64) {
        self.waiting.remove(&request_id);
    }

    /// The reads past their deadline, forgotten here.
    fn take_late(&mut self, now: Instant) -> Vec<ReplyTo> {
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        late.iter()
            .filter_map(|id| self.waiting.remove(id).map(|(reply, _)| reply))
            .collect()
    }
}

/// The deadline of a job read arriving `now`: the request timeout, after the long-poll's
/// `wait` if it asked for one.
pub(super) fn read_deadline(now: Instant, timeout: Duration, wait: Option<Duration>) -> Instant {
    now + timeout + wait.unwrap_or_default()
}

impl Server {
    /// Answers `503` every job read the service has not answered by its deadline.
    pub(super) fn sweep_job_reads(&mut self, now: Instant) {
        let Some(link) = &mut self.jobs else {
            return;
        };
        for reply in link.reads.take_late(now) {
            log::warn!(
                "request {}: the job store did not answer in time; 503",
                reply.request_id
            );
            let response = Response::error(503, "the job store did not answer in time")
                .header("Retry-After", RETRY_AFTER);
            let bytes = response.to_bytes(reply.minor_version, reply.keep_alive, reply.head);
            self.fill(
                reply.connection,
                reply.request_id,
                AnswerBytes::Owned(bytes),
            );
        }
    }
}
