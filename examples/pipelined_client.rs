//! A fixed, repeatable HTTP load for instruction counts, used by `scripts/bench`.
//!
//! It sends `TOTAL` GET requests for `PATH` over one keep-alive connection, `BATCH` of
//! them pipelined in each write, and reads every response (framed by its
//! `Content-Length`) before it writes the next batch. The same binary and arguments
//! always send the same bytes, so instructions counted in the server (callgrind) per
//! request are comparable between builds however loaded the machine is.
//!
//! Usage: `pipelined_client HOST:PORT PATH TOTAL [BATCH]` (BATCH defaults to 50). It
//! prints `answered=N non_2xx=M seconds=S` and exits 1 if a response is missing or
//! malformed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: pipelined_client HOST:PORT PATH TOTAL [BATCH]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match &args[..] {
        [addr, path, total] => total.parse().ok().map(|t| (addr, path, t, 50)),
        [addr, path, total, batch] => total
            .parse()
            .ok()
            .zip(batch.parse().ok())
            .map(|(t, b)| (addr, path, t, b)),
        _ => None,
    };
    let Some((addr, path, total, batch)) = parsed.filter(|p| p.3 > 0) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(addr, path, total, batch) {
        Ok((non_2xx, elapsed)) => {
            println!(
                "answered={total} non_2xx={non_2xx} seconds={:.3}",
                elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipelined_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the load; returns how many answers were not 2xx, and how long it took.
fn run(addr: &str, path: &str, total: usize, batch: usize) -> std::io::Result<(usize, Duration)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let one = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let started = Instant::now();
    let mut reader = Responses::default();
    let mut non_2xx = 0;
    let mut sent = 0;
    while sent < total {
        let n = batch.min(total - sent);
        stream.write_all(one.repeat(n).as_bytes())?;
        for _ in 0..n {
            let status = reader.next(&mut stream)?;
            if !(200..300).contains(&status) {
                non_2xx += 1;
            }
        }
        sent += n;
    }
    Ok((non_2xx, started.elapsed()))
}

/// Reads responses off the wire one after another.
#[derive(Default)]
struct Responses {
    buf: Vec<u8>,
}

impl Responses {
    /// The next response's status; its bytes are consumed.
    fn next(&mut self, stream: &mut TcpStream) -> std::io::Result<u16> {
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
