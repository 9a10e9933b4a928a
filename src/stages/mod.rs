//! Stages written against HTTP: a stage function receives the parsed request and what
//! earlier stages forwarded, and returns a typed decision ([`Next`]) or a [`StageError`]
//! that becomes the right HTTP status with a JSON body.
//!
//! A job's frames are the request (for HTTP: its head and its body) followed by one
//! intermediate payload from the stage before. Forwarding keeps the request frames
//! without copying them and replaces the payload, so every stage can still read the
//! original request.
//!
//! ```
//! use prime_server::http::Response;
//! use prime_server::stages::{HttpJob, Next, StageError};
//!
//! /// First stage: answer `/ping` at once, send `/double?n=` on to the next stage.
//! fn parse(job: &mut HttpJob) -> Result<Next, StageError> {
//!     let request = job.request()?;
//!     match request.path.as_str() {
//!         "/ping" => Ok(Next::respond(Response::new(200).body("pong"))),
//!         "/double" => {
//!             let n: u64 = request
//!                 .query_values("n")
//!                 .next()
//!                 .and_then(|v| v.parse().ok())
//!                 .ok_or_else(|| StageError::bad_request("n must be a whole number"))?;
//!             Next::forward_json(&n)
//!         }
//!         _ => Err(StageError::not_found("try /ping or /double?n=21")),
//!     }
//! }
//!
//! /// Second stage: reads what the first forwarded and answers with JSON.
//! fn double(job: &mut HttpJob) -> Result<Next, StageError> {
//!     let n: u64 = job.intermediate_json()?;
//!     Ok(Next::respond(Response::json(200, &serde_json::json!({ "doubled": 2 * n }))))
//! }
//!
//! let pipeline = prime_server::Pipeline::new()
//!     .http_stage("parse", 2, parse)
//!     .http_stage("double", 2, double);
//! # drop(pipeline);
//! ```
//!
//! Besides the API ([`HttpJob`], [`Next`], [`StageError`], [`HttpWork`]), three stages
//! come ready-made: [`gateway`] forwards requests to an HTTP backend, [`files`] serves
//! the files under a directory, and [`tasks`] routes each request to the stage its task
//! name or path names.

mod api;
pub mod files;
pub mod gateway;
mod gateway_answer;
mod gateway_backend;
mod gateway_calls;
mod gateway_path;
mod gateway_plain;
mod gateway_wire;
mod gateway_ws;
pub mod grip;
pub mod jsonrpc;
pub mod tasks;

pub use crate::pipeline::channel::{Hold, HoldMode, Item};
pub use api::{HttpJob, HttpStage, HttpWork, Next, StageError};
pub use files::StaticFiles;
pub use gateway::HttpGateway;
