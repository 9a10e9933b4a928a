//! A builder that wires a whole pipeline in one process: a proxy and a worker pool per
//! stage, plus the sockets a front end needs to feed it and hear its answers.
//!
//! ```
//! use prime_server::{Outcome, Pipeline};
//!
//! let ctx = zmq::Context::new();
//! let (pipeline, front) = Pipeline::new()
//!     .stage("double", 2, |job: &mut prime_server::Job| {
//!         let n: u64 = std::str::from_utf8(job.frame(0).unwrap_or(b"0")).unwrap().parse().unwrap();
//!         Outcome::forward([(2 * n).to_string().into_bytes()])
//!     })
//!     .stage("answer", 2, |job: &mut prime_server::Job| {
//!         Outcome::respond(job.frame(0).unwrap_or_default().to_vec())
//!     })
//!     .start(&ctx)
//!     .unwrap();
//! let answer = front.ask(b"21").unwrap();
//! assert_eq!(answer, b"42");
//! pipeline.stop();
//! ```

use crate::base::error::{Error, Result};
use crate::base::metrics::MetricsSource;
use crate::base::shutdown::Shutdown;
use crate::pipeline::front_ends::{FrontEndLink, MAX_FRONT_ENDS};
use crate::pipeline::metrics::ProxyMetrics;
use crate::pipeline::proxy::{Chooser, Dispatch, Proxy, ProxyConfig};
use crate::pipeline::worker::{ConcurrentWork, PoolMetrics, Work, WorkerConfig, WorkerPool};
use crate::server::{FrontSockets, Server, ServerConfig, ServerStats};
use crate::stages::tasks::TaskRouter;
use crate::stages::{HttpStage, HttpWork};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Which ZeroMQ transport the pipeline's internal links use.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Threads in this process (`inproc://`), the fastest.
    Inproc,
    /// Unix domain sockets in the given directory (`ipc://`).
    Ipc(PathBuf),
    /// TCP on the given host with ports the system picks (`tcp://HOST:*`).
    Tcp(String),
}

/// Starts a stage's pool; a pool that runs its stage's proxy itself takes it from the
/// `Option` (the others leave it, and it gets a thread of its own).
type StartPool = Box<
    dyn FnOnce(
            &zmq::Context,
            &str,
            &WorkerConfig,
            &mut Option<Proxy>,
            &Shutdown,
        ) -> Result<WorkerPool>
        + Send,
>;

/// One stage as declared.
struct StageSpec {
    name: String,
    start: StartPool,
    choose: Option<Chooser>,
}

/// Declares the stages of a pipeline; [`start`](Pipeline::start) wires and runs them.
pub struct Pipeline {
    stages: Vec<StageSpec>,
    transport: Transport,
    queue_bound: usize,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    prefetch: u32,
    dispatch: Dispatch,
    tasks: Option<TaskRouter>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// An empty pipeline over `inproc://` with the default queue bound and heartbeats.
    pub fn new() -> Self {
        let proxy = ProxyConfig::new("", "", None);
        let worker = WorkerConfig::new("", None, "", "");
        Pipeline {
            stages: Vec::new(),
            transport: Transport::Inproc,
            queue_bound: proxy.queue_bound,
            heartbeat_interval: worker.heartbeat_interval,
            heartbeat_timeout: proxy.heartbeat_timeout,
            prefetch: worker.prefetch,
            dispatch: proxy.dispatch,
            tasks: None,
        }
    }

    /// Appends a stage of `workers` threads, each running its own clone of `work`.
    pub fn stage<W: Work + Clone>(mut self, name: &str, workers: usize, work: W) -> Self {
        let start: StartPool = Box::new(move |ctx, name, config, _, shutdown| {
            WorkerPool::spawn(ctx, name, config, workers, work, shutdown)
        });
        self.stages.push(StageSpec {
            name: name.to_string(),
            start,
            choose: None,
        });
        self
    }

    /// Appends a stage of `threads` concurrent workers that hold at most `in_flight` jobs
    /// between them, each thread with its own clone of `work` (see
    /// [`ConcurrentWork`]): for stages whose jobs wait on the network, such as the
    /// gateway ([`crate::stages::HttpGateway`]). With one thread, that thread runs the
    /// stage's proxy too ([`WorkerPool::spawn_concurrent_hosting`]): a job from the
    /// front end wakes one thread, not a proxy thread and then the worker's.
    pub fn concurrent_stage<C: ConcurrentWork + Clone>(
        mut self,
        name: &str,
        threads: usize,
        in_flight: usize,
        work: C,
    ) -> Self {
        let start: StartPool =
            Box::new(
                move |ctx, name, config, proxy, shutdown| match proxy.take() {
                    Some(proxy) if threads.min(in_flight) == 1 => {
                        WorkerPool::spawn_concurrent_hosting(
                            ctx, name, config, in_flight, work, proxy, shutdown,
                        )
                    }
                    other => {
                        *proxy = other;
                        WorkerPool::spawn_concurrent(
                            ctx, name, config, threads, in_flight, work, shutdown,
                        )
                    }
                },
            );
        self.stages.push(StageSpec {
            name: name.to_string(),
            start,
            choose: None,
        });
        self
    }

    /// Appends a stage written against HTTP (see [`crate::stages`]).
    pub fn http_stage<W: HttpWork + Clone>(self, name: &str, workers: usize, work: W) -> Self {
        self.stage(name, workers, HttpStage(work))
    }

    /// Gives the last stage's proxy a choose function (see [`Chooser`]).
    pub fn choose(mut self, choose: Chooser) -> Self {
        if let Some(stage) = self.stages.last_mut() {
            stage.choose = Some(choose);
        }
        self
    }

    /// Uses another transport for the internal links.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// How many jobs may wait at each proxy before new ones are answered 503.
    pub fn queue_bound(mut self, bound: usize) -> Self {
        self.queue_bound = bound;
        self
    }

    /// How often workers heartbeat, and how long proxies wait before taking them for dead.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// How many jobs each worker may hold at once (see [`WorkerConfig::prefetch`]).
    pub fn prefetch(mut self, jobs: u32) -> Self {
        self.prefetch = jobs;
        self
    }

    /// Which idle worker each proxy hands a job to (see [`Dispatch`]).
    pub fn dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// Lets the front end route by task name itself (see
    /// [`FrontSockets::route_tasks`]): each request goes straight to the stage its
    /// `X-Task-Name` or path names, with no routing stage and no extra hop. Every
    /// stage the table names must be a stage of this pipeline.
    ///
    /// ```
    /// use prime_server::stages::HttpGateway;
    /// use prime_server::stages::tasks::TaskRouter;
    ///
    /// let backend = HttpGateway::new("http://127.0.0.1:9000").unwrap();
    /// let pipeline = prime_server::Pipeline::new()
    ///     .http_stage("fast", 8, backend.clone())
    ///     .http_stage("slow", 2, backend)
    ///     .route_tasks(TaskRouter::new().task("report", "slow").default_stage("fast"));
    /// # drop(pipeline);
    /// ```
    pub fn route_tasks(mut self, router: TaskRouter) -> Self {
        self.tasks = Some(router);
        self
    }

    /// Starts the pipeline behind a front end bound as `config` says; run the returned
    /// server (on this thread) with [`Server::run`], then stop the pipeline.
    pub fn bind_server(
        self,
        ctx: &zmq::Context,
        config: ServerConfig,
    ) -> Result<(RunningPipeline, Server)> {
        give_io_threads(ctx, config.io_threads, config.io_thread_spill);
        // Bound first: a taken port is reported before any stage starts (or logs).
        let listeners = Server::bind_listeners(ctx, &config)?;
        let (pipeline, front) = self.start(ctx)?;
        let mut config = config;
        if config.metrics_source.is_none() {
            config.metrics_source = Some(pipeline.metrics_source());
        }
        let server = Server::with_listeners(ctx, config, listeners, front)?;
        Ok((pipeline, server))
    }

    /// Starts the pipeline behind a front end bound as `config` says, serves on this
    /// thread until `shutdown` is triggered (or its drain has finished), then stops the
    /// pipeline: the whole life of a service in one call.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use prime_server::server::ServerConfig;
    /// use prime_server::{Outcome, Pipeline, Shutdown};
    ///
    /// let shutdown = Shutdown::new();
    /// shutdown.on_signals()?;
    /// let hello = |job: &mut prime_server::Job| Outcome::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec());
    /// Pipeline::new()
    ///     .stage("hello", 2, hello)
    ///     .serve(&zmq::Context::new(), ServerConfig::http("tcp://127.0.0.1:8002"), &shutdown)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve(
        self,
        ctx: &zmq::Context,
        config: ServerConfig,
        shutdown: &Shutdown,
    ) -> Result<ServerStats> {
        let (pipeline, server) = self.bind_server(ctx, config)?;
        let served = server.run(shutdown);
        pipeline.stop();
        served
    }

    /// Binds and starts every proxy and worker; returns the running pipeline and the
    /// sockets its front end uses.
    pub fn start(self, ctx: &zmq::Context) -> Result<(RunningPipeline, FrontSockets)> {
        let (running, mut fronts) = self.start_front_ends(ctx, 1)?;
        let front = fronts
            .pop()
            .ok_or_else(|| Error::Config("no front end".into()))?;
        Ok((running, front))
    }

    /// Binds and starts every proxy and worker behind `front_ends` front ends (see
    /// [`crate::pipeline::front_ends`]); returns the running pipeline and each front
    /// end's sockets, front end 0 first. Every proxy and worker reaches every front
    /// end, and answers go to the front end that sent the request.
    ///
    /// ```
    /// use prime_server::{Outcome, Pipeline};
    ///
    /// let ctx = zmq::Context::new();
    /// let (pipeline, fronts) = Pipeline::new()
    ///     .stage("echo", 2, |job: &mut prime_server::Job| {
    ///         Outcome::respond(job.frame(0).unwrap_or_default().to_vec())
    ///     })
    ///     .start_front_ends(&ctx, 2)
    ///     .unwrap();
    /// assert_eq!(fronts[1].ask(b"to the second").unwrap(), b"to the second");
    /// assert_eq!(fronts[0].ask(b"to the first").unwrap(), b"to the first");
    /// pipeline.stop();
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] with no stage, two stages of one name, no front end or more
    /// than [`MAX_FRONT_ENDS`]; a socket error binding or connecting.
    pub fn start_front_ends(
        self,
        ctx: &zmq::Context,
        front_ends: usize,
    ) -> Result<(RunningPipeline, Vec<FrontSockets>)> {
        if front_ends == 0 || front_ends > MAX_FRONT_ENDS {
            return Err(Error::Config(format!(
                "{front_ends} front ends: give 1 to {MAX_FRONT_ENDS}"
            )));
        }
        if self.stages.is_empty() {
            return Err(Error::Config("a pipeline needs at least one stage".into()));
        }
        for (index, stage) in self.stages.iter().enumerate() {
            if self.stages[..index].iter().any(|s| s.name == stage.name) {
                return Err(Error::Config(format!(
                    "two stages are named {:?}",
                    stage.name
                )));
            }
        }
        let names = EndpointNames::new(&self.transport);
        let mut fronts = Vec::with_capacity(front_ends);
        for number in 0..front_ends {
            let mut front = FrontSockets::create(
                ctx,
                &names.make(&format!("loopback-{number}")),
                &names.make(&format!("interrupt-{number}")),
            )?;
            front.front_end = u8::try_from(number).unwrap_or(u8::MAX);
            fronts.push(front);
        }
        let links: Vec<FrontEndLink> = fronts
            .iter()
            .map(|f| FrontEndLink::new(&f.loopback_endpoint, &f.interrupt_endpoint))
            .collect();
        let shutdown = Shutdown::new();
        let mut running = RunningPipeline {
            shutdown: shutdown.clone(),
            proxies: Vec::new(),
            pools: Vec::new(),
            proxy_metrics: Vec::new(),
        };
        let mut stage_links = Vec::with_capacity(self.stages.len());
        // Bound, then started: by their stage's pool, or else on threads of their own.
        let mut proxies = Vec::with_capacity(self.stages.len());
        for (index, stage) in self.stages.iter().enumerate() {
            let mut config = ProxyConfig::new(
                names.make(&format!("{index}-up")),
                names.make(&format!("{index}-down")),
                None,
            );
            config.loopbacks = links.iter().map(|l| l.loopback.clone()).collect();
            config.queue_bound = self.queue_bound;
            config.heartbeat_timeout = self.heartbeat_timeout;
            config.choose = stage.choose.clone();
            config.dispatch = self.dispatch;
            let metrics = Arc::new(ProxyMetrics::default());
            config.metrics = Some(metrics.clone());
            running.proxy_metrics.push((stage.name.clone(), metrics));
            let proxy = Proxy::bind(ctx, config)?;
            stage_links.push(proxy.endpoints());
            proxies.push(Some(proxy));
        }
        let routes: Vec<(String, String)> = self
            .stages
            .iter()
            .zip(&stage_links)
            .map(|(stage, (upstream, _))| (stage.name.clone(), upstream.clone()))
            .collect();
        for front in &mut fronts {
            front.connect_entry(&stage_links[0].0)?;
            front.stages = self.stages.iter().map(|s| s.name.clone()).collect();
            if let Some(router) = &self.tasks {
                front.route_tasks(ctx, router.clone(), &routes)?;
            }
        }
        for (index, stage) in self.stages.into_iter().enumerate() {
            let mut config = WorkerConfig::new(
                stage_links[index].1.clone(),
                stage_links.get(index + 1).map(|(up, _)| up.clone()),
                "",
                "",
            );
            config.front_ends = links.clone();
            config.heartbeat_interval = self.heartbeat_interval;
            config.prefetch = self.prefetch;
            config.routes = routes.clone();
            let proxy = &mut proxies[index];
            running
                .pools
                .push((stage.start)(ctx, &stage.name, &config, proxy, &shutdown)?);
            if let Some(proxy) = proxy.take() {
                let stop = shutdown.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("{}-proxy", stage.name))
                    .spawn(move || {
                        if let Err(e) = proxy.run(&stop) {
                            log::error!("proxy stopped: {e}");
                        }
                    })
                    .map_err(Error::Thread)?;
                running.proxies.push(thread);
            }
        }
        Ok((running, fronts))
    }
}

/// Makes the endpoint names of one pipeline, unique within the process.
struct EndpointNames {
    transport: Transport,
    prefix: String,
}

impl EndpointNames {
    fn new(transport: &Transport) -> Self {
        static PIPELINES: AtomicU64 = AtomicU64::new(0);
        let number = PIPELINES.fetch_add(1, Ordering::Relaxed);
        EndpointNames {
            transport: transport.clone(),
            prefix: format!("prime_server-{}-{number}", std::process::id()),
        }
    }

    fn make(&self, what: &str) -> String {
        match &self.transport {
            Transport::Inproc => format!("inproc://{}-{what}", self.prefix),
            Transport::Ipc(dir) => format!("ipc://{}/{}-{what}", dir.display(), self.prefix),
            Transport::Tcp(host) => format!("tcp://{host}:*"),
        }
    }
}

/// A running pipeline. [`stop`](RunningPipeline::stop) (or dropping it) stops and joins
/// every thread, within a fraction of a second.
pub struct RunningPipeline {
    shutdown: Shutdown,
    proxies: Vec<JoinHandle<()>>,
    pools: Vec<WorkerPool>,
    /// Each stage's name and its proxy's figures, in pipeline order.
    proxy_metrics: Vec<(String, Arc<ProxyMetrics>)>,
}

impl RunningPipeline {
    /// The flag that stops this pipeline; long work sees it through `Job::interrupted`.
    pub fn shutdown_flag(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The proxies' and pools' figures, labelled by stage, for the front end's metrics
    /// path ([`ServerConfig::metrics_source`]; [`Pipeline::bind_server`] sets it).
    pub fn metrics_source(&self) -> MetricsSource {
        let stages: Vec<(String, Arc<ProxyMetrics>, PoolMetrics)> = self
            .proxy_metrics
            .iter()
            .zip(&self.pools)
            .map(|((name, proxy), pool)| (name.clone(), proxy.clone(), pool.metrics()))
            .collect();
        MetricsSource::new(move |out| {
            for (stage, proxy, pool) in &stages {
                proxy.expose(stage, out);
                pool.expose(stage, out);
            }
        })
    }

    /// Has `thread` (which ends when [`shutdown_flag`](Self::shutdown_flag) is
    /// triggered) stopped and joined with the pipeline.
    pub(crate) fn adopt(&mut self, thread: JoinHandle<()>) {
        self.proxies.push(thread);
    }

    /// Stops every proxy and worker and waits for their threads.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RunningPipeline {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for pool in self.pools.drain(..) {
            pool.join();
        }
        for proxy in self.proxies.drain(..) {
            let _ = proxy.join();
        }
    }
}

/// Gives `ctx` at least `wanted` I/O threads ([`ServerConfig::io_threads`]), where
/// libzmq reads and writes the client connections, and the load at which a new
/// connection goes to the next one (`spill`, [`ServerConfig::io_thread_spill`]; 0: the
/// least loaded). libzmq takes the count only before the context's first socket, so
/// call it before any socket is made on `ctx`; after that, or if libzmq refuses, the
/// context keeps its own count (logged at `warn` when refused).
pub fn give_io_threads(ctx: &zmq::Context, wanted: usize, spill: usize) {
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    if ctx.get_io_threads().is_ok_and(|threads| threads < wanted) {
        if let Err(e) = ctx.set_io_threads(wanted) {
            log::warn!("could not give the front end {wanted} I/O threads: {e}");
        }
    }
    let spill = i32::try_from(spill).unwrap_or(i32::MAX);
    if let Err(e) = ctx.set_io_thread_spill(spill) {
        log::warn!("could not set the I/O threads' spill load to {spill}: {e}");
    }
}
