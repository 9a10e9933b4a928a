//! Header fields read straight from a request head as received (the request line, then
//! `name: value` lines; RFC 9112 §5), without parsing the whole request again: for the
//! front end's few per-request questions (task name, `Prefer`, `Origin`) and the job
//! machinery's. Field names compare case-insensitively (RFC 9110 §5.1); values are
//! trimmed of optional whitespace (RFC 9110 §5.5).

/// The values of every field named `name` (case-insensitive) in a request head.
///
/// Lines are found with `memchr` and a line is compared only where its name would end
/// (a field name holds no colon, so a line is `name`'s when its first colon follows
/// `name`'s length of bytes equal to it): no byte-by-byte split of the head, whose
/// request line alone is longer than most fields (about 1,400 instructions for a short
/// head before, some 200 after; the job machinery asks three to five fields a submit).
pub fn field_values<'h>(head: &'h [u8], name: &'h str) -> impl Iterator<Item = &'h [u8]> + 'h {
    let name = name.as_bytes();
    // A name with a colon is never a field's (the name ends at the line's first one).
    let mut rest: &[u8] = match memchr::memchr(b'\n', head) {
        Some(at) if !name.contains(&b':') => &head[at + 1..],
        _ => &[],
    };
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let line = match memchr::memchr(b'\n', rest) {
                Some(at) => {
                    let line = &rest[..at];
                    rest = &rest[at + 1..];
                    line
                }
                None => std::mem::take(&mut rest),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.get(name.len()) == Some(&b':') && line[..name.len()].eq_ignore_ascii_case(name)
            {
                return Some(line[name.len() + 1..].trim_ascii());
            }
        }
        None
    })
}

/// The first value of the field `name` in a request head, as text.
pub fn field_text<'h>(head: &'h [u8], name: &'h str) -> Option<&'h str> {
    field_values(head, name)
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Appends a `POST {target} HTTP/1.1` request line and then every header field of
/// `head` (a request head as received, RFC 9112 §5) except those named in `dropped`
/// (compared case-insensitively, RFC 9110 §5.1), each line ending in CRLF; the caller
/// adds its own fields and the blank line. Lines without a colon are left out.
pub fn post_head_without(out: &mut Vec<u8>, target: &str, head: &[u8], dropped: &[&str]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if dropped
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first reading of `field_values`: every line split on its own, the name up to
    /// the line's first colon.
    fn by_split<'h>(head: &'h [u8], name: &'h str) -> Vec<&'h [u8]> {
        head.split(|&b| b == b'\n')
            .skip(1)
            .filter_map(move |line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon]
                    .eq_ignore_ascii_case(name.as_bytes())
                    .then(|| line[colon + 1..].trim_ascii())
            })
            .collect()
    }

    #[test]
    fn every_head_reads_as_when_each_line_was_split() {
        let heads: [&[u8]; 12] = [
            b"GET /is_prime?possible_prime=7 HTTP/1.1\r\nHost: x\r\nPrefer: respond-async\r\n\r\n",
            b"GET / HTTP/1.1\r\nprefer:wait=5\r\nPREFER : no\r\nPrefer:\r\nPrefer:  a ,b \r\n",
            b"GET / HTTP/1.1\nPrefer: lf only\nX: y",
            b"GET / HTTP/1.1\r\nPrefer: last line without its end",
            b"Prefer: on the request line\r\n",
            b"Prefer: no line end at all",
            b"",
            b"\n\n\r\n:\r\n::\r\nPrefer\r\nPrefer:x:y\r\n",
            b"GET / HTTP/1.1\r\nPrefe: short\r\nPreferred: long\r\nPrefer:: colon\r\n",
            b"GET / HTTP/1.1\r\nIdempotency-Key: \"k\"\r\nidempotency-key: 2\r\n",
            b"GET / HTTP/1.1\r\n\r\nPrefer: after the blank line\r\n",
            b"GET / HTTP/1.1\r\nPr\xc3\xa9fer: not ascii\r\nPrefer: \xff\r\n",
        ];
        let names = [
            "prefer",
            "Prefer",
            "idempotency-key",
            "x",
            "",
            ":",
            "a:b",
            "pref",
        ];
        for head in heads {
            for name in names {
                let read: Vec<&[u8]> = field_values(head, name).collect();
                assert_eq!(read, by_split(head, name), "{name:?} in {head:?}");
            }
        }
    }
}
