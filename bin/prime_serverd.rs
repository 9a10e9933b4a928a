//! `prime_serverd`: the prime-checking demo, in one process.
//!
//! - `prime_serverd LISTEN CONCURRENCY`: serves `GET /is_prime?possible_prime=N` (and
//!   `POST /is_prime` with N as the body) over HTTP on LISTEN, a ZeroMQ endpoint such as
//!   `tcp://127.0.0.1:8002`, through two stages (parse, compute) of CONCURRENCY workers.
//! - `prime_serverd RANGE CONCURRENCY`: the simulation mode, no HTTP. RANGE is `END`
//!   (meaning 1..=END) or `START,END`; 2 and the odd numbers of the range go through
//!   the same pipeline (the numbers the C++ original's simulation asks about) and the
//!   last line printed is `N primes found`.
//!
//! LISTEN and CONCURRENCY may also come as `--listen` and `--concurrency`, or from a
//! topology file (`--config`: its front end, and the concurrency of its stages `parse`
//! and `compute`).
//!
//! `--front-ends N` serves with N front-end threads on the one pipeline, sharing
//! LISTEN's port (`SO_REUSEPORT`): the kernel spreads connections over them (see
//! `prime_server::deploy::front_ends`).

use clap::Parser;
use prime_server::demo::primes::Algorithm;
use prime_server::demo::simulation::Candidates;
use prime_server::demo::{self, Compute};
use prime_server::deploy::cli::{self, CommonArgs, FrontEndArgs, Role, Roles, Slot};
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
#[command(about = "The prime-checking demo of prime_server")]
struct Cli {
    /// LISTEN: where clients connect (bound), a ZeroMQ endpoint such as
    /// tcp://127.0.0.1:8002. Or RANGE, for the simulation mode: `END` or `START,END`,
    /// the inclusive range of numbers to test.
    #[arg(value_name = "LISTEN|RANGE")]
    target: Option<String>,
    /// Workers per stage.
    #[arg(value_name = "CONCURRENCY")]
    concurrency_arg: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Primality test used by the compute stage: trial-division or miller-rabin.
    #[arg(long, default_value = "trial-division")]
    algorithm: Algorithm,
    /// Jobs each worker may hold at once: more than 1 saves wake-ups when jobs are
    /// cheap (jobs stuck behind a long one are handed back to the proxy after 2 ms);
    /// 1 never holds a job another worker could start. [default: 32 when serving, 256
    /// in the simulation mode]
    #[arg(long, value_name = "N", value_parser = cli::at_least_one::<u32>)]
    prefetch: Option<u32>,
    /// Front-end threads, each a core for HTTP: they share LISTEN's port
    /// (SO_REUSEPORT) and the pipeline. More than 1 refuses a SQLite --jobs-db.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = cli::at_least_one::<usize>)]
    front_ends: usize,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

const ROLES: Roles = Roles {
    listen: Role::Takes("LISTEN, as a flag (serves HTTP: not the simulation mode)"),
    concurrency: Role::Takes("CONCURRENCY (workers per stage), as a flag"),
    config: Role::Takes(cli::FRONT_END_CONFIG_HELP),
};

/// The stages, in order: their names in a topology file.
const STAGES: [&str; 2] = ["parse", "compute"];

/// What the command line asks for, once positionals, flags and the topology file are
/// put together.
struct Plan {
    /// LISTEN or RANGE.
    target: String,
    /// Workers of each of [`STAGES`].
    concurrency: [usize; 2],
}

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    let mut cli: Cli = cli::parse(env!("CARGO_BIN_NAME"), &ROLES);
    let plan = match plan(&mut cli) {
        Ok(plan) => plan,
        Err(why) => return cli::exit_code(Err(why)),
    };
    // A range is digits, commas and spaces; anything else is meant as an endpoint, and
    // is checked as one (so `127.0.0.1:8002` is told it lacks `tcp://`).
    let is_range = plan
        .target
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b' ');
    if !is_range {
        return cli::exit_code(serve(&cli, &plan));
    }
    let range = match parse_range(&plan.target) {
        Ok(range) => range,
        Err(why) => return cli::exit_code(Err(why.into())),
    };
    match simulate(range, &cli, &plan) {
        Ok(code) => code,
        Err(e) => cli::exit_code(Err(e)),
    }
}

/// Puts LISTEN|RANGE and CONCURRENCY together from the positionals, the flags and the
/// topology file, in that order of precedence.
fn plan(cli: &mut Cli) -> Result<Plan, Box<dyn std::error::Error>> {
    let topology = cli::one_process_topology(cli.common.config.as_deref(), &mut cli.front_end)?;
    let mut slots = [
        Slot::new("LISTEN|RANGE", "--listen", cli.common.listen.clone()),
        Slot::new(
            "CONCURRENCY",
            "--concurrency",
            cli.common.concurrency.map(|n| n.to_string()),
        ),
    ];
    let positionals = [cli.target.take(), cli.concurrency_arg.take()];
    cli::place(&mut slots, positionals.into_iter().flatten().collect())?;
    let [target, concurrency] = &mut slots;
    if let Some(topology) = &topology {
        target
            .value
            .get_or_insert_with(|| topology.front_end().listen.clone());
    }
    let target = cli::required(target)?;
    let concurrency = match (&concurrency.value, &topology) {
        (None, Some(topology)) => {
            let mut each = [0; 2];
            for (n, stage) in each.iter_mut().zip(STAGES) {
                *n = cli::stage_concurrency(Some(topology), stage).ok_or_else(|| {
                    format!("give CONCURRENCY: the topology file has no stage {stage:?}")
                })?;
            }
            each
        }
        _ => [cli::count(concurrency)?; 2],
    };
    Ok(Plan {
        target,
        concurrency,
    })
}

fn pipeline(cli: &Cli, plan: &Plan, default_prefetch: u32) -> Pipeline {
    Pipeline::new()
        .prefetch(cli.prefetch.unwrap_or(default_prefetch))
        .stage(STAGES[0], plan.concurrency[0], demo::parse)
        .stage(
            STAGES[1],
            plan.concurrency[1],
            Compute {
                algorithm: cli.algorithm,
            },
        )
}

fn serve(cli: &Cli, plan: &Plan) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.front_end.config(&plan.target)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    pipeline(cli, plan, prime_server::pipeline::worker::DEFAULT_PREFETCH).serve_front_ends(
        &zmq::Context::new(),
        config,
        cli.front_ends,
        &shutdown,
    )?;
    Ok(())
}

fn simulate(
    range: RangeInclusive<u64>,
    cli: &Cli,
    plan: &Plan,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (concurrency, algorithm) = (plan.concurrency[1], cli.algorithm);
    let ctx = zmq::Context::new();
    let (pipeline, front) = pipeline(cli, plan, SIMULATION_PREFETCH)
        .dispatch(Dispatch::FillCredit)
        .start(&ctx)?;
    log::info!(
        "testing {}..={} with {concurrency} workers per stage ({algorithm})",
        range.start(),
        range.end()
    );
    let tally = prime_server::demo::simulation::run(
        &front,
        Candidates::of(range),
        SIMULATION_WINDOW,
        demo::RAW_PRIME,
    );
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
