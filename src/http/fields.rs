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
