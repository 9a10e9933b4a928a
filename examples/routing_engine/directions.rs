//! The `directions` stage: turns a path of node ids into what a driver reads: its cost,
//! its length and a list of manoeuvres (start, turns, straight stretches, arrive).

use crate::graph::Graph;
use crate::search::RouteFound;
use prime_server::http::Response;
use prime_server::stages::{HttpJob, HttpWork, Next, StageError};
use serde::Serialize;
use std::sync::Arc;

/// Turns sharper than this many degrees are left or right; gentler ones are straight on.
/// Grid streets meet at about 90 degrees and the jitter bends a straight street by less
/// than 45, so the split falls between the two.
const STRAIGHT_DEGREES: f64 = 45.0;

/// One instruction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manoeuvre {
    /// `start`, `straight`, `left`, `right` or `arrive`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The node where it happens.
    pub node: u32,
    /// How far to go after it (none for `start` and `arrive`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
}

/// A worker of the `directions` stage.
#[derive(Clone)]
pub struct Directions {
    /// The road network, for node positions.
    graph: Arc<Graph>,
}

impl Directions {
    /// A worker reading positions from `graph`.
    pub fn new(graph: Arc<Graph>) -> Directions {
        Directions { graph }
    }
}

impl HttpWork for Directions {
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        let route: RouteFound = job.intermediate_json()?;
        if route
            .path
            .iter()
            .any(|&u| u as usize >= self.graph.node_count())
        {
            return Err(StageError::internal(
                "the search stage sent an unknown node",
            ));
        }
        let manoeuvres = manoeuvres(&self.graph, &route.path);
        let body = serde_json::json!({
            "from": route.from,
            "to": route.to,
            "cost": route.cost,
            "nodes": route.path.len(),
            "length": length(&self.graph, &route.path),
            "manoeuvres": manoeuvres,
            "path": route.path,
        });
        Ok(Next::respond(Response::json(200, &body)))
    }
}

/// The straight-line length of a path, edge by edge.
pub fn length(graph: &Graph, path: &[u32]) -> f64 {
    path.windows(2).map(|w| graph.distance(w[0], w[1])).sum()
}

/// The manoeuvres along `path`: `start`, then for each edge the turn onto it with the
/// edge's length (consecutive `straight` ones merged into one), then `arrive`.
pub fn manoeuvres(graph: &Graph, path: &[u32]) -> Vec<Manoeuvre> {
    let (Some(&first), Some(&last)) = (path.first(), path.last()) else {
        return Vec::new();
    };
    let mut list = vec![Manoeuvre {
        kind: "start",
        node: first,
        distance: None,
    }];
    for (index, edge) in path.windows(2).enumerate() {
        let kind = match index {
            0 => "straight",
            _ => turn(graph, path[index - 1], edge[0], edge[1]),
        };
        let distance = graph.distance(edge[0], edge[1]);
        match list.last_mut() {
            Some(previous) if kind == "straight" && previous.kind == "straight" => {
                previous.distance = previous.distance.map(|d| d + distance);
            }
            _ => list.push(Manoeuvre {
                kind,
                node: edge[0],
                distance: Some(distance),
            }),
        }
    }
    list.push(Manoeuvre {
        kind: "arrive",
        node: last,
        distance: None,
    });
    list
}

/// Which way a driver turns at `via`, coming from `from` and going on to `to`: the
/// signed angle between the two edges, counterclockwise (latitude grows upward) is left.
fn turn(graph: &Graph, from: u32, via: u32, to: u32) -> &'static str {
    let ((ax, ay), (bx, by), (cx, cy)) = (
        graph.position(from),
        graph.position(via),
        graph.position(to),
    );
    let (inx, iny, outx, outy) = (bx - ax, by - ay, cx - bx, cy - by);
    let cross = inx * outy - iny * outx;
    let dot = inx * outx + iny * outy;
    let degrees = cross.atan2(dot).to_degrees();
    if degrees.abs() <= STRAIGHT_DEGREES {
        "straight"
    } else if degrees > 0.0 {
        "left"
    } else {
        "right"
    }
}
