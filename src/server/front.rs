//! The front end's sockets toward its pipeline: the entries requests go into (the first
//! stage's, and one per stage a task table routes to), the loopback answers come back on,
//! and the publisher of interrupts. [`FrontSockets::ask`] is the simplest client of a
//! pipeline without HTTP.

use crate::base::error::{Error, Result};
use crate::base::sockets;
use crate::pipeline::envelope::{Envelope, Protocol};
use crate::pipeline::loopback::{self, Answer, Failure, FailureKind};
use crate::stages::tasks::{TaskRefusal, TaskRouter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The sockets of a pipeline's front end: where it sends requests (the main entry, and
/// one entry per routed stage when it routes by task), where answers come back, and
/// where it publishes interrupts.
pub struct FrontSockets {
    /// Requests go here (DEALER, connected to the first proxy).
    pub entry: zmq::Socket,
    /// Answers arrive here (PULL, bound).
    pub loopback: zmq::Socket,
    /// Interrupts go out here (PUB, bound).
    pub interrupt: zmq::Socket,
    /// Where the loopback is bound.
    pub loopback_endpoint: String,
    /// Where the interrupt publisher is bound.
    pub interrupt_endpoint: String,
    /// The first proxy's upstream endpoint the entry connects to.
    pub entry_endpoint: String,
    /// The stages' names, in pipeline order, when known (the pipeline builder and a
    /// topology file know them): the self-test names each one that does not answer its
    /// probe. Empty when unknown: the self-test then reports the stages that answered.
    pub stages: Vec<String>,
    /// The task table the front end applies itself (see
    /// [`route_tasks`](Self::route_tasks)); none by default, and then every request goes
    /// to the first stage.
    pub tasks: Option<TaskRouter>,
    /// One entry per stage the task table names, other than the first stage (which
    /// the main entry reaches).
    pub routed: Vec<RoutedEntry>,
    /// This front end's number: its place (from 0) in the list of front ends every
    /// worker and proxy of the deployment is given (see
    /// [`crate::pipeline::front_ends`]), written in every envelope it makes so that
    /// answers come back here. 0 by default, the number of a lone front end.
    pub front_end: u8,
}

/// An entry straight to a stage the task table names (DEALER, connected to that
/// stage's proxy), beside the main entry to the first stage.
pub struct RoutedEntry {
    /// The stage's name.
    pub stage: String,
    /// The socket requests for the stage go to.
    pub socket: zmq::Socket,
    /// The stage's proxy's upstream endpoint.
    pub endpoint: String,
}

/// Which entry a request goes to: the main one or a routed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryIndex {
    /// The main entry, to the first stage.
    Main,
    /// `routed[i]`.
    Routed(usize),
}

impl FrontSockets {
    /// Creates the front's sockets: binds `loopback` and `interrupt`, connects to `entry`
    /// (the first proxy's upstream). Used by a front end that runs apart from its stages.
    pub fn bind(ctx: &zmq::Context, entry: &str, loopback: &str, interrupt: &str) -> Result<Self> {
        let mut front = Self::create(ctx, loopback, interrupt)?;
        front.connect_entry(entry)?;
        Ok(front)
    }

    /// Lets the front end apply `router` itself: a request goes straight to the stage
    /// its `X-Task-Name` or path names, with no routing stage in between. `stages` gives
    /// each stage's proxy's upstream endpoint by name; the first stage (when
    /// [`stages`](Self::stages) names it) is reached through the main entry. Every
    /// stage the table names must have an endpoint.
    ///
    /// A request naming an unknown task is answered `400` by the front end; one with no
    /// name, no matching prefix and no default stage goes to the main entry.
    pub fn route_tasks(
        &mut self,
        ctx: &zmq::Context,
        router: TaskRouter,
        stages: &[(String, String)],
    ) -> Result<()> {
        let first = self.stages.first().cloned();
        let mut routed = Vec::new();
        for stage in router.stages() {
            if first.as_deref() == Some(stage) {
                continue;
            }
            let Some((_, endpoint)) = stages.iter().find(|(name, _)| name == stage) else {
                return Err(Error::Config(format!(
                    "the task table names stage {stage:?}, which has no proxy endpoint"
                )));
            };
            let socket = sockets::stage_sender(ctx)?;
            sockets::connect(&socket, endpoint)?;
            routed.push(RoutedEntry {
                stage: stage.to_string(),
                socket,
                endpoint: endpoint.clone(),
            });
        }
        self.routed = routed;
        self.tasks = Some(router);
        Ok(())
    }

    /// The entry for a request with head `head`, or why the task table refuses it.
    pub(crate) fn entry_for(&self, head: &[u8]) -> std::result::Result<EntryIndex, TaskRefusal> {
        let Some(router) = &self.tasks else {
            return Ok(EntryIndex::Main);
        };
        match router.stage_for_head(head) {
            Ok(stage) => Ok(self
                .routed
                .iter()
                .position(|r| r.stage == stage)
                .map_or(EntryIndex::Main, EntryIndex::Routed)),
            Err(TaskRefusal::NoRule { .. }) => Ok(EntryIndex::Main),
            Err(refusal) => Err(refusal),
        }
    }

    /// The socket of an entry.
    pub(crate) fn entry_socket(&self, index: EntryIndex) -> &zmq::Socket {
        match index {
            EntryIndex::Main => &self.entry,
            EntryIndex::Routed(i) => self.routed.get(i).map_or(&self.entry, |r| &r.socket),
        }
    }

    /// Every entry with its endpoint: the main one first, then the routed ones.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&zmq::Socket, &str)> {
        std::iter::once((&self.entry, self.entry_endpoint.as_str()))
            .chain(self.routed.iter().map(|r| (&r.socket, r.endpoint.as_str())))
    }

    /// Holds back (`on`) or lets go (`off`, flushing what waits) the flush of the
    /// requests sent into the entries (`ZMQ_DEFER_FLUSH`, vendor/zeromq-src's PATCHES.md):
    /// while held, the requests of one turn of the front end's loop reach a proxy
    /// together at [`flush_entries`](Self::flush_entries), one wake-up for all of them
    /// instead of one for each the proxy was quick enough to sleep between.
    pub(crate) fn defer_entry_flushes(&self, on: bool) -> Result<()> {
        for (socket, _) in self.entries() {
            socket
                .set_defer_flush(on)
                .map_err(|e| Error::zmq("holding back the entry's flushes", e))?;
        }
        Ok(())
    }

    /// Makes every request sent into the entries since the last call visible to the
    /// proxies; the front end's loop calls it before each wait. A failure (only when the
    /// context is ending) is logged: a stopping pipeline needs no flush.
    pub(crate) fn flush_entries(&self) {
        for (socket, _) in self.entries() {
            if let Err(e) = socket.flush_deferred() {
                log::debug!("front end: flushing an entry: {e}");
            }
        }
    }

    pub(crate) fn connect_entry(&mut self, endpoint: &str) -> Result<()> {
        sockets::connect(&self.entry, endpoint)?;
        self.entry_endpoint = endpoint.to_string();
        Ok(())
    }

    pub(crate) fn create(ctx: &zmq::Context, loopback: &str, interrupt: &str) -> Result<Self> {
        let entry = sockets::stage_sender(ctx)?;
        let loopback_socket = sockets::socket(ctx, zmq::PULL)?;
        let interrupt_socket = sockets::socket(ctx, zmq::PUB)?;
        sockets::bind(&loopback_socket, loopback)?;
        sockets::bind(&interrupt_socket, interrupt)?;
        Ok(FrontSockets {
            loopback_endpoint: sockets::last_endpoint(&loopback_socket)?,
            interrupt_endpoint: sockets::last_endpoint(&interrupt_socket)?,
            entry_endpoint: String::new(),
            stages: Vec::new(),
            tasks: None,
            routed: Vec::new(),
            front_end: 0,
            entry,
            loopback: loopback_socket,
            interrupt: interrupt_socket,
        })
    }

    /// Sends one raw request and waits (up to 10 s) for its answer: the simplest client,
    /// for examples and tests. A failure comes back as `Err` with its status and detail.
    pub fn ask(&self, request: &[u8]) -> std::result::Result<Vec<u8>, AskError> {
        static REQUESTS: AtomicU64 = AtomicU64::new(1);
        let id = REQUESTS.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope::new(id, 0, 0, Protocol::Raw)
            .at_front_end(self.front_end)
            .encode();
        let frames = [crate::pipeline::envelope::lead_frame(&envelope, request)];
        sockets::send_frames(&self.entry, frames, 0).map_err(AskError::Zmq)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut streamed = Vec::new();
        while Instant::now() < deadline {
            if self
                .loopback
                .poll(zmq::POLLIN, 100)
                .map_err(AskError::Zmq)?
                == 0
            {
                continue;
            }
            let frames = sockets::recv_frames(&self.loopback, 0).map_err(AskError::Zmq)?;
            match loopback::decode(frames) {
                Ok((e, answer)) if e.request_id == id => {
                    return match answer {
                        Answer::Response(bytes) => Ok(bytes.to_vec()),
                        Answer::Failure(f) => Err(AskError::Failed(f)),
                        Answer::StreamStart(bytes) | Answer::StreamPiece(bytes) => {
                            streamed.extend_from_slice(&bytes);
                            continue;
                        }
                        Answer::Progress { .. }
                        | Answer::SelfTest(_)
                        | Answer::Publish(_)
                        | Answer::Notify(_) => continue,
                        Answer::Hold { answer, .. } => Ok(answer.to_vec()),
                        Answer::StreamEnd(bytes) => {
                            streamed.extend_from_slice(&bytes);
                            Ok(streamed)
                        }
                        Answer::StreamAbort => Err(AskError::Failed(Failure::new(
                            FailureKind::WorkerPanicked,
                            "the stage stopped its answer midway",
                        ))),
                        Answer::Later { .. } => Err(AskError::Failed(Failure::new(
                            FailureKind::WorkerPanicked,
                            "a stage asked to answer later, which needs the front end's job store",
                        ))),
                    }
                }
                _ => continue,
            }
        }
        Err(AskError::TimedOut)
    }
}

/// Why [`FrontSockets::ask`] got no response.
#[derive(Debug)]
pub enum AskError {
    /// A socket call failed.
    Zmq(zmq::Error),
    /// The pipeline answered with a failure.
    Failed(crate::pipeline::loopback::Failure),
    /// No answer within 10 seconds.
    TimedOut,
}
