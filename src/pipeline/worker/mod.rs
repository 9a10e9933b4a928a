//! Workers: a loop around a user function, run by a pool of threads per stage.
//!
//! Each worker thread owns a DEALER socket connected to its stage's proxy. It announces
//! itself with `READY` and a credit (how many jobs it may hold, [`DEFAULT_PREFETCH`]
//! unless configured), takes its jobs one at a time, runs the user's [`Work`] on each and
//! either forwards frames to the next stage's proxy (DEALER) or answers the front end through the
//! loopback (PUSH). A panic in user code costs that one request a 500; the worker lives on.
//!
//! Workers subscribe to the front end's interrupts: a job whose client has gone or whose
//! deadline has passed is skipped, and long work can poll [`Job::interrupted`].
//!
//! While a worker is busy its own socket is silent, so each pool runs one small heartbeat
//! thread that tells the proxy which of its workers are busy and alive (see
//! [`crate::pipeline::proxy`]). If the process dies, both stop, and the proxy answers the job.
//! The same thread watches for long jobs: when one has run for
//! [`WorkerConfig::rescue_after`], it takes the jobs queued behind it out of that
//! worker's socket and hands them back to the proxy, which gives them to other workers.
//!
//! A stage whose jobs mostly wait on the network can instead run concurrent workers
//! ([`ConcurrentWork`], [`WorkerPool::spawn_concurrent`]): each thread holds many jobs
//! at once, up to its share of the stage's calls, and drives them with non-blocking
//! I/O; its credit at the proxy is four times that, the jobs beyond its calls waiting in
//! its socket.
//!
//! A third thread per pool watches the connection to the proxy and answers the front
//! end's censuses with the jobs the pool's workers run (see [`crate::pipeline::census`]), so that
//! when a proxy dies the requests it held are answered 503 at once and those still
//! running are not.

mod concurrent;
mod interrupts;
mod pool;
mod shared;
mod worker_loop;

pub use concurrent::{answer_frame, ConcurrentWork, ANSWER_ROOM, INTERRUPT_TICK};
pub(crate) use interrupts::InterruptWatch;
pub use pool::{PoolCounts, PoolMetrics, WorkerPool};

use crate::http::Response;
use crate::pipeline::channel::{Hold, HoldMode, Item};
use crate::pipeline::envelope::{lead_frame, Envelope, Protocol, ENVELOPE_LEN};
use crate::pipeline::front_ends::{FrontEndLink, Loopbacks};
use crate::pipeline::loopback::{
    hold_frames, notify_frames, progress_frames, publish_frames, render, response_frames, Failure,
};
use crate::pipeline::stream::{ResponseStream, StreamError};
use std::cell::Cell;
use std::time::Duration;

/// Jobs a worker may hold at once unless configured otherwise (see
/// [`WorkerConfig::prefetch`]).
///
/// 32: with cheap jobs, a proxy that never runs out of credit never holds a job back,
/// so it wakes only for jobs and every 16th completion, not for each READY (on 2 cores,
/// `wrk -c64` on the demo: 1.0 context switches per request instead of 1.7 with 4).
/// What bounds how long a job can wait behind others in one worker's queue is not the
/// credit but the proxy's choice of the least loaded worker and the hand-back of jobs
/// stuck behind a long one ([`WorkerConfig::rescue_after`]).
pub const DEFAULT_PREFETCH: u32 = 32;

/// One request as a stage sees it.
///
/// On the wire a job's first frame shares its ZeroMQ frame with the envelope (the lead
/// frame, see [`crate::pipeline::envelope`]); [`Job::frame`] hides that, so frame 0 is the
/// request's first frame as the previous stage or the front end sent it.
pub struct Job<'a> {
    envelope: Envelope,
    /// The envelope as it arrived, for the messages this job sends.
    encoded: [u8; ENVELOPE_LEN],
    /// The lead frame (envelope, then frame 0), then the other frames; empty once taken.
    frames: Vec<zmq::Message>,
    /// Whether [`Job::forward_frames`] handed out the lead frame.
    lead_given: bool,
    /// Whether [`Job::reply`] made a response's whole lead frame.
    reply_made: Cell<bool>,
    watch: &'a InterruptWatch,
    /// The front ends' loopbacks, for streamed answers and progress reports.
    loopback: &'a Loopbacks,
}

impl Job<'_> {
    /// The request's routing and protocol facts.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// How many frames the job has: the request itself and whatever earlier stages added
    /// (at least 1 until they are taken: a job forwarded with no frames arrives with one
    /// empty frame).
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The frames after the envelope, in order: the request itself and whatever earlier
    /// stages added.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.frames.len()).map(|index| self.frame(index).unwrap_or_default())
    }

    /// Frame `index` (after the envelope), if there is one.
    pub fn frame(&self, index: usize) -> Option<&[u8]> {
        let frame = self.frames.get(index)?;
        Some(if index == 0 {
            frame.get(ENVELOPE_LEN..).unwrap_or_default()
        } else {
            &frame[..]
        })
    }

    /// Takes the frames, e.g. to forward some of them, changed or not. Frame 0 is copied
    /// out of the lead frame it shares with the envelope; the others move without
    /// copying. To forward frames unchanged without any copy, use
    /// [`forward_frames`](Self::forward_frames).
    pub fn take_frames(&mut self) -> Vec<zmq::Message> {
        let mut frames = std::mem::take(&mut self.frames);
        if let Some(lead) = frames.first_mut() {
            *lead = zmq::Message::from(lead.get(ENVELOPE_LEN..).unwrap_or_default());
        }
        frames
    }

    /// Takes the first `keep` frames (all of them if there are fewer) to send them on
    /// unchanged with [`Outcome::Forward`] or [`Outcome::ForwardTo`], followed by any
    /// frames you push after them. Nothing is copied: the first of them is the lead
    /// frame, which still holds the envelope before frame 0, and the worker sends it as it
    /// is. Do not change that frame; read frames with [`frame`](Self::frame) before
    /// taking them.
    ///
    /// With `keep` 0 nothing is taken, and the first frame you forward is copied behind
    /// the envelope as usual.
    pub fn forward_frames(&mut self, keep: usize) -> Vec<zmq::Message> {
        if keep == 0 {
            return Vec::new();
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.truncate(keep);
        self.lead_given = !frames.is_empty();
        frames
    }

    /// Forwards the job to the next stage with `first` as its only frame, copied once,
    /// straight behind the envelope in the lead frame (as [`respond`](Self::respond)
    /// does for an answer): [`Outcome::forward`] makes a frame of `first` and then
    /// copies it behind the envelope. Read the frames you need before: the job's frames
    /// are dropped (their vector carries the new one).
    pub fn forward(&mut self, first: &[u8]) -> Outcome {
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        frames.push(lead_frame(&self.encoded, first));
        self.lead_given = true;
        Outcome::Forward(frames)
    }

    /// The frames to send for a forwarded job: the lead frame given out by
    /// [`forward_frames`](Self::forward_frames) goes as it is; otherwise the envelope is
    /// put before the first frame (an empty one if there is none).
    fn lead_frames(&self, mut frames: Vec<zmq::Message>) -> Vec<zmq::Message> {
        let given = self.lead_given
            && frames
                .first()
                .is_some_and(|lead| lead.get(..ENVELOPE_LEN) == Some(&self.encoded[..]));
        if !given {
            match frames.first_mut() {
                Some(first) => *first = lead_frame(&self.encoded, first),
                None => frames.push(lead_frame(&self.encoded, b"")),
            }
        }
        frames
    }

    /// Answers the client with `response`, written in the protocol the request came in:
    /// HTTP with the request's version, keep-alive and HEAD facts; a netstring holding
    /// the body; or the bare body for the raw protocol.
    pub fn reply(&self, response: &Response) -> Outcome {
        // The response goes whole in the loopback message's one frame, made here at
        // once rather than copied there later.
        let bytes = render(self.envelope.protocol, response);
        let [frame] = response_frames(&self.encoded, &bytes);
        self.reply_made.set(true);
        Outcome::Respond(frame)
    }

    /// Answers the client with `bytes`, already in the client's protocol (as
    /// [`Outcome::respond`]), copied once, straight into the loopback message's one
    /// frame: for a stage that writes its answers itself into a buffer it reuses.
    pub fn respond(&self, bytes: &[u8]) -> Outcome {
        let [frame] = response_frames(&self.encoded, bytes);
        self.reply_made.set(true);
        Outcome::Respond(frame)
    }

    /// Whether the work should stop: the client has gone, the deadline has passed, or the
    /// worker is shutting down. Cheap enough to call every few microseconds.
    pub fn interrupted(&self) -> bool {
        self.watch.is_interrupted(&self.envelope)
    }

    /// Starts answering in pieces: sends `response`'s head now (its body, if any, as the
    /// first piece); see [`crate::pipeline::stream`]. Once the stream is finished (or dropped,
    /// which cuts the answer short), return [`Outcome::Abandon`]: the answer is sent.
    pub fn stream(
        &self,
        response: &Response,
    ) -> std::result::Result<ResponseStream<'_>, StreamError> {
        ResponseStream::start(self.loopback, self.watch, self.envelope, response, None)
    }

    /// Starts answering with a body of `length` bytes sent in pieces as they are, with
    /// `Content-Length` rather than the chunked coding (a file, a blob of known size);
    /// the stream must get exactly `length` bytes (see [`crate::pipeline::stream`]).
    pub fn stream_sized(
        &self,
        response: &Response,
        length: u64,
    ) -> std::result::Result<ResponseStream<'_>, StreamError> {
        ResponseStream::start(
            self.loopback,
            self.watch,
            self.envelope,
            response,
            Some(length),
        )
    }

    /// Reports how far the work is: `fraction` from 0 to 1 and a short message. For an
    /// asynchronous job it is stored with the job, shown in its status and sent to the
    /// job's event streams; for a request a client waits on, it is dropped.
    pub fn progress(&self, fraction: f32, message: &str) {
        if !self.envelope.job {
            return;
        }
        let frames = progress_frames(&self.encoded, fraction, message);
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::debug!(
                "request {}: progress not sent: {e}",
                self.envelope.request_id
            );
        }
    }
}

impl Job<'_> {
    /// Asks the front end to hold the client's connection on `hold`'s channels (see
    /// [`crate::pipeline::channel`]); return the [`Outcome`] this gives. Only an HTTP
    /// request a client waits on can be held: a netstring or raw request, or an
    /// asynchronous job, is answered at once with the hold's own answer.
    pub fn hold(&self, hold: &Hold) -> Outcome {
        match hold_message(&self.encoded, &self.envelope, hold) {
            Ok(frames) => {
                if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
                    log::warn!(
                        "request {}: the hold was not sent: {e}",
                        self.envelope.request_id
                    );
                }
                Outcome::Abandon
            }
            Err(answer) => self.reply(&answer),
        }
    }

    /// Asks that this asynchronous job's end (its status document, as `GET /jobs/{id}`
    /// shows it) be published on `channel` too, once the job has ended. Nothing for a
    /// request that is not an asynchronous job.
    pub fn notify(&self, channel: &str) {
        if !self.envelope.job {
            return;
        }
        let frames = notify_frames(&self.encoded, channel);
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::warn!(
                "request {}: a notify was not sent: {e}",
                self.envelope.request_id
            );
        }
    }

    /// Publishes `item` on its channel: the front end puts it on the bus (or, without
    /// one, hands it to its own holds). It returns once the message is on its way, not
    /// once delivered.
    pub fn publish(&self, item: &Item) {
        let frames = publish_frames(&self.encoded, item);
        if let Err(e) = self.loopback.send(frames, zmq::DONTWAIT) {
            log::warn!(
                "request {}: a publish was not sent: {e}",
                self.envelope.request_id
            );
        }
    }
}

/// What a stage function decides for a job.
#[derive(Debug)]
pub enum Outcome {
    /// Send these frames (after the envelope) to the next stage.
    Forward(Vec<zmq::Message>),
    /// Send these frames to the stage with this name: any stage of the pipeline, an
    /// earlier one included, so actions can take different paths and work can cycle.
    ForwardTo(String, Vec<zmq::Message>),
    /// Answer the client with these bytes, already in the client's protocol.
    Respond(zmq::Message),
    /// Answer the client with a failure the front end renders.
    Fail(Failure),
    /// Send nothing: the job was interrupted and nobody waits for it.
    Abandon,
    /// Answer later: the front end stores the request (these two frames: its HTTP head
    /// and body) as an asynchronous job and answers the client `202 Accepted`; the job
    /// then runs through the pipeline again, with [`Envelope::job`] set.
    Later(zmq::Message, zmq::Message),
    /// Hold the client's connection on channels (see [`Job::hold`]); for a
    /// [`ConcurrentWork`], whose outcomes come without their job.
    Hold(Box<Hold>),
}

impl Outcome {
    /// Forwards frames to the next stage.
    ///
    /// ```
    /// let outcome = prime_server::Outcome::forward([7u64.to_le_bytes().to_vec()]);
    /// assert!(matches!(outcome, prime_server::Outcome::Forward(frames) if frames.len() == 1));
    /// ```
    pub fn forward<I, T>(frames: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<zmq::Message>,
    {
        Outcome::Forward(frames.into_iter().map(Into::into).collect())
    }

    /// Answers the client with `bytes`.
    pub fn respond(bytes: impl Into<zmq::Message>) -> Self {
        Outcome::Respond(bytes.into())
    }
}

/// A stage's work. Any `FnMut(&mut Job) -> Outcome` closure or function is one; implement
/// the trait on a struct to keep per-worker state, to clean up after each job, or to
/// advertise a heartbeat payload that a proxy's choose function can read.
///
/// Each worker thread gets its own clone, so state needs no locking.
pub trait Work: Send + 'static {
    /// Handles one job.
    fn work(&mut self, job: &mut Job<'_>) -> Outcome;

    /// Runs after every job, whatever its outcome (e.g. to trim a cache).
    fn cleanup(&mut self) {}

    /// The payload sent with each readiness message.
    fn heartbeat(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Checks what the stage depends on, for the front end's self-test (see
    /// [`crate::pipeline::selftest`]): `Err` with a sentence a person can act on (e.g. "the
    /// backend http://127.0.0.1:9 refused the connection"). Runs on the worker's
    /// thread instead of a job, so it should take well under the self-test's deadline
    /// (2 s by default). Passes by default.
    fn selftest(&mut self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<F> Work for F
where
    F: FnMut(&mut Job<'_>) -> Outcome + Send + 'static,
{
    fn work(&mut self, job: &mut Job<'_>) -> Outcome {
        self(job)
    }
}

/// Where a worker pool connects.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The stage proxy's downstream endpoint.
    pub upstream: String,
    /// The next stage proxy's upstream endpoint, if there is a next stage.
    pub downstream: Option<String>,
    /// The front ends: each one's loopback and interrupt publisher, in the order every
    /// piece of the deployment lists them (an answer goes to the one its envelope names,
    /// see [`crate::pipeline::front_ends`]). [`WorkerConfig::new`] gives one;
    /// [`WorkerConfig::front_end`] adds more.
    pub front_ends: Vec<FrontEndLink>,
    /// How often idle workers (and the pool, for busy ones) tell the proxy they live.
    pub heartbeat_interval: Duration,
    /// How many jobs each worker may hold at once (its credit at the proxy). With more
    /// than one, a worker finds its next job already waiting and saves two wake-ups per
    /// job, which matters when jobs are cheap; jobs that wait behind a long one are
    /// handed back to the proxy after [`rescue_after`](WorkerConfig::rescue_after), so
    /// uneven work still spreads over the pool, and the proxy gives each job to the idle
    /// worker holding the fewest. The default is [`DEFAULT_PREFETCH`] (32); 1 never
    /// holds a job that another worker could start.
    pub prefetch: u32,
    /// How long a worker may run one job before the jobs waiting behind it are handed
    /// back to the proxy for other workers (only with `prefetch` above 1). The pool's
    /// heartbeat thread checks this often, so it wakes every `rescue_after`.
    pub rescue_after: Duration,
    /// Stages reachable by name with [`Outcome::ForwardTo`]: (name, that stage proxy's
    /// upstream endpoint).
    pub routes: Vec<(String, String)>,
}

impl WorkerConfig {
    /// A configuration with one front end (whose loopback and interrupt publisher these
    /// are) and the default heartbeat interval (250 ms).
    pub fn new(
        upstream: impl Into<String>,
        downstream: Option<String>,
        loopback: impl Into<String>,
        interrupt: impl Into<String>,
    ) -> Self {
        WorkerConfig {
            upstream: upstream.into(),
            downstream,
            front_ends: vec![FrontEndLink::new(loopback, interrupt)],
            heartbeat_interval: Duration::from_millis(250),
            prefetch: DEFAULT_PREFETCH,
            rescue_after: Duration::from_millis(2),
            routes: Vec::new(),
        }
    }
}

impl WorkerConfig {
    /// Adds a front end: the next number after those already listed.
    pub fn front_end(mut self, loopback: impl Into<String>, interrupt: impl Into<String>) -> Self {
        self.front_ends.push(FrontEndLink::new(loopback, interrupt));
        self
    }

    /// The front ends' loopbacks, in order.
    pub(crate) fn loopbacks(&self) -> impl Iterator<Item = &str> {
        self.front_ends.iter().map(|f| f.loopback.as_str())
    }

    /// The front ends' interrupt publishers.
    pub(crate) fn interrupts(&self) -> impl Iterator<Item = &str> {
        self.front_ends.iter().map(|f| f.interrupt.as_str())
    }
}

/// The loopback message that holds a request on `hold`'s channels (see [`Job::hold`]),
/// or, for a request that cannot be held (not HTTP, or an asynchronous job), the
/// hold's own answer to send at once.
pub(crate) fn hold_message(
    encoded: &[u8; ENVELOPE_LEN],
    envelope: &Envelope,
    hold: &Hold,
) -> Result<[zmq::Message; 3], Response> {
    let answer = hold.answer_or_default();
    let (minor_version, keep_alive, head) = match envelope.protocol {
        Protocol::Http {
            minor_version,
            keep_alive,
            head,
        } if !envelope.job => (minor_version, keep_alive, head),
        _ => return Err(answer),
    };
    let bytes = match hold.mode {
        HoldMode::Response => render(envelope.protocol, &answer),
        HoldMode::Stream => {
            let mut bytes = answer.stream_head(minor_version, keep_alive);
            if !head {
                bytes.extend_from_slice(&Response::chunk(minor_version, &answer.body));
            }
            bytes
        }
    };
    Ok(hold_frames(encoded, hold, bytes))
}
