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
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rayon::prelude::*;

use super::{Cch, DOWN, NONE};
use crate::dijkstra::{EdgeWeight, Metric};
use crate::graph::Graph;

/// Unreachable: no path in that direction.
pub const INFINITY: u32 = u32::MAX;
/// Levels narrower than this are customized on one thread (not worth the fork).
const PARALLEL_LEVEL: usize = 1024;

/// Arc weights of one customization. Two metrics are equal when their
/// weights are; the recorded middle nodes may differ where several
/// triangles give the same weight, and any of them unpacks correctly.
#[derive(Clone)]
pub struct CchMetric {
    pub(crate) up: Vec<u32>,
    pub(crate) down: Vec<u32>,
    /// Middle rank of the lower triangle that gives each arc its weight, or
    /// [`NONE`] when a graph edge does: path unpacking follows these.
    pub(crate) up_via: Vec<u32>,
    pub(crate) down_via: Vec<u32>,
    edge_weight: Vec<u32>,
}

impl std::fmt::Debug for CchMetric {
    // A summary: the weight vectors have millions of entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = |v: &[u32]| {
            xxhash_rust::xxh3::xxh3_64(&v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>())
        };
        f.debug_struct("CchMetric")
            .field("arcs", &self.up.len())
            .field("up_digest", &digest(&self.up))
            .field("down_digest", &digest(&self.down))
            .field("edges", &self.edge_weight.len())
            .finish()
    }
}

impl PartialEq for CchMetric {
    fn eq(&self, other: &Self) -> bool {
        self.up == other.up && self.down == other.down && self.edge_weight == other.edge_weight
    }
}

impl Eq for CchMetric {}

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
    ///
    /// Arcs are settled one lower rank at a time, bottom-up (an arc's weight
    /// depends only on arcs of lower ranks). When an arc's weight moves, each
    /// triangle it is a lower side of is re-evaluated for the triangle's upper
    /// arc: a cheaper triangle simply lowers that arc; a dearer one forces a
    /// full recomputation only if the triangle was what the arc's old weight
    /// rested on. Decreases therefore cost O(1) per dependent arc, and only
    /// increases that remove an arc's support pay for a lower-triangle scan.
    pub fn update(&mut self, cch: &Cch, changes: &[(u32, u32)]) -> UpdateStats {
        let mut stats = UpdateStats::default();
        let mut state = UpdateState::default();
        for &(e, w) in changes {
            if self.edge_weight[e as usize] == w {
                continue;
            }
            self.edge_weight[e as usize] = w;
            let a = cch.d.edge_arc[e as usize].to_native() >> 1;
            state.touch(self, cch, a, true);
        }
        let mut batch: Vec<u32> = Vec::new();
        while let Some(&Reverse((x, _))) = state.queue.peek() {
            // All touched arcs of lower rank x: their inputs are final now.
            batch.clear();
            while let Some(&Reverse((rx, a))) = state.queue.peek() {
                if rx != x {
                    break;
                }
                state.queue.pop();
                batch.push(a);
            }
            for &a in &batch {
                if state.recompute.remove(&a) {
                    self.recompute_arc(cch, a);
                    stats.arcs_recomputed += 1;
                }
            }
            for &a in &batch {
                let old = state.old[&a];
                let i = a as usize;
                let new = (self.up[i], self.down[i]);
                if new == (old.0, old.1) {
                    continue;
                }
                stats.arcs_changed += 1;
                self.propagate(cch, a, old, &mut state);
            }
        }
        stats
    }

    /// Recomputes arc `a` from its own edges and all its lower triangles.
    fn recompute_arc(&mut self, cch: &Cch, a: u32) {
        let (x, y) = (cch.arc_tail(a), cch.up_head(a));
        let (mut up, mut down) = self.arc_input(cch, a);
        let (mut up_via, mut down_via) = (NONE, NONE);
        // Same order and tie-breaking as full customization (ascending v,
        // strict improvement), so both give identical weights and vias.
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
        let i = a as usize;
        (self.up[i], self.down[i], self.up_via[i], self.down_via[i]) = (up, down, up_via, down_via);
    }

    /// Arc `a` = x–y moved from `old`; re-evaluates every triangle {x, y, z}
    /// (z another upper neighbour of x) for its upper arc y–z.
    fn propagate(&mut self, cch: &Cch, a: u32, old: (u32, u32), state: &mut UpdateState) {
        let (x, y) = (cch.arc_tail(a), cch.up_head(a));
        for b in cch.up_arcs(x) {
            let z = cch.up_head(b);
            if z == y {
                continue;
            }
            // The other lower side's weights before this update (it may have
            // moved too, in the same batch) and now.
            let b_old = state
                .old
                .get(&b)
                .copied()
                .unwrap_or((self.up[b as usize], self.down[b as usize]));
            let b_new = (self.up[b as usize], self.down[b as usize]);
            let a_new = (self.up[a as usize], self.down[a as usize]);
            let (lo, hi, lo_arc_old, lo_arc_new, hi_arc_old, hi_arc_new) = if y < z {
                (y, z, old, a_new, b_old, b_new)
            } else {
                (z, y, b_old, b_new, old, a_new)
            };
            let t = cch
                .find_arc(lo, hi)
                .expect("chordal graph: upper neighbours form a clique");
            // lo -> x -> hi (t upwards) and hi -> x -> lo (t downwards).
            let tri_old = (
                add(lo_arc_old.1, hi_arc_old.0),
                add(hi_arc_old.1, lo_arc_old.0),
            );
            let tri_new = (
                add(lo_arc_new.1, hi_arc_new.0),
                add(hi_arc_new.1, lo_arc_new.0),
            );
            let t_old = state
                .old
                .get(&t)
                .copied()
                .unwrap_or((self.up[t as usize], self.down[t as usize]));
            let ti = t as usize;
            let mut touched = false;
            let mut recompute = false;
            if tri_new.0 < self.up[ti] {
                state.remember(t, (self.up[ti], self.down[ti]));
                (self.up[ti], self.up_via[ti]) = (tri_new.0, x);
                touched = true;
            } else if tri_new.0 > tri_old.0 && tri_old.0 == t_old.0 {
                recompute = true;
            }
            if tri_new.1 < self.down[ti] {
                state.remember(t, (self.up[ti], self.down[ti]));
                (self.down[ti], self.down_via[ti]) = (tri_new.1, x);
                touched = true;
            } else if tri_new.1 > tri_old.1 && tri_old.1 == t_old.1 {
                recompute = true;
            }
            if recompute || touched {
                state.touch(self, cch, t, recompute);
            }
        }
    }

    /// Checks that every finite arc weight is realised by what unpacking will
    /// follow: a graph edge of that weight, or the recorded lower triangle.
    /// Returns the first arc that is not (for tests and debugging).
    pub fn check_vias(&self, cch: &Cch) -> Result<(), u32> {
        for a in 0..cch.num_arcs() as u32 {
            let i = a as usize;
            let (x, y) = (cch.arc_tail(a), cch.up_head(a));
            for downwards in [false, true] {
                let (w, via) = if downwards {
                    (self.down[i], self.down_via[i])
                } else {
                    (self.up[i], self.up_via[i])
                };
                if w == INFINITY {
                    continue;
                }
                let ok = if via == NONE {
                    self.arc_edge_with_weight(cch, a, downwards, w).is_some()
                } else {
                    match (cch.find_arc(via, x), cch.find_arc(via, y)) {
                        (Some(a_vx), Some(a_vy)) => {
                            let sum = if downwards {
                                add(self.down[a_vy as usize], self.up[a_vx as usize])
                            } else {
                                add(self.down[a_vx as usize], self.up[a_vy as usize])
                            };
                            sum == w
                        }
                        _ => false,
                    }
                };
                if !ok {
                    return Err(a);
                }
            }
        }
        Ok(())
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

/// Bookkeeping of one partial customization.
#[derive(Default)]
struct UpdateState {
    /// (lower rank, arc) of every arc touched, popped one rank at a time.
    queue: BinaryHeap<Reverse<(u32, u32)>>,
    /// Weights of touched arcs before this update.
    old: HashMap<u32, (u32, u32)>,
    /// Touched arcs that must be recomputed from scratch.
    recompute: HashSet<u32>,
    /// Arcs already in the queue.
    queued: HashSet<u32>,
}

impl UpdateState {
    fn remember(&mut self, a: u32, weights: (u32, u32)) {
        self.old.entry(a).or_insert(weights);
    }

    /// Queues arc `a` (once) for processing at its lower rank, remembering
    /// its weights if this is the first time it is touched.
    fn touch(&mut self, m: &CchMetric, cch: &Cch, a: u32, recompute: bool) {
        self.remember(a, (m.up[a as usize], m.down[a as usize]));
        if recompute {
            self.recompute.insert(a);
        }
        if self.queued.insert(a) {
            self.queue.push(Reverse((cch.arc_tail(a), a)));
        }
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
    thread_local! {
        /// Arc x–y by rank y, for the node x being pulled. Never reset: by
        /// chordality every lookup is for an upper neighbour of the current x,
        /// whose entry was just written.
        static ARC_TO: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (up, down) = (w.up, w.down);
    let d = cch.d;
    ARC_TO.with(|slot| {
        let mut arc_to = slot.borrow_mut();
        if arc_to.len() < cch.graph.num_nodes() {
            arc_to.resize(cch.graph.num_nodes(), NONE);
        }
        for a in cch.up_arcs(x) {
            arc_to[d.up_head[a as usize].to_native() as usize] = a;
        }
        for k in cch.down_range(x) {
            let (v, a_vx) = (d.down_tail[k].to_native(), d.down_arc[k].to_native());
            let (vx_down, vx_up) = (
                down[a_vx as usize].load(Relaxed),
                up[a_vx as usize].load(Relaxed),
            );
            if vx_down == INFINITY && vx_up == INFINITY {
                continue;
            }
            // v's upper neighbours above x (all upper neighbours of x too).
            let v_arcs = cch.up_arcs(v);
            let heads = &d.up_head[v_arcs.start as usize..v_arcs.end as usize];
            let above = v_arcs.start + heads.partition_point(|h| h.to_native() <= x) as u32;
            for a_vy in above..v_arcs.end {
                let y = d.up_head[a_vy as usize].to_native();
                let a_xy = arc_to[y as usize] as usize;
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
    });
}
