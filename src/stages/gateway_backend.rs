//! What both of the gateway's clients (hyper's, in `gateway_calls`, and the lean one of
//! `gateway_plain`) share: where the backend is, why a call has no answer, and the bound
//! on an answer's header fields.

use ureq::http;

/// The most header fields a backend's answer may have: 128, as with the gateway's
/// earlier client (ureq), above hyper's default of 100. hyper makes room for all of
/// them for every answer it reads, so the bound is not raised further.
pub(super) const MAX_ANSWER_FIELDS: usize = 128;

/// Why a backend call has no answer.
#[derive(Debug)]
pub(super) enum CallError {
    /// The gateway's timeout passed first.
    Timeout,
    /// The body was longer than this many bytes.
    TooLarge(u64),
    /// No HTTP answer: the backend could not be reached or broke the exchange off
    /// (the reason, with its causes).
    Unreached(String),
}

/// Where the backend is: its host and port, and the `Host` field sent to it.
pub(super) struct Backend {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) authority: http::HeaderValue,
}

impl Backend {
    /// The backend of `origin`, `http://HOST[:PORT]` (80 without a port).
    pub(super) fn new(origin: &str) -> std::io::Result<Self> {
        let invalid = |e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{origin}: {e}"))
        };
        let uri: http::Uri = origin.parse().map_err(|e| invalid(&e))?;
        let authority = uri.authority().ok_or_else(|| invalid(&"no host"))?;
        let host = authority.host();
        Ok(Backend {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: http::HeaderValue::from_str(authority.as_str()).map_err(|e| invalid(&e))?,
        })
    }
}
