//! The gateway's backend calls: hyper's HTTP/1.1 connections, kept alive in a pool of
//! this thread's own (a list, no lock: one thread uses it), on a current-thread tokio
//! runtime owned by one worker thread. Each call is a future that thread polls (no task
//! is spawned per call; each connection has one), and the calls make progress only
//! while it drives the runtime (inside [`Calls::wait`] or [`Calls::call`]), so one
//! thread holds many calls in flight with non-blocking I/O and no other thread is
//! involved.
//!
//! A call is bounded as a whole (connect, send, wait, read the body) by the gateway's
//! timeout, and its body by the gateway's size limit. A plain call's deadline is one
//! entry in a queue of the thread's (`Deadlines`, earliest first) that
//! [`Calls::wait`] sleeps no longer than and tells the calls past it, rather than a
//! timer of the runtime's per call (registered, polled and dropped each time); hyper's
//! calls keep tokio's timeout. A call that is dropped before its
//! answer (aborted, timed out, failed) closes its connection (its task is aborted,
//! which drops the socket): only a connection whose exchange ended with the answer's
//! last byte goes back to the pool, and is taken again only while hyper says it is
//! ready for the next request. A request that finds its pooled connection closed by
//! the backend is sent again, once, on a new connection: when no byte of it went out,
//! or when its method is idempotent and the connection closed before any answer
//! (RFC 9112 §9.3.1; a proxy never retries the others).
//!
//! A plain call (a request read in place from the client's head) takes the lean client
//! of `gateway_plain` instead, on connections of that module's own pool: the same
//! bounds, pooling and retry, without hyper's connection task and channels.

use bytes::Bytes;
use futures_util::future::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::gateway_answer::PlainAnswer;
use super::gateway_backend::{Backend, CallError, MAX_ANSWER_FIELDS};
use super::gateway_plain::{self, PlainCall, PlainConnection, PlainPool};
use ureq::http;

/// How long a kept-alive backend connection may stay idle in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// The backend's whole answer, or why there is none.
pub(super) type Called = Result<http::Response<Bytes>, CallError>;

/// A plain call's whole answer, as the lean client read it, or why there is none.
pub(super) type PlainCalled = Result<PlainAnswer, CallError>;

/// A backend call to make.
pub(super) struct Call {
    /// The request, in origin form (RFC 9112 §3.2.1).
    pub(super) request: http::Request<Bytes>,
    /// The most body bytes taken.
    pub(super) limit: u64,
    /// The bound on the whole call.
    pub(super) timeout: Duration,
}

/// A connection that may serve again after a call: hyper's or the lean client's.
enum Kept {
    Hyper(Connection),
    Plain(PlainConnection),
}

/// A running call: it ends with its ticket and what it made, and its connection when
/// that may serve again (`None` once aborted).
type Running<T> = Pin<Box<dyn Future<Output = (u64, Option<(T, Option<Kept>)>)> + Send>>;

/// A running call's [`Stop`] says it runs on.
const RUNNING: u8 = 0;
/// A running call's [`Stop`] says it is aborted: it ends with nothing, its job is
/// forgotten.
const ABORTED: u8 = 1;
/// A running call's [`Stop`] says its deadline passed: it ends as a timeout.
const EXPIRED: u8 = 2;

/// How [`Calls`] tells a running call to end early (aborted, or past its deadline),
/// shared by the call and [`Calls`]: the state, and the waker of the call's last poll,
/// which the telling wakes so that the call sees it at once.
#[derive(Default)]
struct Stop {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Stop {
    /// Tells the call `state` ([`ABORTED`] or [`EXPIRED`]) and wakes it.
    fn tell(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.waker.wake();
    }

    /// What the call was told; the poll's waker is kept for a telling to come.
    fn told(&self, cx: &Context<'_>) -> u8 {
        let state = self.state.load(Ordering::Acquire);
        if state != RUNNING {
            return state;
        }
        self.waker.register(cx.waker());
        self.state.load(Ordering::Acquire)
    }
}

pin_project! {
    /// A call as [`Calls`] holds it: polled until it ends, unless its [`Stop`] says it is
    /// aborted first; a panic in it leaves `panicked()`. (A struct rather than an `async`
    /// block, which would keep the call twice in its state: once as captured, once
    /// pinned.)
    struct Held<F, T> {
        #[pin]
        call: F,
        stop: Arc<Stop>,
        ticket: u64,
        panicked: fn() -> T,
    }
}

impl<F, T> Future for Held<F, T>
where
    F: Future<Output = std::thread::Result<(T, Option<Kept>)>>,
{
    type Output = (u64, Option<(T, Option<Kept>)>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.stop.told(cx) == ABORTED {
            return Poll::Ready((*this.ticket, None));
        }
        let ticket = *this.ticket;
        let panicked = *this.panicked;
        this.call.poll(cx).map(|ended| match ended {
            Ok(made) => (ticket, Some(made)),
            Err(_panic) => (ticket, Some((panicked(), None))),
        })
    }
}

pin_project! {
    /// A call that ends (`Some`) or is cut at its deadline (`None`, once its [`Stop`] says
    /// [`EXPIRED`]); inside a [`Held`], whose polls keep the waker the telling wakes.
    struct Bounded<F> {
        #[pin]
        call: F,
        stop: Arc<Stop>,
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.stop.state.load(Ordering::Acquire) == EXPIRED {
            return Poll::Ready(None);
        }
        this.call.poll(cx).map(Some)
    }
}

/// The deadlines of plain calls, the earliest first, by ticket: a call whose deadline
/// passes is told [`EXPIRED`] from [`Calls::wait`], which sleeps no longer than the
/// earliest; one timer for all calls, not one per call (all of a gateway's calls have
/// one timeout, so a new deadline is the latest and goes at the back). Entries of calls
/// that ended are dropped from the front as they come there, and all at once when
/// they outnumber the running calls.
#[derive(Default)]
struct Deadlines {
    queue: VecDeque<(Instant, u64)>,
}

impl Deadlines {
    /// Adds the deadline of call `ticket`.
    fn add(&mut self, deadline: Instant, ticket: u64) {
        let at = match self.queue.back() {
            Some(&(last, _)) if last > deadline => {
                self.queue.partition_point(|&(d, _)| d <= deadline)
            }
            _ => self.queue.len(),
        };
        self.queue.insert(at, (deadline, ticket));
    }

    /// The earliest deadline of a running call, once the ended calls' are dropped.
    fn next(&mut self, stops: &crate::base::fast_hash::FastMap<u64, Arc<Stop>>) -> Option<Instant> {
        if self.queue.len() > 2 * stops.len() + 64 {
            self.queue.retain(|(_, ticket)| stops.contains_key(ticket));
        }
        while let Some(&(deadline, ticket)) = self.queue.front() {
            if stops.contains_key(&ticket) {
                return Some(deadline);
            }
            self.queue.pop_front();
        }
        None
    }

    /// Tells each running call whose deadline is not after `now` that it passed; says
    /// whether one was.
    fn expire(
        &mut self,
        now: Instant,
        stops: &crate::base::fast_hash::FastMap<u64, Arc<Stop>>,
    ) -> bool {
        let mut expired = false;
        while let Some(&(deadline, ticket)) = self.queue.front() {
            if deadline > now {
                break;
            }
            self.queue.pop_front();
            if let Some(stop) = stops.get(&ticket) {
                stop.tell(EXPIRED);
                expired = true;
            }
        }
        expired
    }
}

/// A kept-alive connection to the backend: hyper's handle to send on it, and the task
/// that owns its socket.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    task: tokio::task::AbortHandle,
    /// Since when it waits in the pool.
    idle_since: Instant,
}

/// A connection in use: unless handed back whole ([`Leased::give_back`]), dropping it
/// closes the connection, so that no exchange cut short leaves bytes on it.
struct Leased(Option<Connection>);

impl Leased {
    fn give_back(mut self) -> Option<Connection> {
        self.0.take()
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            connection.task.abort();
        }
    }
}

/// The connections that wait for a request, the longest waiting first.
#[derive(Default)]
struct Pool {
    idle: Vec<Connection>,
}

impl Pool {
    /// The connection that waited least, if one is ready; drops the closed ones and
    /// those idle past [`POOL_IDLE`].
    fn take(&mut self, now: Instant) -> Option<Connection> {
        while let Some(connection) = self.idle.pop() {
            if connection.sender.is_ready()
                && now.saturating_duration_since(connection.idle_since) < POOL_IDLE
            {
                return Some(connection);
            }
            connection.task.abort();
        }
        None
    }

    /// Keeps a connection whose exchange ended whole, if hyper can send on it again.
    fn put(&mut self, mut connection: Connection, now: Instant) {
        if connection.sender.is_closed() {
            connection.task.abort();
            return;
        }
        connection.idle_since = now;
        self.idle.push(connection);
    }

    /// Closes the connections idle past [`POOL_IDLE`].
    fn expire(&mut self, now: Instant) {
        let stale = self
            .idle
            .iter()
            .take_while(|c| now.saturating_duration_since(c.idle_since) >= POOL_IDLE)
            .count();
        for connection in self.idle.drain(..stale) {
            connection.task.abort();
        }
    }
}

/// What [`Calls::wait`] does with a call that ended: its connection back to its pool
/// when it may serve again, its outcome on `done`.
struct Taker<'a, T> {
    stops: &'a mut crate::base::fast_hash::FastMap<u64, Arc<Stop>>,
    pool: &'a mut Pool,
    plain: &'a mut PlainPool,
    done: &'a mut Vec<(u64, T)>,
}

impl<T> Taker<'_, T> {
    /// Takes what a call ended with; says whether it answered: an aborted one leaves
    /// nothing, its job is forgotten.
    fn take(&mut self, (ticket, made): (u64, Option<(T, Option<Kept>)>)) -> bool {
        let Some((made, kept)) = made else {
            return false;
        };
        match kept {
            Some(Kept::Hyper(connection)) => self.pool.put(connection, Instant::now()),
            Some(Kept::Plain(connection)) => self.plain.put(connection, Instant::now()),
            None => {}
        }
        self.stops.remove(&ticket);
        self.done.push((ticket, made));
        true
    }
}

/// One worker thread's client to the backend, and the calls it holds.
pub(super) struct Calls<T> {
    runtime: tokio::runtime::Runtime,
    backend: Arc<Backend>,
    pool: Pool,
    /// The lean client's connections (see `gateway_plain`).
    plain: PlainPool,
    /// The calls started and not yet taken, polled inside [`Calls::wait`] only: no
    /// task is spawned per call, so starting one takes no lock and wakes nothing.
    running: FuturesUnordered<Running<T>>,
    /// How to stop each running call, by ticket.
    stops: crate::base::fast_hash::FastMap<u64, Arc<Stop>>,
    /// The plain calls' deadlines.
    deadlines: Deadlines,
    /// The job socket's descriptor (libzmq's `ZMQ_FD`), and a duplicate of it
    /// registered with the runtime.
    jobs: Option<(RawFd, AsyncFd<OwnedFd>)>,
    /// What a call that panicked leaves.
    panicked: fn() -> T,
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
    /// A runtime and no connection yet to the backend at `origin` (`http://HOST[:PORT]`);
    /// `panicked` makes what a call that panicked leaves.
    pub(super) fn new(origin: &str, panicked: fn() -> T) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Calls {
            runtime,
            backend: Arc::new(Backend::new(origin)?),
            pool: Pool::default(),
            plain: PlainPool::default(),
            running: FuturesUnordered::new(),
            stops: Default::default(),
            deadlines: Deadlines::default(),
            jobs: None,
            panicked,
        })
    }

    /// Starts a call: `finish` makes what [`Calls::wait`] gives back under `ticket`
    /// from how the call ended. A panic in the call or in `finish` leaves `panicked()`
    /// for this call alone (the panic itself goes to the panic hook, as any thread's),
    /// so that its job is still answered.
    pub(super) fn start(
        &mut self,
        ticket: u64,
        call: Call,
        finish: impl FnOnce(Called) -> T + Send + 'static,
    ) {
        let backend = Arc::clone(&self.backend);
        let pooled = self.pool.take(Instant::now());
        let stop = Arc::new(Stop::default());
        self.run(ticket, stop, async move {
            let (called, connection) = exchange(&backend, pooled, call).await;
            (finish(called), connection.map(Kept::Hyper))
        });
    }

    /// [`Calls::start`] for a plain call, which the lean client of `gateway_plain`
    /// makes, on a connection of its own pool; `finish` reads its answer as that
    /// client read it.
    pub(super) fn start_plain(
        &mut self,
        ticket: u64,
        call: PlainCall,
        finish: impl FnOnce(PlainCalled) -> T + Send + 'static,
    ) {
        let backend = Arc::clone(&self.backend);
        let now = Instant::now();
        let pooled = self.plain.take(now, POOL_IDLE);
        let PlainCall {
            request,
            limit,
            timeout,
        } = call;
        // A timeout past what an `Instant` holds is no deadline.
        if let Some(deadline) = now.checked_add(timeout) {
            self.deadlines.add(deadline, ticket);
        }
        let stop = Arc::new(Stop::default());
        let bounded = Bounded {
            call: gateway_plain::exchange(backend, pooled, request, limit),
            stop: Arc::clone(&stop),
        };
        let call = bounded.map(move |ended| {
            let (called, kept) = match ended {
                Some(Ok((answer, kept))) => (Ok(answer), kept.map(Kept::Plain)),
                Some(Err(e)) => (Err(e), None),
                None => (Err(CallError::Timeout), None),
            };
            (finish(called), kept)
        });
        self.run(ticket, stop, call);
    }

    /// Holds `call` as the running call `ticket`, stopped by `stop` (see
    /// [`Calls::start`]).
    fn run(
        &mut self,
        ticket: u64,
        stop: Arc<Stop>,
        call: impl Future<Output = (T, Option<Kept>)> + Send + 'static,
    ) {
        let held = Held {
            call: AssertUnwindSafe(call).catch_unwind(),
            stop: Arc::clone(&stop),
            ticket,
            panicked: self.panicked,
        };
        self.running.push(Box::pin(held));
        self.stops.insert(ticket, stop);
    }

    /// Stops the call `ticket`: the runtime drops it as it next runs, which closes its
    /// connection.
    pub(super) fn abort(&mut self, ticket: u64) {
        if let Some(stop) = self.stops.remove(&ticket) {
            stop.tell(ABORTED);
        }
    }

    /// Runs the calls until one finishes, the descriptor `jobs` signals, or `timeout`
    /// passes; puts what the finished ones made on `done` (all that finished by then,
    /// so one wake-up answers as many jobs as it can).
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
        let running = &mut self.running;
        let deadlines = &mut self.deadlines;
        let mut taker = Taker {
            stops: &mut self.stops,
            pool: &mut self.pool,
            plain: &mut self.plain,
            done,
        };
        let now = Instant::now();
        // A wait past what an `Instant` holds is a day's, then the loop's next turn.
        let end = now
            .checked_add(timeout)
            .or_else(|| now.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(now);
        let wake_at = |next: Option<Instant>| {
            tokio::time::Instant::from_std(next.map_or(end, |deadline| deadline.min(end)))
        };
        let first = wake_at(deadlines.next(&*taker.stops));
        self.runtime.block_on(async {
            let sleep = tokio::time::sleep_until(first);
            tokio::pin!(sleep);
            let signalled = async {
                match watched {
                    // libzmq's descriptor signals a change: the worker reads the
                    // socket until it is empty before it waits again.
                    Some(watched) => {
                        if let Ok(mut guard) = watched.readable().await {
                            guard.clear_ready();
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(signalled);
            loop {
                tokio::select! {
                    biased;
                    Some(ended) = running.next(), if !running.is_empty() => {
                        let mut answered = taker.take(ended);
                        // The others that are ready too, without waiting.
                        while let Some(Some(ended)) = running.next().now_or_never() {
                            answered |= taker.take(ended);
                        }
                        if answered {
                            break;
                        }
                    }
                    _ = &mut signalled => break,
                    _ = &mut sleep => {
                        // A call's deadline, or the wait's end: the calls told they
                        // passed their deadline end as timeouts in the next rounds.
                        let now = Instant::now();
                        if !deadlines.expire(now, &*taker.stops) && now >= end {
                            break;
                        }
                        sleep.as_mut().reset(wake_at(deadlines.next(&*taker.stops)));
                    }
                }
            }
        });
        if !self.pool.idle.is_empty() {
            self.pool.expire(Instant::now());
        }
        if !self.plain.is_empty() {
            self.plain.expire(Instant::now(), POOL_IDLE);
        }
    }

    /// Makes one call and waits for it, unless `stop` ends first (then `None`; drop
    /// the [`Calls`] to close the call's connection at once).
    pub(super) fn call<S: std::future::Future<Output = ()>>(
        &mut self,
        call: Call,
        stop: S,
    ) -> Option<Called> {
        let pooled = self.pool.take(Instant::now());
        let backend = &self.backend;
        let ended = self.runtime.block_on(async {
            tokio::select! {
                ended = exchange(backend, pooled, call) => Some(ended),
                _ = stop => None,
            }
        });
        let (called, connection) = ended?;
        if let Some(connection) = connection {
            self.pool.put(connection, Instant::now());
        }
        Some(called)
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

/// A new connection to the backend, its task running on the current runtime.
async fn connect(backend: &Backend) -> Result<Connection, CallError> {
    let unreached = |e: &(dyn std::error::Error + 'static)| CallError::Unreached(with_causes(e));
    let stream = tokio::net::TcpStream::connect((backend.host.as_str(), backend.port))
        .await
        .map_err(|e| CallError::Unreached(format!("tcp connect error: {e}")))?;
    // A request's head and body go out in one write: no Nagle wait between answers.
    stream.set_nodelay(true).map_err(|e| unreached(&e))?;
    let (sender, connection) = http1::Builder::new()
        .max_headers(MAX_ANSWER_FIELDS)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreached(&e))?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("a backend connection ended: {e}");
        }
    });
    Ok(Connection {
        sender,
        task: task.abort_handle(),
        idle_since: Instant::now(),
    })
}

/// The request as sent on a connection to `backend`: the backend's authority in
/// `Host`, the target in origin form (RFC 9112 §3.2), as hyper-util's client did.
fn to_send(backend: &Backend, request: http::Request<Bytes>) -> http::Request<Full<Bytes>> {
    let mut request = request.map(Full::new);
    if request.uri().scheme().is_some() {
        if let Some(target) = request.uri().path_and_query().cloned() {
            *request.uri_mut() = http::Uri::from(target);
        }
    }
    request
        .headers_mut()
        .insert(http::header::HOST, backend.authority.clone());
    request
}

/// Makes the call and reads the whole answer, within its timeout and limit, on
/// `pooled` or a new connection; gives back the connection when the exchange ended
/// whole (dropped otherwise, which closes it).
async fn exchange(
    backend: &Backend,
    pooled: Option<Connection>,
    call: Call,
) -> (Called, Option<Connection>) {
    let Call {
        request,
        limit,
        timeout,
    } = call;
    let mut request = to_send(backend, request);
    let called = async {
        let mut leased = Leased(pooled);
        let mut reused = leased.0.is_some();
        let response = loop {
            // How to send it again if the kept-alive connection turns out closed after
            // the request went out (RFC 9112 §9.3.1: idempotent methods only).
            let again = (reused && request.method().is_idempotent()).then(|| copy_of(&request));
            let connection = match leased.0.as_mut() {
                Some(connection) => connection,
                None => leased.0.insert(connect(backend).await?),
            };
            match connection.sender.try_send_request(request).await {
                Ok(response) => break response,
                Err(mut e) => {
                    // Unsent (the backend had closed the connection before a byte of
                    // it went out), or sent on a connection closed before any answer.
                    let again = e
                        .take_message()
                        .or_else(|| again.filter(|_| e.error().is_incomplete_message()));
                    match again.filter(|_| reused) {
                        Some(again) => {
                            log::debug!(
                                "a kept-alive backend connection was closed; sending again"
                            );
                            request = again;
                            reused = false;
                            if let Some(closed) = leased.0.take() {
                                closed.task.abort();
                            }
                        }
                        None => return Err(CallError::Unreached(with_causes(e.error()))),
                    }
                }
            }
        };
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
        let answer = http::Response::from_parts(parts, body.to_bytes());
        Ok((answer, leased.give_back()))
    };
    match tokio::time::timeout(timeout, called).await {
        Ok(Ok((answer, connection))) => (Ok(answer), connection),
        Ok(Err(e)) => (Err(e), None),
        Err(_) => (Err(CallError::Timeout), None),
    }
}

/// A request like `request` (its body shares the bytes).
fn copy_of(request: &http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
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
