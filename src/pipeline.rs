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

use crate::envelope::{Envelope, Protocol};
use crate::error::{Error, Result};
use crate::loopback::{self, Answer, Failure, FailureKind};
use crate::proxy::{Chooser, Dispatch, Proxy, ProxyConfig};
use crate::server::{Server, ServerConfig, ServerStats};
use crate::shutdown::Shutdown;
use crate::sockets;
use crate::stage::{HttpStage, HttpWork};
use crate::tasks::{TaskRefusal, TaskRouter};
use crate::worker::{Work, WorkerConfig, WorkerPool};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

type StartPool =
    Box<dyn FnOnce(&zmq::Context, &str, &WorkerConfig, &Shutdown) -> Result<WorkerPool> + Send>;

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
        let start: StartPool = Box::new(move |ctx, name, config, shutdown| {
            WorkerPool::spawn(ctx, name, config, workers, work, shutdown)
        });
        self.stages.push(StageSpec {
            name: name.to_string(),
            start,
            choose: None,
        });
        self
    }

    /// Appends a stage written against HTTP (see [`crate::stage`]).
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
    /// use prime_server::stage::HttpGateway;
    /// use prime_server::tasks::TaskRouter;
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
        // Bound first: a taken port is reported before any stage starts (or logs).
        let listeners = Server::bind_listeners(ctx, &config)?;
        let (pipeline, front) = self.start(ctx)?;
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
        let front = FrontSockets::bind_internal(ctx, &names)?;
        let shutdown = Shutdown::new();
        let mut running = RunningPipeline {
            shutdown: shutdown.clone(),
            proxies: Vec::new(),
            pools: Vec::new(),
        };
        let mut links = Vec::with_capacity(self.stages.len());
        for (index, stage) in self.stages.iter().enumerate() {
            let mut config = ProxyConfig::new(
                names.make(&format!("{index}-up")),
                names.make(&format!("{index}-down")),
                Some(front.loopback_endpoint.clone()),
            );
            config.queue_bound = self.queue_bound;
            config.heartbeat_timeout = self.heartbeat_timeout;
            config.choose = stage.choose.clone();
            config.dispatch = self.dispatch;
            let proxy = Proxy::bind(ctx, config)?;
            links.push(proxy.endpoints());
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
        let mut front = front;
        front.connect_entry(&links[0].0)?;
        front.stages = self.stages.iter().map(|s| s.name.clone()).collect();
        let routes: Vec<(String, String)> = self
            .stages
            .iter()
            .zip(&links)
            .map(|(stage, (upstream, _))| (stage.name.clone(), upstream.clone()))
            .collect();
        if let Some(router) = self.tasks {
            front.route_tasks(ctx, router, &routes)?;
        }
        for (index, stage) in self.stages.into_iter().enumerate() {
            let mut config = WorkerConfig::new(
                links[index].1.clone(),
                links.get(index + 1).map(|(up, _)| up.clone()),
                front.loopback_endpoint.clone(),
                front.interrupt_endpoint.clone(),
            );
            config.heartbeat_interval = self.heartbeat_interval;
            config.prefetch = self.prefetch;
            config.routes = routes.clone();
            running
                .pools
                .push((stage.start)(ctx, &stage.name, &config, &shutdown)?);
        }
        Ok((running, front))
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
}

impl RunningPipeline {
    /// The flag that stops this pipeline; long work sees it through `Job::interrupted`.
    pub fn shutdown_flag(&self) -> &Shutdown {
        &self.shutdown
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

/// The sockets of a pipeline's front end: where it sends requests (the main entry, and
/// one entry per routed stage when it routes by task), where answers come back, and
/// where it publishes interrupts.
pub struct FrontSockets {
    /// Requests go here (DEALER, connected to the first proxy).
    pub entry: zmq::Socket,
    /// Answers arrive here (PULL, bound).
    pub loopback: zmq::Socket,
    /// Interrupts go out here (PUB, bound).
    pub interrupt: zmq::Socket,
    /// Where the loopback is bound.
    pub loopback_endpoint: String,
    /// Where the interrupt publisher is bound.
    pub interrupt_endpoint: String,
    /// The first proxy's upstream endpoint the entry connects to.
    pub entry_endpoint: String,
    /// The stages' names, in pipeline order, when known (the pipeline builder and a
    /// topology file know them): the self-test names each one that does not answer its
    /// probe. Empty when unknown: the self-test then reports the stages that answered.
    pub stages: Vec<String>,
    /// The task table the front end applies itself (see
    /// [`route_tasks`](Self::route_tasks)); none by default, and then every request goes
    /// to the first stage.
    pub tasks: Option<TaskRouter>,
    /// One entry per stage the task table names, other than the first stage (which
    /// the main entry reaches).
    pub routed: Vec<RoutedEntry>,
}

/// An entry straight to a stage the task table names (DEALER, connected to that
/// stage's proxy), beside the main entry to the first stage.
pub struct RoutedEntry {
    /// The stage's name.
    pub stage: String,
    /// The socket requests for the stage go to.
    pub socket: zmq::Socket,
    /// The stage's proxy's upstream endpoint.
    pub endpoint: String,
}

/// Which entry a request goes to: the main one or a routed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryIndex {
    /// The main entry, to the first stage.
    Main,
    /// `routed[i]`.
    Routed(usize),
}

impl FrontSockets {
    /// Creates the front's sockets: binds `loopback` and `interrupt`, connects to `entry`
    /// (the first proxy's upstream). Used by a front end that runs apart from its stages.
    pub fn bind(ctx: &zmq::Context, entry: &str, loopback: &str, interrupt: &str) -> Result<Self> {
        let mut front = Self::create(ctx, loopback, interrupt)?;
        front.connect_entry(entry)?;
        Ok(front)
    }

    /// Lets the front end apply `router` itself: a request goes straight to the stage
    /// its `X-Task-Name` or path names, with no routing stage in between. `stages` gives
    /// each stage's proxy's upstream endpoint by name; the first stage (when
    /// [`stages`](Self::stages) names it) is reached through the main entry. Every
    /// stage the table names must have an endpoint.
    ///
    /// A request naming an unknown task is answered `400` by the front end; one with no
    /// name, no matching prefix and no default stage goes to the main entry.
    pub fn route_tasks(
        &mut self,
        ctx: &zmq::Context,
        router: TaskRouter,
        stages: &[(String, String)],
    ) -> Result<()> {
        let first = self.stages.first().cloned();
        let mut routed = Vec::new();
        for stage in router.stages() {
            if first.as_deref() == Some(stage) {
                continue;
            }
            let Some((_, endpoint)) = stages.iter().find(|(name, _)| name == stage) else {
                return Err(Error::Config(format!(
                    "the task table names stage {stage:?}, which has no proxy endpoint"
                )));
            };
            let socket = sockets::stage_sender(ctx)?;
            sockets::connect(&socket, endpoint)?;
            routed.push(RoutedEntry {
                stage: stage.to_string(),
                socket,
                endpoint: endpoint.clone(),
            });
        }
        self.routed = routed;
        self.tasks = Some(router);
        Ok(())
    }

    /// The entry for a request with head `head`, or why the task table refuses it.
    pub(crate) fn entry_for(&self, head: &[u8]) -> std::result::Result<EntryIndex, TaskRefusal> {
        let Some(router) = &self.tasks else {
            return Ok(EntryIndex::Main);
        };
        match router.stage_for_head(head) {
            Ok(stage) => Ok(self
                .routed
                .iter()
                .position(|r| r.stage == stage)
                .map_or(EntryIndex::Main, EntryIndex::Routed)),
            Err(TaskRefusal::NoRule { .. }) => Ok(EntryIndex::Main),
            Err(refusal) => Err(refusal),
        }
    }

    /// The socket of an entry.
    pub(crate) fn entry_socket(&self, index: EntryIndex) -> &zmq::Socket {
        match index {
            EntryIndex::Main => &self.entry,
            EntryIndex::Routed(i) => self.routed.get(i).map_or(&self.entry, |r| &r.socket),
        }
    }

    /// Every entry with its endpoint: the main one first, then the routed ones.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&zmq::Socket, &str)> {
        std::iter::once((&self.entry, self.entry_endpoint.as_str()))
            .chain(self.routed.iter().map(|r| (&r.socket, r.endpoint.as_str())))
    }

    fn connect_entry(&mut self, endpoint: &str) -> Result<()> {
        sockets::connect(&self.entry, endpoint)?;
        self.entry_endpoint = endpoint.to_string();
        Ok(())
    }

    fn bind_internal(ctx: &zmq::Context, names: &EndpointNames) -> Result<Self> {
        Self::create(ctx, &names.make("loopback"), &names.make("interrupt"))
    }

    fn create(ctx: &zmq::Context, loopback: &str, interrupt: &str) -> Result<Self> {
        let entry = sockets::stage_sender(ctx)?;
        let loopback_socket = sockets::socket(ctx, zmq::PULL)?;
        let interrupt_socket = sockets::socket(ctx, zmq::PUB)?;
        sockets::bind(&loopback_socket, loopback)?;
        sockets::bind(&interrupt_socket, interrupt)?;
        Ok(FrontSockets {
            loopback_endpoint: sockets::last_endpoint(&loopback_socket)?,
            interrupt_endpoint: sockets::last_endpoint(&interrupt_socket)?,
            entry_endpoint: String::new(),
            stages: Vec::new(),
            tasks: None,
            routed: Vec::new(),
            entry,
            loopback: loopback_socket,
            interrupt: interrupt_socket,
        })
    }

    /// Sends one raw request and waits (up to 10 s) for its answer: the simplest client,
    /// for examples and tests. A failure comes back as `Err` with its status and detail.
    pub fn ask(&self, request: &[u8]) -> std::result::Result<Vec<u8>, AskError> {
        static REQUESTS: AtomicU64 = AtomicU64::new(1);
        let id = REQUESTS.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope::new(id, 0, 0, Protocol::Raw).encode();
        let frames = [crate::envelope::lead_frame(&envelope, request)];
        sockets::send_frames(&self.entry, frames, 0).map_err(AskError::Zmq)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut streamed = Vec::new();
        while Instant::now() < deadline {
            if self
                .loopback
                .poll(zmq::POLLIN, 100)
                .map_err(AskError::Zmq)?
                == 0
            {
                continue;
            }
            let frames = sockets::recv_frames(&self.loopback, 0).map_err(AskError::Zmq)?;
            match loopback::decode(frames) {
                Ok((e, answer)) if e.request_id == id => {
                    return match answer {
                        Answer::Response(bytes) => Ok(bytes.to_vec()),
                        Answer::Failure(f) => Err(AskError::Failed(f)),
                        Answer::StreamStart(bytes) | Answer::StreamPiece(bytes) => {
                            streamed.extend_from_slice(&bytes);
                            continue;
                        }
                        Answer::Progress { .. } | Answer::SelfTest(_) => continue,
                        Answer::StreamEnd(bytes) => {
                            streamed.extend_from_slice(&bytes);
                            Ok(streamed)
                        }
                        Answer::StreamAbort => Err(AskError::Failed(Failure::new(
                            FailureKind::WorkerPanicked,
                            "the stage stopped its answer midway",
                        ))),
                        Answer::Later { .. } => Err(AskError::Failed(Failure::new(
                            FailureKind::WorkerPanicked,
                            "a stage asked to answer later, which needs the front end's job store",
                        ))),
                    }
                }
                _ => continue,
            }
        }
        Err(AskError::TimedOut)
    }
}

/// Why [`FrontSockets::ask`] got no response.
#[derive(Debug)]
pub enum AskError {
    /// A socket call failed.
    Zmq(zmq::Error),
    /// The pipeline answered with a failure.
    Failed(crate::loopback::Failure),
    /// No answer within 10 seconds.
    TimedOut,
}
