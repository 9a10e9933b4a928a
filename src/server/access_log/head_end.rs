//! Where a response's head ends (its first `\r\n\r\n`), found for every logged answer.
//!
//! memchr's `memmem` looks for the needle's rarest bytes first, but every byte of
//! `\r\n\r\n` ends each header line, so on a head it checks a candidate per line. Here
//! the test is a `\r` two bytes after a `\r`, which in a well-formed head only the blank
//! line has: 32 positions per round with SSE2 (part of every x86-64), the rest by
//! `memmem`.

use memchr::memmem::Finder;

/// The blank line that ends a response's head.
pub(super) const HEAD_END: &[u8] = b"\r\n\r\n";

/// A finder of [`HEAD_END`].
pub(super) struct HeadEnd(Finder<'static>);

impl HeadEnd {
    pub(super) fn new() -> Self {
        HeadEnd(Finder::new(HEAD_END))
    }

    /// The index of the first [`HEAD_END`] in `bytes`.
    pub(super) fn find(&self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{
                __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
                _mm_set1_epi8,
            };
            // Positions at..at + 32, each with the byte two after it: 34 bytes read.
            while at + 34 <= bytes.len() {
                // SAFETY: SSE2 is part of x86-64; the four 16-byte loads start at `at`,
                // `at + 2`, `at + 16` and `at + 18`, so the last ends at `at + 34`, within
                // `bytes`; unaligned loads need no alignment.
                let marks = unsafe {
                    let cr = _mm_set1_epi8(b'\r' as i8);
                    let load = |i: usize| _mm_loadu_si128(bytes.as_ptr().add(i).cast::<__m128i>());
                    let pairs = |i: usize| {
                        let both = _mm_and_si128(
                            _mm_cmpeq_epi8(load(i), cr),
                            _mm_cmpeq_epi8(load(i + 2), cr),
                        );
                        _mm_movemask_epi8(both) as u32 & 0xffff
                    };
                    pairs(at) | pairs(at + 16) << 16
                };
                let mut marks = marks;
                while marks != 0 {
                    let candidate = at + marks.trailing_zeros() as usize;
                    if bytes[candidate..].starts_with(HEAD_END) {
                        return Some(candidate);
                    }
                    marks &= marks - 1;
                }
                at += 32;
            }
        }
        // The positions left (all of them elsewhere).
        self.0.find(&bytes[at..]).map(|found| at + found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_first_blank_line_is_found_as_memmem_finds_it(
            bytes in proptest::collection::vec(
                proptest::sample::select(&b"\r\n\r\nab"[..]), 0..120),
        ) {
            let expected = memchr::memmem::find(&bytes, HEAD_END);
            proptest::prop_assert_eq!(HeadEnd::new().find(&bytes), expected);
        }
    }

    #[test]
    fn a_head_is_found_at_any_offset() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nDate: x\r\n\r\nabc\r\n\r\n";
        for pad in 0..70 {
            let mut bytes = vec![b'x'; pad];
            bytes.extend_from_slice(head);
            let expected = memchr::memmem::find(&bytes, HEAD_END);
            assert_eq!(HeadEnd::new().find(&bytes), expected, "{pad}");
        }
        assert_eq!(HeadEnd::new().find(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
