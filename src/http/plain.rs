//! One pass over a plain request head: its end and its parts found together.
//!
//! The general path reads a head twice: a line scanner finds where it ends (the bytes
//! may arrive in any pieces), then httparse splits the same bytes into the request
//! line and the fields. Nearly every head a server sees is plain (visible ASCII, CRLF
//! line ends, no folding), and arrives whole; for one, this module does both in a
//! single pass, the runs of the target and of each field value sixteen bytes at a time
//! ([`request_line`], then [`fields`]).
//!
//! It accepts only heads that httparse accepts and reads the way httparse reads them
//! (the same method, target, version and fields), within the [`Limits`], and says
//! `None` for anything else: a head not yet complete, a bare LF, a tab, a control
//! byte or a byte above `0x7e` anywhere, an HTTP version other than 1.0 and 1.1, more
//! than [`MAX_FIELDS`] fields. The caller then takes the general path, which tells
//! what is wrong, if anything is; so a head is never refused here, and no rule lives
//! in two places.

use std::ops::Range;

use super::Limits;

/// A plain head reads at most this many fields (a longer head takes the general path).
pub(super) const MAX_FIELDS: usize = 24;

/// The request line of a plain head.
#[derive(Debug)]
pub(super) struct RequestLine<'h> {
    /// The method token.
    pub(super) method: &'h str,
    /// Where the request-target lies in the head.
    pub(super) target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(super) minor_version: u8,
    /// The line's length in bytes, its CRLF included: where the fields start.
    pub(super) len: usize,
}

/// Reads the plain request line at the start of `input` (no empty line before it).
/// `None` when it is not plain, not complete in `input`, or longer than `limits` allow.
pub(super) fn request_line<'h>(input: &'h [u8], limits: &Limits) -> Option<RequestLine<'h>> {
    // The method: the usual one at once, else a run of token bytes.
    let method_len = if input.starts_with(b"GET ") {
        3
    } else {
        input.iter().take_while(|&&b| TOKEN[usize::from(b)]).count()
    };
    if method_len == 0 || input.get(method_len) != Some(&b' ') {
        return None;
    }
    // The target: visible ASCII up to a space.
    let target_start = method_len + 1;
    let target_end = run_above(input, target_start, b'!');
    if target_end == target_start {
        return None;
    }
    let minor_version = match input.get(target_end..target_end + 11)? {
        [b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor @ (b'0' | b'1'), b'\r', b'\n'] => {
            minor - b'0'
        }
        _ => return None,
    };
    if target_end + 9 > limits.max_request_line {
        return None;
    }
    Some(RequestLine {
        // SAFETY: every byte of the method is a token byte (ASCII), and ASCII is UTF-8.
        method: unsafe { std::str::from_utf8_unchecked(&input[..method_len]) },
        target: target_start..target_end,
        minor_version,
        len: target_end + 11,
    })
}

/// Reads the plain header section at `from` in `input`, through its blank line, handing
/// each field's name and value (leading and trailing spaces removed, as httparse gives
/// it) to `field` in order; the index just past the blank line. `None` when the section
/// is not plain, not complete in `input`, or past one of `limits` (`field` may have been
/// called for some fields already).
pub(super) fn fields<'h>(
    input: &'h [u8],
    from: usize,
    limits: &Limits,
    mut field: impl FnMut(&'h [u8], &'h [u8]),
) -> Option<usize> {
    let mut at = from;
    let mut count = 0;
    loop {
        if input.get(at..at + 2)? == b"\r\n" {
            at += 2;
            break;
        }
        let name_start = at;
        while input.get(at).is_some_and(|&b| TOKEN[usize::from(b)]) {
            at += 1;
        }
        if at == name_start || input.get(at) != Some(&b':') {
            return None;
        }
        let name = &input[name_start..at];
        at += 1;
        while input.get(at) == Some(&b' ') {
            at += 1;
        }
        let value_start = at;
        at = run_above(input, at, b' ');
        if input.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        let mut value_end = at;
        while value_end > value_start && input[value_end - 1] == b' ' {
            value_end -= 1;
        }
        at += 2;
        count += 1;
        if count > MAX_FIELDS.min(limits.max_headers) {
            return None;
        }
        field(name, &input[value_start..value_end]);
    }
    (at - from <= limits.max_header_bytes).then_some(at)
}

/// The index of the first byte at or after `from` that is below `floor` or above
/// `0x7e` (a control, DEL or a byte of UTF-8 beyond ASCII): sixteen bytes per round with
/// SSE2 (part of every x86-64) while sixteen remain, then one by one. `floor` is at
/// most `0x7e`.
fn run_above(bytes: &[u8], from: usize, floor: u8) -> usize {
    let mut at = from;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        while at + 16 <= bytes.len() {
            // SAFETY: SSE2 is part of x86-64; the 16-byte load starts at `at` and ends
            // at `at + 16`, within `bytes`; an unaligned load needs no alignment.
            let stops = unsafe {
                let word = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                // Signed: the bytes from 0x80 up are negative, so below `floor` too.
                let below = _mm_cmplt_epi8(word, _mm_set1_epi8(floor as i8));
                let del = _mm_cmpeq_epi8(word, _mm_set1_epi8(0x7f));
                _mm_movemask_epi8(_mm_or_si128(below, del)) as u32
            };
            if stops != 0 {
                return at + stops.trailing_zeros() as usize;
            }
            at += 16;
        }
    }
    while at < bytes.len() && (floor..=0x7e).contains(&bytes[at]) {
        at += 1;
    }
    at
}

/// The bytes of a token (RFC 9110 §5.6.2): letters, digits and ``!#$%&'*+-.^_`|~``.
pub(super) const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::{mutated, mutated_with_delimiters};
    use proptest::prelude::*;

    /// The request line, the fields and the head's length.
    type Read<'h> = (RequestLine<'h>, Vec<(String, String)>, usize);

    fn read(input: &[u8]) -> Option<Read<'_>> {
        let limits = Limits::default();
        let line = request_line(input, &limits)?;
        let mut read = Vec::new();
        let len = fields(input, line.len, &limits, |name, value| {
            read.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        })?;
        Some((line, read, len))
    }

    #[test]
    fn a_plain_head_is_read_whole() {
        let input = b"GET /is_prime?n=7 HTTP/1.1\r\nHost: x\r\nA:\r\nB:  b c  \r\n\r\nGET";
        let (line, fields, len) = read(input).expect("a plain head");
        assert_eq!(line.method, "GET");
        assert_eq!(&input[line.target.clone()], b"/is_prime?n=7");
        assert_eq!(line.minor_version, 1);
        assert_eq!(len, input.len() - 3);
        let want = [("Host", "x"), ("A", ""), ("B", "b c")];
        let want: Vec<_> = want.map(|(n, v)| (n.to_string(), v.to_string())).into();
        assert_eq!(fields, want);
    }

    #[test]
    fn anything_else_is_left_to_the_general_path() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\tx\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\x7f\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(read(input).is_none(), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn runs_stop_at_the_first_byte_outside_at_every_offset() {
        for len in 0..70 {
            for stop in 0..len {
                for byte in [b' ', b'\r', 0x7f, 0x80, 0xff] {
                    let mut bytes = vec![b'a'; len];
                    bytes[stop] = byte;
                    assert_eq!(run_above(&bytes, 0, b'!'), stop, "{len} {stop} {byte}");
                }
                let mut bytes = vec![b' '; len];
                bytes[stop] = b'\r';
                assert_eq!(run_above(&bytes, 0, b' '), stop, "{len} {stop}");
            }
            assert_eq!(run_above(&vec![b'~'; len], 0, b'!'), len);
        }
    }

    /// A head as read: method, target, minor version, fields, length.
    type HeadRead = (String, String, u8, Vec<(Vec<u8>, Vec<u8>)>, usize);

    fn read_plain(input: &[u8]) -> Option<HeadRead> {
        let limits = Limits::default();
        let line = request_line(input, &limits)?;
        let mut read = Vec::new();
        let len = fields(input, line.len, &limits, |name, value| {
            read.push((name.to_vec(), value.to_vec()));
        })?;
        let target = String::from_utf8(input[line.target].to_vec()).ok()?;
        Some((line.method.into(), target, line.minor_version, read, len))
    }

    fn read_httparse(input: &[u8]) -> Option<HeadRead> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = req.parse(input).ok()? else {
            return None;
        };
        let fields = req.headers.iter();
        let fields = fields.map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()));
        Some((
            req.method?.into(),
            req.path?.into(),
            req.version?,
            fields.collect(),
            len,
        ))
    }

    proptest! {
        // Edits that matter here (a space before a CR, a tab) are a few in thousands
        // of cases: more cases than the default, at a fraction of a second.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Every head the one pass reads, httparse reads alike: the same request line, the
        /// same fields (names and values byte for byte), the same length.
        #[test]
        fn the_one_pass_reads_what_httparse_reads(
            input in prop_oneof![mutated(), mutated_with_delimiters()],
        ) {
            if let Some(plain) = read_plain(&input) {
                prop_assert_eq!(Some(plain), read_httparse(&input));
            }
        }
    }
}
