//! From a request-target to a file under the root, refusing every way out of it.
//!
//! The target's path is split into segments before any is percent-decoded, so an
//! encoded slash (`%2f`) cannot make a new segment; a segment that decodes to `.` or
//! `..`, or that holds a slash, a backslash or NUL, is refused, as is a malformed
//! percent sign. What remains is joined under the root and canonicalized (symbolic
//! links followed); the result must still lie under the canonical root, so a link
//! inside the root that points outside it is refused too, while one that stays inside
//! is followed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where a request-target leads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resolved {
    /// A path under the root, canonical: a file, or something that is not one (the
    /// caller checks what it opens).
    File(PathBuf),
    /// A directory named without its trailing slash: the client is sent to this
    /// location (the path with the slash, and the query if any), RFC 9110 §15.4.2.
    Redirect(String),
}

/// Why a target leads nowhere; every refusal is answered 404 alike, and the reason
/// goes to the debug log only.
pub(super) type Refusal = &'static str;

/// Resolves `target` (a request-target as received) under `root` (canonical), serving
/// `index` for a directory.
pub(super) fn resolve(root: &Path, target: &str, index: &str) -> Result<Resolved, Refusal> {
    let (path, query) = origin_path(target).ok_or("not a path")?;
    let (segments, trailing_slash) = decode_segments(path)?;
    let mut candidate = root.to_path_buf();
    for segment in &segments {
        candidate.push(OsStr::from_bytes(segment));
    }
    let real = inside(root, &candidate)?;
    let metadata = std::fs::metadata(&real).map_err(|_| "cannot be read")?;
    if metadata.is_dir() {
        if !trailing_slash && !segments.is_empty() {
            return Ok(Resolved::Redirect(location(&segments, query)));
        }
        return Ok(Resolved::File(inside(root, &real.join(index))?));
    }
    if trailing_slash {
        return Err("a file named as a directory");
    }
    Ok(Resolved::File(real))
}

/// `path` canonicalized, if it exists and lies under `root`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Refusal> {
    let real = path.canonicalize().map_err(|_| "no such file")?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err("outside the root")
    }
}

/// The path and the query of an origin-form or absolute-form target (RFC 9112 §3.2).
fn origin_path(target: &str) -> Option<(&str, Option<&str>)> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if path.starts_with('/') {
        return Some((path, query));
    }
    // absolute-form: scheme "://" authority path
    let (_, rest) = path.split_once("://")?;
    Some((rest.find('/').map_or("/", |at| &rest[at..]), query))
}

/// The decoded segments of `path` (empty ones dropped) and whether it ends with `/`.
fn decode_segments(path: &str) -> Result<(Vec<Vec<u8>>, bool), Refusal> {
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|raw| !raw.is_empty()) {
        let segment = percent_decode(raw.as_bytes()).ok_or("a malformed percent sign")?;
        if segment == b"." || segment == b".." {
            return Err("a dot segment");
        }
        if segment.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Err("a slash, backslash or NUL in a segment");
        }
        segments.push(segment);
    }
    Ok((segments, path.ends_with('/')))
}

/// Decodes `%XX` (RFC 3986 §2.1); `None` for a `%` not followed by two hex digits.
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let high = (*bytes.next()? as char).to_digit(16)?;
        let low = (*bytes.next()? as char).to_digit(16)?;
        out.push((high * 16 + low) as u8);
    }
    Some(out)
}

/// The location of a directory with its trailing slash: its segments encoded again
/// (so the location is the client's own path, normalized: never `//host`).
fn location(segments: &[Vec<u8>], query: Option<&str>) -> String {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        for &b in segment {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out.push('/');
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_decoded_one_by_one_and_ways_out_are_refused() {
        assert_eq!(
            decode_segments("/a%20b//c/"),
            Ok((vec![b"a b".to_vec(), b"c".to_vec()], true))
        );
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/%2E%2e",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "/a%zz",
            "/a%2",
            "/./a",
        ] {
            assert!(decode_segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_give_their_path_and_query() {
        assert_eq!(origin_path("/a?b=1"), Some(("/a", Some("b=1"))));
        assert_eq!(origin_path("http://h:1/x/y"), Some(("/x/y", None)));
        assert_eq!(origin_path("http://h"), Some(("/", None)));
        assert_eq!(origin_path("*"), None);
        assert_eq!(
            location(&[b"a b".to_vec(), b"c".to_vec()], Some("q=1")),
            "/a%20b/c/?q=1"
        );
    }
}
