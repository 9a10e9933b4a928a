//! Command-line options shared by the binaries, declared once: the front end's and the
//! daemons' options, the wording every help shares, endpoint and number checks, logging
//! and exit codes; and, from [`super::command_line`], how every binary is called
//! (`--listen`, `--concurrency`, `--config`, `--version`, `--generate`).

pub use super::cli_gateway::GatewayArgs;
pub use super::cli_jobs::{JobsArgs, WebhookArgs};
pub use super::command_line::{
    at_least_one, command, count, key_file, parse, place, required, seconds, CommonArgs, Role,
    Roles, Slot, AFTER_HELP, FRONT_END_CONFIG_HELP, LOGGING_HELP, README_POINTER, VERSION,
};
use super::topology::{FrontEndSpec, Topology, TopologyError};
use crate::base::endpoint::{self, Use};
use crate::server::{AccessLogFormat, CorsConfig, ServerConfig};
use std::process::ExitCode;
use std::time::Duration;

/// The help of the endpoint where clients connect, the same in every binary.
pub const LISTEN_HELP: &str =
    "Where clients connect (bound): a ZeroMQ endpoint such as tcp://127.0.0.1:8002";

/// A one-process binary's `--config`: the topology file, if given, whose front-end
/// entry has filled the options of `front_end` not given on the command line. The
/// caller takes its listen endpoint (`front_end.listen`) and its stages' concurrency
/// ([`stage_concurrency`]) from it.
pub fn one_process_topology(
    config: Option<&std::path::Path>,
    front_end: &mut FrontEndArgs,
) -> Result<Option<Topology>, TopologyError> {
    let Some(path) = config else {
        return Ok(None);
    };
    let topology = Topology::load(path)?;
    front_end.take_unset(topology.front_end());
    Ok(Some(topology))
}

/// LISTEN, a middle positional (`middle`: TARGET, ROOT) and CONCURRENCY of a one-process
/// binary `LISTEN MIDDLE CONCURRENCY`, from its positionals, its flags and the topology
/// file of `--config` (LISTEN from its front end, CONCURRENCY from its stage `stage`),
/// in that order of precedence. Errors: a positional and its flag that disagree, one
/// missing, a CONCURRENCY that is not a positive count, a topology file that cannot be
/// read.
pub fn place_listen_middle_concurrency(
    common: &CommonArgs,
    front_end: &mut FrontEndArgs,
    middle: Slot,
    positionals: [Option<String>; 3],
    stage: &str,
) -> Result<(String, String, usize), Box<dyn std::error::Error>> {
    let topology = one_process_topology(common.config.as_deref(), front_end)?;
    let mut slots = [
        Slot::new("LISTEN", "--listen", common.listen.clone()),
        middle,
        Slot::new(
            "CONCURRENCY",
            "--concurrency",
            common.concurrency.map(|n| n.to_string()),
        ),
    ];
    place(&mut slots, positionals.into_iter().flatten().collect())?;
    let [listen, middle, concurrency] = &mut slots;
    if let Some(topology) = &topology {
        listen
            .value
            .get_or_insert_with(|| topology.front_end().listen.clone());
        if let Some(n) = stage_concurrency(Some(topology), stage) {
            concurrency.value.get_or_insert_with(|| n.to_string());
        }
    }
    Ok((required(listen)?, required(middle)?, count(concurrency)?))
}

/// The concurrency the topology file gives stage `name`, if it has such a stage.
pub fn stage_concurrency(topology: Option<&Topology>, name: &str) -> Option<usize> {
    topology?
        .stages
        .iter()
        .find(|stage| stage.name == name)
        .map(|stage| stage.concurrency)
}

/// Logs to stderr through `env_logger`: info and above unless `RUST_LOG` says
/// otherwise. Call it once, first thing in `main`, to log as the daemons do.
///
/// The HTTP client (`ureq`, used by webhooks and the gateway) logs at info and above
/// only, whatever `RUST_LOG` says: at debug it writes every request's whole URL, and
/// a callback URL's path or query is often the receiver's credential.
pub fn init_logging() {
    // `try_init`: a second call (or a logger set by the embedder) is not an error.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .filter_module("ureq", log::LevelFilter::Info)
        .filter_module("ureq_proto", log::LevelFilter::Info)
        .try_init();
}

/// Checks each `(name, endpoint, use)` before any socket is made, so that a daemon with
/// a bad endpoint says so before it binds or logs anything. The error names the option.
pub fn check_endpoints(endpoints: &[(&str, &str, Use)]) -> Result<(), String> {
    for (name, value, usage) in endpoints {
        endpoint::check(value, *usage)
            .map_err(|problem| format!("bad endpoint {value:?} ({name}): {problem}"))?;
    }
    Ok(())
}

/// A daemon's exit: 0, or `error: ...` on stderr and exit code 2.
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The options every daemon shares: how long it drains and how often it reports.
#[derive(clap::Args, Clone, Debug)]
pub struct DaemonArgs {
    /// On SIGTERM or SIGINT, take no new work and finish what is held for up to S
    /// seconds, then exit.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub drain_seconds: f64,
    /// Log a one-line summary every S seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub summary_seconds: f64,
}

impl DaemonArgs {
    /// The drain bound.
    pub fn drain(&self) -> Result<Duration, String> {
        Duration::try_from_secs_f64(self.drain_seconds).map_err(|_| {
            format!(
                "--drain-seconds must be a number of seconds, not {}",
                self.drain_seconds
            )
        })
    }

    /// How often to log a summary, if at all.
    pub fn summary(&self) -> Result<Option<Duration>, String> {
        summary_every(self.summary_seconds)
    }
}

/// The metrics option of the daemons that run one piece (`prime_proxyd`,
/// `prime_workerd`): each process is scraped on its own.
#[derive(clap::Args, Clone, Debug)]
pub struct MetricsArgs {
    /// Answer Prometheus scrapes at http://ADDR/metrics (e.g. 127.0.0.1:9101): an
    /// operator-only listener, apart from the pipeline's sockets.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl MetricsArgs {
    /// Starts the listener, if asked for, with the figures `source` adds.
    ///
    /// Errors: the address cannot be bound.
    pub fn serve(&self, source: crate::base::metrics::MetricsSource) -> Result<(), String> {
        let Some(address) = &self.metrics_listen else {
            return Ok(());
        };
        crate::deploy::metrics_listener::serve(address, source)
            .map(|_| ())
            .map_err(|e| format!("--metrics-listen {address}: {e}"))
    }
}

/// The front end's options, flattened into each binary's command line.
#[derive(clap::Args, Clone, Debug)]
pub struct FrontEndArgs {
    /// Answer 200 at this path from the front end itself, without touching a worker.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Answer a JSON document of the topology as the front end sees it at this path;
    /// a browser (Accept: text/html) gets the live status page there, fed by
    /// Server-Sent Events (Accept: text/event-stream).
    #[arg(long, value_name = "PATH")]
    pub status_path: Option<String>,
    /// Run the self-test at this path (as the status path does with ?selftest=1): a
    /// probe through every stage and a check of the job store; 200 when all pass,
    /// else 503, with a JSON document naming each part and its error.
    #[arg(long, value_name = "PATH")]
    pub selftest_path: Option<String>,
    /// Answer JSON-RPC 2.0 POSTs (a request object or a batch) at this path, e.g. /rpc:
    /// each call's method names its stage as X-Task-Name does, and a batch's calls run
    /// at once.
    #[arg(long, value_name = "PATH")]
    pub jsonrpc_path: Option<String>,
    /// Answer readiness at this path (liveness stays --health-path): 200 only when
    /// every stage has a live worker and the job store (if any) can write, else 503
    /// with a JSON document naming what is missing. It runs the self-test, so it
    /// answers within --selftest-timeout.
    #[arg(long, value_name = "PATH")]
    pub ready_path: Option<String>,
    /// Answer Prometheus metrics (the text exposition format) at this path, e.g.
    /// /metrics.
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<String>,
    /// How access lines are written: text, or json (one JSON object per line: time,
    /// client, method, target with secret query values redacted, status, bytes,
    /// duration, request id, upstream stage).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub access_log_format: String,
    /// Seconds the self-test waits for every stage and the job store to answer.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub selftest_timeout: f64,
    /// Also serve netstrings (LEN:BYTES,) on this ZeroMQ endpoint, e.g. tcp://127.0.0.1:8004.
    #[arg(long, value_name = "ENDPOINT")]
    pub netstring: Option<String>,
    /// Seconds a request may spend in the pipeline before it is answered 504 [default:
    /// 30; for prime_gatewayd, at least the gateway timeout plus 5 s; for prime_filed,
    /// 3600, as it bounds a whole download].
    #[arg(long, value_name = "S")]
    pub request_timeout: Option<f64>,
    /// Seconds a client may take to send a request head before it is answered 408.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Seconds a client may take none of what is sent to it (it stopped reading, or
    /// its host is gone) before the connection is aborted.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub write_timeout: f64,
    /// Seconds the requests of a half-closed HTTP/1.0 or netstring connection may run
    /// after its client's FIN before the client is taken as gone (their work is
    /// interrupted). Half-closed HTTP/1.1 clients are probed with `102 Processing`
    /// instead, and served as long as they are there.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub half_closed_timeout: f64,
    /// The largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, value_name = "N", default_value_t = 10 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// libzmq's I/O threads, where the client connections are read and written (each
    /// connection on one): two (the default) let one publish to thousands of held
    /// connections use two cores (past --io-thread-spill connections; below it the
    /// second stays idle), at some cost to a stream of publishes to them; at least one
    /// per front end (--front-ends).
    #[arg(long, value_name = "N", default_value_t = crate::server::DEFAULT_IO_THREADS,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=256), usize::from))]
    pub io_threads: usize,
    /// Connections an I/O thread holds before new ones go to the next (0: always the
    /// least loaded, libzmq's own choice). Below it a stream of publishes is written in
    /// fewer, larger writes from one thread; above it one publish is written from
    /// several. With --front-ends N the connections are spread from the first.
    #[arg(long, value_name = "N", default_value_t = crate::server::DEFAULT_IO_THREAD_SPILL,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(0..=1_000_000), |n: u32| n as usize))]
    pub io_thread_spill: usize,
    /// Keep the process's threads preempting on every wake-up. By default, while 24 or
    /// more requests are in flight, they switch to SCHED_BATCH (a woken thread waits for
    /// a busy core to free instead of preempting it, so the pipeline's threads find
    /// messages in batches), and back once fewer than 8 have been in flight for 50 ms;
    /// while busy each policy is tried for 0.1 s every 1.2 s and the faster one kept
    /// (other processes' work on the same cores can make batched wake-ups slower).
    #[arg(long)]
    pub no_batch_wakeups: bool,
    /// During the drain, answer new requests on open connections 503 with
    /// `Connection: close` (so a load balancer moves traffic away) instead of serving them.
    #[arg(long)]
    pub drain_rejects: bool,
    /// The drain and summary options every daemon shares.
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The asynchronous jobs' options.
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// The CORS options.
    #[command(flatten)]
    pub cors: CorsArgs,
    /// The channels' options.
    #[command(flatten)]
    pub channels: ChannelArgs,
    /// The WebSocket options.
    #[command(flatten)]
    pub websocket: super::command_line::WebSocketArgs,
}

/// The options of channels (publish–subscribe, GRIP holds): the control listener, the
/// publish key, the history, the bus.
#[derive(clap::Args, Clone, Debug)]
pub struct ChannelArgs {
    /// Listen for operators and backends on this endpoint, tcp://HOST:PORT (e.g.
    /// tcp://127.0.0.1:5561): `POST /publish/` in GRIP's publish format, and (with a
    /// --webhook-secret) `PUT /subscriptions/NAME`, URLs subscribed to a channel. Never
    /// the public listener; loopback addresses only unless --control-allow-remote.
    #[arg(long, value_name = "ENDPOINT")]
    pub control_listen: Option<String>,
    /// Let --control-listen bind an address that is not loopback (then set a
    /// --publish-key-file, and keep the port behind a firewall).
    #[arg(long)]
    pub control_allow_remote: bool,
    /// Publishes need `Authorization: Bearer <JWT>` signed (HS256) with the key in this
    /// file (a trailing newline is ignored); without one, a 401.
    #[arg(long, value_name = "FILE")]
    pub publish_key_file: Option<std::path::PathBuf>,
    /// Turn on the job admin API on --control-listen (`GET /jobs`, `GET /jobs/changes`,
    /// `POST /jobs/{id}/retry`, `POST /jobs/cancel`): its calls need
    /// `Authorization: Bearer TOKEN`, TOKEN being this file's content (a trailing
    /// newline is ignored). Without it, those paths answer 404.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// What each channel keeps for subscribers that come back with a prev-id or
    /// Last-Event-ID: COUNT,SECONDS, at most COUNT messages none older than SECONDS
    /// (a channel is also kept SECONDS after its last hold leaves).
    #[arg(long, value_name = "COUNT,SECONDS", default_value = "100,120")]
    pub channel_history: String,
    /// The bus between front ends: the forwarder's XSUB endpoint (publishes go there)
    /// and XPUB endpoint (this front end's channels come from there), as
    /// `prime_proxyd --bus XSUB_ENDPOINT XPUB_ENDPOINT` binds them. Without it, publishes
    /// reach this front end's holds only.
    #[arg(long, num_args = 2, value_names = ["XSUB_ENDPOINT", "XPUB_ENDPOINT"])]
    pub bus: Option<Vec<String>>,
}

impl ChannelArgs {
    /// The channels' configuration these options describe.
    pub fn config(&self) -> Result<crate::server::ChannelsConfig, String> {
        let mut config = crate::server::ChannelsConfig::default();
        let (count, secs) = self
            .channel_history
            .split_once(',')
            .ok_or_else(|| "--channel-history is COUNT,SECONDS, e.g. 100,120".to_string())?;
        config.history_len = count
            .trim()
            .parse()
            .map_err(|_| format!("--channel-history: {count:?} is not a count"))?;
        let secs: f64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("--channel-history: {secs:?} is not a number of seconds"))?;
        config.history_age = seconds("--channel-history", secs)?;
        if let Some(bus) = &self.bus {
            if let [xsub, xpub] = bus.as_slice() {
                check_endpoints(&[
                    ("--bus XSUB_ENDPOINT", xsub, Use::Connect),
                    ("--bus XPUB_ENDPOINT", xpub, Use::Connect),
                ])?;
                config.bus = Some((xsub.clone(), xpub.clone()));
            }
        }
        let publish_key = match &self.publish_key_file {
            Some(path) => {
                let mut key = std::fs::read(path)
                    .map_err(|e| format!("--publish-key-file {}: {e}", path.display()))?;
                while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    key.pop();
                }
                if key.is_empty() {
                    return Err("the publish key is empty".into());
                }
                Some(key)
            }
            None => None,
        };
        let admin_token = match &self.admin_token_file {
            Some(path) => {
                let mut token = std::fs::read(path)
                    .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
                while token.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    token.pop();
                }
                if token.is_empty() {
                    return Err("the admin token is empty".into());
                }
                Some(token)
            }
            None => None,
        };
        match &self.control_listen {
            Some(listen) => {
                let address = crate::server::control_address(listen).map_err(|e| e.to_string())?;
                if !address.ip().is_loopback() && !self.control_allow_remote {
                    return Err(crate::server::ControlError::NotLoopback(address).to_string());
                }
                config.control = Some(crate::server::ControlConfig {
                    listen: listen.clone(),
                    allow_remote: self.control_allow_remote,
                    publish_key,
                    admin_token,
                });
            }
            None if admin_token.is_some() => {
                return Err("--admin-token-file needs --control-listen".into())
            }
            None if publish_key.is_some() => {
                return Err("--publish-key-file needs --control-listen".into())
            }
            None => {}
        }
        Ok(config)
    }
}

/// The options of cross-origin resource sharing: which web pages may call the server.
#[derive(clap::Args, Clone, Debug)]
pub struct CorsArgs {
    /// Let pages from this origin (e.g. `https://app.example.com`) call the server;
    /// repeatable, or `*` for any. Without it, the front end does no CORS.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// The methods a preflight allows, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "GET, HEAD, POST, DELETE, OPTIONS"
    )]
    pub cors_methods: String,
    /// The request header fields a preflight allows, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "Content-Type, Prefer, Idempotency-Key, Callback-URL"
    )]
    pub cors_headers: String,
    /// Seconds a browser may cache a preflight's answer.
    #[arg(long, value_name = "S", default_value_t = 600)]
    pub cors_max_age: u64,
    /// Allow credentials (cookies, Authorization): the origin is then echoed, never `*`.
    /// Refused with `--cors-origin '*'` (the Fetch standard forbids it).
    #[arg(long)]
    pub cors_credentials: bool,
}

impl CorsArgs {
    /// The CORS policy these options describe, if an origin was given.
    pub fn config(&self) -> Result<Option<CorsConfig>, String> {
        if self.cors_origin.is_empty() {
            return Ok(None);
        }
        let list = |flag: &str, text: &str| -> Result<Vec<String>, String> {
            let items: Vec<String> = text
                .split(',')
                .map(|item| item.trim().to_string())
                .filter(|item| !item.is_empty())
                .collect();
            if items
                .iter()
                .any(|item| !item.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(format!(
                    "{flag} takes tokens separated by commas, not {text:?}"
                ));
            }
            Ok(items)
        };
        for origin in &self.cors_origin {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "--cors-origin takes an origin such as https://app.example.com, or *, not {origin:?}"
                ));
            }
        }
        let mut config = CorsConfig::new(self.cors_origin.iter().cloned());
        config.methods = list("--cors-methods", &self.cors_methods)?;
        config.headers = list("--cors-headers", &self.cors_headers)?;
        config.max_age = Some(Duration::from_secs(self.cors_max_age));
        config.credentials = self.cors_credentials;
        config.check()?;
        Ok(Some(config))
    }
}
impl FrontEndArgs {
    /// Takes the options not given on the command line from a topology file's
    /// front-end entry: `--netstring`, `--health-path`, `--status-path`, `--jobs-db`.
    /// (Its `listen` is the caller's: each binary has its own way to give it.)
    pub fn take_unset(&mut self, spec: &FrontEndSpec) {
        if self.netstring.is_none() {
            self.netstring = spec.netstring.clone();
        }
        if self.health_path.is_none() {
            self.health_path = spec.health_path.clone();
        }
        if self.status_path.is_none() {
            self.status_path = spec.status_path.clone();
        }
        if self.jobs.jobs_db.is_none() {
            self.jobs.jobs_db = spec.jobs_db.clone();
        }
        if self.channels.bus.is_none() {
            self.channels.bus = spec
                .bus
                .as_ref()
                .map(|b| vec![b.xsub.clone(), b.xpub.clone()]);
        }
    }

    /// The server configuration these options describe, listening for HTTP on `listen`.
    pub fn config(&self, listen: &str) -> Result<ServerConfig, String> {
        let mut endpoints = vec![("LISTEN", listen, Use::Bind)];
        if let Some(netstring) = &self.netstring {
            endpoints.push(("--netstring", netstring, Use::Bind));
        }
        check_endpoints(&endpoints)?;
        for (flag, path) in [
            ("--health-path", &self.health_path),
            ("--status-path", &self.status_path),
            ("--selftest-path", &self.selftest_path),
            ("--jsonrpc-path", &self.jsonrpc_path),
            ("--ready-path", &self.ready_path),
            ("--metrics-path", &self.metrics_path),
        ] {
            if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                return Err(format!("{flag} must start with /"));
            }
        }
        let mut config = ServerConfig::http(listen);
        if let Some(endpoint) = &self.netstring {
            config = config.with_netstring(endpoint);
        }
        config.health_path = self.health_path.clone();
        config.status_path = self.status_path.clone();
        config.selftest_path = self.selftest_path.clone();
        config.jsonrpc_path = self.jsonrpc_path.clone();
        config.ready_path = self.ready_path.clone();
        config.metrics_path = self.metrics_path.clone();
        config.access_log_format = match self.access_log_format.as_str() {
            "json" => AccessLogFormat::Json,
            _ => AccessLogFormat::Text,
        };
        config.selftest_timeout = seconds("--selftest-timeout", self.selftest_timeout)?;
        config.drain_timeout = self.daemon.drain()?;
        config.drain_rejects = self.drain_rejects;
        config.summary_every = self.daemon.summary()?;
        if let Some(timeout) = self.request_timeout {
            config.request_timeout = seconds("--request-timeout", timeout)?;
        }
        config.header_timeout = seconds("--header-timeout", self.header_timeout)?;
        config.idle_timeout = seconds("--idle-timeout", self.idle_timeout)?;
        config.write_timeout = seconds("--write-timeout", self.write_timeout)?;
        config.half_closed_timeout = seconds("--half-closed-timeout", self.half_closed_timeout)?;
        config.io_threads = self.io_threads;
        config.io_thread_spill = self.io_thread_spill;
        config.batch_wakeups = !self.no_batch_wakeups;
        config.limits.max_body = self.max_request_bytes;
        config.max_netstring_bytes = self.max_request_bytes;
        config.jobs = self.jobs.config()?;
        config.cors = self.cors.config()?;
        config.channels = self.channels.config()?;
        config.websocket = self.websocket.config()?;
        if config.channels.control.is_some() {
            config.channels.subscriptions = self.jobs.webhooks.config()?;
        }
        Ok(config)
    }
}

/// Runs `pipeline` behind a front end listening on `listen` as `front_end` says, until
/// SIGTERM or SIGINT (then it drains): the body of a one-process daemon.
pub fn serve_pipeline(
    pipeline: crate::Pipeline,
    listen: &str,
    front_end: &FrontEndArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    serve_config(pipeline, front_end.config(listen)?)
}

/// Runs `pipeline` behind a front end configured by `config`, until SIGTERM or SIGINT
/// (then it drains).
pub fn serve_config(
    pipeline: crate::Pipeline,
    config: crate::server::ServerConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = crate::Shutdown::new();
    shutdown.on_signals()?;
    pipeline.serve(&zmq::Context::new(), config, &shutdown)?;
    Ok(())
}

/// Reads `--summary-seconds`: 0 turns summaries off.
pub fn summary_every(value: f64) -> Result<Option<Duration>, String> {
    if value == 0.0 {
        return Ok(None);
    }
    seconds("--summary-seconds", value).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        front: FrontEndArgs,
    }

    fn parse(args: &[&str]) -> Result<ServerConfig, String> {
        let line = Line::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        line.front.config("tcp://127.0.0.1:0")
    }

    #[test]
    fn webhook_and_cors_options_become_configuration() {
        let config = parse(&[
            "--jobs-db",
            "/tmp/x.sqlite",
            "--webhook-secret",
            "whsec_c2VjcmV0",
            "--webhook-give-up",
            "60",
            "--allow-callback-network",
            "127.0.0.0/8",
            "--cors-origin",
            "https://app.example",
            "--cors-credentials",
        ])
        .unwrap();
        let webhooks = config.jobs.unwrap().webhooks.unwrap();
        assert_eq!(webhooks.secret, b"secret");
        assert_eq!(webhooks.give_up, Duration::from_secs(60));
        assert!(webhooks.policy.allows("127.0.0.1".parse().unwrap()));
        let cors = config.cors.unwrap();
        assert!(cors.credentials);
        assert_eq!(
            cors.allow_origin("https://app.example").as_deref(),
            Some("https://app.example")
        );
        let plain = parse(&[]).unwrap();
        assert!(plain.cors.is_none() && plain.jobs.is_none());
    }

    #[test]
    fn io_threads_are_two_spilling_at_4096_unless_told_and_never_none() {
        let plain = parse(&[]).unwrap();
        assert_eq!((plain.io_threads, plain.io_thread_spill), (2, 4096));
        assert_eq!(parse(&["--io-threads", "1"]).unwrap().io_threads, 1);
        assert_eq!(parse(&["--io-threads", "4"]).unwrap().io_threads, 4);
        assert_eq!(
            parse(&["--io-thread-spill", "0"]).unwrap().io_thread_spill,
            0
        );
        for bad in ["0", "257", "two"] {
            let refused = parse(&["--io-threads", bad]).unwrap_err();
            assert!(refused.contains("--io-threads"), "{bad}: {refused}");
        }
        for bad in ["1000001", "many"] {
            let refused = parse(&["--io-thread-spill", bad]).unwrap_err();
            assert!(refused.contains("--io-thread-spill"), "{bad}: {refused}");
        }
    }

    #[test]
    fn batch_wakeups_are_on_in_the_binaries_unless_told_and_off_for_an_embedder() {
        assert!(parse(&[]).unwrap().batch_wakeups);
        assert!(!parse(&["--no-batch-wakeups"]).unwrap().batch_wakeups);
        assert!(!crate::server::ServerConfig::http("tcp://127.0.0.1:0").batch_wakeups);
    }

    #[test]
    fn channel_options_become_configuration() {
        let config = parse(&[
            "--control-listen",
            "tcp://127.0.0.1:0",
            "--channel-history",
            "5,30",
            "--bus",
            "tcp://127.0.0.1:6001",
            "tcp://127.0.0.1:6002",
        ])
        .unwrap()
        .channels;
        assert_eq!(config.history_len, 5);
        assert_eq!(config.history_age, Duration::from_secs(30));
        assert_eq!(config.bus.unwrap().1, "tcp://127.0.0.1:6002");
        assert_eq!(config.control.unwrap().listen, "tcp://127.0.0.1:0");
        assert!(parse(&["--control-listen", "tcp://192.0.2.1:5561"]).is_err());
        assert!(parse(&[
            "--control-listen",
            "tcp://192.0.2.1:5561",
            "--control-allow-remote"
        ])
        .is_ok());
        assert!(parse(&["--control-listen", "127.0.0.1:5561"]).is_err());
        assert!(parse(&["--channel-history", "5"]).is_err());
        assert!(parse(&["--publish-key-file", "/nonexistent"]).is_err());
        assert!(parse(&["--admin-token-file", "/nonexistent"]).is_err());
        let token = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
        std::fs::write(&token, "t0ken\n").expect("a token file");
        let file = token.to_string_lossy().into_owned();
        // Without --control-listen it has nowhere to be used.
        assert!(parse(&["--admin-token-file", &file]).is_err());
        let parsed = parse(&[
            "--control-listen",
            "tcp://127.0.0.1:5561",
            "--admin-token-file",
            &file,
        ])
        .expect("a token file and a control listener");
        let control = parsed.channels.control.expect("the control listener");
        assert_eq!(control.admin_token.as_deref(), Some(&b"t0ken"[..]));
        let _ = std::fs::remove_file(&token);
    }

    #[test]
    fn bad_webhook_and_cors_options_are_refused() {
        let jobs = ["--jobs-db", "/tmp/x.sqlite", "--webhook-secret", "k"];
        let with = |extra: &[&str]| parse(&[&jobs[..], extra].concat());
        assert!(with(&["--allow-callback-network", "10.0.0.0/40"]).is_err());
        assert!(with(&["--webhook-retry-first", "0"]).is_err());
        assert!(parse(&["--cors-origin", "app.example"]).is_err());
        assert!(parse(&["--jobs-db", "/tmp/x.sqlite", "--webhook-secret", "whsec_!!"]).is_err());
    }

    #[test]
    fn the_grip_key_file_must_hold_a_key() {
        #[derive(clap::Parser)]
        struct Gateway {
            #[command(flatten)]
            gateway: GatewayArgs,
        }
        let gateway = |file: &std::path::Path| {
            let arg = file.display().to_string();
            Gateway::try_parse_from(["test", "--grip-key-file", &arg])
                .map_err(|e| e.to_string())?
                .gateway
                .gateway("http://127.0.0.1:9000")
        };
        let dir = std::env::temp_dir().join(format!("grip-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let (key, empty) = (dir.join("key"), dir.join("empty"));
        std::fs::write(&key, "k\n").expect("write the key");
        std::fs::write(&empty, "\n").expect("write an empty key");
        assert!(gateway(&key).is_ok());
        assert!(gateway(&empty).unwrap_err().contains("the key is empty"));
        assert!(gateway(&dir.join("absent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
