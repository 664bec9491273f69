//! Bounded shortest-path searches by road length, the transition model's
//! route distances. A search runs from the head node of one candidate's edge
//! towards the tail nodes of the next ping's candidates (its *goals*), each
//! with a distance beyond which it is of no use (no transition that long can
//! change that candidate's Viterbi score). The search stops as soon as no
//! unsettled goal could still be reached within its own limit, so at 1 s
//! sampling it touches a few dozen nodes, and a weak hypothesis's search
//! ends almost at once.
//!
//! Measured against an FMM-style precomputed table (BENCHMARKS.md): the table
//! of every node pair within the budget costs hundreds of MB on a city and its
//! hash lookups cost about as much as these small searches, so searches won.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use lastmile_roadgraph::Graph;

const UNREACHED: u32 = u32::MAX;

/// One target of a search: a node, how far it may be and still matter, and
/// (after the search) its exact distance if it was settled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Goal {
    pub node: u32,
    /// Centimetres from the source beyond which the goal is of no use.
    pub limit_cm: u32,
    /// Exact distance in centimetres, once settled.
    pub found: Option<u32>,
}

/// A node's label: tentative distance and the edge it was reached through,
/// side by side so a relaxation touches one cache line.
#[derive(Clone, Copy)]
struct Label {
    /// Centimetres from the source.
    dist: u32,
    /// Edge through which the node was reached (`u32::MAX` at the source).
    parent: u32,
}

/// Per-thread scratch for bounded searches; reset in time proportional to
/// what the previous search touched, so steady state allocates nothing.
pub(crate) struct BoundedSearch {
    labels: Vec<Label>,
    touched: Vec<u32>,
    source: u32,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
    /// Searches run and nodes settled, for benchmarks and tuning.
    pub searches: u64,
    pub settled: u64,
}

impl BoundedSearch {
    pub fn new(g: &Graph) -> Self {
        // Built now rather than inside the first ping's search.
        g.length_arcs();
        Self {
            labels: vec![
                Label {
                    dist: UNREACHED,
                    parent: u32::MAX
                };
                g.num_nodes()
            ],
            touched: Vec::new(),
            source: 0,
            heap: BinaryHeap::new(),
            searches: 0,
            settled: 0,
        }
    }

    fn reset(&mut self) {
        for &v in &self.touched {
            self.labels[v as usize].dist = UNREACHED;
        }
        self.touched.clear();
        self.heap.clear();
    }

    /// Shortest distances from `source` to each goal within its limit:
    /// every goal whose distance is at most its `limit_cm` comes back with
    /// `found` set to it (others may too). Stops once no unsettled goal can
    /// be within its limit. Paths to settled nodes: [`Self::path_to`].
    pub fn run(&mut self, g: &Graph, source: u32, goals: &mut [Goal]) {
        self.reset();
        for goal in goals.iter_mut() {
            goal.found = None;
        }
        // The furthest any unsettled goal may be; shrinks as goals settle.
        let Some(mut cap) = goals.iter().map(|t| t.limit_cm).max() else {
            return;
        };
        self.searches += 1;
        self.source = source;
        self.labels[source as usize] = Label {
            dist: 0,
            parent: u32::MAX,
        };
        self.touched.push(source);
        self.heap.push(Reverse((0, source)));
        let arcs = g.length_arcs();
        while let Some(Reverse((d, v))) = self.heap.pop() {
            if d > self.labels[v as usize].dist {
                continue;
            }
            if d > cap {
                break;
            }
            self.settled += 1;
            if goals.iter().any(|t| t.node == v) {
                cap = 0;
                let mut open = false;
                for t in goals.iter_mut() {
                    if t.node == v {
                        t.found = Some(d);
                    } else if t.found.is_none() {
                        cap = cap.max(t.limit_cm);
                        open = true;
                    }
                }
                if !open {
                    break;
                }
            }
            for e in g.out_edges(v) {
                let arc = arcs[e as usize];
                let nd = d.saturating_add(arc.length_cm);
                if nd > cap {
                    continue;
                }
                let label = &mut self.labels[arc.head as usize];
                if nd < label.dist {
                    if label.dist == UNREACHED {
                        self.touched.push(arc.head);
                    }
                    *label = Label {
                        dist: nd,
                        parent: e,
                    };
                    self.heap.push(Reverse((nd, arc.head)));
                }
            }
        }
    }

    /// Appends the edges of the last search's path to a node it settled
    /// (source first).
    pub fn path_to(&self, g: &Graph, v: u32, out: &mut Vec<u32>) {
        let start = out.len();
        let mut at = v;
        while at != self.source {
            let e = self.labels[at as usize].parent;
            out.push(e);
            at = g.tail(e);
        }
        out[start..].reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::rng::Rng;
    use lastmile_roadgraph::{CityParams, Dijkstra, Metric, synthetic};

    /// Every goal within its limit comes back with Dijkstra's exact
    /// distance and a path of that length; goals beyond it never carry a
    /// wrong distance.
    #[test]
    fn goals_within_their_limits_get_exact_distances() {
        let g = lastmile_roadgraph::Graph::from_data(&synthetic::generate_city(&CityParams::new(
            4000, 3,
        )));
        let n = g.num_nodes() as u64;
        let mut search = BoundedSearch::new(&g);
        let mut oracle = Dijkstra::new(&g);
        let mut rng = Rng::seed(11);
        let mut path = Vec::new();
        let mut checked = 0;
        for _ in 0..300 {
            let source = rng.below(n) as u32;
            oracle.one_to_all(&g, &Metric::Distance, &[(source, 0)]);
            let mut goals: Vec<Goal> = (0..1 + rng.below(12))
                .map(|_| Goal {
                    node: rng.below(n) as u32,
                    limit_cm: rng.below(200_000) as u32,
                    found: None,
                })
                .collect();
            search.run(&g, source, &mut goals);
            for t in &goals {
                let truth = oracle.distance(t.node).unwrap_or(u64::MAX);
                match t.found {
                    Some(d) => {
                        assert_eq!(u64::from(d), truth, "settled goal with a wrong distance");
                        path.clear();
                        search.path_to(&g, t.node, &mut path);
                        let len: u64 = path.iter().map(|&e| u64::from(g.length_cm(e))).sum();
                        assert_eq!(len, truth);
                        checked += 1;
                    }
                    None => assert!(truth > u64::from(t.limit_cm), "goal within limit missed"),
                }
            }
        }
        assert!(
            checked > 100,
            "too few goals reached to mean anything: {checked}"
        );
    }
}
