//! The gateway's backend calls: hyper's HTTP/1.1 client, with hyper-util's pool of
//! kept-alive connections, on a current-thread tokio runtime owned by one worker
//! thread. The calls make progress only while that thread drives the runtime (inside
//! [`Calls::wait`] or [`Calls::call`]), so one thread holds many calls in flight with
//! non-blocking I/O and no other thread is involved.
//!
//! A call is bounded as a whole (connect, send, wait, read the body) by the gateway's
//! timeout, and its body by the gateway's size limit. A call that is dropped before its
//! answer (aborted, timed out) closes its connection: hyper never hands a connection
//! with an exchange cut short back to the pool.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;
use ureq::http;

/// The most header fields a backend's answer may have: 128, as with the gateway's
/// earlier client (ureq), above hyper's default of 100. hyper makes room for all of
/// them for every answer it reads, so the bound is not raised further.
const MAX_ANSWER_FIELDS: usize = 128;

/// How long a kept-alive backend connection may stay idle in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);

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

/// The backend's whole answer, or why there is none.
pub(super) type Called = Result<http::Response<Vec<u8>>, CallError>;

/// One worker thread's client to the backend, and the calls it holds.
pub(super) struct Calls<T> {
    runtime: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The calls started and not yet taken, by ticket.
    running: crate::base::fast_hash::FastMap<u64, JoinHandle<()>>,
    /// What finished calls left: their ticket and what they made of their answer.
    finished: Arc<Mutex<Vec<(u64, T)>>>,
    /// Wakes [`Calls::wait`] when a call finishes.
    notify: Arc<tokio::sync::Notify>,
    /// The job socket's descriptor (libzmq's `ZMQ_FD`), and a duplicate of it
    /// registered with the runtime.
    jobs: Option<(RawFd, AsyncFd<OwnedFd>)>,
    /// What a call whose task panicked leaves.
    panicked: fn() -> T,
}

/// Leaves `panicked()` for a call whose task ends without a result of its own: one that
/// panicked (in the client or in what makes the result), so that its job is still
/// answered (the panic itself goes to the panic hook, as any thread's). An aborted
/// call leaves it too, for nobody: its job is forgotten.
struct Unfinished<T> {
    ticket: u64,
    finished: Arc<Mutex<Vec<(u64, T)>>>,
    notify: Arc<tokio::sync::Notify>,
    panicked: Option<fn() -> T>,
}

impl<T> Unfinished<T> {
    fn leave(&mut self, made: T) {
        self.panicked = None;
        self.finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((self.ticket, made));
        self.notify.notify_one();
    }
}

impl<T> Drop for Unfinished<T> {
    fn drop(&mut self) {
        if let Some(panicked) = self.panicked.take() {
            self.leave(panicked());
        }
    }
}

/// A duplicate of `fd`, registered with the current runtime for reading.
fn watch(fd: RawFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is the job socket's descriptor, open for as long as the socket,
    // which the worker loop that passes it holds throughout this call.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    // SAFETY: the duplicate is the AsyncFd's own: nothing else closes it.
    unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
        .map_err(std::io::Error::from)
}

impl<T: Send + 'static> Calls<T> {
    /// A runtime and a client without connections yet; `panicked` makes what a call
    /// whose task panicked leaves.
    pub(super) fn new(panicked: fn() -> T) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_max_headers(MAX_ANSWER_FIELDS)
            .build(connector);
        Ok(Calls {
            runtime,
            client,
            running: Default::default(),
            finished: Arc::default(),
            notify: Arc::default(),
            jobs: None,
            panicked,
        })
    }

    /// Starts a call: `finish` makes what [`Calls::wait`] gives back under `ticket`
    /// from how the call ended.
    pub(super) fn start(
        &mut self,
        ticket: u64,
        request: http::Request<Vec<u8>>,
        limit: u64,
        timeout: Duration,
        finish: impl FnOnce(Called) -> T + Send + 'static,
    ) {
        let client = self.client.clone();
        let mut unfinished = Unfinished {
            ticket,
            finished: Arc::clone(&self.finished),
            notify: Arc::clone(&self.notify),
            panicked: Some(self.panicked),
        };
        let task = self.runtime.spawn(async move {
            let made = finish(exchange(client, request, limit, timeout).await);
            unfinished.leave(made);
        });
        self.running.insert(ticket, task);
    }

    /// Stops the call `ticket`: its connection is closed as the runtime next runs.
    pub(super) fn abort(&mut self, ticket: u64) {
        if let Some(task) = self.running.remove(&ticket) {
            task.abort();
        }
    }

    /// Runs the calls until one finishes, the descriptor `jobs` signals, or `timeout`
    /// passes; puts what the finished ones made on `done`.
    pub(super) fn wait(
        &mut self,
        jobs: Option<RawFd>,
        timeout: Duration,
        done: &mut Vec<(u64, T)>,
    ) {
        if let Some(fd) = jobs {
            if self.jobs.as_ref().map(|(watched, _)| *watched) != Some(fd) {
                let _entered = self.runtime.enter();
                self.jobs = match watch(fd) {
                    Ok(watched) => Some((fd, watched)),
                    Err(e) => {
                        log::error!("the gateway cannot watch its job socket: {e}");
                        None
                    }
                };
            }
        }
        let watched = jobs.and(self.jobs.as_ref()).map(|(_, watched)| watched);
        let notify = &self.notify;
        self.runtime.block_on(async {
            let sleep = tokio::time::sleep(timeout);
            match watched {
                Some(watched) => tokio::select! {
                    _ = notify.notified() => {}
                    ready = watched.readable() => {
                        // libzmq's descriptor signals a change: the worker reads the
                        // socket until it is empty before it waits again.
                        if let Ok(mut guard) = ready {
                            guard.clear_ready();
                        }
                    }
                    _ = sleep => {}
                },
                None => tokio::select! {
                    _ = notify.notified() => {}
                    _ = sleep => {}
                },
            }
        });
        let mut finished = self
            .finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (ticket, made) in finished.drain(..) {
            self.running.remove(&ticket);
            done.push((ticket, made));
        }
    }

    /// Makes one call and waits for it, unless `stop` ends first (then `None`; drop
    /// the [`Calls`] to close the call's connection at once).
    pub(super) fn call<S: std::future::Future<Output = ()>>(
        &mut self,
        request: http::Request<Vec<u8>>,
        limit: u64,
        timeout: Duration,
        stop: S,
    ) -> Option<Called> {
        let client = self.client.clone();
        self.runtime.block_on(async {
            tokio::select! {
                called = exchange(client, request, limit, timeout) => Some(called),
                _ = stop => None,
            }
        })
    }
}

/// Sleeps in steps of `every` until `interrupted` says so.
pub(super) async fn until(every: Duration, interrupted: impl Fn() -> bool) {
    loop {
        tokio::time::sleep(every).await;
        if interrupted() {
            return;
        }
    }
}

/// Makes the call and reads the whole answer, within `timeout` and `limit` bytes.
async fn exchange(
    client: Client<HttpConnector, Full<Bytes>>,
    request: http::Request<Vec<u8>>,
    limit: u64,
    timeout: Duration,
) -> Called {
    let request = request.map(|body| Full::new(Bytes::from(body)));
    let called = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| CallError::Unreached(with_causes(&e)))?;
        let (parts, body) = response.into_parts();
        let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
        let body = limited.collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                CallError::TooLarge(limit)
            } else {
                CallError::Unreached(with_causes(e.as_ref()))
            }
        })?;
        Ok(http::Response::from_parts(parts, body.to_bytes().to_vec()))
    };
    tokio::time::timeout(timeout, called)
        .await
        .unwrap_or(Err(CallError::Timeout))
}

/// An error and its causes, joined by ": " ("client error (Connect): tcp connect
/// error: Connection refused (os error 111)").
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}
