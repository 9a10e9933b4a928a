//! `prime_proxyd`: one stage's load-balancing proxy, as its own process.
//!
//! `prime_proxyd --upstream tcp://127.0.0.1:5000 --downstream tcp://127.0.0.1:5003
//! [--loopback tcp://127.0.0.1:5001]`, or `prime_proxyd --config TOPOLOGY --stage NAME`.

use clap::Parser;
use prime_server::base::endpoint::Use;
use prime_server::deploy::cli::{self, seconds, CommonArgs, DaemonArgs, Role, Roles, Slot};
use prime_server::deploy::topology::Topology;
use prime_server::pipeline::proxy::{Proxy, ProxyConfig};
use prime_server::Shutdown;
use std::process::ExitCode;

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
    /// at their deadline.
    #[arg(long, value_name = "ENDPOINT")]
    loopback: Option<String>,
    /// The stage of the topology file this proxy serves.
    #[arg(long, value_name = "NAME")]
    stage: Option<String>,
    /// Jobs that may wait for a worker before new ones are answered 503.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = cli::at_least_one::<usize>)]
    queue_bound: usize,
    /// Seconds a worker may stay silent before it is taken for dead.
    #[arg(long, value_name = "S", default_value_t = 1.5)]
    heartbeat_timeout: f64,
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
    if cli.loopback.is_some() {
        config.loopback = cli.loopback.clone();
    }
    if config.upstream.is_empty() || config.downstream.is_empty() {
        return Err("give --upstream and --downstream, or --config and --stage".into());
    }
    let mut endpoints = vec![
        ("--upstream", config.upstream.as_str(), Use::Bind),
        ("--downstream", config.downstream.as_str(), Use::Bind),
    ];
    if let Some(loopback) = &config.loopback {
        endpoints.push(("--loopback", loopback, Use::Connect));
    }
    cli::check_endpoints(&endpoints)?;
    config.queue_bound = cli.queue_bound;
    config.heartbeat_timeout = seconds("--heartbeat-timeout", cli.heartbeat_timeout)?;
    config.summary_every = cli.daemon.summary()?;
    let drain = cli.daemon.drain()?;

    prime_server::base::fd_limit::raise_and_log();
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let ctx = zmq::Context::new();
    let warn_no_loopback = config.loopback.is_none();
    let proxy = Proxy::bind(&ctx, config)?;
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
    Ok(ProxyConfig::new(
        stage.upstream.clone(),
        stage.downstream.clone(),
        Some(topology.front_end.loopback.clone()),
    ))
}
