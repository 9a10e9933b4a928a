//! The path a gateway sends to its backend: the client's path put under the gateway's
//! base path only after its dot segments are removed (RFC 3986 §5.2.4), so that no
//! request-target reaches a backend path outside the base (`/api` + `/../admin` is
//! `/api/admin`, never `/admin`).
//!
//! A dot segment may also be percent-encoded (`%2e%2e`, RFC 3986 §2.3: `%2E` is `.`);
//! it is removed the same way. One that hides behind an encoded slash or a backslash
//! (`..%2f`, `..\`), which some backends decode or read as `/`, is refused instead: no
//! normalisation here could agree with every backend on where its segments end.

/// Why a path cannot be forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HiddenDotSegment;

impl std::fmt::Display for HiddenDotSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the request-target hides a dot segment (`.` or `..`) behind an encoded slash or a backslash",
        )
    }
}

/// `target` (origin-form: a path starting with `/`, then any `?query`) under `base`
/// (`""` or `/base`, no trailing slash), its dot segments removed first.
///
/// # Errors
/// [`HiddenDotSegment`] when a segment holds a dot segment behind `%2F`, `%5C` or `\`.
pub(crate) fn under_base(base: &str, target: &str) -> Result<String, HiddenDotSegment> {
    let (path, query) = match target.find('?') {
        Some(at) => target.split_at(at),
        None => (target, ""),
    };
    let path = path.strip_prefix('/').unwrap_or(path);
    // Without a dot, a percent sign or a backslash no segment is, or hides, a dot
    // segment: the path goes as it came (what the loop below gives for it, without
    // its list of segments; most paths take this way).
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        let mut out = String::with_capacity(base.len() + 1 + path.len() + query.len());
        out.push_str(base);
        out.push('/');
        out.push_str(path);
        out.push_str(query);
        return Ok(out);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/') {
        trailing_slash = false;
        match dots(segment) {
            Some(1) => trailing_slash = true,
            Some(_) => {
                kept.pop();
                trailing_slash = true;
            }
            None => {
                if hides_dot_segment(segment) {
                    return Err(HiddenDotSegment);
                }
                kept.push(segment);
            }
        }
    }
    let mut out = String::with_capacity(base.len() + target.len() + 1);
    out.push_str(base);
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if kept.is_empty() || trailing_slash {
        out.push('/');
    }
    out.push_str(query);
    Ok(out)
}

/// 1 for `.`, 2 for `..` (either dot possibly written `%2e` or `%2E`), else `None`.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        count += 1;
    }
    matches!(count, 1 | 2).then_some(count)
}

/// Whether a segment, split at encoded slashes and backslashes, holds a dot segment.
fn hides_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    if !(lower.contains('\\') || lower.contains("%2f") || lower.contains("%5c")) {
        return false;
    }
    lower
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/")
        .split('/')
        .any(|piece| dots(piece).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed_before_the_base_is_joined() {
        for (target, expected) in [
            ("/", "/api/"),
            ("/a/b", "/api/a/b"),
            ("/a/b/", "/api/a/b/"),
            ("/../admin", "/api/admin"),
            ("/../../../etc/passwd?x=1", "/api/etc/passwd?x=1"),
            ("/a/./b/../c", "/api/a/c"),
            ("/a/b/..", "/api/a/"),
            ("/a/.", "/api/a/"),
            ("/..", "/api/"),
            ("/%2e%2e/admin", "/api/admin"),
            ("/.%2E/admin", "/api/admin"),
            ("/a//../b", "/api/a/b"),
            ("/a?next=/../x", "/api/a?next=/../x"),
            ("/...", "/api/..."),
            ("/a..b", "/api/a..b"),
        ] {
            assert_eq!(
                under_base("/api", target).as_deref(),
                Ok(expected),
                "{target}"
            );
        }
        assert_eq!(under_base("", "/../x").as_deref(), Ok("/x"));
        // Paths without a dot segment, with and without a base, as they came.
        for target in ["/", "//", "/a//b", "/a/b/", "/a?b=/c", "/a%20b", "/a.b/c"] {
            assert_eq!(under_base("", target).as_deref(), Ok(target), "{target}");
            let expected = format!("/api{target}");
            assert_eq!(under_base("/api", target), Ok(expected), "{target}");
        }
    }

    #[test]
    fn a_dot_segment_behind_an_encoded_slash_or_backslash_is_refused() {
        for target in ["/..%2fadmin", "/a/..%2F..%2Fx", "/..\\admin", "/x%5c..%5cy"] {
            assert_eq!(
                under_base("/api", target),
                Err(HiddenDotSegment),
                "{target}"
            );
        }
        assert_eq!(under_base("/api", "/a%2Fb").as_deref(), Ok("/api/a%2Fb"));
    }
}
