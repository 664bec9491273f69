//! Legs: the paths behind ETAs, computed once and then advanced along.
//!
//! A [`Leg`] is the path from the vehicle to its next stop, with the time and
//! distance to the end of every edge. Each ping locates the matched edge on
//! the path (scanning forward from where the vehicle was) and reads the
//! remaining time from the current offset, with no search; only leaving the
//! path, a changed metric on it, or the periodic refresh route again. A
//! [`StopLeg`] is a path between two consecutive stops: only its edges (to
//! see whether traffic touched it) and its totals.

use lastmile_roadgraph::dijkstra::partial_weight;
use lastmile_roadgraph::{CchMetric, EdgePos, Graph, LatLon, Route};

/// Where a stop can be reached: the nearest road position and, on a two-way
/// street, the same point on the other direction. Offsets are kept as `f32`
/// (sub-millimetre along any edge): every vehicle holds a few of these.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct StopPlace {
    edges: [u32; 2],
    offsets_m: [f32; 2],
    n: u8,
}

/// A stop's road positions, as the router takes them.
pub struct Positions([EdgePos; 2], usize);

impl std::ops::Deref for Positions {
    type Target = [EdgePos];

    fn deref(&self) -> &[EdgePos] {
        &self.0[..self.1]
    }
}

impl StopPlace {
    /// Snaps a stop to the nearest road within `max_m`; `None` when there is none.
    pub fn snap(
        graph: &Graph,
        pos: LatLon,
        max_m: f64,
        scratch: &mut Vec<lastmile_roadgraph::EdgeCandidate>,
    ) -> Option<Self> {
        if !pos.lat.is_finite() || !pos.lon.is_finite() {
            return None;
        }
        graph.nearest_edges(pos, 1, max_m, scratch);
        let c = scratch.first()?;
        let offset = c.offset_m as f32;
        let mut place = Self {
            edges: [c.edge; 2],
            offsets_m: [offset; 2],
            n: 1,
        };
        if let Some(r) = graph.reverse_edge(c.edge) {
            place.edges[1] = r;
            place.offsets_m[1] = (graph.length_m(r) - c.offset_m).max(0.0) as f32;
            place.n = 2;
        }
        Some(place)
    }

    pub fn positions(&self) -> Positions {
        let at = |i: usize| EdgePos {
            edge: self.edges[i],
            offset_m: f64::from(self.offsets_m[i]),
        };
        Positions([at(0), at(1)], usize::from(self.n))
    }
}

/// The covered part `[a, b]` of edge `i` of a path of `n` edges.
#[inline]
fn covered(graph: &Graph, edges: &[u32], start_m: f64, end_m: f64, i: usize) -> (f64, f64) {
    let a = if i == 0 { start_m } else { 0.0 };
    let b = if i + 1 == edges.len() {
        end_m
    } else {
        graph.length_m(edges[i])
    };
    (a, b.max(a))
}

/// Time (ms) of a path under a metric, summed edge by edge.
fn path_ms(graph: &Graph, metric: &CchMetric, edges: &[u32], start_m: f64, end_m: f64) -> u64 {
    (0..edges.len())
        .map(|i| {
            let (a, b) = covered(graph, edges, start_m, end_m, i);
            partial_weight(graph, metric, edges[i], a, b)
        })
        .sum()
}

/// The path from the vehicle to its next stop.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default)]
pub struct Leg {
    edges: Vec<u32>,
    /// Time (ms) from the leg start to the end of the covered part of each
    /// edge (it depends on the metric; distances do not, and are summed
    /// from the graph's lengths as the vehicle advances).
    cum_ms: Vec<u32>,
    start_m: f64,
    end_m: f64,
    total_m: f64,
    /// Index of the edge the vehicle was last located on, and the distance
    /// from the leg start to where that edge's covered part begins.
    cursor: usize,
    cursor_m: f64,
}

/// Where the vehicle is on its leg, and what is left.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub remaining_s: f64,
    pub remaining_m: f64,
}

impl Leg {
    /// Takes a route's path, timed under `metric` (the one it was found on).
    pub fn from_route(graph: &Graph, metric: &CchMetric, route: Route) -> Self {
        let mut leg = Self {
            edges: route.edges,
            start_m: route.start.offset_m,
            end_m: route.end.offset_m,
            ..Self::default()
        };
        leg.total_m = (0..leg.edges.len()).map(|i| leg.covered_m(graph, i)).sum();
        leg.retime(graph, metric);
        leg
    }

    /// Recomputes the times along the same path under another metric;
    /// returns the new total, seconds.
    pub fn retime(&mut self, graph: &Graph, metric: &CchMetric) -> f64 {
        self.cum_ms.clear();
        let mut ms = 0u64;
        for i in 0..self.edges.len() {
            let (a, b) = covered(graph, &self.edges, self.start_m, self.end_m, i);
            ms += partial_weight(graph, metric, self.edges[i], a, b);
            self.cum_ms.push(ms.min(u64::from(u32::MAX)) as u32);
        }
        self.total_s()
    }

    pub fn total_s(&self) -> f64 {
        f64::from(self.cum_ms.last().copied().unwrap_or(0)) / 1000.0
    }

    pub fn edges(&self) -> &[u32] {
        &self.edges
    }

    /// Metres of edge `i` the leg covers.
    fn covered_m(&self, graph: &Graph, i: usize) -> f64 {
        let (a, b) = covered(graph, &self.edges, self.start_m, self.end_m, i);
        b - a
    }

    /// Locates the vehicle at `edge`/`offset_m` on the path, scanning forward
    /// from where it last was (sparse pings skip edges); one edge back is
    /// accepted too (a match that steps back along the road). `None` when
    /// the edge is not on the path ahead: the vehicle left it.
    pub fn advance(&mut self, graph: &Graph, edge: u32, offset_m: f64) -> Option<Progress> {
        let from = self.cursor.saturating_sub(1);
        // Distance from the leg start to where edge `i` begins, summed on.
        let mut at_m = if from < self.cursor {
            self.cursor_m - self.covered_m(graph, from)
        } else {
            self.cursor_m
        };
        let mut i = from;
        while *self.edges.get(i)? != edge {
            at_m += self.covered_m(graph, i);
            i += 1;
        }
        let (a, b) = covered(graph, &self.edges, self.start_m, self.end_m, i);
        // Past the stop on its own edge: overshot; the caller decides.
        if i + 1 == self.edges.len() && offset_m > b + 1.0 {
            return None;
        }
        self.cursor = i;
        self.cursor_m = at_m;
        // Behind the leg's start on its first edge (the match stepped back
        // a little) counts the extra way; past the end of an edge never does.
        let o = offset_m.min(b);
        let left = if b > a { (b - o) / (b - a) } else { 0.0 };
        let before_ms = if i == 0 {
            0.0
        } else {
            f64::from(self.cum_ms[i - 1])
        };
        let edge_ms = f64::from(self.cum_ms[i]) - before_ms;
        let edge_m = b - a;
        let total_ms = f64::from(*self.cum_ms.last()?);
        Some(Progress {
            remaining_s: ((total_ms - f64::from(self.cum_ms[i])) + edge_ms * left) / 1000.0,
            remaining_m: (self.total_m - (at_m + edge_m)) + edge_m * left,
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.edges.capacity() * 4 + self.cum_ms.capacity() * 4
    }
}

/// The path between two consecutive stops.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StopLeg {
    pub edges: Vec<u32>,
    start_m: f64,
    end_m: f64,
    pub seconds: f64,
    pub metres: f64,
    /// A new metric moved its time enough to search it again.
    pub stale: bool,
}

impl StopLeg {
    pub fn from_route(graph: &Graph, metric: &CchMetric, route: Route) -> Self {
        let mut leg = Self {
            start_m: route.start.offset_m,
            end_m: route.end.offset_m,
            metres: route.distance_m,
            edges: route.edges,
            seconds: 0.0,
            stale: false,
        };
        leg.edges.shrink_to_fit();
        leg.retime(graph, metric);
        leg
    }

    /// Recomputes the time along the same path under another metric.
    pub fn retime(&mut self, graph: &Graph, metric: &CchMetric) -> f64 {
        self.seconds =
            path_ms(graph, metric, &self.edges, self.start_m, self.end_m) as f64 / 1000.0;
        self.seconds
    }

    pub fn heap_bytes(&self) -> usize {
        self.edges.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::{Metric, Router};

    #[test]
    fn advancing_along_a_leg_matches_the_remaining_route() {
        let g =
            lastmile_roadgraph::Graph::from_data(&lastmile_roadgraph::synthetic::generate_city(
                &lastmile_roadgraph::CityParams::new(3_000, 5),
            ));
        let mut router = Router::new(&g, Metric::Time);
        let metric = router.metric().clone();
        let mut rng = lastmile_roadgraph::rng::Rng::seed(3);
        let mut checked = 0;
        for _ in 0..200 {
            let pick = |rng: &mut lastmile_roadgraph::rng::Rng| {
                let e = rng.below(g.num_edges() as u64) as u32;
                EdgePos {
                    edge: e,
                    offset_m: rng.range_f64(0.0, g.length_m(e)),
                }
            };
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            let Some(route) = router.route_unrestricted(&[a], &[b]) else {
                continue;
            };
            let mut leg = Leg::from_route(&g, &metric, route.clone());
            assert!((leg.total_s() * 1000.0 - route.cost as f64).abs() <= route.edges.len() as f64);
            // At every edge start along the way, the remaining time is the
            // cost of routing from there (subpaths of shortest paths are shortest).
            for (i, &e) in route.edges.iter().enumerate().skip(1) {
                let here = EdgePos {
                    edge: e,
                    offset_m: 0.0,
                };
                let p = leg.advance(&g, e, 0.0).expect("on the path");
                let again = router.route_unrestricted(&[here], &[b]).unwrap();
                let tol = (route.edges.len() - i) as f64 / 1000.0 + 0.002;
                assert!(
                    (p.remaining_s - again.cost as f64 / 1000.0).abs() <= tol,
                    "{} vs {}",
                    p.remaining_s,
                    again.cost
                );
                checked += 1;
            }
            // An edge not on the path is reported as leaving it.
            let off = (0..g.num_edges() as u32)
                .find(|e| !route.edges.contains(e))
                .unwrap();
            assert!(leg.advance(&g, off, 0.0).is_none());
        }
        assert!(checked > 500, "{checked}");
    }
}
