//! `prime_serverd`: the prime-checking demo, in one process.
//!
//! - `prime_serverd LISTEN CONCURRENCY`: serves `GET /is_prime?possible_prime=N` (and
//!   `POST /is_prime` with N as the body) over HTTP on LISTEN, a ZeroMQ endpoint such as
//!   `tcp://127.0.0.1:8002`, through two stages (parse, compute) of CONCURRENCY workers.
//! - `prime_serverd RANGE CONCURRENCY`: the simulation mode, no HTTP. RANGE is `END`
//!   (meaning 1..=END) or `START,END`; every number goes through the same pipeline and
//!   the last line printed is `N primes found`.

use clap::Parser;
use prime_server::demo::primes::Algorithm;
use prime_server::demo::{self, Compute};
use prime_server::deploy::cli::{self, FrontEndArgs};
use prime_server::pipeline::proxy::Dispatch;
use prime_server::{Pipeline, Shutdown};
use std::ops::RangeInclusive;
use std::process::ExitCode;

/// How many simulated requests are unanswered at most.
const SIMULATION_WINDOW: u64 = 4096;

/// Jobs each worker may hold in the simulation mode unless `--prefetch` says otherwise.
/// The simulation is a batch with thousands of requests in flight and nobody waiting on
/// one answer: deep credit, with proxies that fill one worker's credit before the next
/// one's (`Dispatch::FillCredit`), lets each wake-up of a worker or proxy handle
/// hundreds of jobs (1..10^6 with 8 workers per stage: about 3 s instead of 15).
const SIMULATION_PREFETCH: u32 = 256;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The prime-checking demo of prime_server",
    after_help = cli::LOGGING_HELP
)]
struct Cli {
    /// LISTEN: where clients connect (bound), a ZeroMQ endpoint such as
    /// tcp://127.0.0.1:8002. Or RANGE, for the simulation mode: `END` or `START,END`,
    /// the inclusive range of numbers to test.
    #[arg(value_name = "LISTEN|RANGE")]
    target: String,
    /// Workers per stage.
    #[arg(value_parser = cli::at_least_one::<usize>)]
    concurrency: usize,
    /// Primality test used by the compute stage: trial-division or miller-rabin.
    #[arg(long, default_value = "trial-division")]
    algorithm: Algorithm,
    /// Jobs each worker may hold at once: more than 1 saves wake-ups when jobs are
    /// cheap (jobs stuck behind a long one are handed back to the proxy after 2 ms);
    /// 1 never holds a job another worker could start. [default: 32 when serving, 256
    /// in the simulation mode]
    #[arg(long, value_name = "N", value_parser = cli::at_least_one::<u32>)]
    prefetch: Option<u32>,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    let cli = Cli::parse();
    // A range is digits, commas and spaces; anything else is meant as an endpoint, and
    // is checked as one (so `127.0.0.1:8002` is told it lacks `tcp://`).
    let is_range = cli
        .target
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b' ');
    if !is_range {
        return cli::exit_code(serve(&cli));
    }
    let range = match parse_range(&cli.target) {
        Ok(range) => range,
        Err(why) => return cli::exit_code(Err(why.into())),
    };
    match simulate(range, &cli) {
        Ok(code) => code,
        Err(e) => cli::exit_code(Err(e)),
    }
}

fn pipeline(cli: &Cli, default_prefetch: u32) -> Pipeline {
    Pipeline::new()
        .prefetch(cli.prefetch.unwrap_or(default_prefetch))
        .stage("parse", cli.concurrency, demo::parse)
        .stage(
            "compute",
            cli.concurrency,
            Compute {
                algorithm: cli.algorithm,
            },
        )
}

fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.front_end.config(&cli.target)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    pipeline(cli, prime_server::pipeline::worker::DEFAULT_PREFETCH).serve(
        &zmq::Context::new(),
        config,
        &shutdown,
    )?;
    Ok(())
}

fn simulate(range: RangeInclusive<u64>, cli: &Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (concurrency, algorithm) = (cli.concurrency, cli.algorithm);
    let ctx = zmq::Context::new();
    let (pipeline, front) = pipeline(cli, SIMULATION_PREFETCH)
        .dispatch(Dispatch::FillCredit)
        .start(&ctx)?;
    log::info!(
        "testing {}..={} with {concurrency} workers per stage ({algorithm})",
        range.start(),
        range.end()
    );
    let tally =
        prime_server::demo::simulation::run(&front, range, SIMULATION_WINDOW, demo::RAW_PRIME);
    pipeline.stop();
    let tally = tally?;
    if tally.failed > 0 {
        eprintln!(
            "error: {} requests failed, e.g. {:?}",
            tally.failed, tally.first_failures
        );
    }
    println!("{} primes found", tally.yes);
    Ok(if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads `END` (1..=END) or `START,END`.
fn parse_range(text: &str) -> Result<RangeInclusive<u64>, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("{s:?} is not a number from 0 to {}: {e}", u64::MAX))
    };
    let (start, end) = match text.split_once(',') {
        Some((start, end)) => (number(start)?, number(end)?),
        None => (1, number(text)?),
    };
    if start > end {
        return Err(format!("the range {start},{end} is empty"));
    }
    Ok(start..=end)
}
