//! A pipeline of STAGES stages that do no work, used by `scripts/bench` to show how the
//! cost of a request grows with the number of stages.
//!
//! Every stage but the last forwards the request unchanged (no copy: the frames are
//! moved on); the last answers `200` with a two-byte body. So the figures are the
//! pipeline's own cost per stage: a proxy and a worker hop each.
//!
//! Usage: `stage_chain LISTEN STAGES WORKERS` (e.g. `stage_chain tcp://127.0.0.1:0 4 2`),
//! with the front end's usual options (`--help`).

use clap::Parser;
use prime_server::deploy::cli::{self, FrontEndArgs};
use prime_server::http::Response;
use prime_server::{Job, Outcome, Pipeline, Shutdown};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "STAGES pass-through stages, the last answering 200")]
struct Cli {
    /// Where to serve HTTP: a ZeroMQ endpoint such as tcp://127.0.0.1:8003.
    listen: String,
    /// How many stages a request crosses.
    stages: usize,
    /// Workers per stage.
    workers: usize,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

/// Every stage but the last: the request goes on as it came, without a copy.
fn pass(job: &mut Job<'_>) -> Outcome {
    Outcome::Forward(job.forward_frames(usize::MAX))
}

/// The last stage: a small fixed answer.
fn answer(job: &mut Job<'_>) -> Outcome {
    job.reply(&Response::new(200).body("ok"))
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit_code(serve(&Cli::parse()))
}

fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    if cli.stages == 0 || cli.workers == 0 {
        return Err("STAGES and WORKERS must be at least 1".into());
    }
    let config = cli.front_end.config(&cli.listen)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let mut pipeline = Pipeline::new();
    for stage in 1..cli.stages {
        pipeline = pipeline.stage(&format!("pass{stage}"), cli.workers, pass);
    }
    pipeline
        .stage("answer", cli.workers, answer)
        .serve(&zmq::Context::new(), config, &shutdown)?;
    Ok(())
}
