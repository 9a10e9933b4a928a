//! A connection's unwritten output: the answers libzmq has not taken yet, kept as the
//! pieces they arrived in, and cut into the messages handed to libzmq.
//!
//! libzmq bounds what it holds for a peer in *messages* (the send high-water mark), not
//! in bytes, so the size of each message decides how many bytes it holds. Messages here
//! are at most [`CHUNK`] bytes: larger answers are split, and runs of small answers are
//! joined into one message (a message each would fill the high-water mark at once and cut
//! throughput for pipelining clients). An answer of a fitting size goes as it is, without
//! a copy.

use std::collections::VecDeque;

/// Bytes of an answer: a worker's message as received, or bytes the front end made.
pub(crate) enum AnswerBytes {
    /// From the loopback, not copied.
    Message(crate::pipeline::loopback::Payload),
    /// Made by the front end (errors, health checks, 100 Continue).
    Owned(Vec<u8>),
}

impl AnswerBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            AnswerBytes::Message(m) => m,
            AnswerBytes::Owned(v) => v,
        }
    }

    /// How many bytes there are (a loopback answer's length is kept, so this costs no
    /// call into libzmq).
    pub(crate) fn len(&self) -> usize {
        match self {
            AnswerBytes::Message(m) => m.len(),
            AnswerBytes::Owned(v) => v.len(),
        }
    }

    /// The bytes as a message for libzmq, without a copy unless the loopback's frame
    /// held more than them.
    pub(crate) fn into_message(self) -> zmq::Message {
        match self {
            AnswerBytes::Message(m) => m.into_message(),
            AnswerBytes::Owned(v) => zmq::Message::from(v),
        }
    }
}

/// The status code of an HTTP response, for the error count ("-" for other protocols).
pub(crate) fn status_of(bytes: &[u8]) -> &str {
    if !bytes.starts_with(b"HTTP/1.") {
        return "-";
    }
    match bytes.get(9..12) {
        // The usual codes without a UTF-8 check (this runs for every answer).
        Some(b"200") => "200",
        Some(b"204") => "204",
        Some(b"404") => "404",
        Some(code) => std::str::from_utf8(code).unwrap_or("-"),
        None => "-",
    }
}

/// The largest message handed to libzmq. With the socket's send high-water mark this
/// bounds the bytes libzmq holds per client. Refused output is tried again at best every
/// millisecond (the unit of `zmq_poll`), so what libzmq may hold sets the top speed of a
/// client that reads fast: on loopback, 16 messages of 64 KiB gave about half the speed
/// of unbounded output, 16 of 256 KiB all of it.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Answers shorter than this are joined with their neighbours into one message (copied);
/// longer ones, up to [`CHUNK`], go as they are. Joining also releases a small message
/// received from the loopback, which may share (and keep alive) one of libzmq's receive
/// buffers.
pub(crate) const COALESCE_BELOW: usize = 16 * 1024;

/// What the next message to libzmq is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The front piece as it is, without a copy.
    Whole,
    /// A copy of this many bytes of the front piece, from what is already written on.
    Part(usize),
}

/// Plans the next message from the front piece: its length and how much of it is
/// already written.
pub(crate) fn plan(front_len: usize, written: usize) -> Next {
    if written == 0 && front_len <= CHUNK {
        Next::Whole
    } else {
        Next::Part((front_len - written).min(CHUNK))
    }
}

/// Whether an answer of `len` bytes is joined to the last piece, of `back_len` bytes
/// (`back_owned` if the front end owns its bytes, so it can grow without a copy of
/// them).
pub(crate) fn joins(back_len: usize, back_owned: bool, len: usize) -> bool {
    len < COALESCE_BELOW && back_len + len <= CHUNK && (back_owned || back_len < COALESCE_BELOW)
}

/// A connection's unwritten bytes, in order.
#[derive(Default)]
pub(crate) struct Output {
    /// Answers (or runs of small answers joined together), front first.
    pieces: VecDeque<AnswerBytes>,
    /// Bytes of the front piece already handed to libzmq.
    written: usize,
    /// Unwritten bytes in all pieces.
    len: usize,
}

impl Output {
    /// Room for one piece, what a client that does not pipeline ever needs: a
    /// `VecDeque` grows to 4 at its first push, and a server holds thousands of idle
    /// connections. A pipelining client's output grows as it needs.
    pub(crate) fn new() -> Self {
        Output {
            pieces: VecDeque::with_capacity(1),
            ..Output::default()
        }
    }

    /// How many bytes wait.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many bytes wait behind the piece being written: the answers queued after
    /// the one in progress.
    pub(crate) fn queued_behind_front(&self) -> usize {
        let front = self.pieces.front().map_or(0, |p| p.len() - self.written);
        self.len - front
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues an answer's bytes after the others. An empty answer adds nothing (an empty
    /// message to libzmq would close the connection).
    pub(crate) fn push(&mut self, bytes: AnswerBytes) {
        let len = bytes.len();
        if len == 0 {
            return;
        }
        self.len += len;
        if let Some(back) = self.pieces.back_mut() {
            let back_len = back.len();
            let back_owned = matches!(back, AnswerBytes::Owned(_));
            // Whatever is joined is at most CHUNK long, so it is never the front piece
            // in the middle of a split.
            if joins(back_len, back_owned, len) {
                if let AnswerBytes::Message(message) = back {
                    let mut joined = Vec::with_capacity(back_len + len);
                    joined.extend_from_slice(message);
                    *back = AnswerBytes::Owned(joined);
                }
                if let AnswerBytes::Owned(joined) = back {
                    joined.extend_from_slice(bytes.as_slice());
                }
                return;
            }
        }
        self.pieces.push_back(bytes);
    }

    /// Takes the next message out of the queue: `None` only when nothing waits.
    pub(crate) fn take(&mut self) -> Option<zmq::Message> {
        let front = self.pieces.front()?;
        let front_len = front.len();
        let (message, taken) = match plan(front_len, self.written) {
            Next::Whole => (self.pieces.pop_front()?.into_message(), front_len),
            Next::Part(n) => {
                let bytes = front.as_slice();
                let end = self.written + n;
                let message = zmq::Message::from(&bytes[self.written..end]);
                self.written = end;
                if end == bytes.len() {
                    self.pieces.pop_front();
                    self.written = 0;
                }
                (message, n)
            }
        };
        self.len -= taken;
        if self.pieces.is_empty() && self.pieces.capacity() > 1 {
            // All written: an idle connection (a held stream) keeps room for one piece,
            // as a new one has.
            self.pieces.shrink_to(1);
        }
        Some(message)
    }

    /// Forgets every unwritten byte.
    pub(crate) fn clear(&mut self) {
        self.pieces.clear();
        self.written = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_reads_http_answers_only() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), "200");
        assert_eq!(status_of(b"HTTP/1.0 404 Not Found\r\n\r\n"), "404");
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            "503"
        );
        assert_eq!(status_of(b"HTTP/1.1 2"), "-");
        assert_eq!(status_of(b"12:xxxxxx200xxx,"), "-");
        assert_eq!(status_of(b"HTTP/1.1 \xff00 x"), "-");
    }
    use proptest::prelude::*;

    /// Takes every message out of `output`.
    fn drain(output: &mut Output) -> Vec<zmq::Message> {
        std::iter::from_fn(|| output.take()).collect()
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn plans_whole_pieces_up_to_a_chunk_and_parts_of_longer_ones() {
        assert_eq!(plan(1, 0), Next::Whole);
        assert_eq!(plan(CHUNK, 0), Next::Whole);
        assert_eq!(plan(CHUNK + 1, 0), Next::Part(CHUNK));
        assert_eq!(plan(3 * CHUNK, CHUNK), Next::Part(CHUNK));
        assert_eq!(plan(CHUNK + 1, CHUNK), Next::Part(1));
    }

    #[test]
    fn joins_small_answers_up_to_a_chunk() {
        assert!(joins(100, false, 100));
        assert!(joins(CHUNK - 100, true, 100));
        assert!(!joins(CHUNK - 99, true, 100), "past a chunk");
        assert!(
            !joins(100, false, COALESCE_BELOW),
            "a big answer goes alone"
        );
        assert!(
            !joins(COALESCE_BELOW, false, 100),
            "a big message is not copied to join a small one"
        );
        assert!(
            joins(COALESCE_BELOW, true, 100),
            "a run of small ones keeps growing"
        );
    }

    #[test]
    fn counts_what_waits_behind_the_answer_being_written() {
        let mut output = Output::default();
        assert_eq!(output.queued_behind_front(), 0);
        output.push(AnswerBytes::Owned(bytes(3 * CHUNK, 1)));
        assert_eq!(output.queued_behind_front(), 0, "the answer in progress");
        output.push(AnswerBytes::Owned(bytes(CHUNK, 2)));
        assert_eq!(output.queued_behind_front(), CHUNK);
        let first = output.take().map(|m| m.len());
        assert_eq!(first, Some(CHUNK));
        assert_eq!(
            output.queued_behind_front(),
            CHUNK,
            "part written, same front"
        );
        drain(&mut output);
        assert_eq!(output.queued_behind_front(), 0);
    }

    #[test]
    fn an_answer_alone_goes_without_a_copy() {
        // Not below 34 bytes: libzmq keeps such messages inside the message struct, so
        // their address moves with it.
        for len in [150, COALESCE_BELOW, CHUNK] {
            let message = zmq::Message::from(&bytes(len, 1)[..]);
            let address = message.as_ptr();
            let mut output = Output::default();
            output.push(AnswerBytes::Message(message.into()));
            assert_eq!(output.len(), len);
            let messages = drain(&mut output);
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].as_ptr(), address, "{len} bytes were copied");
            assert!(output.is_empty());
        }
    }

    #[test]
    fn pipelined_small_answers_become_few_messages() {
        let mut output = Output::default();
        let answers: Vec<Vec<u8>> = (0..1000).map(|i| bytes(150, i as u8)).collect();
        for answer in &answers {
            output.push(AnswerBytes::Message(zmq::Message::from(&answer[..]).into()));
        }
        let messages = drain(&mut output);
        let total: usize = 150 * 1000;
        assert_eq!(messages.len(), total.div_ceil(CHUNK / 150 * 150));
        let sent: Vec<u8> = messages.iter().flat_map(|m| m.to_vec()).collect();
        assert_eq!(sent, answers.concat());
    }

    #[test]
    fn a_big_answer_is_split_into_chunks() {
        let answer = bytes(5 * CHUNK / 2, 7);
        let mut output = Output::default();
        output.push(AnswerBytes::Owned(answer.clone()));
        let sizes: Vec<usize> = drain(&mut output).iter().map(|m| m.len()).collect();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK / 2]);
    }

    #[test]
    fn a_big_message_between_small_ones_is_not_copied() {
        let big = zmq::Message::from(&bytes(COALESCE_BELOW * 2, 3)[..]);
        let address = big.as_ptr();
        let mut output = Output::default();
        output.push(AnswerBytes::Owned(bytes(10, 1)));
        output.push(AnswerBytes::Message(big.into()));
        output.push(AnswerBytes::Owned(bytes(10, 2)));
        let messages = drain(&mut output);
        let sizes: Vec<usize> = messages.iter().map(|m| m.len()).collect();
        assert_eq!(sizes, [10, COALESCE_BELOW * 2, 10]);
        assert_eq!(messages[1].as_ptr(), address);
    }

    #[test]
    fn empty_answers_add_nothing() {
        let mut output = Output::default();
        output.push(AnswerBytes::Owned(Vec::new()));
        output.push(AnswerBytes::Message(zmq::Message::new().into()));
        assert!(output.is_empty());
        assert!(output.take().is_none());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut output = Output::default();
        output.push(AnswerBytes::Owned(bytes(3 * CHUNK, 0)));
        assert!(output.take().is_some());
        output.clear();
        assert!(output.is_empty());
        assert!(output.take().is_none());
        output.push(AnswerBytes::Owned(bytes(10, 0)));
        assert_eq!(drain(&mut output)[0].len(), 10);
    }

    proptest! {
        /// Whatever the answers' sizes and kinds, and however pushes and takes
        /// interleave, the messages carry the answers' bytes in order, none is empty or
        /// longer than a chunk, and the count of waiting bytes stays exact.
        #[test]
        fn messages_carry_every_byte_in_order(
            answers in proptest::collection::vec((0usize..3 * CHUNK, any::<bool>(), 0usize..3), 0..40)
        ) {
            let mut output = Output::default();
            let mut expected = Vec::new();
            let mut sent = Vec::new();
            for (i, (len, as_message, takes)) in answers.into_iter().enumerate() {
                let answer = bytes(len, i as u8);
                expected.extend_from_slice(&answer);
                output.push(if as_message {
                    AnswerBytes::Message(zmq::Message::from(&answer[..]).into())
                } else {
                    AnswerBytes::Owned(answer)
                });
                for _ in 0..takes {
                    let Some(message) = output.take() else { break };
                    prop_assert!(!message.is_empty() && message.len() <= CHUNK);
                    sent.extend_from_slice(&message);
                }
                prop_assert_eq!(output.len(), expected.len() - sent.len());
            }
            for message in drain(&mut output) {
                prop_assert!(!message.is_empty() && message.len() <= CHUNK);
                sent.extend_from_slice(&message);
            }
            prop_assert!(output.is_empty());
            prop_assert!(sent == expected, "bytes differ");
        }
    }
}
