//! `prime_httpd`: the HTTP front end, as its own process.
//!
//! `prime_httpd --listen tcp://127.0.0.1:8002 --proxy tcp://127.0.0.1:5000
//! --loopback tcp://127.0.0.1:5001 --interrupt tcp://127.0.0.1:5002`, or
//! `prime_httpd --config TOPOLOGY`. With a topology whose `tasks` table no stage
//! applies (no `"service": "tasks"`), it routes by task name itself (see
//! [`prime_server::deploy::topology`]).
//!
//! Several front ends share one pipeline (see `prime_server::pipeline::front_ends`):
//! each `prime_httpd` is given its number, `--front-end N` (its place in the
//! topology's `front_ends`, and in every worker's and proxy's list of `--loopback`s),
//! and front ends on one host may share their listening port with `--reuse-port`.

use clap::Parser;
use prime_server::base::endpoint::Use;
use prime_server::deploy::cli::{self, CommonArgs, FrontEndArgs, Role, Roles};
use prime_server::deploy::topology::Topology;
use prime_server::server::Server;
use prime_server::{FrontSockets, Shutdown};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "The HTTP front end of a prime_server pipeline")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// The first stage's proxy (connected): its --upstream.
    #[arg(long, value_name = "ENDPOINT")]
    proxy: Option<String>,
    /// Where every stage sends answers (bound): the workers' and proxies' --loopback.
    #[arg(long, value_name = "ENDPOINT")]
    loopback: Option<String>,
    /// Where interrupts are published (bound): the workers' --interrupt.
    #[arg(long, value_name = "ENDPOINT")]
    interrupt: Option<String>,
    /// This front end's number when several share the pipeline: its place (from 0) in
    /// the topology's front_ends, and the place of its --loopback in every worker's and
    /// proxy's list of --loopback endpoints.
    #[arg(long, value_name = "N", default_value_t = 0)]
    front_end: u8,
    /// Share the listening port with other front ends on this host (SO_REUSEPORT): the
    /// kernel spreads new connections over them. Each must give it.
    #[arg(long)]
    reuse_port: bool,
    #[command(flatten)]
    front_end_args: FrontEndArgs,
}

const ROLES: Roles = Roles {
    listen: Role::Takes(cli::LISTEN_HELP),
    concurrency: Role::Refuses(
        "the front end runs no workers: give --concurrency to prime_workerd, or a stage's \
         \"concurrency\" in the topology file",
    ),
    config: Role::Takes(
        "Read the endpoints and paths from this topology file (flags still override)",
    ),
};

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    cli::exit_code(run(cli::parse(env!("CARGO_BIN_NAME"), &ROLES)))
}

fn run(mut cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut stages = Vec::new();
    let mut routes = None;
    if let Some(path) = &cli.common.config {
        let topology = Topology::load(path)?;
        routes = topology.front_end_routes();
        stages = topology.stages.iter().map(|s| s.name.clone()).collect();
        let front = topology.front_end_at(usize::from(cli.front_end))?;
        cli.common
            .listen
            .get_or_insert_with(|| front.listen.clone());
        cli.proxy
            .get_or_insert_with(|| topology.entry().to_string());
        cli.loopback.get_or_insert_with(|| front.loopback.clone());
        cli.interrupt.get_or_insert_with(|| front.interrupt.clone());
        cli.front_end_args.take_unset(front);
    }
    let (Some(listen), Some(proxy), Some(loopback), Some(interrupt)) = (
        &cli.common.listen,
        &cli.proxy,
        &cli.loopback,
        &cli.interrupt,
    ) else {
        return Err("give --listen, --proxy, --loopback and --interrupt, or --config".into());
    };
    let mut config = cli.front_end_args.config(listen)?;
    config.reuse_port = cli.reuse_port;
    cli::check_endpoints(&[
        ("--proxy", proxy, Use::Connect),
        ("--loopback", loopback, Use::Bind),
        ("--interrupt", interrupt, Use::Bind),
    ])?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let ctx = zmq::Context::new();
    // Before the context's first socket, or libzmq keeps its one I/O thread.
    prime_server::deploy::builder::give_io_threads(&ctx, config.io_threads, config.io_thread_spill);
    let mut front = FrontSockets::bind(&ctx, proxy, loopback, interrupt)?;
    front.front_end = cli.front_end;
    // The self-test names each stage of the topology that does not answer its probe.
    front.stages = stages;
    // A task table with no `tasks` stage: the front end routes by task itself.
    if let Some((router, upstreams)) = routes {
        front.route_tasks(&ctx, router, &upstreams)?;
        for routed in &front.routed {
            log::info!(
                "front end: tasks for stage {:?} go to {}",
                routed.stage,
                routed.endpoint
            );
        }
    }
    log::info!(
        "front end {}: requests go to {proxy}, answers come to {}, interrupts go out on {}",
        front.front_end,
        front.loopback_endpoint,
        front.interrupt_endpoint
    );
    let server = Server::bind(&ctx, config, front)?;
    // The server logs its own closing line, with its counters.
    server.run(&shutdown)?;
    Ok(())
}
