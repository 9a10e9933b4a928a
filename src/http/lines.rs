//! Incremental line finding over a buffer that grows between calls.
//!
//! Bytes trickle in from the socket in arbitrary pieces, so each scanner
//! remembers how far it has looked: every byte is examined once, however the
//! input was split. Positions are relative to the start of the caller's
//! unconsumed input, which must only grow at the end between calls.

use std::ops::Range;

use super::{Limits, ParseError};

/// Finds LF-terminated lines, remembering its position across calls.
#[derive(Debug, Default)]
pub(super) struct LineScanner {
    line_start: usize,
    scanned: usize,
}

impl LineScanner {
    /// The content range (terminator excluded) of the next complete line, if
    /// one is buffered. A CR right before the LF belongs to the terminator;
    /// a bare LF is accepted too (RFC 9112 §2.2).
    pub(super) fn next_line(&mut self, input: &[u8]) -> Option<Range<usize>> {
        let unscanned = input.get(self.scanned..).unwrap_or_default();
        let Some(offset) = find_lf(unscanned) else {
            self.scanned = input.len();
            return None;
        };
        let lf = self.scanned + offset;
        let end = if lf > self.line_start && input[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        let line = self.line_start..end;
        self.line_start = lf + 1;
        self.scanned = lf + 1;
        Some(line)
    }

    /// Whether no byte has been looked at yet.
    pub(super) fn is_fresh(&self) -> bool {
        self.scanned == 0
    }

    /// Bytes of complete lines seen so far, terminators included.
    pub(super) fn consumed(&self) -> usize {
        self.line_start
    }

    /// Length of the incomplete line at the end of `input`, not counting a
    /// final CR that may turn out to be half of its CRLF.
    pub(super) fn partial_len(&self, input: &[u8]) -> usize {
        let partial = input.get(self.line_start..).unwrap_or_default();
        partial.len() - usize::from(partial.last() == Some(&b'\r'))
    }
}

/// Finds the blank line ending a header (or trailer) section and enforces the
/// section's size and field-count limits while the bytes arrive.
#[derive(Debug, Default)]
pub(super) struct SectionScanner {
    lines: LineScanner,
    fields: usize,
}

impl SectionScanner {
    /// The section's length, blank line included, once it is complete.
    pub(super) fn advance(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, ParseError> {
        let too_large = ParseError::HeaderSectionTooLarge {
            limit: limits.max_header_bytes,
        };
        while let Some(line) = self.lines.next_line(input) {
            if self.lines.consumed() > limits.max_header_bytes {
                return Err(too_large);
            }
            if line.is_empty() {
                return Ok(Some(self.lines.consumed()));
            }
            self.fields += 1;
            if self.fields > limits.max_headers {
                return Err(ParseError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
        }
        // Everything buffered belongs to this section, so it is too large as
        // soon as the buffered bytes are.
        if input.len() > limits.max_header_bytes {
            return Err(too_large);
        }
        Ok(None)
    }

    /// Lines seen so far that were not the blank line: an upper bound on the
    /// number of fields, for sizing httparse's header array.
    pub(super) fn fields(&self) -> usize {
        self.fields
    }
}

/// The index of the first LF in `bytes`. Sixteen bytes per round with SSE2 (part of
/// every x86-64), inline: a request's lines are tens of bytes, and memchr's dispatch
/// costs more than the rounds such a line takes. memchr looks at the last (fewer than
/// 16) bytes, and at all of them on other architectures.
fn find_lf(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        while at + 16 <= bytes.len() {
            // SAFETY: SSE2 is part of x86-64; the 16-byte load starts at `at` and ends
            // at `at + 16`, within `bytes`; an unaligned load needs no alignment.
            let marks = unsafe {
                let word = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                _mm_movemask_epi8(_mm_cmpeq_epi8(word, _mm_set1_epi8(b'\n' as i8))) as u32
            };
            if marks != 0 {
                return Some(at + marks.trailing_zeros() as usize);
            }
            at += 16;
        }
    }
    memchr::memchr(b'\n', &bytes[at..]).map(|found| at + found)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_first_lf_is_found_as_memchr_finds_it(
            bytes in proptest::collection::vec(proptest::sample::select(&b"\r\nab"[..]), 0..80),
        ) {
            proptest::prop_assert_eq!(find_lf(&bytes), memchr::memchr(b'\n', &bytes));
        }
    }

    #[test]
    fn an_lf_is_found_at_every_offset() {
        for len in 0..70 {
            for lf in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[lf] = b'\n';
                assert_eq!(find_lf(&bytes), Some(lf), "{len} {lf}");
            }
            assert_eq!(find_lf(&vec![b'a'; len]), None);
        }
    }
}
