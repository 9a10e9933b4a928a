//! Subscribers that are URLs: the webhook registry of channels.
//!
//! The control listener's `PUT /subscriptions/{name}` (`{"channel", "url", "ttl"}`)
//! registers a URL for a channel for `ttl` seconds (a PUT again renews it, or moves it
//! to another channel or URL); `DELETE` removes it, `GET` shows it. Every message of
//! the channel is then POSTed to the URL by the job webhooks' delivery threads
//! ([`crate::jobs::webhooks`]): the same Standard Webhooks signature (the
//! `--webhook-secret`), the same SSRF guard ([`crate::jobs::ssrf`], checked at the PUT
//! and again before each attempt), the same retries with backoff and per-destination
//! queues. The body is the message as GRIP's publish item
//! (`{"channel","id","prev-id","formats":{...}}`, see
//! [`Item::to_json`]), `content-type: application/json`; `webhook-id` is
//! `{name}.{n}`, the subscription's name and the message's number for it, the same
//! for every attempt of one message.
//!
//! A subscription's messages are delivered one at a time, in order: a message that
//! fails is retried before the next is sent, and at most [`MAX_WAITING`] wait behind
//! it (past that the oldest waiting is dropped, with a warning). A receiver that
//! answers `410 Gone`, or whose deliveries keep failing for `--webhook-give-up`
//! (counted from the first failure since its last success), loses its subscription.
//! One whose TTL lapses is dropped. Both are found by a timer set on the earliest
//! deadline (a heap of deadlines), never by polling each subscription.
//!
//! The registry lives on a thread of its own in the front end whose control listener
//! took the PUT. With a job store (`--jobs-db`), its subscriptions are also kept in
//! that SQLite file (table `channel_subscriptions`: name, channel, URL, TTL and the
//! wall-clock time it lapses), written at each PUT and removal and read back at
//! start, so they survive a restart; messages waiting for delivery are not kept.
//! Without one, the registry is in memory only. The front end subscribes on the bus to
//! every channel a subscription is on (so a message published on any front end reaches
//! it), and hands every message it receives to the registry while it has any
//! subscription.

use crate::jobs::ssrf::CallbackError;
use crate::jobs::webhooks::{self, Outcome, Pool, Subject, Task, WebhookConfig};
use crate::pipeline::channel::Item;
use crossbeam_channel::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages waiting behind the one in delivery, per subscription; past it the oldest
/// waiting is dropped.
pub const MAX_WAITING: usize = 1000;
/// The longest TTL a subscription may ask for, in seconds (30 days).
pub const MAX_TTL_SECS: f64 = 30.0 * 86400.0;

/// A subscription as `GET` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct View {
    /// The subscription's name (the last segment of its path).
    pub name: String,
    /// The channel.
    pub channel: String,
    /// Where messages are POSTed.
    pub url: String,
    /// The TTL it was given at its last PUT, in seconds.
    pub ttl: f64,
    /// Seconds until it lapses.
    pub expires_in: f64,
    /// Messages waiting, the one in delivery included.
    pub pending: usize,
    /// Failed attempts since the last delivered message.
    pub failures: u32,
}

/// What the control listener asks of the registry.
pub(super) enum Command {
    /// Create or renew; answers whether it was created.
    Put {
        name: String,
        channel: String,
        url: String,
        ttl: Duration,
        reply: Sender<(bool, View)>,
    },
    /// Remove; answers whether it existed.
    Delete { name: String, reply: Sender<bool> },
    /// Show.
    Get {
        name: String,
        reply: Sender<Option<View>>,
    },
    /// A message received by the front end.
    Message(Arc<Item>),
    /// End the thread.
    Stop,
}

/// The handle the front end and the control listener keep.
#[derive(Clone)]
pub(crate) struct Registry {
    commands: Sender<Command>,
    /// Subscriptions registered, for the front end to know whether to hand messages.
    count: Arc<AtomicUsize>,
    /// The webhook settings (the control listener checks URLs with their policy).
    pub(crate) config: Arc<WebhookConfig>,
}

/// Why the registry did not answer.
#[derive(Debug)]
pub(crate) struct Stopped;

impl Registry {
    /// Whether any subscription is registered.
    pub(super) fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// How many subscriptions are registered.
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Hands a message to the registry (never blocks).
    pub(super) fn offer(&self, item: &Arc<Item>) {
        let _ = self.commands.send(Command::Message(item.clone()));
    }

    /// Checks `url` with the SSRF guard (resolving its host: call off the front end's
    /// loop).
    pub(crate) fn check(&self, url: &str) -> Result<(), CallbackError> {
        self.config.policy.check(url).map(|_| ())
    }

    /// Creates or renews a subscription; true when it was created.
    pub(crate) fn put(
        &self,
        name: &str,
        channel: &str,
        url: &str,
        ttl: Duration,
    ) -> Result<(bool, View), Stopped> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask(
            Command::Put {
                name: name.into(),
                channel: channel.into(),
                url: url.into(),
                ttl,
                reply,
            },
            &answer,
        )
    }

    /// Removes a subscription; true when it existed.
    pub(crate) fn delete(&self, name: &str) -> Result<bool, Stopped> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask(
            Command::Delete {
                name: name.into(),
                reply,
            },
            &answer,
        )
    }

    /// A subscription's view, if it exists.
    pub(crate) fn get(&self, name: &str) -> Result<Option<View>, Stopped> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask(
            Command::Get {
                name: name.into(),
                reply,
            },
            &answer,
        )
    }

    fn ask<R>(&self, command: Command, answer: &Receiver<R>) -> Result<R, Stopped> {
        self.commands.send(command).map_err(|_| Stopped)?;
        answer
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| Stopped)
    }
}

/// The registry's thread; dropping it stops the thread (and its delivery threads).
pub(super) struct Service {
    registry: Registry,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Starts the registry's thread and its delivery threads, taking back the
    /// subscriptions kept in `jobs_db` (the job store's SQLite file) if one is given.
    /// Bus subscriptions are asked of the front end as `["subscribe" | "unsubscribe", channel]` on its
    /// inbox (`inbox`, an in-process endpoint). Errors: a thread or socket that cannot
    /// be made.
    pub(super) fn start(
        ctx: &zmq::Context,
        config: WebhookConfig,
        inbox: &str,
        jobs_db: Option<&std::path::Path>,
        job_events: Option<crate::jobs::service::EventSwitch>,
    ) -> crate::base::error::Result<Service> {
        let io =
            |e: std::io::Error| crate::base::error::Error::Config(format!("subscriptions: {e}"));
        let durable = match jobs_db {
            Some(path) => Some(Durable::open(path).map_err(|e| {
                crate::base::error::Error::Config(format!(
                    "subscriptions: the job store's file: {e}"
                ))
            })?),
            None => None,
        };
        let pool = Pool::<()>::start_for(&config, Subject::Subscription).map_err(io)?;
        let front = crate::base::sockets::socket(ctx, zmq::PUSH)?;
        crate::base::sockets::connect(&front, inbox)?;
        let (commands, receiver) = crossbeam_channel::unbounded();
        let count = Arc::new(AtomicUsize::new(0));
        let config = Arc::new(config);
        let registry = Registry {
            commands,
            count: count.clone(),
            config: config.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("subscriptions".into())
            .spawn(move || {
                let mut state = State {
                    config,
                    pool,
                    front,
                    count,
                    subs: HashMap::new(),
                    channels: HashMap::new(),
                    in_flight: HashMap::new(),
                    timers: BinaryHeap::new(),
                    next_number: 0,
                    durable,
                    job_events,
                };
                state.restore();
                state.run(&receiver);
            })
            .map_err(io)?;
        Ok(Service {
            registry,
            thread: Some(thread),
        })
    }

    /// The handle for the front end and the control listener.
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.registry.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A message waiting for delivery.
struct Pending {
    webhook_id: String,
    payload: Vec<u8>,
}

/// One subscription.
struct Subscription {
    channel: String,
    url: String,
    ttl: Duration,
    expires: Instant,
    /// Messages numbered so far (for `webhook-id`).
    sent: u64,
    queue: VecDeque<Pending>,
    /// The attempt in progress (its number), if one is.
    in_flight: Option<u64>,
    /// When the head message is tried again, if it failed.
    retry_at: Option<Instant>,
    failures: u32,
    failing_since: Option<Instant>,
}

/// The registry's thread's state.
struct State {
    config: Arc<WebhookConfig>,
    pool: Pool<()>,
    /// PUSH to the front end's inbox (bus subscriptions).
    front: zmq::Socket,
    count: Arc<AtomicUsize>,
    subs: HashMap<String, Subscription>,
    /// Subscriptions per channel.
    channels: HashMap<String, usize>,
    /// Attempts in progress: their number and subscription.
    in_flight: HashMap<u64, String>,
    /// Deadlines (TTLs and retries), earliest first; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    next_number: u64,
    /// The job store's file, when subscriptions are kept there.
    durable: Option<Durable>,
    /// The job service's switch for unwatched jobs' events, turned on by a subscription
    /// to a job's channel before it is registered.
    job_events: Option<crate::jobs::service::EventSwitch>,
}

impl State {
    /// Takes back the subscriptions kept in the job store's file that have not lapsed.
    fn restore(&mut self) {
        // Taken out while the subscriptions are put back, so they are not written anew
        // with a whole TTL.
        let Some(durable) = self.durable.take() else {
            return;
        };
        match durable.load() {
            Ok(kept) => {
                let now_ms = now_ms();
                for (name, channel, url, ttl, expires_ms) in kept {
                    let left = u64::try_from(expires_ms - now_ms).unwrap_or(0);
                    self.put(name.clone(), channel, url, ttl);
                    if let Some(sub) = self.subs.get_mut(&name) {
                        sub.expires = Instant::now() + Duration::from_millis(left);
                        self.timers.push(Reverse((sub.expires, name)));
                    }
                }
                if !self.subs.is_empty() {
                    log::info!(
                        "subscriptions: {} taken back from the job store",
                        self.subs.len()
                    );
                }
            }
            Err(e) => log::error!("subscriptions: cannot read the kept subscriptions: {e}"),
        }
        self.durable = Some(durable);
    }

    fn run(&mut self, commands: &Receiver<Command>) {
        let outcomes = self.pool.outcomes.clone();
        loop {
            let timer = match self.timers.peek() {
                Some(Reverse((at, _))) => crossbeam_channel::at(*at),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(commands) -> command => match command {
                    Ok(Command::Stop) | Err(_) => return,
                    Ok(command) => self.command(command),
                },
                recv(outcomes) -> outcome => {
                    if let Ok(Outcome::Attempted { number, attempt, retry_after }) = outcome {
                        self.attempted(number, attempt.status, retry_after);
                    }
                },
                recv(timer) -> _ => self.timers_due(Instant::now()),
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Put {
                name,
                channel,
                url,
                ttl,
                reply,
            } => {
                let _ = reply.send(self.put(name, channel, url, ttl));
            }
            Command::Delete { name, reply } => {
                let existed = self.subs.contains_key(&name);
                self.remove(&name);
                let _ = reply.send(existed);
            }
            Command::Get { name, reply } => {
                let _ = reply.send(self.subs.get(&name).map(|s| view(&name, s)));
            }
            Command::Message(item) => self.message(&item),
            Command::Stop => {}
        }
    }

    fn put(&mut self, name: String, channel: String, url: String, ttl: Duration) -> (bool, View) {
        let expires = Instant::now() + ttl;
        let created = match self.subs.get_mut(&name) {
            Some(sub) => {
                sub.url = url;
                sub.ttl = ttl;
                sub.expires = expires;
                let moved = sub.channel != channel;
                let old = std::mem::replace(&mut sub.channel, channel.clone());
                if moved {
                    self.leave_channel(&old);
                    self.join_channel(&channel);
                }
                false
            }
            None => {
                self.join_channel(&channel);
                self.subs.insert(
                    name.clone(),
                    Subscription {
                        channel,
                        url,
                        ttl,
                        expires,
                        sent: 0,
                        queue: VecDeque::new(),
                        in_flight: None,
                        retry_at: None,
                        failures: 0,
                        failing_since: None,
                    },
                );
                self.count.store(self.subs.len(), Ordering::Relaxed);
                true
            }
        };
        self.timers.push(Reverse((expires, name.clone())));
        if let (Some(durable), Some(sub)) = (&self.durable, self.subs.get(&name)) {
            if let Err(e) = durable.save(&name, sub) {
                log::error!("subscriptions: cannot keep subscription {name}: {e}");
            }
        }
        let shown = View {
            name,
            channel: String::new(),
            url: String::new(),
            ttl: ttl.as_secs_f64(),
            expires_in: ttl.as_secs_f64(),
            pending: 0,
            failures: 0,
        };
        match self.subs.get(&shown.name) {
            Some(sub) => (created, view(&shown.name, sub)),
            None => (created, shown),
        }
    }

    fn join_channel(&mut self, channel: &str) {
        if crate::pipeline::channel::reserved_channel(channel) {
            if let Some(switch) = &self.job_events {
                switch.turn_on();
            }
        }
        let n = self.channels.entry(channel.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            self.tell_front("subscribe", channel);
        }
    }

    fn leave_channel(&mut self, channel: &str) {
        if let Some(n) = self.channels.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                self.channels.remove(channel);
                self.tell_front("unsubscribe", channel);
            }
        }
    }

    fn tell_front(&self, verb: &str, channel: &str) {
        let frames = [zmq::Message::from(verb), zmq::Message::from(channel)];
        if let Err(e) = crate::base::sockets::send_frames(&self.front, frames, zmq::DONTWAIT) {
            log::warn!("subscriptions: the front end did not take a bus {verb}: {e}");
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(durable) = &self.durable {
            if let Err(e) = durable.forget(name) {
                log::error!("subscriptions: cannot forget subscription {name}: {e}");
            }
        }
        if let Some(sub) = self.subs.remove(name) {
            self.leave_channel(&sub.channel);
            if let Some(number) = sub.in_flight {
                self.in_flight.remove(&number);
            }
        }
        self.count.store(self.subs.len(), Ordering::Relaxed);
    }

    /// A message received: queued on every subscription of its channel.
    fn message(&mut self, item: &Item) {
        if !self.channels.contains_key(&item.channel) {
            return;
        }
        let payload = item.to_json();
        let names: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.channel == item.channel)
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            let Some(sub) = self.subs.get_mut(&name) else {
                continue;
            };
            sub.sent += 1;
            if sub.queue.len() > MAX_WAITING {
                // The head is in delivery or waiting for its retry: drop the next.
                sub.queue.remove(1);
                log::warn!("subscription {name}: more than {MAX_WAITING} messages waiting; dropped the oldest");
            }
            sub.queue.push_back(Pending {
                webhook_id: format!("{name}.{}", sub.sent),
                payload: payload.clone(),
            });
            self.send_head(&name);
        }
    }

    /// Starts delivering the subscription's first message, unless one is in progress
    /// or waiting for its retry.
    fn send_head(&mut self, name: &str) {
        let Some(sub) = self.subs.get_mut(name) else {
            return;
        };
        if sub.in_flight.is_some() || sub.retry_at.is_some() {
            return;
        }
        let Some(head) = sub.queue.front() else {
            return;
        };
        self.next_number += 1;
        let number = self.next_number;
        sub.in_flight = Some(number);
        self.in_flight.insert(number, name.to_string());
        self.pool.send(Task::Deliver {
            number,
            job_id: head.webhook_id.clone(),
            url: sub.url.clone(),
            payload: head.payload.clone(),
        });
    }

    fn attempted(&mut self, number: u64, status: Option<u16>, retry_after: Option<Duration>) {
        let Some(name) = self.in_flight.remove(&number) else {
            return;
        };
        let now = Instant::now();
        let give_up = self.config.give_up;
        let Some(sub) = self.subs.get_mut(&name) else {
            return;
        };
        sub.in_flight = None;
        match status {
            Some(200..=299) => {
                sub.queue.pop_front();
                sub.failures = 0;
                sub.failing_since = None;
                self.send_head(&name);
            }
            Some(410) => {
                log::info!("subscription {name}: the receiver answered 410 Gone; removed");
                self.remove(&name);
            }
            _ => {
                sub.failures += 1;
                let since = *sub.failing_since.get_or_insert(now);
                if now.duration_since(since) >= give_up {
                    log::warn!(
                        "subscription {name}: deliveries failed for {:?}; removed",
                        give_up
                    );
                    self.remove(&name);
                    return;
                }
                let wait = self
                    .config
                    .backoff(sub.failures, webhooks::jitter())
                    .max(retry_after.unwrap_or_default());
                let at = now + wait;
                sub.retry_at = Some(at);
                self.timers.push(Reverse((at, name)));
            }
        }
    }

    /// Lapsed TTLs and retries due.
    fn timers_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                return;
            }
            let Some(Reverse((_, name))) = self.timers.pop() else {
                return;
            };
            let Some(sub) = self.subs.get_mut(&name) else {
                continue;
            };
            if sub.expires <= now {
                log::info!("subscription {name}: its TTL lapsed; removed");
                self.remove(&name);
            } else if sub.retry_at.is_some_and(|at| at <= now) {
                sub.retry_at = None;
                self.send_head(&name);
            }
        }
    }
}

fn view(name: &str, sub: &Subscription) -> View {
    View {
        name: name.to_string(),
        channel: sub.channel.clone(),
        url: sub.url.clone(),
        ttl: sub.ttl.as_secs_f64(),
        expires_in: sub
            .expires
            .saturating_duration_since(Instant::now())
            .as_secs_f64(),
        pending: sub.queue.len(),
        failures: sub.failures,
    }
}

/// The subscriptions' table in the job store's SQLite file (a connection of its own,
/// beside the job service's: the file is in WAL mode).
struct Durable {
    db: rusqlite::Connection,
}

/// A kept subscription: name, channel, URL, TTL, and when it lapses (milliseconds since
/// the Unix epoch).
type Kept = (String, String, String, Duration, i64);

impl Durable {
    /// Opens the file the job store made, and the table if it is new.
    fn open(path: &std::path::Path) -> rusqlite::Result<Durable> {
        let db = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS channel_subscriptions (
                name TEXT PRIMARY KEY,
                channel TEXT NOT NULL,
                url TEXT NOT NULL,
                ttl_ms INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL
            )",
        )?;
        Ok(Durable { db })
    }

    /// The subscriptions that have not lapsed (the others are deleted).
    fn load(&self) -> rusqlite::Result<Vec<Kept>> {
        let now = now_ms();
        self.db.execute(
            "DELETE FROM channel_subscriptions WHERE expires_ms <= ?1",
            [now],
        )?;
        let mut query = self
            .db
            .prepare("SELECT name, channel, url, ttl_ms, expires_ms FROM channel_subscriptions")?;
        let rows = query.query_map([], |row| {
            let ttl_ms: i64 = row.get(3)?;
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
                row.get(4)?,
            ))
        })?;
        rows.collect()
    }

    /// Writes a subscription as it is now.
    fn save(&self, name: &str, sub: &Subscription) -> rusqlite::Result<()> {
        let left = sub.expires.saturating_duration_since(Instant::now());
        let expires_ms = now_ms() + i64::try_from(left.as_millis()).unwrap_or(i64::MAX / 2);
        self.db.execute(
            "INSERT OR REPLACE INTO channel_subscriptions (name, channel, url, ttl_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                name,
                sub.channel,
                sub.url,
                i64::try_from(sub.ttl.as_millis()).unwrap_or(i64::MAX),
                expires_ms
            ],
        )?;
        Ok(())
    }

    /// Deletes a subscription.
    fn forget(&self, name: &str) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM channel_subscriptions WHERE name = ?1", [name])?;
        Ok(())
    }
}

/// The wall-clock time, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
