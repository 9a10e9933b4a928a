//! `prime_gatewayd LISTEN TARGET CONCURRENCY`: a front end and a `gateway` stage that
//! forwards every request to the HTTP backend TARGET, with at most CONCURRENCY backend
//! calls in flight. Called synchronously it is a reverse proxy; with `--jobs-db` and
//! `Prefer: respond-async` the backend's calls become asynchronous jobs.
//!
//! Each stage's calls are held by `--threads` worker threads (1 by default), each
//! with non-blocking I/O and its own pool of kept-alive backend connections
//! ([`Pipeline::concurrent_stage`]): CONCURRENCY bounds the calls, not the threads.
//!
//! `--pool NAME=N[@TARGET]` adds a gateway stage of its own with at most N calls in
//! flight, and
//! `--task TASK=STAGE` sends requests whose `X-Task-Name` is TASK to that stage (the
//! others to `gateway`), so costly and cheap calls wait in separate queues;
//! `--task /PREFIX=STAGE` does the same for requests whose path starts with /PREFIX.
//! The front end applies the table itself (see [`Pipeline::route_tasks`]): a request
//! goes straight to its stage's proxy, with no routing stage in between, and an
//! unknown task name is answered 400 by the front end.
//!
//! Unless `--request-timeout` is given, the front end's request timeout is at least
//! `--gateway-timeout` plus 5 s, so a slow backend call ends with the gateway's `504`
//! ("the gateway timeout (N s) passed") rather than being cut short by the front end.
//!
//! LISTEN, TARGET and CONCURRENCY may also come as `--listen`, `--target` and
//! `--concurrency`, and LISTEN and CONCURRENCY from a topology file (`--config`: its
//! front end, and its stage `gateway`).

use clap::Parser;
use prime_server::deploy::cli::{self, CommonArgs, FrontEndArgs, GatewayArgs, Role, Roles, Slot};
use prime_server::stages::tasks::TaskRouter;
use prime_server::Pipeline;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Puts an HTTP backend behind the pipeline's front end")]
struct Cli {
    #[arg(value_name = "LISTEN", help = cli::LISTEN_HELP)]
    listen_arg: Option<String>,
    /// The backend: http://HOST:PORT, optionally with a base path.
    #[arg(value_name = "TARGET")]
    target: Option<String>,
    /// The backend's calls in flight at most (per stage).
    #[arg(value_name = "CONCURRENCY")]
    concurrency_arg: Option<String>,
    /// TARGET, as a flag.
    #[arg(long = "target", value_name = "TARGET")]
    target_flag: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Worker threads per gateway stage, sharing its calls in flight (at most one
    /// thread per call).
    #[arg(long, default_value_t = 1, value_parser = cli::at_least_one::<usize>)]
    threads: usize,
    /// Another gateway stage with calls of its own (repeatable): NAME=N, or
    /// NAME=N@TARGET for another backend; N calls in flight at most.
    #[arg(long, value_name = "NAME=N[@TARGET]")]
    pool: Vec<String>,
    /// Route requests whose X-Task-Name is TASK to STAGE, `gateway` or a --pool
    /// (repeatable); other names get 400. A TASK starting with / is a path prefix:
    /// requests without a name whose path starts with it go to STAGE (the longest
    /// prefix wins); the rest go to `gateway`.
    #[arg(long, value_name = "TASK=STAGE")]
    task: Vec<String>,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    front_end: FrontEndArgs,
}

/// The main stage's name, and its entry in a topology file.
const STAGE: &str = "gateway";

const ROLES: Roles = Roles {
    listen: Role::Takes("LISTEN, as a flag"),
    concurrency: Role::Takes("CONCURRENCY (gateway workers), as a flag"),
    config: Role::Takes(cli::FRONT_END_CONFIG_HELP),
};

fn main() -> ExitCode {
    cli::init_logging();
    // Before any thread starts: the front end gives memory back after bursts of
    // connections only with these allocator settings.
    prime_server::server::tune_allocator();
    cli::exit_code(serve(cli::parse(env!("CARGO_BIN_NAME"), &ROLES)))
}

/// LISTEN, TARGET and CONCURRENCY from the positionals, the flags and the topology file,
/// in that order of precedence.
fn place(cli: &mut Cli) -> Result<(String, String, usize), Box<dyn std::error::Error>> {
    let positionals = [
        cli.listen_arg.take(),
        cli.target.take(),
        cli.concurrency_arg.take(),
    ];
    cli::place_listen_middle_concurrency(
        &cli.common,
        &mut cli.front_end,
        Slot::new("TARGET", "--target", cli.target_flag.clone()),
        positionals,
        STAGE,
    )
}

fn serve(mut cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let (listen, target, concurrency) = place(&mut cli)?;
    let gateway = cli.gateway.gateway(&target)?;
    log::info!(
        "{} gateway threads forward {listen} to {target}, at most {concurrency} calls at once",
        cli.threads.min(concurrency)
    );
    let mut pipeline = Pipeline::new();
    let mut stages = vec![STAGE.to_string()];
    if !cli.task.is_empty() {
        let mut router = TaskRouter::new().default_stage(STAGE);
        for rule in &cli.task {
            let (task, stage) = TaskRouter::parse_rule(rule)?;
            router = router.task(&task, &stage);
        }
        check_stages(&router, &cli.pool)?;
        log::info!("the front end routes tasks: {:?}", cli.task);
        pipeline = pipeline.route_tasks(router);
    }
    // `gateway` comes first: the front end's main entry reaches it.
    pipeline = pipeline.concurrent_stage(STAGE, cli.threads, concurrency, gateway);
    for pool in &cli.pool {
        let (name, calls, pool_target) = parse_pool(pool)?;
        let gateway = cli.gateway.gateway(pool_target.unwrap_or(&target))?;
        log::info!("pool {name:?}: at most {calls} calls at once");
        pipeline = pipeline.concurrent_stage(name, cli.threads, calls, gateway);
        stages.push(name.to_string());
    }
    log::info!("stages: {stages:?}");
    let mut config = cli.front_end.config(&listen)?;
    if cli.front_end.request_timeout.is_none() {
        // A synchronous call's deadline covers the gateway timeout, with a margin so
        // that the gateway's own 504 (naming its timeout) comes first; a lower one is
        // honoured only when given explicitly.
        let call = cli.gateway.timeout()? + GATEWAY_MARGIN;
        if call > config.request_timeout {
            log::info!(
                "the request timeout is {} s, to cover the gateway timeout",
                call.as_secs_f64()
            );
            config.request_timeout = call;
        }
    }
    cli::serve_config(pipeline, config)
}

/// How much longer than a backend call the front end waits for its answer by default:
/// the call starts after the request has crossed the front end, a proxy and a worker,
/// which on a loaded host takes more than a moment.
const GATEWAY_MARGIN: Duration = Duration::from_secs(5);

/// Reads `NAME=N` or `NAME=N@TARGET`.
fn parse_pool(pool: &str) -> Result<(&str, usize, Option<&str>), String> {
    let bad = || format!("--pool takes NAME=N or NAME=N@TARGET, not {pool:?}");
    let (name, rest) = pool.split_once('=').ok_or_else(bad)?;
    let (workers, target) = match rest.split_once('@') {
        Some((workers, target)) => (workers, Some(target)),
        None => (rest, None),
    };
    let workers: usize = workers.parse().map_err(|_| bad())?;
    if name.is_empty() || workers == 0 || name == "gateway" {
        return Err(bad());
    }
    Ok((name, workers, target))
}

/// Every stage a task names must exist.
fn check_stages(router: &TaskRouter, pools: &[String]) -> Result<(), String> {
    let mut known = vec!["gateway"];
    for pool in pools {
        known.push(parse_pool(pool)?.0);
    }
    for stage in router.stages() {
        if !known.contains(&stage) {
            return Err(format!(
                "--task names stage {stage:?}, which is neither gateway nor a --pool"
            ));
        }
    }
    Ok(())
}
