//! A whole deployment in one JSON file: the front end's endpoints and each stage's
//! proxy endpoints, so that a deployment is this file plus one command per host
//! (`prime_httpd --config F`, `prime_proxyd --config F --stage S`,
//! `prime_workerd --config F --stage S`).
//!
//! ```
//! let topology = prime_server::deploy::topology::Topology::from_json(r#"{
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
//!
//! Routing by task name (see [`crate::stages::tasks`]) follows the file's `tasks` table, whose
//! keys are task names (`X-Task-Name`) or, starting with `/`, path prefixes, and whose
//! values are stages of the file; `default` takes requests that match neither. Who
//! applies it: a stage whose `service` is `tasks`, if the file has one (it runs a
//! [`TaskRouter`], one hop in front of the stages it names); else the front end itself
//! ([`Topology::front_end_routes`]): `prime_httpd` connects an entry to each stage the
//! table names and sends each request straight there, answering an unknown task name
//! `400`, and a request that matches nothing (no default) goes to the first stage.
//! Every stage named must be in the file, and a `tasks` stage needs the table:
//!
//! ```
//! let topology = prime_server::deploy::topology::Topology::from_json(r#"{
//!   "front_end": { "listen": "tcp://127.0.0.1:8002", "loopback": "tcp://127.0.0.1:5001",
//!                  "interrupt": "tcp://127.0.0.1:5002" },
//!   "stages": [
//!     { "name": "dispatch", "service": "tasks", "upstream": "tcp://127.0.0.1:5000", "downstream": "tcp://127.0.0.1:5003" },
//!     { "name": "fast", "upstream": "tcp://127.0.0.1:5004", "downstream": "tcp://127.0.0.1:5005" },
//!     { "name": "slow", "upstream": "tcp://127.0.0.1:5006", "downstream": "tcp://127.0.0.1:5007" }
//!   ],
//!   "tasks": { "table": { "report": "slow", "/reports/": "slow" }, "default": "fast" }
//! }"#).unwrap();
//! let router = topology.task_router().expect("a tasks table");
//! assert_eq!(router.stage_for(None, "/reports/7"), Ok("slow"));
//! assert_eq!(router.stage_for(Some("report"), "/"), Ok("slow"));
//! assert_eq!(router.stage_for(None, "/other"), Ok("fast"));
//! ```

use crate::base::endpoint::Use;
use crate::base::error::Error;
use crate::pipeline::front_ends::{FrontEndLink, MAX_FRONT_ENDS};
use crate::stages::tasks::TaskRouter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The whole deployment.
///
/// A file names one front end (`"front_end": {...}`) or several (`"front_ends": [{...},
/// ...]`, one pipeline behind them all: see [`crate::pipeline::front_ends`]). A front
/// end's place in the list is its number: `prime_httpd --config F --front-end N` runs
/// front end N, and workers and proxies reach every front end of the list.
///
/// ```
/// let topology = prime_server::deploy::topology::Topology::from_json(r#"{
///   "front_ends": [
///     { "listen": "tcp://10.0.0.1:8002", "loopback": "tcp://10.0.0.1:5001", "interrupt": "tcp://10.0.0.1:5002" },
///     { "listen": "tcp://10.0.0.2:8002", "loopback": "tcp://10.0.0.2:5001", "interrupt": "tcp://10.0.0.2:5002" }
///   ],
///   "stages": [ { "name": "echo", "upstream": "tcp://10.0.0.3:5000", "downstream": "tcp://10.0.0.3:5003" } ]
/// }"#).unwrap();
/// assert_eq!(topology.front_ends.len(), 2);
/// assert_eq!(topology.front_end().listen, "tcp://10.0.0.1:8002");
/// ```
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "TopologyFile", into = "TopologyFile")]
pub struct Topology {
    /// The front ends' endpoints and paths, in the order of their numbers (at least one).
    pub front_ends: Vec<FrontEndSpec>,
    /// The stages, in pipeline order.
    pub stages: Vec<StageSpec>,
    /// Routing by task name and path prefix, for the stages whose service is
    /// [`TASKS_SERVICE`].
    pub tasks: Option<TasksSpec>,
}

/// A topology as the file has it: one front end or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    front_end: Option<FrontEndSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    front_ends: Vec<FrontEndSpec>,
    stages: Vec<StageSpec>,
    #[serde(default)]
    tasks: Option<TasksSpec>,
}

impl TryFrom<TopologyFile> for Topology {
    type Error = String;

    fn try_from(file: TopologyFile) -> Result<Self, String> {
        let front_ends = match (file.front_end, file.front_ends) {
            (Some(one), list) if list.is_empty() => vec![one],
            (None, list) if !list.is_empty() => list,
            (Some(_), _) => return Err("give \"front_end\" or \"front_ends\", not both".into()),
            (None, _) => {
                return Err(
                    "a front end is missing: give \"front_end\" (or a list, \"front_ends\")".into(),
                )
            }
        };
        Ok(Topology {
            front_ends,
            stages: file.stages,
            tasks: file.tasks,
        })
    }
}

impl From<Topology> for TopologyFile {
    fn from(topology: Topology) -> Self {
        TopologyFile {
            front_end: None,
            front_ends: topology.front_ends,
            stages: topology.stages,
            tasks: topology.tasks,
        }
    }
}

/// The service name of a stage that routes by task (a [`TaskRouter`] built from the
/// topology's `tasks`).
pub const TASKS_SERVICE: &str = "tasks";

/// The task table: which stage each task (or path prefix) goes to.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksSpec {
    /// Task name (`X-Task-Name`), or a path prefix starting with `/`, to stage name.
    pub table: BTreeMap<String, String>,
    /// The stage of requests that name no task and match no prefix (400 without one).
    #[serde(default)]
    pub default: Option<String>,
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
    /// The bus between front ends, if the deployment has one (see [`BusSpec`]).
    #[serde(default)]
    pub bus: Option<BusSpec>,
}

/// The bus forwarder's endpoints (`prime_proxyd --config F --bus-only` binds them;
/// `prime_httpd --config F` connects to them).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusSpec {
    /// Where publishers connect (the forwarder's XSUB, bound by it).
    pub xsub: String,
    /// Where subscribers connect (the forwarder's XPUB, bound by it).
    pub xpub: String,
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
        if self.front_ends.len() > MAX_FRONT_ENDS {
            return Err(TopologyError::Invalid(format!(
                "{} front ends: at most {MAX_FRONT_ENDS} can share a pipeline",
                self.front_ends.len()
            )));
        }
        let mut endpoints = Vec::new();
        for (index, front) in self.front_ends.iter().enumerate() {
            // A front end binds these; the others are bound by one daemon and connected
            // to by another, so they must do for both.
            endpoints.push((&front.listen, Use::Bind));
            endpoints.extend(front.netstring.iter().map(|e| (e, Use::Bind)));
            endpoints.push((&front.loopback, Use::Connect));
            endpoints.push((&front.interrupt, Use::Connect));
            let earlier = &self.front_ends[..index];
            if let Some(twin) = earlier
                .iter()
                .position(|f| f.loopback == front.loopback || f.interrupt == front.interrupt)
            {
                return Err(TopologyError::Invalid(format!(
                    "front ends {twin} and {index} share a loopback or interrupt endpoint: each front end binds its own"
                )));
            }
        }
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
            endpoints.push((&stage.upstream, Use::Connect));
            endpoints.push((&stage.downstream, Use::Connect));
        }
        for (endpoint, usage) in endpoints {
            Error::check_endpoint(endpoint, usage)
                .map_err(|e| TopologyError::Invalid(e.to_string()))?;
        }
        self.check_tasks()
    }

    /// Every stage the task table names exists and routes by itself; a `tasks` stage
    /// has a table.
    fn check_tasks(&self) -> Result<(), TopologyError> {
        let routers: Vec<&str> = self
            .stages
            .iter()
            .filter(|s| s.service() == TASKS_SERVICE)
            .map(|s| s.name.as_str())
            .collect();
        let Some(tasks) = &self.tasks else {
            return match routers.first() {
                Some(router) => Err(TopologyError::Invalid(format!(
                    "stage {router:?} runs the {TASKS_SERVICE:?} service, but the file has no \"tasks\" table"
                ))),
                None => Ok(()),
            };
        };
        let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        let rules = tasks
            .table
            .iter()
            .map(|(task, stage)| match task.starts_with('/') {
                true => (format!("path prefix {task:?}"), stage),
                false => (format!("task {task:?}"), stage),
            })
            .chain(tasks.default.iter().map(|d| ("the default".to_string(), d)));
        if tasks.table.keys().any(String::is_empty) {
            return Err(TopologyError::Invalid(
                "the tasks table has an empty task name".into(),
            ));
        }
        for (what, stage) in rules {
            if !names.contains(&stage.as_str()) {
                return Err(TopologyError::Invalid(format!(
                    "the tasks table sends {what} to stage {stage:?}, which is not in the file; the stages are {names:?}"
                )));
            }
            if routers.contains(&stage.as_str()) {
                return Err(TopologyError::Invalid(format!(
                    "the tasks table sends {what} to stage {stage:?}, which routes tasks itself"
                )));
            }
        }
        Ok(())
    }

    /// The router a [`TASKS_SERVICE`] stage runs, if the file has a task table.
    pub fn task_router(&self) -> Option<TaskRouter> {
        let tasks = self.tasks.as_ref()?;
        let mut router = TaskRouter::new();
        for (task, stage) in &tasks.table {
            router = router.task(task, stage);
        }
        if let Some(stage) = &tasks.default {
            router = router.default_stage(stage);
        }
        Some(router)
    }

    /// The task table the front end applies itself, with each stage's upstream by
    /// name: the file's `tasks` table when no stage runs the [`TASKS_SERVICE`] (a file
    /// with a `tasks` stage routes there, as before). See
    /// [`FrontSockets::route_tasks`](crate::FrontSockets::route_tasks).
    pub fn front_end_routes(&self) -> Option<(TaskRouter, Vec<(String, String)>)> {
        if self.stages.iter().any(|s| s.service() == TASKS_SERVICE) {
            return None;
        }
        let router = self.task_router()?;
        let upstreams = self
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.upstream.clone()))
            .collect();
        Some((router, upstreams))
    }

    /// The first front end (the only one of a file with `"front_end"`).
    pub fn front_end(&self) -> &FrontEndSpec {
        &self.front_ends[0]
    }

    /// Front end `number` (from 0, in the file's order).
    pub fn front_end_at(&self, number: usize) -> Result<&FrontEndSpec, TopologyError> {
        self.front_ends.get(number).ok_or_else(|| {
            TopologyError::Invalid(format!(
                "no front end {number}: the file has {} (numbered from 0)",
                self.front_ends.len()
            ))
        })
    }

    /// Every front end's loopback and interrupt publisher, in order: what workers and
    /// proxies connect to.
    pub fn front_end_links(&self) -> Vec<FrontEndLink> {
        self.front_ends
            .iter()
            .map(|f| FrontEndLink::new(&f.loopback, &f.interrupt))
            .collect()
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
        assert_eq!(topology.front_end().jobs_db, None);
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
            topology.front_end().jobs_db.as_deref(),
            Some(std::path::Path::new("/var/lib/prime/jobs.sqlite"))
        );
    }

    const TASKS: &str = r#"{
      "front_end": { "listen": "tcp://127.0.0.1:8002", "loopback": "ipc:///tmp/l", "interrupt": "ipc:///tmp/i" },
      "stages": [
        { "name": "dispatch", "service": "tasks", "upstream": "tcp://127.0.0.1:5000", "downstream": "tcp://127.0.0.1:5001" },
        { "name": "fast", "upstream": "tcp://127.0.0.1:5002", "downstream": "tcp://127.0.0.1:5003" },
        { "name": "slow", "upstream": "tcp://127.0.0.1:5004", "downstream": "tcp://127.0.0.1:5005" }
      ],
      "tasks": { "table": { "report": "slow", "/reports/": "slow", "lookup": "fast" }, "default": "fast" }
    }"#;

    #[test]
    fn a_task_table_builds_the_router() {
        let topology = Topology::from_json(TASKS).expect("valid");
        let router = topology.task_router().expect("a router");
        assert_eq!(router.stage_for(Some("lookup"), "/reports/1"), Ok("fast"));
        assert_eq!(router.stage_for(None, "/reports/1"), Ok("slow"));
        assert_eq!(router.stage_for(None, "/x"), Ok("fast"));
        assert!(router.stage_for(Some("nope"), "/x").is_err());
        assert!(Topology::from_json(GOOD)
            .expect("valid")
            .task_router()
            .is_none());
    }

    #[test]
    fn a_task_table_naming_a_missing_stage_is_refused_by_name() {
        let invalid = |text: String| match Topology::from_json(&text) {
            Err(TopologyError::Invalid(why)) => why,
            other => panic!("not refused: {other:?}"),
        };
        let missing = invalid(TASKS.replace(r#""report": "slow""#, r#""report": "sloow""#));
        assert!(
            missing.contains("\"sloow\"") && missing.contains("report"),
            "{missing}"
        );
        let default = invalid(TASKS.replace(r#""default": "fast""#, r#""default": "nowhere""#));
        assert!(default.contains("\"nowhere\""), "{default}");
        let prefix = invalid(TASKS.replace(r#""/reports/": "slow""#, r#""/reports/": "gone""#));
        assert!(
            prefix.contains("/reports/") && prefix.contains("\"gone\""),
            "{prefix}"
        );
        let to_itself = invalid(TASKS.replace(r#""lookup": "fast""#, r#""lookup": "dispatch""#));
        assert!(to_itself.contains("routes tasks itself"), "{to_itself}");
        let no_table = TASKS.replace(
            r#""tasks": { "table": { "report": "slow", "/reports/": "slow", "lookup": "fast" }, "default": "fast" }"#,
            r#""tasks": null"#,
        );
        assert!(invalid(no_table).contains("no \"tasks\" table"));
        let typo = TASKS.replace(r#""default""#, r#""defualt""#);
        assert!(matches!(
            Topology::from_json(&typo),
            Err(TopologyError::Parse(_))
        ));
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
