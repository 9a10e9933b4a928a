//! `prime_filed LISTEN ROOT CONCURRENCY`: a front end and a `files` stage of
//! CONCURRENCY workers serving the files under ROOT (see
//! [`prime_server::stages::files`]): `GET` and `HEAD`, content types by extension,
//! `ETag` and `Last-Modified` with conditional requests, byte ranges, `index.html` for
//! directories, nothing outside ROOT. Large files stream in pieces at the client's pace.
//!
//! A download is a request like any other, so `--request-timeout` bounds the whole of
//! it: unless given, prime_filed's is an hour rather than the front end's usual 30 s.
//!
//! LISTEN, ROOT and CONCURRENCY may also come as `--listen`, `--root` and
//! `--concurrency`, and LISTEN and CONCURRENCY from a topology file (`--config`: its
//! front end, and its stage `files`).

use clap::Parser;
use prime_server::deploy::cli::{self, CommonArgs, FrontEndArgs, Role, Roles, Slot};
use prime_server::stages::StaticFiles;
use prime_server::Pipeline;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Serves the files under a directory through the pipeline")]
struct Cli {
    #[arg(value_name = "LISTEN", help = cli::LISTEN_HELP)]
    listen_arg: Option<String>,
    /// The directory served; nothing outside it is reachable, symbolic links leading
    /// out of it included.
    #[arg(value_name = "ROOT")]
    root_arg: Option<String>,
    /// File workers: the downloads in progress at most (a slow client holds one).
    #[arg(value_name = "CONCURRENCY")]
    concurrency_arg: Option<String>,
    /// ROOT, as a flag.
    #[arg(long = "root", value_name = "ROOT")]
    root_flag: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Send `Cache-Control: VALUE` with every file, e.g. "public, max-age=3600".
    #[arg(long, value_name = "VALUE")]
    cache_control: Option<String>,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

/// The stage's name, and its entry in a topology file.
const STAGE: &str = "files";

const ROLES: Roles = Roles {
    listen: Role::Takes("LISTEN, as a flag"),
    concurrency: Role::Takes("CONCURRENCY (file workers), as a flag"),
    config: Role::Takes(cli::FRONT_END_CONFIG_HELP),
};

/// The request timeout unless `--request-timeout` is given: a whole download must fit.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    cli::exit_code(serve(cli::parse(env!("CARGO_BIN_NAME"), &ROLES)))
}

/// LISTEN, ROOT and CONCURRENCY from the positionals, the flags and the topology file,
/// in that order of precedence.
fn place(cli: &mut Cli) -> Result<(String, String, usize), Box<dyn std::error::Error>> {
    let positionals = [
        cli.listen_arg.take(),
        cli.root_arg.take(),
        cli.concurrency_arg.take(),
    ];
    cli::place_listen_middle_concurrency(
        &cli.common,
        &mut cli.front_end,
        Slot::new("ROOT", "--root", cli.root_flag.clone()),
        positionals,
        STAGE,
    )
}

fn serve(mut cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let (listen, root, concurrency) = place(&mut cli)?;
    let mut files = StaticFiles::new(&root).map_err(|e| format!("ROOT {root}: {e}"))?;
    if let Some(value) = &cli.cache_control {
        if value.is_empty() || value.contains(['\r', '\n']) {
            return Err("--cache-control takes one line of directives".into());
        }
        files = files.cache_control(value.as_str());
    }
    log::info!(
        "{} file workers serve {} on {}",
        concurrency,
        files.root().display(),
        listen
    );
    let pipeline = Pipeline::new().http_stage(STAGE, concurrency, files);
    let mut config = cli.front_end.config(&listen)?;
    if cli.front_end.request_timeout.is_none() {
        config.request_timeout = DOWNLOAD_TIMEOUT;
    }
    cli::serve_config(pipeline, config)
}
