//! Legs: the paths behind ETAs, computed once and then advanced along.
//!
//! A [`Leg`] is the path from the vehicle to its next stop, with its total
//! time and distance, and those to where the vehicle is. Each ping locates the matched edge on
//! the path (scanning forward from where the vehicle was) and reads the
//! remaining time from the current offset, with no search; only leaving the
//! path, a changed metric on it, or the periodic refresh route again. A
//! [`StopLeg`] is a path between two consecutive stops: only its edges (to
//! see whether traffic touched it) and its totals.

use lastmile_roadgraph::dijkstra::partial_weight;
use lastmile_roadgraph::snap::SnapChoice;
use lastmile_roadgraph::{CchMetric, EdgePos, Graph, LatLon, Route};

use super::path_code::{PathCode, PathPos};

/// Where a stop can be reached: the road position it snaps to (see
/// [`SnapChoice::preferred`]: the main network's nearest road unless
/// another is much closer) and, on a two-way street, the same point on the
/// other direction. Offsets are kept as `f32` (sub-millimetre along any
/// edge): every vehicle holds a few of these.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct StopPlace {
    edges: [u32; 2],
    offsets_m: [f32; 2],
    n: u8,
    /// Metres from the stop's coordinates to the road, and the road's component.
    pub snap_m: f32,
    pub component: u32,
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
    /// Snaps a stop to a road within `max_m`; `None` when there is none.
    pub fn snap(
        graph: &Graph,
        pos: LatLon,
        max_m: f64,
        scratch: &mut Vec<lastmile_roadgraph::EdgeCandidate>,
    ) -> Option<Self> {
        let c = SnapChoice::find(graph, pos, max_m, scratch)?.preferred();
        let offset = c.offset_m as f32;
        let mut place = Self {
            edges: [c.edge; 2],
            offsets_m: [offset; 2],
            n: 1,
            snap_m: c.distance_m as f32,
            component: c.component,
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

/// The covered part `[a, b]` of `edge`, the `i`-th of a path of `n` edges
/// that starts `start_m` into its first edge and ends `end_m` into its last.
#[inline]
fn covered(graph: &Graph, n: usize, start_m: f64, end_m: f64, i: usize, edge: u32) -> (f64, f64) {
    let a = if i == 0 { start_m } else { 0.0 };
    let b = if i + 1 == n {
        end_m
    } else {
        graph.length_m(edge)
    };
    (a, b.max(a))
}

/// Time (ms) of a path under a metric, summed edge by edge.
fn path_ms(graph: &Graph, metric: &CchMetric, path: &PathCode, start_m: f64, end_m: f64) -> u64 {
    let n = path.len();
    path.iter()
        .enumerate()
        .map(|(i, e)| {
            let (a, b) = covered(graph, n, start_m, end_m, i, e);
            partial_weight(graph, metric, e, a, b)
        })
        .sum()
}

fn saturate(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// The path from the vehicle to its next stop.
///
/// Only the path and its totals are kept (about two bytes per edge): the
/// distance and time to the vehicle's place are summed from the graph and
/// the metric as it advances, edge by edge, so no per-edge table is held.
/// Times are those of the metric the leg was last timed on, which is the
/// shard's current one: a new metric retimes every leg before its next ping.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default)]
pub struct Leg {
    path: PathCode,
    start_m: f64,
    end_m: f64,
    total_m: f64,
    total_ms: u64,
    /// Index of the edge the vehicle was last located on, where that edge
    /// is read in the path and where the one before it is, and the distance
    /// and time from the leg start to where its covered part begins.
    cursor: u32,
    at: PathPos,
    before: PathPos,
    cursor_m: f64,
    cursor_ms: u64,
    /// The time of the cursor's edge (most pings stay on it).
    cursor_edge_ms: u32,
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
            path: PathCode::encode(&route.edges),
            start_m: route.start.offset_m,
            end_m: route.end.offset_m,
            ..Self::default()
        };
        let n = leg.path.len();
        leg.total_m = leg
            .path
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (a, b) = covered(graph, n, leg.start_m, leg.end_m, i, e);
                b - a
            })
            .sum();
        leg.retime(graph, metric);
        leg
    }

    /// The covered part of `edge`, the `i`-th of the path.
    fn covered(&self, graph: &Graph, i: usize, edge: u32) -> (f64, f64) {
        covered(graph, self.path.len(), self.start_m, self.end_m, i, edge)
    }

    fn edge_ms(&self, graph: &Graph, metric: &CchMetric, i: usize, edge: u32) -> u64 {
        let (a, b) = self.covered(graph, i, edge);
        partial_weight(graph, metric, edge, a, b)
    }

    /// Recomputes the times along the same path under another metric;
    /// returns the new total, seconds.
    pub fn retime(&mut self, graph: &Graph, metric: &CchMetric) -> f64 {
        let (mut total, mut to_cursor, mut cursor_edge) = (0u64, 0u64, 0u64);
        for (i, e) in self.path.iter().enumerate() {
            let ms = self.edge_ms(graph, metric, i, e);
            if i == self.cursor as usize {
                (to_cursor, cursor_edge) = (total, ms);
            }
            total += ms;
        }
        self.total_ms = total;
        self.cursor_ms = to_cursor;
        self.cursor_edge_ms = saturate(cursor_edge);
        self.total_s()
    }

    pub fn total_s(&self) -> f64 {
        self.total_ms as f64 / 1000.0
    }

    pub fn path(&self) -> &PathCode {
        &self.path
    }

    /// Locates the vehicle at `edge`/`offset_m` on the path, scanning forward
    /// from where it last was (sparse pings skip edges); one edge back is
    /// accepted too (a match that steps back along the road), answered from
    /// there without moving the cursor back. `None` when the edge is not on
    /// the path: the vehicle left it. `metric` is the one the leg was last
    /// timed on.
    pub fn advance(
        &mut self,
        graph: &Graph,
        metric: &CchMetric,
        edge: u32,
        offset_m: f64,
    ) -> Option<Progress> {
        let cursor = self.cursor as usize;
        // Find it first (decoding only: a ping off the path costs no more),
        // then sum the figures of the edges passed on the way.
        let ahead = {
            let (mut i, mut pos, mut before) = (cursor, self.at, self.before);
            loop {
                match self.path.read(pos) {
                    Some((e, _)) if e == edge => break Some((i, pos, before)),
                    Some((_, next)) => (before, pos, i) = (pos, next, i + 1),
                    None => break None,
                }
            }
        };
        let (i, at_m, at_ms) = match ahead {
            Some((i, pos, before)) => {
                if i > cursor {
                    let mut at = self.at;
                    for k in cursor..i {
                        let (e, next) = self.path.read(at)?;
                        let (a, b) = self.covered(graph, k, e);
                        self.cursor_m += b - a;
                        self.cursor_ms += self.edge_ms(graph, metric, k, e);
                        at = next;
                    }
                    self.cursor = i as u32;
                    self.at = pos;
                    self.before = before;
                    self.cursor_edge_ms = saturate(self.edge_ms(graph, metric, i, edge));
                }
                (i, self.cursor_m, self.cursor_ms)
            }
            None if cursor > 0 && self.path.read(self.before)?.0 == edge => {
                let (a, b) = self.covered(graph, cursor - 1, edge);
                let ms = self.edge_ms(graph, metric, cursor - 1, edge);
                (
                    cursor - 1,
                    self.cursor_m - (b - a),
                    self.cursor_ms.saturating_sub(ms),
                )
            }
            None => return None,
        };
        let (a, b) = self.covered(graph, i, edge);
        // Past the stop on its own edge: overshot; the caller decides.
        if i + 1 == self.path.len() && offset_m > b + 1.0 {
            return None;
        }
        let edge_ms = if i == cursor {
            u64::from(self.cursor_edge_ms)
        } else {
            self.edge_ms(graph, metric, i, edge)
        } as f64;
        // Behind the leg's start on its first edge (the match stepped back
        // a little) counts the extra way; past the end of an edge never does.
        let o = offset_m.min(b);
        let left = if b > a { (b - o) / (b - a) } else { 0.0 };
        let edge_m = b - a;
        Some(Progress {
            remaining_s: ((self.total_ms as f64 - at_ms as f64 - edge_ms) + edge_ms * left)
                / 1000.0,
            remaining_m: (self.total_m - (at_m + edge_m)) + edge_m * left,
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.path.heap_bytes()
    }
}

/// The path between two consecutive stops.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StopLeg {
    path: PathCode,
    /// Where it starts and ends on its first and last edge: stops' places,
    /// which are `f32` already.
    start_m: f32,
    end_m: f32,
    pub seconds: f64,
    pub metres: f64,
    /// A new metric moved its time enough to search it again.
    pub stale: bool,
}

impl StopLeg {
    pub fn from_route(graph: &Graph, metric: &CchMetric, route: Route) -> Self {
        let mut leg = Self {
            start_m: route.start.offset_m as f32,
            end_m: route.end.offset_m as f32,
            metres: route.distance_m,
            path: PathCode::encode(&route.edges),
            seconds: 0.0,
            stale: false,
        };
        leg.retime(graph, metric);
        leg
    }

    /// Recomputes the time along the same path under another metric.
    pub fn retime(&mut self, graph: &Graph, metric: &CchMetric) -> f64 {
        let (start_m, end_m) = (f64::from(self.start_m), f64::from(self.end_m));
        self.seconds = path_ms(graph, metric, &self.path, start_m, end_m) as f64 / 1000.0;
        self.seconds
    }

    pub fn heap_bytes(&self) -> usize {
        self.path.heap_bytes()
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
                let p = leg.advance(&g, &metric, e, 0.0).expect("on the path");
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
            assert!(leg.advance(&g, &metric, off, 0.0).is_none());
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn a_step_back_and_a_new_metric_keep_the_figures_right() {
        use lastmile_roadgraph::Cch;
        let g =
            lastmile_roadgraph::Graph::from_data(&lastmile_roadgraph::synthetic::generate_city(
                &lastmile_roadgraph::CityParams::new(3_000, 7),
            ));
        let mut router = Router::new(&g, Metric::Time);
        let metric = router.metric().clone();
        // Every edge twice as slow.
        let cch = Cch::new(&g);
        let slow = CchMetric::new(
            &cch,
            (0..g.num_edges() as u32)
                .map(|e| metric.edge_weight(e) * 2)
                .collect(),
        );
        let mut rng = lastmile_roadgraph::rng::Rng::seed(5);
        let mut checked = 0;
        while checked < 50 {
            let pick = |rng: &mut lastmile_roadgraph::rng::Rng| EdgePos {
                edge: rng.below(g.num_edges() as u64) as u32,
                offset_m: 0.0,
            };
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            let Some(route) = router.route_unrestricted(&[a], &[b]) else {
                continue;
            };
            if route.edges.len() < 6 {
                continue;
            }
            let e = &route.edges;
            let mut leg = Leg::from_route(&g, &metric, route.clone());
            let at = |leg: &mut Leg, m: &CchMetric, k: usize| {
                leg.advance(&g, m, e[k], 0.0).expect("on the path")
            };
            let p3 = at(&mut leg, &metric, 3);
            let p4 = at(&mut leg, &metric, 4);
            // One back answers for that edge, and the cursor stays ahead:
            // two back from edge 4 is off the path, edge 5 is found.
            assert_eq!(at(&mut leg, &metric, 3), p3);
            assert!(leg.advance(&g, &metric, e[2], 0.0).is_none());
            assert_eq!(at(&mut leg, &metric, 4), p4);
            // Retimed on the slower metric: the same place has twice the time
            // left (to a millisecond per edge) and the same distance.
            let total = leg.total_s();
            assert!((leg.retime(&g, &slow) - 2.0 * total).abs() < 1e-9);
            let slow4 = at(&mut leg, &slow, 4);
            assert!((slow4.remaining_s - 2.0 * p4.remaining_s).abs() < 1e-9);
            assert_eq!(slow4.remaining_m, p4.remaining_m);
            let p5 = at(&mut leg, &slow, 5);
            assert!(p5.remaining_s < slow4.remaining_s);
            checked += 1;
        }
    }
}
