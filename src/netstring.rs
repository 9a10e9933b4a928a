//! The netstring protocol, the front end's second wire format.
//!
//! A netstring is `LEN:BYTES,` where `LEN` is the payload length in ASCII
//! decimal without sign or leading zeros, e.g. `5:hello,` or `0:,`. Bytes
//! arrive from the network in arbitrary pieces, so [`NetstringDecoder`] is a
//! streaming state machine: it consumes each byte once as it is fed, copies
//! payloads straight into their final buffers, and reports malformed input as
//! soon as the bytes prove it rather than when a message would have ended.

use std::collections::VecDeque;
use std::fmt;

/// Why a byte stream is not a valid sequence of netstrings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetstringError {
    /// The length did not start with an ASCII decimal digit.
    NonNumericLength,
    /// The length has more digits than the largest allowed length, or more
    /// than fit in a `usize`.
    LengthTooLong,
    /// The length was written with a leading zero, as in `05:hello,`.
    LeadingZero,
    /// The length digits were followed by something other than `:`.
    MissingColon,
    /// The payload was not followed by `,`: the length did not match it.
    MissingComma,
    /// The declared length exceeds the decoder's limit.
    TooLarge {
        /// The declared payload length.
        len: usize,
        /// The largest payload the decoder accepts.
        max: usize,
    },
}

impl fmt::Display for NetstringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetstringError::NonNumericLength => f.write_str(
                "netstring must start with its length in ASCII decimal digits, as in `5:hello,`",
            ),
            NetstringError::LengthTooLong => {
                f.write_str("netstring length has more digits than the largest accepted length")
            }
            NetstringError::LeadingZero => {
                f.write_str("netstring length must not have leading zeros, as in `5:hello,`")
            }
            NetstringError::MissingColon => {
                f.write_str("netstring length must be followed by `:`, as in `5:hello,`")
            }
            NetstringError::MissingComma => f.write_str(
                "netstring payload must be followed by `,`: the length must count the payload's bytes exactly",
            ),
            NetstringError::TooLarge { len, max } => write!(
                f,
                "netstring declares a {len}-byte payload but at most {max} bytes are accepted"
            ),
        }
    }
}

impl std::error::Error for NetstringError {}

/// Where the decoder is within the netstring it is currently reading.
#[derive(Debug)]
enum State {
    /// Reading the length; `digits` is 0 between netstrings.
    Length { value: usize, digits: usize },
    /// Reading a payload of `len` declared bytes.
    Payload { payload: Vec<u8>, len: usize },
    /// The payload is complete; only the trailing `,` is missing.
    Comma { payload: Vec<u8> },
    /// Malformed input was seen; everything after it is ignored.
    Poisoned(NetstringError),
}

impl State {
    fn start() -> Self {
        State::Length {
            value: 0,
            digits: 0,
        }
    }
}

/// Splits a byte stream into netstring payloads, however the stream is cut.
///
/// Feed bytes as they arrive, then call [`next_message`](Self::next_message)
/// until it returns `Ok(None)`. Payloads completed before malformed input are
/// still returned, in order; then the error is returned, and from then on the
/// decoder yields nothing but that error.
///
/// ```
/// use prime_server::netstring::{NetstringDecoder, NetstringError};
///
/// let mut decoder = NetstringDecoder::new(1024);
/// decoder.feed(b"5:hello,0:,3:w");
/// assert_eq!(decoder.next_message(), Ok(Some(b"hello".to_vec())));
/// assert_eq!(decoder.next_message(), Ok(Some(Vec::new())));
/// assert_eq!(decoder.next_message(), Ok(None));
/// assert!(decoder.is_mid_message());
///
/// decoder.feed(b"ow,x");
/// assert_eq!(decoder.next_message(), Ok(Some(b"wow".to_vec())));
/// assert_eq!(decoder.next_message(), Err(NetstringError::NonNumericLength));
/// ```
#[derive(Debug)]
pub struct NetstringDecoder {
    max_len: usize,
    max_digits: usize,
    state: State,
    complete: VecDeque<Vec<u8>>,
}

impl NetstringDecoder {
    /// Creates a decoder that rejects payloads longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        NetstringDecoder {
            max_len,
            max_digits: decimal_digits(max_len),
            state: State::start(),
            complete: VecDeque::new(),
        }
    }

    /// Consumes bytes received from the peer, in any split.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let consumed = match std::mem::replace(&mut self.state, State::start()) {
                State::Poisoned(error) => {
                    self.state = State::Poisoned(error);
                    return;
                }
                State::Length { value, digits } => {
                    self.state = self.length_byte(value, digits, bytes[0]);
                    1
                }
                State::Payload { payload, len } => self.payload_bytes(payload, len, bytes),
                State::Comma { payload } => {
                    self.state = self.comma_byte(payload, bytes[0]);
                    1
                }
            };
            bytes = &bytes[consumed..];
        }
    }

    /// Returns the next complete payload, `Ok(None)` if more bytes are needed,
    /// or the error that made the stream invalid.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, NetstringError> {
        if let Some(payload) = self.complete.pop_front() {
            return Ok(Some(payload));
        }
        match &self.state {
            State::Poisoned(error) => Err(error.clone()),
            _ => Ok(None),
        }
    }

    /// Whether part of a netstring has been received but not yet completed,
    /// e.g. to tell a clean disconnect from a truncated message. `false` once
    /// the decoder is poisoned, since the error already accounts for the rest.
    pub fn is_mid_message(&self) -> bool {
        !matches!(
            self.state,
            State::Length { digits: 0, .. } | State::Poisoned(_)
        )
    }

    fn length_byte(&self, value: usize, digits: usize, byte: u8) -> State {
        match byte {
            b'0'..=b'9' if digits == 1 && value == 0 => {
                State::Poisoned(NetstringError::LeadingZero)
            }
            b'0'..=b'9' => self.length_digit(value, digits + 1, usize::from(byte - b'0')),
            b':' if digits > 0 => self.begin_payload(value),
            _ if digits == 0 => State::Poisoned(NetstringError::NonNumericLength),
            _ => State::Poisoned(NetstringError::MissingColon),
        }
    }

    fn length_digit(&self, value: usize, digits: usize, digit: usize) -> State {
        if digits > self.max_digits {
            return State::Poisoned(NetstringError::LengthTooLong);
        }
        match value.checked_mul(10).and_then(|v| v.checked_add(digit)) {
            None => State::Poisoned(NetstringError::LengthTooLong),
            Some(len) if len > self.max_len => State::Poisoned(NetstringError::TooLarge {
                len,
                max: self.max_len,
            }),
            Some(value) => State::Length { value, digits },
        }
    }

    fn begin_payload(&self, len: usize) -> State {
        // `len` is already bounded by `max_len`, so reserving it up front is
        // safe and means the payload is never reallocated.
        State::Payload {
            payload: Vec::with_capacity(len),
            len,
        }
    }

    /// Copies as much of the payload as `bytes` holds; returns how many bytes
    /// it took.
    fn payload_bytes(&mut self, mut payload: Vec<u8>, len: usize, bytes: &[u8]) -> usize {
        let take = (len - payload.len()).min(bytes.len());
        payload.extend_from_slice(&bytes[..take]);
        self.state = if payload.len() == len {
            State::Comma { payload }
        } else {
            State::Payload { payload, len }
        };
        take
    }

    fn comma_byte(&mut self, payload: Vec<u8>, byte: u8) -> State {
        if byte != b',' {
            return State::Poisoned(NetstringError::MissingComma);
        }
        self.complete.push_back(payload);
        State::start()
    }
}

/// Number of decimal digits needed to write `n`.
fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Frames `payload` as a netstring.
///
/// ```
/// assert_eq!(prime_server::netstring::encode(b"hello"), b"5:hello,");
/// ```
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let len = payload.len().to_string();
    let mut framed = Vec::with_capacity(len.len() + payload.len() + 2);
    framed.extend_from_slice(len.as_bytes());
    framed.push(b':');
    framed.extend_from_slice(payload);
    framed.push(b',');
    framed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything the decoder yields until it needs more input or fails.
    fn drain(decoder: &mut NetstringDecoder) -> (Vec<Vec<u8>>, Option<NetstringError>) {
        let mut messages = Vec::new();
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return (messages, None),
                Err(error) => return (messages, Some(error)),
            }
        }
    }

    fn decode_whole(max_len: usize, input: &[u8]) -> (Vec<Vec<u8>>, Option<NetstringError>) {
        let mut decoder = NetstringDecoder::new(max_len);
        decoder.feed(input);
        drain(&mut decoder)
    }

    fn decode_byte_by_byte(max_len: usize, input: &[u8]) -> (Vec<Vec<u8>>, Option<NetstringError>) {
        let mut decoder = NetstringDecoder::new(max_len);
        let mut messages = Vec::new();
        for &byte in input {
            decoder.feed(&[byte]);
            let (mut more, error) = drain(&mut decoder);
            messages.append(&mut more);
            if error.is_some() {
                return (messages, error);
            }
        }
        (messages, None)
    }

    fn error_of(max_len: usize, input: &[u8]) -> Option<NetstringError> {
        decode_whole(max_len, input).1
    }

    #[test]
    fn decodes_one_netstring() {
        assert_eq!(
            decode_whole(100, b"5:hello,"),
            (vec![b"hello".to_vec()], None)
        );
    }

    #[test]
    fn decodes_empty_payload() {
        assert_eq!(decode_whole(0, b"0:,"), (vec![Vec::new()], None));
    }

    #[test]
    fn rejects_non_numeric_length() {
        assert_eq!(error_of(100, b"x"), Some(NetstringError::NonNumericLength));
        assert_eq!(
            error_of(100, b"-5:hello,"),
            Some(NetstringError::NonNumericLength)
        );
        assert_eq!(error_of(100, b":"), Some(NetstringError::NonNumericLength));
        assert_eq!(
            error_of(100, b" 5:hello,"),
            Some(NetstringError::NonNumericLength)
        );
    }

    #[test]
    fn rejects_missing_colon() {
        assert_eq!(error_of(100, b"5x"), Some(NetstringError::MissingColon));
        assert_eq!(
            error_of(100, b"5,hello,"),
            Some(NetstringError::MissingColon)
        );
    }

    #[test]
    fn rejects_leading_zero() {
        assert_eq!(
            error_of(100, b"05:hello,"),
            Some(NetstringError::LeadingZero)
        );
        assert_eq!(error_of(100, b"00:,"), Some(NetstringError::LeadingZero));
    }

    #[test]
    fn rejects_missing_comma() {
        assert_eq!(
            error_of(100, b"5:hello!"),
            Some(NetstringError::MissingComma)
        );
        assert_eq!(
            error_of(100, b"4:hello,"),
            Some(NetstringError::MissingComma)
        );
    }

    #[test]
    fn rejects_too_large_as_soon_as_digits_show_it() {
        assert_eq!(
            error_of(100, b"101"),
            Some(NetstringError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            error_of(0, b"1"),
            Some(NetstringError::TooLarge { len: 1, max: 0 })
        );
        assert_eq!(error_of(100, b"99"), None);
    }

    #[test]
    fn rejects_length_with_too_many_digits_early() {
        assert_eq!(error_of(100, b"1000"), Some(NetstringError::LengthTooLong));
        assert_eq!(error_of(100, b"1001"), Some(NetstringError::LengthTooLong));
        assert_eq!(
            error_of(usize::MAX, b"99999999999999999999"),
            Some(NetstringError::LengthTooLong)
        );
        assert_eq!(
            error_of(usize::MAX, b"999999999999999999999"),
            Some(NetstringError::LengthTooLong)
        );
    }

    #[test]
    fn stays_poisoned_after_an_error() {
        let mut decoder = NetstringDecoder::new(100);
        decoder.feed(b"5:hello,x");
        assert_eq!(decoder.next_message(), Ok(Some(b"hello".to_vec())));
        assert_eq!(
            decoder.next_message(),
            Err(NetstringError::NonNumericLength)
        );
        decoder.feed(b"5:world,");
        assert_eq!(
            decoder.next_message(),
            Err(NetstringError::NonNumericLength)
        );
        assert!(!decoder.is_mid_message());
    }

    #[test]
    fn tracks_whether_a_message_is_in_progress() {
        let mut decoder = NetstringDecoder::new(100);
        assert!(!decoder.is_mid_message());
        for (piece, mid) in [
            (&b"1"[..], true),
            (b"1:", true),
            (b"hello world", true),
            (b",", false),
        ] {
            decoder.feed(piece);
            assert_eq!(decoder.is_mid_message(), mid, "after {piece:?}");
        }
        assert_eq!(drain(&mut decoder), (vec![b"hello world".to_vec()], None));
    }

    #[test]
    fn decodes_many_coalesced_netstrings() {
        let payloads: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'a' + (i % 26) as u8; i]).collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| encode(p)).collect();
        assert_eq!(decode_whole(1000, &stream), (payloads.clone(), None));
        assert_eq!(decode_byte_by_byte(1000, &stream), (payloads, None));
    }

    #[test]
    fn decodes_one_megabyte_payload() {
        let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let stream = encode(&payload);
        assert_eq!(
            decode_whole(1 << 20, &stream),
            (vec![payload.clone()], None)
        );
        let mut decoder = NetstringDecoder::new(1 << 20);
        for chunk in stream.chunks(1500) {
            decoder.feed(chunk);
        }
        assert_eq!(drain(&mut decoder), (vec![payload], None));
    }

    #[test]
    fn encodes() {
        assert_eq!(encode(b""), b"0:,");
        assert_eq!(encode(b"hello"), b"5:hello,");
        assert_eq!(encode(&[b'x'; 12])[..3], *b"12:");
    }

    #[test]
    fn errors_explain_themselves() {
        let message = NetstringError::TooLarge { len: 200, max: 100 }.to_string();
        assert!(
            message.contains("200") && message.contains("100"),
            "{message}"
        );
    }

    /// Decodes `input` fed in pieces of the given sizes (cycled).
    fn decode_in_pieces(
        max_len: usize,
        input: &[u8],
        sizes: &[usize],
    ) -> (Vec<Vec<u8>>, Option<NetstringError>) {
        let mut decoder = NetstringDecoder::new(max_len);
        let mut rest = input;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            decoder.feed(piece);
            rest = tail;
        }
        drain(&mut decoder)
    }

    /// Mostly-valid streams with occasional corruption, to reach every state.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let valid = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8)
            .prop_map(|payloads| payloads.iter().flat_map(|p| encode(p)).collect::<Vec<u8>>());
        (
            valid,
            any::<bool>(),
            any::<prop::sample::Index>(),
            any::<u8>(),
        )
            .prop_map(|(mut bytes, corrupt, at, byte)| {
                if corrupt && !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes
            })
    }

    proptest! {
        #[test]
        fn split_independent(
            input in prop_oneof![stream(), prop::collection::vec(any::<u8>(), 0..200)],
            sizes in prop::collection::vec(1usize..16, 1..8),
            max_len in 0usize..64,
        ) {
            let whole = decode_whole(max_len, &input);
            prop_assert_eq!(&decode_in_pieces(max_len, &input, &sizes), &whole);
            prop_assert_eq!(&decode_byte_by_byte(max_len, &input), &whole);
        }

        #[test]
        fn round_trips(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..10)) {
            let stream: Vec<u8> = payloads.iter().flat_map(|p| encode(p)).collect();
            prop_assert_eq!(decode_whole(100, &stream), (payloads, None));
        }
    }
}
