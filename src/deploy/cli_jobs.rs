//! The command-line options of asynchronous jobs and their webhooks (`--jobs-db`,
//! `--webhook-*`), shared by every binary with a front end; re-exported by [`super::cli`].

use super::command_line::seconds;
use crate::jobs::webhooks::{parse_secret, WebhookConfig};
use crate::jobs::{Durability, JobsConfig};

/// The options of asynchronous jobs (`Prefer: respond-async`, `/jobs/{id}`).
#[derive(clap::Args, Clone, Debug)]
pub struct JobsArgs {
    /// Keep asynchronous jobs in this SQLite file (created with mode 0600), or in the
    /// PostgreSQL database of this postgres:// (or postgresql://) URL, which several
    /// front ends can share: requests with `Prefer: respond-async` are answered 202
    /// and their results kept at /jobs/{id}. Without it, no jobs are kept.
    #[arg(long, value_name = "FILE|URL")]
    pub jobs_db: Option<std::path::PathBuf>,
    /// With a PostgreSQL job store: seconds this front end's hold on its jobs lasts
    /// unless renewed (every third of it); once it lapses, another front end takes
    /// its jobs over and runs them again.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub jobs_lease: f64,
    /// Seconds finished jobs and their results are kept (then 410 Gone).
    #[arg(long, value_name = "S", default_value_t = 86400.0)]
    pub jobs_ttl: f64,
    /// Unfinished jobs kept at most; past it a submit gets 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub jobs_max_queued: usize,
    /// Seconds one run of a job may spend in the pipeline before it fails with 504.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    pub job_timeout: f64,
    /// Jobs run in the pipeline at once; the others wait in the store.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub jobs_max_running: usize,
    /// Runs of a job the pipeline could not take (queue full, worker died) before it
    /// fails.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub jobs_max_attempts: u32,
    /// The longest long-poll (`?wait=`, `Prefer: wait=`) honoured, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub jobs_max_wait: f64,
    /// When a job counts as stored: `full`, on the disk (fsync per group commit;
    /// survives a power cut), or `process`, handed to the operating system (survives
    /// the process's death, kill -9 included, not the machine's; commits ~50x cheaper).
    #[arg(long, value_name = "WHEN", default_value = "full", value_parser = ["full", "process"])]
    pub jobs_durability: String,
    /// The webhooks' options.
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// The options of webhooks: a job's end POSTed to the `Callback-URL` its submit gave.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Sign webhooks with this secret (`whsec_<base64>` is decoded, other text is the
    /// key as it is). Webhooks (and URL subscriptions to channels) are on only with a
    /// secret; prefer --webhook-secret-file, since a command line is visible to other
    /// users.
    #[arg(long, value_name = "SECRET", conflicts_with = "webhook_secret_file")]
    pub webhook_secret: Option<String>,
    /// Read the webhook secret from this file (surrounding whitespace is ignored).
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<std::path::PathBuf>,
    /// Seconds before a failed delivery is tried again; the wait doubles after each
    /// failure (with jitter), up to --webhook-retry-max.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub webhook_retry_first: f64,
    /// The longest wait between two attempts, in seconds.
    #[arg(long, value_name = "S", default_value_t = 3600.0)]
    pub webhook_retry_max: f64,
    /// Seconds after the first failed attempt when a delivery is given up.
    #[arg(long, value_name = "S", default_value_t = 86400.0)]
    pub webhook_give_up: f64,
    /// Seconds to connect to a receiver, and again for its answer.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub webhook_timeout: f64,
    /// Delivery threads (and as many threads that check submits' callback URLs).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub webhook_threads: usize,
    /// Deliveries in progress to one destination at once: the address and port a
    /// callback's host resolves to, however the URL spells it; the others wait in
    /// that destination's queue.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub webhook_per_host: usize,
    /// Let callbacks reach this network although it is not public (e.g. 10.1.0.0/16);
    /// repeatable. Loopback, private, link-local and other non-global addresses are
    /// refused otherwise.
    #[arg(long, value_name = "CIDR")]
    pub allow_callback_network: Vec<String>,
}

impl WebhookArgs {
    /// The webhook configuration these options describe, if a secret was given.
    pub fn config(&self) -> Result<Option<WebhookConfig>, String> {
        let secret = match (&self.webhook_secret, &self.webhook_secret_file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("--webhook-secret-file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let mut config = WebhookConfig::new(parse_secret(&secret)?);
        config.retry_first = seconds("--webhook-retry-first", self.webhook_retry_first)?;
        config.retry_max = seconds("--webhook-retry-max", self.webhook_retry_max)?;
        config.give_up = seconds("--webhook-give-up", self.webhook_give_up)?;
        config.timeout = seconds("--webhook-timeout", self.webhook_timeout)?;
        config.threads = self.webhook_threads.max(1);
        config.per_host = self.webhook_per_host.max(1);
        for network in &self.allow_callback_network {
            let cidr = network
                .parse()
                .map_err(|e| format!("--allow-callback-network: {e}"))?;
            config.policy.allow.push(cidr);
        }
        Ok(Some(config))
    }
}

impl JobsArgs {
    /// The job configuration these options describe, if `--jobs-db` was given.
    pub fn config(&self) -> Result<Option<JobsConfig>, String> {
        let Some(path) = &self.jobs_db else {
            return Ok(None);
        };
        let positive = |flag: &str, n: usize| {
            if n == 0 {
                Err(format!("{flag} must be at least 1"))
            } else {
                Ok(n)
            }
        };
        let mut config = JobsConfig::new(path);
        config.ttl = seconds("--jobs-ttl", self.jobs_ttl)?;
        config.max_queued = positive("--jobs-max-queued", self.jobs_max_queued)?;
        config.job_timeout = seconds("--job-timeout", self.job_timeout)?;
        config.max_running = positive("--jobs-max-running", self.jobs_max_running)?;
        config.max_attempts =
            positive("--jobs-max-attempts", self.jobs_max_attempts as usize)? as u32;
        config.max_wait = seconds("--jobs-max-wait", self.jobs_max_wait)?;
        config.lease = seconds("--jobs-lease", self.jobs_lease)?;
        config.durability = match self.jobs_durability.as_str() {
            "process" => Durability::Process,
            _ => Durability::Full,
        };
        config.webhooks = self.webhooks.config()?;
        Ok(Some(config))
    }
}
