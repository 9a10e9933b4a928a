//! Decoding a chunked body (RFC 9112 §7.1) as its bytes arrive: a request's, and a
//! gateway backend's answer's.
//!
//! A frame boundary may fall anywhere: inside the size digits, inside a chunk
//! extension, between the CR and LF, inside chunk data or inside a trailer.
//! The decoder consumes what it can, leaves incomplete lines for the next
//! call, and remembers how far it has already scanned them.

use super::lines::{LineScanner, SectionScanner};
use super::{Limits, ParseError};

/// Chunk-size lines longer than this (CRLF not counted) are refused, whether the
/// line arrives whole or in pieces: extensions are ignored, so a long one can only
/// be an attempt to make us buffer.
const MAX_CHUNK_LINE: usize = 4096;

/// State of one chunked body between calls.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
}

#[derive(Debug)]
enum State {
    SizeLine(LineScanner),
    Data(u64),
    DataEnd,
    Trailers(SectionScanner),
}

/// How much input one [`ChunkedDecoder::decode`] call used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) consumed: usize,
    pub(crate) done: bool,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeLine(LineScanner::default()),
        }
    }

    /// Decodes from the start of the unconsumed `input`, appending chunk data
    /// to `body`. Bytes not reported as consumed must be passed again, with
    /// any newly received bytes after them.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        limits: &Limits,
    ) -> Result<Progress, ParseError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let pending = Progress {
                consumed: pos,
                done: false,
            };
            match &mut self.state {
                State::SizeLine(scanner) => {
                    let Some(line) = scanner.next_line(rest) else {
                        if scanner.partial_len(rest) > MAX_CHUNK_LINE {
                            return Err(ParseError::InvalidChunkSize);
                        }
                        return Ok(pending);
                    };
                    if line.len() > MAX_CHUNK_LINE {
                        return Err(ParseError::InvalidChunkSize);
                    }
                    // The CRLF is required here; a bare LF is not accepted in
                    // framing that a proxy in front might read differently.
                    if rest.get(line.end) != Some(&b'\r') {
                        return Err(ParseError::InvalidChunkSize);
                    }
                    let size = parse_chunk_size(&rest[line])?;
                    pos += scanner.consumed();
                    self.state = if size == 0 {
                        State::Trailers(SectionScanner::default())
                    } else if size > limits.max_body.saturating_sub(body.len()) as u64 {
                        return Err(ParseError::BodyTooLarge {
                            limit: limits.max_body,
                        });
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    let n = (*remaining).min(rest.len() as u64) as usize;
                    body.extend_from_slice(&rest[..n]);
                    pos += n;
                    *remaining -= n as u64;
                    if *remaining > 0 {
                        return Ok(Progress {
                            consumed: pos,
                            done: false,
                        });
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::SizeLine(LineScanner::default());
                    }
                    [] | [b'\r'] => return Ok(pending),
                    _ => return Err(ParseError::InvalidChunkTerminator),
                },
                State::Trailers(scanner) => {
                    let Some(len) = scanner.advance(rest, limits)? else {
                        return Ok(pending);
                    };
                    validate_trailers(&rest[..len], scanner.fields())?;
                    return Ok(Progress {
                        consumed: pos + len,
                        done: true,
                    });
                }
            }
        }
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]` (RFC 9112 §7.1); extensions are ignored but must
/// not hide control characters. BWS (spaces and tabs only) is allowed only before a
/// `;`: `3 \r\n` is a bad chunk line, as is a CR, form feed or other whitespace after
/// the size (a proxy in front may read any of them differently).
fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ParseError::InvalidChunkSize);
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &d| {
        let digit = (d as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(digit))
    });
    let bws = line[digits..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let extension = &line[digits + bws..];
    let extension_ok = match extension.first() {
        None => bws == 0,
        Some(&b) => b == b';',
    } && extension
        .iter()
        .all(|&b| b == b'\t' || !b.is_ascii_control());
    match size {
        Some(size) if extension_ok => Ok(size),
        _ => Err(ParseError::InvalidChunkSize),
    }
}

/// Trailers are dropped, but a malformed one still means a broken message.
fn validate_trailers(section: &[u8], fields: usize) -> Result<(), ParseError> {
    let mut headers = vec![httparse::EMPTY_HEADER; fields];
    match httparse::parse_headers(section, &mut headers) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        _ => Err(ParseError::MalformedTrailer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), ParseError> {
        let mut body = Vec::new();
        let progress = ChunkedDecoder::new().decode(input, &mut body, &Limits::default())?;
        assert!(progress.done, "body not complete");
        Ok((body, progress.consumed))
    }

    #[test]
    fn decodes_chunks_and_stops_after_trailers() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        let (body, consumed) = decode_all(input).expect("valid");
        assert_eq!(body, b"hello!");
        assert_eq!(&input[consumed..], b"NEXT");
    }

    #[test]
    fn size_parsing() {
        assert_eq!(parse_chunk_size(b"1aF"), Ok(0x1af));
        assert_eq!(parse_chunk_size(b"5 ; a=b"), Ok(5));
        assert_eq!(parse_chunk_size(b"5\t;a"), Ok(5));
        assert_eq!(parse_chunk_size(b"000000000000000000005"), Ok(5));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"x",
            b";a",
            b"10000000000000000",
            b"5 x",
            b"-5",
            b"5;\x01",
            b"3\r",
            b"3\x0c",
            b"3\x0b;a",
            b"3\n",
            b"3 ",
            b"5\t \t",
            b"5\t",
        ] {
            assert_eq!(
                parse_chunk_size(bad),
                Err(ParseError::InvalidChunkSize),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn resumes_at_every_split_point() {
        let input = b"3\r\nabc\r\n0\r\nT: v\r\n\r\n";
        for split in 0..=input.len() {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            let limits = Limits::default();
            let mut progress = decoder
                .decode(&input[..split], &mut body, &limits)
                .expect("valid");
            if !progress.done {
                let consumed = progress.consumed;
                progress = decoder
                    .decode(&input[consumed..], &mut body, &limits)
                    .expect("valid");
                progress.consumed += consumed;
            }
            assert!(progress.done, "split {split}");
            assert_eq!(progress.consumed, input.len());
            assert_eq!(body, b"abc");
        }
    }

    #[test]
    fn the_size_line_limit_holds_however_the_line_is_split() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE + 100, b'x');
        line.extend_from_slice(b"\r\nA\r\n0\r\n\r\n");
        for split in [line.len(), 10, MAX_CHUNK_LINE - 1, MAX_CHUNK_LINE + 50] {
            let mut decoder = ChunkedDecoder::new();
            let limits = Limits::default();
            let mut body = Vec::new();
            let first = decoder.decode(&line[..split], &mut body, &limits);
            let result = first.and_then(|progress| {
                decoder.decode(&line[progress.consumed..], &mut body, &limits)
            });
            assert_eq!(result, Err(ParseError::InvalidChunkSize), "split {split}");
        }
        let mut fits = b"1;".to_vec();
        fits.resize(MAX_CHUNK_LINE, b'x');
        fits.extend_from_slice(b"\r\nA\r\n0\r\n\r\n");
        assert_eq!(decode_all(&fits).map(|(body, _)| body), Ok(b"A".to_vec()));
    }

    #[test]
    fn long_size_line_is_refused_before_its_end() {
        let mut decoder = ChunkedDecoder::new();
        let line = [b'0'; MAX_CHUNK_LINE + 1];
        let result = decoder.decode(&line, &mut Vec::new(), &Limits::default());
        assert_eq!(result, Err(ParseError::InvalidChunkSize));
    }
}
