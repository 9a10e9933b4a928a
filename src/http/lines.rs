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
        let Some(offset) = memchr::memchr(b'\n', unscanned) else {
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
