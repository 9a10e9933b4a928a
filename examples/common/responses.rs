//! Reads HTTP responses off a client connection one after another, framed by their
//! `Content-Length`: the benchmark clients' whole HTTP parser (they talk to a server
//! they know, which always sends a `Content-Length`).

use std::io::Read;

/// Bytes received and not yet taken as responses.
#[derive(Default)]
pub struct Responses {
    buf: Vec<u8>,
}

impl Responses {
    /// The next response's status; its bytes are consumed.
    pub fn next(&mut self, stream: &mut impl Read) -> std::io::Result<u16> {
        loop {
            if let Some((status, len)) = self.complete() {
                self.buf.drain(..len);
                return Ok(status);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before every answer came",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The status and total length of the first response, once it is all buffered.
    fn complete(&self) -> Option<(u16, usize)> {
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&self.buf[..head_end]).ok()?;
        let status = head.get(9..12)?.parse().ok()?;
        let body = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (self.buf.len() >= head_end + body).then_some((status, head_end + body))
    }
}
