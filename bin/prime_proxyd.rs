//! `prime_proxyd`: one stage's load-balancing proxy, as its own process.
//!
//! `prime_proxyd --upstream tcp://127.0.0.1:5000 --downstream tcp://127.0.0.1:5003
//! [--loopback tcp://127.0.0.1:5001]`, or `prime_proxyd --config TOPOLOGY --stage NAME`.
//!
//! Or the channels' bus between front ends (the zguide's XSUB/XPUB forwarder, see
//! `prime_server::pipeline::bus`): `prime_proxyd --bus XSUB_ENDPOINT XPUB_ENDPOINT`,
//! or `prime_proxyd --config TOPOLOGY --bus-only` with the topology's `front_end.bus`.

use clap::Parser;
use prime_server::base::endpoint::Use;
use prime_server::base::metrics::MetricsSource;
use prime_server::deploy::cli::{
    self, seconds, CommonArgs, DaemonArgs, MetricsArgs, Role, Roles, Slot,
};
use prime_server::deploy::topology::Topology;
use prime_server::pipeline::bus::Forwarder;
use prime_server::pipeline::metrics::ProxyMetrics;
use prime_server::pipeline::proxy::{Proxy, ProxyConfig};
use prime_server::Shutdown;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(about = "One stage's load-balancing proxy")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Where jobs for this stage arrive (bound): the front end's --proxy, or the previous
    /// stage's workers' --downstream.
    #[arg(long, value_name = "ENDPOINT")]
    upstream: Option<String>,
    /// Where this stage's workers connect (bound): their --upstream.
    #[arg(long, value_name = "ENDPOINT")]
    downstream: Option<String>,
    /// The front end's loopback (connected), for answering jobs the proxy cannot place
    /// (queue full: 503; worker died: 503). Without it, the front end answers them 504
    /// at their deadline. Repeat it for several front ends, in the order of their
    /// numbers (prime_httpd --front-end), as the workers list them.
    #[arg(long, value_name = "ENDPOINT")]
    loopback: Vec<String>,
    /// The stage of the topology file this proxy serves.
    #[arg(long, value_name = "NAME")]
    stage: Option<String>,
    /// Jobs that may wait for a worker before new ones are answered 503.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = cli::at_least_one::<usize>)]
    queue_bound: usize,
    /// Seconds a worker may stay silent before it is taken for dead.
    #[arg(long, value_name = "S", default_value_t = 1.5)]
    heartbeat_timeout: f64,
    /// Run the channels' bus forwarder instead of a stage's proxy: bind XSUB_ENDPOINT
    /// (front ends publish there) and XPUB_ENDPOINT (front ends subscribe there), the
    /// endpoints every front end's --bus names.
    #[arg(long, num_args = 2, value_names = ["XSUB_ENDPOINT", "XPUB_ENDPOINT"], conflicts_with_all = ["upstream", "downstream", "stage"])]
    bus: Option<Vec<String>>,
    /// Run the bus forwarder of the topology file's `front_end.bus`.
    #[arg(long, requires = "config", conflicts_with_all = ["bus", "stage"])]
    bus_only: bool,
    /// Seconds the stage may have no worker before its jobs are answered 503 at once
    /// instead of waiting in the queue (a restarting worker is back within it).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    no_worker_grace: f64,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    daemon: DaemonArgs,
}

const ROLES: Roles = Roles {
    listen: Role::Takes(
        "Where jobs for this stage arrive (bound): the same as --upstream, the proxy's \
         listening side",
    ),
    concurrency: Role::Refuses(
        "a proxy runs no workers: give --concurrency to prime_workerd, or a stage's \
         \"concurrency\" in the topology file",
    ),
    config: Role::Takes(
        "Read the endpoints of --stage from this topology file (flags still override)",
    ),
};

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit_code(run(&cli::parse(env!("CARGO_BIN_NAME"), &ROLES)))
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(bus) = &cli.bus {
        if let [xsub, xpub] = bus.as_slice() {
            return run_bus(xsub, xpub);
        }
    }
    if cli.bus_only {
        let Some(path) = &cli.common.config else {
            return Err("--bus-only needs --config".into());
        };
        let topology = Topology::load(path)?;
        let Some(bus) = &topology.front_end().bus else {
            return Err(format!("{} has no front_end.bus", path.display()).into());
        };
        return run_bus(&bus.xsub, &bus.xpub);
    }
    let mut config = config_from_topology(cli)?;
    // --listen is the proxy's --upstream: both may be given only if they agree.
    let mut upstream = [Slot::new(
        "--upstream",
        "--listen",
        cli.common.listen.clone(),
    )];
    cli::place(&mut upstream, cli.upstream.iter().cloned().collect())?;
    if let [Slot {
        value: Some(upstream),
        ..
    }] = upstream
    {
        config.upstream = upstream;
    }
    if let Some(downstream) = &cli.downstream {
        config.downstream = downstream.clone();
    }
    if !cli.loopback.is_empty() {
        config.loopbacks = cli.loopback.clone();
    }
    if config.upstream.is_empty() || config.downstream.is_empty() {
        return Err("give --upstream and --downstream, or --config and --stage".into());
    }
    let mut endpoints = vec![
        ("--upstream", config.upstream.as_str(), Use::Bind),
        ("--downstream", config.downstream.as_str(), Use::Bind),
    ];
    for loopback in &config.loopbacks {
        endpoints.push(("--loopback", loopback, Use::Connect));
    }
    cli::check_endpoints(&endpoints)?;
    config.queue_bound = cli.queue_bound;
    config.heartbeat_timeout = seconds("--heartbeat-timeout", cli.heartbeat_timeout)?;
    config.summary_every = cli.daemon.summary()?;
    config.no_worker_grace = seconds("--no-worker-grace", cli.no_worker_grace)?;
    let drain = cli.daemon.drain()?;
    let metrics = Arc::new(ProxyMetrics::default());
    config.metrics = Some(metrics.clone());
    let stage = cli.stage.clone().unwrap_or_else(|| config.upstream.clone());

    prime_server::base::fd_limit::raise_and_log();
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let ctx = zmq::Context::new();
    let warn_no_loopback = config.loopbacks.is_empty();
    let proxy = Proxy::bind(&ctx, config)?;
    cli.metrics
        .serve(MetricsSource::new(move |out| metrics.expose(&stage, out)))?;
    if warn_no_loopback {
        log::warn!("no --loopback: jobs this proxy cannot place will be answered 504 by the front end at their deadline");
    }
    let stop = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("proxy".into())
        .spawn(move || proxy.run(&stop))?;
    shutdown.supervise(drain, || thread.is_finished());
    let stats = thread.join().map_err(|_| "the proxy thread panicked")??;
    log::info!("proxy stopped: {stats}");
    Ok(())
}

fn config_from_topology(cli: &Cli) -> Result<ProxyConfig, Box<dyn std::error::Error>> {
    let (path, name) = match (&cli.common.config, &cli.stage) {
        (Some(path), Some(name)) => (path, name),
        (Some(_), None) => return Err("--config needs --stage: which stage of the file".into()),
        (None, _) => return Ok(ProxyConfig::new("", "", None)),
    };
    let topology = Topology::load(path)?;
    let stage = topology.stage(name)?;
    let mut config = ProxyConfig::new(stage.upstream.clone(), stage.downstream.clone(), None);
    config.loopbacks = topology
        .front_end_links()
        .into_iter()
        .map(|link| link.loopback)
        .collect();
    Ok(config)
}

/// Runs the channels' bus forwarder until SIGTERM or SIGINT.
fn run_bus(xsub: &str, xpub: &str) -> Result<(), Box<dyn std::error::Error>> {
    cli::check_endpoints(&[
        ("--bus XSUB_ENDPOINT", xsub, Use::Bind),
        ("--bus XPUB_ENDPOINT", xpub, Use::Bind),
    ])?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let ctx = zmq::Context::new();
    let forwarder = Forwarder::bind(&ctx, xsub, xpub)?;
    let stop = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("bus".into())
        .spawn(move || forwarder.run(&stop))?;
    // The forwarder holds nothing to finish: a drain stops it at once.
    shutdown.supervise(std::time::Duration::ZERO, || thread.is_finished());
    let stats = thread.join().map_err(|_| "the bus thread panicked")??;
    log::info!("bus forwarder stopped: {stats}");
    Ok(())
}
