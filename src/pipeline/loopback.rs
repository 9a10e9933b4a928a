//! What travels on the loopback, from any stage back to the front end: a finished
//! response in the client's protocol, or a typed failure the front end renders itself.
//!
//! Every message opens with a lead frame (see [`crate::pipeline::envelope`]): the request's
//! envelope followed by a one-byte tag saying what the message is. Below, `envelope‖R`
//! is that lead frame.
//!
//! `[envelope‖R‖response bytes]`, the whole answer in its one lead frame (the most
//! common message of all, so it costs one frame), or `[envelope‖F, failure]`, where a
//! failure is its status (u16 LE), its kind (one byte) and a UTF-8 detail. The proxy and
//! the worker loop only ever produce failures, so neither formats HTTP or netstrings.
//!
//! A third kind, `[envelope‖L, request head, request body]`, says a stage wants the
//! request answered later: the front end stores it as an asynchronous job and answers
//! the client `202 Accepted` (see `jobs`).
//!
//! A streamed answer is several messages for one request: `[envelope‖S, head]`, any
//! number of `[envelope‖P, piece]`, then `[envelope‖E, last bytes]` (or
//! `[envelope‖X, ""]` when the stage gave up mid-stream: the front end closes the
//! connection after what it has written, so the client sees the answer cut short).
//! Every part is already in the client's protocol (chunked for HTTP/1.1), and the front
//! end keeps the answers of later pipelined requests waiting until the end.
//!
//! `[envelope‖G, progress]` reports a job's progress: a fraction (f32 LE) and a UTF-8
//! message. The front end hands it to the job store; it does not end the request.
//!
//! `[envelope‖H, hold, answer]` asks the front end to hold the request on channels: the
//! [`Hold`] in JSON, then the stage's own answer in the client's protocol (the whole
//! response for a long-poll, sent at its timeout; the head and first body bytes for a
//! stream, sent at once). `[envelope‖B, item]` publishes a message (an [`Item`] in
//! GRIP's JSON) from a stage; it answers nothing. `[envelope‖N, channel]` asks that an
//! asynchronous job's end be published on the channel too.
//!
//! `[envelope‖T, report]` is one worker's answer to a self-test probe: a
//! [`StageReport`] in JSON (see [`crate::pipeline::selftest`]). A probe may get several, one per
//! stage it reaches.

use crate::http::Response;
use crate::pipeline::channel::{Hold, Item};
use crate::pipeline::envelope::{lead_frame, DecodeError, Envelope, Protocol, ENVELOPE_LEN};
use crate::pipeline::selftest::StageReport;
use std::fmt;
use std::ops::Deref;

const TAG_RESPONSE: u8 = b'R';
const TAG_FAILURE: u8 = b'F';
const TAG_LATER: u8 = b'L';
const TAG_STREAM_START: u8 = b'S';
const TAG_STREAM_PIECE: u8 = b'P';
const TAG_STREAM_END: u8 = b'E';
const TAG_STREAM_ABORT: u8 = b'X';
const TAG_PROGRESS: u8 = b'G';
const TAG_SELFTEST: u8 = b'T';
const TAG_HOLD: u8 = b'H';
const TAG_PUBLISH: u8 = b'B';
const TAG_NOTIFY: u8 = b'N';

/// What went wrong with a request inside the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The stage function panicked (500).
    WorkerPanicked,
    /// The proxy's queue of waiting jobs was full (503).
    QueueFull,
    /// The worker holding the job stopped heartbeating (503).
    WorkerDied,
    /// The next stage could not take the job (503).
    NextStageUnavailable,
    /// The deadline passed before the answer (504).
    DeadlinePassed,
    /// A stage refused the request with a status of its own choosing.
    Rejected,
    /// The piece holding the request is shutting down (503).
    ShuttingDown,
    /// The request was lost with a stage's proxy, which died holding it (503; see
    /// [`crate::pipeline::census`]).
    ProxyLost,
    /// The stage has had no worker for longer than its proxy waits for one (503; see
    /// [`crate::pipeline::proxy::ProxyConfig::no_worker_grace`]).
    NoWorkers,
}

impl FailureKind {
    fn code(self) -> u8 {
        match self {
            FailureKind::WorkerPanicked => 1,
            FailureKind::QueueFull => 2,
            FailureKind::WorkerDied => 3,
            FailureKind::NextStageUnavailable => 4,
            FailureKind::DeadlinePassed => 5,
            FailureKind::Rejected => 6,
            FailureKind::ShuttingDown => 7,
            FailureKind::ProxyLost => 8,
            FailureKind::NoWorkers => 9,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => FailureKind::WorkerPanicked,
            2 => FailureKind::QueueFull,
            3 => FailureKind::WorkerDied,
            4 => FailureKind::NextStageUnavailable,
            5 => FailureKind::DeadlinePassed,
            6 => FailureKind::Rejected,
            7 => FailureKind::ShuttingDown,
            8 => FailureKind::ProxyLost,
            9 => FailureKind::NoWorkers,
            _ => return None,
        })
    }

    /// The HTTP status that fits this kind of failure.
    pub fn default_status(self) -> u16 {
        match self {
            FailureKind::WorkerPanicked => 500,
            FailureKind::QueueFull
            | FailureKind::WorkerDied
            | FailureKind::NextStageUnavailable
            | FailureKind::ShuttingDown
            | FailureKind::ProxyLost
            | FailureKind::NoWorkers => 503,
            FailureKind::DeadlinePassed => 504,
            FailureKind::Rejected => 400,
        }
    }
}

/// A typed failure: the front end turns it into a response in the client's protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub kind: FailureKind,
    /// The status to answer with.
    pub status: u16,
    /// A sentence for the client and the log.
    pub detail: String,
}

/// The sentence a `504` gives when a time limit fired, naming the limit and its length
/// in seconds, e.g. `the request timeout (30 s) passed`, so a client (and an operator)
/// can tell which of several limits to raise.
///
/// ```
/// use prime_server::pipeline::loopback::limit_passed;
/// use std::time::Duration;
/// assert_eq!(limit_passed("gateway timeout", Duration::from_secs(120)), "the gateway timeout (120 s) passed");
/// assert_eq!(limit_passed("request timeout", Duration::from_millis(1500)), "the request timeout (1.5 s) passed");
/// ```
pub fn limit_passed(limit: &str, length: std::time::Duration) -> String {
    format!("the {limit} ({} s) passed", length.as_secs_f64())
}

impl Failure {
    /// A `504` ([`FailureKind::DeadlinePassed`]) saying which limit fired
    /// ([`limit_passed`]).
    pub fn deadline(limit: &str, length: std::time::Duration) -> Self {
        Failure::new(FailureKind::DeadlinePassed, limit_passed(limit, length))
    }

    /// A failure with the status that fits its kind.
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            status: kind.default_status(),
            detail: detail.into(),
        }
    }

    /// A stage's own refusal with the given status (e.g. 400 for a bad parameter).
    pub fn rejected(status: u16, detail: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Rejected,
            status,
            detail: detail.into(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.detail.len());
        out.extend_from_slice(&self.status.to_le_bytes());
        out.push(self.kind.code());
        out.extend_from_slice(self.detail.as_bytes());
        out
    }

    fn decode(frame: &[u8]) -> Option<Failure> {
        if frame.len() < 3 {
            return None;
        }
        Some(Failure {
            status: u16::from_le_bytes([frame[0], frame[1]]),
            kind: FailureKind::from_code(frame[2])?,
            detail: String::from_utf8_lossy(&frame[3..]).into_owned(),
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.detail, self.kind)
    }
}

/// Bytes received at an offset in a frame (a response's bytes after its lead frame's
/// envelope and tag), handed on without a copy; it dereferences to the bytes. Its
/// length is kept, so asking for it costs no call into libzmq.
#[derive(Debug)]
pub struct Payload {
    frame: zmq::Message,
    start: usize,
    len: usize,
}

impl Payload {
    /// The bytes of `frame` from `start` on (all of them if `start` is past the end).
    pub fn new(frame: zmq::Message, start: usize) -> Self {
        let size = frame.len();
        Self::sized(frame, size, start)
    }

    /// [`new`](Self::new) for a frame of `size` bytes, already read.
    fn sized(frame: zmq::Message, size: usize, start: usize) -> Self {
        let start = start.min(size);
        Payload {
            frame,
            start,
            len: size - start,
        }
    }

    /// How many bytes there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes as a message of their own: the frame itself when the payload is all of
    /// it, a copy otherwise.
    pub fn into_message(self) -> zmq::Message {
        if self.start == 0 {
            self.frame
        } else {
            zmq::Message::from(&self.frame[self.start..])
        }
    }
}

impl From<zmq::Message> for Payload {
    fn from(frame: zmq::Message) -> Self {
        Payload::new(frame, 0)
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.frame[self.start..]
    }
}

/// One answer for the front end.
#[derive(Debug)]
pub enum Answer {
    /// Bytes to write to the client as they are.
    Response(Payload),
    /// A failure the front end renders in the client's protocol.
    Failure(Failure),
    /// The head of a streamed answer (status line and header fields, in the client's
    /// protocol).
    StreamStart(zmq::Message),
    /// A piece of a streamed answer, already framed for the client.
    StreamPiece(zmq::Message),
    /// The last bytes of a streamed answer (e.g. the last chunk).
    StreamEnd(zmq::Message),
    /// The stage stopped mid-stream: close the connection after what was sent.
    StreamAbort,
    /// A job's progress: how far (0 to 1) and a message.
    Progress {
        /// The fraction done, from 0 to 1.
        fraction: f32,
        /// What is being done.
        message: String,
    },
    /// A worker's report on a self-test probe.
    SelfTest(StageReport),
    /// Hold the request on channels (see [`crate::pipeline::channel`]).
    Hold {
        /// The channels, the mode, the timeout and the keep-alive.
        hold: Hold,
        /// The stage's own answer in the client's protocol: the whole response for a
        /// long-poll, the head and first body bytes for a stream.
        answer: zmq::Message,
    },
    /// A message a stage published; it answers nothing.
    Publish(Item),
    /// Publish the job's end on this channel too (asynchronous jobs only).
    Notify(String),
    /// Make the request an asynchronous job: its HTTP head and body, as received.
    Later {
        /// The request head.
        head: zmq::Message,
        /// The request body.
        body: zmq::Message,
    },
}

/// Why a loopback message could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Not two frames (one for [`Answer::Response`], three for [`Answer::Later`]).
    FrameCount(usize),
    /// The envelope in the lead frame is bad.
    Envelope(DecodeError),
    /// The tag or failure frame is malformed.
    Malformed,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::FrameCount(n) => {
                write!(f, "loopback message of {n} frames, not 1 to 3")
            }
            AnswerError::Envelope(e) => write!(f, "loopback envelope: {e}"),
            AnswerError::Malformed => write!(f, "loopback answer is malformed"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// The lead frame of a loopback message: the envelope, then the tag.
fn tagged(envelope: &[u8; ENVELOPE_LEN], tag: u8) -> zmq::Message {
    lead_frame(envelope, &[tag])
}

/// The frame of a response answer (the envelope, the tag and the bytes in one);
/// `envelope` is the encoded envelope of the request.
pub fn response_frames(envelope: &[u8; ENVELOPE_LEN], response: &[u8]) -> [zmq::Message; 1] {
    [crate::pipeline::envelope::lead_frame_of(
        envelope,
        &[&[TAG_RESPONSE], response],
    )]
}

/// Makes `frame`, a response's bytes behind [`RESPONSE_START`] bytes of room, the frame
/// of a response answer in place: the room takes the envelope and the tag (no copy of
/// the bytes, as [`response_frames`] makes). False, and nothing written, when `frame`
/// is shorter than the room.
pub fn lead_response_in_place(envelope: &[u8; ENVELOPE_LEN], frame: &mut [u8]) -> bool {
    match frame.get_mut(..RESPONSE_START) {
        Some(room) => {
            room[..ENVELOPE_LEN].copy_from_slice(envelope);
            room[ENVELOPE_LEN] = TAG_RESPONSE;
            true
        }
        None => false,
    }
}

/// Where a response's bytes start in its lead frame: after the envelope and the tag.
pub const RESPONSE_START: usize = ENVELOPE_LEN + 1;

/// Whether `frame` is a response's lead frame for the request whose encoded envelope is
/// `envelope`, as [`response_frames`] makes it.
pub fn is_response_frame(frame: &[u8], envelope: &[u8; ENVELOPE_LEN]) -> bool {
    frame.get(..ENVELOPE_LEN) == Some(&envelope[..])
        && frame.get(ENVELOPE_LEN) == Some(&TAG_RESPONSE)
}

/// The frames of a failure answer; `envelope` is the encoded envelope of the request.
pub fn failure_frames(envelope: &[u8; ENVELOPE_LEN], failure: &Failure) -> [zmq::Message; 2] {
    [tagged(envelope, TAG_FAILURE), failure.encode().into()]
}

/// The frames that ask the front end to answer later: the request's head and body go
/// back to it, to be stored as an asynchronous job.
pub fn later_frames(
    envelope: &[u8; ENVELOPE_LEN],
    head: zmq::Message,
    body: zmq::Message,
) -> [zmq::Message; 3] {
    [tagged(envelope, TAG_LATER), head, body]
}

/// The frames that ask the front end to hold the request: `answer` is the stage's own
/// answer, already in the client's protocol.
pub fn hold_frames(
    envelope: &[u8; ENVELOPE_LEN],
    hold: &Hold,
    answer: Vec<u8>,
) -> [zmq::Message; 3] {
    let spec = serde_json::to_vec(hold).unwrap_or_default();
    [tagged(envelope, TAG_HOLD), spec.into(), answer.into()]
}

/// The frames of a stage's publish.
pub fn publish_frames(envelope: &[u8; ENVELOPE_LEN], item: &Item) -> [zmq::Message; 2] {
    [tagged(envelope, TAG_PUBLISH), item.to_json().into()]
}

/// The frames that ask for a job's end to be published on `channel`.
pub fn notify_frames(envelope: &[u8; ENVELOPE_LEN], channel: &str) -> [zmq::Message; 2] {
    [tagged(envelope, TAG_NOTIFY), channel.as_bytes().into()]
}

/// What kind of streamed part a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamPart {
    /// The head.
    Start,
    /// A piece of the body.
    Piece,
    /// The last bytes.
    End,
    /// The stage gave up mid-stream.
    Abort,
}

/// The frames of one part of a streamed answer.
pub fn stream_frames(
    envelope: &[u8; ENVELOPE_LEN],
    part: StreamPart,
    bytes: zmq::Message,
) -> [zmq::Message; 2] {
    let tag = match part {
        StreamPart::Start => TAG_STREAM_START,
        StreamPart::Piece => TAG_STREAM_PIECE,
        StreamPart::End => TAG_STREAM_END,
        StreamPart::Abort => TAG_STREAM_ABORT,
    };
    [tagged(envelope, tag), bytes]
}

/// The frames of a progress report: `fraction` is clamped to 0..=1.
pub fn progress_frames(
    envelope: &[u8; ENVELOPE_LEN],
    fraction: f32,
    message: &str,
) -> [zmq::Message; 2] {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let mut payload = Vec::with_capacity(4 + message.len());
    payload.extend_from_slice(&fraction.to_le_bytes());
    payload.extend_from_slice(message.as_bytes());
    [tagged(envelope, TAG_PROGRESS), payload.into()]
}

/// The frames of a worker's report on a self-test probe.
pub fn selftest_frames(envelope: &[u8; ENVELOPE_LEN], report: &StageReport) -> [zmq::Message; 2] {
    [tagged(envelope, TAG_SELFTEST), report.encode().into()]
}

/// Reads one loopback message.
///
/// ```
/// use prime_server::pipeline::envelope::{Envelope, Protocol};
/// use prime_server::pipeline::loopback::{decode, response_frames, Answer};
/// let envelope = Envelope::new(1, 2, 3, Protocol::Raw);
/// let frames = response_frames(&envelope.encode(), b"yes");
/// let (decoded, answer) = decode(frames).unwrap();
/// assert_eq!(decoded, envelope);
/// assert!(matches!(answer, Answer::Response(bytes) if &bytes[..] == b"yes"));
/// ```
pub fn decode<F>(frames: F) -> Result<(Envelope, Answer), AnswerError>
where
    F: IntoIterator<Item = zmq::Message>,
    F::IntoIter: ExactSizeIterator,
{
    let mut frames = frames.into_iter();
    let count = frames.len();
    let Some(lead) = frames.next() else {
        return Err(AnswerError::FrameCount(count));
    };
    // The lead frame's bytes, looked up once (each look is two calls into libzmq).
    let bytes: &[u8] = &lead;
    let size = bytes.len();
    let (envelope, tag) = Envelope::decode_lead(bytes).map_err(AnswerError::Envelope)?;
    if count == 1 {
        return match tag.first() {
            Some(&TAG_RESPONSE) => Ok((
                envelope,
                Answer::Response(Payload::sized(lead, size, RESPONSE_START)),
            )),
            _ => Err(AnswerError::FrameCount(count)),
        };
    }
    let &[tag] = tag else {
        return Err(AnswerError::Malformed);
    };
    let Some(payload) = frames.next() else {
        return Err(AnswerError::FrameCount(count));
    };
    if count == 3 {
        let body = frames.next().ok_or(AnswerError::FrameCount(count))?;
        if tag == TAG_HOLD {
            let hold: Hold =
                serde_json::from_slice(&payload).map_err(|_| AnswerError::Malformed)?;
            return Ok((envelope, Answer::Hold { hold, answer: body }));
        }
        if tag != TAG_LATER {
            return Err(AnswerError::Malformed);
        }
        return Ok((
            envelope,
            Answer::Later {
                head: payload,
                body,
            },
        ));
    }
    if count != 2 {
        return Err(AnswerError::FrameCount(count));
    }
    let answer = match tag {
        TAG_FAILURE => Answer::Failure(Failure::decode(&payload).ok_or(AnswerError::Malformed)?),
        TAG_STREAM_START => Answer::StreamStart(payload),
        TAG_STREAM_PIECE => Answer::StreamPiece(payload),
        TAG_STREAM_END => Answer::StreamEnd(payload),
        TAG_STREAM_ABORT => Answer::StreamAbort,
        TAG_PROGRESS => {
            let fraction = payload.get(..4).ok_or(AnswerError::Malformed)?;
            let fraction = f32::from_le_bytes([fraction[0], fraction[1], fraction[2], fraction[3]]);
            let message = String::from_utf8_lossy(&payload[4..]).into_owned();
            Answer::Progress { fraction, message }
        }
        TAG_PUBLISH => Answer::Publish(Item::parse(&payload).map_err(|_| AnswerError::Malformed)?),
        TAG_NOTIFY => Answer::Notify(
            std::str::from_utf8(&payload)
                .ok()
                .filter(|c| crate::pipeline::channel::valid_channel(c))
                .ok_or(AnswerError::Malformed)?
                .to_string(),
        ),
        TAG_SELFTEST => {
            Answer::SelfTest(StageReport::decode(&payload).ok_or(AnswerError::Malformed)?)
        }
        _ => return Err(AnswerError::Malformed),
    };
    Ok((envelope, answer))
}

/// `response` as bytes in a client protocol: HTTP with the request's version,
/// keep-alive and HEAD facts; a netstring holding the body; or the bare body.
pub(crate) fn render(protocol: Protocol, response: &Response) -> Vec<u8> {
    match protocol {
        Protocol::Http {
            minor_version,
            keep_alive,
            head,
        } => response.to_bytes(minor_version, keep_alive, head),
        Protocol::Netstring => crate::netstring::encode(&response.body),
        Protocol::Raw => response.body.clone(),
    }
}

/// Writes a failure in the client's protocol. `keep` says whether the connection's own
/// keep-alive choice stands (true for pipeline failures; the front end's own refusals
/// decide for themselves).
pub(crate) fn render_failure(protocol: Protocol, failure: &Failure, keep: bool) -> Vec<u8> {
    match protocol {
        Protocol::Http {
            minor_version,
            keep_alive,
            head,
        } => Response::error(failure.status, &failure.detail).to_bytes(
            minor_version,
            keep_alive && keep,
            head,
        ),
        Protocol::Netstring => {
            let body = serde_json::json!({"error": failure.detail, "status": failure.status});
            crate::netstring::encode(body.to_string().as_bytes())
        }
        Protocol::Raw => failure.detail.clone().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope::Protocol;

    #[test]
    fn failures_round_trip_with_their_status() {
        let envelope = Envelope::new(9, 8, 7, Protocol::Netstring);
        for failure in [
            Failure::new(FailureKind::WorkerPanicked, "boom"),
            Failure::new(FailureKind::QueueFull, ""),
            Failure::rejected(405, "only GET"),
        ] {
            let frames = failure_frames(&envelope.encode(), &failure);
            match decode(frames) {
                Ok((e, Answer::Failure(f))) => {
                    assert_eq!(e, envelope);
                    assert_eq!(f, failure);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn responses_travel_in_one_frame_and_round_trip() {
        let envelope = Envelope::new(3, 2, 1, Protocol::Raw);
        for bytes in [&b"HTTP/1.1 200 OK\r\n\r\n"[..], b""] {
            let frames = response_frames(&envelope.encode(), bytes);
            assert!(is_response_frame(&frames[0], &envelope.encode()));
            match decode(frames) {
                Ok((e, Answer::Response(payload))) => {
                    assert_eq!(e, envelope);
                    assert_eq!(&payload[..], bytes);
                    assert_eq!(
                        (payload.len(), payload.is_empty()),
                        (bytes.len(), bytes.is_empty())
                    );
                    assert_eq!(&payload.into_message()[..], bytes);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let other = Envelope::new(4, 2, 1, Protocol::Raw).encode();
        let frames = response_frames(&envelope.encode(), b"x");
        assert!(!is_response_frame(&frames[0], &other));
        assert!(!is_response_frame(
            &tagged(&envelope.encode(), TAG_FAILURE),
            &envelope.encode()
        ));
    }

    #[test]
    fn payloads_know_their_length_past_their_start() {
        let frame = zmq::Message::from(&b"0123456789"[..]);
        let payload = Payload::new(frame, 4);
        assert_eq!((payload.len(), &payload[..]), (6, &b"456789"[..]));
        let past = Payload::new(zmq::Message::from(&b"abc"[..]), 9);
        assert!(past.is_empty() && past[..].is_empty());
        assert_eq!(Payload::from(zmq::Message::from(&b"abc"[..])).len(), 3);
    }

    #[test]
    fn stream_parts_and_progress_round_trip() {
        let envelope = Envelope::new(4, 5, 6, Protocol::Raw);
        let encoded = envelope.encode();
        let part = |p| stream_frames(&encoded, p, zmq::Message::from(&b"abc"[..]));
        assert!(
            matches!(decode(part(StreamPart::Start)), Ok((_, Answer::StreamStart(b))) if &b[..] == b"abc")
        );
        assert!(matches!(
            decode(part(StreamPart::Piece)),
            Ok((_, Answer::StreamPiece(_)))
        ));
        assert!(matches!(
            decode(part(StreamPart::End)),
            Ok((_, Answer::StreamEnd(_)))
        ));
        assert!(matches!(
            decode(part(StreamPart::Abort)),
            Ok((_, Answer::StreamAbort))
        ));
        match decode(progress_frames(&encoded, 1.5, "half way")) {
            Ok((e, Answer::Progress { fraction, message })) => {
                assert_eq!(e, envelope);
                assert_eq!((fraction, message.as_str()), (1.0, "half way"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn holds_and_publishes_round_trip() {
        let envelope = Envelope::new(4, 5, 6, Protocol::Raw);
        let encoded = envelope.encode();
        let hold = Hold::stream(["a"]).prev_id("a", "3").keep_alive(":\n\n", 5);
        match decode(hold_frames(&encoded, &hold, b"head".to_vec())) {
            Ok((e, Answer::Hold { hold: got, answer })) => {
                assert_eq!(e, envelope);
                assert_eq!(got, hold);
                assert_eq!(&answer[..], b"head");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode(notify_frames(&encoded, "account:42")),
            Ok((_, Answer::Notify(channel))) if channel == "account:42"
        ));
        assert_eq!(
            decode(notify_frames(&encoded, "")).unwrap_err(),
            AnswerError::Malformed
        );
        let item = Item::stream("a", "x").id("4", Some("3".into()));
        assert!(matches!(
            decode(publish_frames(&encoded, &item)),
            Ok((_, Answer::Publish(got))) if got == item
        ));
    }

    #[test]
    fn selftest_reports_round_trip() {
        let envelope = Envelope::new(4, 5, 6, Protocol::Raw);
        let report = StageReport {
            stage: "compute".into(),
            worker: "compute-7-0".into(),
            ok: true,
            error: None,
            from: Some("parse".into()),
            via_next: false,
            forwarded: Vec::new(),
            next: false,
        };
        match decode(selftest_frames(&envelope.encode(), &report)) {
            Ok((e, Answer::SelfTest(decoded))) => {
                assert_eq!(e, envelope);
                assert_eq!(decoded, report);
            }
            other => panic!("unexpected {other:?}"),
        }
        let garbage = vec![
            tagged(&envelope.encode(), TAG_SELFTEST),
            zmq::Message::from(&b"not json"[..]),
        ];
        assert_eq!(decode(garbage).unwrap_err(), AnswerError::Malformed);
    }

    #[test]
    fn malformed_answers_are_refused() {
        let envelope = Envelope::new(1, 1, 1, Protocol::Raw).encode();
        let frames = vec![tagged(&envelope, TAG_FAILURE)];
        assert_eq!(decode(frames).unwrap_err(), AnswerError::FrameCount(1));
        let bare = vec![zmq::Message::from(&envelope[..])];
        assert_eq!(decode(bare).unwrap_err(), AnswerError::FrameCount(1));
        let split = vec![tagged(&envelope, TAG_RESPONSE), zmq::Message::from("x")];
        assert_eq!(decode(split).unwrap_err(), AnswerError::Malformed);
        let frames = vec![tagged(&envelope, b'Z'), zmq::Message::new()];
        assert_eq!(decode(frames).unwrap_err(), AnswerError::Malformed);
        let untagged = vec![zmq::Message::from(&envelope[..]), zmq::Message::new()];
        assert_eq!(decode(untagged).unwrap_err(), AnswerError::Malformed);
        let old = vec![
            zmq::Message::from(&envelope[..]),
            zmq::Message::from(&b"R"[..]),
            zmq::Message::from(&b"bytes"[..]),
        ];
        assert_eq!(decode(old).unwrap_err(), AnswerError::Malformed);
        let short_progress = vec![
            tagged(&envelope, TAG_PROGRESS),
            zmq::Message::from(&[0u8, 0][..]),
        ];
        assert_eq!(decode(short_progress).unwrap_err(), AnswerError::Malformed);
        let frames = vec![
            tagged(&envelope, TAG_FAILURE),
            zmq::Message::from(&[1u8][..]),
        ];
        assert_eq!(decode(frames).unwrap_err(), AnswerError::Malformed);
        let frames = vec![zmq::Message::from(&envelope[..8]), zmq::Message::new()];
        assert!(matches!(
            decode(frames).unwrap_err(),
            AnswerError::Envelope(DecodeError::WrongSize { .. })
        ));
    }
}
