//! Opens many keep-alive connections and leaves them idle, used by `scripts/bench` to
//! measure what an idle connection costs the server.
//!
//! Each of COUNT connections sends one GET for PATH and reads its answer, so the server
//! has seen a whole request on each; then they all stay open, idle, for HOLD seconds, and
//! close. It prints `open N` once every connection has its answer (the moment to read
//! the server's memory) and `closed` after closing them. Raise the open-file limit
//! (`ulimit -n`) above COUNT first.
//!
//! Usage: `idle_connections HOST:PORT PATH COUNT HOLD_SECONDS`

#[path = "common/responses.rs"]
mod responses;

use responses::Responses;
use std::io::Write;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: idle_connections HOST:PORT PATH COUNT HOLD_SECONDS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, path, count, hold] = &args[..] else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (Ok(count), Ok(hold)) = (count.parse::<usize>(), hold.parse::<f64>()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(addr, path, count, hold) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_connections: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: &str, path: &str, count: usize, hold: f64) -> std::io::Result<()> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut connections = Vec::with_capacity(count);
    // Connect and ask in waves, so the listen backlog never overflows.
    for wave in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut opened = Vec::with_capacity(wave.len());
        for _ in wave {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(request.as_bytes())?;
            opened.push(stream);
        }
        for stream in &mut opened {
            Responses::default().next(stream)?;
        }
        connections.extend(opened);
    }
    println!("open {}", connections.len());
    std::io::stdout().flush()?;
    std::thread::sleep(Duration::try_from_secs_f64(hold).unwrap_or_default());
    drop(connections);
    println!("closed");
    Ok(())
}
