//! The `parse` stage: reads and checks the request, answers `/locate` at once (it costs
//! microseconds) and sends `/route` on to `search` (it may cost hundreds of
//! milliseconds), so cheap requests never queue behind costly ones.

use crate::graph::Graph;
use crate::locate::SpatialIndex;
use crate::search::RouteRequest;
use prime_server::http::{Request, Response};
use prime_server::stages::{HttpJob, HttpWork, Next, StageError};
use std::sync::Arc;

/// The methods every path accepts (the front end answers HEAD as GET without the body).
const ALLOWED: &str = "GET, HEAD";

/// A worker of the `parse` stage.
#[derive(Clone)]
pub struct Parse {
    /// The road network, to check node ids and report positions.
    graph: Arc<Graph>,
    /// The bucket grid for `/locate`.
    index: Arc<SpatialIndex>,
}

impl Parse {
    /// A worker answering from `graph` and its `index`.
    pub fn new(graph: Arc<Graph>, index: Arc<SpatialIndex>) -> Parse {
        Parse { graph, index }
    }

    /// What the service answers at an unknown path: where to look instead.
    fn usage(&self) -> StageError {
        let last = self.graph.node_count() - 1;
        StageError::not_found(format!(
            "try /locate?lat=0.5&lon=0.5 or /route?from=0&to={last}"
        ))
    }

    /// `/locate?lat=&lon=`: the nearest node, its position and distance.
    fn locate(&self, request: &Request) -> Result<Next, StageError> {
        let lat = coordinate(request, "lat")?;
        let lon = coordinate(request, "lon")?;
        let nearest = self
            .index
            .nearest(&self.graph, lon, lat)
            .ok_or_else(|| StageError::internal("the graph has no nodes"))?;
        let (x, y) = self.graph.position(nearest.node);
        let body = serde_json::json!({
            "node": nearest.node,
            "lat": y,
            "lon": x,
            "distance": nearest.distance,
        });
        Ok(Next::respond(Response::json(200, &body)))
    }

    /// `/route?from=&to=`: checks both ids, then hands the search to `search`.
    fn route(&self, request: &Request) -> Result<Next, StageError> {
        let from = self.node(request, "from")?;
        let to = self.node(request, "to")?;
        Next::to_json("search", &RouteRequest { from, to })
    }

    /// The node id in query parameter `name`.
    fn node(&self, request: &Request, name: &str) -> Result<u32, StageError> {
        let nodes = self.graph.node_count();
        let text = single(request, name)?;
        text.parse::<u32>()
            .ok()
            .filter(|&id| (id as usize) < nodes)
            .ok_or_else(|| {
                StageError::bad_request(format!(
                    "{name} must be a node id from 0 to {}, not {text:?}",
                    nodes - 1
                ))
            })
    }
}

impl HttpWork for Parse {
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        let request = job.request()?;
        let action = match request.path.as_str() {
            "/locate" => Parse::locate,
            "/route" => Parse::route,
            _ => return Err(self.usage()),
        };
        if !matches!(request.method.as_str(), "GET" | "HEAD") {
            return Err(StageError::method_not_allowed(
                ALLOWED,
                format!("{} takes GET, not {}", request.path, request.method),
            ));
        }
        action(self, request)
    }
}

/// The one value of query parameter `name`: missing or repeated is an error, since
/// guessing which of two values the client meant would hide its mistake.
fn single<'r>(request: &'r Request, name: &'r str) -> Result<&'r str, StageError> {
    let mut values = request.query_values(name);
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value),
        (None, _) => Err(StageError::bad_request(format!("{name} is required"))),
        (Some(_), Some(_)) => Err(StageError::bad_request(format!(
            "{name} is given more than once"
        ))),
    }
}

/// A coordinate in query parameter `name`: a number in [0, 1], the graph's extent.
fn coordinate(request: &Request, name: &str) -> Result<f64, StageError> {
    let text = single(request, name)?;
    text.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| {
            StageError::bad_request(format!("{name} must be a number from 0 to 1, not {text:?}"))
        })
}
