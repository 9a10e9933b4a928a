//! Header fields read straight from a request head as received (the request line, then
//! `name: value` lines; RFC 9112 §5), without parsing the whole request again: for the
//! front end's few per-request questions (task name, `Prefer`, `Origin`) and the job
//! machinery's. Field names compare case-insensitively (RFC 9110 §5.1); values are
//! trimmed of optional whitespace (RFC 9110 §5.5).

/// The values of every field named `name` (case-insensitive) in a request head.
pub fn field_values<'h>(head: &'h [u8], name: &'h str) -> impl Iterator<Item = &'h [u8]> + 'h {
    head.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
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
