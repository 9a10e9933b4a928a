//! Trust in the job store, with real `prime_serverd` processes and real SQLite files:
//! recovered jobs run at start, one store has one owner, idempotency keys belong to
//! their caller, credentials leave the disk, logs carry no job ids, and the self-test
//! tells a full disk.

mod daemons;

use daemons::*;
use prime_server::jobs::store::NewJob;
use prime_server::jobs::{JobStore, SqliteStore};
use std::path::Path;
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const READ: Duration = Duration::from_secs(60);

fn serverd_args(port: u16, db: &Path, more: &[&str]) -> Vec<String> {
    let db = db.display().to_string();
    let mut list = vec![tcp(port), "1".to_string(), "--jobs-db".to_string(), db];
    list.extend(more.iter().map(|s| s.to_string()));
    list.extend(args(&["--status-path", "/status"]));
    list
}

fn start_serverd(name: &str, port: u16, db: &Path, more: &[&str]) -> Daemon {
    Daemon::start_listening(name, SERVERD, &serverd_args(port, db, more))
}

/// The `/status` document's job figures.
fn job_figures(port: u16) -> serde_json::Value {
    let status = get(port, "/status", READ).expect("the status document");
    assert_eq!(status.status, 200, "{status:?}");
    status.json()["jobs"].clone()
}

#[test]
fn jobs_queued_before_a_start_run_without_any_request_to_the_job_service() {
    let db = scratch_path("recovered", "sqlite");
    {
        // Jobs a previous process accepted: two queued, one running when it stopped.
        let mut store = SqliteStore::open(&db).expect("a new store");
        store.begin().expect("begin");
        for (i, n) in [7u64, 11, 13].iter().enumerate() {
            let head = format!("GET /is_prime?possible_prime={n} HTTP/1.1\r\nHost: t\r\n\r\n");
            let id = format!("recoveredjob{i:010}");
            let record = store
                .insert(&NewJob {
                    id: &id,
                    head: head.as_bytes(),
                    body: b"",
                    idempotency_key: None,
                    fingerprint: b"",
                    now_ms: 1,
                    client: None,
                    not_before_ms: None,
                })
                .expect("insert");
            if i == 2 {
                store.start(record.number, 2).expect("start");
            }
        }
        store.commit().expect("commit");
    }
    let port = free_port();
    let mut serverd = start_serverd("serverd-recovered", port, &db, &[]);
    // Only the status document is read: it does not reach the job service, so nothing
    // but the start can have dispatched the jobs. (Without that, they would wait for
    // the first command or the minute's expiry timer.)
    let ended = poll_until(Duration::from_secs(40), || {
        let jobs = job_figures(port);
        (jobs["succeeded"] == 3).then_some(jobs)
    });
    assert!(
        ended.is_some(),
        "the recovered jobs did not run: {}",
        job_figures(port)
    );
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}

#[test]
fn a_second_process_on_one_job_database_exits_2_naming_the_first() {
    let db = scratch_path("owned", "sqlite");
    let port = free_port();
    let mut first = start_serverd("serverd-owner", port, &db, &[]);
    let (status, stderr) = run_to_exit(
        SERVERD,
        &serverd_args(free_port(), &db, &[]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("process {}", first.pid())),
        "the refusal does not name the first process: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The first runs on, and takes jobs.
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(7), &["Prefer: respond-async"])
        .expect("send");
    let location = location_of(&client.read_response(READ).expect("a 202"));
    assert_eq!(wait_until_ended(port, &location)["state"], "succeeded");
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    // Once the first has stopped, the file opens again.
    let mut again = start_serverd("serverd-next-owner", port, &db, &[]);
    again.signal("TERM");
    assert!(again.wait_exit(Duration::from_secs(30)).is_some());
}

/// Submits `GET target` as a job with these header lines on a new connection.
fn submit(port: u16, target: &str, headers: &[&str]) -> Response {
    let mut all = vec!["Prefer: respond-async"];
    all.extend_from_slice(headers);
    let mut client = Client::connect(port).expect("connect");
    client.send_request("GET", target, &all).expect("send");
    client.read_response(READ).expect("an answer")
}

#[test]
fn an_idempotency_key_is_its_callers_own() {
    let db = scratch_path("idempotency-callers", "sqlite");
    let port = free_port();
    let mut serverd = start_serverd("serverd-callers", port, &db, &[]);
    let key = "Idempotency-Key: order-1";
    let alice = "Authorization: Bearer alice-token";
    let bob = "Authorization: Bearer bob-token";
    let target = is_prime(97);

    let first = location_of(&submit(port, &target, &[key, alice]));
    // The same caller again: the same job.
    assert_eq!(location_of(&submit(port, &target, &[key, alice])), first);
    // Another caller, the same key and request: its own job, not Alice's.
    let other = location_of(&submit(port, &target, &[key, bob]));
    assert_ne!(other, first);
    // Cookies are credentials too, and no credentials is a caller of its own.
    let cookie = location_of(&submit(port, &target, &[key, "Cookie: session=alice"]));
    let anonymous = location_of(&submit(port, &target, &[key]));
    for location in [&first, &other, &cookie] {
        assert_ne!(&anonymous, location);
    }
    assert_ne!(cookie, first);
    // Another caller's key with another request is invisible: a new job, no 422...
    let probe = location_of(&submit(
        port,
        &is_prime(89),
        &[key, "Authorization: Bearer mallory"],
    ));
    assert!(![&first, &other, &cookie, &anonymous].contains(&&probe));
    // ... while the owner reusing it for another request is told so.
    let reused = submit(port, &is_prime(89), &[key, alice]);
    assert_eq!(reused.status, 422, "{reused:?}");

    // Keys stay scoped after a restart (the store keeps its own key).
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
    let mut serverd = start_serverd("serverd-callers-again", port, &db, &[]);
    assert_eq!(location_of(&submit(port, &target, &[key, alice])), first);
    assert_eq!(location_of(&submit(port, &target, &[key, bob])), other);
    for location in [&first, &other, &cookie, &anonymous, &probe] {
        assert_eq!(wait_until_ended(port, location)["state"], "succeeded");
    }
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}

/// Asserts that no file of the store holds `needle` anywhere in its raw bytes.
fn assert_not_on_disk(db: &Path, needle: &str, when: &str) {
    if let Some(file) = store_file_holding(db, needle) {
        panic!("{when}: {} still holds {needle:?}", file.display());
    }
}

#[test]
fn credentials_leave_every_file_of_the_store_when_their_job_ends() {
    use std::os::unix::fs::PermissionsExt;
    let db = scratch_path("scrubbed", "sqlite");
    let port = free_port();
    let nonce = format!("{:x}", std::process::id() as u64 * 7919 + 17);
    let token = format!("tok{nonce}secret");
    let authorization = format!("Authorization: Bearer {token}");
    // A cookie far larger than a page: it lives in overflow pages.
    let marker = format!("ck{nonce}");
    let cookie: String = (0..1000).map(|i| format!("{marker}{i:04}.")).collect();
    let cookie = format!("Cookie: big={cookie}");
    let mut first = start_serverd("serverd-scrub", port, &db, &[]);

    let ended = location_of(&submit(port, &is_prime(7), &[&authorization, &cookie]));
    assert_eq!(wait_until_ended(port, &ended)["state"], "succeeded");
    let cancelled = location_of(&submit(
        port,
        &is_prime(PRIME_2_61),
        &[&authorization, &cookie],
    ));
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("DELETE", &cancelled, &[])
        .expect("send");
    assert_eq!(client.read_response(READ).expect("an answer").status, 200);
    assert_eq!(wait_until_ended(port, &cancelled)["state"], "cancelled");
    assert_not_on_disk(&db, &token, "after the jobs ended");
    assert_not_on_disk(&db, &marker, "after the jobs ended");

    // A process that dies leaves its log; files others can read are made private.
    first.kill9();
    for file in store_files(&db) {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    let mut second = start_serverd("serverd-scrub-again", port, &db, &["--jobs-ttl", "1"]);
    let mut seen = 0;
    for file in store_files(&db) {
        if let Ok(metadata) = std::fs::metadata(&file) {
            seen += 1;
            let mode = metadata.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o} after a start", file.display());
        }
    }
    assert_eq!(seen, 3, "the database, its -wal and its -shm files");
    assert_not_on_disk(&db, &token, "after a restart");
    assert_not_on_disk(&db, &marker, "after a restart");

    // After expiry too.
    let gone = poll_until(Duration::from_secs(30), || {
        let answer = get(port, &ended, READ).expect("an answer");
        (answer.status == 410).then_some(())
    });
    assert!(gone.is_some(), "the job never expired");
    assert_not_on_disk(&db, &token, "after expiry");
    assert_not_on_disk(&db, &marker, "after expiry");
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(30)).is_some());
    assert_not_on_disk(&db, &token, "after a clean stop");
    assert_not_on_disk(&db, &marker, "after a clean stop");
}

/// Reads an event stream (`GET {location}/events`) on a connection of its own until its
/// final state event; returns whether the store's files still held `token` the moment
/// that event arrived.
fn stream_until_ended(port: u16, location: &str, db: &Path, token: &str) -> bool {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a timeout");
    let request = format!("GET {location}/events HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !contains(&seen, b"\"succeeded\"") {
        let n = stream.read(&mut chunk).expect("the event stream");
        assert!(n > 0, "the event stream closed before the end: {seen:?}");
        seen.extend_from_slice(&chunk[..n]);
    }
    on_disk(db, token)
}

/// Whether any file of the store holds `needle`.
fn on_disk(db: &Path, needle: &str) -> bool {
    store_file_holding(db, needle).is_some()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_one_hears_of_a_jobs_end_before_its_credentials_left_the_disk() {
    // The scrub that takes an ended job's request off the disk does not follow every
    // commit: a status read, a long-poll and an event stream that tell of the end wait
    // for it. Other submits keep the job service committing meanwhile, so scrubs are
    // put off; each reader looks at the files the moment it hears of the end.
    let db = scratch_path("told-after-scrub", "sqlite");
    let port = free_port();
    let mut serverd = start_serverd("serverd-told-after-scrub", port, &db, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut client = Client::connect(port).expect("connect");
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let accepted = client
                    .send_request("GET", &is_prime(7), &["Prefer: respond-async"])
                    .and_then(|()| client.read_response(READ))
                    .expect("an answer");
                assert_eq!(accepted.status, 202, "{accepted:?}");
            }
        })
    };
    let nonce = format!("{:x}", std::process::id() as u64 * 7919 + 23);
    for n in 0..6 {
        let token = format!("tok{nonce}n{n}secret");
        let authorization = format!("Authorization: Bearer {token}");
        // A prime whose trial division takes a moment (10^15 + 37: about 10^7
        // divisions), so that the readers below are waiting when the job ends.
        let location = location_of(&submit(
            port,
            &is_prime(1_000_000_000_000_037),
            &[&authorization],
        ));
        let long_poll = {
            let (location, db, token) = (location.clone(), db.clone(), token.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(port).expect("connect");
                loop {
                    let answer = client
                        .get(&format!("{location}?wait=30"), READ)
                        .expect("a long-poll's answer");
                    if answer.status == 303 {
                        return on_disk(&db, &token);
                    }
                    assert_eq!(answer.status, 200, "{answer:?}");
                }
            })
        };
        let events = {
            let (location, db, token) = (location.clone(), db.clone(), token.clone());
            std::thread::spawn(move || stream_until_ended(port, &location, &db, &token))
        };
        let mut reader = Client::connect(port).expect("connect");
        let mut reads = 0;
        loop {
            let answer = reader.get(&location, READ).expect("a status");
            if answer.status == 303 {
                assert!(
                    !on_disk(&db, &token),
                    "job {n}: a status read told of the end while its credentials were on disk"
                );
                break;
            }
            assert_eq!(answer.status, 200, "{answer:?}");
            reads += 1;
            assert!(reads < 100_000, "job {n} never ended");
        }
        assert!(
            !long_poll.join().expect("the long-poll"),
            "job {n}: a long-poll told of the end while its credentials were on disk"
        );
        assert!(
            !events.join().expect("the event stream"),
            "job {n}: an event stream told of the end while its credentials were on disk"
        );
        assert_eq!(
            get(port, &format!("{location}/result"), READ)
                .expect("the result")
                .status,
            200
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("the load");
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}

/// The tag a log line carries for a job id: `~` and the first 8 hex digits of the id's
/// SHA-256.
fn tag_of(location: &str) -> String {
    let id = location.trim_start_matches("/jobs/");
    prime_server::jobs::tag::job_tag(id.as_bytes()).to_string()
}

#[test]
fn logs_carry_a_tag_of_a_job_id_never_the_id() {
    let db = scratch_path("log-tags", "sqlite");
    let port = free_port();
    let mut args = serverd_args(port, &db, &[]);
    args.retain(|a| a != "--status-path" && a != "/status");
    let mut serverd = Daemon::start_with_log_level("serverd-tags", SERVERD, &args, "debug");
    assert!(
        serverd.wait_for_log("listening for Http on", Duration::from_secs(60)),
        "{}",
        serverd.stderr()
    );
    let ended = location_of(&submit(port, &is_prime(7), &["Idempotency-Key: k"]));
    assert_eq!(
        location_of(&submit(port, &is_prime(7), &["Idempotency-Key: k"])),
        ended
    );
    assert_eq!(wait_until_ended(port, &ended)["state"], "succeeded");
    let result = get(port, &format!("{ended}/result"), READ).expect("a result");
    assert_eq!(result.status, 200, "{result:?}");
    let cancelled = location_of(&submit(port, &is_prime(PRIME_2_61), &[]));
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("DELETE", &cancelled, &[])
        .expect("send");
    assert_eq!(client.read_response(READ).expect("an answer").status, 200);
    let events = get(port, &format!("{cancelled}/events"), READ).expect("events");
    assert_eq!(events.status, 200, "{events:?}");
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());

    let log = serverd.stderr();
    for location in [&ended, &cancelled] {
        let id = location.trim_start_matches("/jobs/");
        assert!(!log.contains(id), "the log holds the job id {id}:\n{log}");
        let tag = tag_of(location);
        assert!(
            log.lines()
                .any(|l| l.contains(" access ") && l.contains(&format!("/jobs/{tag}"))),
            "no access line names {tag}:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("cancelled") && l.contains(&tag_of(&cancelled))),
        "no service line names the cancelled job's tag:\n{log}"
    );
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (mount(8)'s notation) or says why it cannot.
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = scratch_path("small-disk", "dir");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount(8) cannot run: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(SmallDisk { dir })
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.dir.join("filler");
        let mut file = std::fs::File::create(&filler).expect("a filler file");
        let block = vec![0x5Au8; 64 * 1024];
        for _ in 0..100_000 {
            match file.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // The last bytes, one at a time, so nothing is left.
        for _ in 0..64 * 1024 {
            if !matches!(file.write(&[0x5A]), Ok(1)) {
                break;
            }
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn the_selftest_reports_a_store_whose_disk_is_full() {
    let disk = match SmallDisk::mount("4m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: a small tmpfs cannot be mounted here: {why}");
            return;
        }
    };
    let db = disk.dir.join("jobs.sqlite");
    let port = free_port();
    let mut serverd = start_serverd("serverd-full-disk", port, &db, &[]);
    let selftest = || get(port, "/status?selftest=1", READ).expect("a self-test");
    let store_part = |answer: &Response| {
        answer.json()["parts"]
            .as_array()
            .and_then(|parts| parts.iter().find(|p| p["part"] == "store").cloned())
            .expect("the store's part")
    };
    let healthy = selftest();
    assert_eq!(healthy.status, 200, "{healthy:?}");
    let ended = location_of(&submit(port, &is_prime(7), &[]));
    assert_eq!(wait_until_ended(port, &ended)["state"], "succeeded");

    let filler = disk.fill();
    // Submits until one cannot be stored (a few may fit in space SQLite holds).
    let refused = (0..200).find_map(|i| {
        let answer = submit(port, &is_prime(7 + 2 * i), &[]);
        (answer.status == 503).then_some(answer)
    });
    assert!(refused.is_some(), "every submit was stored on a full disk");
    let failed = selftest();
    assert_eq!(failed.status, 503, "{failed:?}");
    let part = store_part(&failed);
    assert_eq!(part["ok"], false, "{part}");
    let error = part["error"].as_str().unwrap_or_default();
    assert!(error.contains("full"), "{part}");

    // Space again: the next write goes through, and the store is healthy again.
    std::fs::remove_file(&filler).expect("remove the filler");
    let again = location_of(&submit(port, &is_prime(7), &[]));
    assert_eq!(wait_until_ended(port, &again)["state"], "succeeded");
    let healthy = selftest();
    assert_eq!(healthy.status, 200, "{healthy:?}");
    assert_eq!(store_part(&healthy)["ok"], true);
    serverd.signal("TERM");
    assert!(serverd.wait_exit(Duration::from_secs(30)).is_some());
}
