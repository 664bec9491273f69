//! Bounded shortest-path searches by road length, the transition model's
//! route distances. A search runs from the head node of one candidate's edge,
//! stops at a distance budget (nothing beyond it has a usable transition
//! probability) and as soon as every target node is settled, so at 1 s
//! sampling it touches a few dozen nodes.
//!
//! Measured against an FMM-style precomputed table (BENCHMARKS.md): the table
//! of every node pair within the budget costs hundreds of MB on a city and its
//! hash lookups cost about as much as these small searches, so searches won.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use lastmile_roadgraph::Graph;

const UNREACHED: u32 = u32::MAX;

/// Per-thread scratch for bounded searches; reset in time proportional to
/// what the previous search touched, so steady state allocates nothing.
pub(crate) struct BoundedSearch {
    /// Centimetres from the source.
    dist: Vec<u32>,
    /// Edge through which each node was reached (`u32::MAX` at the source).
    parent: Vec<u32>,
    touched: Vec<u32>,
    source: u32,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
    /// Searches run and nodes settled, for benchmarks and tuning.
    pub searches: u64,
    pub settled: u64,
}

impl BoundedSearch {
    pub fn new(g: &Graph) -> Self {
        Self {
            dist: vec![UNREACHED; g.num_nodes()],
            parent: vec![u32::MAX; g.num_nodes()],
            touched: Vec::new(),
            source: 0,
            heap: BinaryHeap::new(),
            searches: 0,
            settled: 0,
        }
    }

    fn reset(&mut self) {
        for &v in &self.touched {
            self.dist[v as usize] = UNREACHED;
        }
        self.touched.clear();
        self.heap.clear();
    }

    /// Shortest distances from `source` up to `limit_cm`, stopping early once
    /// every node in `targets` is settled. Read results with [`Self::dist`].
    pub fn run(&mut self, g: &Graph, source: u32, limit_cm: u32, targets: &[u32]) {
        self.reset();
        self.searches += 1;
        self.source = source;
        self.dist[source as usize] = 0;
        self.parent[source as usize] = u32::MAX;
        self.touched.push(source);
        self.heap.push(Reverse((0, source)));
        let mut remaining = targets.len();
        while let Some(Reverse((d, v))) = self.heap.pop() {
            if d > self.dist[v as usize] {
                continue;
            }
            self.settled += 1;
            remaining -= targets.iter().filter(|&&t| t == v).count();
            if remaining == 0 {
                break;
            }
            for e in g.out_edges(v) {
                let nd = d.saturating_add(g.length_cm(e));
                if nd > limit_cm {
                    continue;
                }
                let w = g.head(e) as usize;
                let slot = &mut self.dist[w];
                if nd < *slot {
                    if *slot == UNREACHED {
                        self.touched.push(w as u32);
                    }
                    *slot = nd;
                    self.parent[w] = e;
                    self.heap.push(Reverse((nd, w as u32)));
                }
            }
        }
    }

    /// Distance in centimetres to `v` from the last search's source, if it
    /// was reached within the budget. A node reached but not settled may
    /// carry a longer distance than the shortest, but only beyond the point
    /// where every target was settled, so targets are always exact.
    #[inline]
    pub fn dist(&self, v: u32) -> Option<u32> {
        let d = self.dist[v as usize];
        (d != UNREACHED).then_some(d)
    }

    /// Appends the edges of the last search's path to `v` (source first).
    pub fn path_to(&self, g: &Graph, v: u32, out: &mut Vec<u32>) {
        let start = out.len();
        let mut at = v;
        while at != self.source {
            let e = self.parent[at as usize];
            out.push(e);
            at = g.tail(e);
        }
        out[start..].reverse();
    }
}
