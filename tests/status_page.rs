//! The live status page in a real browser: headless Chromium (the distribution's
//! package) driven by `playwright-core` loads `GET /status` as HTML, shows the stages
//! from the page's Server-Sent Events, and its numbers change as requests are made.

mod daemons;
mod tools;

use daemons::*;
use std::process::Command;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");

/// Loads the page, reads it, makes five requests, waits for the page to count them.
/// Prints one JSON line: what the page showed before and after.
const SCRIPT: &str = r##"
const { chromium } = require("playwright-core");
const [executablePath, base] = process.argv.slice(1);
(async () => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    const response = await page.goto(base + "/status");
    const type = response.headers()["content-type"];
    // Both stages, each with its worker (proxies publish their figures a few times a second).
    await page.waitForFunction(() => {
      const rows = Array.from(document.querySelectorAll("#stages tr"));
      return rows.length === 2 && rows.every((row) => row.cells.length === 4 && row.cells[1].textContent === "1");
    }, null, { timeout: 15000 });
    const stages = await page.$$eval("#stages tr", (rows) =>
      rows.map((row) => Array.from(row.cells, (cell) => cell.textContent)));
    const before = Number(await page.textContent("#answered"));
    for (let i = 0; i < 5; i++) {
      const answer = await fetch(base + "/is_prime?possible_prime=7");
      if (answer.status !== 200) throw new Error("a request was answered " + answer.status);
    }
    await page.waitForFunction((n) => Number(document.querySelector("#answered").textContent) >= n,
                               before + 5, { timeout: 15000 });
    const after = Number(await page.textContent("#answered"));
    const rate = await page.textContent("#rps");
    const state = await page.textContent("#state");
    console.log(JSON.stringify({ type, stages, before, after, rate, state }));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(String(e)); process.exit(1); });
"##;

#[test]
fn the_status_page_shows_the_stages_and_counts_requests_live() {
    let chromium = tools::program("chromium", "chromium");
    let port = free_port();
    let serverd = Daemon::start_listening(
        "serverd-status-page",
        SERVERD,
        &args(&[&tcp(port), "1", "--status-path", "/status"]),
    );
    let output = Command::new("node")
        .args(["-e", SCRIPT])
        .arg(&chromium)
        .arg(format!("http://127.0.0.1:{port}"))
        .current_dir(tools::node_modules())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "the browser script failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        serverd.stderr()
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the script's JSON line");
    assert_eq!(seen["type"], "text/html; charset=utf-8", "{seen}");
    let stages = seen["stages"].as_array().expect("rows");
    let names: Vec<&str> = stages.iter().filter_map(|row| row[0].as_str()).collect();
    assert_eq!(names, ["parse", "compute"], "{seen}");
    for row in stages {
        // workers, idle, queue: numbers, one worker per stage.
        assert_eq!(row[1], "1", "{seen}");
        assert!(
            row[3].as_str().is_some_and(|q| q.parse::<u64>().is_ok()),
            "{seen}"
        );
    }
    let (before, after) = (seen["before"].as_u64(), seen["after"].as_u64());
    assert!(
        before.zip(after).is_some_and(|(b, a)| a >= b + 5),
        "the page's count did not follow the requests: {seen}"
    );
    assert!(
        seen["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("live")),
        "{seen}"
    );
    assert!(
        seen["rate"]
            .as_str()
            .is_some_and(|r| r.parse::<f64>().is_ok()),
        "{seen}"
    );
    drop(serverd);
}
