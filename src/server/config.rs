//! The front end's settings: where it listens and the limits it enforces.

use crate::http::Limits;
use std::time::Duration;

/// Which protocol a listening endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenProtocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http,
    /// Netstrings: `LEN:BYTES,` in both directions.
    Netstring,
}

/// How the front end listens and what it allows.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Endpoints to bind, each with its protocol (e.g. `tcp://127.0.0.1:8002`; port 0 or
    /// `*` picks a free port, see [`Server::endpoints`](super::Server::endpoints)).
    pub listen: Vec<(String, ListenProtocol)>,
    /// Request size limits for HTTP.
    pub limits: Limits,
    /// The largest netstring payload accepted.
    pub max_netstring_bytes: usize,
    /// How long a request may take in the pipeline before it is answered 504.
    pub request_timeout: Duration,
    /// How long a client may take to send a request head before it is answered 408.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// A path answered 200 by the front end itself, without touching a worker.
    pub health_path: Option<String>,
    /// How many requests one connection may have unanswered; past it the connection is
    /// answered 503 and closed, which bounds the memory one client can hold.
    pub max_pipelined: usize,
    /// How many response bytes may wait for a client that does not read before the
    /// connection is dropped.
    pub max_output_bytes: usize,
}

impl ServerConfig {
    /// Serves HTTP on `endpoint` with the default limits and timeouts.
    pub fn http(endpoint: impl Into<String>) -> Self {
        ServerConfig {
            listen: vec![(endpoint.into(), ListenProtocol::Http)],
            limits: Limits::default(),
            max_netstring_bytes: 10 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            health_path: None,
            max_pipelined: 1024,
            max_output_bytes: 16 * 1024 * 1024,
        }
    }

    /// Also serves netstrings on `endpoint`.
    pub fn with_netstring(mut self, endpoint: impl Into<String>) -> Self {
        self.listen
            .push((endpoint.into(), ListenProtocol::Netstring));
        self
    }
}
