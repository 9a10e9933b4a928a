//! Size limits the parser enforces on every request.

/// Upper bounds on the parts of a request; exceeding one rejects the request
/// with the status documented on each field and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line in bytes, line terminator excluded (`414`).
    pub max_request_line: usize,
    /// Largest header section in bytes: everything after the request line,
    /// blank line included. The same bound applies to chunked trailers (`431`).
    pub max_header_bytes: usize,
    /// Most header fields in one request, and trailer fields in one body (`431`).
    pub max_headers: usize,
    /// Largest decoded body in bytes (`413`).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8192,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: 10 * 1024 * 1024,
        }
    }
}
