//! A three-daemon deployment (front end, two proxies, two worker pools) as an operator
//! starts it: it answers, its health check follows the workers, its status page shows
//! the first proxy.

mod daemons;

use daemons::*;
use std::time::Duration;

const READ: Duration = Duration::from_secs(20);

#[test]
fn the_deployment_answers_and_reports_its_health() {
    let d = Deployment::start(Options::default());
    let port = d.ports.http;

    let mut client = Client::connect(port).expect("connect");
    for n in [7u64, 8, 97, 1_000_000_007] {
        let response = client.get(&is_prime(n), READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        let json = response.json();
        assert_eq!(json["possible_prime"].as_u64(), Some(n), "{json}");
        let expected = [7, 97, 1_000_000_007].contains(&n);
        assert_eq!(json["is_prime"].as_bool(), Some(expected), "{json}");
    }

    // The front end learns of the workers from its probes of the first proxy, which
    // lag by a fraction of a second; `start` waited for that.
    let health = client.get("/health", READ).expect("health");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok", "{health:?}");

    let status = client.get("/status", READ).expect("status");
    assert_eq!(status.status, 200, "{status:?}");
    let json = status.json();
    println!("/status: {json}");
    assert_eq!(json["first_proxy"]["reachable"], true, "{json}");
    assert_eq!(
        json["first_proxy"]["endpoint"].as_str(),
        Some(tcp(d.ports.up1).as_str()),
        "{json}"
    );
    let workers = json["first_proxy"]["status"]["workers"].as_u64();
    assert!(workers >= Some(1), "no workers in {json}");
    assert_eq!(json["draining"], false, "{json}");
    assert!(json["forwarded"].as_u64() >= Some(4), "{json}");

    // A request the parse stage refuses never reaches compute, and says why.
    let refused = client
        .get("/is_prime?possible_prime=abc", READ)
        .expect("an answer");
    assert_eq!(refused.status, 400, "{refused:?}");
    let missing = client.get("/nowhere", READ).expect("an answer");
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[test]
fn health_is_503_without_workers_and_follows_them() {
    let mut d = Deployment::start(Options {
        workers: false,
        // Workers that die are forgotten quickly.
        proxyd: args(&["--heartbeat-timeout", "1.5"]),
        ..Options::default()
    });
    let port = d.ports.http;

    // The proxy answers the front end's probes...
    let reachable = poll_until(Duration::from_secs(20), || {
        let status = get(port, "/status", READ).ok()?;
        (status.json()["first_proxy"]["reachable"] == true).then_some(status.json())
    })
    .expect("the first proxy never became reachable");
    assert_eq!(
        reachable["first_proxy"]["status"]["workers"], 0,
        "{reachable}"
    );
    // ...but with no workers the front end is not healthy.
    let health = get(port, "/health", READ).expect("health");
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body.contains("no workers"), "{health:?}");

    d.start_parse();
    d.start_compute();
    assert!(
        d.wait_health(200, Duration::from_secs(20)),
        "/health did not become 200 once workers started"
    );
    d.wait_answering(Duration::from_secs(20));

    // The first stage's workers leave: health goes back to 503 once they are forgotten.
    d.parse.as_mut().expect("parse").kill9();
    assert!(
        d.wait_health(503, Duration::from_secs(20)),
        "/health stayed 200 after the first stage's workers died"
    );
}

#[test]
fn health_is_503_when_the_first_proxy_is_down() {
    let mut d = Deployment::start(Options::default());
    d.proxy1.as_mut().expect("proxy1").kill9();
    assert!(
        d.wait_health(503, Duration::from_secs(20)),
        "/health stayed 200 with the first proxy gone"
    );
    let status = get(d.ports.http, "/status", READ).expect("status");
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(
        status.json()["first_proxy"]["reachable"],
        false,
        "{status:?}"
    );
}
