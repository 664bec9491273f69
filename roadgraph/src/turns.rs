//! Turn restrictions in routing. [`TurnRules`] indexes the graph's via-node
//! restrictions for "may I turn from edge a into edge b?"; [`TurnDijkstra`]
//! is an exact edge-based Dijkstra that honours them.
//!
//! Routers honour restrictions by checking: the routes that respect the rules
//! are a subset of all routes, so when the unrestricted shortest route breaks
//! no rule it is also the shortest legal one; only when it does break one is
//! the edge-based search run. Restrictions touch few routes (BENCHMARKS.md),
//! so this costs almost nothing on average and is exact always.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::dijkstra::{CLOSED, EdgePos, EdgeWeight, Route, finish_route, partial_weight};
use crate::graph::{Graph, TurnRestriction};
use crate::network::RestrictionKind;

/// Restrictions indexed by the edge a turn starts from.
pub struct TurnRules {
    /// Sorted by (from_edge, to_edge).
    rules: Vec<TurnRestriction>,
}

impl TurnRules {
    pub fn new(g: &Graph) -> Self {
        let mut rules: Vec<TurnRestriction> = g.restrictions().collect();
        rules.sort_unstable_by_key(|r| (r.from_edge, r.to_edge, r.kind));
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// May a vehicle on `from` continue onto `to` (which leaves `from`'s head)?
    #[inline]
    pub fn allowed(&self, from: u32, to: u32) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let start = self.rules.partition_point(|r| r.from_edge < from);
        let mut has_only = false;
        for r in self.rules[start..]
            .iter()
            .take_while(|r| r.from_edge == from)
        {
            match r.kind() {
                RestrictionKind::No if r.to_edge == to => return false,
                RestrictionKind::Only if r.to_edge == to => return true,
                RestrictionKind::Only => has_only = true,
                RestrictionKind::No => {}
            }
        }
        !has_only
    }

    /// True when every consecutive pair of edges is an allowed turn.
    pub fn path_ok(&self, edges: &[u32]) -> bool {
        self.rules.is_empty() || edges.windows(2).all(|w| self.allowed(w[0], w[1]))
    }
}

const UNREACHED: u64 = u64::MAX;

/// How the best route found so far reaches its target.
#[derive(Clone, Copy)]
enum Best {
    /// Along the source's own edge.
    Direct { source: usize, target: usize },
    /// Through the graph, arriving at the end of edge `last`.
    Through { last: u32, target: usize },
}
const FROM_SOURCE: u32 = 1 << 31;

/// Edge-based Dijkstra honouring turn rules. A state is "at the end of edge
/// e", so the turn taken at each node is known. Reusable scratch space.
pub struct TurnDijkstra {
    dist: Vec<u64>,
    parent: Vec<u32>,
    touched: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl TurnDijkstra {
    pub fn new(g: &Graph) -> Self {
        Self {
            dist: vec![UNREACHED; g.num_edges()],
            parent: vec![u32::MAX; g.num_edges()],
            touched: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    fn relax(&mut self, e: u32, d: u64, parent: u32) {
        let slot = &mut self.dist[e as usize];
        if d < *slot {
            if *slot == UNREACHED {
                self.touched.push(e);
            }
            *slot = d;
            self.parent[e as usize] = parent;
            self.heap.push(Reverse((d, e)));
        }
    }

    /// The shortest legal route from any of `from` to any of `to`.
    pub fn route<W: EdgeWeight + ?Sized>(
        &mut self,
        g: &Graph,
        w: &W,
        rules: &TurnRules,
        from: &[EdgePos],
        to: &[EdgePos],
    ) -> Option<Route> {
        for &e in &self.touched {
            self.dist[e as usize] = UNREACHED;
        }
        self.touched.clear();
        self.heap.clear();
        let mut best: Option<(u64, Best)> = None;
        for (i, s) in from.iter().enumerate() {
            if w.weight(g, s.edge) >= CLOSED {
                continue;
            }
            self.relax(
                s.edge,
                partial_weight(g, w, s.edge, s.offset_m, g.length_m(s.edge)),
                FROM_SOURCE | i as u32,
            );
            for (j, t) in to.iter().enumerate() {
                if t.edge == s.edge && t.offset_m >= s.offset_m {
                    let c = partial_weight(g, w, s.edge, s.offset_m, t.offset_m);
                    if best.is_none_or(|b| c < b.0) {
                        best = Some((
                            c,
                            Best::Direct {
                                source: i,
                                target: j,
                            },
                        ));
                    }
                }
            }
        }
        while let Some(Reverse((d, e))) = self.heap.pop() {
            if d > self.dist[e as usize] {
                continue;
            }
            if best.is_some_and(|b| d >= b.0) {
                break;
            }
            let v = g.head(e);
            for (j, t) in to.iter().enumerate() {
                if g.tail(t.edge) == v && rules.allowed(e, t.edge) && w.weight(g, t.edge) < CLOSED {
                    let c = d + partial_weight(g, w, t.edge, 0.0, t.offset_m);
                    if best.is_none_or(|b| c < b.0) {
                        best = Some((c, Best::Through { last: e, target: j }));
                    }
                }
            }
            for f in g.out_edges(v) {
                let wf = w.weight(g, f);
                if wf < CLOSED && rules.allowed(e, f) {
                    self.relax(f, d + wf, e);
                }
            }
        }
        let (cost, how) = best?;
        let (mut e, end) = match how {
            Best::Direct { source, target } => {
                let (start, end) = (from[source], to[target]);
                return Some(finish_route(g, cost, vec![start.edge], start, end));
            }
            Best::Through { last, target } => (last, to[target]),
        };
        let mut edges = vec![end.edge];
        let start = loop {
            edges.push(e);
            let p = self.parent[e as usize];
            if p & FROM_SOURCE != 0 {
                break from[(p & !FROM_SOURCE) as usize];
            }
            e = p;
        };
        edges.reverse();
        Some(finish_route(g, cost, edges, start, end))
    }
}
