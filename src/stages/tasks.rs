//! Routing by task name: a table that sends each request, untouched, to the stage its
//! `X-Task-Name` header names. Costly and cheap tasks then run on separate pools (each
//! stage has its own proxy and workers), so a queue of slow jobs never delays the fast
//! ones.
//!
//! Clients that cannot set a header are routed by path: a rule whose name starts with
//! `/` is a path prefix (`/reports/=slow` sends `/reports/2024` to `slow`). The choice,
//! in order: the `X-Task-Name` header when present (a name not in the table is `400`);
//! else the longest path prefix that matches the request's path; else the default
//! stage; else no stage ([`TaskRefusal::NoRule`]). The same rules come from
//! `--task NAME=STAGE` (`prime_gatewayd`) and from a topology file's `tasks` table (see
//! [`crate::deploy::topology`]).
//!
//! Two places apply a [`TaskRouter`], both through [`TaskRouter::stage_for`]:
//! - the front end ([`Pipeline::route_tasks`](crate::Pipeline::route_tasks),
//!   [`FrontSockets::route_tasks`](crate::FrontSockets::route_tasks)): it keeps an entry
//!   to each named stage's proxy and sends a request straight there, with no extra hop;
//!   it answers an unknown name `400` itself and sends a request matching no rule to the
//!   first stage. `prime_gatewayd --task` and `prime_httpd` with a topology whose table
//!   has no `tasks` stage route this way.
//! - a stage of its own (below): a first stage whose workers forward each request by
//!   stage name ([`Next::to`]); a request matching no rule is `400`. One hop more, for
//!   a pipeline that wants the routing in a stage (a topology's `"service": "tasks"`).
//!
//! ```
//! use prime_server::stages::HttpGateway;
//! use prime_server::stages::tasks::TaskRouter;
//!
//! let router = TaskRouter::new()
//!     .task("report", "slow")
//!     .task("lookup", "fast")
//!     .default_stage("fast");
//! let backend = HttpGateway::new("http://127.0.0.1:9000").unwrap();
//! let pipeline = prime_server::Pipeline::new()
//!     .http_stage("dispatch", 1, router)
//!     .http_stage("fast", 8, backend.clone())
//!     .http_stage("slow", 2, backend);
//! # drop(pipeline);
//! ```

use crate::http::field_values;
use crate::http::RequestHead;
use crate::stages::api::{HttpJob, HttpWork, Next, StageError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The header that names a request's task.
pub const TASK_HEADER: &str = "X-Task-Name";

/// Why a request has no stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskRefusal {
    /// The request names a task the table does not know (always answered `400`).
    UnknownTask {
        /// The name the request gave.
        name: String,
        /// The names the table knows.
        known: Vec<String>,
    },
    /// The request names no task, no path prefix matches and there is no default
    /// stage: [`TaskRouter`] answers `400`, the front end sends it to its first stage.
    NoRule {
        /// The path prefixes the table knows.
        prefixes: Vec<String>,
    },
}

impl std::fmt::Display for TaskRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskRefusal::UnknownTask { name, known } => {
                write!(f, "no task is named {name:?}; the tasks are {known:?}")
            }
            TaskRefusal::NoRule { prefixes } if prefixes.is_empty() => {
                write!(f, "this service needs an {TASK_HEADER} header")
            }
            TaskRefusal::NoRule { prefixes } => write!(
                f,
                "this service needs an {TASK_HEADER} header or a path under one of {prefixes:?}"
            ),
        }
    }
}

impl std::error::Error for TaskRefusal {}

/// A stage that forwards each request to the stage named for its `X-Task-Name`.
/// A request without the header goes to the default stage (400 without one); a name
/// not in the table is answered 400.
#[derive(Clone, Debug, Default)]
pub struct TaskRouter {
    table: Arc<BTreeMap<String, String>>,
    /// Path prefixes and their stages, longest prefix first.
    prefixes: Arc<Vec<(String, String)>>,
    default: Option<String>,
}

impl TaskRouter {
    /// A router with an empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends task `name` to the stage `stage`; a `name` starting with `/` is a path
    /// prefix instead (see [`prefix`](Self::prefix)).
    pub fn task(mut self, name: &str, stage: &str) -> Self {
        if name.starts_with('/') {
            return self.prefix(name, stage);
        }
        Arc::make_mut(&mut self.table).insert(name.to_string(), stage.to_string());
        self
    }

    /// Sends requests without an `X-Task-Name` whose (percent-decoded) path starts with
    /// `prefix` to `stage`; of several matching prefixes the longest wins. `/reports/`
    /// matches `/reports/7` but not `/reports`; `/reports` matches both, and
    /// `/reportsx` too.
    ///
    /// ```
    /// use prime_server::stages::tasks::TaskRouter;
    /// let router = TaskRouter::new().prefix("/a/", "one").prefix("/a/b/", "two");
    /// assert_eq!(router.stage_for(None, "/a/b/c"), Ok("two"));
    /// assert_eq!(router.stage_for(None, "/a/c"), Ok("one"));
    /// assert!(router.stage_for(None, "/c").is_err());
    /// ```
    pub fn prefix(mut self, prefix: &str, stage: &str) -> Self {
        let prefixes = Arc::make_mut(&mut self.prefixes);
        prefixes.retain(|(known, _)| known != prefix);
        prefixes.push((prefix.to_string(), stage.to_string()));
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        self
    }

    /// The stage for a request with task name `name` (the `X-Task-Name` value, if
    /// any) and path `path`, or why there is none (a [`TaskRefusal`]).
    pub fn stage_for(&self, name: Option<&str>, path: &str) -> Result<&str, TaskRefusal> {
        if let Some(name) = name {
            return self.table.get(name).map(String::as_str).ok_or_else(|| {
                TaskRefusal::UnknownTask {
                    name: name.to_string(),
                    known: self.table.keys().cloned().collect(),
                }
            });
        }
        let by_path = self
            .prefixes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()));
        match (by_path, &self.default) {
            (Some((_, stage)), _) | (None, Some(stage)) => Ok(stage),
            (None, None) => Err(TaskRefusal::NoRule {
                prefixes: self.prefixes.iter().map(|(p, _)| p.clone()).collect(),
            }),
        }
    }

    /// The stage for a request given by its head bytes (as the front end forwards it):
    /// [`stage_for`](Self::stage_for) with the head's `X-Task-Name` and
    /// percent-decoded path. A head that does not parse is refused like an unknown name.
    ///
    /// ```
    /// use prime_server::stages::tasks::TaskRouter;
    /// let router = TaskRouter::new().task("report", "slow").task("/fast/", "fast");
    /// let head = b"GET /x HTTP/1.1\r\nX-Task-Name: report\r\n\r\n";
    /// assert_eq!(router.stage_for_head(head), Ok("slow"));
    /// assert_eq!(router.stage_for_head(b"GET /fast/%31 HTTP/1.1\r\n\r\n"), Ok("fast"));
    /// assert!(router.stage_for_head(b"GET /x HTTP/1.1\r\nX-Task-Name: no\r\n\r\n").is_err());
    /// ```
    pub fn stage_for_head(&self, head: &[u8]) -> Result<&str, TaskRefusal> {
        let parsed = RequestHead::parse(head).map_err(|e| TaskRefusal::UnknownTask {
            name: format!("(a head that does not parse: {e})"),
            known: self.table.keys().cloned().collect(),
        })?;
        let name = field_values(head, TASK_HEADER)
            .next()
            .map(|value| std::str::from_utf8(value).unwrap_or("\u{fffd}"));
        self.stage_for(name, &parsed.path())
    }

    /// Sends requests without a task name to `stage`.
    pub fn default_stage(mut self, stage: &str) -> Self {
        self.default = Some(stage.to_string());
        self
    }

    /// The stages this router sends to, each once.
    pub fn stages(&self) -> Vec<&str> {
        let mut stages: Vec<&str> = self.table.values().map(String::as_str).collect();
        stages.extend(self.prefixes.iter().map(|(_, stage)| stage.as_str()));
        stages.extend(self.default.as_deref());
        stages.sort_unstable();
        stages.dedup();
        stages
    }

    /// Reads `NAME=STAGE` (the form of `--task`); a NAME starting with `/` is a path
    /// prefix.
    pub fn parse_rule(rule: &str) -> Result<(String, String), String> {
        match rule.split_once('=') {
            Some((name, stage)) if !name.is_empty() && !stage.is_empty() => {
                Ok((name.to_string(), stage.to_string()))
            }
            _ => Err(format!("--task takes NAME=STAGE, not {rule:?}")),
        }
    }
}

impl HttpWork for TaskRouter {
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        let request_id = job.envelope().request_id;
        let request = job.request()?;
        let name = request.header(TASK_HEADER).map(str::trim);
        let stage = self
            .stage_for(name, &request.path)
            .map_err(|refusal| StageError::bad_request(refusal.to_string()))?;
        log::debug!("request {request_id}: task {name:?} goes to stage {stage:?}");
        Ok(Next::to(stage, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_name_equals_stage() {
        assert_eq!(
            TaskRouter::parse_rule("report=slow").unwrap(),
            ("report".to_string(), "slow".to_string())
        );
        assert!(TaskRouter::parse_rule("report").is_err());
        assert!(TaskRouter::parse_rule("=slow").is_err());
        assert!(TaskRouter::parse_rule("report=").is_err());
    }

    #[test]
    fn the_header_comes_first_then_the_longest_prefix_then_the_default() {
        let router = TaskRouter::new()
            .task("report", "slow")
            .task("/reports/", "slow")
            .task("/reports/quick/", "fast")
            .default_stage("fast");
        assert_eq!(router.stage_for(Some("report"), "/x"), Ok("slow"));
        assert!(router.stage_for(Some("nope"), "/reports/1").is_err());
        assert_eq!(router.stage_for(None, "/reports/1"), Ok("slow"));
        assert_eq!(router.stage_for(None, "/reports/quick/1"), Ok("fast"));
        assert_eq!(router.stage_for(None, "/reports"), Ok("fast"));
        let strict = TaskRouter::new().task("/only/", "one");
        let refusal = strict.stage_for(None, "/other").unwrap_err().to_string();
        assert!(refusal.contains("/only/"), "{refusal}");
        assert_eq!(strict.stages(), vec!["one"]);
    }

    #[test]
    fn a_json_rpc_method_is_a_task_name() {
        assert_eq!(crate::stages::jsonrpc::METHOD_HEADER, TASK_HEADER);
    }

    #[test]
    fn the_stages_are_listed_once() {
        let router = TaskRouter::new()
            .task("a", "slow")
            .task("b", "slow")
            .default_stage("fast");
        assert_eq!(router.stages(), vec!["fast", "slow"]);
    }
}
