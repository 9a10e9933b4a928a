//! The self-test over a multi-process deployment (`prime_httpd`, two `prime_proxyd`,
//! two `prime_workerd`): every stage answers the probe; with one stage's workers
//! killed, the self-test names the stage after which nothing answered, or, when the
//! stage before knows it by a route name, that stage itself.

mod daemons;

use daemons::*;
use std::time::Duration;

const READ: Duration = Duration::from_secs(60);

fn selftest(port: u16) -> Response {
    get(port, "/status?selftest=1", READ).expect("a self-test answer")
}

fn part<'a>(
    document: &'a serde_json::Value,
    key: &str,
    value: &str,
) -> Option<&'a serde_json::Value> {
    document["parts"]
        .as_array()?
        .iter()
        .find(|p| p[key] == value)
}

#[test]
fn the_selftest_names_the_stage_whose_workers_are_gone() {
    let mut d = Deployment::start(Options::default());
    let port = d.ports.http;
    let healthy = selftest(port);
    assert_eq!(healthy.status, 200, "{healthy:?}");
    let document = healthy.json();
    for stage in ["parse", "compute"] {
        let found = part(&document, "stage", stage)
            .unwrap_or_else(|| panic!("stage {stage} is not named: {document}"));
        assert_eq!(found["ok"], true, "{document}");
        assert!(found["workers"].as_array().is_some_and(|w| !w.is_empty()));
    }
    // No job store here: it is not a part.
    assert!(part(&document, "part", "store").is_none(), "{document}");

    // Nothing answers after parse: prime_httpd without a topology does not know the
    // next stage's name, so it names the stage after which nothing answered.
    d.compute.as_mut().expect("compute").kill9();
    let failed = selftest(port);
    assert_eq!(failed.status, 503, "{failed:?}");
    let document = failed.json();
    assert_eq!(
        part(&document, "stage", "parse").expect("parse")["ok"],
        true
    );
    let after = part(&document, "after", "parse").expect("the part after parse");
    assert_eq!(after["ok"], false, "{document}");
    assert!(
        after["error"]
            .as_str()
            .is_some_and(|e| e.contains("next stage")),
        "{document}"
    );

    // With a route naming the next stage, parse's workers tell its name.
    d.options.parse = args(&["--route", &format!("compute={}", tcp(d.ports.up2))]);
    d.parse.as_mut().expect("parse").kill9();
    d.start_parse();
    let named = poll_until(Duration::from_secs(60), || {
        let response = selftest(port);
        let document = response.json();
        part(&document, "stage", "compute").cloned()
    })
    .expect("the self-test names compute");
    assert_eq!(named["ok"], false, "{named}");
    let error = named["error"].as_str().expect("an error");
    assert!(error.contains("no worker of stage `compute`"), "{error}");

    d.start_compute();
    let recovered = poll_until(Duration::from_secs(60), || {
        let response = selftest(port);
        (response.status == 200).then_some(response)
    });
    assert!(
        recovered.is_some(),
        "the self-test passes once compute is back"
    );
}
