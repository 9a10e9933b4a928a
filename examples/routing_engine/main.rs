//! `routing_engine LISTEN [CONCURRENCY]`: a small routing service, the kind of work
//! prime_server was made for. Requests cost anything from microseconds to hundreds of
//! milliseconds, and the stages that do that work scale apart:
//!
//! - `parse` checks the request; it answers `GET /locate?lat=&lon=` (the nearest node to
//!   a point of the unit square) by itself and sends `GET /route?from=&to=` (two node
//!   ids) on to `search`;
//! - `search` finds the cheapest route with A*, and gives up as soon as the client hangs
//!   up (it polls the interrupt every thousand nodes or so);
//! - `directions` turns the route into manoeuvres.
//!
//! The graph is built at start from a fixed seed: a 600 x 500 jittered grid of the unit
//! square (300,000 nodes, about a million directed edges), shared by every worker.
//!
//! ```text
//! cargo run --release --example routing_engine -- tcp://127.0.0.1:8002 2
//! curl 'http://127.0.0.1:8002/locate?lat=0.5&lon=0.25'
//! curl 'http://127.0.0.1:8002/route?from=0&to=299999'     # opposite corners
//! ```
//!
//! Each stage runs CONCURRENCY workers (default 2); Ctrl-C or SIGTERM drains and stops.
//! The front end's usual options (`--request-timeout`, `--health-path`, ...) apply, and
//! `--front-ends N` runs N front-end threads on LISTEN's port (`SO_REUSEPORT`), one
//! pipeline behind them all.
//!
//! ## As daemons
//!
//! The stages are named, so the same service can be spread over processes or hosts with
//! a topology file listing `parse`, `search` and `directions` (see
//! `prime_server::deploy::topology`): `prime_httpd --config F` for the front end and
//! `prime_proxyd --config F --stage S` for each stage's proxy. `prime_workerd` only runs
//! the demo services, so a routing deployment adds its own worker binary: it builds the
//! graph as this example does, reads its stage's endpoints from the same file into a
//! `WorkerConfig` (as `prime_workerd` does; with the file's `front_ends`, every front
//! end's loopback and interrupt publisher, `Topology::front_end_links`) and starts
//! `WorkerPool::spawn(&ctx, "search", &config, n, HttpStage(Search::new(graph)), &shutdown)`
//! (or `Parse`, or `Directions`). Then each stage gets as many hosts as its cost needs.

mod directions;
mod graph;
mod locate;
mod parse;
mod search;

use clap::Parser;
use directions::Directions;
use graph::Graph;
use locate::SpatialIndex;
use parse::Parse;
use prime_server::deploy::cli::{self, FrontEndArgs};
use prime_server::{Pipeline, Shutdown};
use search::Search;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// The command line.
#[derive(clap::Parser, Debug)]
#[command(about = "A routing service on a generated road network")]
struct Cli {
    #[arg(value_name = "LISTEN", help = cli::LISTEN_HELP)]
    listen: String,
    /// Workers per stage.
    #[arg(default_value_t = 2, value_parser = cli::at_least_one::<usize>)]
    concurrency: usize,
    /// Front-end threads sharing LISTEN's port (SO_REUSEPORT), one pipeline behind them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = cli::at_least_one::<usize>)]
    front_ends: usize,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit_code(serve(&Cli::parse()))
}

/// Builds the graph, starts the three stages behind a front end and serves until a
/// signal.
fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.front_end.config(&cli.listen)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let (graph, index) = build();
    let workers = cli.concurrency;
    log::info!("{workers} workers per stage: parse, search, directions");
    Pipeline::new()
        .http_stage("parse", workers, Parse::new(graph.clone(), index))
        .http_stage("search", workers, Search::new(graph.clone()))
        .http_stage("directions", workers, Directions::new(graph))
        .serve_front_ends(&zmq::Context::new(), config, cli.front_ends, &shutdown)?;
    Ok(())
}

/// Builds the graph and its spatial index, and says how big they are and how long
/// they took.
fn build() -> (Arc<Graph>, Arc<SpatialIndex>) {
    let started = Instant::now();
    let graph = Graph::standard();
    let index = SpatialIndex::new(&graph);
    let corner = graph.node_at(graph::WIDTH - 1, graph::HEIGHT - 1);
    log::info!(
        "graph: {} nodes, {} edges, built in {:.1} ms; opposite corners are nodes 0 and {corner}",
        graph.node_count(),
        graph.edge_count(),
        started.elapsed().as_secs_f64() * 1e3
    );
    (Arc::new(graph), Arc::new(index))
}
