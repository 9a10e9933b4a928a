//! Webhooks: a job's result POSTed to the `Callback-URL` its client gave, signed the
//! Standard Webhooks way, retried until the receiver takes it.
//!
//! A submit (`Prefer: respond-async`) with `Callback-URL: https://...` asks for the
//! job's end to be delivered there. The URL is checked on a checking thread before the
//! job is accepted ([`ssrf`]: a host that resolves to a loopback, private,
//! link-local or otherwise non-global address is answered `400`). When the job ends —
//! succeeded, failed, or cancelled — the job service stores the message to deliver in
//! the job store (so it survives a restart) and a delivery thread POSTs it:
//!
//! ```text
//! POST /hook HTTP/1.1
//! content-type: application/json
//! webhook-id: <job id>
//! webhook-timestamp: <unix seconds>
//! webhook-signature: v1,<base64 of HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>
//!
//! {"id":"...","state":"succeeded","status":200,"headers":[["Content-Type","application/json"]],"body":"..."}
//! ```
//!
//! `body` is the answer's body as a string when it is UTF-8, else base64 with
//! `"body_encoding":"base64"`. A cancelled job is delivered too, with `"status":null`
//! and `"body":null`, so a receiver waiting for the callback learns it will get no
//! result.
//!
//! A `2xx` answer delivers the message. `410 Gone` stops the deliveries for this job
//! (the receiver does not want it). Anything else — another status, a redirect (never
//! followed), a timeout, a refused connection — is tried again after
//! [`WebhookConfig::retry_first`], doubling up to [`WebhookConfig::retry_max`], each
//! wait drawn between half and all of that ("equal jitter"), or after the receiver's
//! `Retry-After` seconds when that is longer. Once a job's deliveries have failed for
//! [`WebhookConfig::give_up`], the message is given up. Each attempt (time, status or
//! error, latency) is kept and shown in the job's status document.
//!
//! ## Threads
//! The job store is only touched from the job service's thread, which owns its SQLite
//! connection: the webhook threads get tasks over channels and send each outcome back
//! over another, which the service thread waits on beside its commands. One connection
//! keeps every write in the service's group commit and needs no locking between
//! threads; the cost is a hop over a channel per attempt, which is nothing next to an
//! HTTP request.
//!
//! A submit's URL check goes to threads of its own, so a check never waits behind
//! deliveries (a receiver that never answers holds a delivery thread until the
//! timeout). A delivery thread checks the URL again, then counts the delivery against
//! its destination, the address and port the host resolved to (however the URL spells
//! it): when [`WebhookConfig::per_host`] are in progress there, it joins that
//! destination's queue and the thread moves on; the thread that ends a delivery to
//! that destination takes the next one waiting at once. A backlog for one receiver
//! therefore drains as fast as the receiver answers, with never more than `per_host`
//! connections to it.

use super::clock::now_ms;
use super::ssrf::{self, AddressPolicy, CallbackError, CheckedTarget};
pub use super::store::{Attempt, DeliveryState, WebhookRecord};
use super::store::{JobState, StoredAnswer};
use super::tag::job_tag;
use base64::Engine;
use crossbeam_channel::{Receiver, Sender};
use hmac::{KeyInit, Mac};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The request header that asks for a webhook.
pub const CALLBACK_HEADER: &str = "callback-url";

/// How webhooks are delivered.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The HMAC-SHA256 key messages are signed with (see [`parse_secret`]).
    pub secret: Vec<u8>,
    /// The wait after the first failed attempt (1 s by default); it doubles after each
    /// further failure.
    pub retry_first: Duration,
    /// The longest wait between attempts (1 h by default).
    pub retry_max: Duration,
    /// How long a job's deliveries may keep failing before the message is given up
    /// (24 h by default), counted from the first failure.
    pub give_up: Duration,
    /// The connect timeout, and the timeout for the receiver's answer (10 s by default).
    pub timeout: Duration,
    /// Delivery threads (4 by default), and as many threads that check submits'
    /// callback URLs (so that a check never waits behind a delivery).
    pub threads: usize,
    /// Deliveries in progress to one destination at once (2 by default): a
    /// destination is the address and port a callback's host resolves to (the first
    /// one, which is connected to first), however the URL spells it. The others wait
    /// in that destination's queue and start the moment one of these ends.
    pub per_host: usize,
    /// Which addresses callbacks may reach.
    pub policy: AddressPolicy,
}

impl WebhookConfig {
    /// Webhooks signed with `secret`, with the default schedule and limits.
    pub fn new(secret: Vec<u8>) -> Self {
        WebhookConfig {
            secret,
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            give_up: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            threads: 4,
            per_host: 2,
            policy: AddressPolicy::default(),
        }
    }

    /// The wait after `failures` failed attempts (1 or more): `retry_first` doubled
    /// for each failure after the first, at most `retry_max`, scaled by `jitter`
    /// (taken between 0.5 and 1).
    ///
    /// ```
    /// use prime_server::jobs::webhooks::WebhookConfig;
    /// use std::time::Duration;
    /// let config = WebhookConfig::new(b"key".to_vec());
    /// assert_eq!(config.backoff(1, 1.0), Duration::from_secs(1));
    /// assert_eq!(config.backoff(3, 1.0), Duration::from_secs(4));
    /// assert_eq!(config.backoff(3, 0.5), Duration::from_secs(2));
    /// assert_eq!(config.backoff(40, 1.0), Duration::from_secs(3600));
    /// ```
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let full = self
            .retry_first
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max);
        full.mul_f64(jitter.clamp(0.5, 1.0))
    }
}

/// Reads a signing secret. The Standard Webhooks form `whsec_<base64>` is decoded (the
/// key is the bytes the base64 stands for); any other text is the key as it is.
///
/// ```
/// use prime_server::jobs::webhooks::parse_secret;
/// assert_eq!(parse_secret("whsec_c2VjcmV0").unwrap(), b"secret");
/// assert_eq!(parse_secret("plain text key").unwrap(), b"plain text key");
/// assert!(parse_secret("whsec_***").is_err());
/// assert!(parse_secret("").is_err());
/// ```
pub fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let key = match text.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the webhook secret's base64 after whsec_ is not valid: {e}"))?,
        None => text.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err("the webhook secret is empty".into());
    }
    Ok(key)
}

/// The `webhook-signature` value for a message: `v1,` and the base64 of
/// HMAC-SHA256(`key`, `"{id}.{timestamp}.{body}"`).
///
/// ```
/// use prime_server::jobs::webhooks::sign;
/// let signature = sign(b"key", "msg", 1700000000, b"{}");
/// assert!(signature.starts_with("v1,"));
/// assert_eq!(signature.len(), 3 + 44);
/// ```
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The message a job's end is delivered as: `{id, state, status, headers, body}`, with
/// `body_encoding: "base64"` when the body is not UTF-8.
pub fn message(job_id: &str, state: JobState, answer: Option<&StoredAnswer>) -> Vec<u8> {
    let mut document = serde_json::json!({
        "id": job_id,
        "state": state.as_str(),
        "status": answer.map(|a| a.status),
        "headers": answer.map(|a| a.headers.clone()).unwrap_or_default(),
        "body": serde_json::Value::Null,
    });
    if let Some(answer) = answer {
        match std::str::from_utf8(&answer.body) {
            Ok(text) => document["body"] = text.into(),
            Err(_) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&answer.body);
                document["body"] = encoded.into();
                document["body_encoding"] = "base64".into();
            }
        }
    }
    document.to_string().into_bytes()
}

/// A random factor between 0.5 and 1 for the backoff, from the operating system.
pub(crate) fn jitter() -> f64 {
    let mut bytes = [0u8; 2];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => 0.5 + f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX) / 2.0,
        Err(_) => 0.75,
    }
}

/// Work for a delivery thread. `T` is what a URL check carries through and back (the
/// job service's submit).
#[derive(Debug)]
pub enum Task<T> {
    /// Check a submit's callback URL (resolving its host).
    Check {
        /// The URL.
        url: String,
        /// What to hand back with the verdict.
        carry: T,
    },
    /// POST a job's message.
    Deliver {
        /// The job's number.
        number: u64,
        /// The job's id.
        job_id: String,
        /// Where.
        url: String,
        /// The message.
        payload: Vec<u8>,
    },
}

/// What a delivery thread reports.
#[derive(Debug)]
pub enum Outcome<T> {
    /// A URL check's verdict.
    Checked {
        /// What the check carried.
        carry: T,
        /// Whether callbacks may go there.
        verdict: Result<(), CallbackError>,
    },
    /// An attempt's result.
    Attempted {
        /// The job's number.
        number: u64,
        /// The attempt.
        attempt: Attempt,
        /// The receiver's `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
}

/// The threads: some check submits' callback URLs, others deliver; deliveries to one
/// destination wait on that destination's own queue (see [`WebhookConfig::per_host`]).
pub struct Pool<T: Send + 'static> {
    /// URL checks, to the checking threads: a check never waits behind a delivery.
    checks: Option<Sender<Task<T>>>,
    /// Deliveries, to the delivery threads.
    deliveries: Option<Sender<Task<T>>>,
    /// Set when the pool stops: tasks still queued are left (they are in the store).
    stopping: Arc<AtomicBool>,
    /// Outcomes, for the job service to wait on.
    pub outcomes: Receiver<Outcome<T>>,
    threads: Vec<JoinHandle<()>>,
}

/// Starts `count` threads named `{name}-{n}` that take tasks from `tasks` and hand each
/// to `handle`, until the channel closes, `stopping` is set, or `handle` says to stop
/// (returns false: its outcomes are no longer read).
fn spawn_threads<T: Send + 'static>(
    name: &str,
    count: usize,
    tasks: &Receiver<Task<T>>,
    stopping: &Arc<AtomicBool>,
    threads: &mut Vec<JoinHandle<()>>,
    handle: impl Fn(Task<T>) -> bool + Clone + Send + 'static,
) -> std::io::Result<()> {
    for n in 0..count {
        let (tasks, stopping, handle) = (tasks.clone(), Arc::clone(stopping), handle.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    for task in tasks {
                        if stopping.load(Ordering::Relaxed) || !handle(task) {
                            break;
                        }
                    }
                })?,
        );
    }
    Ok(())
}

/// Whose webhooks a pool delivers, as its log lines name them: `job ~1a2b3c4d: webhook
/// to https://host answered 200` or `subscription ~…` (the tag is a digest, never the
/// id itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A job's callback (`Prefer: respond-async` with a callback URL).
    Job,
    /// A message to a URL subscriber of a channel.
    Subscription,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::Job => "job",
            Subject::Subscription => "subscription",
        }
    }
}

impl<T: Send + 'static> Pool<T> {
    /// Starts `config.threads` delivery threads and as many checking threads, for
    /// jobs' callbacks.
    pub fn start(config: &WebhookConfig) -> std::io::Result<Pool<T>> {
        Self::start_for(config, Subject::Job)
    }

    /// Starts `config.threads` delivery threads and as many checking threads, whose
    /// log lines name their deliveries as `subject`'s.
    pub fn start_for(config: &WebhookConfig, subject: Subject) -> std::io::Result<Pool<T>> {
        let (check_tx, check_rx) = crossbeam_channel::unbounded::<Task<T>>();
        let (deliver_tx, deliver_rx) = crossbeam_channel::unbounded::<Task<T>>();
        let (outcome_tx, outcome_rx) = crossbeam_channel::unbounded();
        let stopping = Arc::new(AtomicBool::new(false));
        let destinations = Arc::new(Destinations::new(config.per_host));
        let count = config.threads.max(1);
        let mut threads = Vec::with_capacity(2 * count);
        let (checker, outcomes) = (config.clone(), outcome_tx.clone());
        spawn_threads(
            "webhook-check",
            count,
            &check_rx,
            &stopping,
            &mut threads,
            move |task| match task {
                Task::Check { url, carry } => outcomes.send(check(&checker, url, carry)).is_ok(),
                _ => true,
            },
        )?;
        let (deliverer, stop) = (config.clone(), Arc::clone(&stopping));
        spawn_threads(
            "webhook",
            count,
            &deliver_rx,
            &stopping,
            &mut threads,
            move |task| deliver(&deliverer, subject, &destinations, &stop, task, &outcome_tx),
        )?;
        Ok(Pool {
            checks: Some(check_tx),
            deliveries: Some(deliver_tx),
            stopping,
            outcomes: outcome_rx,
            threads,
        })
    }

    /// Hands a task to the threads (a check to the checking threads, a delivery to the
    /// delivery threads); never blocks.
    pub fn send(&self, task: Task<T>) {
        let queue = match task {
            Task::Check { .. } => &self.checks,
            Task::Deliver { .. } => &self.deliveries,
        };
        if let Some(queue) = queue {
            if queue.send(task).is_err() {
                log::error!("webhooks: the delivery threads have stopped");
            }
        }
    }
}

impl<T: Send + 'static> Drop for Pool<T> {
    /// Lets each thread finish its attempt in progress (bounded by the timeouts), then
    /// waits for them. An attempt cut short this way, or still waiting for its
    /// destination, is made again after a restart.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.checks = None;
        self.deliveries = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("webhooks: a delivery thread panicked");
            }
        }
    }
}

/// A delivery whose URL passed the check, ready to be POSTed.
struct Ready {
    number: u64,
    job_id: String,
    payload: Vec<u8>,
    target: CheckedTarget,
}

/// The per-destination limit: how many deliveries are in progress to each resolved
/// address and port (however the URLs spell the host), and the ones waiting for it.
/// A thread that finishes a delivery takes the next one waiting for the same
/// destination at once, so a busy destination's queue drains as fast as it answers,
/// and never holds more than `limit` threads.
struct Destinations {
    /// Deliveries in progress to one destination at once (at least 1).
    limit: usize,
    /// In progress and waiting, by destination.
    by_address: Mutex<HashMap<SocketAddr, Destination>>,
}

#[derive(Default)]
struct Destination {
    in_progress: usize,
    waiting: VecDeque<Ready>,
}

impl Destinations {
    fn new(limit: usize) -> Self {
        Destinations {
            limit: limit.max(1),
            by_address: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Destination>> {
        // A panic never happens while the lock is held (no user code runs under it).
        self.by_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot for `ready`'s destination and gives it back to be delivered now,
    /// or queues it behind the destination's deliveries in progress (then `None`).
    fn admit(&self, destination: SocketAddr, ready: Ready) -> Option<Ready> {
        let mut all = self.lock();
        let entry = all.entry(destination).or_default();
        if entry.in_progress < self.limit {
            entry.in_progress += 1;
            Some(ready)
        } else {
            entry.waiting.push_back(ready);
            None
        }
    }

    /// Called when a delivery to `destination` is over: the next one waiting for it
    /// (keeping the slot), or `None` and the slot is freed.
    fn next(&self, destination: SocketAddr) -> Option<Ready> {
        let mut all = self.lock();
        let entry = all.get_mut(&destination)?;
        if let Some(ready) = entry.waiting.pop_front() {
            return Some(ready);
        }
        entry.in_progress = entry.in_progress.saturating_sub(1);
        if entry.in_progress == 0 {
            all.remove(&destination);
        }
        None
    }
}

/// A submit's URL check.
fn check<T>(config: &WebhookConfig, url: String, carry: T) -> Outcome<T> {
    Outcome::Checked {
        verdict: without_panic(|| config.policy.check(&url).map(|_| ())).unwrap_or_else(|panic| {
            Err(CallbackError::Unresolved {
                host: ssrf::origin(&url),
                reason: panic,
            })
        }),
        carry,
    }
}

/// A delivery: the URL checked (its host resolved anew), then POSTed when its
/// destination has a free slot, followed by the deliveries that were waiting for that
/// destination. False when the outcomes are no longer heard (the pool is stopping).
fn deliver<T>(
    config: &WebhookConfig,
    subject: Subject,
    destinations: &Destinations,
    stopping: &AtomicBool,
    task: Task<T>,
    outcomes: &Sender<Outcome<T>>,
) -> bool {
    let Task::Deliver {
        number,
        job_id,
        url,
        payload,
    } = task
    else {
        return true;
    };
    let at_ms = now_ms();
    let started = Instant::now();
    let target = match without_panic(|| config.policy.check(&url)) {
        Ok(Ok(target)) => target,
        Ok(Err(refused)) => {
            let outcome = failed(
                subject,
                number,
                &job_id,
                &url,
                at_ms,
                started,
                refused.to_string(),
            );
            return outcomes.send(outcome).is_ok();
        }
        Err(panic) => {
            let outcome = failed(subject, number, &job_id, &url, at_ms, started, panic);
            return outcomes.send(outcome).is_ok();
        }
    };
    let destination = target.destination();
    let ready = Ready {
        number,
        job_id,
        payload,
        target,
    };
    let mut next = destinations.admit(destination, ready);
    while let Some(ready) = next {
        if outcomes.send(attempt(config, subject, ready)).is_err() {
            return false;
        }
        if stopping.load(Ordering::Relaxed) {
            return false;
        }
        next = destinations.next(destination);
    }
    true
}

/// An attempt that ended before a request was sent.
fn failed<T>(
    subject: Subject,
    number: u64,
    job_id: &str,
    url: &str,
    at_ms: i64,
    started: Instant,
    error: String,
) -> Outcome<T> {
    log::warn!(
        "{} {}: webhook to {} failed: {error}",
        subject.as_str(),
        job_tag(job_id.as_bytes()),
        ssrf::origin(url)
    );
    Outcome::Attempted {
        number,
        attempt: Attempt {
            at_ms,
            status: None,
            error: Some(error),
            latency_ms: elapsed_ms(started),
        },
        retry_after: None,
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64
}

/// POSTs a ready delivery and reports how it went.
fn attempt<T>(config: &WebhookConfig, subject: Subject, ready: Ready) -> Outcome<T> {
    let at_ms = now_ms();
    let started = Instant::now();
    let Ready {
        number,
        job_id,
        payload,
        target,
    } = ready;
    let result =
        without_panic(|| post(config, &target, &job_id, &payload)).and_then(|result| result);
    let latency_ms = elapsed_ms(started);
    // The origin only: a callback's path and query are often its credential.
    let origin = ssrf::origin(&target.url);
    match result {
        Ok((status, retry_after)) => {
            log::info!(
                "{} {}: webhook to {origin} answered {status} in {latency_ms} ms",
                subject.as_str(),
                job_tag(job_id.as_bytes())
            );
            Outcome::Attempted {
                number,
                attempt: Attempt {
                    at_ms,
                    status: Some(status),
                    error: None,
                    latency_ms,
                },
                retry_after,
            }
        }
        Err(error) => {
            log::warn!(
                "{} {}: webhook to {origin} failed: {error}",
                subject.as_str(),
                job_tag(job_id.as_bytes())
            );
            Outcome::Attempted {
                number,
                attempt: Attempt {
                    at_ms,
                    status: None,
                    error: Some(error),
                    latency_ms,
                },
                retry_after: None,
            }
        }
    }
}

/// Runs `work`, turning a panic into an error, so a delivery thread outlives a bug in
/// the HTTP client or the resolver and the job service always hears back.
fn without_panic<R>(work: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|_| {
        log::error!("webhooks: a delivery thread caught a panic");
        "the delivery thread panicked".to_string()
    })
}

/// Resolves a URL's host to the addresses that passed the check, and nothing else: the
/// connection goes where the check looked, whatever DNS says meanwhile.
#[derive(Debug)]
struct Pinned {
    addresses: Vec<SocketAddr>,
}

impl ureq::unversioned::resolver::Resolver for Pinned {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut resolved = self.empty();
        for address in self.addresses.iter().take(16) {
            resolved.push(*address);
        }
        if resolved.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(resolved)
    }
}

/// POSTs a signed message; the receiver's status and `Retry-After`, or what went wrong.
fn post(
    config: &WebhookConfig,
    target: &CheckedTarget,
    job_id: &str,
    payload: &[u8],
) -> Result<(u16, Option<Duration>), String> {
    let agent_config = ureq::Agent::config_builder()
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .proxy(None)
        .timeout_connect(Some(config.timeout))
        .timeout_recv_response(Some(config.timeout))
        .timeout_global(Some(config.timeout.saturating_mul(2)))
        .user_agent("prime_server-webhooks")
        .build();
    let agent = ureq::Agent::with_parts(
        agent_config,
        ureq::unversioned::transport::DefaultConnector::new(),
        Pinned {
            addresses: target.addresses.clone(),
        },
    );
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let response = agent
        .post(&target.url)
        .header("content-type", "application/json")
        .header("webhook-id", job_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign(&config.secret, job_id, timestamp, payload),
        )
        .send(payload)
        .map_err(|e| e.to_string())?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((response.status().as_u16(), retry_after))
}

/// Why the webhook options cannot be used.
#[derive(Debug)]
pub struct WebhookSetupError(pub String);

impl fmt::Display for WebhookSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "webhooks: {}", self.0)
    }
}

impl std::error::Error for WebhookSetupError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_body_is_sent_as_base64() {
        let answer = StoredAnswer {
            status: 200,
            headers: vec![("Content-Type".into(), "image/png".into())],
            body: vec![0xff, 0x00, 0x80],
        };
        let binary: serde_json::Value =
            serde_json::from_slice(&message("abc", JobState::Succeeded, Some(&answer))).unwrap();
        assert_eq!(binary["body"], "/wCA");
        assert_eq!(binary["body_encoding"], "base64");
        assert_eq!(binary["headers"][0][0], "Content-Type");
        let text = StoredAnswer {
            body: b"{\"ok\":true}".to_vec(),
            ..answer
        };
        let utf8: serde_json::Value =
            serde_json::from_slice(&message("abc", JobState::Failed, Some(&text))).unwrap();
        assert_eq!(utf8["body"], "{\"ok\":true}");
        assert!(utf8.get("body_encoding").is_none());
        assert_eq!(utf8["state"], "failed");
    }

    #[test]
    fn a_cancelled_job_has_no_status_or_body() {
        let cancelled: serde_json::Value =
            serde_json::from_slice(&message("abc", JobState::Cancelled, None)).unwrap();
        assert_eq!(cancelled["status"], serde_json::Value::Null);
        assert_eq!(cancelled["body"], serde_json::Value::Null);
        assert_eq!(cancelled["state"], "cancelled");
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.5..=1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body_joined_by_dots() {
        // Computed with Python: base64(hmac.new(b"Jefe", b'msg_1.1700000000.{"a":1}',
        // hashlib.sha256).digest()).
        let expected = "v1,d0RJKx1I1gWj34NuiszgvZNnbDFFnv95Rn8tyEgvdd8=";
        assert_eq!(
            sign(b"Jefe", "msg_1", 1_700_000_000, br#"{"a":1}"#),
            expected
        );
        assert_ne!(
            sign(b"Jefe", "msg_1", 1_700_000_001, br#"{"a":1}"#),
            expected
        );
        assert_ne!(
            sign(b"jefe", "msg_1", 1_700_000_000, br#"{"a":1}"#),
            expected
        );
    }
}
