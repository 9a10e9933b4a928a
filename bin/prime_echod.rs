//! `prime_echod LISTEN CONCURRENCY`: a one-stage service that answers each request with a
//! JSON description of it (method, path, query, headers, body length). It exercises the
//! front end and the pipeline with no application work: the tool for testing them alone.
//! It also accepts a WebSocket upgrade on any path and sends every message back
//! unchanged (text as text, binary as binary): the target for WebSocket conformance
//! suites.
//! LISTEN and CONCURRENCY may also come as `--listen` and `--concurrency`, or from a
//! topology file (`--config`: its front end, and its stage `echo`).

use clap::Parser;
use prime_server::deploy::cli::{self, CommonArgs, FrontEndArgs, Role, Roles, Slot};
use prime_server::{demo, Pipeline};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "Describes each request as JSON and echoes WebSocket messages")]
struct Cli {
    #[arg(value_name = "LISTEN", help = cli::LISTEN_HELP)]
    listen_arg: Option<String>,
    /// Echo workers.
    #[arg(value_name = "CONCURRENCY")]
    concurrency_arg: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

/// The stage's name, and its entry in a topology file.
const STAGE: &str = "echo";

const ROLES: Roles = Roles {
    listen: Role::Takes("LISTEN, as a flag"),
    concurrency: Role::Takes("CONCURRENCY (echo workers), as a flag"),
    config: Role::Takes(cli::FRONT_END_CONFIG_HELP),
};

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    cli::exit_code(serve(cli::parse(env!("CARGO_BIN_NAME"), &ROLES)))
}

fn serve(mut cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let topology = cli::one_process_topology(cli.common.config.as_deref(), &mut cli.front_end)?;
    let mut slots = [
        Slot::new("LISTEN", "--listen", cli.common.listen.clone()),
        Slot::new(
            "CONCURRENCY",
            "--concurrency",
            cli.common.concurrency.map(|n| n.to_string()),
        ),
    ];
    cli::place(
        &mut slots,
        [cli.listen_arg.take(), cli.concurrency_arg.take()]
            .into_iter()
            .flatten()
            .collect(),
    )?;
    let [listen, concurrency] = &mut slots;
    if let Some(topology) = &topology {
        listen
            .value
            .get_or_insert_with(|| topology.front_end().listen.clone());
        if let Some(n) = cli::stage_concurrency(Some(topology), STAGE) {
            concurrency.value.get_or_insert_with(|| n.to_string());
        }
    }
    let (listen, concurrency) = (cli::required(listen)?, cli::count(concurrency)?);
    let pipeline = Pipeline::new().stage(STAGE, concurrency, demo::echo);
    cli::serve_pipeline(pipeline, &listen, &cli.front_end)
}
