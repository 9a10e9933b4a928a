//! The throughput ceiling of the design, used as the baseline by `scripts/bench`.
//!
//! One ZMQ_STREAM socket answers every HTTP request with a fixed
//! `Hello, World!` response: no pipeline, no proxies, no workers. Whatever
//! rate this reaches is the most the real server's front end, which talks to
//! clients through the same kind of socket, could ever reach; the gap between
//! the two is what the pipeline costs.
//!
//! Usage: `stream_hello tcp://127.0.0.1:8003`
//!
//! Requests are assumed to be bodiless (GET), and may be pipelined and kept
//! alive. The send high-water mark is lifted, so responses to a client that
//! stops reading queue in memory without bound: acceptable for a benchmark,
//! not for a server.

use std::collections::HashMap;
use std::process::ExitCode;

/// Says `keep-alive` explicitly because HTTP/1.0 clients such as `ab -k`
/// otherwise wait for the server to close.
const KEEP_ALIVE_RESPONSE: &[u8] = concat!(
    "HTTP/1.1 200 OK\r\n",
    "Content-Type: text/plain\r\n",
    "Content-Length: 13\r\n",
    "Connection: keep-alive\r\n",
    "\r\n",
    "Hello, World!",
)
.as_bytes();

const CLOSING_RESPONSE: &[u8] = concat!(
    "HTTP/1.1 200 OK\r\n",
    "Content-Type: text/plain\r\n",
    "Content-Length: 13\r\n",
    "Connection: close\r\n",
    "\r\n",
    "Hello, World!",
)
.as_bytes();

const HEAD_END: &[u8] = b"\r\n\r\n";

/// A request head longer than this is not a benchmark client's: the
/// connection is closed rather than buffered without bound.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> ExitCode {
    let Some(endpoint) = std::env::args().nth(1) else {
        eprintln!("usage: stream_hello ENDPOINT   (e.g. tcp://127.0.0.1:8003)");
        return ExitCode::from(2);
    };
    match serve(&endpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stream_hello: {endpoint}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Request bytes received on one connection but not yet answered.
#[derive(Default)]
struct Connection {
    pending: Vec<u8>,
}

/// The requests completed by one read.
struct Requests {
    count: usize,
    /// The last of them asked for the connection to be closed after it.
    then_close: bool,
}

impl Connection {
    /// Buffers `data`, then takes every request head it completed, stopping
    /// at one that ends the connection.
    fn take_requests(&mut self, data: &[u8]) -> Requests {
        // Everything already buffered was searched before; only a terminator
        // straddling the old and new bytes can start within the old ones.
        let mut search_from = self.pending.len().saturating_sub(HEAD_END.len() - 1);
        self.pending.extend_from_slice(data);
        let mut head_start = 0;
        let mut requests = Requests {
            count: 0,
            then_close: false,
        };
        while let Some(at) = find_head_end(&self.pending[search_from..]) {
            let head_end = search_from + at + HEAD_END.len();
            requests.count += 1;
            requests.then_close = !keeps_alive(&self.pending[head_start..head_end]);
            head_start = head_end;
            search_from = head_end;
            if requests.then_close {
                break;
            }
        }
        self.pending.drain(..head_start);
        requests
    }
}

/// HTTP/1.1 keeps a connection open unless asked not to, HTTP/1.0 only if
/// asked to: `ab` without `-k` speaks HTTP/1.0 and waits for the close.
fn keeps_alive(head: &[u8]) -> bool {
    let mut lines = head
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let http_1_0 = lines
        .next()
        .is_some_and(|request_line| request_line.ends_with(b"HTTP/1.0"));
    lines
        .filter_map(connection_header_value)
        .flat_map(|value| value.split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .fold(!http_1_0, |keep_alive, option| {
            if option.eq_ignore_ascii_case(b"close") {
                false
            } else {
                keep_alive || option.eq_ignore_ascii_case(b"keep-alive")
            }
        })
}

/// The value of `line` if it is a `Connection` header.
fn connection_header_value(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let (name, value) = line.split_at(colon);
    name.eq_ignore_ascii_case(b"connection")
        .then_some(&value[1..])
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(HEAD_END.len())
        .position(|window| window == HEAD_END)
}

fn serve(endpoint: &str) -> Result<(), zmq::Error> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::STREAM)?;
    socket.set_linger(0)?;
    // With a high-water mark, a send to a slow reader would fail exactly like
    // a send to a peer that is hanging up, and the two could not be told
    // apart; without one, only the hang-up case fails.
    socket.set_sndhwm(0)?;
    socket.bind(endpoint)?;
    let mut server = Server {
        socket,
        connections: HashMap::new(),
        responses: Vec::new(),
    };
    let mut routing_id = zmq::Message::new();
    let mut data = zmq::Message::new();
    loop {
        server.socket.poll(zmq::POLLIN, -1)?;
        // Polling is the expensive part, so everything already queued is
        // handled before polling again.
        while server.receive(&mut routing_id, &mut data)? {
            server.handle(&routing_id, &data)?;
        }
    }
}

struct Server {
    socket: zmq::Socket,
    /// Keyed by ZMQ_STREAM routing id, one entry per open TCP connection.
    connections: HashMap<Vec<u8>, Connection>,
    /// Reused so that answering allocates nothing in the steady state.
    responses: Vec<u8>,
}

impl Server {
    /// Receives one `[routing id, data]` message if one is ready; `false`
    /// when none is.
    fn receive(
        &self,
        routing_id: &mut zmq::Message,
        data: &mut zmq::Message,
    ) -> Result<bool, zmq::Error> {
        match self.socket.recv(routing_id, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(false),
            Err(error) => return Err(error),
        }
        // Multipart messages are delivered whole, so the data frame is
        // already here and this cannot block.
        self.socket.recv(data, 0)?;
        Ok(true)
    }

    fn handle(&mut self, routing_id: &[u8], data: &[u8]) -> Result<(), zmq::Error> {
        if data.is_empty() {
            self.connect_or_disconnect(routing_id);
            return Ok(());
        }
        // Every connection is announced before its data, so an unknown id is
        // one this side already closed, whose last bytes are moot.
        let Some(connection) = self.connections.get_mut(routing_id) else {
            return Ok(());
        };
        let requests = connection.take_requests(data);
        let head_too_long = connection.pending.len() > MAX_HEAD;
        if requests.count > 0 {
            self.answer(routing_id, &requests)?;
        }
        if requests.then_close || head_too_long {
            self.close(routing_id)?;
        }
        Ok(())
    }

    /// libzmq announces both a new connection and a closed one with an empty
    /// frame; the first frame ever seen for a routing id is the connect.
    fn connect_or_disconnect(&mut self, routing_id: &[u8]) {
        if self.connections.remove(routing_id).is_none() {
            self.connections
                .insert(routing_id.to_vec(), Connection::default());
        }
    }

    /// Sends all the responses owed to one read in a single message, so a
    /// pipelining client costs one send per read rather than per request.
    fn answer(&mut self, routing_id: &[u8], requests: &Requests) -> Result<(), zmq::Error> {
        let kept_alive = requests.count - usize::from(requests.then_close);
        self.responses.clear();
        for _ in 0..kept_alive {
            self.responses.extend_from_slice(KEEP_ALIVE_RESPONSE);
        }
        if requests.then_close {
            self.responses.extend_from_slice(CLOSING_RESPONSE);
        }
        self.send(routing_id, &self.responses).map(drop)
    }

    /// An empty data frame tells ZMQ_STREAM to close the connection.
    fn close(&mut self, routing_id: &[u8]) -> Result<(), zmq::Error> {
        // A connection closed from this side gets no disconnect notice, so
        // its state goes now; one already hanging up still gets its notice,
        // which must find the state to remove rather than look like a connect.
        if self.send(routing_id, &[])? {
            self.connections.remove(routing_id);
        }
        Ok(())
    }

    /// Sends one message to a connection; `false` if the peer is already
    /// hanging up, in which case its disconnect notice is queued behind the
    /// message just received and will clean up.
    fn send(&self, routing_id: &[u8], data: &[u8]) -> Result<bool, zmq::Error> {
        // A blocking send to a connection that is being torn down waits
        // forever, hence DONTWAIT; once the routing id is accepted, the data
        // frame always is.
        match self.socket.send(routing_id, zmq::SNDMORE | zmq::DONTWAIT) {
            Ok(()) => self.socket.send(data, 0).map(|()| true),
            Err(zmq::Error::EAGAIN | zmq::Error::EHOSTUNREACH) => Ok(false),
            Err(error) => Err(error),
        }
    }
}
