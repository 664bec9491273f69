//! Nested-dissection node order by inertial flow (Schild & Sommer): for a few
//! directions, sort the nodes by their projection, take the first and last
//! quarter as source and sink, and cut the middle with a minimum vertex cut
//! (unit-capacity max-flow, Dinic, on the node-split graph). The smallest cut
//! becomes a separator that is contracted last; both sides recurse.
//!
//! Road networks have small, geographically straight separators (rivers,
//! motorways, city limits), which is why a handful of straight-line
//! directions find good cuts.

/// Parts at most this large are ordered by degree instead of cut further.
const LEAF: usize = 24;
/// Share of nodes on each side of a cut that are forced to stay there
/// (balance). A third gave a 15% shallower elimination tree than a quarter on
/// both Porto and the synthetic region, for 1-2% more arcs (BENCHMARKS.md).
const BALANCE: f64 = 0.33;
const NONE: u32 = u32::MAX;

use std::f64::consts::FRAC_1_SQRT_2;

use rayon::prelude::*;

/// Undirected simple graph in CSR form with planar coordinates.
pub struct UndirectedGraph<'a> {
    pub first: &'a [u32],
    pub adj: &'a [u32],
    /// Planar coordinates (any consistent projection).
    pub xy: &'a [(f64, f64)],
}

impl UndirectedGraph<'_> {
    fn neighbours(&self, v: u32) -> &[u32] {
        &self.adj[self.first[v as usize] as usize..self.first[v as usize + 1] as usize]
    }
}

/// Computes a contraction order: `order[rank] = node`. Deterministic: each
/// part owns a fixed range of ranks, so parallel recursion gives the same order.
pub fn nested_dissection(g: &UndirectedGraph) -> Vec<u32> {
    let n = g.first.len() - 1;
    let mut order = vec![NONE; n];
    dissect(g, (0..n as u32).collect(), &mut order);
    order
}

thread_local! {
    /// Per-thread scratch: local index of each node of the part being cut
    /// (all NONE between uses) and the max-flow buffers.
    static SCRATCH: std::cell::RefCell<(Vec<u32>, FlowScratch)> = Default::default();
}

/// Orders `part` into `out` (its rank range, lowest first).
fn dissect(g: &UndirectedGraph, part: Vec<u32>, out: &mut [u32]) {
    debug_assert_eq!(part.len(), out.len());
    if part.len() <= LEAF {
        let mut c = part;
        // Low degree first (minimum-degree style): contracting a node joins its
        // neighbours, so leaving the hubs for last creates the least fill.
        c.sort_by_key(|&v| (g.neighbours(v).len(), v));
        out.copy_from_slice(&c);
        return;
    }
    let n = g.first.len() - 1;
    let (comps, separator) = SCRATCH.with(|s| {
        let (local, flow) = &mut *s.borrow_mut();
        if local.len() < n {
            local.resize(n, NONE);
        }
        let comps = components(g, &part, local);
        if comps.len() > 1 {
            return (comps, Vec::new());
        }
        let sep = best_separator(g, &part, local, flow);
        (comps, sep)
    });
    if comps.len() > 1 {
        // Independent components: split the rank range by their sizes.
        let mut rest: &mut [u32] = out;
        let mut jobs = Vec::with_capacity(comps.len());
        for c in comps {
            let (head, tail) = rest.split_at_mut(c.len());
            jobs.push((c, head));
            rest = tail;
        }
        jobs.into_par_iter()
            .for_each(|(c, slot)| dissect(g, c, slot));
        return;
    }
    // The separator takes the top ranks; the rest recurses below it.
    let mut in_sep = separator.clone();
    in_sep.sort_unstable();
    let rest: Vec<u32> = part
        .into_iter()
        .filter(|v| in_sep.binary_search(v).is_err())
        .collect();
    let (below, top) = out.split_at_mut(rest.len());
    top.copy_from_slice(&separator);
    dissect(g, rest, below);
}

/// Connected components of the subgraph induced by `part`.
fn components(g: &UndirectedGraph, part: &[u32], mark: &mut [u32]) -> Vec<Vec<u32>> {
    const IN_PART: u32 = NONE - 1;
    for &v in part {
        mark[v as usize] = IN_PART;
    }
    let mut out = Vec::new();
    for &s in part {
        if mark[s as usize] != IN_PART {
            continue;
        }
        let mut comp = vec![s];
        mark[s as usize] = 0;
        let mut i = 0;
        while i < comp.len() {
            let v = comp[i];
            i += 1;
            for &w in g.neighbours(v) {
                if mark[w as usize] == IN_PART {
                    mark[w as usize] = 0;
                    comp.push(w);
                }
            }
        }
        out.push(comp);
    }
    for &v in part {
        mark[v as usize] = NONE;
    }
    out
}

/// The smallest vertex separator over four cut directions (ties: more balanced).
fn best_separator(
    g: &UndirectedGraph,
    part: &[u32],
    local: &mut [u32],
    flow: &mut FlowScratch,
) -> Vec<u32> {
    for (i, &v) in part.iter().enumerate() {
        local[v as usize] = i as u32;
    }
    let directions = [
        (1.0, 0.0),
        (0.0, 1.0),
        (FRAC_1_SQRT_2, FRAC_1_SQRT_2),
        (FRAC_1_SQRT_2, -FRAC_1_SQRT_2),
    ];
    let mut best: Option<Vec<u32>> = None;
    let mut fallback: Option<Vec<u32>> = None;
    let mut sorted: Vec<u32> = (0..part.len() as u32).collect();
    for (dx, dy) in directions {
        let key = |i: u32| {
            let (x, y) = g.xy[part[i as usize] as usize];
            x * dx + y * dy
        };
        sorted.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
        let k = ((part.len() as f64 * BALANCE) as usize).max(1);
        // A direction whose flow reaches the best cut so far cannot win.
        let bound = best.as_ref().map_or(usize::MAX, Vec::len);
        if let Some(cut) = flow.min_vertex_cut(
            g,
            part,
            local,
            &sorted[..k],
            &sorted[part.len() - k..],
            bound,
        ) {
            best = Some(cut);
        }
        if fallback.is_none() {
            fallback = Some(boundary(g, part, local, &sorted[..k]));
        }
    }
    for &v in part {
        local[v as usize] = NONE;
    }
    // Every direction had its sources touching its sinks (a narrow part):
    // the boundary of one source set still separates it from the rest.
    best.or(fallback)
        .expect("four directions tried")
        .into_iter()
        .map(|i| part[i as usize])
        .collect()
}

/// Nodes outside `set` (local indices) adjacent to it.
fn boundary(g: &UndirectedGraph, part: &[u32], local: &[u32], set: &[u32]) -> Vec<u32> {
    let mut inside = vec![false; part.len()];
    for &i in set {
        inside[i as usize] = true;
    }
    let mut out: Vec<u32> = set
        .iter()
        .flat_map(|&i| {
            g.neighbours(part[i as usize])
                .iter()
                .map(|&w| local[w as usize])
        })
        .filter(|&j| j != NONE && !inside[j as usize])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Dinic max-flow on the node-split graph, with buffers reused across calls.
#[derive(Default)]
struct FlowScratch {
    first: Vec<u32>,
    head: Vec<u32>,
    cap: Vec<i32>,
    level: Vec<u32>,
    iter: Vec<u32>,
    queue: Vec<u32>,
    stack: Vec<u32>,
}

const INF_CAP: i32 = i32::MAX / 2;

impl FlowScratch {
    /// Minimum set of nodes (local indices) whose removal separates `sources`
    /// from `sinks` in the subgraph induced by `part`; `None` once the flow
    /// reaches `bound` (a cut at least that large is of no use).
    fn min_vertex_cut(
        &mut self,
        g: &UndirectedGraph,
        part: &[u32],
        local: &[u32],
        sources: &[u32],
        sinks: &[u32],
        bound: usize,
    ) -> Option<Vec<u32>> {
        let n = part.len();
        // Split node i into in = 2i and out = 2i + 1; super source 2n, sink 2n + 1.
        let (s, t) = (2 * n as u32, 2 * n as u32 + 1);
        let nodes = 2 * n + 2;
        let mut terminal = vec![0u8; n]; // 1 source, 2 sink
        for &i in sources {
            terminal[i as usize] = 1;
        }
        for &i in sinks {
            terminal[i as usize] = 2;
        }
        // Terminal sets are contracted into the super source and sink: only
        // the middle of the part enters the flow network, and a node next to
        // a source hangs off the source directly.
        let mut arcs: Vec<(u32, u32, i32)> = Vec::with_capacity(4 * n);
        for i in 0..n as u32 {
            if terminal[i as usize] != 0 {
                continue;
            }
            arcs.push((2 * i, 2 * i + 1, 1));
            let (mut from_source, mut to_sink) = (false, false);
            for &w in g.neighbours(part[i as usize]) {
                let j = local[w as usize];
                if j == NONE || j == i {
                    continue;
                }
                match terminal[j as usize] {
                    0 => arcs.push((2 * i + 1, 2 * j, INF_CAP)),
                    1 => from_source = true,
                    _ => to_sink = true,
                }
            }
            if from_source {
                arcs.push((s, 2 * i, INF_CAP));
            }
            if to_sink {
                arcs.push((2 * i + 1, t, INF_CAP));
            }
        }
        // A source adjacent to a sink cannot be separated by middle nodes
        // (rare: narrow parts); the caller falls back to another cut.
        let touching = sources.iter().any(|&i| {
            g.neighbours(part[i as usize]).iter().any(|&w| {
                let j = local[w as usize];
                j != NONE && terminal[j as usize] == 2
            })
        });
        if touching {
            return None;
        }
        self.first.clear();
        self.first.resize(nodes + 1, 0);
        for &(a, b, _) in &arcs {
            self.first[a as usize + 1] += 1;
            self.first[b as usize + 1] += 1;
        }
        for v in 0..nodes {
            self.first[v + 1] += self.first[v];
        }
        let m = 2 * arcs.len();
        self.head.clear();
        self.head.resize(m, 0);
        self.cap.clear();
        self.cap.resize(m, 0);
        // Pair partners: reverse[a] is the index of a's reverse arc.
        let mut reverse = vec![0u32; m];
        let mut fill: Vec<u32> = self.first[..nodes].to_vec();
        for &(a, b, c) in &arcs {
            let fa = fill[a as usize];
            fill[a as usize] += 1;
            let fb = fill[b as usize];
            fill[b as usize] += 1;
            self.head[fa as usize] = b;
            self.cap[fa as usize] = c;
            self.head[fb as usize] = a;
            self.cap[fb as usize] = 0;
            reverse[fa as usize] = fb;
            reverse[fb as usize] = fa;
        }

        // Dinic phases.
        self.level.resize(nodes, 0);
        self.iter.resize(nodes, 0);
        let mut flow = 0usize;
        loop {
            if !self.bfs(s, t, nodes) {
                break;
            }
            self.iter.copy_from_slice(&self.first[..nodes]);
            while self.augment(s, t, &reverse) {
                flow += 1;
                if flow >= bound {
                    return None;
                }
            }
        }
        // Source side = reachable in the residual graph (levels from the last,
        // unsuccessful BFS, which explored everything reachable).
        let reach = |v: u32, level: &[u32]| level[v as usize] != NONE;
        Some(
            (0..n as u32)
                .filter(|&i| reach(2 * i, &self.level) && !reach(2 * i + 1, &self.level))
                .collect(),
        )
    }

    fn bfs(&mut self, s: u32, t: u32, nodes: usize) -> bool {
        self.level[..nodes].fill(NONE);
        self.level[s as usize] = 0;
        self.queue.clear();
        self.queue.push(s);
        let mut i = 0;
        while i < self.queue.len() {
            let v = self.queue[i];
            i += 1;
            // Nodes at or beyond the sink's level cannot be on a shortest path.
            if self.level[t as usize] != NONE && self.level[v as usize] >= self.level[t as usize] {
                break;
            }
            for a in self.first[v as usize]..self.first[v as usize + 1] {
                let w = self.head[a as usize];
                if self.cap[a as usize] > 0 && self.level[w as usize] == NONE {
                    self.level[w as usize] = self.level[v as usize] + 1;
                    self.queue.push(w);
                }
            }
        }
        self.level[t as usize] != NONE
    }

    /// Finds one augmenting path in the level graph and pushes one unit (all
    /// finite capacities are 1). Iterative DFS with current-arc pointers.
    fn augment(&mut self, s: u32, t: u32, reverse: &[u32]) -> bool {
        self.stack.clear(); // arcs on the current path
        let mut v = s;
        loop {
            if v == t {
                for &a in &self.stack {
                    self.cap[a as usize] -= 1;
                    self.cap[reverse[a as usize] as usize] += 1;
                }
                return true;
            }
            let end = self.first[v as usize + 1];
            let mut advanced = false;
            while self.iter[v as usize] < end {
                let a = self.iter[v as usize];
                let w = self.head[a as usize];
                if self.cap[a as usize] > 0 && self.level[w as usize] == self.level[v as usize] + 1
                {
                    self.stack.push(a);
                    v = w;
                    advanced = true;
                    break;
                }
                self.iter[v as usize] += 1;
            }
            if !advanced {
                // Dead end: retreat and skip the arc that led here.
                let Some(a) = self.stack.pop() else {
                    return false;
                };
                v = self.head[reverse[a as usize] as usize];
                self.iter[v as usize] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(w: usize, h: usize) -> (Vec<u32>, Vec<u32>, Vec<(f64, f64)>) {
        let id = |x: usize, y: usize| (y * w + x) as u32;
        let mut first = vec![0u32];
        let mut adj = Vec::new();
        let mut xy = Vec::new();
        for y in 0..h {
            for x in 0..w {
                if x > 0 {
                    adj.push(id(x - 1, y));
                }
                if x + 1 < w {
                    adj.push(id(x + 1, y));
                }
                if y > 0 {
                    adj.push(id(x, y - 1));
                }
                if y + 1 < h {
                    adj.push(id(x, y + 1));
                }
                first.push(adj.len() as u32);
                xy.push((x as f64, y as f64));
            }
        }
        (first, adj, xy)
    }

    #[test]
    fn order_is_a_permutation_and_separators_are_small() {
        let (first, adj, xy) = grid(40, 30);
        let g = UndirectedGraph {
            first: &first,
            adj: &adj,
            xy: &xy,
        };
        let order = nested_dissection(&g);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..1200).collect::<Vec<u32>>());
    }

    #[test]
    fn vertex_cut_of_a_grid_is_its_short_side() {
        let (first, adj, xy) = grid(20, 7);
        let g = UndirectedGraph {
            first: &first,
            adj: &adj,
            xy: &xy,
        };
        let part: Vec<u32> = (0..140).collect();
        let mut local = vec![NONE; 140];
        let mut flow = FlowScratch::default();
        let sep = best_separator(&g, &part, &mut local, &mut flow);
        assert_eq!(sep.len(), 7, "{sep:?}");
        // Removing it disconnects the grid.
        let rest: Vec<u32> = part.iter().copied().filter(|v| !sep.contains(v)).collect();
        let mut mark = vec![NONE; 140];
        assert!(components(&g, &rest, &mut mark).len() >= 2);
    }
}
