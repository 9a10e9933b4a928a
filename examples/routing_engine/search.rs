//! The `search` stage: A* over the shared graph, with buffers each worker keeps from one
//! request to the next, stopping as soon as the client has gone.

use crate::graph::Graph;
use prime_server::stages::{HttpJob, HttpWork, Next, StageError};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// How many nodes the search settles between two looks at the interrupt: a look costs
/// well under a microsecond, 1024 nodes some tens of microseconds, so a client that hangs
/// up stops the search within a fraction of a millisecond at no measurable cost.
const POLL_EVERY: u32 = 1024;

/// The heuristic is scaled a hair below the graph's smallest cost factor so that
/// rounding can never make it overestimate, which would cost exactness.
const HEURISTIC_MARGIN: f64 = 1.0 - 1e-9;

/// What the `parse` stage sends here: a validated pair of node ids.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct RouteRequest {
    /// Where the route starts.
    pub from: u32,
    /// Where it ends.
    pub to: u32,
}

/// What this stage sends to `directions`: the cheapest route.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RouteFound {
    /// Where the route starts.
    pub from: u32,
    /// Where it ends.
    pub to: u32,
    /// The sum of the costs of its edges.
    pub cost: f64,
    /// Its nodes, `from` first and `to` last.
    pub path: Vec<u32>,
}

/// How a search ended.
pub enum SearchEnd {
    /// The cheapest route.
    Found {
        /// Its cost.
        cost: f64,
        /// Its nodes in order.
        path: Vec<u32>,
    },
    /// No route exists (never on the example's graph, which is connected).
    Unreachable,
    /// The caller asked to stop after this many settled nodes.
    Interrupted(u32),
}

/// A worker of the `search` stage: the shared graph and this worker's own scratch
/// space, so no request allocates per-node arrays and no lock is taken.
#[derive(Clone)]
pub struct Search {
    /// The road network, shared by every worker of every stage.
    graph: Arc<Graph>,
    /// The best cost known for each node; `INFINITY` for nodes not reached.
    cost: Vec<f64>,
    /// The node each reached node was reached from.
    parent: Vec<u32>,
    /// The nodes whose `cost` this search set, so cleanup resets only those.
    touched: Vec<u32>,
    /// The open set.
    heap: BinaryHeap<Open>,
}

/// An entry of the open set, ordered so that `BinaryHeap` pops the smallest estimate.
#[derive(Clone, Copy, Debug)]
struct Open {
    /// Cost so far plus the heuristic's estimate of the rest.
    estimate: f64,
    /// Cost so far when pushed; a later, cheaper push makes this entry stale.
    cost: f64,
    /// The node.
    node: u32,
}

impl PartialEq for Open {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Open {}

impl PartialOrd for Open {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Open {
    fn cmp(&self, other: &Self) -> Ordering {
        other.estimate.total_cmp(&self.estimate)
    }
}

impl Search {
    /// A worker's state. The per-node buffers are allocated on the first request, inside
    /// the worker thread, so the prototype the pipeline clones stays small.
    pub fn new(graph: Arc<Graph>) -> Search {
        Search {
            graph,
            cost: Vec::new(),
            parent: Vec::new(),
            touched: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// The cheapest route from `from` to `to`, or why there is none. `stop` is asked
    /// every [`POLL_EVERY`] settled nodes whether to give up.
    pub fn route(&mut self, from: u32, to: u32, mut stop: impl FnMut() -> bool) -> SearchEnd {
        self.prepare();
        let target = self.graph.position(to);
        let scale = self.graph.min_factor() * HEURISTIC_MARGIN;
        let graph = Arc::clone(&self.graph);
        let heuristic = |u: u32| {
            let (x, y) = graph.position(u);
            scale * (x - target.0).hypot(y - target.1)
        };
        self.reach(from, from, 0.0, heuristic(from));
        let mut settled = 0u32;
        while let Some(open) = self.heap.pop() {
            if open.cost > self.cost[open.node as usize] {
                continue; // a cheaper way to this node was found after this push
            }
            if open.node == to {
                return SearchEnd::Found {
                    cost: open.cost,
                    path: self.path_to(from, to),
                };
            }
            settled += 1;
            if settled.is_multiple_of(POLL_EVERY) && stop() {
                return SearchEnd::Interrupted(settled);
            }
            for (next, edge_cost) in graph.edges(open.node) {
                let cost = open.cost + edge_cost;
                if cost < self.cost[next as usize] {
                    self.reach(next, open.node, cost, cost + heuristic(next));
                }
            }
        }
        SearchEnd::Unreachable
    }

    /// Sizes the buffers for the graph the first time; later searches find them reset
    /// by [`cleanup`](HttpWork::cleanup), or reset them here if nobody called it.
    fn prepare(&mut self) {
        let nodes = self.graph.node_count();
        if self.cost.len() != nodes {
            self.cost = vec![f64::INFINITY; nodes];
            self.parent = vec![u32::MAX; nodes];
        }
        self.reset();
    }

    /// Forgets the last search: only the nodes it touched, so a short route costs a
    /// short reset instead of a pass over every node.
    fn reset(&mut self) {
        for &node in &self.touched {
            self.cost[node as usize] = f64::INFINITY;
        }
        self.touched.clear();
        self.heap.clear();
    }

    /// Records that `node` is reached from `parent` at `cost`, and opens it.
    fn reach(&mut self, node: u32, parent: u32, cost: f64, estimate: f64) {
        if self.cost[node as usize] == f64::INFINITY {
            self.touched.push(node);
        }
        self.cost[node as usize] = cost;
        self.parent[node as usize] = parent;
        self.heap.push(Open {
            estimate,
            cost,
            node,
        });
    }

    /// The nodes from `from` to `to`, following parents back from `to`.
    fn path_to(&self, from: u32, to: u32) -> Vec<u32> {
        let mut path = vec![to];
        let mut node = to;
        while node != from {
            node = self.parent[node as usize];
            path.push(node);
        }
        path.reverse();
        path
    }
}

impl HttpWork for Search {
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        let RouteRequest { from, to } = job.intermediate_json()?;
        let nodes = self.graph.node_count();
        if from as usize >= nodes || to as usize >= nodes {
            return Err(StageError::internal(
                "the parse stage let an unknown node through",
            ));
        }
        let request_id = job.envelope().request_id;
        match self.route(from, to, || job.interrupted()) {
            SearchEnd::Found { cost, path } => Next::forward_json(&RouteFound {
                from,
                to,
                cost,
                path,
            }),
            SearchEnd::Unreachable => Err(StageError::not_found(format!(
                "no route from node {from} to node {to}"
            ))),
            SearchEnd::Interrupted(settled) => {
                log::info!(
                    "request {request_id}: route {from} -> {to} abandoned after {settled} nodes"
                );
                Ok(Next::Abandon)
            }
        }
    }

    /// Resets what the last search touched, whatever its outcome, so the next request
    /// starts clean and waits for nothing.
    fn cleanup(&mut self) {
        self.reset();
    }
}
