//! CCH queries by elimination-tree search (Bauer et al.): the upward search
//! space of a node is exactly its ancestors in the elimination tree, so a
//! query walks them in rank order and relaxes their upward arcs, with no
//! priority queue. The forward search from the source and the backward search
//! from the target meet at common ancestors.
//!
//! Searches relax the metric's pruned arc lists when it has them (see
//! [`super::perfect`]), every arc otherwise. A node's predecessor is the rank
//! it was reached from; the arc between them is looked up only for the
//! route's own arcs.
//!
//! Endpoints are positions on edges: a source on edge `s` at offset `o`
//! starts at `head(s)` having paid the rest of `s`; a target on `t` is
//! reached from `tail(t)` plus the part of `t` up to its offset; a target
//! ahead on the source's own edge is reached directly. Paths are unpacked by
//! following, for each shortcut, the lower triangle customization recorded
//! as its weight's origin.

use super::customize::{CchMetric, INFINITY, Realised};
use super::perfect::SearchArcs;
use super::{Cch, NONE};
use crate::dijkstra::{CLOSED, EdgePos, EdgeWeight, Route, finish_route, partial_weight};

/// Predecessor tag: reached directly from the endpoint whose index is in the low bits.
const ENDPOINT: u32 = 1 << 31;

/// Per-thread query scratch space; reuse it, queries then allocate only their
/// results.
pub struct CchQuery {
    df: Vec<u64>,
    db: Vec<u64>,
    pf: Vec<u32>,
    pb: Vec<u32>,
    mark_f: Vec<u32>,
    mark_b: Vec<u32>,
    epoch: u32,
    list_f: Vec<u32>,
    list_b: Vec<u32>,
    unpack: Vec<(u32, bool)>,
    /// The up-then-down arc path of the last route, before unpacking.
    arcs: Vec<(u32, bool)>,
    /// Backward search spaces of table targets: (rank, cost) sorted by rank.
    spaces: Vec<Vec<(u32, u64)>>,
}

impl CchQuery {
    pub fn new(cch: &Cch) -> Self {
        let n = cch.graph.num_nodes();
        Self {
            df: vec![u64::MAX; n],
            db: vec![u64::MAX; n],
            pf: vec![NONE; n],
            pb: vec![NONE; n],
            mark_f: vec![0; n],
            mark_b: vec![0; n],
            epoch: 0,
            list_f: Vec::new(),
            list_b: Vec::new(),
            unpack: Vec::new(),
            arcs: Vec::new(),
            spaces: Vec::new(),
        }
    }

    fn next_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.mark_f.fill(0);
            self.mark_b.fill(0);
            self.epoch = 1;
        }
    }

    /// Forward search from `(rank, cost, tag)` starts over the upward arcs.
    fn forward(
        &mut self,
        cch: &Cch,
        m: &CchMetric,
        starts: impl Iterator<Item = (u32, u64, u32)> + Clone,
    ) {
        self.collect(cch, starts, true);
        let up = Arcs::up(m);
        for &x in &self.list_f {
            relax(cch, x, up, &mut self.df, &mut self.pf);
        }
    }

    /// Backward search: costs to reach the targets, over downward arcs.
    fn backward(
        &mut self,
        cch: &Cch,
        m: &CchMetric,
        starts: impl Iterator<Item = (u32, u64, u32)> + Clone,
    ) {
        self.collect(cch, starts, false);
        let down = Arcs::down(m);
        for &x in &self.list_b {
            relax(cch, x, down, &mut self.db, &mut self.pb);
        }
    }

    /// Point-to-point search: both ancestor chains are walked together in
    /// rank order; where they meet, the best total so far bounds the rest, and
    /// a node whose distance already reaches it relaxes nothing (the top
    /// separators, with the most arcs, sit above the meeting point).
    fn bidirectional(
        &mut self,
        cch: &Cch,
        w: &CchMetric,
        from: &[EdgePos],
        to: &[EdgePos],
    ) -> Option<(u64, u32)> {
        self.collect(cch, Self::source_starts(cch, w, from), true);
        self.collect(cch, Self::target_starts(cch, w, to), false);
        let (up, down) = (Arcs::up(w), Arcs::down(w));
        let mut best: Option<(u64, u32)> = None;
        let (mut i, mut j) = (0, 0);
        while i < self.list_f.len() || j < self.list_b.len() {
            let xf = self.list_f.get(i).copied().unwrap_or(u32::MAX);
            let xb = self.list_b.get(j).copied().unwrap_or(u32::MAX);
            let x = xf.min(xb);
            let (in_f, in_b) = (xf == x, xb == x);
            i += usize::from(in_f);
            j += usize::from(in_b);
            let (df, db) = (self.df[x as usize], self.db[x as usize]);
            if in_f
                && in_b
                && df != u64::MAX
                && db != u64::MAX
                && best.is_none_or(|(c, _)| df + db < c)
            {
                best = Some((df + db, x));
            }
            let bound = best.map_or(u64::MAX, |(c, _)| c);
            if in_f && df < bound {
                relax(cch, x, up, &mut self.df, &mut self.pf);
            }
            if in_b && db < bound {
                relax(cch, x, down, &mut self.db, &mut self.pb);
            }
        }
        best
    }

    /// Marks the ancestor chains of the starts for one direction, resets
    /// their distances, applies the start costs and sorts the list by rank.
    fn collect(
        &mut self,
        cch: &Cch,
        starts: impl Iterator<Item = (u32, u64, u32)> + Clone,
        forward: bool,
    ) {
        let (list, mark, dist, pred) = if forward {
            (
                &mut self.list_f,
                &mut self.mark_f,
                &mut self.df,
                &mut self.pf,
            )
        } else {
            (
                &mut self.list_b,
                &mut self.mark_b,
                &mut self.db,
                &mut self.pb,
            )
        };
        list.clear();
        for (r, _, _) in starts.clone() {
            let mut x = r;
            while x != NONE && mark[x as usize] != self.epoch {
                mark[x as usize] = self.epoch;
                dist[x as usize] = u64::MAX;
                list.push(x);
                x = cch.parent(x);
            }
        }
        for (r, c, tag) in starts {
            if c < dist[r as usize] {
                dist[r as usize] = c;
                pred[r as usize] = tag;
            }
        }
        list.sort_unstable();
    }

    /// Best meeting rank and cost of the last forward and backward searches.
    fn meet(&self) -> Option<(u64, u32)> {
        let mut best: Option<(u64, u32)> = None;
        for &x in &self.list_b {
            if self.mark_f[x as usize] != self.epoch {
                continue;
            }
            let (f, b) = (self.df[x as usize], self.db[x as usize]);
            if f == u64::MAX || b == u64::MAX {
                continue;
            }
            if best.is_none_or(|(c, _)| f + b < c) {
                best = Some((f + b, x));
            }
        }
        best
    }

    fn source_starts<'a>(
        cch: &'a Cch,
        w: &'a CchMetric,
        from: &'a [EdgePos],
    ) -> impl Iterator<Item = (u32, u64, u32)> + Clone + 'a {
        let g = cch.graph;
        from.iter()
            .enumerate()
            .filter(move |(_, s)| w.weight(g, s.edge) < CLOSED)
            .map(move |(i, s)| {
                let c = partial_weight(g, w, s.edge, s.offset_m, g.length_m(s.edge));
                (cch.rank(g.head(s.edge)), c, ENDPOINT | i as u32)
            })
    }

    fn target_starts<'a>(
        cch: &'a Cch,
        w: &'a CchMetric,
        to: &'a [EdgePos],
    ) -> impl Iterator<Item = (u32, u64, u32)> + Clone + 'a {
        let g = cch.graph;
        to.iter()
            .enumerate()
            .filter(move |(_, t)| w.weight(g, t.edge) < CLOSED)
            .map(move |(j, t)| {
                let c = partial_weight(g, w, t.edge, 0.0, t.offset_m);
                (cch.rank(g.tail(t.edge)), c, ENDPOINT | j as u32)
            })
    }

    /// Cheapest direct way along one edge from a source to a target, if any.
    fn direct(
        cch: &Cch,
        w: &CchMetric,
        from: &[EdgePos],
        to: &[EdgePos],
    ) -> Option<(u64, usize, usize)> {
        let mut best: Option<(u64, usize, usize)> = None;
        for (i, s) in from.iter().enumerate() {
            for (j, t) in to.iter().enumerate() {
                if s.edge == t.edge
                    && t.offset_m >= s.offset_m
                    && w.weight(cch.graph, s.edge) < CLOSED
                {
                    let c = partial_weight(cch.graph, w, s.edge, s.offset_m, t.offset_m);
                    if best.is_none_or(|b| c < b.0) {
                        best = Some((c, i, j));
                    }
                }
            }
        }
        best
    }

    /// Cost of the shortest route from any of `from` to any of `to`, without
    /// unpacking it (ETAs that need no path).
    pub fn cost(
        &mut self,
        cch: &Cch,
        w: &CchMetric,
        from: &[EdgePos],
        to: &[EdgePos],
    ) -> Option<u64> {
        self.next_epoch();
        let through = self.bidirectional(cch, w, from, to).map(|(c, _)| c);
        let direct = Self::direct(cch, w, from, to).map(|(c, _, _)| c);
        through.into_iter().chain(direct).min()
    }

    /// Shortest route from any of `from` to any of `to`, with its edges.
    pub fn route(
        &mut self,
        cch: &Cch,
        w: &CchMetric,
        from: &[EdgePos],
        to: &[EdgePos],
    ) -> Option<Route> {
        let g = cch.graph;
        self.next_epoch();
        let through = self.bidirectional(cch, w, from, to);
        let direct = Self::direct(cch, w, from, to);
        match (through, direct) {
            (_, Some((dc, i, j))) if through.is_none_or(|(tc, _)| dc <= tc) => {
                Some(finish_route(g, dc, vec![from[i].edge], from[i], to[j]))
            }
            (Some((cost, m)), _) => {
                // Arcs from the source up to the meeting rank, then down to the target.
                let mut arcs = std::mem::take(&mut self.arcs);
                arcs.clear();
                let mut x = m;
                let start = loop {
                    let p = self.pf[x as usize];
                    if p & ENDPOINT != 0 {
                        break from[(p & !ENDPOINT) as usize];
                    }
                    arcs.push((arc_between(cch, p, x), false));
                    x = p;
                };
                arcs.reverse();
                let mut x = m;
                let end = loop {
                    let p = self.pb[x as usize];
                    if p & ENDPOINT != 0 {
                        break to[(p & !ENDPOINT) as usize];
                    }
                    arcs.push((arc_between(cch, p, x), true));
                    x = p;
                };
                let mut edges = vec![start.edge];
                for &(a, downwards) in &arcs {
                    self.unpack_arc(w, a, downwards, &mut edges);
                }
                self.arcs = arcs;
                edges.push(end.edge);
                Some(finish_route(g, cost, edges, start, end))
            }
            (None, _) => None,
        }
    }

    /// Appends the graph edges of arc `a` (travelled downwards or upwards),
    /// following the lower triangles customization recorded.
    fn unpack_arc(&mut self, m: &CchMetric, a: u32, downwards: bool, out: &mut Vec<u32>) {
        self.unpack.clear();
        self.unpack.push((a, downwards));
        while let Some((a, downwards)) = self.unpack.pop() {
            let via = if downwards {
                m.down_via[a as usize]
            } else {
                m.up_via[a as usize]
            };
            match via.get() {
                Realised::Edge(e) => out.push(e),
                // Pushed in reverse so the first half is unpacked first.
                Realised::Triangle { a_vx, a_vy } if downwards => {
                    // y -> v -> x
                    self.unpack.push((a_vx, false));
                    self.unpack.push((a_vy, true));
                }
                Realised::Triangle { a_vx, a_vy } => {
                    // x -> v -> y
                    self.unpack.push((a_vy, false));
                    self.unpack.push((a_vx, true));
                }
                Realised::Unreachable => {
                    unreachable!("a route only follows arcs of finite weight")
                }
            }
        }
    }

    /// Cost from `from` to each target place (each a set of positions, e.g.
    /// both directions of a street); `None` where unreachable.
    pub fn one_to_many(
        &mut self,
        cch: &Cch,
        w: &CchMetric,
        from: &[EdgePos],
        to: &[Vec<EdgePos>],
    ) -> Vec<Option<u64>> {
        self.next_epoch();
        self.forward(cch, w, Self::source_starts(cch, w, from));
        let mut out = Vec::with_capacity(to.len());
        for t in to {
            // Backward marks must not leak between targets.
            self.bump_backward_epoch();
            self.backward(cch, w, Self::target_starts(cch, w, t));
            let through = self.meet().map(|(c, _)| c);
            let direct = Self::direct(cch, w, from, t).map(|(c, _, _)| c);
            out.push(through.into_iter().chain(direct).min());
        }
        out
    }

    /// Invalidates backward marks only (forward results stay usable).
    fn bump_backward_epoch(&mut self) {
        for &x in &self.list_b {
            self.mark_b[x as usize] = 0;
        }
        self.list_b.clear();
    }

    /// Row-major matrix of costs from every source place to every target place.
    pub fn table(
        &mut self,
        cch: &Cch,
        w: &CchMetric,
        from: &[Vec<EdgePos>],
        to: &[Vec<EdgePos>],
    ) -> Vec<Option<u64>> {
        // Backward search spaces once per target.
        self.spaces.resize_with(to.len(), Vec::new);
        for (j, t) in to.iter().enumerate() {
            self.next_epoch();
            self.backward(cch, w, Self::target_starts(cch, w, t));
            let space = &mut self.spaces[j];
            space.clear();
            space.extend(
                self.list_b
                    .iter()
                    .map(|&x| (x, self.db[x as usize]))
                    .filter(|&(_, d)| d != u64::MAX),
            );
        }
        let mut out = Vec::with_capacity(from.len() * to.len());
        for s in from {
            self.next_epoch();
            self.forward(cch, w, Self::source_starts(cch, w, s));
            for (j, t) in to.iter().enumerate() {
                let mut best = Self::direct(cch, w, s, t).map(|(c, _, _)| c);
                for &(x, db) in &self.spaces[j] {
                    if self.mark_f[x as usize] == self.epoch && self.df[x as usize] != u64::MAX {
                        let c = self.df[x as usize] + db;
                        if best.is_none_or(|b| c < b) {
                            best = Some(c);
                        }
                    }
                }
                out.push(best);
            }
        }
        out
    }
}

/// One direction's arcs as a search relaxes them.
#[derive(Clone, Copy)]
enum Arcs<'a> {
    /// Pruned by perfect customization: only arcs that can matter.
    Pruned(&'a SearchArcs),
    /// Every arc, with this direction's weights (after a partial update).
    All(&'a [u32]),
}

impl<'a> Arcs<'a> {
    fn up(m: &'a CchMetric) -> Self {
        m.search
            .as_ref()
            .map_or(Arcs::All(&m.up), |s| Arcs::Pruned(&s.up))
    }

    fn down(m: &'a CchMetric) -> Self {
        m.search
            .as_ref()
            .map_or(Arcs::All(&m.down), |s| Arcs::Pruned(&s.down))
    }
}

/// Relaxes the upward arcs of rank `x` (in one direction's weights) into
/// that direction's distances, recording `x` as the predecessor.
#[inline]
fn relax(cch: &Cch, x: u32, arcs: Arcs, dist: &mut [u64], pred: &mut [u32]) {
    let dx = dist[x as usize];
    if dx == u64::MAX {
        return;
    }
    match arcs {
        Arcs::Pruned(search) => {
            for arc in search.of(x) {
                let (y, d) = (arc.head as usize, dx + u64::from(arc.weight));
                if d < dist[y] {
                    dist[y] = d;
                    pred[y] = x;
                }
            }
        }
        Arcs::All(weights) => {
            let arcs = cch.up_arcs(x);
            let arcs = arcs.start as usize..arcs.end as usize;
            // Slices taken once: indexing the archive per arc re-reads its
            // relative pointer and length on every iteration.
            let (heads, ws) = (&cch.d.up_head[arcs.clone()], &weights[arcs]);
            for (&w, head) in ws.iter().zip(heads) {
                if w == INFINITY {
                    continue;
                }
                let (y, d) = (head.to_native() as usize, dx + u64::from(w));
                if d < dist[y] {
                    dist[y] = d;
                    pred[y] = x;
                }
            }
        }
    }
}

/// The arc joining rank `lo` to its ancestor `hi`, which a search relaxed.
fn arc_between(cch: &Cch, lo: u32, hi: u32) -> u32 {
    cch.find_arc(lo, hi)
        .expect("a search reaches a rank only over an arc from its predecessor")
}
