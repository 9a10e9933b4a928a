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

#[path = "common/responses.rs"]
mod responses;

use responses::Responses;
use std::io::Write;
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
