//! A whole deployment from one topology file: one command per daemon, nothing else.

mod daemons;

use daemons::*;
use std::time::Duration;

const READ: Duration = Duration::from_secs(20);

fn topology(ports: &Ports) -> String {
    format!(
        r#"{{
  "front_end": {{
    "listen": "{}", "loopback": "{}", "interrupt": "{}",
    "health_path": "/health", "status_path": "/status"
  }},
  "stages": [
    {{ "name": "parse", "upstream": "{}", "downstream": "{}", "concurrency": 2 }},
    {{ "name": "compute", "upstream": "{}", "downstream": "{}", "concurrency": 2 }}
  ]
}}"#,
        tcp(ports.http),
        tcp(ports.loopback),
        tcp(ports.interrupt),
        tcp(ports.up1),
        tcp(ports.down1),
        tcp(ports.up2),
        tcp(ports.down2)
    )
}

/// The five daemons of a topology file, each started with `--config`.
fn start(path: &str) -> Vec<Daemon> {
    let config = |stage: Option<&str>| {
        let mut a = vec!["--config".to_string(), path.to_string()];
        if let Some(stage) = stage {
            a.extend(["--stage".to_string(), stage.to_string()]);
        }
        a
    };
    let mut daemons = vec![
        Daemon::start("proxy-parse", PROXYD, &config(Some("parse"))),
        Daemon::start("proxy-compute", PROXYD, &config(Some("compute"))),
        Daemon::start("httpd", HTTPD, &config(None)),
        Daemon::start("worker-parse", WORKERD, &config(Some("parse"))),
        Daemon::start("worker-compute", WORKERD, &config(Some("compute"))),
    ];
    let ready = [
        "proxy: jobs arrive on",
        "proxy: jobs arrive on",
        "listening for Http on",
        "workers of \"parse\" take jobs",
        "workers of \"compute\" take jobs",
    ];
    for (daemon, line) in daemons.iter_mut().zip(ready) {
        assert!(
            daemon.wait_for_log(line, START_TIMEOUT),
            "{} did not start: {}",
            daemon.name,
            daemon.stderr()
        );
    }
    daemons
}

#[test]
fn a_topology_file_runs_the_whole_deployment() {
    let mut attempt = 0;
    let (ports, daemons) = loop {
        attempt += 1;
        let ports = Ports::allocate();
        let file = scratch_path("topology", "json");
        std::fs::write(&file, topology(&ports)).expect("write the topology");
        let path = file.display().to_string();
        let started = std::panic::catch_unwind(|| start(&path));
        match started {
            Ok(daemons) => break (ports, daemons),
            // A port taken between allocation and bind: try other ports, once.
            Err(_) if attempt < 2 => continue,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    };
    let port = ports.http;

    let ok = poll_until(Duration::from_secs(30), || {
        let response = get(port, &is_prime(7), READ).ok()?;
        (response.status == 200).then_some(response)
    })
    .expect("the deployment never answered");
    assert_eq!(ok.possible_prime(), Some(7), "{ok:?}");

    let mut client = Client::connect(port).expect("connect");
    for (n, prime) in [(97u64, true), (91, false), (1_000_000_007, true)] {
        let response = client.get(&is_prime(n), READ).expect("an answer");
        assert_eq!(response.status, 200, "{response:?}");
        let json = response.json();
        assert_eq!(json["possible_prime"].as_u64(), Some(n), "{json}");
        assert_eq!(json["is_prime"].as_bool(), Some(prime), "{json}");
    }
    // The paths and the proxy come from the file too.
    let healthy = poll_until(Duration::from_secs(20), || {
        let health = client.get("/health", READ).ok()?;
        (health.status == 200).then_some(health)
    });
    assert!(
        healthy.is_some(),
        "/health from the file never answered 200"
    );
    // Each pool runs the topology's concurrency: the first proxy soon knows both.
    let status = poll_until(Duration::from_secs(20), || {
        let status = client.get("/status", READ).ok()?.json();
        (status["first_proxy"]["status"]["workers"].as_u64() == Some(2)).then_some(status)
    })
    .expect("the first proxy never reported the topology's 2 parse workers");
    assert_eq!(status["first_proxy"]["reachable"], true, "{status}");
    assert_eq!(
        status["first_proxy"]["endpoint"].as_str(),
        Some(tcp(ports.up1).as_str()),
        "{status}"
    );
    drop(daemons);
}
