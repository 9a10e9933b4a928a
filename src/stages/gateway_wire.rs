//! The gateway's messages as bytes: the client's request read in place from the head
//! the front end forwarded ([`with_head`]: no owned copy of its fields), the backend
//! request's header values written one after the other into one buffer ([`Fields`]:
//! one allocation for all of them, which a retry's copy shares), and a plain backend
//! answer written straight into the client's bytes ([`render_plain`]), with no
//! intermediate [`Response`](crate::http::Response). What needs more (a WebSocket, GRIP
//! instructions, a field that is not visible ASCII, a head httparse cannot read in its
//! slots) takes the gateway's general path, which gives the same bytes.

use super::api::StageError;
use super::grip::GRIP_INSTRUCT;
use crate::pipeline::worker::ANSWER_ROOM;
use bytes::{Bytes, BytesMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use ureq::http;

/// The most header fields read in place; a head with more takes the general path.
const IN_PLACE_FIELDS: usize = 32;

/// The fields of a plain answer rendered without a heap allocation for their list.
const ANSWER_ON_STACK: usize = 32;

/// A client's request as the gateway forwards it, borrowed from where it lies.
pub(super) struct Asking<'a, 'b> {
    /// The method token.
    pub(super) method: &'a str,
    /// The request-target as received.
    pub(super) target: &'a str,
    /// The header fields in order, names as received.
    pub(super) fields: &'a [httparse::Header<'b>],
    /// The (decoded) body.
    pub(super) body: &'a [u8],
}

/// Reads `head` (a head as the front end forwards it, which it has already checked)
/// in place and hands it with `body` to `forward`; `None` (nothing called) when the
/// head does not read in [`IN_PLACE_FIELDS`] slots, or asks for an `Upgrade`, so the
/// general path decides.
pub(super) fn with_head<R>(
    head: &[u8],
    body: &[u8],
    forward: impl FnOnce(&Asking<'_, '_>) -> R,
) -> Option<R> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); IN_PLACE_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut slots) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return None;
    };
    if request
        .headers
        .iter()
        .any(|field| field.name.eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    Some(forward(&Asking {
        method,
        target,
        fields: request.headers,
        body,
    }))
}

/// A backend request's header fields in the making: each value is written after the
/// one before in one buffer, and [`Fields::into_map`] makes every `HeaderValue` a
/// slice of it (one allocation for all values; copying the map shares them).
pub(super) struct Fields {
    text: BytesMut,
    /// Each field's name and where its value ends in `text`.
    ends: Vec<(http::HeaderName, usize)>,
}

impl Fields {
    /// Room for `fields` fields whose values take about `bytes` bytes.
    pub(super) fn with_capacity(fields: usize, bytes: usize) -> Self {
        Fields {
            text: BytesMut::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Adds a field, after the others.
    pub(super) fn push(&mut self, name: http::HeaderName, value: &[u8]) {
        self.extend(value);
        self.end(name);
    }

    /// Writes `bytes` at the end of the value being made.
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        self.text.extend_from_slice(bytes);
    }

    /// Adds `value` to the comma-separated list being made (RFC 9110 §5.3).
    pub(super) fn join(&mut self, value: &[u8]) {
        if self.text.len() > self.start() {
            self.extend(b", ");
        }
        self.extend(value);
    }

    /// Ends the value being made as the field `name`'s.
    pub(super) fn end(&mut self, name: http::HeaderName) {
        self.ends.push((name, self.text.len()));
    }

    /// [`end`](Self::end), unless the value is empty (then nothing is added).
    pub(super) fn end_unless_empty(&mut self, name: http::HeaderName) {
        if self.text.len() > self.start() {
            self.end(name);
        }
    }

    /// Where the value being made starts.
    fn start(&self) -> usize {
        self.ends.last().map_or(0, |&(_, end)| end)
    }

    /// Adds a field whose value is a number's decimal digits.
    pub(super) fn push_number(&mut self, name: http::HeaderName, value: u64) {
        let mut digits = [0; 20];
        self.push(name, crate::http::decimal(value, &mut digits));
    }

    /// Writes the fields as a head's lines (`name: value` and CRLF each, RFC 9112 §5),
    /// in the order added, after what `out` holds; the names as [`http::HeaderName`]
    /// holds them (lowercase), as hyper wrote them.
    ///
    /// Errors: a value that is not a field value, as [`Fields::into_map`] refuses it
    /// (then nothing is written).
    pub(super) fn write_lines(&self, out: &mut Vec<u8>) -> Result<(), NotAFieldValue> {
        // Every value at once: they lie one after the other in `text`.
        if !is_field_text(&self.text) {
            return Err(NotAFieldValue);
        }
        let names: usize = self.ends.iter().map(|(name, _)| name.as_str().len()).sum();
        out.reserve(self.text.len() + names + 4 * self.ends.len());
        let mut start = 0;
        for (name, end) in &self.ends {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&self.text[start..*end]);
            out.extend_from_slice(b"\r\n");
            start = *end;
        }
        Ok(())
    }

    /// The fields as a map, in the order added.
    ///
    /// Errors: the first value that is not a field value (a control character, RFC
    /// 9110 §5.5).
    pub(super) fn into_map(self) -> Result<http::HeaderMap, http::header::InvalidHeaderValue> {
        let text = self.text.freeze();
        let mut map = http::HeaderMap::with_capacity(self.ends.len());
        let mut start = 0;
        for (name, end) in self.ends {
            map.append(
                name,
                http::HeaderValue::from_maybe_shared(text.slice(start..end))?,
            );
            start = end;
        }
        Ok(map)
    }
}

/// Whether `text` is all what `HeaderValue` accepts: visible ASCII, obs-text, space and
/// tab (no other control character, no DEL: RFC 9110 §5.5). Eight bytes at a time: a
/// word with no byte below 0x20 and none 0x7F passes whole; only a word with one
/// (a tab, or an error) is looked at byte by byte.
fn is_field_text(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let byte_ok = |b: &u8| (*b >= 32 && *b != 127) || *b == b'\t';
    let mut words = text.chunks_exact(8);
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_ne_bytes(bytes);
        // A byte below 0x20 (exact for "any": Hacker's Delight's `hasless`), or a byte
        // 0x7F (one that XOR 0x7F leaves zero).
        let below = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let del = w ^ (ONES * 0x7F);
        let del = del.wrapping_sub(ONES) & !del & HIGHS;
        if (below | del) != 0 && !word.iter().all(byte_ok) {
            return false;
        }
    }
    words.remainder().iter().all(byte_ok)
}

/// A value that is not a field value (a control character, RFC 9110 §5.5): said as
/// [`http::header::InvalidHeaderValue`] says it.
#[derive(Debug)]
pub(super) struct NotAFieldValue;

impl std::fmt::Display for NotAFieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed to parse header value")
    }
}

impl std::error::Error for NotAFieldValue {}

/// What the client's request asked of its answer, which a plain render follows.
#[derive(Clone, Copy)]
pub(super) struct Answering {
    /// The client's HTTP/1.x minor version.
    pub(super) minor_version: u8,
    pub(super) keep_alive: bool,
    /// Only the head goes out (a HEAD request).
    pub(super) head_only: bool,
    /// A HEAD answer's `Content-Length` is kept.
    pub(super) keep_length: bool,
}

/// A backend's answer as a plain render reads it: its status, its fields in order as
/// (lowercase name, value) bytes, its body.
pub(super) struct PlainParts<'a, F> {
    pub(super) status: u16,
    pub(super) fields: F,
    pub(super) body: &'a [u8],
}

/// The parts of an `http::Response` (hyper's answers) for [`render_plain`].
pub(super) fn parts_of(
    answer: &http::Response<Bytes>,
) -> PlainParts<'_, impl Iterator<Item = (&[u8], &[u8])>> {
    PlainParts {
        status: answer.status().as_u16(),
        fields: answer
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        body: answer.body(),
    }
}

/// Whether every byte of `value` is what `HeaderValue::to_str` takes: visible ASCII,
/// space or tab.
fn is_visible_ascii(value: &[u8]) -> bool {
    value.iter().all(|&b| (32..127).contains(&b) || b == b'\t')
}

/// Appends to `out` a backend's answer as the client's HTTP bytes (as `asking` says),
/// hop-by-hop fields dropped: what the general path renders, when the answer is a
/// plain one. False, and nothing written, for an answer the general path must read: a
/// 1xx, GRIP instructions (a `Grip-*` field, or `Content-Type:
/// application/grip-instruct`), or a field value that is not visible ASCII (the
/// general path reads it lossily).
pub(super) fn render_plain<'a>(
    out: &mut Vec<u8>,
    answer: PlainParts<'a, impl Iterator<Item = (&'a [u8], &'a [u8])>>,
    answering: Answering,
) -> bool {
    let status = answer.status;
    if (100..200).contains(&status) {
        return false;
    }
    // The usual few fields on the stack; more on the heap.
    let mut on_stack: [(&[u8], &[u8]); ANSWER_ON_STACK] = [(b"", b""); ANSWER_ON_STACK];
    let mut on_heap = Vec::new();
    let mut count = 0;
    for (name, value) in answer.fields {
        // Names come lowercase (`HeaderName`'s, or the lean client's).
        if !is_visible_ascii(value) || name.starts_with(b"grip-") {
            return false;
        }
        if name == b"content-type"
            && value.split(|&b| b == b';').next().is_some_and(|t| {
                t.trim_ascii()
                    .eq_ignore_ascii_case(GRIP_INSTRUCT.as_bytes())
            })
        {
            return false;
        }
        match on_stack.get_mut(count) {
            Some(slot) => *slot = (name, value),
            None => {
                if on_heap.is_empty() {
                    on_heap.extend_from_slice(&on_stack);
                }
                on_heap.push((name, value));
            }
        }
        count += 1;
    }
    let fields = match on_stack.get_mut(..count) {
        Some(fields) => fields,
        None => &mut on_heap[..],
    };
    let connection = connection_options(
        fields
            .iter()
            .filter(|(name, _)| *name == b"connection")
            .map(|&(_, value)| value),
    );
    // The fields that go on, moved to the front.
    let mut kept = 0;
    for at in 0..fields.len() {
        let field = fields[at];
        let kept_length = answering.keep_length && field.0 == b"content-length";
        if is_hop_by_hop(field.0, &connection) && !kept_length {
            continue;
        }
        fields[kept] = field;
        kept += 1;
    }
    crate::http::write_response(
        out,
        status,
        &fields[..kept],
        answer.body,
        answering.minor_version,
        answering.keep_alive,
        answering.head_only,
    );
    true
}

/// The most bytes the thread's answer buffer ([`ANSWER`]) keeps between answers: a
/// larger answer's buffer is given back, not held by an idle thread.
const ANSWER_KEPT: usize = 64 * 1024;

thread_local! {
    /// Where a gateway thread renders a plain answer before its one copy into the frame
    /// that travels: reused, so an answer costs no allocation of its own.
    static ANSWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A plain answer rendered by [`render_plain`] into the thread's buffer behind the
/// room for its lead ([`ANSWER_ROOM`]), then copied once into its frame; `None` when
/// the general path must take it.
pub(super) fn plain_frame<'a>(
    answer: PlainParts<'a, impl Iterator<Item = (&'a [u8], &'a [u8])>>,
    answering: Answering,
) -> Option<zmq::Message> {
    ANSWER.with_borrow_mut(|out| {
        out.clear();
        out.resize(ANSWER_ROOM, 0);
        let plain = render_plain(out, answer, answering);
        let frame = plain.then(|| zmq::Message::from(&out[..]));
        if out.capacity() > ANSWER_KEPT {
            *out = Vec::new();
        }
        frame
    })
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), plus the framing fields the next hop sets anew.
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Whether a field named `name` stops at this hop, given the message's `Connection`
/// values.
pub(super) fn is_hop_by_hop(name: impl AsRef<[u8]>, connection: &[&[u8]]) -> bool {
    let name = name.as_ref();
    // The length rules out most names before any comparison.
    let listed = match name.len() {
        2 | 4 | 7 | 10 | 14 | 16..=19 => HOP_BY_HOP
            .iter()
            .any(|h| h.len() == name.len() && name.eq_ignore_ascii_case(h.as_bytes())),
        _ => false,
    };
    listed || connection.iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// The most `Connection` options kept without a heap allocation.
const OPTIONS_ON_STACK: usize = 8;

/// The field names a message's `Connection` headers list, borrowed from their values:
/// the first [`OPTIONS_ON_STACK`] on the stack (`Connection: keep-alive`, in most
/// answers, costs no allocation), the rest on the heap. Reads as a slice.
pub(super) struct ConnectionOptions<'a> {
    on_stack: [&'a [u8]; OPTIONS_ON_STACK],
    len: usize,
    /// All of them, once they are more than the stack holds.
    on_heap: Vec<&'a [u8]>,
}

impl<'a> std::ops::Deref for ConnectionOptions<'a> {
    type Target = [&'a [u8]];

    fn deref(&self) -> &Self::Target {
        match self.on_stack.get(..self.len) {
            Some(options) if self.on_heap.is_empty() => options,
            _ => &self.on_heap,
        }
    }
}

/// The field names a message's `Connection` headers list (see [`ConnectionOptions`]).
pub(super) fn connection_options<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> ConnectionOptions<'a> {
    let mut options = ConnectionOptions {
        on_stack: [b""; OPTIONS_ON_STACK],
        len: 0,
        on_heap: Vec::new(),
    };
    let tokens = values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|token| token.trim_ascii())
        .filter(|token| !token.is_empty());
    for token in tokens {
        match options.on_stack.get_mut(options.len) {
            Some(slot) if options.on_heap.is_empty() => *slot = token,
            _ => {
                if options.on_heap.is_empty() {
                    options.on_heap.extend_from_slice(&options.on_stack);
                }
                options.on_heap.push(token);
            }
        }
        options.len += 1;
    }
    options
}

// The names of the fields the gateway adds, made once (a name made at run time is
// looked up in the table of standard names first).
pub(super) static FORWARDED: http::HeaderName = http::header::FORWARDED;
pub(super) static X_FORWARDED_FOR: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_HOST: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-host");
pub(super) static X_REAL_IP: http::HeaderName = http::HeaderName::from_static("x-real-ip");
pub(super) static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
pub(super) static X_PRIME_SIGNATURE: http::HeaderName =
    http::HeaderName::from_static("x-prime-signature");
pub(super) static GRIP_SIG_NAME: http::HeaderName = http::HeaderName::from_static("grip-sig");

/// An address as text, on the stack: IPv4 written digit by digit (`Display` pads
/// through the formatter, which costs more than the rest of the field), IPv6 as
/// `Display` has it.
pub(super) struct IpText {
    bytes: [u8; 45],
    len: usize,
}

impl IpText {
    /// The text of `ip`.
    pub(super) fn of(ip: std::net::IpAddr) -> Self {
        let mut text = IpText {
            bytes: [0; 45],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut text.bytes[..];
                // The longest IPv6 text (an IPv4-mapped one) takes 45 bytes.
                let _ = write!(rest, "{v6}");
                let left = rest.len();
                text.len = text.bytes.len() - left;
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// The text's bytes (ASCII).
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A `Forwarded` node (RFC 7239 §6): an IPv4 address bare, an IPv6 address in
/// brackets and quotes, either quoted with `:port` when the port is known (not 0), and
/// `unknown` without an address.
pub(super) fn forwarded_node(client: Option<SocketAddr>) -> String {
    match client {
        None => "unknown".to_string(),
        Some(SocketAddr::V4(a)) if a.port() == 0 => a.ip().to_string(),
        Some(SocketAddr::V4(a)) => format!("\"{a}\""),
        Some(SocketAddr::V6(a)) if a.port() == 0 => format!("\"[{}]\"", a.ip()),
        Some(SocketAddr::V6(a)) => format!("\"[{}]:{}\"", a.ip(), a.port()),
    }
}

/// The path and query of a request-target (origin-form, or absolute-form reduced).
pub(super) fn origin_form(target: &str) -> Result<&str, StageError> {
    if target.starts_with('/') {
        return Ok(target);
    }
    let after_scheme = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .ok_or_else(|| StageError::bad_request("this request-target cannot be forwarded"))?;
    Ok(after_scheme
        .find('/')
        .map(|at| &after_scheme[at..])
        .unwrap_or("/"))
}
#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_values_in_one_buffer() {
        let mut fields = Fields::with_capacity(4, 16);
        fields.push(http::header::ACCEPT, b"*/*");
        fields.join(b"a");
        fields.join(b"b");
        fields.end(X_FORWARDED_FOR.clone());
        // An empty value adds no field.
        fields.end_unless_empty(X_FORWARDED_HOST.clone());
        fields.push_number(X_REQUEST_ID.clone(), 907);
        let map = fields.into_map().unwrap();
        let all: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            all,
            [
                ("accept", &b"*/*"[..]),
                ("x-forwarded-for", b"a, b"),
                ("x-request-id", b"907"),
            ]
        );
        let mut bad = Fields::with_capacity(1, 8);
        bad.push(http::header::ACCEPT, b"a\rb");
        assert!(bad.into_map().is_err());
    }

    #[test]
    fn heads_are_read_in_place_unless_they_ask_an_upgrade_or_do_not_fit() {
        let head = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: c=1\r\n\r\n";
        let read = with_head(head, b"body", |asking| {
            let fields: Vec<String> = asking
                .fields
                .iter()
                .map(|f| format!("{}: {}", f.name, String::from_utf8_lossy(f.value)))
                .collect();
            let line = format!("{} {}", asking.method, asking.target);
            (line, fields, asking.body.to_vec())
        });
        assert_eq!(
            read,
            Some((
                "POST /a?b=1".to_string(),
                vec!["Host: x".to_string(), "Cookie: c=1".to_string()],
                b"body".to_vec()
            ))
        );
        let upgrade = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(with_head(upgrade, b"", |_| ()), None);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=IN_PLACE_FIELDS {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(with_head(&many, b"", |_| ()), None);
        assert_eq!(with_head(b"GET / HTTP/1.1\r\nHost", b"", |_| ()), None);
    }

    /// An answer from the backend, as hyper gives it (the gateway's tests use it too).
    pub(in crate::stages) fn answer(
        status: u16,
        fields: &[(&str, &[u8])],
        body: &'static [u8],
    ) -> http::Response<Bytes> {
        let mut answer = http::Response::new(Bytes::from_static(body));
        *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (name, value) in fields {
            answer.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        answer
    }

    #[test]
    fn field_text_refuses_control_characters_and_del_wherever_they_are() {
        let line = b"text/plain; q=1\t\x80\xff visible ~ and more of it";
        assert!(is_field_text(line));
        assert!(is_field_text(b""));
        for at in 0..line.len() {
            for bad in [0u8, b'\r', b'\n', 0x1f, 0x7f] {
                let mut text = line.to_vec();
                text[at] = bad;
                assert!(!is_field_text(&text), "{bad:#x} at {at}");
            }
        }
    }

    #[test]
    fn grip_instructions_1xx_and_obs_text_take_the_general_path() {
        let answering = Answering {
            minor_version: 1,
            keep_alive: true,
            head_only: false,
            keep_length: false,
        };
        let general = |fields: &[(&str, &[u8])], status: u16| {
            let answer = answer(status, fields, b"");
            !render_plain(&mut Vec::new(), parts_of(&answer), answering)
        };
        assert!(general(&[("Grip-Hold", b"response")], 200));
        assert!(general(
            &[("Content-Type", b"Application/GRIP-Instruct; x=1")],
            200
        ));
        assert!(general(&[("X-Name", b"caf\xe9")], 200));
        assert!(general(&[], 103));
        assert!(!general(&[("Content-Type", b"text/plain")], 200));
    }

    #[test]
    fn connection_names_more_hop_by_hop_fields() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name.to_ascii_uppercase(), &[]), "{name}");
        }
        assert!(!is_hop_by_hop("x-forwarded-for", &[]));
        let named = connection_options([&b"close, X-Secret-Hop"[..], b"Foo"].into_iter());
        assert_eq!(&named[..], [&b"close"[..], b"X-Secret-Hop", b"Foo"]);
        // More than the stack holds: all of them, in order.
        let many: Vec<String> = (0..2 * OPTIONS_ON_STACK + 1)
            .map(|i| format!("h{i}"))
            .collect();
        let joined = many.join(", ");
        let listed = connection_options(std::iter::once(joined.as_bytes()));
        let expected: Vec<&[u8]> = many.iter().map(|h| h.as_bytes()).collect();
        assert_eq!(&listed[..], &expected[..]);
        assert!(is_hop_by_hop("x-secret-hop", &named));
        assert!(is_hop_by_hop("FOO", &named));
        assert!(is_hop_by_hop("Transfer-Encoding", &named));
        assert!(!is_hop_by_hop("Authorization", &named));
        assert!(!is_hop_by_hop("Cookie", &named));
    }

    #[test]
    fn forwarded_nodes_follow_rfc_7239_section_6() {
        let node = |text: &str| forwarded_node(Some(text.parse().unwrap()));
        assert_eq!(node("192.0.2.43:0"), "192.0.2.43");
        assert_eq!(node("192.0.2.43:47011"), "\"192.0.2.43:47011\"");
        assert_eq!(node("[2001:db8:cafe::17]:0"), "\"[2001:db8:cafe::17]\"");
        assert_eq!(
            node("[2001:db8:cafe::17]:4711"),
            "\"[2001:db8:cafe::17]:4711\""
        );
        assert_eq!(forwarded_node(None), "unknown");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "192.0.2.43",
            "255.255.255.255",
            "2001:db8::17",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            assert_eq!(IpText::of(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn absolute_targets_are_reduced_to_path_and_query() {
        assert_eq!(origin_form("/a?b=1").unwrap(), "/a?b=1");
        assert_eq!(origin_form("http://h:1/a?b").unwrap(), "/a?b");
        assert_eq!(origin_form("http://h:1").unwrap(), "/");
        assert!(origin_form("*").is_err());
    }
}
