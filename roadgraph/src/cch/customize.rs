//! Customization: turning one weight per graph edge into CCH arc weights.
//!
//! Full customization initialises every arc with its cheapest graph edge and
//! then, bottom-up over the elimination tree, lets each node *pull* its arcs'
//! weights from its lower triangles: for arc x–y and a common lower neighbour
//! v, going x→v→y may be cheaper than x→y. A node writes only its own arcs
//! and reads only arcs of its descendants, so all nodes of one tree level are
//! independent and wide levels run on all cores.
//!
//! Partial customization re-derives only arcs whose inputs changed: each
//! changed edge's arc is recomputed from scratch (its own edges plus all its
//! lower triangles), and when its weight moves, the arcs it supports (upper
//! sides of triangles it is a lower side of) are queued, in rank order, so a
//! weight increase is handled as exactly as a decrease.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rayon::prelude::*;

use super::{Cch, DOWN, NONE};
use crate::dijkstra::{EdgeWeight, Metric};
use crate::graph::Graph;

/// Unreachable: no path in that direction.
pub const INFINITY: u32 = u32::MAX;
/// Levels narrower than this are customized on one thread (not worth the fork).
const PARALLEL_LEVEL: usize = 1024;

/// Arc weights of one customization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CchMetric {
    pub(crate) up: Vec<u32>,
    pub(crate) down: Vec<u32>,
    /// Middle rank of the lower triangle that gives each arc its weight, or
    /// [`NONE`] when a graph edge does: path unpacking follows these.
    pub(crate) up_via: Vec<u32>,
    pub(crate) down_via: Vec<u32>,
    edge_weight: Vec<u32>,
}

impl EdgeWeight for CchMetric {
    #[inline]
    fn weight(&self, _: &Graph, e: u32) -> u64 {
        u64::from(self.edge_weight[e as usize])
    }
}

/// What a partial customization did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Arcs whose weight was recomputed.
    pub arcs_recomputed: usize,
    /// Arcs whose weight changed.
    pub arcs_changed: usize,
}

#[inline]
fn add(a: u32, b: u32) -> u32 {
    a.saturating_add(b)
}

impl CchMetric {
    /// Full customization for one weight per graph edge (e.g. milliseconds).
    pub fn new(cch: &Cch, edge_weight: Vec<u32>) -> Self {
        assert_eq!(
            edge_weight.len(),
            cch.graph.num_edges(),
            "one weight per edge"
        );
        let arcs = cch.num_arcs();
        let up: Vec<AtomicU32> = (0..arcs).map(|_| AtomicU32::new(INFINITY)).collect();
        let down: Vec<AtomicU32> = (0..arcs).map(|_| AtomicU32::new(INFINITY)).collect();
        let up_via: Vec<AtomicU32> = (0..arcs).map(|_| AtomicU32::new(NONE)).collect();
        let down_via: Vec<AtomicU32> = (0..arcs).map(|_| AtomicU32::new(NONE)).collect();
        for (e, &weight) in edge_weight.iter().enumerate() {
            let ea = cch.d.edge_arc[e].to_native();
            let slot = if ea & DOWN != 0 { &down } else { &up };
            slot[(ea >> 1) as usize].fetch_min(weight, Relaxed);
        }
        let w = Weights {
            up: &up,
            down: &down,
            up_via: &up_via,
            down_via: &down_via,
        };
        let level_first = &cch.d.level_first;
        for l in 0..cch.levels() {
            let ranks = &cch.d.level_ranks
                [level_first[l].to_native() as usize..level_first[l + 1].to_native() as usize];
            let pull = |x: u32| pull_node(cch, x, &w);
            if ranks.len() >= PARALLEL_LEVEL {
                ranks.par_iter().for_each(|x| pull(x.to_native()));
            } else {
                ranks.iter().for_each(|x| pull(x.to_native()));
            }
        }
        let plain = |v: Vec<AtomicU32>| v.into_iter().map(AtomicU32::into_inner).collect();
        Self {
            up: plain(up),
            down: plain(down),
            up_via: plain(up_via),
            down_via: plain(down_via),
            edge_weight,
        }
    }

    /// Full customization for a built-in metric of the graph.
    pub fn for_metric(cch: &Cch, metric: Metric) -> Self {
        Self::new(cch, metric.weights(cch.graph))
    }

    /// Current weight of a graph edge.
    pub fn edge_weight(&self, e: u32) -> u32 {
        self.edge_weight[e as usize]
    }

    /// Partial customization: sets new weights for some edges and updates
    /// exactly the arcs that depend on them.
    pub fn update(&mut self, cch: &Cch, changes: &[(u32, u32)]) -> UpdateStats {
        let mut stats = UpdateStats::default();
        // (lower rank, arc): processing in rank order guarantees the arcs a
        // recomputation reads are final.
        let mut queue: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::new();
        let mut last: Option<u32> = None;
        for &(e, w) in changes {
            if self.edge_weight[e as usize] == w {
                continue;
            }
            self.edge_weight[e as usize] = w;
            let a = cch.d.edge_arc[e as usize].to_native() >> 1;
            queue.push(Reverse((cch.arc_tail(a), a)));
        }
        while let Some(Reverse((x, a))) = queue.pop() {
            // Equal keys pop together, so a repeat is always the previous arc.
            if last == Some(a) {
                continue;
            }
            last = Some(a);
            let y = cch.up_head(a);
            let (mut up, mut down) = self.arc_input(cch, a);
            let (mut up_via, mut down_via) = (NONE, NONE);
            // Same order and tie-breaking as full customization (ascending v,
            // strict improvement), so both give identical arcs and vias.
            cch.lower_triangles(x, y, |v, a_vx, a_vy| {
                let cand_up = add(self.down[a_vx as usize], self.up[a_vy as usize]);
                if cand_up < up {
                    (up, up_via) = (cand_up, v);
                }
                let cand_down = add(self.down[a_vy as usize], self.up[a_vx as usize]);
                if cand_down < down {
                    (down, down_via) = (cand_down, v);
                }
            });
            stats.arcs_recomputed += 1;
            let i = a as usize;
            if (up, down, up_via, down_via)
                == (self.up[i], self.down[i], self.up_via[i], self.down_via[i])
            {
                continue;
            }
            let weight_moved = up != self.up[i] || down != self.down[i];
            (self.up[i], self.down[i], self.up_via[i], self.down_via[i]) =
                (up, down, up_via, down_via);
            if !weight_moved {
                continue;
            }
            stats.arcs_changed += 1;
            // Arc x–y is a lower side of triangle {x, y, z} for every other
            // upper neighbour z of x; the triangle's upper side is y–z.
            for b in cch.up_arcs(x) {
                let z = cch.up_head(b);
                if z == y {
                    continue;
                }
                let (lo, hi) = if y < z { (y, z) } else { (z, y) };
                let top = cch
                    .find_arc(lo, hi)
                    .expect("chordal graph: upper neighbours form a clique");
                queue.push(Reverse((lo, top)));
            }
        }
        stats
    }

    /// Cheapest graph edge on arc `a` in each direction, ignoring shortcuts.
    pub(crate) fn arc_input(&self, cch: &Cch, a: u32) -> (u32, u32) {
        let (mut up, mut down) = (INFINITY, INFINITY);
        for e in self.arc_edge_ids(cch, a) {
            let w = self.edge_weight[e as usize];
            if cch.d.edge_arc[e as usize].to_native() & DOWN != 0 {
                down = down.min(w);
            } else {
                up = up.min(w);
            }
        }
        (up, down)
    }

    /// The graph edge that realises arc `a` in one direction with weight `w`, if any.
    pub(crate) fn arc_edge_with_weight(
        &self,
        cch: &Cch,
        a: u32,
        downwards: bool,
        w: u32,
    ) -> Option<u32> {
        self.arc_edge_ids(cch, a).find(|&e| {
            (cch.d.edge_arc[e as usize].to_native() & DOWN != 0) == downwards
                && self.edge_weight[e as usize] == w
        })
    }

    fn arc_edge_ids<'c>(&self, cch: &Cch<'c>, a: u32) -> impl Iterator<Item = u32> + 'c {
        let d = cch.d;
        let r = d.arc_first_edge[a as usize].to_native() as usize
            ..d.arc_first_edge[a as usize + 1].to_native() as usize;
        d.arc_edges[r].iter().map(|e| e.to_native())
    }
}

/// Arc weights and vias during full customization. Each arc is written only
/// by the node that owns it (its lower end), so relaxed atomics suffice; the
/// level barrier orders writes before later levels read them.
struct Weights<'a> {
    up: &'a [AtomicU32],
    down: &'a [AtomicU32],
    up_via: &'a [AtomicU32],
    down_via: &'a [AtomicU32],
}

/// Pulls the weights of node x's upward arcs from its lower triangles.
fn pull_node(cch: &Cch, x: u32, w: &Weights) {
    let (up, down) = (w.up, w.down);
    let d = cch.d;
    let x_arcs = cch.up_arcs(x);
    let x_heads = &d.up_head[x_arcs.start as usize..x_arcs.end as usize];
    for k in cch.down_range(x) {
        let (v, a_vx) = (d.down_tail[k].to_native(), d.down_arc[k].to_native());
        let (vx_down, vx_up) = (
            down[a_vx as usize].load(Relaxed),
            up[a_vx as usize].load(Relaxed),
        );
        if vx_down == INFINITY && vx_up == INFINITY {
            continue;
        }
        // Upper neighbours of v above x are all upper neighbours of x: merge.
        let v_arcs = cch.up_arcs(v);
        let mut i = 0usize;
        for a_vy in v_arcs {
            let y = d.up_head[a_vy as usize].to_native();
            if y <= x {
                continue;
            }
            while x_heads[i].to_native() < y {
                i += 1;
            }
            let a_xy = x_arcs.start as usize + i;
            let cand_up = add(vx_down, up[a_vy as usize].load(Relaxed));
            if cand_up < up[a_xy].load(Relaxed) {
                up[a_xy].store(cand_up, Relaxed);
                w.up_via[a_xy].store(v, Relaxed);
            }
            let cand_down = add(down[a_vy as usize].load(Relaxed), vx_up);
            if cand_down < down[a_xy].load(Relaxed) {
                down[a_xy].store(cand_down, Relaxed);
                w.down_via[a_xy].store(v, Relaxed);
            }
        }
    }
}
