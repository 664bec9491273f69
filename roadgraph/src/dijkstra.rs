//! Plain Dijkstra on the road graph: the reference every faster routing
//! technique is checked against, and the router until CCH lands.
//!
//! Searches start and end at positions on edges (edge + offset), because
//! vehicles and stops sit mid-street: the first edge costs only its remaining
//! part, the last only the part up to the target offset. Costs are integers
//! (milliseconds or centimetres); a partial edge costs its weight times the
//! fraction travelled, rounded to the nearest unit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::geo::LatLon;
use crate::graph::Graph;

/// What a route minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Metric {
    /// Free-flow travel time, milliseconds.
    #[default]
    Time,
    /// Length, centimetres.
    Distance,
}

/// Integer weights of graph edges: a built-in [`Metric`], an explicit vector
/// (one weight per edge), or a customized CCH metric.
pub trait EdgeWeight {
    fn weight(&self, g: &Graph, e: u32) -> u64;
}

impl EdgeWeight for Metric {
    #[inline]
    fn weight(&self, g: &Graph, e: u32) -> u64 {
        match self {
            Metric::Time => u64::from(g.travel_time_ms(e)),
            Metric::Distance => u64::from(g.length_cm(e)),
        }
    }
}

impl EdgeWeight for [u32] {
    #[inline]
    fn weight(&self, _: &Graph, e: u32) -> u64 {
        u64::from(self[e as usize])
    }
}

impl Metric {
    /// This metric's weight of every edge, e.g. to customize a CCH with.
    pub fn weights(self, g: &Graph) -> Vec<u32> {
        (0..g.num_edges() as u32)
            .map(|e| u32::try_from(self.weight(g, e)).unwrap_or(u32::MAX - 1))
            .collect()
    }
}

/// An edge weight of `u32::MAX` means the edge is closed (in every engine).
pub const CLOSED: u64 = u32::MAX as u64;

/// A position on a directed edge, `offset_m` metres from its tail.
#[derive(Clone, Copy, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EdgePos {
    pub edge: u32,
    pub offset_m: f64,
}

/// A shortest path between two edge positions.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Cost under the metric searched.
    pub cost: u64,
    pub distance_m: f64,
    pub duration_s: f64,
    /// Edges driven, from the start edge to the end edge inclusive.
    pub edges: Vec<u32>,
    pub start: EdgePos,
    pub end: EdgePos,
}

/// Weight of the part of `e` between offsets `from_m` and `to_m`.
#[inline]
pub fn partial_weight<W: EdgeWeight + ?Sized>(
    g: &Graph,
    metric: &W,
    e: u32,
    from_m: f64,
    to_m: f64,
) -> u64 {
    let len = g.length_m(e);
    let frac = if len > 0.0 {
        ((to_m - from_m) / len).clamp(0.0, 1.0)
    } else if to_m >= from_m && from_m <= 0.0 {
        1.0
    } else {
        0.0
    };
    (metric.weight(g, e) as f64 * frac).round() as u64
}

/// Parent-pointer flag: the node was reached directly from the source whose
/// index is in the low bits.
const FROM_SOURCE: u32 = 1 << 31;
const UNREACHED: u64 = u64::MAX;

/// Reusable Dijkstra scratch space: one per thread, reset in time proportional
/// to what the previous search touched, so steady-state queries allocate only
/// their result.
pub struct Dijkstra {
    dist: Vec<u64>,
    parent: Vec<u32>,
    touched: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Dijkstra {
    pub fn new(graph: &Graph) -> Self {
        Self {
            dist: vec![UNREACHED; graph.num_nodes()],
            parent: vec![u32::MAX; graph.num_nodes()],
            touched: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    fn reset(&mut self) {
        for &v in &self.touched {
            self.dist[v as usize] = UNREACHED;
        }
        self.touched.clear();
        self.heap.clear();
    }

    #[inline]
    fn relax(&mut self, v: u32, d: u64, parent: u32) {
        let slot = &mut self.dist[v as usize];
        if d < *slot {
            if *slot == UNREACHED {
                self.touched.push(v);
            }
            *slot = d;
            self.parent[v as usize] = parent;
            self.heap.push(Reverse((d, v)));
        }
    }

    /// Distance to `v` found by the last search, if reached.
    pub fn distance(&self, v: u32) -> Option<u64> {
        let d = self.dist[v as usize];
        (d != UNREACHED).then_some(d)
    }

    /// Full search from nodes with initial costs; read results with [`Self::distance`].
    pub fn one_to_all<W: EdgeWeight + ?Sized>(
        &mut self,
        g: &Graph,
        metric: &W,
        sources: &[(u32, u64)],
    ) {
        self.reset();
        for &(v, c) in sources {
            self.relax(v, c, u32::MAX);
        }
        while let Some(Reverse((d, v))) = self.heap.pop() {
            if d > self.dist[v as usize] {
                continue;
            }
            for e in g.out_edges(v) {
                let w = metric.weight(g, e);
                if w < CLOSED {
                    self.relax(g.head(e), d + w, e);
                }
            }
        }
    }

    /// Shortest route from any of `from` to any of `to` (several positions
    /// express "either direction of this street"). `None` if unreachable.
    pub fn route<W: EdgeWeight + ?Sized>(
        &mut self,
        g: &Graph,
        metric: &W,
        from: &[EdgePos],
        to: &[EdgePos],
    ) -> Option<Route> {
        self.reset();
        let mut best: Option<(u64, usize, usize)> = None; // (cost, from index, to index)
        let consider = |best: &mut Option<(u64, usize, usize)>, cost: u64, i: usize, j: usize| {
            if best.is_none_or(|(b, _, _)| cost < b) {
                *best = Some((cost, i, j));
            }
        };
        for (i, s) in from.iter().enumerate() {
            if metric.weight(g, s.edge) >= CLOSED {
                continue;
            }
            let len = g.length_m(s.edge);
            self.relax(
                g.head(s.edge),
                partial_weight(g, metric, s.edge, s.offset_m, len),
                i as u32 | FROM_SOURCE,
            );
            for (j, t) in to.iter().enumerate() {
                if t.edge == s.edge && t.offset_m >= s.offset_m {
                    consider(
                        &mut best,
                        partial_weight(g, metric, s.edge, s.offset_m, t.offset_m),
                        i,
                        j,
                    );
                }
            }
        }
        // The best path through the graph to target j enters its edge at the tail.
        let mut via_graph: Option<(u64, usize)> = None;
        while let Some(Reverse((d, v))) = self.heap.pop() {
            if d > self.dist[v as usize] {
                continue;
            }
            let bound = best
                .map(|b| b.0)
                .into_iter()
                .chain(via_graph.map(|b| b.0))
                .min();
            if bound.is_some_and(|b| d >= b) {
                break;
            }
            for (j, t) in to.iter().enumerate() {
                if g.tail(t.edge) == v && metric.weight(g, t.edge) < CLOSED {
                    let c = d + partial_weight(g, metric, t.edge, 0.0, t.offset_m);
                    if via_graph.is_none_or(|(b, _)| c < b) {
                        via_graph = Some((c, j));
                    }
                }
            }
            for e in g.out_edges(v) {
                let w = metric.weight(g, e);
                if w < CLOSED {
                    self.relax(g.head(e), d + w, e);
                }
            }
        }
        let direct = best;
        let use_graph = match (direct, via_graph) {
            (Some((dc, _, _)), Some((gc, _))) => gc < dc,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if use_graph {
            let (cost, j) = via_graph?;
            let end = to[j];
            let mut edges = vec![end.edge];
            let mut v = g.tail(end.edge);
            let start = loop {
                let p = self.parent[v as usize];
                if p & FROM_SOURCE != 0 {
                    break from[(p & !FROM_SOURCE) as usize];
                }
                edges.push(p);
                v = g.tail(p);
            };
            edges.push(start.edge);
            edges.reverse();
            Some(finish_route(g, cost, edges, start, end))
        } else {
            let (cost, i, j) = direct?;
            Some(finish_route(g, cost, vec![from[i].edge], from[i], to[j]))
        }
    }
}

pub(crate) fn finish_route(
    g: &Graph,
    cost: u64,
    edges: Vec<u32>,
    start: EdgePos,
    end: EdgePos,
) -> Route {
    let (mut distance_m, mut duration_ms) = (0.0, 0.0);
    let last = edges.len() - 1;
    for (k, &e) in edges.iter().enumerate() {
        let len = g.length_m(e);
        let from = if k == 0 { start.offset_m } else { 0.0 };
        let to = if k == last { end.offset_m } else { len };
        let frac = if len > 0.0 {
            ((to - from) / len).clamp(0.0, 1.0)
        } else {
            0.0
        };
        distance_m += frac * len;
        duration_ms += frac * f64::from(g.travel_time_ms(e));
    }
    Route {
        cost,
        distance_m,
        duration_s: duration_ms / 1000.0,
        edges,
        start,
        end,
    }
}

impl Route {
    /// The route's polyline, from the start position to the end position.
    pub fn geometry(&self, g: &Graph) -> Vec<LatLon> {
        let mut out = Vec::new();
        let last = self.edges.len() - 1;
        for (k, &e) in self.edges.iter().enumerate() {
            let from = if k == 0 { self.start.offset_m } else { 0.0 };
            let to = if k == last {
                self.end.offset_m
            } else {
                g.length_m(e)
            };
            let piece = g.edge_geometry_between(e, from, to);
            let skip = usize::from(!out.is_empty());
            out.extend(piece.into_iter().skip(skip));
        }
        out
    }
}
