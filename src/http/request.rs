//! The request as a worker sees it, rebuilt from the head and body buffers
//! the front end forwards: owned and whole ([`Request`]), or read in place for
//! a stage that only routes on the request line ([`RequestHead`]).

use super::head;
use super::plain::TOKEN;
use super::ParseError;
use std::borrow::Cow;

/// A forwarded head read in place: the request line borrowed from the frame, the path
/// and query decoded only when asked, and no header copied. What a stage that routes
/// on the path and a query parameter needs, for a fraction of [`Request`]'s cost.
///
/// ```
/// # use prime_server::http::RequestHead;
/// let head = RequestHead::parse(b"GET /a%20b?n=7&n=8 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
/// assert_eq!((head.method, head.minor_version), ("GET", 1));
/// assert_eq!(head.path(), "/a b");
/// assert_eq!(head.query_values("n").collect::<Vec<_>>(), ["7", "8"]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The method token, e.g. `GET`.
    pub method: &'a str,
    /// The request-target as received.
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

impl<'a> RequestHead<'a> {
    /// Reads a head (as in [`ParsedRequest::head`](super::ParsedRequest::head)),
    /// refusing what [`Request::from_parts`] refuses.
    pub fn parse(head: &'a [u8]) -> Result<Self, ParseError> {
        head::with_parsed(head, |req| match (req.method, req.path, req.version) {
            (Some(method), Some(target), Some(minor_version)) => Ok(RequestHead {
                method,
                target,
                minor_version,
            }),
            _ => Err(ParseError::MalformedRequestLine),
        })
    }

    /// Reads only the request line of a head (`METHOD SP target SP HTTP/1.x`), not its
    /// header fields: for a stage behind a front end, which has already read the whole
    /// head and refused what [`parse`](Self::parse) refuses, so that the stage needs no
    /// second parse of every field. The line is still checked: a method of token
    /// characters (RFC 9110 §5.6.2), a target of visible characters (RFC 9112 §3.2)
    /// that is UTF-8, and HTTP/1.0 or HTTP/1.1.
    ///
    /// Errors: [`ParseError::MalformedRequestLine`] for a first line that is not one.
    ///
    /// ```
    /// # use prime_server::http::RequestHead;
    /// let head = RequestHead::parse_request_line(b"GET /is_prime?n=7 HTTP/1.1\r\nHost: x\r\n\r\n");
    /// assert_eq!(head.map(|h| (h.method, h.target)), Ok(("GET", "/is_prime?n=7")));
    /// assert!(RequestHead::parse_request_line(b"GET /a b HTTP/1.1\r\n\r\n").is_err());
    /// ```
    pub fn parse_request_line(head: &'a [u8]) -> Result<Self, ParseError> {
        let malformed = || ParseError::MalformedRequestLine;
        // One pass over the line's bytes, no search: the method's, then the target's.
        let mut at = 0;
        while at < head.len() && TOKEN[usize::from(head[at])] {
            at += 1;
        }
        let method_len = at;
        if method_len == 0 || head.get(at) != Some(&b' ') {
            return Err(malformed());
        }
        at += 1;
        let target_start = at;
        let (target_len, ascii) = visible_run(&head[target_start..]);
        at += target_len;
        let (target, after) = (&head[target_start..at], &head[at..]);
        let minor_version = match after {
            [b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor @ (b'0' | b'1'), end @ ..]
                if end.starts_with(b"\r\n") || end.starts_with(b"\n") =>
            {
                minor - b'0'
            }
            _ => return Err(malformed()),
        };
        if target.is_empty() {
            return Err(malformed());
        }
        Ok(RequestHead {
            method: method_str(&head[..method_len]).ok_or_else(malformed)?,
            target: if ascii {
                // SAFETY: every byte is below 0x80 (`visible_run`), and ASCII is UTF-8.
                unsafe { std::str::from_utf8_unchecked(target) }
            } else {
                std::str::from_utf8(target).map_err(|_| malformed())?
            },
            minor_version,
        })
    }

    /// The percent-decoded path, as [`Request::path`].
    pub fn path(&self) -> Cow<'a, str> {
        self.path_and_query().0
    }

    /// Every value of a query parameter, form-urlencoded-decoded, in order: the values
    /// `form_urlencoded::parse` gives for the key, found without decoding (or copying)
    /// what needs no decoding.
    pub fn query_values<'k>(&self, key: &'k str) -> impl Iterator<Item = Cow<'a, str>> + 'k
    where
        'a: 'k,
    {
        Query(split_target(self.target).1).values(key)
    }

    /// [`path`](Self::path) and the query [`values`](Query::values) are read from,
    /// with the target split once: for a stage that asks both of every request.
    pub fn path_and_query(&self) -> (Cow<'a, str>, Query<'a>) {
        let (path, query) = split_target(self.target);
        let path = if find_either(path.as_bytes(), b'%', b'%').is_some() {
            Cow::Owned(percent_decode(path))
        } else {
            Cow::Borrowed(path)
        };
        (path, Query(query))
    }
}

/// A request-target's query (after its `?`, before any `#`), as it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Query<'a>(pub &'a str);

impl<'a> Query<'a> {
    /// Every value of the parameter `key`, as [`RequestHead::query_values`] gives them.
    pub fn values<'k>(self, key: &'k str) -> impl Iterator<Item = Cow<'a, str>> + 'k
    where
        'a: 'k,
    {
        QueryValues {
            rest: self.0,
            key,
            // A name equal to the key as it is decodes to the key when the key has
            // nothing to decode: the common case needs no decoding of names.
            plain_key: find_either(key.as_bytes(), b'+', b'%').is_none(),
        }
    }
}

/// The values of one key in a query, as [`RequestHead::query_values`] gives them.
///
/// The query is read as `application/x-www-form-urlencoded` parsing reads it: split
/// on `&` (empty pieces skipped), each piece at its first `=` (a piece without one is
/// a name with an empty value), names and values decoded by [`form_decode`].
struct QueryValues<'a, 'k> {
    /// The part of the query not read yet.
    rest: &'a str,
    key: &'k str,
    /// Whether `key` decodes to itself.
    plain_key: bool,
}

impl<'a> Iterator for QueryValues<'a, '_> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        while !self.rest.is_empty() {
            let end = find_either(self.rest.as_bytes(), b'&', b'&').unwrap_or(self.rest.len());
            let piece = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            let (name, value) = match find_either(piece.as_bytes(), b'=', b'=') {
                Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                None => (piece, ""),
            };
            if !piece.is_empty()
                && ((self.plain_key && name == self.key) || form_decode(name) == self.key)
            {
                return Some(form_decode(value));
            }
        }
        None
    }
}

/// Decodes one form-urlencoded name or value: `+` is a space, `%XX` a byte, and bytes
/// that are not UTF-8 become U+FFFD. Borrows when there is nothing to decode.
fn form_decode(raw: &str) -> Cow<'_, str> {
    if find_either(raw.as_bytes(), b'+', b'%').is_none() {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// A request with owned, decoded parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method token, e.g. `GET`.
    pub method: String,
    /// The request-target as received.
    pub target: String,
    /// The percent-decoded path; absolute-form targets are reduced to their path.
    pub path: String,
    /// Query parameters, form-urlencoded-decoded, in order, repeats kept.
    pub query: Vec<(String, String)>,
    /// Header fields in order, names as received.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

impl Request {
    /// Rebuilds a request from a head (request line and header section, as
    /// in [`ParsedRequest::head`](super::ParsedRequest::head)) and its body.
    pub fn from_parts(head: &[u8], body: Vec<u8>) -> Result<Request, ParseError> {
        head::with_parsed(head, |req| {
            let (Some(method), Some(target), Some(minor_version)) =
                (req.method, req.path, req.version)
            else {
                return Err(ParseError::MalformedRequestLine);
            };
            let (path, query) = split_target(target);
            Ok(Request {
                method: method.to_owned(),
                target: target.to_owned(),
                path: percent_decode(path),
                query: form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect(),
                headers: req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                body,
                minor_version,
            })
        })
    }

    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a query parameter, in order.
    pub fn query_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A method's text: the methods of RFC 9110 §9 and `PATCH` (RFC 5789) without a UTF-8
/// check (this runs for every request), any other token checked as any text is.
fn method_str(method: &[u8]) -> Option<&str> {
    Some(match method {
        b"GET" => "GET",
        b"POST" => "POST",
        b"HEAD" => "HEAD",
        b"PUT" => "PUT",
        b"DELETE" => "DELETE",
        b"OPTIONS" => "OPTIONS",
        b"PATCH" => "PATCH",
        b"CONNECT" => "CONNECT",
        b"TRACE" => "TRACE",
        _ => return std::str::from_utf8(method).ok(),
    })
}

/// Splits a request-target into raw path and raw query, reducing the
/// absolute form (`http://host/path?q`) to its path and dropping a fragment.
fn split_target(target: &str) -> (&str, &str) {
    // The origin form (`/path?query`), nearly every request, is split in one pass over
    // its bytes: no scheme to look for (a `://` in it belongs to its path or query).
    if target.starts_with('/') {
        return split_origin(target);
    }
    let target = target.split('#').next().unwrap_or_default();
    let origin = match target.find("://") {
        Some(scheme_end) if !target[..scheme_end].contains(['/', '?']) => {
            let authority = &target[scheme_end + 3..];
            authority.find(['/', '?']).map_or("", |i| &authority[i..])
        }
        _ => target,
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    (if path.is_empty() { "/" } else { path }, query)
}

/// [`split_target`] for a target starting with `/`: the path runs to the first `?` or
/// `#`, the query from a `?` to the first `#` after it.
fn split_origin(target: &str) -> (&str, &str) {
    let bytes = target.as_bytes();
    let Some(end) = find_either(bytes, b'?', b'#') else {
        return (target, "");
    };
    if bytes[end] == b'#' {
        return (&target[..end], "");
    }
    let rest = &target[end + 1..];
    let query_end = find_either(rest.as_bytes(), b'#', b'#').unwrap_or(rest.len());
    (&target[..end], &rest[..query_end])
}

/// The length of the run of visible bytes (above a space, not DEL: what a
/// request-target may hold, RFC 9112 §3.2, with the bytes of UTF-8 above 0x7f) at the
/// start of `bytes`, and whether all of them are ASCII. Eight bytes at a time, as
/// [`find_either`]: a target is tens of bytes, and this runs for every request a stage
/// reads.
fn visible_run(bytes: &[u8]) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A high bit for each byte below 0x21 (a space or a control) and each DEL; a borrow
    // may also mark bytes after a marked one, never before, so the lowest mark is exact.
    let ends = |v: u64| {
        let below = v.wrapping_sub(ONES * 0x21) & !v & HIGHS;
        let del = v ^ (ONES * 0x7f);
        below | (del.wrapping_sub(ONES) & !del & HIGHS)
    };
    let mut high = 0;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let marks = ends(word);
        if marks != 0 {
            let run = marks.trailing_zeros() as usize / 8;
            // The high bits of the bytes before the first mark.
            let before = (1u64 << (run * 8)).wrapping_sub(1);
            high |= word & HIGHS & before;
            return (offset + run, high == 0);
        }
        high |= word & HIGHS;
        offset += 8;
    }
    let rest = words.remainder();
    let run = rest
        .iter()
        .position(|&c| c <= b' ' || c == 0x7f)
        .unwrap_or(rest.len());
    let ascii = high == 0 && rest[..run].is_ascii();
    (offset + run, ascii)
}

/// The index of the first byte equal to `a` or `b`. Eight bytes at a time: on the
/// short strings of a request-target this beats both a byte loop and memchr's set-up.
fn find_either(bytes: &[u8], a: u8, b: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A high bit for each zero byte of `v`; a borrow may also mark bytes after a zero
    // one, never before, so the lowest mark is exact.
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let (a_word, b_word) = (ONES * u64::from(a), ONES * u64::from(b));
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let marks = zero_bytes(word ^ a_word) | zero_bytes(word ^ b_word);
        if marks != 0 {
            return Some(offset + marks.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let rest = words.remainder();
    rest.iter()
        .position(|&c| c == a || c == b)
        .map(|i| offset + i)
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as is,
/// and `+` stays a plus (it means space only in queries).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = bytes.get(i + 1..i + 3).and_then(hex_byte) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    match pair {
        [high, low] => u8::try_from(digit(*high)? * 16 + digit(*low)?).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Request {
        Request::from_parts(head.as_bytes(), b"body".to_vec()).expect("valid head")
    }

    #[test]
    fn a_request_line_reads_the_same_with_any_target_bytes() {
        // Every byte value at every position of a target long enough to span words:
        // the line reads as the byte-by-byte rule says (visible bytes or UTF-8 above
        // 0x7f end at the first space, control or DEL; a target must be UTF-8).
        for len in [1, 7, 8, 9, 17, 24] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut target = vec![b'a'; len];
                    target[0] = b'/';
                    target[at] = byte;
                    let mut line = b"GET ".to_vec();
                    line.extend_from_slice(&target);
                    line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
                    let got = RequestHead::parse_request_line(&line);
                    let expected = match target.iter().position(|&c| c <= b' ' || c == 0x7f) {
                        _ if at == 0 && byte == b' ' => Err(ParseError::MalformedRequestLine),
                        Some(_) => Err(ParseError::MalformedRequestLine),
                        None => std::str::from_utf8(&target)
                            .map(|target| RequestHead {
                                method: "GET",
                                target,
                                minor_version: 1,
                            })
                            .map_err(|_| ParseError::MalformedRequestLine),
                    };
                    assert_eq!(got, expected, "len {len}, byte {byte:#x} at {at}");
                }
            }
        }
        // UTF-8 is read as such, past the first word too.
        let line = "GET /caf\u{e9}/\u{e9}t\u{e9}?q=\u{e9} HTTP/1.0\r\n\r\n";
        let head = RequestHead::parse_request_line(line.as_bytes()).unwrap();
        assert_eq!(head.target, "/caf\u{e9}/\u{e9}t\u{e9}?q=\u{e9}");
    }

    #[test]
    fn rebuilds_all_parts() {
        let r =
            request("POST /a%20b/c+d?x=1&y=a+b&x=%32 HTTP/1.0\r\nHost: h\r\nX-Thing:  v \r\n\r\n");
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/a%20b/c+d?x=1&y=a+b&x=%32");
        assert_eq!(r.path, "/a b/c+d");
        assert_eq!(r.query_values("x").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(r.query_values("y").collect::<Vec<_>>(), ["a b"]);
        assert_eq!(r.query_values("z").count(), 0);
        assert_eq!(r.header("x-thing"), Some("v"));
        assert_eq!(r.header("HOST"), Some("h"));
        assert_eq!(r.header("missing"), None);
        assert_eq!(r.body, b"body");
        assert_eq!(r.minor_version, 0);
    }

    #[test]
    fn absolute_form_is_reduced_to_its_path() {
        let r =
            request("GET http://example.com/is_prime?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.path, "/is_prime");
        assert_eq!(r.query, [("x".to_owned(), "1".to_owned())]);
        assert_eq!(
            request("GET http://example.com HTTP/1.1\r\nHost: e\r\n\r\n").path,
            "/"
        );
        assert_eq!(
            request("GET http://e?q=1 HTTP/1.1\r\nHost: e\r\n\r\n").path,
            "/"
        );
        assert_eq!(
            request("GET /x?next=http://e/y HTTP/1.1\r\nHost: e\r\n\r\n").path,
            "/x"
        );
    }

    #[test]
    fn odd_escapes_and_fragments() {
        assert_eq!(percent_decode("/%zz/%+5/%4"), "/%zz/%+5/%4");
        assert_eq!(percent_decode("/%C3%A9"), "/é");
        assert_eq!(percent_decode("/%FF"), "/\u{fffd}");
        assert_eq!(split_target("/p?q=1#frag"), ("/p", "q=1"));
        assert_eq!(split_target("*"), ("*", ""));
        assert_eq!(split_target("/x?u=http://e/y"), ("/x", "u=http://e/y"));
        assert_eq!(split_target("http://e/a?b=1"), ("/a", "b=1"));
        assert_eq!(split_target("http://e"), ("/", ""));
    }

    #[test]
    fn query_names_match_the_key_once_decoded() {
        let head = RequestHead::parse(b"GET /?+=a&%2B=b&a%3Db=c HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("valid head");
        assert_eq!(head.query_values(" ").collect::<Vec<_>>(), ["a"]);
        assert_eq!(head.query_values("+").collect::<Vec<_>>(), ["b"]);
        assert_eq!(head.query_values("a=b").collect::<Vec<_>>(), ["c"]);
        assert_eq!(head.query_values("a%3Db").count(), 0);
    }

    #[test]
    fn a_head_read_in_place_agrees_with_the_owned_request() {
        let text = "GET http://e/a%2Fb+c?x=1&y=a+b&x=%32#f HTTP/1.0\r\nHost: h\r\n\r\n";
        let owned = request(text);
        let head = RequestHead::parse(text.as_bytes()).expect("valid head");
        assert_eq!(head.method, owned.method);
        assert_eq!(head.target, owned.target);
        assert_eq!(head.minor_version, owned.minor_version);
        assert_eq!(head.path(), owned.path);
        for key in ["x", "y", "z"] {
            let values: Vec<_> = head.query_values(key).collect();
            assert_eq!(values, owned.query_values(key).collect::<Vec<_>>());
        }
        assert_eq!(
            RequestHead::parse(b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n"),
            Err(ParseError::MalformedHeader)
        );
    }

    /// Bytes where word-at-a-time tricks go wrong if they do: zero, the high-bit edges.
    const EDGE_BYTES: &[u8] = &[0, 1, b'#', b'?', 0x7f, 0x80, 0x81, 0xfe, 0xff];

    /// The split as the general rule states it: drop the fragment, then split at `?`.
    fn split_by_the_rule(target: &str) -> (&str, &str) {
        let target = target.split('#').next().unwrap_or_default();
        target.split_once('?').unwrap_or((target, ""))
    }

    proptest::proptest! {
        #[test]
        fn find_either_finds_the_first_of_two_bytes(
            bytes in proptest::collection::vec(proptest::sample::select(EDGE_BYTES), 0..40),
            a in proptest::sample::select(EDGE_BYTES),
            b in proptest::sample::select(EDGE_BYTES),
        ) {
            let expected = bytes.iter().position(|&c| c == a || c == b);
            proptest::prop_assert_eq!(find_either(&bytes, a, b), expected);
        }

        #[test]
        fn origin_targets_split_by_the_rule(target in "/[a-c?#%/=&]{0,12}") {
            proptest::prop_assert_eq!(split_target(&target), split_by_the_rule(&target));
        }

        #[test]
        fn query_values_agree_with_form_urlencoded(
            query in "[ab=&+%2046Ff\u{e9}]{0,16}",
            extra_key in "[ab +]{0,2}",
        ) {
            let target = format!("/p?{query}");
            let head = RequestHead { method: "GET", target: &target, minor_version: 1 };
            let pairs: Vec<(String, String)> =
                form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            let keys = pairs.iter().map(|(k, _)| k.clone()).chain([extra_key]);
            for key in keys {
                let expected: Vec<&str> =
                    pairs.iter().filter(|(k, _)| *k == key).map(|(_, v)| v.as_str()).collect();
                let got: Vec<Cow<'_, str>> = head.query_values(&key).collect();
                proptest::prop_assert_eq!(got, expected, "key {:?}", key);
            }
        }
    }

    #[test]
    fn bad_heads_are_errors() {
        let err = Request::from_parts(b"GET / HTTP/2.0\r\n\r\n", Vec::new());
        assert_eq!(err, Err(ParseError::UnsupportedVersion));
        let err = Request::from_parts(b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", Vec::new());
        assert_eq!(err, Err(ParseError::MalformedHeader));
    }
}
