//! `prime_workerd`: a pool of workers for one stage, as its own process.
//!
//! `prime_workerd --upstream tcp://127.0.0.1:5003 [--downstream tcp://127.0.0.1:5004]
//! --loopback tcp://127.0.0.1:5001 --interrupt tcp://127.0.0.1:5002 --stage parse
//! --concurrency 4`, or `prime_workerd --config TOPOLOGY --stage NAME`. With `--gateway
//! http://HOST:PORT` the stage forwards each request to that HTTP backend instead. A
//! stage whose service is `tasks` routes each request to another stage by task name or
//! path prefix, with the topology file's `tasks` table.
//!
//! Behind several front ends, give `--loopback` and `--interrupt` once per front end, in
//! the order of their numbers (`prime_httpd --front-end N`), or a topology file with
//! `front_ends`: each answer goes to the front end holding its client.

use clap::Parser;
use prime_server::base::endpoint::Use;
use prime_server::base::metrics::MetricsSource;
use prime_server::demo;
use prime_server::demo::primes::Algorithm;
use prime_server::deploy::cli::{
    self, seconds, CommonArgs, DaemonArgs, GatewayArgs, MetricsArgs, Role, Roles,
};
use prime_server::deploy::topology::{Topology, TASKS_SERVICE};
use prime_server::pipeline::front_ends::{self, FrontEndLink};
use prime_server::pipeline::worker::{WorkerConfig, WorkerPool};
use prime_server::stages::tasks::TaskRouter;
use prime_server::stages::HttpStage;
use prime_server::Shutdown;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "A pool of workers for one stage of the pipeline")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// The stage's proxy, where workers take jobs (connected): the proxy's --downstream.
    #[arg(long, value_name = "ENDPOINT")]
    upstream: Option<String>,
    /// The next stage's proxy (connected): its --upstream. None for the last stage.
    #[arg(long, value_name = "ENDPOINT")]
    downstream: Option<String>,
    /// Another stage a job may be sent to by name (repeatable): NAME=ENDPOINT, that
    /// stage's proxy --upstream. With --config, every stage of the file is a route.
    #[arg(long, value_name = "NAME=ENDPOINT")]
    route: Vec<String>,
    /// The front end's loopback, where answers go (connected). Repeat it for several
    /// front ends, in the order of their numbers (prime_httpd --front-end).
    #[arg(long, value_name = "ENDPOINT")]
    loopback: Vec<String>,
    /// The front end's interrupt publisher (connected); once per --loopback, in the
    /// same order.
    #[arg(long, value_name = "ENDPOINT")]
    interrupt: Vec<String>,
    /// The stage: its name in the topology file, and the service it runs unless the
    /// file says otherwise (parse, compute, echo, or tasks: route by the file's tasks
    /// table).
    #[arg(long, value_name = "NAME")]
    stage: String,
    /// The compute stage's primality test: trial-division or miller-rabin.
    #[arg(long, default_value = "trial-division")]
    algorithm: Algorithm,
    /// Jobs each worker may hold at once: more than 1 saves wake-ups when jobs are
    /// cheap (jobs stuck behind a long one are handed back to the proxy after 2 ms);
    /// 1 never holds a job another worker could start.
    #[arg(long, value_name = "N", default_value_t = prime_server::pipeline::worker::DEFAULT_PREFETCH, value_parser = cli::at_least_one::<u32>)]
    prefetch: u32,
    /// Seconds between heartbeats to the proxy.
    #[arg(long, value_name = "S", default_value_t = 0.25)]
    heartbeat_interval: f64,
    /// Run a gateway stage that forwards each request to this HTTP backend
    /// (http://HOST:PORT[/BASE]) instead of a built-in service.
    #[arg(long, value_name = "TARGET")]
    gateway: Option<String>,
    #[command(flatten)]
    gateway_options: GatewayArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    daemon: DaemonArgs,
}

const ROLES: Roles = Roles {
    listen: Role::Refuses(
        "workers bind nothing: they connect to their stage's proxy (--upstream); \
         clients connect to the front end's --listen",
    ),
    concurrency: Role::Takes("Worker threads (default: the topology's concurrency, or 1)"),
    config: Role::Takes(
        "Read the endpoints of --stage from this topology file (flags still override)",
    ),
};

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit_code(run(&cli::parse(env!("CARGO_BIN_NAME"), &ROLES)))
}

/// The endpoints and service, from the topology file and then the flags.
struct Plan {
    config: WorkerConfig,
    service: String,
    concurrency: usize,
    /// The router of a `tasks` stage, from the topology file.
    router: Option<TaskRouter>,
}

fn plan(cli: &Cli) -> Result<Plan, Box<dyn std::error::Error>> {
    let mut plan = Plan {
        config: WorkerConfig::new("", None, "", ""),
        service: cli.stage.clone(),
        concurrency: 1,
        router: None,
    };
    if let Some(path) = &cli.common.config {
        let topology = Topology::load(path)?;
        let stage = topology.stage(&cli.stage)?;
        plan.config = WorkerConfig::new(
            stage.downstream.clone(),
            topology.next_upstream(&cli.stage)?.map(str::to_string),
            "",
            "",
        );
        plan.config.front_ends = topology.front_end_links();
        plan.service = stage.service().to_string();
        plan.concurrency = stage.concurrency;
        if plan.service == TASKS_SERVICE {
            // The file's check makes sure a tasks stage has its table.
            plan.router = topology.task_router();
        }
        plan.config.routes = topology
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.upstream.clone()))
            .collect();
    }
    for route in &cli.route {
        let (name, endpoint) = route
            .split_once('=')
            .ok_or_else(|| format!("--route takes NAME=ENDPOINT, not {route:?}"))?;
        plan.config.routes.retain(|(known, _)| known != name);
        plan.config
            .routes
            .push((name.to_string(), endpoint.to_string()));
    }
    let config = &mut plan.config;
    if let Some(upstream) = &cli.upstream {
        config.upstream = upstream.clone();
    }
    if !cli.loopback.is_empty() || !cli.interrupt.is_empty() {
        config.front_ends = front_ends::links(&cli.loopback, &cli.interrupt)?;
    }
    if config.upstream.is_empty() {
        return Err("give --upstream, or --config with this --stage".into());
    }
    let missing = |f: &FrontEndLink| f.loopback.is_empty() || f.interrupt.is_empty();
    if config.front_ends.is_empty() || config.front_ends.iter().any(missing) {
        return Err("give --loopback and --interrupt, or --config with this --stage".into());
    }
    if cli.downstream.is_some() {
        config.downstream = cli.downstream.clone();
    }
    let mut endpoints = vec![("--upstream", config.upstream.as_str(), Use::Connect)];
    for front_end in &config.front_ends {
        endpoints.push(("--loopback", &front_end.loopback, Use::Connect));
        endpoints.push(("--interrupt", &front_end.interrupt, Use::Connect));
    }
    if let Some(downstream) = &config.downstream {
        endpoints.push(("--downstream", downstream, Use::Connect));
    }
    endpoints.extend(
        config
            .routes
            .iter()
            .map(|(_, endpoint)| ("--route", endpoint.as_str(), Use::Connect)),
    );
    cli::check_endpoints(&endpoints)?;
    config.heartbeat_interval = seconds("--heartbeat-interval", cli.heartbeat_interval)?;
    config.prefetch = cli.prefetch;
    plan.concurrency = cli.common.concurrency.unwrap_or(plan.concurrency);
    Ok(plan)
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let plan = plan(cli)?;
    let drain = cli.daemon.drain()?;
    let summary = cli.daemon.summary()?;
    prime_server::base::fd_limit::raise_and_log();
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let ctx = zmq::Context::new();
    let pool = match (&cli.gateway, &plan.router) {
        (None, Some(router)) => WorkerPool::spawn(
            &ctx,
            &cli.stage,
            &plan.config,
            plan.concurrency,
            HttpStage(router.clone()),
            &shutdown,
        )?,
        (None, None) if plan.service == TASKS_SERVICE => {
            return Err(
                "the tasks service routes by a topology file's tasks table: give --config".into(),
            )
        }
        (Some(target), _) => WorkerPool::spawn(
            &ctx,
            &cli.stage,
            &plan.config,
            plan.concurrency,
            HttpStage(cli.gateway_options.gateway(target)?),
            &shutdown,
        )?,
        (None, None) => demo::spawn_service(
            &ctx,
            &cli.stage,
            &plan.service,
            cli.algorithm,
            &plan.config,
            plan.concurrency,
            &shutdown,
        )?,
    };
    let pool_metrics = pool.metrics();
    let stage = cli.stage.clone();
    cli.metrics.serve(MetricsSource::new(move |out| {
        pool_metrics.expose(&stage, out)
    }))?;
    log::info!(
        "{} workers of {:?} take jobs from {}, forward to {}, answer to {}, hear interrupts from {}",
        plan.concurrency,
        plan.service,
        plan.config.upstream,
        plan.config.downstream.as_deref().unwrap_or("nowhere (last stage)"),
        list(plan.config.front_ends.iter().map(|f| f.loopback.as_str())),
        list(plan.config.front_ends.iter().map(|f| f.interrupt.as_str())),
    );
    let mut next_summary = summary.map(|every| Instant::now() + every);
    shutdown.supervise(drain, || {
        if let (Some(at), Some(every)) = (next_summary, summary) {
            if Instant::now() >= at {
                log_summary(&pool, &plan.service);
                next_summary = Some(at + every);
            }
        }
        pool.is_finished()
    });
    log_summary(&pool, &plan.service);
    pool.join();
    Ok(())
}

/// Endpoints as a log line lists them.
fn list<'a>(endpoints: impl Iterator<Item = &'a str>) -> String {
    endpoints.collect::<Vec<_>>().join(" and ")
}

fn log_summary(pool: &WorkerPool, service: &str) {
    let counts = pool.counts();
    log::info!(
        "workers of {service:?}: {} jobs done, {} failed (panics), {} skipped (interrupted)",
        counts.completed,
        counts.panicked,
        counts.skipped
    );
}
