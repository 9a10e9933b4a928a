//! Routing by task name: a small first stage that reads the `X-Task-Name` header and
//! sends the request, untouched, to the stage its table names. Costly and cheap tasks
//! then run on separate pools (each stage has its own proxy and workers), so a queue of
//! slow jobs never delays the fast ones.
//!
//! ```
//! use prime_server::stage::HttpGateway;
//! use prime_server::tasks::TaskRouter;
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

use crate::stage::{HttpJob, HttpWork, Next, StageError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The header that names a request's task.
pub const TASK_HEADER: &str = "X-Task-Name";

/// A stage that forwards each request to the stage named for its `X-Task-Name`.
/// A request without the header goes to the default stage (400 without one); a name
/// not in the table is answered 400.
#[derive(Clone, Debug, Default)]
pub struct TaskRouter {
    table: Arc<BTreeMap<String, String>>,
    default: Option<String>,
}

impl TaskRouter {
    /// A router with an empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends task `name` to the stage `stage`.
    pub fn task(mut self, name: &str, stage: &str) -> Self {
        Arc::make_mut(&mut self.table).insert(name.to_string(), stage.to_string());
        self
    }

    /// Sends requests without a task name to `stage`.
    pub fn default_stage(mut self, stage: &str) -> Self {
        self.default = Some(stage.to_string());
        self
    }

    /// The stages this router sends to, each once.
    pub fn stages(&self) -> Vec<&str> {
        let mut stages: Vec<&str> = self.table.values().map(String::as_str).collect();
        stages.extend(self.default.as_deref());
        stages.sort_unstable();
        stages.dedup();
        stages
    }

    /// Reads `NAME=STAGE` (the form of `--task`).
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
        let name = job.request()?.header(TASK_HEADER).map(str::trim);
        let stage = match name {
            Some(name) => self.table.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.table.keys().map(String::as_str).collect();
                StageError::bad_request(format!(
                    "no task is named {name:?}; the tasks are {known:?}"
                ))
            })?,
            None => self.default.as_ref().ok_or_else(|| {
                StageError::bad_request(format!("this service needs an {TASK_HEADER} header"))
            })?,
        };
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
    fn the_stages_are_listed_once() {
        let router = TaskRouter::new()
            .task("a", "slow")
            .task("b", "slow")
            .default_stage("fast");
        assert_eq!(router.stages(), vec!["fast", "slow"]);
    }
}
