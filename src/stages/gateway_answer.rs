//! A backend's answer as the gateway's lean client (`gateway_plain`) reads it: the
//! head's and the body's bytes in one buffer and where each field lies in it, with no
//! `http::Response` or `HeaderMap` made. A plain answer is rendered straight from these
//! fields (`gateway_wire::render_plain`); only one the general path must read (GRIP
//! instructions, a 1xx, a field that is not visible ASCII) becomes an
//! `http::Response` ([`PlainAnswer::into_response`]), the same one the client made
//! before.
//!
//! Also here, what the client decides from an answer's head: whether its connection
//! may serve again (RFC 9112 §9.3) and how its body is delimited (RFC 9112 §6.3).

use super::gateway_backend::{CallError, MAX_ANSWER_FIELDS};
use super::gateway_wire::PlainParts;
use bytes::Bytes;
use std::mem::MaybeUninit;
use std::ops::Range;
use ureq::http;

/// Where one field of an answer's head lies in [`PlainAnswer`]'s bytes.
struct FieldAt {
    name: Range<usize>,
    value: Range<usize>,
}

/// A backend's answer read by the lean client: status, version, and the head's and
/// body's bytes in one buffer (the field names lowercased, as `http::HeaderName`
/// holds them).
pub(super) struct PlainAnswer {
    status: http::StatusCode,
    /// HTTP/1.0 (else HTTP/1.1).
    http10: bool,
    /// The head (status line, fields, the empty line), then the body.
    bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    head_len: usize,
    fields: Vec<FieldAt>,
}

/// An answer head that is not one: said as the client says it.
fn invalid(e: &dyn std::fmt::Display) -> CallError {
    CallError::Unreached(format!("the backend's answer is not HTTP/1.1: {e}"))
}

impl PlainAnswer {
    /// The answer head at the start of `bytes`, and its length, once it is all there;
    /// its body is added with [`PlainAnswer::set_body`].
    ///
    /// Errors: a malformed head (RFC 9112 §4, §5), a status outside 100-999, or more
    /// than [`MAX_ANSWER_FIELDS`] fields.
    pub(super) fn parse_head(bytes: &[u8]) -> Result<Option<(Self, usize)>, CallError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_ANSWER_FIELDS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, bytes, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&e)),
        };
        let code = parsed.code.unwrap_or_default();
        let status = http::StatusCode::from_u16(code).map_err(|e| invalid(&e))?;
        // Room for what was read: a usual answer's body came with its head.
        let mut head = Vec::with_capacity(bytes.len());
        head.extend_from_slice(&bytes[..len]);
        let base = bytes.as_ptr() as usize;
        let mut fields = Vec::with_capacity(parsed.headers.len());
        for field in parsed.headers.iter() {
            // Where httparse read the name and the value in `bytes`.
            let name = (field.name.as_ptr() as usize).wrapping_sub(base);
            let value = (field.value.as_ptr() as usize).wrapping_sub(base);
            let name = name..name + field.name.len();
            let value = value..value + field.value.len();
            if name.end > len || value.end > len {
                return Err(invalid(&"a field outside the head"));
            }
            if let Some(name) = head.get_mut(name.clone()) {
                name.make_ascii_lowercase();
            }
            fields.push(FieldAt { name, value });
        }
        let answer = PlainAnswer {
            status,
            http10: parsed.version == Some(0),
            bytes: head,
            head_len: len,
            fields,
        };
        Ok(Some((answer, len)))
    }

    /// Ends the answer with `body` after its head.
    pub(super) fn set_body(&mut self, body: &[u8]) {
        self.bytes.truncate(self.head_len);
        self.bytes.extend_from_slice(body);
    }

    /// Its status.
    pub(super) fn status(&self) -> http::StatusCode {
        self.status
    }

    /// Its body.
    pub(super) fn body(&self) -> &[u8] {
        self.bytes.get(self.head_len..).unwrap_or_default()
    }

    /// Its fields in order, as (lowercase name, value).
    pub(super) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|at| {
            let name = self.bytes.get(at.name.clone()).unwrap_or_default();
            (name, self.bytes.get(at.value.clone()).unwrap_or_default())
        })
    }

    /// The values of the fields named `name` (lowercase), in order.
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// The answer's parts as [`render_plain`](super::gateway_wire::render_plain) reads them.
    pub(super) fn parts(&self) -> PlainParts<'_, impl Iterator<Item = (&[u8], &[u8])>> {
        PlainParts {
            status: self.status.as_u16(),
            fields: self.fields(),
            body: self.body(),
        }
    }

    /// Whether a field is named `name` (lowercase).
    fn has(&self, name: &str) -> bool {
        self.get_all(name).next().is_some()
    }

    /// The answer as an `http::Response`, its field values slices of one copy of its
    /// head: what the general path reads.
    ///
    /// Errors: a field name or value `http` refuses (httparse refuses the same ones
    /// first, so none is expected).
    pub(super) fn into_response(self) -> Result<http::Response<Bytes>, CallError> {
        let mut headers = http::HeaderMap::with_capacity(self.fields.len());
        let bytes = Bytes::from(self.bytes);
        for at in &self.fields {
            let name = bytes.get(at.name.clone()).unwrap_or_default();
            let name = http::HeaderName::from_bytes(name).map_err(|e| invalid(&e))?;
            let value = http::HeaderValue::from_maybe_shared(bytes.slice(at.value.clone()))
                .map_err(|e| invalid(&e))?;
            headers.append(name, value);
        }
        let mut response = http::Response::new(bytes.slice(self.head_len..));
        *response.status_mut() = self.status;
        *response.version_mut() = if self.http10 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        };
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Whether the connection may carry another request after this answer: HTTP/1.1
    /// unless it says `close`, HTTP/1.0 only if it says `keep-alive` (RFC 9112 §9.3).
    pub(super) fn may_serve_again(&self) -> bool {
        let says = |token: &str| {
            self.get_all("connection")
                .flat_map(|v| v.split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        };
        if self.http10 {
            says("keep-alive")
        } else {
            !says("close")
        }
    }

    /// Whether the answer has both `Transfer-Encoding` and `Content-Length`, after
    /// which the connection is not used again (RFC 9112 §6.3).
    pub(super) fn is_framed_twice(&self) -> bool {
        self.has("transfer-encoding") && self.has("content-length")
    }

    /// How the body of this answer is delimited (RFC 9112 §6.3); `head_request` says
    /// whether it answers a HEAD request.
    ///
    /// Errors: a `Content-Length` that is not one decimal number.
    pub(super) fn framing(&self, head_request: bool) -> Result<Framing, CallError> {
        let status = self.status;
        if head_request
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Empty);
        }
        if self.has("transfer-encoding") {
            let last = self
                .get_all("transfer-encoding")
                .flat_map(|v| v.split(|&b| b == b','))
                .map(|t| t.trim_ascii())
                .filter(|t| !t.is_empty())
                .last();
            return Ok(match last {
                Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
                _ => Framing::UntilClose,
            });
        }
        let mut length = None;
        for value in self.get_all("content-length") {
            for part in value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                let parsed = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                    .then(|| {
                        part.iter().try_fold(0u64, |n, &digit| {
                            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
                        })
                    })
                    .flatten();
                match (parsed, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => {
                        return Err(CallError::Unreached(
                            "the backend's answer has an invalid content-length".to_string(),
                        ))
                    }
                }
            }
        }
        Ok(length.map_or(Framing::UntilClose, Framing::Length))
    }
}

/// How an answer's body is delimited (RFC 9112 §6.3).
pub(super) enum Framing {
    /// None: a HEAD request's answer, a 204 or a 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &[u8]) -> PlainAnswer {
        let (answer, len) = PlainAnswer::parse_head(head).unwrap().unwrap();
        assert_eq!(len, head.len());
        answer
    }

    #[test]
    fn fields_keep_their_order_with_lowercase_names() {
        let mut answer =
            parsed(b"HTTP/1.1 201 Created\r\nX-A: 1\r\nSet-Cookie: a\r\nset-cookie: b\r\n\r\n");
        answer.set_body(b"body");
        assert_eq!(answer.status(), 201);
        let fields: Vec<_> = answer.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"x-a"[..], &b"1"[..]),
                (b"set-cookie", b"a"),
                (b"set-cookie", b"b")
            ]
        );
        assert_eq!(answer.body(), b"body");
        let response = answer.into_response().unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(&response.body()[..], b"body");
    }

    #[test]
    fn a_partial_head_is_none_and_a_bad_one_an_error() {
        assert!(matches!(PlainAnswer::parse_head(b""), Ok(None)));
        assert!(matches!(
            PlainAnswer::parse_head(b"HTTP/1.1 200 OK\r\nX-A"),
            Ok(None)
        ));
        assert!(PlainAnswer::parse_head(b"HTTP/1.1 099 Low\r\n\r\n").is_err());
        assert!(PlainAnswer::parse_head(b"not HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn keep_alive_and_framing_follow_rfc_9112() {
        assert!(parsed(b"HTTP/1.1 200 OK\r\n\r\n").may_serve_again());
        assert!(!parsed(b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\n\r\n").may_serve_again());
        assert!(!parsed(b"HTTP/1.0 200 OK\r\n\r\n").may_serve_again());
        assert!(parsed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").may_serve_again());
        let framing = |head: &[u8], head_request| parsed(head).framing(head_request);
        assert!(matches!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
            Ok(Framing::Length(5))
        ));
        assert!(matches!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok(Framing::Empty)
        ));
        assert!(matches!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                false
            ),
            Ok(Framing::Chunked)
        ));
        assert!(matches!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false
            ),
            Ok(Framing::UntilClose)
        ));
        assert!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", false).is_err());
        let twice =
            parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(twice.is_framed_twice());
    }
}
