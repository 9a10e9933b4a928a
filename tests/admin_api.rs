//! The job admin API on the control listener, over real sockets with a real SQLite
//! store and a real PostgreSQL one (`on_sqlite::NAME`, `on_postgres::NAME`): the token, listings with filters and paging (and no credentials), the feed
//! of changes as an answer, a long-poll and an event stream (with catch-up after a
//! reconnect), the retry of a failed job, and cancelling by filter.
//!
//! Every wait is bounded; nothing asserts on elapsed time.

#[path = "http_common/mod.rs"]
mod common;
mod daemons;
#[macro_use]
#[path = "postgres/mod.rs"]
mod pg;

use common::{request, Client, HttpResponse, TestServer, WAIT};
use pg::{Db, Store};
use prime_server::http::Response;
use prime_server::jobs::JobsConfig;
use prime_server::server::{ChannelsConfig, ControlConfig};
use prime_server::stages::{HttpJob, Next};
use prime_server::Pipeline;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

on_both_stores!(
    listings_filter_and_page_every_job_once_without_credentials,
    the_changes_feed_as_answer_long_poll_and_stream_misses_and_repeats_nothing,
    a_failed_job_retried_ends_succeeded,
    cancel_by_filter_cancels_only_the_matching_jobs,
);

const TOKEN: &str = "admin-secret-token";

/// A server whose `work` stage answers `/fail` 500, `/flaky` 500 the first time and
/// 200 after, anything else 200; jobs kept in a fresh store; the control listener with
/// the admin token (or none).
struct Admin {
    server: TestServer,
    control: SocketAddr,
    /// Declared after the server, so dropped after it.
    db: Db,
}

impl Admin {
    fn start(name: &str, token: Option<&str>) -> Admin {
        Self::start_on(Store::Sqlite, name, token)
    }

    fn start_on(store: Store, name: &str, token: Option<&str>) -> Admin {
        let flaky = Arc::new(AtomicUsize::new(0));
        let pipeline = Pipeline::new().http_stage("work", 2, move |job: &mut HttpJob| {
            let path = job.request()?.path.clone();
            let status = match path.as_str() {
                "/fail" => 500,
                "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => 500,
                _ => 200,
            };
            Ok(Next::respond(Response::new(status).body("done")))
        });
        let dir = common::scratch_dir("admin_api", name);
        let control = daemons::free_port();
        let mut config = common::http_config();
        let db = Db::new(store, dir.join("jobs.sqlite"));
        config.jobs = Some(JobsConfig::new(db.name()));
        config.channels = ChannelsConfig {
            control: Some(ControlConfig {
                listen: daemons::tcp(control),
                allow_remote: false,
                publish_key: None,
                admin_token: token.map(|t| t.as_bytes().to_vec()),
            }),
            ..ChannelsConfig::default()
        };
        let server = TestServer::start(pipeline, config);
        Admin {
            server,
            control: ([127, 0, 0, 1], control).into(),
            db,
        }
    }

    /// A call of the admin API with the right token.
    fn call(&self, method: &str, target: &str) -> HttpResponse {
        let auth = format!("Authorization: Bearer {TOKEN}");
        request(
            &mut Client::connect(self.control),
            method,
            target,
            &[&auth, "Content-Length: 0"],
        )
    }

    /// Submits `GET path` as a job with these fields; returns its id.
    fn submit(&self, path: &str, fields: &[&str]) -> String {
        let mut all = vec!["Prefer: respond-async"];
        all.extend_from_slice(fields);
        let response = request(&mut self.server.connect(), "GET", path, &all);
        assert_eq!(response.status, 202, "{response:?}");
        response.json()["id"].as_str().expect("an id").to_string()
    }

    /// Waits until no job is queued or running.
    fn wait_settled(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let page = self.call("GET", "/jobs?state=queued,running,scheduled");
            assert_eq!(page.status, 200, "{page:?}");
            if page.json()["jobs"].as_array().is_some_and(|j| j.is_empty()) {
                return;
            }
            assert!(Instant::now() < deadline, "jobs never ended: {page:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every change since `since`, by following `last_seq`.
    fn all_changes(&self, since: u64) -> Vec<(u64, String, String)> {
        let mut seen = Vec::new();
        let mut since = since;
        for _ in 0..100 {
            let page = self.call("GET", &format!("/jobs/changes?since={since}&limit=5"));
            assert_eq!(page.status, 200, "{page:?}");
            let document = page.json();
            let changes = document["changes"].as_array().expect("changes").clone();
            if changes.is_empty() {
                assert_eq!(document["last_seq"].as_u64(), Some(since));
                return seen;
            }
            seen.extend(changes.iter().map(triple));
            since = document["last_seq"].as_u64().expect("last_seq");
        }
        panic!("the feed never ended");
    }
}

fn triple(change: &serde_json::Value) -> (u64, String, String) {
    (
        change["seq"].as_u64().expect("seq"),
        change["id"].as_str().expect("id").to_string(),
        change["state"].as_str().expect("state").to_string(),
    )
}

fn ids(page: &HttpResponse) -> Vec<String> {
    page.json()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn admin_routes_need_the_admin_token() {
    let admin = Admin::start("token", Some(TOKEN));
    for fields in [
        vec![],
        vec!["Authorization: Bearer wrong-token"],
        vec!["Authorization: Basic YWRtaW46eA=="],
    ] {
        for (method, target) in [
            ("GET", "/jobs"),
            ("GET", "/jobs/changes?since=0"),
            ("POST", "/jobs/cancel?state=queued"),
            ("POST", "/jobs/AAAAAAAAAAAAAAAAAAAAAA/retry"),
        ] {
            let mut all = fields.clone();
            all.push("Content-Length: 0");
            let response = request(&mut Client::connect(admin.control), method, target, &all);
            assert_eq!(response.status, 401, "{method} {target} {fields:?}");
            assert_eq!(response.header("WWW-Authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(admin.call("GET", "/jobs").status, 200);
    // The API is on the control listener only, never the public one.
    let public = request(
        &mut admin.server.connect(),
        "GET",
        "/jobs/changes?since=0",
        &[&format!("Authorization: Bearer {TOKEN}")],
    );
    assert_ne!(public.status, 200, "{public:?}");

    // Without a token file, the API is off.
    let off = Admin::start("token-off", None);
    let response = request(
        &mut Client::connect(off.control),
        "GET",
        "/jobs",
        &[&format!("Authorization: Bearer {TOKEN}")],
    );
    assert_eq!(response.status, 404, "{response:?}");
}

fn listings_filter_and_page_every_job_once_without_credentials(store: Store) {
    let admin = Admin::start_on(store, "list", Some(TOKEN));
    let secrets = [
        "Authorization: Bearer user-credential-XYZZY",
        "Cookie: session=cookie-credential-PLUGH",
    ];
    let ok: Vec<String> = (0..7).map(|_| admin.submit("/ok", &secrets)).collect();
    let failed: Vec<String> = (0..2).map(|_| admin.submit("/fail", &secrets)).collect();
    admin.wait_settled();

    // Pages of 3, followed by their cursor: every job exactly once, in order.
    let mut listed = Vec::new();
    let mut raw = String::new();
    let mut target = "/jobs?limit=3".to_string();
    for _ in 0..10 {
        let page = admin.call("GET", &target);
        assert_eq!(page.status, 200, "{page:?}");
        assert_eq!(page.header("Content-Type"), Some("application/json"));
        raw.push_str(page.body_str());
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 3, "{page:?}");
        listed.extend(page_ids);
        match page.json()["next"].as_str() {
            Some(next) => target = format!("/jobs?limit=3&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = ok.iter().chain(failed.iter()).cloned().collect();
    assert_eq!(listed, expected);

    // By state, with the error and attempts; by task; by age.
    let page = admin.call("GET", "/jobs?state=failed");
    raw.push_str(page.body_str());
    assert_eq!(ids(&page), failed);
    let job = &page.json()["jobs"][0];
    assert_eq!(job["state"], "failed");
    assert_eq!(job["task"], "/fail");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["status"], 500);
    assert!(job["created_ms"].as_i64().is_some() && job["updated_ms"].as_i64().is_some());
    let page = admin.call("GET", "/jobs?task=/ok&state=succeeded");
    raw.push_str(page.body_str());
    assert_eq!(ids(&page), ok);
    assert_eq!(
        ids(&admin.call("GET", "/jobs?older_than=3600")),
        Vec::<String>::new()
    );
    assert_eq!(ids(&admin.call("GET", "/jobs?newer_than=3600")), expected);
    assert_eq!(admin.call("GET", "/jobs?state=nonsense").status, 400);
    assert_eq!(admin.call("GET", "/jobs?after=x").status, 400);

    // The stored requests' credentials (kept for the failed jobs) never show.
    for secret in ["XYZZY", "PLUGH", "Cookie", "Authorization"] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
}

/// Reads an event stream until `done` says so; returns the events as (id, data).
fn read_events(
    stream: &mut TcpStream,
    done: impl Fn(&[(u64, serde_json::Value)]) -> bool,
) -> Vec<(u64, serde_json::Value)> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut text = String::new();
    loop {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the stream ended: {text}"),
            Ok(n) => text.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let events: Vec<(u64, serde_json::Value)> = body
            .split("\n\n")
            .filter(|block| block.contains("data: "))
            .filter_map(|block| {
                let id = block.lines().find_map(|l| l.strip_prefix("id: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((id.parse().ok()?, serde_json::from_str(data).ok()?))
            })
            .collect();
        if done(&events) {
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(text.contains("Content-Type: text/event-stream"), "{text}");
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never got there: {text}"
        );
    }
}

fn open_stream(admin: &Admin, fields: &str) -> TcpStream {
    let mut stream = TcpStream::connect(admin.control).expect("connect");
    let head = format!(
        "GET /jobs/changes{fields} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream
}

fn ended(events: &[(u64, serde_json::Value)], id: &str) -> bool {
    events
        .iter()
        .any(|(_, e)| e["id"] == id && e["state"] == "succeeded")
}

fn the_changes_feed_as_answer_long_poll_and_stream_misses_and_repeats_nothing(store: Store) {
    let admin = Admin::start_on(store, "changes", Some(TOKEN));
    let first = admin.submit("/ok", &[]);
    admin.wait_settled();

    // A normal answer: the job's every change, in order.
    let feed = admin.all_changes(0);
    let states: Vec<&str> = feed.iter().map(|(_, _, s)| s.as_str()).collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    assert!(feed.iter().all(|(_, id, _)| *id == first));

    // A long-poll answers once a change comes (the query's wait=, and Prefer: wait=).
    for wait in ["&wait=20", ""] {
        let mut poll = Client::connect(admin.control);
        let prefer = if wait.is_empty() {
            "Prefer: wait=20\r\n"
        } else {
            ""
        };
        let since = admin.all_changes(0).last().expect("a change").0;
        poll.send(format!(
            "GET /jobs/changes?since={since}{wait} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n{prefer}\r\n"
        ));
        let next = admin.submit("/ok", &[]);
        let answer = poll.read_response();
        assert_eq!(answer.status, 200, "{answer:?}");
        let changes = answer.json()["changes"]
            .as_array()
            .expect("changes")
            .clone();
        assert!(!changes.is_empty());
        assert!(changes.iter().all(|c| c["id"] == next.as_str()));
        assert!(changes.iter().all(|c| c["seq"].as_u64() > Some(since)));
        admin.wait_settled();
    }
    // A long-poll with nothing new answers empty at its end, with last_seq unchanged.
    let now = admin.all_changes(0).last().expect("a change").0;
    let quiet = admin.call("GET", &format!("/jobs/changes?since={now}&wait=1"));
    assert_eq!(quiet.json()["changes"], serde_json::json!([]));
    assert_eq!(quiet.json()["last_seq"], now);

    // An event stream from 0, then a listener that goes away and comes back with
    // Last-Event-ID while jobs keep changing.
    let mut stream = open_stream(&admin, "?since=0");
    let before = read_events(&mut stream, |events| {
        events.iter().any(|(id, _)| *id == now)
    });
    drop(stream);
    let resume = before.last().expect("events").0;
    let later: Vec<String> = (0..3).map(|_| admin.submit("/ok", &[])).collect();
    let mut stream = TcpStream::connect(admin.control).expect("connect");
    let head = format!(
        "GET /jobs/changes HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\nLast-Event-ID: {resume}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send");
    let after = read_events(&mut stream, |events| {
        later.iter().all(|id| ended(events, id))
    });
    drop(stream);
    admin.wait_settled();

    // Together: exactly the feed, each change once, in order.
    let streamed: Vec<(u64, String, String)> = before
        .iter()
        .chain(after.iter())
        .map(|(id, data)| {
            assert_eq!(Some(*id), data["seq"].as_u64());
            triple(data)
        })
        .collect();
    let truth = admin.all_changes(0);
    assert_eq!(streamed, truth[..streamed.len()].to_vec());
    let seqs: Vec<u64> = streamed.iter().map(|(seq, _, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(later
        .iter()
        .all(|id| truth.iter().any(|(_, i, s)| i == id && s == "succeeded")));
}

fn a_failed_job_retried_ends_succeeded(store: Store) {
    let admin = Admin::start_on(store, "retry", Some(TOKEN));
    let id = admin.submit("/flaky", &["Authorization: Bearer keep-me"]);
    admin.wait_settled();
    let page = admin.call("GET", "/jobs?state=failed");
    assert_eq!(ids(&page), std::slice::from_ref(&id));
    // The failed job keeps its request for the retry, but not its credentials: no file
    // of the store holds them once the failure is committed.
    let on_disk = |needle: &[u8]| match &admin.db {
        Db::Sqlite(path) => ["", "-wal", "-shm"].iter().any(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::read(&name)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }),
        Db::Postgres(server) => {
            let needle = String::from_utf8_lossy(needle);
            let found = server.query(&format!(
                "SELECT count(*) FROM jobs WHERE position('{needle}'::bytea IN head) > 0"
            ));
            found[0].as_deref() != Some("0")
        }
    };
    let gone = daemons::poll_until(WAIT, || (!on_disk(b"keep-me")).then_some(()));
    assert!(
        gone.is_some(),
        "the failed job's Authorization is still on disk"
    );

    let retried = admin.call("POST", &format!("/jobs/{id}/retry"));
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.json()["id"], id.as_str());
    admin.wait_settled();
    let page = admin.call("GET", "/jobs");
    let job = &page.json()["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{page:?}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["status"], 200);
    let states: Vec<String> = admin
        .all_changes(0)
        .into_iter()
        .map(|(_, _, state)| state)
        .collect();
    assert_eq!(
        states,
        [
            "queued",
            "running",
            "failed",
            "queued",
            "running",
            "succeeded"
        ]
    );
    // Its answer is the new one, on the public listener.
    let result = request(
        &mut admin.server.connect(),
        "GET",
        &format!("/jobs/{id}/result"),
        &[],
    );
    assert_eq!(result.status, 200, "{result:?}");

    // Not failed: 409; unknown: 404.
    assert_eq!(admin.call("POST", &format!("/jobs/{id}/retry")).status, 409);
    let unknown = admin.call("POST", "/jobs/AAAAAAAAAAAAAAAAAAAAAA/retry");
    assert_eq!(unknown.status, 404);
    assert_eq!(admin.call("GET", &format!("/jobs/{id}/retry")).status, 405);
}

fn cancel_by_filter_cancels_only_the_matching_jobs(store: Store) {
    let admin = Admin::start_on(store, "cancel", Some(TOKEN));
    let later = ["Job-Delay: 600"];
    let a: Vec<String> = (0..3).map(|_| admin.submit("/a", &later)).collect();
    let b: Vec<String> = (0..2).map(|_| admin.submit("/b", &later)).collect();
    let done = admin.submit("/a", &[]);
    admin.wait_settled_except_scheduled();

    let answer = admin.call("POST", "/jobs/cancel?task=/a");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["cancelled"], 3);
    assert_eq!(ids(&admin.call("GET", "/jobs?state=cancelled")), a);
    assert_eq!(ids(&admin.call("GET", "/jobs?state=scheduled")), b);
    assert_eq!(ids(&admin.call("GET", "/jobs?state=succeeded")), [done]);
    // Nothing left to cancel there; an ended state is not a filter for a cancel.
    assert_eq!(
        admin.call("POST", "/jobs/cancel?task=/a").json()["cancelled"],
        0
    );
    assert_eq!(admin.call("POST", "/jobs/cancel?state=failed").status, 400);
    let answer = admin.call("POST", "/jobs/cancel?state=scheduled");
    assert_eq!(answer.json()["cancelled"], 2);
}

impl Admin {
    /// Waits until no job is queued or running (scheduled ones wait for their time).
    fn wait_settled_except_scheduled(&self) {
        let deadline = Instant::now() + WAIT;
        while !ids(&self.call("GET", "/jobs?state=queued,running")).is_empty() {
            assert!(Instant::now() < deadline, "jobs never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
