//! A whole deployment in one JSON file: the front end's endpoints and each stage's
//! proxy endpoints, so that a deployment is this file plus one command per host
//! (`prime_httpd --config F`, `prime_proxyd --config F --stage S`,
//! `prime_workerd --config F --stage S`).
//!
//! ```
//! let topology = prime_server::topology::Topology::from_json(r#"{
//!   "front_end": { "listen": "tcp://127.0.0.1:8002", "loopback": "tcp://127.0.0.1:5001",
//!                  "interrupt": "tcp://127.0.0.1:5002", "health_path": "/health" },
//!   "stages": [
//!     { "name": "parse", "upstream": "tcp://127.0.0.1:5000", "downstream": "tcp://127.0.0.1:5003", "concurrency": 2 },
//!     { "name": "compute", "upstream": "tcp://127.0.0.1:5004", "downstream": "tcp://127.0.0.1:5005" }
//!   ]
//! }"#).unwrap();
//! assert_eq!(topology.entry(), "tcp://127.0.0.1:5000");
//! assert_eq!(topology.next_upstream("parse").unwrap(), Some("tcp://127.0.0.1:5004"));
//! ```

use crate::sockets::check_endpoint;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// The whole deployment.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The front end's endpoints and paths.
    pub front_end: FrontEndSpec,
    /// The stages, in pipeline order.
    pub stages: Vec<StageSpec>,
}

/// Where the front end listens and where the pipeline answers it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FrontEndSpec {
    /// Where clients connect (HTTP), bound by the front end.
    pub listen: String,
    /// Where netstring clients connect, if anywhere.
    #[serde(default)]
    pub netstring: Option<String>,
    /// Where every stage answers the front end, bound by the front end.
    pub loopback: String,
    /// Where the front end publishes interrupts, bound by the front end.
    pub interrupt: String,
    /// The health check path.
    #[serde(default)]
    pub health_path: Option<String>,
    /// The status document path.
    #[serde(default)]
    pub status_path: Option<String>,
    /// The job store (a SQLite file on the front end's host), for asynchronous jobs.
    #[serde(default)]
    pub jobs_db: Option<std::path::PathBuf>,
}

/// One stage: its proxy's two endpoints and its workers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's name (also the service its workers run, unless `service` says).
    pub name: String,
    /// Where the proxy takes jobs (bound by the proxy).
    pub upstream: String,
    /// Where the stage's workers connect (bound by the proxy).
    pub downstream: String,
    /// Workers per worker process.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// The service the workers run, when it differs from the name.
    #[serde(default)]
    pub service: Option<String>,
}

fn one() -> usize {
    1
}

impl StageSpec {
    /// The service the stage's workers run.
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }
}

/// Why a topology file cannot be used.
#[derive(Debug)]
pub enum TopologyError {
    /// The file could not be read.
    Read(std::io::Error),
    /// The file is not a topology in JSON.
    Parse(serde_json::Error),
    /// The topology is JSON but cannot run (no stages, a bad endpoint, ...).
    Invalid(String),
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Read(e) => write!(f, "cannot read the topology file: {e}"),
            TopologyError::Parse(e) => write!(f, "the topology file is not valid: {e}"),
            TopologyError::Invalid(why) => write!(f, "the topology cannot run: {why}"),
        }
    }
}

impl std::error::Error for TopologyError {}

impl Topology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            // Name the file: "No such file or directory" alone does not say which.
            TopologyError::Read(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        })?;
        Self::from_json(&text)
    }

    /// Reads and checks a topology from JSON text.
    pub fn from_json(text: &str) -> Result<Topology, TopologyError> {
        let topology: Topology = serde_json::from_str(text).map_err(TopologyError::Parse)?;
        topology.check()?;
        Ok(topology)
    }

    fn check(&self) -> Result<(), TopologyError> {
        if self.stages.is_empty() {
            return Err(TopologyError::Invalid("it has no stages".into()));
        }
        let front = &self.front_end;
        let mut endpoints = vec![&front.listen, &front.loopback, &front.interrupt];
        endpoints.extend(&front.netstring);
        for (index, stage) in self.stages.iter().enumerate() {
            if self.stages[..index].iter().any(|s| s.name == stage.name) {
                return Err(TopologyError::Invalid(format!(
                    "two stages are named {:?}",
                    stage.name
                )));
            }
            if stage.concurrency == 0 {
                return Err(TopologyError::Invalid(format!(
                    "stage {:?} has no workers",
                    stage.name
                )));
            }
            endpoints.push(&stage.upstream);
            endpoints.push(&stage.downstream);
        }
        for endpoint in endpoints {
            check_endpoint(endpoint).map_err(|e| TopologyError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// Where the front end sends requests: the first stage's upstream.
    pub fn entry(&self) -> &str {
        &self.stages[0].upstream
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Result<&StageSpec, TopologyError> {
        self.stages.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
            TopologyError::Invalid(format!("no stage {name:?}; the stages are {names:?}"))
        })
    }

    /// The upstream of the stage after `name`, if there is one.
    pub fn next_upstream(&self, name: &str) -> Result<Option<&str>, TopologyError> {
        let index = self
            .stages
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| TopologyError::Invalid(format!("no stage {name:?}")))?;
        Ok(self.stages.get(index + 1).map(|s| s.upstream.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "front_end": { "listen": "tcp://127.0.0.1:8002", "loopback": "ipc:///tmp/l", "interrupt": "ipc:///tmp/i" },
      "stages": [ { "name": "echo", "upstream": "tcp://127.0.0.1:5000", "downstream": "tcp://127.0.0.1:5003" } ]
    }"#;

    #[test]
    fn a_good_file_loads_with_defaults() {
        let topology = Topology::from_json(GOOD).expect("valid");
        assert_eq!(topology.stages[0].concurrency, 1);
        assert_eq!(topology.stages[0].service(), "echo");
        assert_eq!(topology.next_upstream("echo").expect("known"), None);
        assert!(topology.stage("nope").is_err());
        assert_eq!(topology.front_end.jobs_db, None);
    }

    #[test]
    fn the_front_end_may_name_its_job_store() {
        let with_jobs = GOOD.replacen(
            r#""listen":"#,
            r#""jobs_db": "/var/lib/prime/jobs.sqlite", "listen":"#,
            1,
        );
        let topology = Topology::from_json(&with_jobs).expect("valid");
        assert_eq!(
            topology.front_end.jobs_db.as_deref(),
            Some(std::path::Path::new("/var/lib/prime/jobs.sqlite"))
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let no_stages = GOOD.replace(
            r#"[ { "name": "echo", "upstream": "tcp://127.0.0.1:5000", "downstream": "tcp://127.0.0.1:5003" } ]"#,
            "[]",
        );
        assert!(matches!(
            Topology::from_json(&no_stages),
            Err(TopologyError::Invalid(_))
        ));
        let bad_endpoint = GOOD.replace("tcp://127.0.0.1:5000", "127.0.0.1:5000");
        assert!(Topology::from_json(&bad_endpoint)
            .unwrap_err()
            .to_string()
            .contains("127.0.0.1:5000"));
        let typo = GOOD.replace("\"listen\"", "\"lsiten\"");
        assert!(matches!(
            Topology::from_json(&typo),
            Err(TopologyError::Parse(_))
        ));
    }
}
