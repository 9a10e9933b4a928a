//! `prime_gatewayd LISTEN TARGET CONCURRENCY`: a front end and a `gateway` stage of
//! CONCURRENCY workers that forward every request to the HTTP backend TARGET. Called
//! synchronously it is a reverse proxy; with `--jobs-db` and `Prefer: respond-async` the
//! backend's calls become asynchronous jobs.

use clap::Parser;
use prime_server::cli::{self, FrontEndArgs, GatewayArgs};
use prime_server::{Pipeline, Shutdown};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Puts an HTTP backend behind the pipeline's front end"
)]
struct Cli {
    /// Where to serve HTTP: a ZeroMQ endpoint such as tcp://127.0.0.1:8002.
    listen: String,
    /// The backend: http://HOST:PORT, optionally with a base path.
    target: String,
    /// Gateway workers: the backend's calls in flight at most.
    concurrency: usize,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit_code(serve(&Cli::parse()))
}

fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    if cli.concurrency == 0 {
        return Err("CONCURRENCY must be at least 1".into());
    }
    let gateway = cli.gateway.gateway(&cli.target)?;
    let config = cli.front_end.config(&cli.listen)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    log::info!(
        "{} gateway workers forward {} to {}",
        cli.concurrency,
        cli.listen,
        cli.target
    );
    Pipeline::new()
        // One job per worker: a worker blocked on the backend never holds another.
        .prefetch(1)
        .http_stage("gateway", cli.concurrency, gateway)
        .serve(&zmq::Context::new(), config, &shutdown)?;
    Ok(())
}
