//! Running the matcher over a whole trace (`lastmile match`) and measuring it
//! against ground truth (`lastmile evaluate`), for both outputs: the
//! finalised match and the immediate per-ping estimates.
//!
//! Figures, per vehicle and overall: the share of pings placed on the true
//! OSM way (pings left unmatched count as wrong), the distance from the
//! matched to the true position (median, p95), and Newson & Krumm's route
//! mismatch fraction, (length erroneously added + length erroneously
//! removed) / true length, over directed edges counted with multiplicity.
//!
//! The true route is rebuilt from the true positions: each is placed on its
//! true way, and consecutive ones are joined by the fastest path (what the
//! simulator drives; at 1 s the join is a single edge or two). The immediate
//! route is rebuilt the same way from the immediate estimates, by the
//! shortest path; the finalised route is the matcher's own path output.

use std::collections::HashMap;

use lastmile_roadgraph::dijkstra::{Dijkstra, EdgePos, Metric};
use lastmile_roadgraph::{EdgeCandidate, Graph};

use crate::matcher::{
    Estimate, FinalPoint, MatchOutput, Matcher, MatcherConfig, MatcherStats, Traversal,
    VehicleTrack,
};
use crate::trace::Trace;

/// The matcher's outputs for every row of a trace.
#[derive(Clone, Debug, Default)]
pub struct TraceMatch {
    /// Per input row (same index as `trace.rows`).
    pub immediate: Vec<Estimate>,
    pub finalized: Vec<Option<FinalPoint>>,
    /// Per vehicle, in the order of [`Trace::by_vehicle`]: the finalised path.
    pub paths: Vec<Vec<Traversal>>,
    pub stats: MatcherStats,
}

/// Matches every vehicle of a trace, each in time order.
pub fn match_trace(graph: &Graph, config: &MatcherConfig, trace: &Trace) -> TraceMatch {
    match_trace_observed(graph, config, trace, &mut |_| {})
}

/// Around each ping pushed by [`match_trace_observed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushEvent {
    Before,
    After,
}

/// [`match_trace`], calling `observe` just before and just after each ping
/// is pushed, so a caller with a clock can measure per-ping latency (the
/// engine itself never reads one).
pub fn match_trace_observed(
    graph: &Graph,
    config: &MatcherConfig,
    trace: &Trace,
    observe: &mut dyn FnMut(PushEvent),
) -> TraceMatch {
    let mut matcher = Matcher::new(graph, config.clone());
    let n = trace.rows.len();
    let mut result = TraceMatch {
        immediate: vec![Estimate::default(); n],
        finalized: vec![None; n],
        ..TraceMatch::default()
    };
    let mut out = MatchOutput::default();
    for (_, rows) in trace.by_vehicle() {
        let mut track = VehicleTrack::new();
        let mut path = Vec::new();
        let mut collect = |out: &MatchOutput, result: &mut TraceMatch| {
            for f in &out.finalized {
                result.finalized[rows[f.seq as usize]] = Some(*f);
            }
            path.extend_from_slice(&out.path);
        };
        for &r in &rows {
            observe(PushEvent::Before);
            matcher.push(&mut track, &trace.rows[r].ping, &mut out);
            observe(PushEvent::After);
            result.immediate[r] = out.immediate;
            collect(&out, &mut result);
        }
        matcher.flush(&mut track, &mut out);
        collect(&out, &mut result);
        result.paths.push(path);
    }
    result.stats = matcher.stats();
    result
}

/// Accuracy of one output over a set of pings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accuracy {
    pub pings: u64,
    pub on_true_way: u64,
    /// Matched-to-true distances of the pings placed on a road, metres.
    pub distances_m: Vec<f64>,
    pub true_length_m: f64,
    pub added_m: f64,
    pub removed_m: f64,
}

impl Accuracy {
    pub fn way_share(&self) -> f64 {
        if self.pings == 0 {
            return 0.0;
        }
        self.on_true_way as f64 / self.pings as f64
    }

    /// Newson & Krumm's route mismatch fraction.
    pub fn route_mismatch(&self) -> f64 {
        if self.true_length_m <= 0.0 {
            return 0.0;
        }
        (self.added_m + self.removed_m) / self.true_length_m
    }

    pub fn distance_percentile(&self, q: f64) -> f64 {
        percentile(&self.distances_m, q)
    }

    pub fn merge(&mut self, other: &Accuracy) {
        self.pings += other.pings;
        self.on_true_way += other.on_true_way;
        self.distances_m.extend_from_slice(&other.distances_m);
        self.true_length_m += other.true_length_m;
        self.added_m += other.added_m;
        self.removed_m += other.removed_m;
    }
}

/// `q`-quantile (0–1) of unsorted values, by nearest rank; 0 when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[derive(Clone, Debug, Default)]
pub struct VehicleEvaluation {
    pub vehicle: String,
    pub finalized: Accuracy,
    pub immediate: Accuracy,
}

#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    pub finalized: Accuracy,
    pub immediate: Accuracy,
    pub vehicles: Vec<VehicleEvaluation>,
    /// Rows whose true position could not be placed on their true way.
    pub truth_unplaced: u64,
    /// The finalised accuracy over the pings whose true road lies outside
    /// the graph's main strongly connected component (one-way exits, car
    /// parks, streets cut by the map's edge): the roads an importer that
    /// kept only the main component would have lost.
    pub outside_main: Accuracy,
}

/// Scores a match of `trace` against the trace's ground truth columns.
pub fn evaluate(graph: &Graph, trace: &Trace, m: &TraceMatch) -> Evaluation {
    let mut eval = Evaluation::default();
    let mut dijkstra = Dijkstra::new(graph);
    let mut near = Vec::new();
    for (v, (vehicle, rows)) in trace.by_vehicle().into_iter().enumerate() {
        let mut ve = VehicleEvaluation {
            vehicle,
            ..Default::default()
        };
        let mut truth_route = Vec::new();
        let mut immediate_route = Vec::new();
        let mut prev_truth: Option<Vec<EdgePos>> = None;
        let mut prev_imm: Option<EdgePos> = None;
        for &r in &rows {
            let Some(truth) = trace.rows[r].truth else {
                continue;
            };
            let im = &m.immediate[r];
            score_point(
                graph,
                truth,
                im.status.is_on_road().then_some((im.edge, im.point)),
                &mut ve.immediate,
            );
            let fin = m.finalized[r].map(|f| (f.edge, f.point));
            score_point(graph, truth, fin, &mut ve.finalized);

            let placed = place_on_way(graph, truth, &mut near);
            if placed.is_empty() {
                eval.truth_unplaced += 1;
            } else {
                if placed.iter().all(|p| !graph.edge_in_component(p.edge, 0)) {
                    score_point(graph, truth, fin, &mut eval.outside_main);
                }
                if let Some(prev) = &prev_truth {
                    join(
                        graph,
                        &mut dijkstra,
                        Metric::Time,
                        prev,
                        &placed,
                        &mut truth_route,
                    );
                }
                prev_truth = Some(placed);
            }
            if im.status.is_on_road() {
                let here = EdgePos {
                    edge: im.edge,
                    offset_m: im.offset_m,
                };
                if let Some(prev) = prev_imm {
                    join(
                        graph,
                        &mut dijkstra,
                        Metric::Distance,
                        &[prev],
                        &[here],
                        &mut immediate_route,
                    );
                }
                prev_imm = Some(here);
            }
        }
        let mut finalized_route = Vec::new();
        for t in &m.paths[v] {
            push_visit(&mut finalized_route, t.edge, t.to_m - t.from_m);
        }
        mismatch(graph, &truth_route, &finalized_route, &mut ve.finalized);
        mismatch(graph, &truth_route, &immediate_route, &mut ve.immediate);
        eval.finalized.merge(&ve.finalized);
        eval.immediate.merge(&ve.immediate);
        eval.vehicles.push(ve);
    }
    eval
}

fn score_point(
    graph: &Graph,
    truth: crate::trace::Truth,
    got: Option<(u32, lastmile_roadgraph::LatLon)>,
    acc: &mut Accuracy,
) {
    acc.pings += 1;
    if let Some((edge, point)) = got {
        if graph.way_id(edge) == truth.way_id {
            acc.on_true_way += 1;
        }
        acc.distances_m
            .push(lastmile_roadgraph::geo::haversine_m(point, truth.pos));
    }
}

/// The positions on the true way nearest the true position (both directions
/// of a two-way road).
fn place_on_way(
    graph: &Graph,
    truth: crate::trace::Truth,
    near: &mut Vec<EdgeCandidate>,
) -> Vec<EdgePos> {
    graph.edges_within(truth.pos, 25.0, near);
    let on_way: Vec<&EdgeCandidate> = near
        .iter()
        .filter(|c| graph.way_id(c.edge) == truth.way_id)
        .collect();
    let Some(best) = on_way.first().map(|c| c.distance_m) else {
        return Vec::new();
    };
    on_way
        .into_iter()
        .filter(|c| c.distance_m <= best + 0.01)
        .map(|c| EdgePos {
            edge: c.edge,
            offset_m: c.offset_m,
        })
        .collect()
}

/// Appends the edges of the best route between two position sets as visits.
/// A position behind the previous one on the same edge is standing still (a
/// rounding or jitter step back), not a loop around the block.
fn join(
    graph: &Graph,
    d: &mut Dijkstra,
    metric: Metric,
    from: &[EdgePos],
    to: &[EdgePos],
    route: &mut Vec<u32>,
) {
    for f in from {
        for t in to.iter().filter(|t| t.edge == f.edge) {
            if t.offset_m >= f.offset_m - 1.0 {
                push_visit(route, t.edge, t.offset_m - f.offset_m);
                return;
            }
        }
    }
    if from.len() == 1 && to.len() == 1 && from[0].edge == to[0].edge {
        return;
    }
    let Some(r) = d.route(graph, &metric, from, to) else {
        return;
    };
    let last = r.edges.len() - 1;
    for (k, &e) in r.edges.iter().enumerate() {
        let a = if k == 0 { r.start.offset_m } else { 0.0 };
        let b = if k == last {
            r.end.offset_m
        } else {
            graph.length_m(e)
        };
        push_visit(route, e, b - a);
    }
}

/// Adds a visit of `edge` unless it continues the previous one or covers no length.
fn push_visit(route: &mut Vec<u32>, edge: u32, covered_m: f64) {
    if covered_m > 0.01 && route.last() != Some(&edge) {
        route.push(edge);
    }
}

/// Length added and removed between two routes as multisets of edges.
fn mismatch(graph: &Graph, truth: &[u32], got: &[u32], acc: &mut Accuracy) {
    route_mismatch(truth, got, |e| graph.length_m(e), acc);
}

/// Newson & Krumm's bookkeeping over any kind of route element (graph
/// edges, benchmark arcs): each element counted with multiplicity, the true
/// length, and the length erroneously added and removed.
pub(crate) fn route_mismatch<K: std::hash::Hash + Eq + Copy>(
    truth: &[K],
    got: &[K],
    length_m: impl Fn(K) -> f64,
    acc: &mut Accuracy,
) {
    let mut count: HashMap<K, i64> = HashMap::new();
    for &e in truth {
        *count.entry(e).or_default() += 1;
        acc.true_length_m += length_m(e);
    }
    for &e in got {
        *count.entry(e).or_default() -= 1;
    }
    for (e, c) in count {
        if c > 0 {
            acc.removed_m += c as f64 * length_m(e);
        } else {
            acc.added_m += (-c) as f64 * length_m(e);
        }
    }
}
