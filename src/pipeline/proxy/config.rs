//! How a proxy is wired and tuned: its endpoints, bounds and timeouts, and how it picks a
//! worker for a job ([`Dispatch`], an optional [`Chooser`]).

use crate::pipeline::metrics::ProxyMetrics;
use std::sync::Arc;
use std::time::Duration;

/// Picks a worker for a job: given the job's frames (after the envelope, as
/// [`crate::Job::frame`] numbers them) and the heartbeat payloads of the idle workers in
/// the order the proxy would use them (see [`Dispatch`]), it returns the index of the
/// worker to use, or `None` for the first one. Used for cache affinity.
///
/// ```
/// use prime_server::pipeline::proxy::Chooser;
/// use std::sync::Arc;
/// // The worker whose heartbeat names the job's first frame, if one does.
/// let by_name: Chooser = Arc::new(|frames: &[&[u8]], heartbeats: &[&[u8]]| {
///     heartbeats.iter().position(|payload| Some(payload) == frames.first())
/// });
/// assert_eq!(by_name(&[b"b"], &[b"a", b"b"]), Some(1));
/// ```
pub type Chooser = Arc<dyn Fn(&[&[u8]], &[&[u8]]) -> Option<usize> + Send + Sync>;

/// Which idle worker a proxy hands a job to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dispatch {
    /// The one holding the fewest jobs, least recently used among equals: a burst of
    /// jobs is spread over the pool, and a worker slowed by a long job gets no more
    /// than its pace allows, for the lowest latency when jobs take long enough to be
    /// worth running side by side. A worker's count of jobs held falls when its READY
    /// reports them completed (every half credit, and once its queue has been dry
    /// for 1 ms).
    #[default]
    Spread,
    /// The one that took the last job, while it has credit left: fewer wake-ups per
    /// job, for throughput when jobs are cheap and many are in flight (a batch).
    FillCredit,
}

/// How a proxy is wired and tuned.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Where jobs arrive (bound; senders connect DEALER sockets).
    pub upstream: String,
    /// Where workers connect (bound; workers connect DEALER sockets).
    pub downstream: String,
    /// The front ends' loopbacks, for answering jobs the proxy cannot place (connected,
    /// PUSH), in the deployment's order (a job's answer goes to the front end its
    /// envelope names, see [`crate::pipeline::front_ends`]). Without any, such jobs are
    /// dropped with a warning, and the front end answers them 504 when their deadline
    /// passes.
    pub loopbacks: Vec<String>,
    /// How many jobs may wait for an idle worker before new ones are answered 503. Jobs
    /// the workers hold (up to their credit each) are not counted; jobs handed back by a
    /// stuck worker are queued whatever the bound, since they were admitted already.
    pub queue_bound: usize,
    /// How long a worker may stay silent before it is taken for dead.
    pub heartbeat_timeout: Duration,
    /// Optional worker preference (cache affinity).
    pub choose: Option<Chooser>,
    /// Which idle worker gets a job.
    pub dispatch: Dispatch,
    /// How often to log a one-line summary at info level (none by default).
    pub summary_every: Option<Duration>,
    /// How long the stage may have no worker before jobs are answered 503 at once
    /// instead of queued (5 s by default; from the proxy's start, too).
    pub no_worker_grace: Duration,
    /// Where the proxy publishes its figures for a metrics scrape, at each sweep.
    pub metrics: Option<Arc<ProxyMetrics>>,
}

impl ProxyConfig {
    /// A configuration with the default queue bound (10,000) and heartbeat timeout (1.5 s),
    /// answering through `loopback`, the one front end's (set
    /// [`loopbacks`](Self::loopbacks) for several).
    pub fn new(
        upstream: impl Into<String>,
        downstream: impl Into<String>,
        loopback: Option<String>,
    ) -> Self {
        ProxyConfig {
            upstream: upstream.into(),
            downstream: downstream.into(),
            loopbacks: loopback.into_iter().collect(),
            queue_bound: 10_000,
            heartbeat_timeout: Duration::from_millis(1500),
            choose: None,
            dispatch: Dispatch::Spread,
            summary_every: None,
            no_worker_grace: Duration::from_secs(5),
            metrics: None,
        }
    }
}
