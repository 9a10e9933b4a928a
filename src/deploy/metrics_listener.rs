//! `--metrics-listen ADDR` of `prime_proxyd` and `prime_workerd`: a tiny HTTP/1.1
//! listener that answers `GET /metrics` with the process's Prometheus exposition, so
//! that each process is scraped on its own.
//!
//! It is for operators, off the pipeline's path: one thread, one connection at a time,
//! blocking `std::net` sockets with short timeouts, `Connection: close` after every
//! answer. Anything but `GET` or `HEAD` of `/metrics` is answered 404 or 405.

use crate::base::metrics::{Exposition, MetricsSource, CONTENT_TYPE};
use crate::http::Response;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The path scraped.
pub const METRICS_PATH: &str = "/metrics";

/// How long a scraper may take to send its request, or to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most request bytes read (a scrape's request is a few hundred).
const MAX_REQUEST: usize = 8 * 1024;

/// Binds `address` (e.g. `127.0.0.1:9101`) and answers scrapes from `source` on a
/// thread of its own, for the life of the process; returns the address bound.
///
/// Errors: the address cannot be bound (taken, or not an address of this host).
pub fn serve(address: &str, source: MetricsSource) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &source) {
                            log::debug!("metrics: a scrape failed: {e}");
                        }
                    }
                    Err(e) => log::debug!("metrics: accept failed: {e}"),
                }
            }
        })?;
    log::info!("metrics: scrape http://{bound}{METRICS_PATH}");
    Ok(bound)
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let response = if path != METRICS_PATH.as_bytes() {
        Response::error(404, "metrics are at /metrics")
    } else if method != b"GET" && method != b"HEAD" {
        Response::error(405, "/metrics answers GET and HEAD").header("Allow", "GET, HEAD")
    } else {
        let mut out = Exposition::new();
        source.expose(&mut out);
        Response::new(200)
            .header("Content-Type", CONTENT_TYPE)
            .body(out.encode())
    };
    stream.write_all(&response.to_bytes(1, false, method == b"HEAD"))?;
    stream.flush()
}
