//! The crate's error type: what can go wrong when wiring or running a pipeline.

use super::endpoint::{check, Problem, Use};
use std::fmt;

/// Everything that can fail while setting up or running a piece of the pipeline.
#[derive(Debug)]
pub enum Error {
    /// A ZeroMQ call failed; `context` says which one.
    Zmq {
        /// What we were doing, e.g. `binding tcp://127.0.0.1:8002`.
        context: String,
        /// The error libzmq reported.
        source: zmq::Error,
    },
    /// An endpoint string is not one ZeroMQ accepts (`tcp://`, `ipc://`, `inproc://`).
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        problem: Problem,
    },
    /// A pipeline was built in a way that cannot run (no stages, zero workers, ...).
    Config(String),
    /// A thread could not be started.
    Thread(std::io::Error),
    /// The job store could not be opened or used: a
    /// [`jobs::StoreError`](crate::jobs::StoreError), boxed because the job store sits
    /// above this module (downcast it to read its kind).
    Jobs(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps a ZeroMQ error with a note of what was being done.
    pub fn zmq(context: impl Into<String>, source: zmq::Error) -> Self {
        Error::Zmq {
            context: context.into(),
            source,
        }
    }
}

impl Error {
    /// [`endpoint::check`](crate::base::endpoint::check) as the crate's error, naming the
    /// endpoint ([`Error::BadEndpoint`]).
    pub fn check_endpoint(endpoint: &str, usage: Use) -> Result<()> {
        check(endpoint, usage).map_err(|problem| Error::BadEndpoint {
            endpoint: endpoint.to_string(),
            problem,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Zmq { context, source } => write!(f, "{context}: {source}"),
            Error::BadEndpoint { endpoint, problem } => {
                write!(f, "bad endpoint {endpoint:?}: {problem}")
            }
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::Thread(e) => write!(f, "could not start a thread: {e}"),
            Error::Jobs(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Zmq { source, .. } => Some(source),
            Error::Thread(e) => Some(e),
            Error::Jobs(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
