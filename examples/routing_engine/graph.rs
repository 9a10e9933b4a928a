//! The road network the routing example serves: a jittered grid in the unit square with
//! some streets missing and a random cost per direction of every street, stored as
//! compressed sparse rows.
//!
//! The example and its integration test (which includes this file with `#[path]`) both
//! build it from the same seed, so the test can check the server's answers against its
//! own search over the very same graph.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Columns of the grid.
pub const WIDTH: usize = 600;
/// Rows of the grid.
pub const HEIGHT: usize = 500;
/// The seed of the one graph the example serves.
pub const SEED: u64 = 0x5EED_F0AD;

/// Where a node lies inside its grid cell, as a fraction of the cell: away from the
/// cell's edges, so that no two nodes come close to each other and no street has
/// length zero.
const JITTER: std::ops::Range<f64> = 0.3..0.7;
/// How many vertical streets are missing, to make routes less regular than a grid.
const MISSING_SHARE: f64 = 0.2;
/// Columns whose index is a multiple of this keep all their vertical streets. Every row
/// keeps all its horizontal streets, so any node reaches column 0 along its row and any
/// row along column 0: the graph stays connected whatever is removed elsewhere.
const FULL_COLUMN_EVERY: usize = 10;
/// The cost of an edge is its length times a factor drawn from this range (traffic,
/// speed limits): at least the length, which keeps straight-line distance admissible.
const COST_FACTOR: std::ops::Range<f64> = 1.0..3.0;

/// A directed graph in compressed sparse rows: the edges leaving node `u` are
/// `offsets[u]..offsets[u + 1]` in `targets` and `costs`.
pub struct Graph {
    /// Longitude (x) of each node, in [0, 1).
    xs: Vec<f64>,
    /// Latitude (y) of each node, in [0, 1).
    ys: Vec<f64>,
    /// Where each node's edges begin; one more entry than there are nodes.
    offsets: Vec<u32>,
    /// The node each edge leads to.
    targets: Vec<u32>,
    /// The cost of each edge.
    costs: Vec<f64>,
    /// Columns of the grid the graph was made from (node `(i, j)` is `j * width + i`).
    width: usize,
    /// The smallest cost per unit of length over all edges.
    min_factor: f64,
}

impl Graph {
    /// The graph the example serves: [`WIDTH`] x [`HEIGHT`] nodes from [`SEED`].
    pub fn standard() -> Graph {
        Graph::build(WIDTH, HEIGHT, SEED)
    }

    /// A `width` x `height` grid graph; the same arguments always give the same graph.
    pub fn build(width: usize, height: usize, seed: u64) -> Graph {
        assert!(
            width >= 2 && height >= 2,
            "a grid needs two rows and columns"
        );
        assert!(
            width * height < u32::MAX as usize,
            "node ids must fit in u32"
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let (xs, ys) = positions(width, height, &mut rng);
        let streets = streets(width, height, &mut rng);
        let (offsets, targets) = adjacency(width * height, &streets);
        let mut graph = Graph {
            costs: Vec::with_capacity(targets.len()),
            xs,
            ys,
            offsets,
            targets,
            width,
            min_factor: f64::INFINITY,
        };
        graph.draw_costs(&mut rng);
        graph
    }

    /// How many nodes there are; ids are `0..node_count()`.
    pub fn node_count(&self) -> usize {
        self.xs.len()
    }

    /// How many directed edges there are (two per street).
    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    /// The node in column `column` and row `row` of the grid.
    pub fn node_at(&self, column: usize, row: usize) -> u32 {
        (row * self.width + column) as u32
    }

    /// Where node `u` lies: (longitude, latitude).
    pub fn position(&self, u: u32) -> (f64, f64) {
        (self.xs[u as usize], self.ys[u as usize])
    }

    /// The straight-line distance between nodes `u` and `v`.
    pub fn distance(&self, u: u32, v: u32) -> f64 {
        let ((ux, uy), (vx, vy)) = (self.position(u), self.position(v));
        (ux - vx).hypot(uy - vy)
    }

    /// The edges leaving `u`: (target, cost).
    pub fn edges(&self, u: u32) -> impl Iterator<Item = (u32, f64)> + '_ {
        let range = self.offsets[u as usize] as usize..self.offsets[u as usize + 1] as usize;
        self.targets[range.clone()]
            .iter()
            .copied()
            .zip(self.costs[range].iter().copied())
    }

    /// The smallest cost per unit of length of any edge: straight-line distance times
    /// this never overestimates the cost of a route, which is what A* needs.
    pub fn min_factor(&self) -> f64 {
        self.min_factor
    }

    /// Gives every edge its cost, in edge order so that the seed decides them all.
    fn draw_costs(&mut self, rng: &mut StdRng) {
        for u in 0..self.node_count() as u32 {
            let range = self.offsets[u as usize] as usize..self.offsets[u as usize + 1] as usize;
            for edge in range {
                let length = self.distance(u, self.targets[edge]);
                let factor = rng.gen_range(COST_FACTOR);
                let cost = length * factor;
                self.costs.push(cost);
                self.min_factor = self.min_factor.min(cost / length);
            }
        }
    }
}

/// Each node's position: its cell's corner plus a random offset inside the cell.
fn positions(width: usize, height: usize, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let mut xs = Vec::with_capacity(width * height);
    let mut ys = Vec::with_capacity(width * height);
    for j in 0..height {
        for i in 0..width {
            xs.push((i as f64 + rng.gen_range(JITTER)) / width as f64);
            ys.push((j as f64 + rng.gen_range(JITTER)) / height as f64);
        }
    }
    (xs, ys)
}

/// The streets as pairs of nodes: every horizontal one, and the vertical ones that the
/// dice leave (all of them in the columns that hold the graph together).
fn streets(width: usize, height: usize, rng: &mut StdRng) -> Vec<(u32, u32)> {
    let node = |i: usize, j: usize| (j * width + i) as u32;
    let mut streets = Vec::with_capacity(2 * width * height);
    for j in 0..height {
        for i in 0..width {
            if i + 1 < width {
                streets.push((node(i, j), node(i + 1, j)));
            }
            let keep = i % FULL_COLUMN_EVERY == 0 || !rng.gen_bool(MISSING_SHARE);
            if j + 1 < height && keep {
                streets.push((node(i, j), node(i, j + 1)));
            }
        }
    }
    streets
}

/// Compressed sparse rows of the streets, each in both directions: a counting sort by
/// source node, so building costs two passes and no per-node allocation.
fn adjacency(nodes: usize, streets: &[(u32, u32)]) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; nodes + 1];
    for &(a, b) in streets {
        offsets[a as usize + 1] += 1;
        offsets[b as usize + 1] += 1;
    }
    for u in 0..nodes {
        offsets[u + 1] += offsets[u];
    }
    let mut next = offsets[..nodes].to_vec();
    let mut targets = vec![0u32; 2 * streets.len()];
    for &(a, b) in streets {
        for (from, to) in [(a, b), (b, a)] {
            targets[next[from as usize] as usize] = to;
            next[from as usize] += 1;
        }
    }
    (offsets, targets)
}
