//! Several front-end threads in one process, on one pipeline and one port
//! (`prime_serverd --front-ends N`): each thread is a front end of its own (its
//! connections, its loopback, its interrupts; see [`crate::pipeline::front_ends`]), and
//! all of them listen on the same port with `SO_REUSEPORT`, so the kernel spreads new
//! connections over them and each one is a core for HTTP.
//!
//! What the threads share beyond the pipeline: channels, through a bus forwarder of
//! their own (in-process, unless the configuration names a bus), so a message reaches
//! holds on every front end; the control listener and the URL subscriptions run on
//! front end 0 alone (they publish through the bus like anyone). A SQLite job store is
//! one front end's (its file has one owner), so several front ends refuse one; a
//! PostgreSQL store is shared: each thread runs a job service of its own on it, a
//! front end of the store with its own lease, as separate processes would.

use super::builder::Pipeline;
use crate::base::error::{Error, Result};
use crate::base::shutdown::Shutdown;
use crate::pipeline::bus::Forwarder;
use crate::server::{Server, ServerConfig, ServerStats};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why several front ends refuse a job store, for the error and the documentation.
pub const SHARED_JOBS_REFUSAL: &str = "a SQLite job store (--jobs-db FILE) belongs to one \
front end; several front ends share a job store only on PostgreSQL (--jobs-db postgres://...): \
run one front end, or give the PostgreSQL store";

impl Pipeline {
    /// Starts the pipeline behind `front_ends` front ends configured alike by `config`,
    /// sharing its listening ports (`SO_REUSEPORT`; a port of 0 or `*` is picked by the
    /// first and shared by the others). Run each returned server on a thread of its own
    /// with [`Server::run`] (or call [`serve_front_ends`](Self::serve_front_ends)).
    ///
    /// With one front end this is [`bind_server`](Self::bind_server). With more, a bus
    /// forwarder joins them (unless `config` names a bus), front end 0 alone runs
    /// the control listener and the URL subscriptions, and `ctx` is given an I/O thread
    /// per front end (where libzmq reads and writes the client connections), which
    /// libzmq takes only if no socket was made on `ctx` before.
    ///
    /// # Errors
    /// [`Error::Config`] for a SQLite job store with more than one front end
    /// ([`SHARED_JOBS_REFUSAL`]) or a listening endpoint that cannot be shared (a host
    /// name rather than an address); any error of binding or starting.
    pub fn bind_servers(
        self,
        ctx: &zmq::Context,
        config: ServerConfig,
        front_ends: usize,
    ) -> Result<(super::RunningPipeline, Vec<Server>)> {
        if front_ends <= 1 {
            let (pipeline, server) = self.bind_server(ctx, config)?;
            return Ok((pipeline, vec![server]));
        }
        if config.jobs.as_ref().is_some_and(|jobs| !jobs.is_postgres()) {
            return Err(Error::Config(SHARED_JOBS_REFUSAL.into()));
        }
        // Client connections live in libzmq's I/O threads: at least a front end each,
        // or they would all share one core however many front ends there are; and
        // spread from the first (a spill load would put every front end's on one).
        super::builder::give_io_threads(ctx, config.io_threads.max(front_ends), 0);
        let mut config = config;
        config.reuse_port = true;
        // Bound first: a taken port is reported before any stage starts (or logs).
        let first = Server::bind_listeners(ctx, &config)?;
        let (mut pipeline, fronts) = self.start_front_ends(ctx, front_ends)?;
        if config.metrics_source.is_none() {
            config.metrics_source = Some(pipeline.metrics_source());
        }
        if config.channels.bus.is_none() {
            static BUSES: AtomicU64 = AtomicU64::new(0);
            let bus = BUSES.fetch_add(1, Ordering::Relaxed);
            let forwarder = Forwarder::bind(
                ctx,
                &format!("inproc://prime-front-ends-bus-{bus}-in"),
                &format!("inproc://prime-front-ends-bus-{bus}-out"),
            )?;
            let (xsub, xpub) = forwarder.endpoints();
            config.channels.bus = Some((xsub.to_string(), xpub.to_string()));
            let stop = pipeline.shutdown_flag().clone();
            pipeline.adopt(
                std::thread::Builder::new()
                    .name("front-ends-bus".into())
                    .spawn(move || {
                        if let Err(e) = forwarder.run(&stop) {
                            log::error!("the front ends' bus stopped: {e}");
                        }
                    })
                    .map_err(Error::Thread)?,
            );
        }
        let mut servers = Vec::with_capacity(front_ends);
        let mut fronts = fronts.into_iter();
        let Some(front) = fronts.next() else {
            return Err(Error::Config("no front end".into()));
        };
        let server = Server::with_listeners(ctx, config.clone(), first, front)?;
        // The others bind the ports the first was given.
        config.listen = config
            .listen
            .iter()
            .zip(server.endpoints())
            .map(|((_, protocol), bound)| (bound, *protocol))
            .collect();
        config.channels.control = None;
        config.channels.subscriptions = None;
        servers.push(server);
        for front in fronts {
            servers.push(Server::bind(ctx, config.clone(), front)?);
        }
        log::info!(
            "{front_ends} front ends share {}",
            config
                .listen
                .iter()
                .map(|(endpoint, _)| endpoint.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok((pipeline, servers))
    }

    /// Starts the pipeline behind `front_ends` front-end threads (see
    /// [`bind_servers`](Self::bind_servers)), serves until `shutdown` is triggered (or
    /// every front end's drain has finished), then stops the pipeline; returns each
    /// front end's counters, front end 0 first.
    ///
    /// # Errors
    /// As [`bind_servers`](Self::bind_servers), or the first error a front end
    /// stopped with.
    pub fn serve_front_ends(
        self,
        ctx: &zmq::Context,
        config: ServerConfig,
        front_ends: usize,
        shutdown: &Shutdown,
    ) -> Result<Vec<ServerStats>> {
        let (pipeline, mut servers) = self.bind_servers(ctx, config, front_ends)?;
        let first = servers.remove(0);
        let mut threads = Vec::with_capacity(servers.len());
        for (index, server) in servers.into_iter().enumerate() {
            let stop = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("front-end-{}", index + 1))
                .spawn(move || server.run(&stop));
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    shutdown.trigger();
                    return Err(Error::Thread(e));
                }
            }
        }
        let served = first.run(shutdown);
        if served.is_err() {
            // The others are not left serving alone.
            shutdown.trigger();
        }
        let mut all = vec![served];
        for thread in threads {
            all.push(
                thread
                    .join()
                    .unwrap_or_else(|_| Err(Error::Config("a front-end thread panicked".into()))),
            );
        }
        pipeline.stop();
        all.into_iter().collect()
    }
}
