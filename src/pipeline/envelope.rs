//! The envelope: the routing facts at the start of every pipeline message, and the
//! interrupt frame.
//!
//! Both have an explicit, versioned little-endian layout, so daemons built at different
//! times or on different machines agree, and both decoders refuse a frame of the wrong
//! size or version instead of trusting it.
//!
//! The envelope does not travel as a frame of its own: it opens a message's *lead
//! frame*, the first frame after any routing ids, and the message's first part follows
//! it in the same frame (a job's first frame, a loopback answer's tag). Every frame costs
//! libzmq an allocation, a pipe write and a pipe read per socket it crosses, so sharing
//! one saves a frame per hop. [`lead_frame`] builds a lead frame,
//! [`Envelope::decode_lead`] reads one, and [`lead_envelope`] finds the envelope's bytes
//! in one without decoding them (the proxy's test of whether a message is a job).
//!
//! Envelope layout (version 3, [`ENVELOPE_LEN`] bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version (2) |
//! | 1 | 1 | protocol: 0 raw, 1 HTTP, 2 netstring |
//! | 2 | 1 | HTTP minor version |
//! | 3 | 1 | flags: bit 0 keep-alive, bit 1 HEAD, bit 2 asynchronous job, bit 3 self-test probe, bit 4 JSON-RPC call, bit 5 WebSocket message, bit 6 binary (with bit 5) |
//! | 4 | 8 | request id |
//! | 12 | 8 | connection id, or the job's number in the job store for a job |
//! | 20 | 8 | nonce of the front end process |
//! | 28 | 8 | arrival, microseconds since the Unix epoch |
//! | 36 | 8 | deadline, microseconds since the Unix epoch (0: none) |
//! | 44 | 1 | the client's address family: 0 unknown, 4 IPv4, 6 IPv6 |
//! | 45 | 1 | the front end holding the client: its place in the deployment's list of front ends (0 with one) |
//! | 46 | 2 | the client's port (0: unknown) |
//! | 48 | 16 | the client's address (IPv4 in the first 4 bytes, the rest 0) |
//!
//! Version 1 (44 bytes) had no client address; version 2 had this layout but travelled
//! as a frame of its own. Byte 45 was reserved (0) until several front ends shared a
//! pipeline; a front end of one is front end 0, so the version did not change. A daemon of one version refuses the envelopes of the others,
//! so all daemons of a deployment must be upgraded together.

use crate::http::websocket::MessageKind;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The encoding version this build writes and accepts.
pub const ENVELOPE_VERSION: u8 = 3;
/// The size of an encoded envelope.
pub const ENVELOPE_LEN: usize = 64;
/// The encoding version of the interrupt frame (unchanged since version 1 of both).
pub const INTERRUPT_VERSION: u8 = 1;
/// The size of an encoded [`Interrupt`].
pub const INTERRUPT_LEN: usize = 20;

const FLAG_KEEP_ALIVE: u8 = 1;
const FLAG_HEAD: u8 = 2;
const FLAG_JOB: u8 = 4;
const FLAG_PROBE: u8 = 8;
const FLAG_JSONRPC: u8 = 16;
/// The offset of [`Envelope::front_end`] in the encoding.
const FRONT_END_AT: usize = 45;
const FLAG_WEBSOCKET: u8 = 32;
const FLAG_BINARY: u8 = 64;

/// The client protocol a request arrived in, which decides how its answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// No client protocol: an in-process driver such as the simulation mode.
    Raw,
    /// HTTP/1.x, with the facts needed to write the response.
    Http {
        /// 0 for HTTP/1.0, 1 for HTTP/1.1.
        minor_version: u8,
        /// Whether the connection stays open after the response.
        keep_alive: bool,
        /// Whether the request was HEAD (the response carries no body).
        head: bool,
    },
    /// Netstrings (`LEN:BYTES,`).
    Netstring,
}

/// The routing and protocol facts that travel with a request through every stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Unique per request within one front end process.
    pub request_id: u64,
    /// The front end's id for the client connection.
    pub connection_id: u64,
    /// Random per front end process, so answers meant for an earlier run are dropped.
    pub nonce: u64,
    /// How to answer the client.
    pub protocol: Protocol,
    /// When the request arrived, in microseconds since the Unix epoch.
    pub arrival_us: u64,
    /// When the front end gives up on it (microseconds since the Unix epoch), 0 for never.
    pub deadline_us: u64,
    /// An asynchronous job (see `jobs`): nobody waits on a connection for it,
    /// `connection_id` is the job's number in the front end's job store, and its answer
    /// goes to the store, matched by that number (so it is still taken after a restart).
    pub job: bool,
    /// A self-test probe (see [`crate::pipeline::selftest`]): workers run their stage's self-test
    /// instead of the user's function, report on the loopback and pass the probe on to
    /// every stage they are connected to.
    pub probe: bool,
    /// A JSON-RPC 2.0 call the front end made of one member of a request to its
    /// JSON-RPC path (see `crate::stages::jsonrpc`): the head it wrote names the
    /// method in `X-Task-Name`, and the body holds the call's `params`.
    pub jsonrpc: bool,
    /// A message from a WebSocket client (see `server::websocket`), text or binary: the
    /// request is the upgrade request's head with the message as its body, and its
    /// answer's body goes back to the socket as a message.
    pub websocket: Option<MessageKind>,
    /// The client's address as the front end saw it (port 0 when unknown; libzmq
    /// gives the address alone), for stages that pass it on (`Forwarded`). `None`
    /// when unknown (an in-process driver, or a job stored without one).
    pub client: Option<SocketAddr>,
    /// Which front end holds the client: its place (from 0) in the list of front ends
    /// every worker and proxy of the deployment is given, in the same order (see
    /// [`crate::pipeline::front_ends`]). Answers go to that front end's loopback alone.
    pub front_end: u8,
}

/// Why a frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is not the size this version has.
    WrongSize {
        /// The size expected.
        expected: usize,
        /// The size received.
        got: usize,
    },
    /// The frame was written by an encoding version this build does not know.
    UnknownVersion(u8),
    /// The protocol byte names no protocol.
    UnknownProtocol(u8),
    /// The client address's family byte is neither 0, 4 nor 6.
    UnknownAddressFamily(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::WrongSize { expected, got } => {
                write!(f, "frame of {got} bytes where {expected} were expected")
            }
            DecodeError::UnknownVersion(v) => {
                write!(
                    f,
                    "encoding version {v}, this build speaks {ENVELOPE_VERSION}"
                )
            }
            DecodeError::UnknownProtocol(p) => write!(f, "unknown protocol byte {p}"),
            DecodeError::UnknownAddressFamily(a) => write!(f, "unknown address family byte {a}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Envelope {
    /// A new envelope for a request arriving now.
    pub fn new(request_id: u64, connection_id: u64, nonce: u64, protocol: Protocol) -> Self {
        Envelope {
            request_id,
            connection_id,
            nonce,
            protocol,
            arrival_us: now_us(),
            deadline_us: 0,
            job: false,
            probe: false,
            jsonrpc: false,
            websocket: None,
            client: None,
            front_end: 0,
        }
    }

    /// Sets the client's address.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::{Envelope, Protocol};
    /// let client = "[2001:db8::17]:4711".parse().unwrap();
    /// let envelope = Envelope::new(1, 2, 3, Protocol::Raw).with_client(Some(client));
    /// assert_eq!(Envelope::decode(&envelope.encode()).unwrap().client, Some(client));
    /// ```
    pub fn with_client(mut self, client: Option<SocketAddr>) -> Self {
        self.client = client;
        self
    }

    /// Sets the front end that holds the client (see [`Envelope::front_end`]).
    ///
    /// ```
    /// use prime_server::pipeline::envelope::{lead_front_end, lead_frame, Envelope, Protocol};
    /// let envelope = Envelope::new(1, 2, 3, Protocol::Raw).at_front_end(2);
    /// assert_eq!(lead_front_end(&lead_frame(&envelope.encode(), b"")), Some(2));
    /// ```
    pub fn at_front_end(mut self, front_end: u8) -> Self {
        self.front_end = front_end;
        self
    }

    /// The envelope of an asynchronous job's run: `job_number` is the job's number in the
    /// job store, and the request is run as HTTP/1.1 with keep-alive, so its answer is
    /// whole (a body even for HEAD) and can be rendered later for any client.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::Envelope;
    /// let envelope = Envelope::for_job(7, 42, 99);
    /// assert_eq!(envelope.job_number(), Some(42));
    /// assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    /// ```
    pub fn for_job(request_id: u64, job_number: u64, nonce: u64) -> Self {
        let protocol = Protocol::Http {
            minor_version: 1,
            keep_alive: true,
            head: false,
        };
        Envelope {
            job: true,
            ..Envelope::new(request_id, job_number, nonce, protocol)
        }
    }

    /// The envelope of a self-test probe: `request_id` names the self-test at the front
    /// end, which gives up on it `timeout` from now.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::Envelope;
    /// use std::time::Duration;
    /// let probe = Envelope::for_probe(7, 99, Duration::from_secs(2));
    /// assert!(probe.probe && !probe.job);
    /// assert_eq!(Envelope::decode(&probe.encode()), Ok(probe));
    /// ```
    pub fn for_probe(request_id: u64, nonce: u64, timeout: Duration) -> Self {
        Envelope {
            probe: true,
            ..Envelope::new(request_id, 0, nonce, Protocol::Raw)
        }
        .with_timeout(timeout)
    }

    /// The job's number in the job store, for an asynchronous job.
    pub fn job_number(&self) -> Option<u64> {
        self.job.then_some(self.connection_id)
    }

    /// Sets the deadline to `timeout` after arrival.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline_us = self
            .arrival_us
            .saturating_add(timeout.as_micros().min(u64::MAX as u128) as u64);
        self
    }

    /// Whether the deadline is set and has passed.
    pub fn is_expired(&self, now_us: u64) -> bool {
        deadline_passed(self.deadline_us, now_us)
    }

    /// The fixed-size little-endian encoding.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::{Envelope, Protocol};
    /// let envelope = Envelope::new(7, 3, 42, Protocol::Raw);
    /// assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    /// ```
    pub fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let (protocol, minor, flags) = match self.protocol {
            Protocol::Raw => (0, 0, 0),
            Protocol::Http {
                minor_version,
                keep_alive,
                head,
            } => (
                1,
                minor_version,
                (keep_alive as u8 * FLAG_KEEP_ALIVE) | (head as u8 * FLAG_HEAD),
            ),
            Protocol::Netstring => (2, 0, 0),
        };
        let flags = flags
            | (self.job as u8 * FLAG_JOB)
            | (self.probe as u8 * FLAG_PROBE)
            | (self.jsonrpc as u8 * FLAG_JSONRPC)
            | match self.websocket {
                None => 0,
                Some(MessageKind::Text) => FLAG_WEBSOCKET,
                Some(MessageKind::Binary) => FLAG_WEBSOCKET | FLAG_BINARY,
            };
        let mut out = [0u8; ENVELOPE_LEN];
        out[..4].copy_from_slice(&[ENVELOPE_VERSION, protocol, minor, flags]);
        out[FRONT_END_AT] = self.front_end;
        let fields = [
            self.request_id,
            self.connection_id,
            self.nonce,
            self.arrival_us,
            self.deadline_us,
        ];
        for (i, field) in fields.iter().enumerate() {
            out[4 + 8 * i..12 + 8 * i].copy_from_slice(&field.to_le_bytes());
        }
        if let Some(client) = self.client {
            out[46..48].copy_from_slice(&client.port().to_le_bytes());
            match client.ip() {
                IpAddr::V4(ip) => {
                    out[44] = 4;
                    out[48..52].copy_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out[44] = 6;
                    out[48..64].copy_from_slice(&ip.octets());
                }
            }
        }
        out
    }

    /// Decodes the envelope at the start of a lead frame (see [`lead_frame`]) and
    /// returns it with the bytes that follow it in the frame: a job's first frame, or a
    /// loopback answer's tag.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::{lead_frame, Envelope, Protocol};
    /// let envelope = Envelope::new(7, 3, 42, Protocol::Raw);
    /// let frame = lead_frame(&envelope.encode(), b"17");
    /// assert_eq!(Envelope::decode_lead(&frame), Ok((envelope, &b"17"[..])));
    /// assert!(Envelope::decode_lead(&frame[..10]).is_err());
    /// ```
    ///
    /// # Errors
    /// [`DecodeError`] when the frame is shorter than an envelope, or the envelope's
    /// version, protocol or address family is unknown.
    pub fn decode_lead(frame: &[u8]) -> Result<(Envelope, &[u8]), DecodeError> {
        let Some(envelope) = frame.get(..ENVELOPE_LEN) else {
            return Err(DecodeError::WrongSize {
                expected: ENVELOPE_LEN,
                got: frame.len(),
            });
        };
        Ok((Envelope::decode(envelope)?, &frame[ENVELOPE_LEN..]))
    }

    /// Decodes exactly one encoded envelope, as written by [`encode`](Self::encode),
    /// refusing anything else (a lead frame is read with
    /// [`decode_lead`](Self::decode_lead)).
    ///
    /// # Errors
    /// [`DecodeError`] when `frame` is not [`ENVELOPE_LEN`] bytes, or its version,
    /// protocol or address family is unknown.
    pub fn decode(frame: &[u8]) -> Result<Envelope, DecodeError> {
        check_frame(frame, ENVELOPE_LEN, ENVELOPE_VERSION)?;
        let flags = frame[3];
        let protocol = match frame[1] {
            0 => Protocol::Raw,
            1 => Protocol::Http {
                minor_version: frame[2],
                keep_alive: flags & FLAG_KEEP_ALIVE != 0,
                head: flags & FLAG_HEAD != 0,
            },
            2 => Protocol::Netstring,
            other => return Err(DecodeError::UnknownProtocol(other)),
        };
        Ok(Envelope {
            request_id: u64_at(frame, 4),
            connection_id: u64_at(frame, 12),
            nonce: u64_at(frame, 20),
            protocol,
            arrival_us: u64_at(frame, 28),
            deadline_us: u64_at(frame, 36),
            job: flags & FLAG_JOB != 0,
            probe: flags & FLAG_PROBE != 0,
            jsonrpc: flags & FLAG_JSONRPC != 0,
            websocket: (flags & FLAG_WEBSOCKET != 0).then_some(if flags & FLAG_BINARY != 0 {
                MessageKind::Binary
            } else {
                MessageKind::Text
            }),
            client: client_at(frame)?,
            front_end: frame[FRONT_END_AT],
        })
    }
}

/// A lead frame: the encoded `envelope` followed by `rest` (a job's first frame, a
/// loopback answer's tag), in one allocation.
///
/// ```
/// use prime_server::pipeline::envelope::{lead_frame, Envelope, Protocol, ENVELOPE_LEN};
/// let frame = lead_frame(&Envelope::new(1, 2, 3, Protocol::Raw).encode(), b"R");
/// assert_eq!(frame.len(), ENVELOPE_LEN + 1);
/// ```
pub fn lead_frame(envelope: &[u8; ENVELOPE_LEN], rest: &[u8]) -> zmq::Message {
    lead_frame_of(envelope, &[rest])
}

/// A lead frame of the encoded `envelope` followed by each of `parts` in turn, in one
/// allocation (e.g. a loopback tag, then a response's bytes).
pub(crate) fn lead_frame_of(envelope: &[u8; ENVELOPE_LEN], parts: &[&[u8]]) -> zmq::Message {
    // Each byte written once (our zmq binding's `concat`, vendor/zmq/PATCHES.md).
    zmq::Message::concat(envelope, parts)
}

/// The envelope's bytes at the start of `frame`, when it is a lead frame of this
/// version: long enough and with the right version byte. Nothing else is checked, so
/// this is cheap enough to tell a job from a control message by its first frame.
pub fn lead_envelope(frame: &[u8]) -> Option<&[u8; ENVELOPE_LEN]> {
    let envelope: &[u8; ENVELOPE_LEN] = frame.get(..ENVELOPE_LEN)?.try_into().ok()?;
    (envelope[0] == ENVELOPE_VERSION).then_some(envelope)
}

/// The deadline (microseconds since the Unix epoch, 0 for none) of the envelope at the
/// start of a lead frame, read without decoding the rest: what a proxy needs to drop
/// expired jobs from its queue.
///
/// ```
/// use prime_server::pipeline::envelope::{lead_deadline_us, lead_frame, Envelope, Protocol};
/// use std::time::Duration;
/// let envelope = Envelope::new(1, 2, 3, Protocol::Raw).with_timeout(Duration::from_secs(1));
/// let frame = lead_frame(&envelope.encode(), b"7");
/// assert_eq!(lead_deadline_us(&frame), Some(envelope.deadline_us));
/// assert_eq!(lead_deadline_us(b"\x01"), None);
/// ```
pub fn lead_deadline_us(frame: &[u8]) -> Option<u64> {
    lead_envelope(frame).map(|envelope| u64_at(envelope, 36))
}

/// The front end (see [`Envelope::front_end`]) of the envelope at the start of a lead
/// frame, read without decoding the rest: what a worker needs to pick the loopback an
/// answer goes to. `None` when the frame does not start with an envelope.
pub fn lead_front_end(frame: &[u8]) -> Option<u8> {
    lead_envelope(frame).map(|envelope| envelope[FRONT_END_AT])
}

/// Whether a deadline (microseconds since the Unix epoch, 0 for none) has passed at
/// `now_us`.
pub fn deadline_passed(deadline_us: u64, now_us: u64) -> bool {
    deadline_us != 0 && now_us > deadline_us
}

/// Why the front end tells workers to drop work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptReason {
    /// The client hung up.
    ClientGone,
    /// The request's deadline passed; the client was answered 504.
    DeadlinePassed,
    /// The front end is shutting down: every request of this nonce is void.
    ShuttingDown,
    /// The asynchronous job was cancelled (`DELETE /jobs/{id}`).
    Cancelled,
    /// Not an interrupt but a census call (see [`crate::pipeline::census`]): `request_id` is the
    /// census number, and every worker pool answers with the requests it holds.
    Census,
    /// The request was lost with a stage's proxy and answered 503 (see
    /// [`crate::pipeline::census`]): if it turns up again, it is not run.
    ProxyLost,
}

impl InterruptReason {
    /// The reason's byte in the encoding (the second byte of the frame, so a SUB socket
    /// can subscribe to one reason).
    pub fn code(self) -> u8 {
        match self {
            InterruptReason::ClientGone => 1,
            InterruptReason::DeadlinePassed => 2,
            InterruptReason::ShuttingDown => 3,
            InterruptReason::Cancelled => 4,
            InterruptReason::Census => 5,
            InterruptReason::ProxyLost => 6,
        }
    }
}

/// A message on the interrupt channel: drop the work for one request, or for every
/// request of a front end process when the reason is [`InterruptReason::ShuttingDown`].
///
/// Layout: version (1 byte), reason (1 byte), 2 reserved zero bytes, nonce (u64 LE),
/// request id (u64 LE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// The front end process the request belongs to.
    pub nonce: u64,
    /// The request to drop (ignored for `ShuttingDown`).
    pub request_id: u64,
    /// Why.
    pub reason: InterruptReason,
}

impl Interrupt {
    /// The fixed-size little-endian encoding.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::{Interrupt, InterruptReason};
    /// let interrupt = Interrupt { nonce: 1, request_id: 2, reason: InterruptReason::ClientGone };
    /// assert_eq!(Interrupt::decode(&interrupt.encode()), Ok(interrupt));
    /// ```
    pub fn encode(&self) -> [u8; INTERRUPT_LEN] {
        let mut out = [0u8; INTERRUPT_LEN];
        out[0] = INTERRUPT_VERSION;
        out[1] = self.reason.code();
        out[4..12].copy_from_slice(&self.nonce.to_le_bytes());
        out[12..20].copy_from_slice(&self.request_id.to_le_bytes());
        out
    }

    /// Decodes a frame written by [`encode`](Self::encode), refusing anything else.
    pub fn decode(frame: &[u8]) -> Result<Interrupt, DecodeError> {
        check_frame(frame, INTERRUPT_LEN, INTERRUPT_VERSION)?;
        let reason = match frame[1] {
            1 => InterruptReason::ClientGone,
            2 => InterruptReason::DeadlinePassed,
            3 => InterruptReason::ShuttingDown,
            4 => InterruptReason::Cancelled,
            5 => InterruptReason::Census,
            6 => InterruptReason::ProxyLost,
            other => return Err(DecodeError::UnknownProtocol(other)),
        };
        Ok(Interrupt {
            nonce: u64_at(frame, 4),
            request_id: u64_at(frame, 12),
            reason,
        })
    }
}

/// The reason byte of a [`StreamWritten`] notice, after the [`InterruptReason`] codes.
pub const STREAM_WRITTEN_CODE: u8 = 7;
/// The size of an encoded [`StreamWritten`].
pub const STREAM_WRITTEN_LEN: usize = 28;

/// A notice on the interrupt channel, not an interrupt: the front end has handed
/// `bytes` bytes of a streamed answer (counted as the loopback parts' lengths, head
/// included) to its client's connection. The worker sending the stream waits for it
/// once a window of its bytes is unacknowledged (see [`crate::pipeline::stream`]), so a
/// client that reads slowly paces the stage instead of the front end buffering the
/// answer.
///
/// Layout: version (1 byte, [`INTERRUPT_VERSION`]), [`STREAM_WRITTEN_CODE`] (1 byte),
/// 2 reserved zero bytes, nonce (u64 LE), request id (u64 LE), bytes (u64 LE). The
/// first 20 bytes are the prefix a worker subscribes to for its own stream
/// ([`StreamWritten::topic`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamWritten {
    /// The front end process the request belongs to.
    pub nonce: u64,
    /// The request whose answer streams.
    pub request_id: u64,
    /// How many bytes of it the front end has handed on, in all.
    pub bytes: u64,
}

impl StreamWritten {
    /// The fixed-size little-endian encoding.
    ///
    /// ```
    /// use prime_server::pipeline::envelope::StreamWritten;
    /// let notice = StreamWritten { nonce: 1, request_id: 2, bytes: 3 };
    /// assert_eq!(StreamWritten::decode(&notice.encode()), Ok(notice));
    /// assert!(notice.encode().starts_with(&StreamWritten::topic(1, 2)));
    /// ```
    pub fn encode(&self) -> [u8; STREAM_WRITTEN_LEN] {
        let mut out = [0u8; STREAM_WRITTEN_LEN];
        out[..20].copy_from_slice(&Self::topic(self.nonce, self.request_id));
        out[20..28].copy_from_slice(&self.bytes.to_le_bytes());
        out
    }

    /// The prefix of every notice about one request's stream, to subscribe to.
    pub fn topic(nonce: u64, request_id: u64) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0] = INTERRUPT_VERSION;
        out[1] = STREAM_WRITTEN_CODE;
        out[4..12].copy_from_slice(&nonce.to_le_bytes());
        out[12..20].copy_from_slice(&request_id.to_le_bytes());
        out
    }

    /// Decodes a frame written by [`encode`](Self::encode), refusing anything else.
    pub fn decode(frame: &[u8]) -> Result<StreamWritten, DecodeError> {
        check_frame(frame, STREAM_WRITTEN_LEN, INTERRUPT_VERSION)?;
        if frame[1] != STREAM_WRITTEN_CODE {
            return Err(DecodeError::UnknownProtocol(frame[1]));
        }
        Ok(StreamWritten {
            nonce: u64_at(frame, 4),
            request_id: u64_at(frame, 12),
            bytes: u64_at(frame, 20),
        })
    }
}

fn check_frame(frame: &[u8], expected: usize, version: u8) -> Result<(), DecodeError> {
    if frame.len() != expected {
        return Err(DecodeError::WrongSize {
            expected,
            got: frame.len(),
        });
    }
    if frame[0] != version {
        return Err(DecodeError::UnknownVersion(frame[0]));
    }
    Ok(())
}

/// The client address of an envelope frame of the right size.
fn client_at(frame: &[u8]) -> Result<Option<SocketAddr>, DecodeError> {
    let port = u16::from_le_bytes([frame[46], frame[47]]);
    let ip = match frame[44] {
        0 => return Ok(None),
        4 => IpAddr::V4(Ipv4Addr::new(frame[48], frame[49], frame[50], frame[51])),
        6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&frame[48..64]);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        other => return Err(DecodeError::UnknownAddressFamily(other)),
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

fn u64_at(frame: &[u8], offset: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&frame[offset..offset + 8]);
    u64::from_le_bytes(bytes)
}

/// Microseconds since the Unix epoch: the clock deadlines are written in, so that
/// processes on different hosts can compare them.
///
/// It reads the clock with `clock_gettime(CLOCK_REALTIME)` directly: every job reads it
/// (for its deadline) at the front end and in each stage, and `SystemTime::now` and
/// `duration_since` cost it a subtraction with its checks and a `Result` each time.
/// A clock before the epoch reads 0.
#[inline]
pub fn now_us() -> u64 {
    crate::base::clock::realtime_us()
}

/// A random number for this process, used as the front end's nonce and in worker ids.
///
/// libzmq's STREAM routing ids and our request ids start over in every process, so a
/// late answer from a previous run must be recognisable: the nonce makes it so.
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_us());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            request_id: u64::MAX - 1,
            connection_id: 0x0102_0304_0506_0708,
            nonce: 99,
            protocol: Protocol::Http {
                minor_version: 1,
                keep_alive: true,
                head: true,
            },
            arrival_us: 1_700_000_000_000_000,
            deadline_us: 1_700_000_010_000_000,
            job: false,
            probe: false,
            jsonrpc: false,
            websocket: None,
            client: Some(SocketAddr::from(([192, 0, 2, 43], 47011))),
            front_end: 3,
        }
    }

    #[test]
    fn websocket_messages_round_trip_with_their_kind() {
        for kind in [None, Some(MessageKind::Text), Some(MessageKind::Binary)] {
            let envelope = Envelope {
                websocket: kind,
                ..sample()
            };
            assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn every_protocol_round_trips() {
        for protocol in [
            Protocol::Raw,
            Protocol::Netstring,
            Protocol::Http {
                minor_version: 0,
                keep_alive: false,
                head: false,
            },
            sample().protocol,
        ] {
            let envelope = Envelope {
                protocol,
                ..sample()
            };
            assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn the_layout_is_little_endian_and_fixed() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..4], &[3, 1, 1, 3]);
        assert_eq!(&bytes[44..52], &[4, 3, 0xa3, 0xb7, 192, 0, 2, 43]);
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[20..28], &[99, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn short_long_and_unknown_frames_are_refused() {
        let bytes = sample().encode();
        assert_eq!(
            Envelope::decode(&bytes[..ENVELOPE_LEN - 1]),
            Err(DecodeError::WrongSize {
                expected: ENVELOPE_LEN,
                got: ENVELOPE_LEN - 1
            })
        );
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(matches!(
            Envelope::decode(&long),
            Err(DecodeError::WrongSize { .. })
        ));
        assert!(Envelope::decode(&[]).is_err());
        let mut future = bytes;
        future[0] = 4;
        assert_eq!(
            Envelope::decode(&future),
            Err(DecodeError::UnknownVersion(4))
        );
        let mut old = bytes;
        old[0] = 2;
        assert_eq!(Envelope::decode(&old), Err(DecodeError::UnknownVersion(2)));
        let mut family = sample().encode();
        family[44] = 5;
        assert_eq!(
            Envelope::decode(&family),
            Err(DecodeError::UnknownAddressFamily(5))
        );
        let mut odd = sample().encode();
        odd[1] = 9;
        assert_eq!(Envelope::decode(&odd), Err(DecodeError::UnknownProtocol(9)));
    }

    #[test]
    fn lead_frames_carry_the_envelope_and_the_first_part() {
        let envelope = sample();
        let frame = lead_frame(&envelope.encode(), b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            Envelope::decode_lead(&frame),
            Ok((envelope, &b"GET / HTTP/1.1\r\n\r\n"[..]))
        );
        assert_eq!(lead_envelope(&frame), Some(&envelope.encode()));
        let bare = lead_frame(&envelope.encode(), b"");
        assert_eq!(Envelope::decode_lead(&bare), Ok((envelope, &b""[..])));
        assert_eq!(
            Envelope::decode_lead(&frame[..ENVELOPE_LEN - 1]),
            Err(DecodeError::WrongSize {
                expected: ENVELOPE_LEN,
                got: ENVELOPE_LEN - 1
            })
        );
        assert_eq!(lead_envelope(&frame[..ENVELOPE_LEN - 1]), None);
        let mut other = frame.to_vec();
        other[0] = 2;
        assert_eq!(lead_envelope(&other), None);
        assert_eq!(
            Envelope::decode_lead(&other),
            Err(DecodeError::UnknownVersion(2))
        );
    }

    #[test]
    fn client_addresses_of_both_families_round_trip() {
        for client in [
            None,
            Some("[2001:db8::17]:0".parse().unwrap()),
            sample().client,
        ] {
            let envelope = Envelope { client, ..sample() };
            assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn interrupts_round_trip_and_refuse_bad_frames() {
        for reason in [
            InterruptReason::ClientGone,
            InterruptReason::DeadlinePassed,
            InterruptReason::ShuttingDown,
            InterruptReason::Cancelled,
            InterruptReason::Census,
            InterruptReason::ProxyLost,
        ] {
            let interrupt = Interrupt {
                nonce: 5,
                request_id: 6,
                reason,
            };
            assert_eq!(Interrupt::decode(&interrupt.encode()), Ok(interrupt));
        }
        assert!(Interrupt::decode(&[1; 19]).is_err());
        assert!(Interrupt::decode(&[7; INTERRUPT_LEN]).is_err());
    }

    #[test]
    fn deadlines() {
        let envelope = Envelope::new(1, 1, 1, Protocol::Raw);
        assert!(!envelope.is_expired(u64::MAX));
        let envelope = envelope.with_timeout(Duration::from_secs(1));
        assert!(!envelope.is_expired(envelope.arrival_us));
        assert!(envelope.is_expired(envelope.arrival_us + 1_000_001));
    }
}
