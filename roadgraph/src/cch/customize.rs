//! Customization: turning one weight per graph edge into CCH arc weights.
//!
//! Full customization initialises every arc with its cheapest graph edge and
//! then, bottom-up over the elimination tree, lets each node *pull* its arcs'
//! weights from its lower triangles: for arc x–y and a common lower neighbour
//! v, going x→v→y may be cheaper than x→y. A node writes only its own arcs
//! and reads only arcs of its descendants, so disjoint subtrees are
//! independent: they run as parallel tasks (ranks are a post-order, so each
//! subtree is a contiguous rank block), and a node runs once its children's
//! subtrees are done. Most of the work sits in the top separators, but they
//! are spread over many branches; the chain from the root to the deepest
//! leaf is under a tenth of it on the synthetic 1M-edge city.
//!
//! Partial customization re-derives only arcs whose inputs changed: a
//! cheaper edge or triangle lowers its arc in place, a dearer one has the
//! arc recomputed from scratch (its own edges plus all its lower triangles)
//! only if it was the support the arc records; when an arc's weight moves,
//! the arcs it supports (upper sides of triangles it is a lower side of) are
//! queued, in rank order, so a weight increase is handled as exactly as a
//! decrease.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use rayon::prelude::*;

use super::perfect::Search;
use super::{Cch, DOWN, NONE, gallop};
use crate::dijkstra::{EdgeWeight, Metric};
use crate::graph::Graph;

/// Unreachable: no path in that direction.
pub const INFINITY: u32 = u32::MAX;
/// Elimination subtrees of at most this many ranks are customized on one
/// thread, in rank order (not worth handing to another core); perfect
/// customization uses the same grain.
pub(crate) const SERIAL_SUBTREE: u32 = 2048;

/// Arc weights of one customization. Two metrics are equal when their
/// weights are; the recorded middle nodes may differ where several
/// triangles give the same weight, and any of them unpacks correctly.
#[derive(Clone)]
pub struct CchMetric {
    pub(crate) up: Vec<u32>,
    pub(crate) down: Vec<u32>,
    /// What gives each arc its weight in each direction (a graph edge or a
    /// lower triangle's two arcs): path unpacking follows these without a
    /// search.
    pub(crate) up_via: Vec<Via>,
    pub(crate) down_via: Vec<Via>,
    edge_weight: Vec<u32>,
    /// The arcs queries relax, pruned by perfect customization; `None`
    /// after a partial customization until [`CchMetric::perfect`] runs again
    /// (queries then relax every arc: slower, the same answers). Shared, so
    /// cloning a metric to update it does not copy them.
    pub(crate) search: Option<Arc<Search>>,
    /// How many arc directions rest on each arc (have it as a side of their
    /// via triangle), for partial customization; counted at the first
    /// update, then kept up to date with every via it writes.
    support: Option<Support>,
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
            .field("search_arcs", &self.search_arcs())
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
    /// Full customization for one weight per graph edge (e.g. milliseconds):
    /// basic customization, then [`CchMetric::perfect`] for fast queries.
    pub fn new(cch: &Cch, edge_weight: Vec<u32>) -> Self {
        let mut m = Self::basic(cch, edge_weight);
        m.perfect(cch);
        m
    }

    /// Basic customization only: every arc weighed through its lower
    /// triangles. Queries are exact on it; [`CchMetric::perfect`] makes them
    /// faster.
    pub fn basic(cch: &Cch, edge_weight: Vec<u32>) -> Self {
        assert_eq!(
            edge_weight.len(),
            cch.graph.num_edges(),
            "one weight per edge"
        );
        let arcs = cch.num_arcs();
        let up: Vec<AtomicU32> = (0..arcs).map(|_| AtomicU32::new(INFINITY)).collect();
        let down: Vec<AtomicU32> = (0..arcs).map(|_| AtomicU32::new(INFINITY)).collect();
        let unset = || AtomicU64::new(Via::UNREACHABLE.0);
        let up_via: Vec<AtomicU64> = (0..arcs).map(|_| unset()).collect();
        let down_via: Vec<AtomicU64> = (0..arcs).map(|_| unset()).collect();
        let w = Weights {
            up: &up,
            down: &down,
            up_via: &up_via,
            down_via: &down_via,
            edge_weight: &edge_weight,
        };
        let roots: Vec<u32> = cch.roots().collect();
        roots
            .par_iter()
            .for_each(|&root| customize_subtree(cch, root, &w));
        let plain = |v: Vec<AtomicU32>| v.into_iter().map(AtomicU32::into_inner).collect();
        let vias = |v: Vec<AtomicU64>| v.into_iter().map(|a| Via(a.into_inner())).collect();
        Self {
            up: plain(up),
            down: plain(down),
            up_via: vias(up_via),
            down_via: vias(down_via),
            edge_weight,
            search: None,
            support: None,
        }
    }

    /// Perfect customization (see [`super::perfect`]): prunes the arcs
    /// queries relax to those a shortest path can use, about half of them.
    /// Both cores where the elimination tree branches.
    pub fn perfect(&mut self, cch: &Cch) {
        self.search = Some(Arc::new(Search::new(cch, &self.up, &self.down)));
    }

    /// Arc directions queries relax (forward, backward) when pruned.
    pub fn search_arcs(&self) -> Option<(usize, usize)> {
        self.search.as_ref().map(|s| (s.up.len(), s.down.len()))
    }

    /// Bytes of the metric's arrays (weights, vias, edge weights, pruned
    /// search arcs).
    pub fn heap_bytes(&self) -> usize {
        self.up.capacity() * 4
            + self.down.capacity() * 4
            + (self.up_via.capacity() + self.down_via.capacity()) * std::mem::size_of::<Via>()
            + self.edge_weight.capacity() * 4
            + self.search.as_ref().map_or(0, |s| s.heap_bytes())
            + self.support.as_ref().map_or(0, |s| s.0.capacity() * 4)
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
    /// depends only on arcs of lower ranks). When an arc's weight moves, the
    /// triangles it is a lower side of are re-evaluated for their upper arcs:
    /// a cheaper triangle simply lowers that arc; a dearer one forces a full
    /// recomputation only if the triangle was what the arc's old weight
    /// rested on. An arc that only got dearer can therefore change nothing
    /// but the arcs resting on it: it is skipped when none do, and stops
    /// scanning once it has met all that do; on the 1M-edge city that spares
    /// three in five triangles. A triangle whose two lower sides both moved
    /// is evaluated once.
    ///
    /// The first update of a metric counts the support of every arc (one
    /// pass over the vias, see [`Support`]).
    ///
    /// When an arc's weight moved, the pruned search arcs no longer hold and
    /// are dropped: queries relax every arc until [`CchMetric::perfect`]
    /// runs again.
    pub fn update(&mut self, cch: &Cch, changes: &[(u32, u32)]) -> UpdateStats {
        let mut support = self
            .support
            .take()
            .unwrap_or_else(|| Support::count(&self.up_via, &self.down_via));
        let mut stats = UpdateStats::default();
        let mut state = UpdateState::default();
        for &(e, w) in changes {
            if self.edge_weight[e as usize] == w {
                continue;
            }
            let was = std::mem::replace(&mut self.edge_weight[e as usize], w);
            let ea = cch.d.edge_arc[e as usize].to_native();
            let (a, i) = (ea >> 1, (ea >> 1) as usize);
            let current = (self.up[i], self.down[i]);
            let (arc_w, arc_via) = if ea & DOWN != 0 {
                (&mut self.down[i], &mut self.down_via[i])
            } else {
                (&mut self.up[i], &mut self.up_via[i])
            };
            // As for triangles below: a cheaper edge lowers its arc, a dearer
            // one matters only if the arc's weight rests on it.
            if w < *arc_w {
                state.touch(cch, a, current, false);
                support.replace(*arc_via, Via::edge(e));
                (*arc_w, *arc_via) = (w, Via::edge(e));
            } else if *arc_via == Via::edge(e) && w > was {
                state.touch(cch, a, current, true);
            }
        }
        let mut batch: Vec<(u32, (u32, u32))> = Vec::new();
        while let Some(&Reverse((x, _))) = state.queue.peek() {
            // All touched arcs of lower rank x: their inputs are final now.
            batch.clear();
            while let Some(&Reverse((rx, a))) = state.queue.peek() {
                if rx != x {
                    break;
                }
                state.queue.pop();
                let touched = state.touched.remove(&a).expect("queued arcs are touched");
                if touched.recompute {
                    self.recompute_arc(cch, a, &mut support);
                    stats.arcs_recomputed += 1;
                }
                batch.push((a, touched.old));
            }
            // Arcs of x that moved, with their weights before.
            batch.retain(|&(a, old)| (self.up[a as usize], self.down[a as usize]) != old);
            stats.arcs_changed += batch.len();
            if batch.is_empty() {
                continue;
            }
            // Arcs that got cheaper in some direction can lower any triangle
            // they are a side of: all their triangles are evaluated, after
            // the others, and a triangle of two of them by the later one.
            let first = cch.up_arcs(x).start;
            state.mark.clear();
            state.mark.resize(cch.up_arcs(x).len(), Mark::Settled);
            for &(a, old) in &batch {
                if self.up[a as usize] < old.0 || self.down[a as usize] < old.1 {
                    state.mark[(a - first) as usize] = Mark::Cheaper;
                }
            }
            for &(a, _) in &batch {
                let resting = support.0[a as usize];
                if state.mark[(a - first) as usize] == Mark::Settled && resting > 0 {
                    self.propagate(cch, a, Some(resting), &mut state, &mut support);
                }
            }
            for &(a, _) in &batch {
                if state.mark[(a - first) as usize] == Mark::Cheaper {
                    self.propagate(cch, a, None, &mut state, &mut support);
                    state.mark[(a - first) as usize] = Mark::Settled;
                }
            }
        }
        if stats.arcs_changed > 0 {
            self.search = None;
        }
        self.support = Some(support);
        stats
    }

    /// Recomputes arc `a` from its own edges and all its lower triangles.
    fn recompute_arc(&mut self, cch: &Cch, a: u32, support: &mut Support) {
        let (x, y) = (cch.arc_tail(a), cch.up_head(a));
        let ((mut up, mut up_via), (mut down, mut down_via)) = arc_input(cch, &self.edge_weight, a);
        // Same order and tie-breaking as full customization (ascending v,
        // strict improvement), so both give identical weights and vias.
        cch.lower_triangles(x, y, |_, a_vx, a_vy| {
            let cand_up = add(self.down[a_vx as usize], self.up[a_vy as usize]);
            if cand_up < up {
                (up, up_via) = (cand_up, Via::triangle(a_vx, a_vy));
            }
            let cand_down = add(self.down[a_vy as usize], self.up[a_vx as usize]);
            if cand_down < down {
                (down, down_via) = (cand_down, Via::triangle(a_vx, a_vy));
            }
        });
        let i = a as usize;
        support.replace(self.up_via[i], up_via);
        support.replace(self.down_via[i], down_via);
        (self.up[i], self.down[i], self.up_via[i], self.down_via[i]) = (up, down, up_via, down_via);
    }

    /// Arc `a` = x–y moved; re-evaluates the triangles {x, y, z} (z another
    /// upper neighbour of x) for their upper arcs y–z, except those whose
    /// other side x–z got cheaper and is still to be propagated (it
    /// evaluates them). With `resting`, `a` only got dearer and that many
    /// arc directions rest on it: only they can change, and the scan ends
    /// when all are found.
    fn propagate(
        &mut self,
        cch: &Cch,
        a: u32,
        mut resting: Option<u32>,
        state: &mut UpdateState,
        support: &mut Support,
    ) {
        let (x, y) = (cch.arc_tail(a), cch.up_head(a));
        let a_new = (self.up[a as usize], self.down[a as usize]);
        // Arcs y–z for z above y, found by walking y's sorted arc list along
        // x's (by chordality x's heads above y are all heads of y).
        let mut above_y = cch.up_arcs(y);
        // Arcs z–y for x < z < y, found the same way in y's lower neighbours
        // (sorted by tail), by galloping: a binary search per z in z's own
        // arc list was a fifth of an update, mostly cache misses.
        let ry = cch.down_range(y);
        let below_y = &cch.d.down_tail[ry.clone()];
        let mut k = 0;
        let x_arcs = cch.up_arcs(x);
        for b in x_arcs.clone() {
            let z = cch.up_head(b);
            if z == y || state.mark[(b - x_arcs.start) as usize] == Mark::Cheaper {
                continue;
            }
            let t = if z > y {
                above_y
                    .find(|&t| cch.up_head(t) == z)
                    .expect("chordal graph: upper neighbours form a clique")
            } else {
                k += gallop(&below_y[k..], z);
                debug_assert_eq!(below_y[k].to_native(), z, "chordal graph");
                cch.d.down_arc[ry.start + k].to_native()
            };
            let b_new = (self.up[b as usize], self.down[b as usize]);
            let ti = t as usize;
            // The triangle x, lo, hi: arcs x–lo and x–hi, which unpacking follows.
            let via = if y < z {
                Via::triangle(a, b)
            } else {
                Via::triangle(b, a)
            };
            // Through x: lo -> x -> hi is t upwards, hi -> x -> lo downwards.
            let through = |lo_arc: (u32, u32), hi_arc: (u32, u32)| {
                (add(lo_arc.1, hi_arc.0), add(hi_arc.1, lo_arc.0))
            };
            let tri_new = if y < z {
                through(a_new, b_new)
            } else {
                through(b_new, a_new)
            };
            let (lower_up, lower_down) = (tri_new.0 < self.up[ti], tri_new.1 < self.down[ti]);
            // Only a dearer triangle can take away an arc's support, and only
            // if it is the support t records: t's weight rests on its via
            // alone (whose sides, if they move, re-evaluate it for t
            // themselves), so a dearer triangle that is not t's via changes
            // nothing. Going by equal weights instead re-scans every tie,
            // and street grids are full of them.
            let recompute = (self.up_via[ti] == via && tri_new.0 > self.up[ti])
                || (self.down_via[ti] == via && tri_new.1 > self.down[ti]);
            if lower_up || lower_down || recompute {
                state.touch(cch, t, (self.up[ti], self.down[ti]), recompute);
            }
            if lower_up {
                support.replace(self.up_via[ti], via);
                (self.up[ti], self.up_via[ti]) = (tri_new.0, via);
            }
            if lower_down {
                support.replace(self.down_via[ti], via);
                (self.down[ti], self.down_via[ti]) = (tri_new.1, via);
            }
            if let Some(left) = resting.as_mut() {
                let found = u32::from(self.up_via[ti] == via) + u32::from(self.down_via[ti] == via);
                *left = left.saturating_sub(found);
                if *left == 0 {
                    break;
                }
            }
        }
    }

    /// Checks that every finite arc weight is realised by what unpacking will
    /// follow: a graph edge of that weight on the arc, or a lower triangle of
    /// the arc whose two sides sum to it, and that the support counts partial
    /// customization keeps (if any yet) match the vias. Returns the first arc
    /// that is not (for tests and debugging).
    pub fn check_vias(&self, cch: &Cch) -> Result<(), u32> {
        if let Some(kept) = &self.support {
            let fresh = Support::count(&self.up_via, &self.down_via);
            if let Some(a) = (0..kept.0.len()).find(|&a| kept.0[a] != fresh.0[a]) {
                return Err(a as u32);
            }
        }
        for a in 0..cch.num_arcs() as u32 {
            let i = a as usize;
            let (x, y) = (cch.arc_tail(a), cch.up_head(a));
            for downwards in [false, true] {
                let (w, via) = if downwards {
                    (self.down[i], self.down_via[i])
                } else {
                    (self.up[i], self.up_via[i])
                };
                let ok = match via.get() {
                    Realised::Unreachable => w == INFINITY,
                    Realised::Edge(e) => {
                        let ea = cch.d.edge_arc.get(e as usize).map(|ea| ea.to_native());
                        ea == Some((a << 1) | if downwards { DOWN } else { 0 })
                            && self.edge_weight[e as usize] == w
                    }
                    Realised::Triangle { a_vx, a_vy } => {
                        let valid = [a_vx, a_vy].iter().all(|&b| (b as usize) < cch.num_arcs())
                            && cch.arc_tail(a_vx) == cch.arc_tail(a_vy)
                            && cch.up_head(a_vx) == x
                            && cch.up_head(a_vy) == y;
                        let sum = if downwards {
                            add(self.down[a_vy as usize], self.up[a_vx as usize])
                        } else {
                            add(self.down[a_vx as usize], self.up[a_vy as usize])
                        };
                        valid && sum == w
                    }
                };
                if !ok {
                    return Err(a);
                }
            }
        }
        Ok(())
    }
}

/// The cheapest graph edge on arc `a` in each direction, ignoring shortcuts:
/// `((up weight, its via), (down weight, its via))`.
fn arc_input(cch: &Cch, edge_weight: &[u32], a: u32) -> ((u32, Via), (u32, Via)) {
    let d = cch.d;
    let mut up = (INFINITY, Via::UNREACHABLE);
    let mut down = (INFINITY, Via::UNREACHABLE);
    let r = d.arc_first_edge[a as usize].to_native() as usize
        ..d.arc_first_edge[a as usize + 1].to_native() as usize;
    for e in d.arc_edges[r].iter().map(|e| e.to_native()) {
        let w = edge_weight[e as usize];
        let best = if d.edge_arc[e as usize].to_native() & DOWN != 0 {
            &mut down
        } else {
            &mut up
        };
        if w < best.0 {
            *best = (w, Via::edge(e));
        }
    }
    (up, down)
}

/// How an arc gets its weight in one direction, in one word: a graph edge,
/// or a lower triangle {v, x, y} of arc x–y as its arcs v–x and v–y.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Via(u64);

/// [`Via`] unpacked.
pub(crate) enum Realised {
    Unreachable,
    Edge(u32),
    Triangle { a_vx: u32, a_vy: u32 },
}

impl Via {
    const UNREACHABLE: Via = Via(u64::MAX);

    fn edge(e: u32) -> Via {
        Via(u64::from(e) | (u64::from(NONE) << 32))
    }

    fn triangle(a_vx: u32, a_vy: u32) -> Via {
        Via(u64::from(a_vx) | (u64::from(a_vy) << 32))
    }

    #[inline]
    pub(crate) fn get(self) -> Realised {
        let (lo, hi) = (self.0 as u32, (self.0 >> 32) as u32);
        match (lo, hi) {
            (NONE, NONE) => Realised::Unreachable,
            (e, NONE) => Realised::Edge(e),
            (a_vx, a_vy) => Realised::Triangle { a_vx, a_vy },
        }
    }
}

/// For each arc, how many arc directions have it as a side of their via
/// triangle. An arc that gets dearer can make another arc dearer only if
/// that arc rests on it, so an arc nothing rests on needs no propagation
/// when it only rises.
#[derive(Clone)]
struct Support(Vec<u32>);

impl Support {
    fn count(up_via: &[Via], down_via: &[Via]) -> Self {
        let mut n = vec![0u32; up_via.len()];
        for via in up_via.iter().chain(down_via) {
            if let Realised::Triangle { a_vx, a_vy } = via.get() {
                n[a_vx as usize] += 1;
                n[a_vy as usize] += 1;
            }
        }
        Self(n)
    }

    /// An arc direction's via changes from `old` to `new`.
    #[inline]
    fn replace(&mut self, old: Via, new: Via) {
        if old == new {
            return;
        }
        if let Realised::Triangle { a_vx, a_vy } = old.get() {
            self.0[a_vx as usize] -= 1;
            self.0[a_vy as usize] -= 1;
        }
        if let Realised::Triangle { a_vx, a_vy } = new.get() {
            self.0[a_vx as usize] += 1;
            self.0[a_vy as usize] += 1;
        }
    }
}

/// An arc of the rank being settled, as its triangles are propagated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Unchanged, rose only, or already propagated.
    Settled,
    /// Got cheaper in some direction; its triangles are still to be
    /// evaluated, by itself.
    Cheaper,
}

/// What a partial customization remembers about an arc it touched.
#[derive(Clone, Copy)]
struct Touched {
    /// Weights before this update.
    old: (u32, u32),
    /// Recompute from all lower triangles (its support may be gone).
    recompute: bool,
}

/// Bookkeeping of one partial customization.
#[derive(Default)]
struct UpdateState {
    /// (lower rank, arc) of every touched arc, popped one rank at a time.
    queue: BinaryHeap<Reverse<(u32, u32)>>,
    /// Touched arcs not yet processed: an arc is in the queue exactly while
    /// it is here.
    touched: HashMap<u32, Touched, BuildHasherDefault<ArcIdHasher>>,
    /// [`Mark`] of each arc of the rank being settled, by arc index from its
    /// first.
    mark: Vec<Mark>,
}

impl UpdateState {
    /// Queues arc `a` (once) for processing at its lower rank, remembering
    /// its `current` weights if this is the first time it is touched.
    fn touch(&mut self, cch: &Cch, a: u32, current: (u32, u32), recompute: bool) {
        let entry = self.touched.entry(a).or_insert_with(|| {
            self.queue.push(Reverse((cch.arc_tail(a), a)));
            Touched {
                old: current,
                recompute: false,
            }
        });
        entry.recompute |= recompute;
    }
}

/// Hashes arc ids (dense `u32`s, never attacker-chosen) with one multiply:
/// SipHash was an eighth of a partial customization.
#[derive(Default)]
struct ArcIdHasher(u64);

impl Hasher for ArcIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Arc weights and vias during full customization. Each arc is written only
/// by the node that owns it (its lower end), so relaxed atomics suffice; the
/// level barrier orders writes before later levels read them.
struct Weights<'a> {
    up: &'a [AtomicU32],
    down: &'a [AtomicU32],
    up_via: &'a [AtomicU64],
    down_via: &'a [AtomicU64],
    edge_weight: &'a [u32],
}

/// Customizes the elimination subtree rooted at `root`: the single-child
/// chain below it is walked down to the first branching (or small) subtree,
/// the branches run as parallel tasks, then the chain's nodes are pulled
/// bottom-up. Walking chains instead of recursing keeps the stack shallow
/// however tall the tree.
fn customize_subtree(cch: &Cch, root: u32, w: &Weights) {
    let mut chain: Vec<u32> = Vec::new();
    let mut x = root;
    loop {
        let size = cch.subtree_size(x);
        if size <= SERIAL_SUBTREE {
            for r in x + 1 - size..=x {
                pull_node(cch, r, w);
            }
            break;
        }
        chain.push(x);
        let mut children = cch.children(x);
        match (children.next(), children.next()) {
            (Some(only), None) => x = only,
            (Some(a), Some(b)) => {
                let rest: Vec<u32> = children.collect();
                rayon::join(
                    || customize_subtree(cch, a, w),
                    || {
                        rayon::join(
                            || customize_subtree(cch, b, w),
                            || rest.par_iter().for_each(|&c| customize_subtree(cch, c, w)),
                        )
                    },
                );
                break;
            }
            (None, _) => break,
        }
    }
    for &x in chain.iter().rev() {
        pull_node(cch, x, w);
    }
}

/// One of x's arcs while x is pulled: weights and middle nodes.
#[derive(Clone, Copy)]
struct ArcState {
    up: u32,
    down: u32,
    up_via: Via,
    down_via: Via,
}

impl ArcState {
    const UNREACHED: Self = Self {
        up: INFINITY,
        down: INFINITY,
        up_via: Via::UNREACHABLE,
        down_via: Via::UNREACHABLE,
    };
}

/// Per-thread working set of [`pull_node`].
#[derive(Default)]
struct PullScratch {
    /// Position of arc x–y in x's arc list, by rank y. Never reset: by
    /// chordality every lookup is for an upper neighbour of the current x,
    /// whose entry was just written. Every value ever stored is below
    /// `arcs.len()` (which never shrinks), so a lookup is always in bounds
    /// of `arcs`, whatever the data.
    slot: Vec<u32>,
    /// x's arcs while x is pulled (the first `up degree` entries): a few
    /// hundred at most, so the triangle loop reads and writes L1, not the
    /// shared arrays.
    arcs: Vec<ArcState>,
}

/// Pulls the weights of node x's upward arcs from its lower triangles.
fn pull_node(cch: &Cch, x: u32, w: &Weights) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<PullScratch> = std::cell::RefCell::default();
    }
    let d = cch.d;
    let arcs = cch.up_arcs(x);
    let (first, last) = (arcs.start as usize, arcs.end as usize);
    if first == last {
        return;
    }
    SCRATCH.with(|scratch| {
        let s = &mut *scratch.borrow_mut();
        if s.slot.len() < cch.graph.num_nodes() {
            s.slot.resize(cch.graph.num_nodes(), 0);
        }
        if s.arcs.len() < last - first {
            s.arcs.resize(last - first, ArcState::UNREACHED);
        }
        for (i, a) in (first..last).enumerate() {
            s.slot[d.up_head[a].to_native() as usize] = i as u32;
            let ((up, up_via), (down, down_via)) = arc_input(cch, w.edge_weight, a as u32);
            s.arcs[i] = ArcState {
                up,
                down,
                up_via,
                down_via,
            };
        }
        let (slot, mine) = (&s.slot[..], &mut s.arcs[..]);
        for k in cch.down_range(x) {
            let a_vx = d.down_arc[k].to_native();
            let (vx_up, vx_down) = (
                w.up[a_vx as usize].load(Relaxed),
                w.down[a_vx as usize].load(Relaxed),
            );
            if vx_down == INFINITY && vx_up == INFINITY {
                continue;
            }
            // v's upper neighbours above x (all upper neighbours of x too):
            // v's arcs are sorted by head, so they follow v–x itself.
            let v = d.down_tail[k].to_native();
            let (above, end) = (a_vx as usize + 1, cch.up_arcs(v).end as usize);
            let triangles = d.up_head[above..end]
                .iter()
                .zip(&w.up[above..end])
                .zip(&w.down[above..end]);
            for (a_vy, ((y, vy_up), vy_down)) in (above as u32..).zip(triangles) {
                let (vy_up, vy_down) = (vy_up.load(Relaxed), vy_down.load(Relaxed));
                let i = slot[y.to_native() as usize] as usize;
                // SAFETY: every value stored in `slot` is below `arcs.len()`
                // (see `PullScratch`); the unchecked index is worth a fifth
                // of the customization time.
                let arc = unsafe { mine.get_unchecked_mut(i) };
                // Selects, not branches: whether a triangle improves an arc is
                // data-dependent and mispredicts often.
                let cand_up = add(vx_down, vy_up);
                let better = cand_up < arc.up;
                arc.up = if better { cand_up } else { arc.up };
                let via = Via::triangle(a_vx, a_vy);
                arc.up_via = if better { via } else { arc.up_via };
                let cand_down = add(vy_down, vx_up);
                let better = cand_down < arc.down;
                arc.down = if better { cand_down } else { arc.down };
                arc.down_via = if better { via } else { arc.down_via };
            }
        }
        for (arc, a) in mine[..last - first].iter().zip(first..last) {
            w.up[a].store(arc.up, Relaxed);
            w.down[a].store(arc.down, Relaxed);
            w.up_via[a].store(arc.up_via.0, Relaxed);
            w.down_via[a].store(arc.down_via.0, Relaxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;
    use crate::synthetic::{CityParams, generate_city};

    /// Each node is pulled by one task, after its subtree and in the same
    /// triangle order, so the thread count changes neither weights nor the
    /// triangles unpacking follows, nor the arcs perfect customization
    /// keeps.
    #[test]
    fn customization_is_the_same_on_any_number_of_threads() {
        let g = Graph::from_data(&generate_city(&CityParams::new(60_000, 3)));
        let cch = Cch::new(&g);
        let weights = Metric::Time.weights(&g);
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| CchMetric::new(&cch, weights.clone()))
        };
        let one = on(1);
        assert!(cch.subtree_size(cch.roots().next().unwrap()) > 4 * SERIAL_SUBTREE);
        for threads in [2, 4] {
            let many = on(threads);
            assert_eq!(one, many);
            assert_eq!(one.up_via, many.up_via);
            assert_eq!(one.down_via, many.down_via);
            // Perfect weights are true distances, whatever the task order.
            assert_eq!(one.search, many.search);
        }
        assert_eq!(one.check_vias(&cch), Ok(()));
    }
}
