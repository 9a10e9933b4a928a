//! A file's validators (`ETag`, `Last-Modified`) and the conditional request header
//! fields evaluated against them, in the order of RFC 9110 §13.2.2.

use crate::http::Request;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What identifies one version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Validators {
    /// A strong entity tag with its quotes (RFC 9110 §8.8.3): the file's inode, size
    /// and modification time in nanoseconds, so any change of content through the file
    /// system changes it.
    pub(super) etag: String,
    /// The modification time, to the second (what an HTTP-date can say).
    pub(super) last_modified: SystemTime,
}

impl Validators {
    /// The validators of a file with this metadata.
    pub(super) fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Validators {
            etag: format!(
                "\"{:x}-{:x}-{:x}\"",
                metadata.ino(),
                metadata.len(),
                since.as_nanos()
            ),
            last_modified: UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        }
    }

    /// `Last-Modified` as an IMF-fixdate.
    pub(super) fn last_modified_text(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }
}

/// What the preconditions decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Answer as usual (200, or 206 for a range).
    Proceed,
    /// `304 Not Modified` (a GET or HEAD whose `If-None-Match` or `If-Modified-Since`
    /// holds).
    NotModified,
    /// `412 Precondition Failed` (`If-Match` or `If-Unmodified-Since` does not hold).
    Failed,
}

/// RFC 9110 §13.2.2, for a GET or HEAD of an existing file: `If-Match`, else
/// `If-Unmodified-Since`; then `If-None-Match`, else `If-Modified-Since`. A date that
/// does not parse is ignored, as is `If-Modified-Since` beside `If-None-Match`.
pub(super) fn evaluate(request: &Request, validators: &Validators) -> Precondition {
    if let Some(tags) = field(request, "if-match") {
        if !list_matches(&tags, &validators.etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(date) = date_field(request, "if-unmodified-since") {
        if validators.last_modified > date {
            return Precondition::Failed;
        }
    }
    if let Some(tags) = field(request, "if-none-match") {
        if list_matches(&tags, &validators.etag, false) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = date_field(request, "if-modified-since") {
        if validators.last_modified <= date {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// RFC 9110 §13.1.5: whether a `Range` applies. Without `If-Range` it does; with an
/// entity tag, only if it matches the file's strongly; with a date, only if it is the
/// file's modification time exactly. Otherwise the whole file is sent.
pub(super) fn if_range_holds(request: &Request, validators: &Validators) -> bool {
    let Some(value) = field(request, "if-range") else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return entity_tags(value)
            .first()
            .is_some_and(|tag| !tag.starts_with("W/") && tag.as_str() == validators.etag.as_str());
    }
    httpdate::parse_http_date(value).is_ok_and(|date| date == validators.last_modified)
}

/// Every value of a field, joined as a list (RFC 9110 §5.3).
fn field(request: &Request, name: &str) -> Option<String> {
    let values: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A date field's value, if it parses as an HTTP-date (RFC 9110 §5.6.7).
fn date_field(request: &Request, name: &str) -> Option<SystemTime> {
    // A list of dates is no date: the field must hold one value.
    let value = field(request, name)?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// Whether `*` or one of the entity tags in `list` matches `etag`: strongly (both
/// strong and equal) or weakly (equal once `W/` is set aside), RFC 9110 §8.8.3.2.
fn list_matches(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    entity_tags(list)
        .iter()
        .any(|tag| match tag.strip_prefix("W/") {
            Some(opaque) => !strong && opaque == etag,
            None => tag == etag,
        })
}

/// The entity tags of a list, each with its quotes (and `W/` if weak). Commas may
/// appear inside a tag, so the list is read tag by tag, not split on commas; reading
/// stops at the first thing that is no tag.
fn entity_tags(list: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return tags;
        }
        let (weak, body) = match rest.strip_prefix("W/") {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let Some(quoted) = body.strip_prefix('"') else {
            return tags;
        };
        let Some(end) = quoted.find('"') else {
            return tags;
        };
        let tag = format!("{}\"{}\"", if weak { "W/" } else { "" }, &quoted[..end]);
        tags.push(tag);
        rest = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tag_lists_are_read_tag_by_tag() {
        assert_eq!(
            entity_tags(r#""a,b", W/"c" ,"d""#),
            [r#""a,b""#, r#"W/"c""#, r#""d""#]
        );
        assert!(list_matches(r#"W/"x""#, r#""x""#, false));
        assert!(!list_matches(r#"W/"x""#, r#""x""#, true));
        assert!(list_matches("*", r#""x""#, true));
        assert!(!list_matches(r#""y""#, r#""x""#, false));
    }
}
