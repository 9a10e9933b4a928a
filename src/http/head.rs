//! Parsing a complete request head with httparse and reading the header
//! fields that decide framing and connection handling (RFC 9112 §6, §9).

use std::mem::MaybeUninit;
use std::ops::Range;

use super::plain;
use super::{Limits, ParseError};

/// The request method, with the common ones named. Any token is accepted here:
/// whether a method is allowed is the application's decision (`405`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// Any other token; the name is the head's first word.
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// How the body that follows a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (requests are never read until close).
    None,
    /// Exactly this many bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the front end needs from a head, validated.
#[derive(Debug)]
pub(super) struct HeadInfo {
    pub(super) method: Method,
    pub(super) minor_version: u8,
    pub(super) keep_alive: bool,
    pub(super) target: Range<usize>,
    pub(super) framing: Framing,
    pub(super) expect_continue: bool,
    pub(super) has_prefer: bool,
    pub(super) has_upgrade: bool,
}

/// Heads with at most this many lines are parsed without a heap allocation.
const STACK_HEADERS: usize = 24;

/// Runs httparse over a complete head and hands the result to `f`.
pub(super) fn with_parsed<'h, R>(
    head: &'h [u8],
    f: impl FnOnce(&httparse::Request<'_, 'h>) -> Result<R, ParseError>,
) -> Result<R, ParseError> {
    with_parsed_fields(head, None, f)
}

/// [`with_parsed`] for a head known to hold at most `fields` header lines (when the
/// caller has counted them while scanning), so no slot beyond them is prepared.
fn with_parsed_fields<'h, R>(
    head: &'h [u8],
    fields: Option<usize>,
    f: impl FnOnce(&httparse::Request<'_, 'h>) -> Result<R, ParseError>,
) -> Result<R, ParseError> {
    // The usual few headers fit on the stack: try there first, without counting lines,
    // in slots httparse fills itself (so none is initialized in vain).
    let mut on_stack = [MaybeUninit::<httparse::Header<'h>>::uninit(); STACK_HEADERS];
    if fields.is_none_or(|n| n <= STACK_HEADERS) {
        let slots = fields.unwrap_or(STACK_HEADERS);
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, &mut on_stack[..slots]) {
            Ok(httparse::Status::Complete(_)) => return f(&req),
            Ok(httparse::Status::Partial) => return Err(ParseError::MalformedHeader),
            // More fields than slots: count them and parse again with room for all.
            Err(httparse::Error::TooManyHeaders) => {}
            Err(err) => return Err(classify_error(err, head)),
        }
    }
    // Every header occupies a line, so the line count bounds the slots needed.
    let slots = head.iter().filter(|&&b| b == b'\n').count();
    let mut on_heap = vec![httparse::EMPTY_HEADER; slots];
    let mut req = httparse::Request::new(&mut on_heap);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => f(&req),
        Ok(httparse::Status::Partial) => Err(ParseError::MalformedHeader),
        Err(err) => Err(classify_error(err, head)),
    }
}

/// httparse does not say where it failed; re-parsing the request line alone
/// tells a bad request line from a bad header.
fn classify_error(err: httparse::Error, head: &[u8]) -> ParseError {
    if err == httparse::Error::TooManyHeaders {
        return ParseError::MalformedHeader;
    }
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |i| i + 1);
    let line = &head[..line_end];
    if httparse::Request::new(&mut []).parse(line).is_ok() {
        return ParseError::MalformedHeader;
    }
    if err == httparse::Error::Version && has_numeric_version(line) {
        ParseError::UnsupportedVersion
    } else {
        ParseError::MalformedRequestLine
    }
}

/// `HTTP/x.y` with single digits: a version we could name but do not speak.
fn has_numeric_version(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.nth(2).unwrap_or_default();
    parts.next().is_none()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// RFC 9112 §2.3: a request of a later HTTP/1.x minor version (`HTTP/1.2` ...) is
/// served as HTTP/1.1, the highest we speak. httparse, here and in every worker that
/// parses the forwarded head again, knows only 1.0 and 1.1, so the version in the
/// request line (with its line ending) is rewritten in place to `HTTP/1.1`.
pub(super) fn serve_later_minor_as_1_1(request_line: &mut [u8]) {
    let line_end = request_line.len()
        - request_line
            .iter()
            .rev()
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .count();
    let Some(start) = line_end.checked_sub(9) else {
        return;
    };
    if let [b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] =
        &mut request_line[start..line_end]
    {
        if matches!(minor, b'2'..=b'9') {
            *minor = b'1';
        }
    }
}

/// Parses and validates a complete head for the front end; `fields` is the number of
/// header lines the scanner counted in it (a bound for httparse's slots).
pub(super) fn parse_head(
    head: &[u8],
    fields: usize,
    max_body: usize,
) -> Result<HeadInfo, ParseError> {
    with_parsed_fields(head, Some(fields), |req| {
        let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
        else {
            return Err(ParseError::MalformedRequestLine);
        };
        let mut fields = Fields::new(minor_version);
        for header in req.headers.iter() {
            fields.add(header.name.as_bytes(), header.value)?;
        }
        let target_start = path.as_ptr() as usize - head.as_ptr() as usize;
        let target = target_start..target_start + path.len();
        head_info(method, minor_version, target, fields, max_body)
    })
}

/// [`parse_head`] in one pass for a plain head at the start of `input` ([`plain`]):
/// the head's length and what it says, or the error the general path would give it.
/// `None` when the head is not plain or not complete: the general path then reads it.
pub(super) fn parse_plain_head(
    input: &[u8],
    limits: &Limits,
) -> Option<Result<(usize, HeadInfo), ParseError>> {
    let line = plain::request_line(input, limits)?;
    let mut fields = Fields::new(line.minor_version);
    // A field's fault counts only once the whole head is known to be plain and
    // complete: the general path, reading it, would see no other first.
    let mut fault = None;
    let len = plain::fields(input, line.len, limits, |name, value| {
        if fault.is_none() {
            fault = fields.add(name, value).err();
        }
    })?;
    if let Some(err) = fault {
        return Some(Err(err));
    }
    let info = head_info(
        line.method,
        line.minor_version,
        line.target,
        fields,
        limits.max_body,
    );
    Some(info.map(|info| (len, info)))
}

/// What a head says, from its request line's parts and its fields.
fn head_info(
    method: &str,
    minor_version: u8,
    target: Range<usize>,
    fields: Fields<'_>,
    max_body: usize,
) -> Result<HeadInfo, ParseError> {
    let fields = fields.finish()?;
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty;
    // refused rather than guessed at, as a proxy in front may frame it otherwise.
    if minor_version == 0 && fields.transfer_encoding {
        return Err(ParseError::TransferEncodingInHttp10);
    }
    let framing = fields.framing(max_body)?;
    Ok(HeadInfo {
        method: Method::from_token(method),
        minor_version,
        keep_alive: fields.keep_alive,
        target,
        framing,
        expect_continue: fields.expect_continue,
        has_prefer: fields.has_prefer,
        has_upgrade: fields.has_upgrade,
    })
}

/// The framing and connection fields of one head, gathered a field at a time.
struct Fields<'a> {
    /// The request's minor version (1.0 and 1.1 differ in their defaults).
    minor_version: u8,
    content_length: Option<&'a [u8]>,
    transfer_encoding: bool,
    chunked_count: usize,
    unknown_coding: bool,
    /// Whether the last coding listed (over every Transfer-Encoding line) is chunked.
    chunked_last: bool,
    keep_alive: bool,
    /// Whether a `Connection` field listed `close`.
    close: bool,
    expect_continue: bool,
    has_prefer: bool,
    has_upgrade: bool,
    hosts: usize,
}

impl<'a> Fields<'a> {
    fn new(minor_version: u8) -> Self {
        Fields {
            minor_version,
            content_length: None,
            transfer_encoding: false,
            chunked_count: 0,
            unknown_coding: false,
            chunked_last: false,
            keep_alive: minor_version == 1,
            close: false,
            expect_continue: false,
            has_prefer: false,
            has_upgrade: false,
            hosts: 0,
        }
    }

    /// Reads one field, in the head's order.
    fn add(&mut self, name: &[u8], value: &'a [u8]) -> Result<(), ParseError> {
        if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // Repeats are refused even when equal: one less way for two
            // parsers on the path to disagree about the body length.
            if self.content_length.replace(value).is_some() {
                return Err(ParseError::InvalidContentLength);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            for coding in list_items(value) {
                let coding = coding.split(|&b| b == b';').next().unwrap_or_default();
                self.chunked_last = coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if self.chunked_last {
                    self.chunked_count += 1;
                } else {
                    self.unknown_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_items(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 §10.1.1: never send 100 Continue to an HTTP/1.0 client.
            self.expect_continue =
                self.minor_version == 1 && value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"prefer") {
            self.has_prefer = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.has_upgrade = true;
        }
        Ok(())
    }

    /// Once every field is read: the checks over all of them.
    fn finish(mut self) -> Result<Self, ParseError> {
        match self.hosts {
            0 if self.minor_version == 1 => return Err(ParseError::MissingHost),
            0 | 1 => {}
            _ => return Err(ParseError::MultipleHost),
        }
        self.keep_alive &= !self.close;
        Ok(self)
    }

    fn framing(&self, max_body: usize) -> Result<Framing, ParseError> {
        if self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(ParseError::ContentLengthWithTransferEncoding);
            }
            // RFC 9112 §6.3: unless chunked is the final coding (and applied once),
            // the body's length cannot be known: 400, and the connection closes. Only
            // a well-framed body in a coding we lack (`gzip, chunked`) is 501.
            return match (self.chunked_last, self.chunked_count, self.unknown_coding) {
                (true, 1, false) => Ok(Framing::Chunked),
                (true, 1, true) => Err(ParseError::UnsupportedTransferCoding),
                _ => Err(ParseError::InvalidTransferEncoding),
            };
        }
        match self.content_length {
            None => Ok(Framing::None),
            Some(value) => match parse_content_length(value, max_body)? {
                0 => Ok(Framing::None),
                n => Ok(Framing::Length(n)),
            },
        }
    }
}

/// `1*DIGIT`, nothing else; a number too big for u64 is certainly too big.
fn parse_content_length(value: &[u8], max_body: usize) -> Result<u64, ParseError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidContentLength);
    }
    let too_large = ParseError::BodyTooLarge { limit: max_body };
    let length = value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    match length {
        Some(n) if n <= max_body as u64 => Ok(n),
        _ => Err(too_large),
    }
}

/// The non-empty, trimmed elements of a comma-separated field value.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}
