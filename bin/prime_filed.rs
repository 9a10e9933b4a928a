//! `prime_filed LISTEN ROOT CONCURRENCY`: a front end and a `files` stage of
//! CONCURRENCY workers serving the files under ROOT (see
//! [`prime_server::stages::files`]): `GET` and `HEAD`, content types by extension,
//! `ETag` and `Last-Modified` with conditional requests, byte ranges, `index.html` for
//! directories, nothing outside ROOT. Large files stream in pieces at the client's pace.
//!
//! A download is a request like any other, so `--request-timeout` bounds the whole of
//! it: unless given, prime_filed's is an hour rather than the front end's usual 30 s.

use clap::Parser;
use prime_server::deploy::cli::{self, FrontEndArgs};
use prime_server::stages::StaticFiles;
use prime_server::Pipeline;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serves the files under a directory through the pipeline",
    after_help = cli::LOGGING_HELP
)]
struct Cli {
    #[arg(value_name = "LISTEN", help = cli::LISTEN_HELP)]
    listen: String,
    /// The directory served; nothing outside it is reachable, symbolic links leading
    /// out of it included.
    root: std::path::PathBuf,
    /// File workers: the downloads in progress at most (a slow client holds one).
    #[arg(value_parser = cli::at_least_one::<usize>)]
    concurrency: usize,
    /// Send `Cache-Control: VALUE` with every file, e.g. "public, max-age=3600".
    #[arg(long, value_name = "VALUE")]
    cache_control: Option<String>,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

/// The request timeout unless `--request-timeout` is given: a whole download must fit.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    cli::exit_code(serve(&Cli::parse()))
}

fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut files =
        StaticFiles::new(&cli.root).map_err(|e| format!("ROOT {}: {e}", cli.root.display()))?;
    if let Some(value) = &cli.cache_control {
        if value.is_empty() || value.contains(['\r', '\n']) {
            return Err("--cache-control takes one line of directives".into());
        }
        files = files.cache_control(value.as_str());
    }
    log::info!(
        "{} file workers serve {} on {}",
        cli.concurrency,
        files.root().display(),
        cli.listen
    );
    let pipeline = Pipeline::new().http_stage("files", cli.concurrency, files);
    let mut config = cli.front_end.config(&cli.listen)?;
    if cli.front_end.request_timeout.is_none() {
        config.request_timeout = DOWNLOAD_TIMEOUT;
    }
    cli::serve_config(pipeline, config)
}
