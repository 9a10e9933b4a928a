//! A PostgreSQL server of a test's own: `initdb` into a temporary directory, `postgres`
//! listening only on a Unix socket in it (`listen_addresses=''`), as the unprivileged
//! `postgres` user when the tests run as root; stopped (fast shutdown) and its
//! directory removed when dropped. A machine without PostgreSQL fails the test with
//! how to install it.
//!
//! Also what lets one suite run against both job stores: [`Store`], [`Db`] and
//! `on_both_stores!`.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the server may take to start or stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// The server's binaries: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian does not put `initdb` on `PATH`).
fn bindir() -> PathBuf {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_config.filter(|d| d.join("initdb").is_file()) {
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL is not installed (no initdb from `pg_config --bindir` nor in \
             /usr/lib/postgresql/*/bin): `apt-get install postgresql` \
             (.ci/run installs the packages listed in .ci/apt-packages)"
        ),
    }
}

/// The `postgres` user's ids, when the tests run as root (PostgreSQL refuses to run as
/// root).
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .unwrap_or_else(|| {
            panic!(
                "running as root, and there is no `postgres` user to run PostgreSQL as: \
                 `apt-get install postgresql` creates it"
            )
        });
    let fields: Vec<&str> = line.split(':').collect();
    Some((
        fields[2].parse().expect("a uid"),
        fields[3].parse().expect("a gid"),
    ))
}

/// A command that runs `program` as the `postgres` user when we are root.
fn as_server_user(program: &Path, ids: Option<(u32, u32)>) -> Command {
    match ids {
        Some((uid, gid)) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A running PostgreSQL server of this test's own.
pub struct Postgres {
    dir: PathBuf,
    server: Child,
    /// The server's binaries.
    bin: PathBuf,
    /// The `postgres` user's ids, when we are root.
    ids: Option<(u32, u32)>,
}

impl Postgres {
    /// Makes a cluster in a new temporary directory and starts its server; returns once
    /// it takes connections.
    pub fn start() -> Postgres {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let bin = bindir();
        let ids = unprivileged();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("prime-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod the PostgreSQL directory");
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("give the PostgreSQL directory to the postgres user");
        }
        let data = dir.join("data");
        let initdb = as_server_user(&bin.join("initdb"), ids)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "prime",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let server = spawn_server(&bin, ids, &dir);
        let postgres = Postgres {
            dir,
            server,
            bin,
            ids,
        };
        postgres.wait_ready();
        postgres
    }

    /// Stops the server (a fast shutdown: its clients' connections are cut) and starts
    /// it again on the same data; returns once it takes connections.
    pub fn restart(&mut self) {
        self.stop();
        self.server = spawn_server(&self.bin, self.ids, &self.dir);
        self.wait_ready();
    }

    fn stop(&mut self) {
        // SIGINT: a fast shutdown (clients are cut, the server exits cleanly).
        // SAFETY: kill with our own child's pid.
        unsafe {
            libc::kill(self.server.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Starts `postgres` on the cluster in `dir` (its data in `dir/data`, its socket and
/// log in `dir`).
fn spawn_server(bin: &Path, ids: Option<(u32, u32)>, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("open the server log");
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid))
            .expect("chown the server log");
    }
    as_server_user(&bin.join("postgres"), ids)
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=",
            // A test's server: nothing it holds must survive the machine.
            "-c",
            "fsync=off",
            "-c",
            "max_connections=40",
            "-c",
            "shared_buffers=16MB",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log"))
        .stderr(log)
        .spawn()
        .expect("start postgres")
}

impl Postgres {
    /// The URL of the server's `postgres` database, over its Unix socket.
    pub fn url(&self) -> String {
        let host = self.dir.display().to_string().replace('/', "%2F");
        format!("postgresql://prime@{host}/postgres")
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` on a connection of its own; returns the first column of each row as
    /// text.
    pub fn query(&self, sql: &str) -> Vec<Option<String>> {
        let mut client = postgres::Client::connect(&self.url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test's PostgreSQL: {e}"));
        let mut values = Vec::new();
        for message in client.simple_query(sql).expect("a query") {
            if let postgres::SimpleQueryMessage::Row(row) = message {
                values.push(row.get(0).map(str::to_string));
            }
        }
        values
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if postgres::Client::connect(&self.url(), postgres::NoTls).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which job store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A SQLite file (the embedded default).
    Sqlite,
    /// A PostgreSQL server of the test's own.
    Postgres,
}

/// A test's job database: a SQLite file, or a PostgreSQL server of its own (stopped
/// when dropped: bind it before the servers that use it, so it outlives them).
pub enum Db {
    /// The file.
    Sqlite(PathBuf),
    /// The server.
    Postgres(Postgres),
}

impl Db {
    /// A new database of the `store` kind; `sqlite` is the file a SQLite store uses.
    pub fn new(store: Store, sqlite: PathBuf) -> Db {
        match store {
            Store::Sqlite => Db::Sqlite(sqlite),
            Store::Postgres => Db::Postgres(Postgres::start()),
        }
    }

    /// What `--jobs-db` (and `JobsConfig::new`) takes: the file, or the URL.
    pub fn name(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(server) => server.url(),
        }
    }
}

/// Runs each named test (a `fn(Store)` at the test file's root, where `Store` is in
/// scope) against both stores: as `on_sqlite::NAME` and `on_postgres::NAME`.
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Store::Sqlite)
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                super::$name(super::Store::Postgres)
            })*
        }
    };
}
