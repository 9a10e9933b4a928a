//! What an operator reaches for (issue 24): Prometheus metrics from the front end and
//! from each daemon, parsed by the Python `prometheus_client` package's OpenMetrics
//! parser; readiness that follows the workers of every stage; JSON access lines
//! without secrets; and warnings that a burst cannot multiply.

mod daemons;
mod tools;

use daemons::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const READ: Duration = Duration::from_secs(20);

/// Parses an exposition with `prometheus_client`'s OpenMetrics parser (which refuses
/// anything malformed: the test then fails with its error); returns each sample's
/// value by `name{label="value",...}`, labels sorted.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        samples["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps(samples))
"#;
    let mut child = Command::new(tools::python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let output = child.wait_with_output().expect("python's output");
    assert!(
        output.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the parser's JSON")
}

/// Scrapes `path` on `port` and parses it; checks the content type.
fn scrape(port: u16, path: &str) -> BTreeMap<String, f64> {
    let response = get(port, path, READ).expect("a scrape");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    parse_exposition(&response.body)
}

/// The value of a sample, failing with the samples there are.
fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// The port a daemon's metrics listener bound, read from its log line.
fn metrics_port(daemon: &mut Daemon) -> u16 {
    assert!(
        daemon.wait_for_log("metrics: scrape http://", START_TIMEOUT),
        "{} has no metrics listener: {}",
        daemon.name,
        daemon.stderr()
    );
    let log = daemon.stderr();
    let rest = log
        .split("metrics: scrape http://127.0.0.1:")
        .nth(1)
        .expect("the metrics address");
    rest[..rest.find('/').expect("a path")]
        .parse()
        .expect("a port")
}

#[test]
fn metrics_of_every_process_parse_and_move_with_requests() {
    let mut d = Deployment::start(Options {
        httpd: args(&["--metrics-path", "/metrics"]),
        proxyd: args(&[
            "--heartbeat-timeout",
            "5",
            "--metrics-listen",
            "127.0.0.1:0",
        ]),
        compute: args(&["--metrics-listen", "127.0.0.1:0"]),
        ..Options::default()
    });
    let http = d.ports.http;
    let compute = metrics_port(d.compute.as_mut().expect("compute"));
    let proxy2 = metrics_port(d.proxy2.as_mut().expect("proxy2"));

    let before = scrape(http, "/metrics");
    let work_before = scrape(compute, "/metrics");
    let mut client = Client::connect(http).expect("connect");
    for n in [7, 11, 13, 17, 19] {
        let response = client.get(&is_prime(n), READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
    }
    for _ in 0..2 {
        let response = client
            .get("/is_prime?possible_prime=x", READ)
            .expect("an answer");
        assert_eq!(response.status, 400, "{response:?}");
    }
    let after = scrape(http, "/metrics");
    let delta = |key: &str| value(&after, key) - value(&before, key);
    // The first scrape's own answer is counted once written, so in the second.
    assert_eq!(delta(r#"prime_http_requests_total{class="2xx"}"#), 6.0);
    assert_eq!(delta(r#"prime_http_requests_total{class="4xx"}"#), 2.0);
    assert_eq!(delta(r#"prime_http_requests_total{class="5xx"}"#), 0.0);
    assert_eq!(delta("prime_http_request_duration_seconds_count{}"), 8.0);
    assert_eq!(
        value(
            &after,
            r#"prime_http_request_duration_seconds_bucket{le="+Inf"}"#
        ),
        value(&after, "prime_http_request_duration_seconds_count{}")
    );
    assert_eq!(
        delta(r#"prime_pipeline_requests_total{stage="first"}"#),
        7.0
    );
    assert_eq!(value(&after, "prime_requests_in_flight{}"), 0.0);
    assert!(value(&after, r#"prime_first_proxy_workers{stage="first"}"#) >= 1.0);
    assert_eq!(
        value(&after, r#"prime_interrupts_total{reason="client_gone"}"#),
        0.0
    );

    // The compute stage ran the five good requests (the parse stage refused the others).
    let work = scrape(compute, "/metrics");
    let ran = r#"prime_stage_jobs_total{outcome="ran",stage="compute"}"#;
    assert_eq!(value(&work, ran) - value(&work_before, ran), 5.0);
    let count = r#"prime_stage_work_seconds_count{stage="compute"}"#;
    assert_eq!(value(&work, count) - value(&work_before, count), 5.0);
    assert_eq!(value(&work, r#"prime_stage_workers{stage="compute"}"#), 2.0);

    // The second proxy publishes its figures at each sweep: wait for them.
    let dispatched = poll_until(Duration::from_secs(20), || {
        let samples = scrape(proxy2, "/metrics");
        let stage = format!("tcp://127.0.0.1:{}", d.ports.up2);
        let key = format!(r#"prime_proxy_jobs_total{{outcome="dispatched",stage="{stage}"}}"#);
        let workers = format!(r#"prime_proxy_workers{{stage="{stage}"}}"#);
        let dispatched = value(&samples, &key);
        (dispatched >= value(&work, ran) && value(&samples, &workers) == 2.0).then_some(dispatched)
    });
    assert!(
        dispatched.is_some(),
        "the second proxy's figures never showed the jobs"
    );

    // Anything but /metrics on a daemon's listener is 404.
    let other = get(compute, "/", READ).expect("an answer");
    assert_eq!(other.status, 404, "{other:?}");
}

#[test]
fn the_front_end_reports_jobs_and_their_commits() {
    let port = free_port();
    let db = scratch_path("operators-jobs", "db");
    let serverd = Daemon::start_listening(
        "serverd-jobs",
        SERVERD,
        &args(&[
            &tcp(port),
            "1",
            "--metrics-path",
            "/metrics",
            "--jobs-db",
            db.to_str().expect("a path"),
        ]),
    );
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(7), &["Prefer: respond-async"])
        .expect("submit");
    let accepted = client.read_response(READ).expect("an answer");
    assert_eq!(accepted.status, 202, "{accepted:?}");
    // In one process, the stages' proxies (published at their sweeps) and pools are in
    // the front end's scrape too.
    let dispatched = r#"prime_proxy_jobs_total{outcome="dispatched",stage="compute"}"#;
    let succeeded = poll_until(Duration::from_secs(20), || {
        let samples = scrape(port, "/metrics");
        let done = value(&samples, r#"prime_jobs{state="succeeded"}"#) == 1.0;
        (done && value(&samples, dispatched) >= 1.0).then_some(samples)
    })
    .expect("the job never counted as succeeded and dispatched");
    assert_eq!(value(&succeeded, r#"prime_jobs{state="queued"}"#), 0.0);
    assert_eq!(value(&succeeded, r#"prime_jobs{state="failed"}"#), 0.0);
    assert!(value(&succeeded, "prime_job_store_commit_seconds_count{}") >= 2.0);
    assert_eq!(
        value(&succeeded, r#"prime_stage_workers{stage="compute"}"#),
        1.0
    );
    let ran = r#"prime_stage_jobs_total{outcome="ran",stage="compute"}"#;
    assert_eq!(value(&succeeded, ran), 1.0);
    drop(serverd);
}

#[test]
fn readiness_follows_the_last_worker_of_a_later_stage() {
    let mut d = Deployment::start(Options {
        httpd: args(&["--ready-path", "/ready", "--request-timeout", "25"]),
        proxyd: args(&["--heartbeat-timeout", "2", "--no-worker-grace", "1"]),
        ..Options::default()
    });
    let http = d.ports.http;
    let ready = |status: u16| {
        poll_until(Duration::from_secs(30), || {
            let response = get(http, "/ready", READ).ok()?;
            (response.status == status).then_some(response)
        })
    };
    let up = ready(200).expect("/ready never said 200 with every worker running");
    assert_eq!(up.json()["status"], "ready", "{up:?}");

    d.compute.as_mut().expect("compute").kill9();
    let down = ready(503).expect("/ready stayed 200 with the compute stage's worker killed");
    let body = down.json();
    assert_eq!(body["status"], "not ready", "{body}");
    let missing = body["missing"].to_string();
    assert!(missing.contains("no worker"), "{body}");
    // Liveness is not readiness: the front end and the first stage are up.
    assert_eq!(get(http, "/health", READ).expect("health").status, 200);

    // Once the proxy has given up waiting for a worker, a request is answered 503 by
    // it, not 504 after the 25 s request timeout.
    let refused = poll_until(Duration::from_secs(20), || {
        let response = get(http, &is_prime(CHEAP), READ).ok()?;
        (response.status == 503).then_some(response)
    })
    .expect("a request to the workerless stage was not answered 503");
    assert!(refused.body.contains("no worker"), "{refused:?}");

    d.start_compute();
    let back = ready(200).expect("/ready did not come back to 200 with a new worker");
    assert_eq!(back.json()["status"], "ready", "{back:?}");
    d.wait_answering(Duration::from_secs(20));
}

#[test]
fn json_access_lines_hide_secrets_and_refusal_warnings_are_bounded() {
    let port = free_port();
    let db = scratch_path("operators-refusals", "db");
    let mut serverd = Daemon::start_listening(
        "serverd-refusals",
        SERVERD,
        &args(&[
            &tcp(port),
            "1",
            "--access-log-format",
            "json",
            "--jobs-db",
            db.to_str().expect("a path"),
            "--jobs-max-queued",
            "1",
        ]),
    );
    let mut client = Client::connect(port).expect("connect");
    let answer = client
        .get("/is_prime?possible_prime=7&access_token=hunter2", READ)
        .expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");

    // One slow job holds the only place; every other submit is refused.
    client
        .send_request("GET", &is_prime(PRIME_2_63), &["Prefer: respond-async"])
        .expect("submit");
    let held = client.read_response(READ).expect("an answer");
    assert_eq!(held.status, 202, "{held:?}");
    const REFUSED: usize = 40;
    for _ in 0..REFUSED {
        client
            .send_request("GET", &is_prime(CHEAP), &["Prefer: respond-async"])
            .expect("submit");
        let refused = client.read_response(READ).expect("an answer");
        assert_eq!(refused.status, 503, "{refused:?}");
    }
    assert!(
        serverd.wait_for_log("more suppressed", Duration::from_secs(30)),
        "no summary of suppressed warnings: {}",
        serverd.stderr()
    );
    let log = serverd.stderr();
    let warnings = log.matches("a submit is refused").count();
    assert!(
        (1..=5).contains(&warnings),
        "{warnings} warnings for {REFUSED} refused submits"
    );
    let summary = log
        .lines()
        .find(|line| line.contains("more suppressed"))
        .expect("a summary");
    assert!(
        summary.contains(&format!("{} more suppressed", REFUSED - warnings)),
        "{summary}"
    );

    // The access lines are JSON, one per request, without the token.
    assert!(!log.contains("hunter2"), "a secret was logged: {log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2 + REFUSED, "{log}");
    let first = &lines[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(
        first["target"],
        "/is_prime?possible_prime=7&access_token=REDACTED"
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], "parse");
    assert!(first["bytes"].as_u64().is_some_and(|b| b > 0), "{first}");
    assert!(first["request_id"].is_u64(), "{first}");
    assert!(first["duration_ms"].is_number(), "{first}");
    assert!(first["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1")));
    assert!(lines[2..].iter().all(|line| line["status"] == 503));
}

#[test]
fn a_request_waits_for_a_worker_that_restarts_within_the_grace() {
    let mut d = Deployment::start(Options {
        proxyd: args(&[
            "--heartbeat-timeout",
            "2",
            "--no-worker-grace",
            "60",
            "--metrics-listen",
            "127.0.0.1:0",
        ]),
        ..Options::default()
    });
    let proxy2 = metrics_port(d.proxy2.as_mut().expect("proxy2"));
    let stage = format!("tcp://127.0.0.1:{}", d.ports.up2);
    let workers = format!(r#"prime_proxy_workers{{stage="{stage}"}}"#);
    d.compute.as_mut().expect("compute").kill9();
    let gone = poll_until(Duration::from_secs(20), || {
        (value(&scrape(proxy2, "/metrics"), &workers) == 0.0).then_some(())
    });
    assert!(
        gone.is_some(),
        "the proxy never noticed its worker was gone"
    );

    // Sent while the stage has no worker: it waits in the queue, not refused.
    let mut client = Client::connect(d.ports.http).expect("connect");
    client.send_get(&is_prime(CHEAP)).expect("send");
    let queued = r#"prime_proxy_queue_depth{stage="STAGE"}"#.replace("STAGE", &stage);
    let waiting = poll_until(Duration::from_secs(20), || {
        (value(&scrape(proxy2, "/metrics"), &queued) == 1.0).then_some(())
    });
    assert!(
        waiting.is_some(),
        "the request did not wait in the second proxy"
    );
    d.start_compute();
    let answer = client.read_response(READ).expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.possible_prime(), Some(CHEAP), "{answer:?}");
}
