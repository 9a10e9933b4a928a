//! The `Range` header field of a GET (RFC 9110 §14.1.2, §14.2) against a file of known
//! length, and the layout of a `multipart/byteranges` body (§14.6).

/// The most ranges answered as parts; a request for more gets the whole file (RFC 9110
/// §14.2 lets a server ignore `Range`), so a request cannot make one answer out of
/// thousands of tiny parts.
pub(super) const MAX_RANGES: usize = 16;

/// What a `Range` field asks of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ranges {
    /// The whole file: no field, another unit, a malformed set (ignored), or too many
    /// ranges.
    Whole,
    /// These byte ranges, first and last byte inclusive, each within the file; several
    /// only if none overlaps another (overlapping ones are merged, in ascending order).
    Parts(Vec<(u64, u64)>),
    /// No range of the set is satisfiable: `416` with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// Reads a `Range` field for a file of `len` bytes.
pub(super) fn parse(field: &str, len: u64) -> Ranges {
    let field = field.trim();
    let Some((unit, set)) = field.split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Whole;
    }
    let mut parts = Vec::new();
    let mut any = false;
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        any = true;
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let number = |text: &str| -> Option<u64> {
            let text = text.trim();
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())
                .flatten()
        };
        let range = match (first.trim().is_empty(), last.trim().is_empty()) {
            // suffix-range: the last N bytes
            (true, false) => {
                let Some(suffix) = number(last) else {
                    return Ranges::Whole;
                };
                (suffix > 0 && len > 0).then(|| (len - suffix.min(len), len - 1))
            }
            // first-pos "-"
            (false, true) => {
                let Some(first) = number(first) else {
                    return Ranges::Whole;
                };
                (first < len).then(|| (first, len - 1))
            }
            (false, false) => {
                let (Some(first), Some(last)) = (number(first), number(last)) else {
                    return Ranges::Whole;
                };
                if last < first {
                    return Ranges::Whole;
                }
                (first < len).then(|| (first, last.min(len - 1)))
            }
            (true, true) => return Ranges::Whole,
        };
        parts.extend(range);
    }
    if !any {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let parts = merge_overlaps(parts);
    if parts.len() > MAX_RANGES {
        return Ranges::Whole;
    }
    Ranges::Parts(parts)
}

/// The ranges as asked, unless two overlap: then sorted and merged (RFC 9110 §14.2
/// lets a server coalesce them).
fn merge_overlaps(mut parts: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted = parts.clone();
    sorted.sort_unstable();
    if sorted.windows(2).all(|pair| pair[0].1 < pair[1].0) {
        return parts;
    }
    parts.clear();
    for (first, last) in sorted {
        match parts.last_mut() {
            Some((_, end)) if first <= *end => *end = (*end).max(last),
            _ => parts.push((first, last)),
        }
    }
    parts
}

/// A piece of an answer's body: bytes made here, or bytes of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// Made here (a part's head, the closing delimiter).
    Bytes(Vec<u8>),
    /// The file's bytes from this offset, this many.
    File { offset: u64, len: u64 },
}

impl Piece {
    /// Its length in bytes.
    pub(super) fn len(&self) -> u64 {
        match self {
            Piece::Bytes(bytes) => bytes.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

/// The body of a `multipart/byteranges` answer (RFC 9110 §14.6): each part's boundary
/// and header fields, then its bytes; the closing delimiter last.
pub(super) fn multipart(
    parts: &[(u64, u64)],
    len: u64,
    content_type: &str,
    boundary: &str,
) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(parts.len() * 2 + 1);
    for &(first, last) in parts {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {first}-{last}/{len}\r\n\r\n"
        );
        pieces.push(Piece::Bytes(head.into_bytes()));
        pieces.push(Piece::File {
            offset: first,
            len: last - first + 1,
        });
    }
    pieces.push(Piece::Bytes(format!("\r\n--{boundary}--\r\n").into_bytes()));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_sets_are_read_as_rfc_9110_says() {
        let parts = |v: &[(u64, u64)]| Ranges::Parts(v.to_vec());
        assert_eq!(parse("bytes=0-499", 10_000), parts(&[(0, 499)]));
        assert_eq!(parse("bytes=9500-", 10_000), parts(&[(9500, 9999)]));
        assert_eq!(parse("bytes=-500", 10_000), parts(&[(9500, 9999)]));
        assert_eq!(parse("bytes=-50000", 10_000), parts(&[(0, 9999)]));
        assert_eq!(parse("bytes=0-99999", 10_000), parts(&[(0, 9999)]));
        assert_eq!(
            parse("bytes=500-600,0-99", 10_000),
            parts(&[(500, 600), (0, 99)])
        );
        assert_eq!(
            parse("bytes=500-700, 601-999", 10_000),
            parts(&[(500, 999)])
        );
        assert_eq!(parse("bytes=10000-", 10_000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10_000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Ranges::Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(parse(ignored, 10_000), Ranges::Whole, "{ignored}");
        }
        let many: Vec<String> = (0..=MAX_RANGES)
            .map(|i| format!("{}-{}", i * 10, i * 10))
            .collect();
        assert_eq!(
            parse(&format!("bytes={}", many.join(",")), 10_000),
            Ranges::Whole
        );
    }
}
