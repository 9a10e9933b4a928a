//! Nearest-node look-ups for `/locate`: a grid of buckets over the unit square, searched
//! in rings outward from the query's bucket, so a look-up touches a handful of nodes
//! instead of all of them.

use crate::graph::Graph;

/// Nodes per bucket on average: few enough that a look-up measures a few dozen nodes,
/// enough that most buckets hold one and the search stops after the first rings.
const NODES_PER_BUCKET: usize = 4;

/// The nodes of a graph sorted into buckets (compressed sparse rows again: the nodes of
/// bucket `b` are `nodes[starts[b]..starts[b + 1]]`).
pub struct SpatialIndex {
    /// Buckets across (longitude).
    columns: usize,
    /// Buckets down (latitude).
    rows: usize,
    /// Where each bucket's nodes begin; one more entry than there are buckets.
    starts: Vec<u32>,
    /// Node ids, bucket after bucket.
    nodes: Vec<u32>,
}

/// The answer to a look-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nearest {
    /// The nearest node.
    pub node: u32,
    /// Its straight-line distance from the query point.
    pub distance: f64,
}

impl SpatialIndex {
    /// Sorts the nodes of `graph` into square buckets.
    pub fn new(graph: &Graph) -> SpatialIndex {
        let side = ((graph.node_count() / NODES_PER_BUCKET) as f64)
            .sqrt()
            .ceil() as usize;
        let (columns, rows) = (side.max(1), side.max(1));
        let mut index = SpatialIndex {
            columns,
            rows,
            starts: vec![0; columns * rows + 1],
            nodes: vec![0; graph.node_count()],
        };
        let buckets: Vec<usize> = (0..graph.node_count() as u32)
            .map(|u| {
                let (x, y) = graph.position(u);
                index.bucket(index.column(x), index.row(y))
            })
            .collect();
        for &b in &buckets {
            index.starts[b + 1] += 1;
        }
        for b in 0..columns * rows {
            index.starts[b + 1] += index.starts[b];
        }
        let mut next = index.starts[..columns * rows].to_vec();
        for (u, &b) in buckets.iter().enumerate() {
            index.nodes[next[b] as usize] = u as u32;
            next[b] += 1;
        }
        index
    }

    /// The node nearest to (`x`, `y`), a point in the unit square; `None` only for an
    /// empty graph.
    pub fn nearest(&self, graph: &Graph, x: f64, y: f64) -> Option<Nearest> {
        let (column, row) = (self.column(x) as isize, self.row(y) as isize);
        // A node in ring r + 1 or beyond lies at least r whole buckets away from the
        // query's bucket, so once the best so far is that close, no later ring can win.
        let bucket_side = (1.0 / self.columns as f64).min(1.0 / self.rows as f64);
        let mut best: Option<Nearest> = None;
        for ring in 0..=self.columns.max(self.rows) as isize {
            for (c, r) in ring_buckets(column, row, ring) {
                if c < 0 || r < 0 || c >= self.columns as isize || r >= self.rows as isize {
                    continue;
                }
                self.closest_in(graph, self.bucket(c as usize, r as usize), x, y, &mut best);
            }
            if best.is_some_and(|b| b.distance <= ring as f64 * bucket_side) {
                break;
            }
        }
        best
    }

    /// Replaces `best` with any node of `bucket` that is closer to (`x`, `y`).
    fn closest_in(&self, graph: &Graph, bucket: usize, x: f64, y: f64, best: &mut Option<Nearest>) {
        let range = self.starts[bucket] as usize..self.starts[bucket + 1] as usize;
        for &node in &self.nodes[range] {
            let (nx, ny) = graph.position(node);
            let distance = (nx - x).hypot(ny - y);
            if best.is_none_or(|b| distance < b.distance) {
                *best = Some(Nearest { node, distance });
            }
        }
    }

    fn column(&self, x: f64) -> usize {
        ((x * self.columns as f64) as usize).min(self.columns - 1)
    }

    fn row(&self, y: f64) -> usize {
        ((y * self.rows as f64) as usize).min(self.rows - 1)
    }

    fn bucket(&self, column: usize, row: usize) -> usize {
        row * self.columns + column
    }
}

/// The buckets at Chebyshev distance `ring` from (`column`, `row`), some possibly off
/// the grid. Scanning the whole square costs little: a look-up rarely needs more than
/// the first two rings, because every bucket holds a few nodes.
fn ring_buckets(column: isize, row: isize, ring: isize) -> impl Iterator<Item = (isize, isize)> {
    (row - ring..=row + ring)
        .flat_map(move |r| (column - ring..=column + ring).map(move |c| (c, r)))
        .filter(move |&(c, r)| (c - column).abs().max((r - row).abs()) == ring)
}
