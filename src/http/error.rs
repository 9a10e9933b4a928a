//! Why a request was rejected, and the status code that tells the client.

use std::fmt;

/// A request the server refuses. Every variant is fatal for the connection:
/// the front end sends the error response and then closes, because after a
/// framing error the position of the next request in the stream is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The request line is not `method SP request-target SP HTTP-version`.
    MalformedRequestLine,
    /// A well-formed version of a major version other than 1 (later 1.x minor
    /// versions are served as HTTP/1.1).
    UnsupportedVersion,
    /// The request line is longer than the limit.
    RequestLineTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The header section (or a chunked trailer section) is larger than the limit.
    HeaderSectionTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// More header (or trailer) fields than the limit.
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// A header line that is not `name: value`: whitespace before the colon,
    /// obsolete line folding, a missing colon or a control character.
    MalformedHeader,
    /// An HTTP/1.1 request without a `Host` header.
    MissingHost,
    /// More than one `Host` header.
    MultipleHost,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    ContentLengthWithTransferEncoding,
    /// `Content-Length` is repeated, a list, or not a plain decimal number.
    InvalidContentLength,
    /// `Transfer-Encoding` is empty, applies `chunked` more than once, or does not
    /// end with `chunked` (RFC 9112 §6.3: the body's length is unknown).
    InvalidTransferEncoding,
    /// `Transfer-Encoding` names a coding other than `chunked`.
    UnsupportedTransferCoding,
    /// An HTTP/1.0 request with `Transfer-Encoding`: HTTP/1.0 has no transfer codings,
    /// so its framing is faulty (RFC 9112 §6.1) and a proxy in front may read the body
    /// differently.
    TransferEncodingInHttp10,
    /// A chunk-size line that is not hexadecimal, overflows, has whitespace after the
    /// size other than before a `;` extension (RFC 9112 §7.1), or is not terminated
    /// by CRLF.
    InvalidChunkSize,
    /// Chunk data not followed by CRLF.
    InvalidChunkTerminator,
    /// A chunked trailer line that is not a valid header field.
    MalformedTrailer,
    /// The body is, or is declared to be, larger than the limit.
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
}

impl ParseError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::UnsupportedVersion => 505,
            ParseError::RequestLineTooLong { .. } => 414,
            ParseError::HeaderSectionTooLarge { .. } | ParseError::TooManyHeaders { .. } => 431,
            ParseError::UnsupportedTransferCoding => 501,
            ParseError::BodyTooLarge { .. } => 413,
            ParseError::MalformedRequestLine
            | ParseError::MalformedHeader
            | ParseError::MissingHost
            | ParseError::MultipleHost
            | ParseError::ContentLengthWithTransferEncoding
            | ParseError::InvalidContentLength
            | ParseError::InvalidTransferEncoding
            | ParseError::TransferEncodingInHttp10
            | ParseError::InvalidChunkSize
            | ParseError::InvalidChunkTerminator
            | ParseError::MalformedTrailer => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MalformedRequestLine => {
                f.write_str("malformed request line: expected `METHOD target HTTP/1.x`")
            }
            ParseError::UnsupportedVersion => f.write_str("only HTTP/1.x is supported"),
            ParseError::RequestLineTooLong { limit } => {
                write!(f, "request line longer than {limit} bytes")
            }
            ParseError::HeaderSectionTooLarge { limit } => {
                write!(f, "header section larger than {limit} bytes")
            }
            ParseError::TooManyHeaders { limit } => write!(f, "more than {limit} header fields"),
            ParseError::MalformedHeader => f.write_str(
                "malformed header line: expected `name: value` without whitespace before the colon, line folding or control characters",
            ),
            ParseError::MissingHost => f.write_str("HTTP/1.1 requests must carry a Host header"),
            ParseError::MultipleHost => f.write_str("more than one Host header"),
            ParseError::ContentLengthWithTransferEncoding => {
                f.write_str("Content-Length and Transfer-Encoding must not both be sent")
            }
            ParseError::InvalidContentLength => {
                f.write_str("Content-Length must be a single non-negative decimal number")
            }
            ParseError::InvalidTransferEncoding => {
                f.write_str("Transfer-Encoding must end with `chunked`, applied once")
            }
            ParseError::UnsupportedTransferCoding => {
                f.write_str("only the `chunked` transfer coding is supported")
            }
            ParseError::TransferEncodingInHttp10 => f.write_str(
                "HTTP/1.0 has no transfer codings: send Content-Length, or Transfer-Encoding in HTTP/1.1",
            ),
            ParseError::InvalidChunkSize => {
                f.write_str("invalid chunk-size line: expected hexadecimal size, optional extensions, CRLF")
            }
            ParseError::InvalidChunkTerminator => f.write_str("chunk data must be followed by CRLF"),
            ParseError::MalformedTrailer => f.write_str("malformed trailer field in chunked body"),
            ParseError::BodyTooLarge { limit } => write!(f, "request body larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for ParseError {}
