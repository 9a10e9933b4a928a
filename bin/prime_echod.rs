//! `prime_echod LISTEN CONCURRENCY`: a one-stage service that answers each request with a
//! JSON description of it (method, path, query, headers, body length). It exercises the
//! front end and the pipeline with no application work: the tool for testing them alone.

use clap::Parser;
use prime_server::deploy::cli::{self, FrontEndArgs};
use prime_server::{demo, Pipeline};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Answers every request with a JSON description of it",
    after_help = cli::LOGGING_HELP
)]
struct Cli {
    #[arg(value_name = "LISTEN", help = cli::LISTEN_HELP)]
    listen: String,
    /// Echo workers.
    #[arg(value_parser = cli::at_least_one::<usize>)]
    concurrency: usize,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    cli::exit_code(serve(&Cli::parse()))
}

fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = Pipeline::new().stage("echo", cli.concurrency, demo::echo);
    cli::serve_pipeline(pipeline, &cli.listen, &cli.front_end)
}
